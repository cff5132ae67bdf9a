"""The same code on the GPU: a CUDA run equals the CPU run (runs only where CUDA is available; CI has
none, the device machine runs it)."""

from __future__ import annotations

import pytest
import torch

from foresight_eval import ScoreOptions, score
from tests.parity import assert_parity

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_cuda_scores_equal_cpu_scores(fixtures_dir, lpips_weights):
    runs = {
        device: score(fixtures_dir / "preds" / "noise_strong", fixtures_dir / "refs", ["psnr", "ssim", "mae", "lpips"],
                      options=ScoreOptions(context=4), device=device)
        for device in ("cpu", "cuda")
    }
    for metric in ("psnr", "ssim", "mae", "lpips"):
        cpu = [pair.values[metric] for pair in runs["cpu"].pairs]
        cuda = [pair.values[metric] for pair in runs["cuda"].pairs]
        assert_parity(f"{metric} cuda vs cpu", cuda, cpu, atol=1e-4)


def test_edge_f1_and_warp_error_on_cuda_equal_the_cpu(fixtures_dir):
    """edge_f1's GPU path (Canny candidates on the device, linked and matched in worker processes once copied)
    and warp_error's (Farnebäck in torch, replayed from CUDA graphs after the first batches) against the CPU's
    scikit-image and OpenCV paths; three clips, so that graphs are captured and replayed."""
    runs = {device: score(fixtures_dir / "preds" / "shift_mild", fixtures_dir / "refs", ["edge_f1", "warp_error"],
                          options=ScoreOptions(context=4, batch_size=6), device=device, resources={"cache_dir": None})
            for device in ("cpu", "cuda")}
    assert all(pair.ok for run in runs.values() for pair in run.pairs)
    cpu = [pair.values["edge_f1"] for pair in runs["cpu"].pairs]
    assert_parity("edge_f1 cuda vs cpu", [pair.values["edge_f1"] for pair in runs["cuda"].pairs], cpu, atol=1e-3)
    cpu = torch.tensor([pair.values["warp_error"] for pair in runs["cpu"].pairs])
    cuda = torch.tensor([pair.values["warp_error"] for pair in runs["cuda"].pairs])
    assert_parity("warp_error cuda (torch Farnebäck, graphs) vs cpu (OpenCV), relative", (cuda - cpu) / cpu,
                  torch.zeros_like(cpu), atol=5e-3)


@pytest.mark.parametrize("size", [(120, 200), (360, 640)])
def test_fused_farneback_kernels_on_cuda_match_opencv_and_the_torch_ops(size):
    """Farnebäck's refinement compiled by Triton on the GPU (the default there) within the CPU tests' bounds
    of OpenCV's flow (tests/test_flow_torch.py runs the same kernels interpreted), and near the torch ops."""
    import numpy as np

    from fixtures import synthetic
    from foresight_eval.metrics import flow_torch
    from foresight_eval.metrics.temporal import FARNEBACK_PARAMS, optical_flow, to_gray_uint8

    clip = synthetic.to_uint8(synthetic.camera_like_clip(0, 3, height=size[0], width=size[1]))
    gray = to_gray_uint8(torch.from_numpy(clip).permute(0, 3, 1, 2).float() / 255)
    reference = np.stack([optical_flow(a, b) for a, b in zip(gray[:-1], gray[1:])])
    images = torch.from_numpy(gray).cuda()
    assert flow_torch.fused_by_default(images.device)
    fused = flow_torch.farneback(images[:-1], images[1:], **FARNEBACK_PARAMS).cpu().numpy()
    plain = flow_torch.farneback(images[:-1], images[1:], **FARNEBACK_PARAMS, fused=False).cpu().numpy()
    assert np.abs(reference).mean() > 0.1
    for name, flows, mean_bound in (("fused kernels", fused, 1e-4), ("torch ops", plain, 1e-4)):
        end_point_error = np.sqrt(np.square(flows - reference).sum(axis=-1))
        assert_parity(f"cuda Farneback ({name}) vs cv2 at {size} (mean end-point error, px)",
                      end_point_error.mean(), 0.0, atol=mean_bound)
        assert_parity(f"cuda Farneback ({name}) vs cv2 at {size} (max end-point error, px)",
                      end_point_error.max(), 0.0, atol=1e-3)
    assert_parity(f"cuda Farneback, fused kernels vs torch ops at {size} (max end-point error, px)",
                  np.sqrt(np.square(fused - plain).sum(axis=-1)).max(), 0.0, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_canny_on_cuda_matches_skimage_in_either_precision(fixtures_dir, dtype):
    """edge_f1's canny_dtype on the GPU's own kernels (float32 its default there): the bound of the CPU test."""
    from foresight_eval.metrics.edges_torch import canny
    from tests.test_edges_torch import CASES, _camera_like, _skimage_maps

    cases = [make(fixtures_dir) for make in CASES.values()] + [_camera_like(3, frames=4, height=360, width=640)]
    for frames in cases:
        for params in ({"sigma": 1.0, "low_threshold": 0.1, "high_threshold": 0.2},
                       {"sigma": 2.0, "low_threshold": 0.05, "high_threshold": 0.15}):
            reference = _skimage_maps(frames, **params)
            ours = canny(frames.cuda(), **params, dtype=dtype).cpu().numpy()
            differing = (ours != reference).mean(axis=(1, 2))
            assert_parity(f"torch Canny on cuda ({dtype}) vs skimage (fraction of pixels differing)", differing,
                          torch.zeros(len(differing)).numpy(), atol=1e-3)


def test_cuda_graph_replays_equal_eager_runs(fixtures_dir):
    from foresight_eval.io.clips import open_clip
    from foresight_eval.metrics.graphs import GraphedFunction
    from foresight_eval.metrics.temporal import _consecutive_warp_error_torch

    frames = torch.stack([torch.from_numpy(f) for f in open_clip(fixtures_dir / "refs" / "clip01.mp4").frames()])
    frames = frames.permute(0, 3, 1, 2).float().div(255).cuda()
    first, second = frames[:9], frames[9:18]
    graphed = GraphedFunction(_consecutive_warp_error_torch)
    runs = [graphed(first, occlusion="lai") for _ in range(3)]  # run, capture (its warm-up's result), replay
    replayed_second = graphed(second, occlusion="lai")
    assert graphed.capturing and len(graphed._graphs) == 1
    eager = _consecutive_warp_error_torch(first, occlusion="lai")
    for run in runs:
        assert torch.equal(run, eager)
    assert torch.equal(replayed_second, _consecutive_warp_error_torch(second, occlusion="lai"))
    for _ in range(3):  # a bad argument fails as in any call, in the capturing one too, and graphs stay on
        with pytest.raises(ValueError, match="unknown occlusion mode"):
            graphed(first, occlusion="none")
    assert graphed.capturing and len(graphed._graphs) == 1


def test_a_graph_holds_the_memory_it_is_counted_for_and_one_past_the_budget_is_dropped(fixtures_dir, monkeypatch):
    """The bytes a capture is counted for are freed when its graph is dropped (the caching allocator's
    reserve falls by them once emptied), and a graph past the budget is not kept: its signature runs
    eagerly, with the values of an eager run."""
    from foresight_eval.io.clips import open_clip
    from foresight_eval.metrics import graphs
    from foresight_eval.metrics.temporal import _consecutive_warp_error_torch

    monkeypatch.setattr(graphs, "_held_bytes", type(graphs._held_bytes)())
    frames = torch.stack([torch.from_numpy(f) for f in open_clip(fixtures_dir / "refs" / "clip01.mp4").frames()])
    frames = frames.permute(0, 3, 1, 2).float().div(255).cuda()
    graphed = graphs.GraphedFunction(_consecutive_warp_error_torch)
    for _ in range(2):
        graphed(frames[:9], occlusion="lai")
    held = graphs._held_bytes[frames.device]
    assert held > 0 and len(graphed._graphs) == 1
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    reserved = torch.cuda.memory_reserved()
    graphed._drop(next(iter(graphed._graphs)))
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    freed = reserved - torch.cuda.memory_reserved()
    assert 0.9 * held <= freed <= 1.1 * held and graphs._held_bytes[frames.device] == 0

    small = graphs.GraphedFunction(_consecutive_warp_error_torch)
    monkeypatch.setattr(small, "memory_budget", lambda device: held - 1)
    values = [small(frames[:9], occlusion="lai") for _ in range(4)]  # run, captured and dropped, then eager
    assert not small._graphs and graphs._held_bytes[frames.device] == 0 and small.capturing
    eager = _consecutive_warp_error_torch(frames[:9], occlusion="lai")
    assert all(torch.equal(value, eager) for value in values)


def test_motion_masks_from_cuda_graphs_equal_eager_runs(fixtures_dir, monkeypatch):
    """The torch motion masks batch after batch (background carried over), graphs on (captured on the
    second batch of a shape, replayed after) and off: the same masks and background, bit for bit."""
    from foresight_eval.io.clips import open_clip
    from foresight_eval.metrics.motion import motion_masks

    frames = torch.stack([torch.from_numpy(f) for f in open_clip(fixtures_dir / "refs" / "clip02.mp4").frames()])
    frames = frames.permute(0, 3, 1, 2).float().div(255).cuda()

    def masks_in_batches():
        background, out = None, []
        for start in range(0, 20, 5):
            masks, background = motion_masks(frames[start:start + 5], background, backend="torch")
            out.append(masks)
        return torch.cat(out), background

    graphed = [masks_in_batches() for _ in range(2)]
    monkeypatch.setenv("FORESIGHT_EVAL_CUDA_GRAPHS", "0")
    eager = masks_in_batches()
    for masks, background in graphed:
        assert torch.equal(masks, eager[0]) and torch.equal(background, eager[1])
    assert eager[0][1:].any()  # there is motion to find


def test_torch_motion_masks_on_cuda_are_the_cpus_bit_for_bit(fixtures_dir):
    """The torch motion masks (8-bit arithmetic: grey, blur, threshold, morphology) give the same masks on the
    GPU as on the CPU: the blur's integer sums stay exact there (PyTorch's depthwise kernel, not cuDNN's TF32,
    whose 11 significant bits round row sums above 2048)."""
    from foresight_eval.metrics.motion import motion_masks
    from tests.test_spatial_metrics import _frames

    frames = _frames(fixtures_dir / "preds" / "noise_strong" / "clip01.mp4")
    masks = {}
    for device in ("cpu", "cuda"):
        first, background = motion_masks(frames[:7].to(device), backend="torch")
        second, _ = motion_masks(frames[7:].to(device), background, backend="torch")
        masks[device] = torch.cat([first, second]).cpu()
    assert masks["cpu"][1:].any()
    assert_parity("torch motion masks cuda vs cpu (fraction of pixels differing)",
                  (masks["cuda"] != masks["cpu"]).double().mean(), torch.tensor(0.0), atol=0)


@pytest.mark.parametrize("lpips_precision", ["float32", "bf16"])
def test_tc_lpips_and_edge_f1_from_cuda_graphs_equal_eager_runs(fixtures_dir, monkeypatch, lpips_weights,
                                                                 lpips_precision):
    """tc and tc_delta (SSIM moments), ssim, lpips (both precisions), edge_f1 (Canny's steps 1-3) and the motion
    IoUs (running counts, comparisons) replay CUDA graphs once a batch shape repeats (three clips, three batches
    each): the values of a run with graphs off."""
    names = ("tc", "tc_delta", "ssim", "lpips", "edge_f1", "motion_iou", "motion_iou_weighted", "motion_iou_st")

    def run():
        result = score(fixtures_dir / "preds" / "shift_mild", fixtures_dir / "refs", list(names),
                       params={"lpips": {"precision": lpips_precision}}, options=ScoreOptions(context=4, batch_size=6),
                       device="cuda", resources={"cache_dir": None})
        assert all(pair.ok for pair in result.pairs)
        return {name: [pair.values[name] for pair in result.pairs] for name in names}

    graphed = run()
    monkeypatch.setenv("FORESIGHT_EVAL_CUDA_GRAPHS", "0")
    eager = run()
    for name, tolerance in (("tc", 1e-12), ("tc_delta", 1e-12), ("ssim", 1e-12), ("lpips", 1e-6), ("edge_f1", 0),
                            ("motion_iou", 0), ("motion_iou_weighted", 0), ("motion_iou_st", 0)):
        assert_parity(f"{name} cuda, graphs vs eager", graphed[name], eager[name], atol=tolerance)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_graphs_are_captured_and_replayed_on_the_gpu_of_their_inputs(fixtures_dir):
    """The second rank of a two-GPU run scores on cuda:1 while cuda:0 is current: the graph is captured and
    replayed there (no warning, graphs stay on), and the replays equal eager runs; through the engine, a run on
    cuda:1 equals one on cuda:0."""
    import warnings

    from foresight_eval.io.clips import open_clip
    from foresight_eval.metrics.graphs import GraphedFunction
    from foresight_eval.metrics.temporal import _consecutive_warp_error_graphed, _consecutive_warp_error_torch

    assert torch.cuda.current_device() == 0
    frames = torch.stack([torch.from_numpy(f) for f in open_clip(fixtures_dir / "refs" / "clip01.mp4").frames()])
    frames = frames.permute(0, 3, 1, 2).float().div(255).to("cuda:1")
    first, second = frames[:9], frames[9:18]
    graphed = GraphedFunction(_consecutive_warp_error_torch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        runs = [graphed(first, occlusion="lai") for _ in range(3)]  # run, capture, replay
        replayed_second = graphed(second, occlusion="lai")
    assert graphed.capturing and len(graphed._graphs) == 1
    for run in runs:
        assert torch.equal(run, _consecutive_warp_error_torch(first, occlusion="lai"))
    assert torch.equal(replayed_second, _consecutive_warp_error_torch(second, occlusion="lai"))

    # Through the engine, whose other threads call CUDA meanwhile (decoding into page-locked memory): before the
    # run's device was made current, every capture on cuda:1 failed there and the run went on without graphs,
    # with the same values (so the values alone cannot tell).
    metrics = ["warp_error", "tc", "edge_f1", "motion_iou"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs = {device: score(fixtures_dir / "preds" / "shift_mild", fixtures_dir / "refs", metrics,
                              options=ScoreOptions(context=4, batch_size=6), device=device,
                              resources={"cache_dir": None})
                for device in ("cuda:0", "cuda:1")}
    assert not [str(w.message) for w in caught if "capture failed" in str(w.message)]
    assert torch.cuda.current_device() == 0  # restored after the run
    graphed_devices = {key[0][0][2] for key in _consecutive_warp_error_graphed._graphs}
    assert torch.device("cuda:1") in graphed_devices
    for metric in metrics:
        values = {device: [pair.values[metric] for pair in run.pairs] for device, run in runs.items()}
        assert values["cuda:1"] == values["cuda:0"], metric


def test_warm_reference_cache_on_cuda_scores_as_no_cache(fixtures_dir, tmp_path):
    """On a GPU (the frame cache on: off by default there), entries are written after their copies to the host,
    by the run's writer thread, and read back to the device behind the queued work (page-locked, non-blocking);
    the motion masks' keys chain without reading the background: a cold and a warm run score as a run without
    cache."""
    from foresight_eval.device_copies import to_device_async

    host = torch.arange(12.0).view(3, 4)
    assert torch.equal(to_device_async(host, torch.device("cuda")).cpu(), host)
    metrics = ["tc_delta", "flicker_delta", "motion_iou", "motion_iou_st", "edge_f1"]

    def run(resources):
        result = score(fixtures_dir / "preds" / "shift_mild", fixtures_dir / "refs", metrics,
                       options=ScoreOptions(context=4, batch_size=6), device="cuda", resources=resources)
        assert all(pair.ok for pair in result.pairs)
        return [pair.values for pair in result.pairs], [pair.per_frame for pair in result.pairs]

    uncached = run({"cache_dir": None})
    cached = {"cache_dir": tmp_path / "cache", "frame_cache": "on"}
    assert run(cached) == uncached  # cold: computed and written
    assert sorted((tmp_path / "cache").rglob("*.safetensors"))
    assert run(cached) == uncached  # warm: read back
