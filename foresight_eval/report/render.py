"""Template rendering: jinja2 with every printed value escaped, HTML-escaped in .html templates and
Markdown-escaped in .md templates, so that clip, run and third-party metric names show as text."""

from __future__ import annotations

import html
import re
from functools import cache
from typing import Any

from jinja2 import ChainableUndefined, Environment, PackageLoader
from markupsafe import Markup

from foresight_eval.formatting import estimate, fmt
from foresight_eval.manifest import package_versions
from foresight_eval.report.runs import as_number
from foresight_eval.targets import metric_target

ARROWS = {"higher": "↑", "lower": "↓", "none": "·"}  # none: descriptive
# Characters Markdown would read as formatting, links or table cells.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]{}|#~!])")
# Control characters (a "\r" ends a table row as "\n" does) and Unicode line breaks: each a space.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def markdown_escape(value: Any) -> Markup:
    """Text for a Markdown document rendered by GitHub and GitLab: HTML is written as entities (their
    renderers accept inline HTML) and formatting characters are backslash-escaped."""
    if isinstance(value, Markup):
        return value
    text = _CONTROL.sub(" ", html.escape(str(value), quote=False))
    return Markup(_MARKDOWN_SPECIAL.sub(r"\\\1", text))


@cache
def _environment(kind: str) -> Environment:
    # Missing keys print as nothing: hand-made or older run folders may lack manifest fields.
    common = {"loader": PackageLoader("foresight_eval", "report/templates"), "undefined": ChainableUndefined,
              "trim_blocks": True, "lstrip_blocks": True, "keep_trailing_newline": True}
    if kind == "html":
        env = Environment(autoescape=True, **common)
    else:
        # jinja2's autoescape only knows HTML; `finalize` runs on every printed value, so Markdown output
        # is escaped by default too, and only values marked safe in the template are printed as they are.
        env = Environment(autoescape=False, finalize=markdown_escape, **common)
    env.filters["num"] = lambda value: format_number(None if value is None else as_number(value))
    env.globals["version"] = package_versions(("foresight-eval",))["foresight-eval"] or ""
    return env


def render(template: str, **context: Any) -> str:
    kind = "html" if template.endswith(".html") else "md"
    return _environment(kind).get_template(template).render(**context)


def format_number(value: float | None) -> str:
    """Numbers as the CLI tables print them."""
    return fmt(value)


def metric_header(name: str, definition: dict[str, Any]) -> dict[str, str]:
    direction = definition.get("direction", "")
    target = metric_target(name, definition)
    if target is not None:  # best at a value, not an extreme: "→ 0", "→ reference"
        direction, arrow = f"best at {target if isinstance(target, str) else f'{target:g}'}", "→"
    else:
        arrow = ARROWS.get(direction, "")
    return {"name": name, "direction": direction, "arrow": arrow,
            "unit": definition.get("unit", ""), "description": definition.get("description", "")}


def metric_cell(figures: dict[str, Any] | None) -> dict[str, str]:
    """A run's mean and CI on a metric as display strings ("–" where the run lacks the metric), in fixed
    notation with the decimals the CI's width supports, as the CLI tables print them."""
    if figures is None:
        return {"mean": "–", "ci": ""}
    low, high = figures.get("ci_low"), figures.get("ci_high")
    if low is None or high is None:
        return {"mean": format_number(as_number(figures.get("mean"))), "ci": ""}
    mean, ci = estimate(as_number(figures.get("mean")), as_number(low), as_number(high))
    return {"mean": mean, "ci": ci}
