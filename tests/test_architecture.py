"""The package's import structure: no import cycles (counting imports inside functions, which only hide a
cycle), and no upward imports: nothing outside the command line imports it, and the metrics do not import
the engine or the run-level code that drives them."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "foresight_eval"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports anywhere in its source (top level or inside functions)."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("foresight_eval"):
                targets = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                           for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names if alias.name.startswith("foresight_eval")]
            for target in targets:
                resolved = resolve(target)
                # A package's __init__ importing its own submodules is not a dependency of theirs on it.
                if resolved and resolved != name and resolved != "foresight_eval":
                    graph[name].add(resolved)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_package_has_no_import_cycle():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_upward_imports():
    graph = import_graph()
    upward = sorted(
        (module, target) for module, targets in graph.items() for target in targets
        if (target.startswith("foresight_eval.cli") and not module.startswith(("foresight_eval.cli", "foresight_eval.__main__")))
        or (module.startswith("foresight_eval.metrics") and target in {
            "foresight_eval.engine", "foresight_eval.latents", "foresight_eval.journal", "foresight_eval.report"})
        or (module.startswith(("foresight_eval.io", "foresight_eval.errors", "foresight_eval.formatting"))
            and not target.startswith(("foresight_eval.io", "foresight_eval.errors")))
    )
    assert upward == []


def test_the_readme_layout_names_every_module():
    """The README's layout table is kept from the tree: every top-level module and package is named in it."""
    readme = (PACKAGE.parent / "README.md").read_text()
    layout = readme[readme.index("## Layout"):readme.index("<!-- Feature sections follow")]
    missing = [
        entry.name for entry in sorted(PACKAGE.iterdir())
        if (entry.suffix == ".py" and entry.stem not in ("__init__", "__main__") or
            entry.is_dir() and (entry / "__init__.py").exists())
        and f"{entry.stem}{'.py' if entry.is_file() else '/'}`" not in layout
        and f"`{entry.stem}.py`" not in layout
    ]
    assert missing == []
