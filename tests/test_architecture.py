"""The package's layering (docs/architecture.md): imports only go down, and no module cycle exists.

Every ``glioseg`` import counts, at module level or inside a function: a lazy import is still
a dependency.  There is no exception list.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "glioseg"

#: Rank of each top-level part of the package; a module may import its own part and lower ranks.
#: ``infer`` and ``postprocess`` share a rank but may not import each other.
LAYERS: dict[str, int] = {
    "_version": 0,
    "errors": 0,
    "paths": 0,
    "runtime": 0,
    "data": 1,
    "prepare": 2,  # raw study -> BraTS-ready case; imports data and layer 0 only (test below)
    "evaluate": 3,
    "models": 4,
    "infer": 5,
    "postprocess": 5,
    "train": 6,
    "pipeline": 6,  # glioseg.segment: inference + a bundle's post-processing
    "report": 7,
    "experiment": 8,
    "serve": 9,  # glioseg serve: the local web app (job queue, uploads, page)
    "cli": 10,
    "__main__": 11,
    "": 11,  # the package itself (glioseg.segment, lazily)
}


def _module_name(path: Path) -> str:
    parts = ("glioseg", *path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Module -> the glioseg modules it imports (``from glioseg.x import y`` counts y when it is a module)."""
    modules = {_module_name(p) for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        name = _module_name(path)
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "glioseg":
                for alias in node.names:
                    child = f"{node.module}.{alias.name}"
                    targets.add(child if child in modules else node.module)
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name.split(".")[0] == "glioseg")
        graph[name] = {t for t in targets if t != name}
    return graph


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_part_of_the_package_has_a_layer():
    parts = {_part(m) for m in _imports()}
    assert parts <= set(LAYERS), f"add to LAYERS and docs/architecture.md: {sorted(parts - set(LAYERS))}"


def test_imports_only_go_down():
    upward = []
    for module, targets in _imports().items():
        for target in targets:
            a, b = _part(module), _part(target)
            if a != b and (LAYERS[b] > LAYERS[a] or LAYERS[b] == LAYERS[a]) and target != "glioseg._version":
                upward.append(f"{module} imports {target}")
    assert not upward, "\n".join(sorted(upward))


def test_no_import_cycle():
    graph = _imports()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(
                    " -> ".join(path[path.index(nxt) :] + [nxt]) if nxt in path else f"{node} -> {nxt}"
                )
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert not cycles, "\n".join(cycles)


def test_prepare_imports_only_data_and_layer_zero():
    """glioseg prepare runs before any model exists: it may not reach evaluation, models or inference."""
    allowed = {p for p, rank in LAYERS.items() if rank == 0} | {"data", "prepare"}
    wrong = [
        f"{module} imports {target}"
        for module, targets in _imports().items()
        if _part(module) == "prepare"
        for target in targets
        if _part(target) not in allowed
    ]
    assert not wrong, "\n".join(sorted(wrong))


#: Longest module allowed: past it, a module holds more than one concept (docs/architecture.md).
MAX_MODULE_LINES = 500


def test_no_module_over_the_size_limit():
    long = {
        str(p.relative_to(SRC)): n
        for p in SRC.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"split these modules (over {MAX_MODULE_LINES} lines): {long}"
