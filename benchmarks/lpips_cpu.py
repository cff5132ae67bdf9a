"""LPIPS (AlexNet) on the CPU against the machine's convolution throughput for the same layers (issue 17).

    python benchmarks/lpips_cpu.py [--size 640x360 --pairs 4 --repeats 3]

Times, per frame pair: ``lpips_distance`` in float32 and with ``precision=bf16``; then the ceiling, the five
AlexNet convolutions alone (same shapes, inputs of the shapes they see inside LPIPS, channels-last, no
ReLU / pooling / head) on the same batch. Reports GFLOP/s (2 x MAC of the convolutions) and the fraction of
the ceiling LPIPS reaches, plus the largest bf16 - float32 difference.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import best_time, ensure_alexnet_weights, synthetic  # noqa: E402

from foresight_eval.metrics.perceptual import LPIPS_BACKBONES, load_lpips, lpips_distance  # noqa: E402


def conv_layers(model: torch.nn.Module) -> list[torch.nn.Conv2d]:
    return [m for m in model.net.modules() if isinstance(m, torch.nn.Conv2d)]


def conv_inputs(model: torch.nn.Module, batch: torch.Tensor) -> list[torch.Tensor]:
    """The input each convolution of the backbone sees for ``batch`` (recorded by forward pre-hooks)."""
    seen: list[torch.Tensor] = []
    hooks = [conv.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone())) for conv in conv_layers(model)]
    model.net(batch)
    for hook in hooks:
        hook.remove()
    return seen


def measure(width: int, height: int, pairs: int, repeats: int) -> dict:
    """Seconds per call of LPIPS (float32, bf16) and of its convolutions alone, GFLOP counted, largest bf16 error."""
    with tempfile.TemporaryDirectory() as tmp:
        ensure_alexnet_weights(Path(tmp))
        model = load_lpips("alex", LPIPS_BACKBONES["alex"].locate())
    truth = synthetic.camera_like_clip(0, pairs, height=height, width=width)
    pred = synthetic.add_noise(synthetic.blur(truth, 1.0), 0.02, seed=0)
    ref_t, pred_t = (torch.from_numpy(x).permute(0, 3, 1, 2).contiguous() for x in (truth, pred))
    with torch.inference_mode():
        fp32_s, fp32 = best_time(lambda: lpips_distance(model, pred_t, ref_t), repeats)
        bf16_s, bf16 = best_time(lambda: lpips_distance(model, pred_t, ref_t, precision="bf16"), repeats)
        batch = model.scaling_layer.normalise_(torch.cat([pred_t, ref_t]))
        inputs = conv_inputs(model, batch)
        convs = conv_layers(model)
        flops = sum(2 * F.conv2d(x, c.weight, c.bias, c.stride, c.padding).numel() * c.weight[0].numel()
                    for x, c in zip(inputs, convs))

        def convs_only(bf16: bool = False) -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                for x, c in zip(inputs, convs):
                    c(x)

        ceiling_s, _ = best_time(convs_only, repeats)
        ceiling_bf16_s, _ = best_time(lambda: convs_only(True), repeats)
    return {"size": f"{width}x{height}", "pairs": pairs, "threads": torch.get_num_threads(), "gflop": flops / 1e9,
            "lpips_float32_s": fp32_s, "lpips_bf16_s": bf16_s, "convs_float32_s": ceiling_s,
            "convs_bf16_s": ceiling_bf16_s, "max_abs_bf16_minus_float32": float((bf16 - fp32).abs().max())}


def report(r: dict) -> str:
    pairs, flops = r["pairs"], r["gflop"]
    return "\n".join([
        f"{pairs} pairs at {r['size']}, {r['threads']} threads, {flops / 4 / pairs:.2f} GMAC per image",
        f"lpips float32      {pairs / r['lpips_float32_s']:7.2f} pairs/s  {flops / r['lpips_float32_s']:6.1f} GFLOP/s",
        f"lpips bf16         {pairs / r['lpips_bf16_s']:7.2f} pairs/s  {flops / r['lpips_bf16_s']:6.1f} GFLOP/s  "
        f"({r['lpips_float32_s'] / r['lpips_bf16_s']:.2f}x, max |bf16 - float32| {r['max_abs_bf16_minus_float32']:.2e})",
        f"convs alone fp32   {pairs / r['convs_float32_s']:7.2f} pairs/s  {flops / r['convs_float32_s']:6.1f} GFLOP/s  "
        f"(lpips float32 reaches {r['convs_float32_s'] / r['lpips_float32_s']:.0%} of it)",
        f"convs alone bf16   {pairs / r['convs_bf16_s']:7.2f} pairs/s  {flops / r['convs_bf16_s']:6.1f} GFLOP/s  "
        f"(lpips bf16 reaches {r['convs_bf16_s'] / r['lpips_bf16_s']:.0%} of it)",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    print(report(measure(width, height, args.pairs, args.repeats)))


if __name__ == "__main__":
    main()
