"""Readers: every video container, frame folders in natural order, arrays; and each bad input."""

from __future__ import annotations

import av
import numpy as np
import pytest
from av.video.reformatter import VideoReformatter

from foresight_eval.errors import InputError
from foresight_eval.io.clips import open_clip
from foresight_eval.io.frames import as_rgb_frame
from tests.clipmaker import CONTAINERS, gradient_clip, write_container, write_frames_folder


@pytest.mark.parametrize("suffix", sorted(CONTAINERS))
def test_video_containers_decode_every_frame(tmp_path, suffix):
    codec, pix_fmt, lossless = CONTAINERS[suffix]
    frames = gradient_clip(n_frames=5)
    path = write_container(tmp_path / f"clip{suffix}", frames, codec, pix_fmt)
    decoded = np.stack(list(open_clip(path).frames()))
    assert decoded.shape == frames.shape and decoded.dtype == np.uint8
    error = np.abs(decoded.astype(int) - frames.astype(int)).mean()
    assert error == 0 if lossless else error < 12
    # the reader converts with one converter per stream (io/video.py, RGB_CONVERSION): PyAV's own per-frame
    # conversion is the reference, to the bit
    with av.open(str(path)) as container:
        assert np.array_equal(decoded, np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]))


def test_one_rgb_converter_follows_changes_of_size_format_and_range():
    # what RGB_CONVERSION relies on: a converter reused across frames whose size, pixel format, colour space
    # and range change converts each as the frame's own converter would
    converter = VideoReformatter()
    rng = np.random.default_rng(0)
    for height, width, pix_fmt, colorspace, color_range in [(32, 48, "yuv420p", "ITU601", "MPEG"),
                                                           (64, 96, "yuv420p", "ITU709", "JPEG"),
                                                           (32, 48, "yuv444p", "ITU709", "MPEG"),
                                                           (32, 48, "yuv420p", "ITU601", "MPEG")]:
        frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), format="rgb24")
        frame = frame.reformat(format=pix_fmt, dst_colorspace=colorspace, dst_color_range=color_range)
        assert np.array_equal(converter.reformat(frame, format="rgb24").to_ndarray(), frame.to_ndarray(format="rgb24"))


def test_frame_folder_is_read_in_natural_order(tmp_path):
    frames = gradient_clip(n_frames=12)
    folder = write_frames_folder(tmp_path / "clip", frames)
    reader = open_clip(folder)
    assert [p.name for p in reader.files][:3] == ["frame0.png", "frame1.png", "frame2.png"]
    assert reader.files[10].name == "frame10.png"
    np.testing.assert_array_equal(np.stack(list(reader.frames())), frames)


def test_npy_uint8_and_float_and_npz(tmp_path):
    frames = gradient_clip()
    np.save(tmp_path / "u8.npy", frames)
    np.save(tmp_path / "f32.npy", frames.astype(np.float32) / 255)
    np.savez(tmp_path / "named.npz", frames=frames, other=np.zeros(3))
    assert np.stack(list(open_clip(tmp_path / "u8.npy").frames())).dtype == np.uint8
    floats = np.stack(list(open_clip(tmp_path / "f32.npy").frames()))
    np.testing.assert_allclose(floats * 255, frames, atol=1e-3)
    np.testing.assert_array_equal(np.stack(list(open_clip(tmp_path / "named.npz").frames())), frames)


def test_grey_and_rgba_frames_become_rgb():
    grey = np.full((4, 5), 7, dtype=np.uint8)
    assert as_rgb_frame(grey, "x").shape == (4, 5, 3)
    rgba = np.zeros((4, 5, 4), dtype=np.uint8)
    assert as_rgb_frame(rgba, "x").shape == (4, 5, 3)


def bad_inputs(tmp_path):
    (tmp_path / "text.mp4").write_text("this is not a video")
    good = write_container(tmp_path / "good.mp4", gradient_clip(n_frames=20, height=64, width=64), "libx264", "yuv420p")
    (tmp_path / "truncated.mp4").write_bytes(good.read_bytes()[:600])
    (tmp_path / "empty").mkdir()
    (tmp_path / "zero.npy").write_bytes(b"")
    np.save(tmp_path / "zero_frames.npy", np.zeros((0, 8, 8, 3), dtype=np.uint8))
    np.save(tmp_path / "nan.npy", np.full((2, 8, 8, 3), np.nan, dtype=np.float32))
    np.save(tmp_path / "range.npy", np.full((2, 8, 8, 3), 3.0, dtype=np.float32))
    np.save(tmp_path / "shape.npy", np.zeros((2, 8), dtype=np.uint8))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "int64.npy", np.zeros((2, 8, 8, 3), dtype=np.int64))
    return {
        "text.mp4": "not a readable video",
        "truncated.mp4": "decod|not a readable video",  # no decodable frames, or decoding failed
        "empty": "no png/jpg frames",
        "zero.npy": "not a readable array",
        "zero_frames.npy": "zero frames",
        "nan.npy": "NaN",
        "range.npy": r"expected \[0, 1\]",
        "shape.npy": r"is not \(T, H, W\)",
        "objects.npy": "pickled",
        "int64.npy": "not supported",
    }


def test_each_bad_input_gives_a_clear_input_error(tmp_path):
    for name, message in bad_inputs(tmp_path).items():
        with pytest.raises(InputError, match=message) as caught:
            list(open_clip(tmp_path / name).frames())
        assert name in str(caught.value), f"{name}: the message should name the file: {caught.value}"


def test_decoder_threads_are_ffmpegs_count_up_to_eight(monkeypatch):
    """FFmpeg's own H.264 thread count (a frame thread per usable CPU plus one) on small machines, 8 on larger
    ones, where a GPU run decodes several streams at once."""
    import os

    from foresight_eval.io import video

    for cpus, threads in ((1, 2), (2, 3), (7, 8), (16, 8), (128, 8)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, cpus=cpus: set(range(cpus)), raising=False)
        assert video.decoder_threads() == threads
