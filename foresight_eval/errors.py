"""Exception types, each mapped to one behaviour of the engine and the CLI.

An error about an option names it with :func:`field_ref`: a Python caller reads the name of the field or
argument it set (``context``, ``resize='ref'``), a command-line user the flag (``--context``,
``--resize ref``: :func:`foresight_eval.cli.common.cli_message` renders the same message for the CLI).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import PurePath
from typing import Any

# A field reference inside a message: \x1e, the JSON [name, value given?, value], \x1f (JSON escapes
# control characters, so neither delimiter can occur inside it).
_FIELD = re.compile("\x1e(.*?)\x1f")
_NO_VALUE = object()

FieldStyle = Callable[[str, bool, Any], str]  # (name, value given?, value) -> how the message names it


def field_ref(name: str, value: Any = _NO_VALUE) -> str:
    """The option ``name`` (a field of the run's options or config, or an argument of the Python API), with
    the value it was given if any, as an error message names it: see the module docstring."""
    given = value is not _NO_VALUE
    plain = str(value) if isinstance(value, PurePath) else value if given else None
    return "\x1e" + json.dumps([name, given, plain], default=str) + "\x1f"


def render_fields(message: str, style: FieldStyle) -> str:
    """``message`` with each :func:`field_ref` reference written by ``style``."""
    return _FIELD.sub(lambda match: style(*json.loads(match.group(1))), message)


def python_style(name: str, given: bool, value: Any) -> str:
    """``context``, ``resize='ref'``: the names a Python caller used."""
    return f"{name}={value!r}" if given else name


class ForesightError(Exception):
    """Base class of every error this package raises on purpose. Its text names options as fields
    (:func:`field_ref`); ``cli_message`` renders them as flags."""

    def __str__(self) -> str:
        return render_fields(super().__str__(), python_style)


class UsageError(ForesightError):
    """The command itself cannot run (bad option, unknown metric, empty input folder): exit code 2."""


class MetricDeclarationError(ForesightError, TypeError):
    """A metric class is declared wrongly (bad direction, choices without a default, non-JSON defaults):
    refused when it is registered, so a plugin's mistake shows at load time, not as a crash mid-run."""
def close_matches(name: str, known) -> list[str]:
    """Names in ``known`` that ``name`` is probably a typo of (difflib's ratio >= 0.75), best first."""
    import difflib

    return difflib.get_close_matches(name, sorted(set(known)), n=3, cutoff=0.75)


def did_you_mean(name: str, known) -> str:
    """`` (did you mean 'lpips'?)`` or "" when nothing is close."""
    matches = close_matches(name, known)
    return f" (did you mean {' or '.join(repr(m) for m in matches)}?)" if matches else ""


class InputError(ForesightError):
    """One clip or pair is unusable: it becomes one error row and the run goes on."""


class MetricUnavailable(ForesightError):
    """A metric cannot run in this environment (missing weights, annotations, GPU)."""


class WeightsNotFound(MetricUnavailable):
    """A weight file is in none of the places searched."""

    def __init__(self, spec_name: str, filename: str, searched: list[str]):
        self.spec_name = spec_name
        self.filename = filename
        self.searched = searched
        places = "; ".join(searched)
        super().__init__(
            f"weight file {filename!r} not found (looked in: {places}); "
            f"download it with `foresight-eval weights fetch {spec_name}` "
            f"or copy it into one of those folders"
        )
