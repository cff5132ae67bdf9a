"""Report figures (matplotlib, Agg backend), returned as data: URIs so that the page embeds them."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # no display, no GUI toolkit: reports are written on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from foresight_eval.runs import Run  # noqa: E402
from foresight_eval.report.runs import as_number  # noqa: E402

FIGSIZE, DPI = (5.2, 3.0), 110
STYLE = {
    "font.size": 8.5, "axes.titlesize": 9.5, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.color": "#e3e6ea", "grid.linewidth": 0.6, "axes.edgecolor": "#9aa1a9",
    "axes.labelcolor": "#39414a", "xtick.color": "#5b636c", "ytick.color": "#5b636c", "legend.frameon": False,
}
# Colour-blind-safe (Okabe-Ito), the same colour for a run in every figure of a report.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


def run_colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def plain_text(label: str) -> str:
    """Matplotlib reads text between dollar signs as math; run and clip names are shown as typed."""
    return label.replace("$", r"\$")


INFINITY_LABEL = "∞ (identical frames)"


def _common_horizon(points: list[dict]) -> int | None:
    """The last horizon every clip of the run reaches: beyond it the mean is over fewer clips, and a
    curve that jumps there shows which clips are long, not how the model does."""
    counts = [int(p.get("n") or 0) for p in points]
    if not counts:
        return None
    full = max(counts)
    return max(int(p["horizon"]) for p, n in zip(points, counts) if n == full)


def _at_infinity(values: np.ndarray, ceiling: float) -> np.ndarray:
    """+inf drawn at ``ceiling`` (above every finite value, labelled), so a series of identical frames
    shows instead of vanishing (matplotlib drops non-finite points)."""
    return np.where(np.isposinf(values), ceiling, values)


def _ceiling(finite: np.ndarray) -> float:
    if not finite.size:
        return 1.0
    span = float(finite.max() - finite.min()) or max(abs(float(finite.max())), 1.0)
    return float(finite.max()) + 0.15 * span


def horizon_curve(runs: Sequence[Run], metric: str, tail: bool = False) -> str | None:
    """Mean per horizon with its CI band, one line per run, and below it the number of clips at each
    horizon; None when no run has per-horizon values. Each run's curve stops at the last horizon all
    its clips reach; ``tail`` draws the rest too, dashed. Infinite means sit on a labelled line above."""
    series = [(index, run, run.metrics[metric].get("per_horizon") or [])
              for index, run in enumerate(runs) if metric in run.metrics]
    if not any(points for _, _, points in series):
        return None
    values = np.array([as_number(p.get(key)) for _, _, points in series for p in points
                       for key in ("mean", "ci_low", "ci_high")], dtype=float)
    infinite = bool(np.isposinf(values).any())
    ceiling = _ceiling(values[np.isfinite(values)])
    with plt.rc_context(STYLE):
        fig, (ax, counts_ax) = plt.subplots(2, 1, figsize=(FIGSIZE[0], FIGSIZE[1] + 0.6), dpi=DPI, sharex=True,
                                            gridspec_kw={"height_ratios": [4, 1]}, layout="constrained")
        cut_somewhere = False
        for index, run, points in series:
            if not points:
                continue
            horizon = np.array([p["horizon"] for p in points], dtype=float)
            mean, low, high = (_at_infinity(np.array([as_number(p.get(key)) for p in points]), ceiling)
                               for key in ("mean", "ci_low", "ci_high"))
            counts = np.array([int(p.get("n") or 0) for p in points])
            common = horizon <= _common_horizon(points)
            cut_somewhere |= not common.all()
            colour = run_colour(index)
            ax.plot(horizon[common], mean[common], color=colour, linewidth=1.6, marker="o", markersize=2.5,
                    label=plain_text(run.label))
            ax.fill_between(horizon[common], low[common], high[common], color=colour, alpha=0.16, linewidth=0)
            if tail and not common.all():  # from the last common horizon on: fewer clips, dashed
                rest = horizon >= horizon[common].max()
                ax.plot(horizon[rest], mean[rest], color=colour, linewidth=1.0, linestyle="--", alpha=0.7)
            shown = np.ones_like(common) if tail else common
            offset = 0.8 / max(len(series), 1)
            counts_ax.bar(horizon[shown] + (index - (len(series) - 1) / 2) * offset, counts[shown], width=offset,
                          color=colour, alpha=0.7)
        if infinite:
            ax.axhline(ceiling, color="#9aa1a9", linewidth=0.6, linestyle=":")
            ax.annotate(INFINITY_LABEL, (0.01, ceiling), xycoords=("axes fraction", "data"), va="bottom",
                        fontsize=7.5, color="#39414a")
        definition = next(run.metrics[metric] for _, run, _ in series)
        counts_ax.set_xlabel("horizon (frames after the context)")
        counts_ax.set_ylabel("clips", fontsize=7.5)
        counts_ax.grid(axis="x", visible=False)
        # Runs of one common frame rate (foresight_eval.study) also read in seconds, on the top axis.
        rates = {round(p["horizon"] / p["seconds"], 3) for _, _, points in series for p in points if p.get("seconds")}
        if len(rates) == 1 and all(p.get("seconds") for _, _, points in series for p in points):
            fps = rates.pop()
            ax.secondary_xaxis("top", functions=(lambda h: h / fps, lambda t: t * fps)).set_xlabel(
                "seconds after the context")
        ax.set_ylabel(_axis_label(metric, definition))
        note = "" if not cut_somewhere else (", dashed: fewer clips" if tail else ", up to the horizon all clips reach")
        ax.set_title(f"{plain_text(metric)} by horizon, mean and CI over clips{note}", loc="left")
        # Under the axes: inside, the legend would hide the curves it names.
        counts_ax.legend(*ax.get_legend_handles_labels(), fontsize=7.5, loc="upper center",
                         bbox_to_anchor=(0.5, -0.7), ncol=min(len(series), 4))
        return _finish(fig)


def clip_distribution(runs: Sequence[Run], metric: str) -> str | None:
    """Per-clip values of every run: a box per run with the clips as jittered points."""
    columns = [(index, run, run.video_values(metric).to_numpy(dtype=float)) for index, run in enumerate(runs)]
    columns = [(index, run, values[~np.isnan(values)]) for index, run, values in columns]
    columns = [column for column in columns if column[2].size]
    if not columns:
        return None
    everything = np.concatenate([values for _, _, values in columns])
    ceiling = _ceiling(everything[np.isfinite(everything)])
    infinite = bool(np.isposinf(everything).any())
    if np.isin(everything, (0.0, 1.0)).all():
        return _flag_counts(columns, metric)
    rng = np.random.default_rng(0)  # the same jitter every time: reports regenerate byte-stable
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
        ax.boxplot([values[np.isfinite(values)] for _, _, values in columns], widths=0.5, showfliers=False,
                   medianprops={"color": "#39414a"}, boxprops={"color": "#9aa1a9"},
                   whiskerprops={"color": "#9aa1a9"}, capprops={"color": "#9aa1a9"})
        for position, (index, _, values) in enumerate(columns, start=1):
            ax.scatter(position + rng.uniform(-0.14, 0.14, values.size), _at_infinity(values, ceiling), s=11,
                       color=run_colour(index), alpha=0.8, edgecolors="white", linewidths=0.4, zorder=3)
        if infinite:
            ax.axhline(ceiling, color="#9aa1a9", linewidth=0.6, linestyle=":")
            ax.annotate(INFINITY_LABEL, (0.01, ceiling), xycoords=("axes fraction", "data"), va="bottom",
                        fontsize=7.5, color="#39414a")
        ax.set_xticks(range(1, len(columns) + 1), [plain_text(run.label) for _, run, _ in columns],
                      rotation=15 if len(columns) > 3 else 0, ha="right" if len(columns) > 3 else "center")
        ax.grid(axis="x", visible=False)
        ax.set_ylabel(_axis_label(metric, columns[0][1].metrics[metric]))
        ax.set_title(f"{plain_text(metric)} per clip", loc="left")
        return _finish(fig)


def _flag_counts(columns: list, metric: str) -> str:
    """A 0/1 per-clip metric (``frozen``): how many clips are flagged, per run, as a short bar each;
    a box plot of zeros and ones says nothing."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(FIGSIZE[0], 0.5 + 0.32 * len(columns)), dpi=DPI)
        for row, (index, run, values) in enumerate(columns):
            flagged = int(values.sum())
            ax.barh(row, flagged / values.size, color=run_colour(index), height=0.6)
            ax.annotate(f"{flagged} of {values.size} clips", (1.0, row), xycoords=("axes fraction", "data"),
                        xytext=(4, 0), textcoords="offset points", va="center", fontsize=7.5)
        ax.set_yticks(range(len(columns)), [plain_text(run.label) for _, run, _ in columns])
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xlabel("share of clips flagged")
        ax.grid(axis="y", visible=False)
        ax.set_title(f"{plain_text(metric)}: clips flagged", loc="left")
        return _finish(fig)


def _axis_label(metric: str, definition: dict) -> str:
    arrow = {"higher": "↑", "lower": "↓"}.get(definition.get("direction"), "")
    unit = f" ({definition['unit']})" if definition.get("unit") else ""
    return f"{plain_text(metric)}{plain_text(unit)} {arrow}"


def _finish(fig) -> str:
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    buffer = io.BytesIO()
    # No date in the PNG metadata: regenerating the example report does not churn the repository.
    fig.savefig(buffer, format="png", metadata={"Software": None})
    plt.close(fig)
    return data_uri(buffer.getvalue())
