"""Replay the research log's pipeline with one command: context clips -> `generate` with both encoders
(VLM-only, research log C1/C2; hybrid DINOv2 + VLM, P2) -> `score` -> `check` against Gate 1 and
Gate 2 -> `report` and `leaderboard` comparing the two encoders.

    python examples/seed_replay.py --preset tiny                     # CPU, seconds per clip (`make seed-replay`)
    python examples/seed_replay.py --preset full --device cuda       # GPU; random weights unless they are cached

Per encoder E, under OUT/E/:
  preds/    `generate --encoder E --save-latents latents --refs REFS`: clips, generate_manifest.json
  frames/   `score preds REFS --context K --ref-annotations REFS --extra-file preds/generate_manifest.json`:
            pixel, spatial and temporal metrics, and the manifest's figures (latency_overhead for hybrid)
  dino-vs-fused/  (hybrid) `latents latents/dino latents/fused --reduce per-timestep -m cka,rsa_spearman`: per clip,
            how much of the DINOv2 tokens' structure the fused sequence keeps (its tokens are the items)
  q1/       `latents` over clips (the research log's Q1 comparison): A = the representation the query adapter
            reads (E=vlm: the VLM's hidden states; E=hybrid: the fused sequence), B = LTX-Video's VAE latents of
            the reference future frames, each averaged over its tokens / horizons into one row per clip
  check-*.json  the verdicts: `check frames --gates gate1-reconstruction --gates gate2-bridging`, `check q1 --gates q1`
OUT/report/ and OUT/leaderboard/ compare the two `frames` runs.

With random weights (the tiny preset always; the full preset with --random-weights or without cached
weights) the models are untrained: the gates are expected to fail, and the report's title says so. The
point is that the whole pipeline of the log runs from one command. Exit status: 0 when every step ran
(failed gates included), 1 when a step could not run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shlex
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from foresight_eval.cli import main as cli

ENCODERS = ("vlm", "hybrid")
ENCODER_LABELS = {"vlm": "VLM-only encoder (C1/C2)", "hybrid": "hybrid DINOv2 + VLM encoder (P2)"}
REPRESENTATION = {"vlm": "vlm", "hybrid": "fused"}  # the --save-latents folder the query adapter read
Q1_METRICS = "cka,rsa_spearman"  # the Q1 metrics that run on a handful of items (probe R² needs >= 25 folds' worth)
GATES = ("gate1-reconstruction", "gate2-bridging")
REPO = Path(__file__).resolve().parents[1]


def run(*args: str, ok: tuple[int, ...] = (0,), stdout: Path | None = None) -> int:
    """One `foresight-eval` command, in this process (models and libraries load once); its exit status."""
    print(f"$ foresight-eval {shlex.join(args)}", flush=True)
    code = 0
    try:
        if stdout is None:
            cli.main(list(args), prog_name="foresight-eval", standalone_mode=False)
        else:
            buffer = io.StringIO()
            with contextlib.redirect_stdout(buffer):
                try:
                    cli.main(list(args), prog_name="foresight-eval", standalone_mode=False)
                finally:
                    stdout.write_text(buffer.getvalue(), encoding="utf-8")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    if code not in ok:
        raise SystemExit(f"seed replay: `foresight-eval {args[0]}` exited {code}")
    return code


def clip_set(folder: Path, keys: list[str], axis_mean: int = 1) -> torch.Tensor:
    """Per-clip latents (1, T, D) stacked into one (N, D) set, averaged over their tokens or horizons."""
    return torch.cat([load_file(folder / f"{key}.safetensors")["latents"].mean(dim=axis_mean) for key in keys])


def replay(preset: str, out: Path, *, contexts: Path, refs: Path, context: int, frames: int, device: str,
           random_weights: bool, seed: int, clips: int | None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    if clips is not None:  # the first N context clips, by name
        subset = out / "contexts"
        subset.mkdir(exist_ok=True)
        for path in sorted(p for p in contexts.iterdir() if p.suffix == ".mp4")[:clips]:
            target = subset / path.name
            if not target.exists():
                target.symlink_to(path.resolve())
        contexts = subset
    generate_options = ["--random-weights"] if random_weights else []
    verdicts: dict[str, dict] = {}
    for encoder in ENCODERS:
        root = out / encoder
        preds, latents = root / "preds", root / "latents"
        run("generate", "--inputs", str(contexts), "--out", str(preds), "--preset", preset, "--encoder", encoder,
            *generate_options, "--context", str(context), "--frames", str(frames), "--seed", str(seed), "--device", device,
            "--refs", str(refs), "--save-latents", str(latents))
        run("score", str(preds), str(refs), "--context", str(context), "--frame-mismatch", "min", "--device", device,
            "--ref-annotations",
            str(refs), "--extra-file", str(preds / "generate_manifest.json"), "--out", str(root / "frames"),
            "--seed", str(seed))
        keys = sorted(path.stem for path in (latents / "ref").glob("*.safetensors"))
        q1 = root / "q1-latents"
        q1.mkdir(exist_ok=True)
        save_file({"latents": clip_set(latents / REPRESENTATION[encoder], keys).contiguous()},
                  str(q1 / "representation.safetensors"))
        save_file({"latents": clip_set(latents / "ref", keys).contiguous()}, str(q1 / "decoder.safetensors"))
        run("latents", str(q1 / "representation.safetensors"), str(q1 / "decoder.safetensors"), "-m", Q1_METRICS,
            "--device", device, "--out", str(root / "q1"), "--seed", str(seed))
        if encoder == "hybrid":
            # How much of DINOv2's structure the fused sequence keeps: per clip, its patch tokens are the items
            # (the fused sequence has one token per DINOv2 token, in the same order).
            run("latents", str(latents / "dino"), str(latents / "fused"), "--reduce", "per-timestep", "-m",
                "cka,rsa_spearman", "--device", device, "--out", str(root / "dino-vs-fused"), "--seed", str(seed))
        # Exit 1 is a failed gate: expected with untrained models, and not a failure of the replay.
        gate_args = [arg for gate in GATES for arg in ("--gates", gate)]
        run("check", str(root / "frames"), *gate_args, "--json", ok=(0, 1), stdout=root / "check-gates.json")
        run("check", str(root / "q1"), "--gates", "q1", "--json", ok=(0, 1), stdout=root / "check-q1.json")
        verdicts[encoder] = {name: json.loads((root / f"check-{name}.json").read_text(encoding="utf-8"))["decision"]
                             for name in ("gates", "q1")}
    manifest = json.loads((out / "hybrid" / "preds" / "generate_manifest.json").read_text(encoding="utf-8"))
    state = "trained" if manifest["trained"] else "UNTRAINED models (random weights: " \
        + ", ".join(manifest["random_weights"]) + ")"
    runs = [f"{encoder}={out / encoder / 'frames'}" for encoder in ENCODERS]
    gate_args = [arg for gate in GATES for arg in ("--gates", gate)]
    run("report", *runs, *gate_args, "--title", f"Seed replay, {preset} preset: VLM-only vs hybrid encoder; {state}",
        "--out", str(out / "report"))
    run("leaderboard", *runs, "--title", f"Seed replay, {preset} preset: encoders compared; {state}",
        "--out", str(out / "leaderboard"))
    summary = {"preset": preset, "trained": manifest["trained"], "random_weights": manifest["random_weights"],
               "latency_overhead": manifest["latency"]["latency_overhead"], "verdicts": verdicts,
               "report": str(out / "report"), "leaderboard": str(out / "leaderboard")}
    (out / "seed_replay.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", choices=("tiny", "full"))
    parser.add_argument("--out", type=Path, default=None, help="default: runs/seed-replay-PRESET")
    parser.add_argument("--contexts", type=Path, default=REPO / "fixtures" / "refs",
                        help="context clips (their first --context frames are read)")
    parser.add_argument("--refs", type=Path, default=REPO / "fixtures" / "refs",
                        help="reference clips, with box/mask sidecars for the spatial metrics")
    parser.add_argument("--clips", type=int, default=None, help="use only the first N context clips")
    parser.add_argument("--context", type=int, default=4)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--random-weights", action="store_true", help="full preset: never look for cached weights")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    return replay(args.preset, args.out or Path("runs") / f"seed-replay-{args.preset}", contexts=args.contexts,
                  refs=args.refs, context=args.context, frames=args.frames, device=args.device,
                  random_weights=args.random_weights, seed=args.seed, clips=args.clips)


if __name__ == "__main__":
    main(sys.argv[1:])
