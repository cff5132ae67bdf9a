"""Small real run folders for the report and leaderboard tests, scored through the engine on tiny clips.

Clip names include ``<script>alert(1)</script>`` (a folder ``<script>alert(1)<`` holding ``script>.npy``,
since "/" cannot be part of a file name) to test escaping, and one prediction has the wrong length so
that every run has an error row."""

from __future__ import annotations

import html
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import numpy as np

from foresight_eval import ScoreOptions, score
from foresight_eval.stats import BootstrapConfig
from fixtures.synthetic import add_noise, make_scene, render_clip, to_uint8

EVIL_CLIP = "<script>alert(1)</script>"
# Eight clips score in every run: enough for an exact paired test to separate runs at 0.05 (2 / 2^8)
# after Holm's correction; four could not (their smallest p is 0.125).
CLIPS = ("clip_a", "clip_b", "clip_c", "clip_d", "clip_e", "clip_f", "clip_g", "clip_h", EVIL_CLIP)
CONTEXT, FRAMES = 2, 8
METRICS = ("psnr", "mae")


@dataclass(frozen=True)
class ReportRuns:
    root: Path
    mild: Path  # low noise: the better run
    strong: Path  # high noise
    mild_again: Path  # the mild predictions scored again: not significantly different from `mild`
    other_range: Path  # mild predictions, psnr.data_range=2: different metric parameters
    fewer_clips: Path  # mild predictions on a subset of the clips


def _save(path: Path, frames: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, to_uint8(frames), allow_pickle=False)


def make_report_runs(root: Path) -> ReportRuns:
    refs, mild, strong, subset = (root / name for name in ("refs", "mild", "strong", "subset"))
    for index, clip in enumerate(CLIPS):
        frames, _ = render_clip(make_scene(index, height=48, width=64, n_objects=2), FRAMES)
        _save(refs / f"{clip}.npy", frames)
        for folder, std in ((mild, 0.02), (strong, 0.08)):
            noisy = frames.copy()
            # The escaping test's clip is the noisiest, so the "worst clips" section always shows it.
            noisy[CONTEXT:] = add_noise(frames[CONTEXT:], std * (2 if clip == EVIL_CLIP else 1), seed=index)
            # clip_d's prediction is one frame short: an error row in every run.
            _save(folder / f"{clip}.npy", noisy[:-1] if clip == "clip_d" else noisy)
        if index < 3:
            _save(subset / f"{clip}.npy", np.load(mild / f"{clip}.npy") / 255.0)
    options, bootstrap = ScoreOptions(context=CONTEXT), BootstrapConfig(n_resamples=500)
    runs_dir = root / "runs"

    def scored(preds: Path, name: str, **params) -> Path:
        run = score(preds, refs, METRICS, params=params or None, options=options, device="cpu", bootstrap=bootstrap)
        return run.write(runs_dir / name)

    return ReportRuns(root, scored(mild, "mild"), scored(strong, "strong"), scored(mild, "mild_again"),
                      scored(mild, "other_range", psnr={"data_range": 2.0}), scored(subset, "fewer_clips"))


class PageParser(HTMLParser):
    """Every start tag with its attributes, and the page's visible text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data) -> None:
        self.text.append(data)


def parse_page(page: str) -> PageParser:
    parser = PageParser()
    parser.feed(page)
    parser.close()
    return parser


def escaped(text: str) -> str:
    return html.escape(text, quote=False)
