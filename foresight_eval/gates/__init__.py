"""Decision gates: YAML gate files and the research log's presets, judged against run folders.

``load_gates("gate2-bridging")`` or ``load_gates("my-gates.yaml")`` gives a :class:`GateSet`;
``evaluate_gates(run, gate_set)`` gives a :class:`GateReport` (``.decision``, ``.entries``, ``.to_dict()``).
"""

from foresight_eval.gates.evaluate import STATUSES, GateEntry, GateReport, evaluate_gates
from foresight_eval.gates.spec import Criterion, Gate, GateFileError, GateSet, load_gates, preset_names

__all__ = [
    "STATUSES", "Criterion", "Gate", "GateEntry", "GateFileError", "GateReport", "GateSet",
    "evaluate_gates", "load_gates", "preset_names",
]
