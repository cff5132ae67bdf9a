"""Report figures (matplotlib, Agg backend), returned as data: URIs so that the page embeds them."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # no display, no GUI toolkit: reports are written on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from foresight_eval.report.runs import Run, as_number  # noqa: E402

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


def horizon_curve(runs: Sequence[Run], metric: str) -> str | None:
    """Mean per horizon with its CI band, one line per run; None when no run has per-horizon values."""
    series = [(index, run, run.metrics[metric].get("per_horizon") or [])
              for index, run in enumerate(runs) if metric in run.metrics]
    if not any(points for _, _, points in series):
        return None
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
        for index, run, points in series:
            if not points:
                continue
            horizon = np.array([p["horizon"] for p in points], dtype=float)
            mean = np.array([as_number(p.get("mean")) for p in points])
            low = np.array([as_number(p.get("ci_low")) for p in points])
            high = np.array([as_number(p.get("ci_high")) for p in points])
            colour = run_colour(index)
            ax.plot(horizon, mean, color=colour, linewidth=1.6, marker="o", markersize=2.5, label=plain_text(run.label))
            ax.fill_between(horizon, low, high, color=colour, alpha=0.16, linewidth=0)
        definition = next(run.metrics[metric] for _, run, _ in series)
        ax.set_xlabel("horizon (frames after the context)")
        # Runs of one common frame rate (foresight_eval.study) also read in seconds, on the top axis.
        rates = {round(p["horizon"] / p["seconds"], 3) for _, _, points in series for p in points if p.get("seconds")}
        if len(rates) == 1 and all(p.get("seconds") for _, _, points in series for p in points):
            fps = rates.pop()
            ax.secondary_xaxis("top", functions=(lambda h: h / fps, lambda t: t * fps)).set_xlabel(
                "seconds after the context")
        ax.set_ylabel(_axis_label(metric, definition))
        ax.set_title(f"{plain_text(metric)} by horizon, mean and CI over clips", loc="left")
        # Under the axes: inside, the legend would hide the curves it names.
        ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=min(len(series), 4))
        return _finish(fig)


def clip_distribution(runs: Sequence[Run], metric: str) -> str | None:
    """Per-clip values of every run: a box per run with the clips as jittered points."""
    columns = [(index, run, run.video_values(metric).to_numpy(dtype=float)) for index, run in enumerate(runs)]
    columns = [(index, run, values[np.isfinite(values)]) for index, run, values in columns]
    columns = [column for column in columns if column[2].size]
    if not columns:
        return None
    rng = np.random.default_rng(0)  # the same jitter every time: reports regenerate byte-stable
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
        ax.boxplot([values for _, _, values in columns], widths=0.5, showfliers=False,
                   medianprops={"color": "#39414a"}, boxprops={"color": "#9aa1a9"},
                   whiskerprops={"color": "#9aa1a9"}, capprops={"color": "#9aa1a9"})
        for position, (index, _, values) in enumerate(columns, start=1):
            ax.scatter(position + rng.uniform(-0.14, 0.14, values.size), values, s=11, color=run_colour(index),
                       alpha=0.8, edgecolors="white", linewidths=0.4, zorder=3)
        ax.set_xticks(range(1, len(columns) + 1), [plain_text(run.label) for _, run, _ in columns],
                      rotation=15 if len(columns) > 3 else 0, ha="right" if len(columns) > 3 else "center")
        ax.grid(axis="x", visible=False)
        ax.set_ylabel(_axis_label(metric, columns[0][1].metrics[metric]))
        ax.set_title(f"{plain_text(metric)} per clip", loc="left")
        return _finish(fig)


def _axis_label(metric: str, definition: dict) -> str:
    arrow = "↑" if definition.get("direction") == "higher" else "↓"
    unit = f" ({definition['unit']})" if definition.get("unit") else ""
    return f"{plain_text(metric)}{plain_text(unit)} {arrow}"


def _finish(fig) -> str:
    fig.tight_layout()
    buffer = io.BytesIO()
    # No date in the PNG metadata: regenerating the example report does not churn the repository.
    fig.savefig(buffer, format="png", metadata={"Software": None})
    plt.close(fig)
    return data_uri(buffer.getvalue())
