"""Gate files: YAML that names, per gate, metrics with a threshold, a direction, an optional tolerance
and whether the metric is required or informational.

```yaml
name: my-gate
tolerance: 1.5%            # default for every metric below: "accepted" within 1.5% of the threshold
gates:
  - name: reconstruction
    metrics:
      - {metric: lpips, threshold: 0.35, direction: lower}
      - {metric: latency_overhead, threshold: 25%, direction: lower, required: false}
      - {metric: tc_delta, threshold: 0.02, direction: target}   # |tc_delta - 0| <= 0.02
```

``direction: target`` is for metrics whose best value is a target (``*_delta``: 0; ``tc``, ``flicker``:
the reference's own value, through their delta): the run's distance to it must be at most the threshold.

A file may ``include`` presets or other files (their gates come first) and may list ``metrics`` at the
top level instead of ``gates`` (one gate named after the file). Every error names the file and line.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from foresight_eval.errors import UsageError
from foresight_eval.io.files import named_or_packaged_yaml, packaged_yaml_names

Direction = Literal["higher", "lower", "target"]

_TOP_KEYS = ("name", "description", "source", "tolerance", "include", "gates", "metrics")
_GATE_KEYS = ("name", "description", "tolerance", "metrics")
_CRITERION_KEYS = ("metric", "label", "threshold", "direction", "tolerance", "required", "params", "category")


class GateFileError(UsageError):
    """A gate file or preset name is unusable (exit 2); the message names the file and line."""


@dataclass(frozen=True)
class Criterion:
    """One metric line of a gate. ``tolerance`` is a fraction of ``|threshold|``; ``params`` (optional)
    must match the parameters the run recorded for the metric, e.g. ``{k: 10}`` for neighbourhood_recall;
    ``category`` (optional) judges the metric's mean over that category's clips (``score --categories``)."""

    metric: str
    threshold: float
    direction: Direction
    tolerance: float = 0.0
    required: bool = True
    label: str = ""
    params: dict[str, Any] | None = None
    where: str = ""  # "file:line" of its metric, for errors found when the gate is evaluated
    category: str | None = None


@dataclass(frozen=True)
class Gate:
    name: str
    criteria: tuple[Criterion, ...]
    description: str = ""


@dataclass(frozen=True)
class GateSet:
    name: str
    gates: tuple[Gate, ...]
    description: str = ""
    source: str = ""  # where the thresholds come from (a citation), not the file path
    path: str = ""  # the file it was read from


def preset_names() -> list[str]:
    return packaged_yaml_names(_presets())


def _presets():
    return resources.files("foresight_eval.gates") / "presets"


def load_gates(name_or_path: str | Path) -> GateSet:
    """A preset by name (case-insensitive: ``gate1-reconstruction``, ``q3``...) or a YAML gate file."""
    return _load(name_or_path, base=Path.cwd(), seen=())


def _resolve(name_or_path: str | Path, base: Path) -> Path:
    return named_or_packaged_yaml(name_or_path, _presets(), "gate", "preset", GateFileError, base)


def _load(name_or_path: str | Path, base: Path, seen: tuple[Path, ...]) -> GateSet:
    path = _resolve(name_or_path, base).resolve()
    if path in seen:
        raise GateFileError(f"{path}: includes itself (through {' -> '.join(p.name for p in seen)})")
    try:
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=_LineLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise GateFileError(f"{where}: invalid YAML: {exc.problem or exc.context}") from exc
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise GateFileError(f"{path}: cannot read gate file: {exc}") from exc
    return _Parser(path).gate_set(document, lambda item: _load(item, path.parent, (*seen, path)))


class _Mapping(dict):
    """A YAML mapping that remembers its line and the line of each key (1-based)."""

    line = 0
    key_lines: dict[Any, int]


class _Sequence(list):
    line = 0
    item_lines: list[int]


class _LineLoader(yaml.SafeLoader):
    """PyYAML's safe loader, keeping line numbers of mappings and sequences for schema errors.

    Aliases (``*name``) are refused: each one repeats its anchor's content, so a few hundred bytes of
    nested aliases expand to gigabytes (the "billion laughs"), and a gate file has no need of them.
    """

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, f"alias *{event.anchor} is not allowed in a gate file "
                                              "(write the value out)", event.start_mark)
        return super().compose_node(parent, index)


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> _Mapping:
    loader.flatten_mapping(node)
    mapping = _Mapping()
    mapping.line, mapping.key_lines = node.start_mark.line + 1, {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, float, bool)) and key is not None:  # `? [a]`: a key gate files never use
            raise yaml.constructor.ConstructorError(None, None, f"a key must be a plain value, got {_kind(key)}",
                                                    key_node.start_mark)
        if key in mapping:  # PyYAML silently keeps the last duplicate; a gate file must not
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.key_lines[key] = key_node.start_mark.line + 1
    return mapping


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode) -> _Sequence:
    sequence = _Sequence(loader.construct_object(child, deep=True) for child in node.value)
    sequence.line, sequence.item_lines = node.start_mark.line + 1, [child.start_mark.line + 1 for child in node.value]
    return sequence


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


class _Parser:
    def __init__(self, path: Path):
        self.path = path

    def error(self, line: int, message: str) -> GateFileError:
        return GateFileError(f"{self.path}:{line}: {message}")

    def mapping(self, value: Any, line: int, what: str, keys: tuple[str, ...]) -> _Mapping:
        if not isinstance(value, _Mapping):
            raise self.error(line, f"{what} must be a mapping, got {_kind(value)}")
        for key, key_line in value.key_lines.items():
            if key not in keys:
                raise self.error(key_line, f"unknown key {key!r} in {what} (expected one of: {', '.join(keys)})")
        return value

    def sequence(self, value: Any, line: int, what: str) -> _Sequence:
        if not isinstance(value, _Sequence) or not value:
            raise self.error(line, f"{what} must be a non-empty list, got {_kind(value)}")
        return value

    def text(self, mapping: _Mapping, key: str, default: str | None = None) -> str:
        value = mapping.get(key, default)
        if not isinstance(value, str) or not value.strip():
            raise self.error(mapping.key_lines.get(key, mapping.line), f"{key!r} must be a non-empty string")
        return value.strip()

    def fraction(self, mapping: _Mapping, key: str, default: float | None = None) -> float:
        """A number, or a percentage string: ``25%`` is 0.25."""
        line = mapping.key_lines.get(key, mapping.line)
        if key not in mapping:
            if default is None:
                raise self.error(mapping.line, f"missing key {key!r}")
            return default
        try:
            value = parse_number(mapping[key])
        except ValueError as exc:
            raise self.error(line, f"{key!r}: {exc}") from None
        if not math.isfinite(value):
            raise self.error(line, f"{key!r} must be finite, got {mapping[key]!r}")
        return value

    def gate_set(self, document: Any, include: Callable[[str], GateSet]) -> GateSet:
        top = self.mapping(document, 1, "a gate file", _TOP_KEYS)
        if "gates" in top and "metrics" in top:
            raise self.error(top.key_lines["metrics"], "give either 'gates' or top-level 'metrics', not both")
        if not any(key in top for key in ("gates", "metrics", "include")):
            raise self.error(top.line, "a gate file needs 'gates' (a list of gates), 'metrics' (one gate) or 'include'")
        name = self.text(top, "name", self.path.stem)
        tolerance = self.tolerance(top, 0.0)
        gates: list[Gate] = []
        if "include" in top:
            items = self.sequence(top["include"], top.key_lines["include"], "'include'")
            for item, line in zip(items, items.item_lines):
                if not isinstance(item, str):
                    raise self.error(line, f"'include' items are preset names or file paths, got {_kind(item)}")
                try:
                    gates.extend(include(item).gates)
                except GateFileError as exc:
                    raise self.error(line, f"include {item!r}: {exc}") from None
        if "metrics" in top:
            gates.append(self.gate(top, name, tolerance))
        for item, line in zip(*self.items(top, "gates")):
            gate = self.mapping(item, line, "a gate", _GATE_KEYS)
            gates.append(self.gate(gate, self.text(gate, "name"), tolerance))
        names = [gate.name for gate in gates]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise self.error(top.line, f"gate names must be unique, repeated: {', '.join(duplicates)}")
        return GateSet(name, tuple(gates), top.get("description", "") or "", top.get("source", "") or "", str(self.path))

    def items(self, mapping: _Mapping, key: str) -> tuple[list, list[int]]:
        if key not in mapping:
            return [], []
        items = self.sequence(mapping[key], mapping.key_lines[key], repr(key))
        return items, items.item_lines

    def tolerance(self, mapping: _Mapping, default: float) -> float:
        tolerance = self.fraction(mapping, "tolerance", default)
        if tolerance < 0:
            raise self.error(mapping.key_lines["tolerance"], "'tolerance' must be >= 0")
        return tolerance

    def gate(self, gate: _Mapping, name: str, default_tolerance: float) -> Gate:
        """``gate``: a gate mapping, or the file's top level when it lists ``metrics`` directly."""
        tolerance = self.tolerance(gate, default_tolerance)
        if "metrics" not in gate:
            raise self.error(gate.line, f"gate {name!r} has no 'metrics'")
        metrics = self.sequence(gate["metrics"], gate.key_lines["metrics"], f"'metrics' of gate {name!r}")
        criteria = tuple(
            self.criterion(self.mapping(item, line, f"a metric of gate {name!r}", _CRITERION_KEYS), tolerance)
            for item, line in zip(metrics, metrics.item_lines)
        )
        return Gate(name, criteria, gate.get("description", "") or "")

    def criterion(self, entry: _Mapping, default_tolerance: float) -> Criterion:
        metric = self.text(entry, "metric")
        direction = entry.get("direction")
        if direction not in ("higher", "lower", "target"):
            line = entry.key_lines.get("direction", entry.line)
            raise self.error(line, f"{metric}: 'direction' must be 'higher', 'lower' (which side passes) or "
                                   f"'target' (the distance to the metric's target), got {direction!r}")
        threshold = self.fraction(entry, "threshold")
        tolerance = self.tolerance(entry, default_tolerance)
        if tolerance and threshold == 0:
            raise self.error(entry.key_lines.get("tolerance", entry.line),
                             f"{metric}: the tolerance is a fraction of the threshold, and the threshold is 0")
        required = entry.get("required", True)
        if not isinstance(required, bool):
            raise self.error(entry.key_lines["required"], f"{metric}: 'required' must be true or false, got {required!r}")
        params = entry.get("params")
        if params is not None and not isinstance(params, _Mapping):
            raise self.error(entry.key_lines["params"], f"{metric}: 'params' must be a mapping, got {_kind(params)}")
        category = self.text(entry, "category") if "category" in entry else None
        label = self.text(entry, "label") if "label" in entry else (f"{metric} [{category}]" if category else "")
        return Criterion(metric, threshold, direction, tolerance, required, label, dict(params) if params else None,
                         f"{self.path}:{entry.key_lines.get('metric', entry.line)}", category)


def parse_number(value: Any) -> float:
    """A number, ``"inf"`` (how run folders store infinity), or a percentage string such as ``"31.9%"``."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(text[:-1]) / 100.0 if text.endswith("%") else float(text)
        except ValueError:
            pass
    raise ValueError(f"expected a number or a percentage such as 25%, got {value!r}")


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    return f"{type(value).__name__} {value!r}"
