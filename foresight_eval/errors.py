"""Exception types, each mapped to one behaviour of the engine and the CLI."""

from __future__ import annotations


class ForesightError(Exception):
    """Base class of every error this package raises on purpose."""


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
