"""Frames per second of each temporal metric, driven as the engine drives it (batches of --batch-size
frames of one clip, state kept across batches), with same-run ratios to the loop a user would write:

    python benchmarks/temporal_metrics.py                         # CPU, 256x256 and 512x512
    python benchmarks/temporal_metrics.py --device cuda --sizes 256x256,512x512,1024x576

Baselines (always on the CPU, one pair at a time):
  tc                   skimage.metrics.structural_similarity on consecutive frames (mode=skimage vs ours skimage)
  flicker              VBench's temporal flickering loop: np.mean(cv2.absdiff(a, b)) on uint8 frames
  feature_consistency  VBench's subject-consistency loop: one frame at a time through the HF processor and model

Frames are synthetic moving shapes (fixtures/synthetic.py), already on the device: decoding is not
timed. feature_consistency uses the DINOv2 folder in --weights-dir when there is one, else a
random-initialised DINOv2 of the same architecture (speed does not depend on the weight values; the
scores it gives mean nothing). Each measurement runs once untimed first.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for fixtures.synthetic
from fixtures import synthetic as syn  # noqa: E402
from foresight_eval import RunContext, create  # noqa: E402
from foresight_eval.metrics.base import FrameBatch  # noqa: E402
from foresight_eval.metrics.features import DINOV2_MODELS  # noqa: E402

PIXEL_METRICS = ("tc", "tc_delta", "flicker", "flicker_delta", "frozen", "warp_error", "warp_error_delta")
FEATURE_METRICS = ("feature_consistency", "feature_consistency_delta")
DINOV2_SIZES = {"small": (384, 12, 6), "base": (768, 12, 12), "large": (1024, 24, 16)}  # hidden, layers, heads


def make_clip(frames: int, width: int, height: int, device: torch.device) -> torch.Tensor:
    scene = syn.make_scene(seed=0, height=height, width=width)
    truth, _ = syn.render_clip(scene, frames)
    return torch.from_numpy(truth).permute(0, 3, 1, 2).contiguous().to(device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def frames_per_second(fn: Callable[[], None], n_frames: int, device: torch.device, repeats: int) -> float:
    fn()  # untimed: kernel selection, caches, lazy imports
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    synchronize(device)
    return repeats * n_frames / (time.perf_counter() - start)


def drive(metric, pred: torch.Tensor, ref: torch.Tensor, batch_size: int) -> Callable[[], None]:
    def run() -> None:
        with torch.inference_mode():
            metric.reset()
            for start in range(0, len(pred), batch_size):
                index = torch.arange(start, min(start + batch_size, len(pred)), device=pred.device)
                metric.update(FrameBatch("clip", pred[index], ref[index], index + 1, index))
            metric.compute()
    return run


def skimage_tc(clip: np.ndarray) -> Callable[[], None]:
    from skimage.metrics import structural_similarity

    return lambda: [structural_similarity(a, b, channel_axis=-1, data_range=1.0) for a, b in zip(clip, clip[1:])]


def vbench_flicker(clip: np.ndarray) -> Callable[[], None]:
    uint8 = np.rint(clip * 255).astype(np.uint8)
    return lambda: (255.0 - np.mean([np.mean(cv2.absdiff(a.astype(np.float32), b.astype(np.float32)))
                                     for a, b in zip(uint8, uint8[1:])])) / 255.0


def vbench_features(folder: Path, clip: np.ndarray) -> Callable[[], None]:
    import torch.nn.functional as F
    from transformers import AutoImageProcessor, AutoModel

    model, processor = AutoModel.from_pretrained(folder).eval(), AutoImageProcessor.from_pretrained(folder)

    def run() -> None:
        with torch.no_grad():
            for i, frame in enumerate(clip):
                features = F.normalize(model(**processor(images=frame, do_rescale=False, return_tensors="pt"))
                                       .pooler_output, dim=-1)
                if i:
                    _ = (max(0.0, F.cosine_similarity(former, features).item())
                         + max(0.0, F.cosine_similarity(first, features).item())) / 2
                else:
                    first = features
                former = features
    return run


def random_dinov2(folder: Path, variant: str) -> Path:
    """A random-initialised DINOv2 of the variant's real architecture and preprocessing, for timing only."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    hidden, layers, heads = DINOV2_SIZES[variant]
    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads)
    Dinov2Model(config).save_pretrained(folder)
    BitImageProcessor(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224},
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(folder)
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default="256x256,512x512", help="comma-separated WIDTHxHEIGHT")
    parser.add_argument("--frames", type=int, default=32, help="frames per clip")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2, help="timed passes over the clip")
    parser.add_argument("--model", default="small", choices=tuple(DINOV2_MODELS))
    parser.add_argument("--weights-dir", type=Path, help="a folder holding dinov2-<model>/ (else random weights)")
    parser.add_argument("--no-baselines", action="store_true")
    args = parser.parse_args(argv)
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        weights_dir = args.weights_dir
        if weights_dir is None:
            weights_dir = Path(tmp)
            random_dinov2(weights_dir / DINOV2_MODELS[args.model].folder, args.model)
            print(f"feature_consistency: random-initialised DINOv2-{args.model} (timing only)", file=sys.stderr)
        context = RunContext(device=device, weights_dir=weights_dir)
        print(f"device {device}  frames/clip {args.frames}  batch {args.batch_size}  torch threads "
              f"{torch.get_num_threads()}")
        print(f"{'size':>10} {'metric':<26} {'frames/s':>10} {'baseline f/s':>13} {'ratio':>7}")
        for size in args.sizes.split(","):
            width, height = (int(v) for v in size.lower().split("x"))
            pred = make_clip(args.frames, width, height, device)
            ref = make_clip(args.frames, width, height, device).flip(0).contiguous()
            clip = pred.permute(0, 2, 3, 1).cpu().numpy()
            baselines = {} if args.no_baselines else {
                "tc": ("mode=skimage", skimage_tc(clip)),
                "flicker": ("", vbench_flicker(clip)),
                "feature_consistency": ("", vbench_features(weights_dir / DINOV2_MODELS[args.model].folder, clip)),
            }
            for name in PIXEL_METRICS + FEATURE_METRICS:
                rows = [(name, {"model": args.model} if name in FEATURE_METRICS else {})]
                if name in baselines and baselines[name][0]:  # also time the baseline's own definition
                    rows.append((f"{name} ({baselines[name][0]})", dict([baselines[name][0].split("=")])))
                for label, params in rows:
                    metric = create(name, **params)
                    metric.setup(context)
                    run = drive(metric, pred, ref, args.batch_size)
                    fps = frames_per_second(run, args.frames, device, args.repeats)
                    line = f"{size:>10} {label:<26} {fps:>10.1f}"
                    if name in baselines and label == rows[-1][0]:
                        base_fps = frames_per_second(baselines[name][1], args.frames, torch.device("cpu"), args.repeats)
                        line += f" {base_fps:>13.1f} {fps / base_fps:>6.1f}x"
                    print(line, flush=True)

if __name__ == "__main__":
    main()
