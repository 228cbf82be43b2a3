"""The package's import graph, read from the source (ast): it has no cycle, and library modules
import edgerec's own modules at the top, where a reader sees what depends on what.

The lean start-up of the CLI (`import edgerec.cli` loads no torch, onnxruntime or litert) is
tests/test_cli.py's; this file keeps the layering that makes it cheap to hold."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "edgerec"

# Where a function-local import of an edgerec module is allowed, and why. The CLI imports the
# library inside each command so that `edgerec --help` never pays for it (the library's modules
# import torch, onnxruntime and litert inside functions for the same reason, but that is about
# third-party packages, which this test does not police).
LOCAL_IMPORTS_ALLOWED = {
    "edgerec.cli": "commands import the library when they run, so `edgerec --help` stays fast",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def edgerec_imports(path: Path, known: set[str]):
    """(imported module, line, at top level) for every import of an edgerec module in `path`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}:{node.lineno}: relative import; edgerec spells its imports out")
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "edgerec":
            for alias in node.names:  # `from edgerec import metrics` imports a module
                full = f"{node.module}.{alias.name}"
                yield (full if full in known else node.module), node.lineno, id(node) in top
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "edgerec":
                    yield alias.name, node.lineno, id(node) in top


def import_graph() -> dict[str, set[str]]:
    found = modules()
    return {
        name: {target for target, _, _ in edgerec_imports(path, set(found)) if target != name}
        for name, path in found.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path [a, b, ..., a], or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for root in sorted(graph):
        if state.get(root):
            continue
        path, stack = [root], [iter(sorted(graph[root]))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif nxt not in graph or state.get(nxt) == 2:
                continue
            elif state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            else:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert "edgerec.export" in graph and "edgerec.graphs" in graph["edgerec.export"]  # it reads real edges
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"a"}}) == ["a", "a"]


def test_library_modules_import_edgerec_at_the_top():
    found = modules()
    local = []
    for name, path in found.items():
        if any(name == p or name.startswith(p + ".") for p in LOCAL_IMPORTS_ALLOWED):
            continue
        local += [
            f"{path.relative_to(PACKAGE.parent)}:{line} imports {target} inside a function"
            for target, line, at_top in edgerec_imports(path, set(found))
            if not at_top
        ]
    assert not local, "\n".join(local)


@pytest.mark.parametrize("stage", ["edgerec.graphs", "edgerec.writers", "edgerec.checks", "edgerec.incremental"])
def test_shared_machinery_sits_below_the_stages(stage):
    """The graphs, writers, checks and the step model's own module never reach up into a stage."""
    graph = import_graph()
    stages = {"edgerec.export", "edgerec.quantize", "edgerec.validate", "edgerec.build", "edgerec.prune"}
    seen, todo = set(), [stage]
    while todo:
        for target in graph.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    assert not seen & stages, f"{stage} reaches {sorted(seen & stages)}"


def test_no_module_imports_another_modules_private_names():
    """What two modules share is public in the module below them: a name that starts with `_`
    stays in its own room (tests may reach in; the package may not)."""
    found = []
    for name, path in modules().items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "edgerec":
                found += [
                    f"{name}:{node.lineno} imports {node.module}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.endswith("__") and node.module != name
                ]
    assert not found, found


# Format branches not yet behind edgerec.formats (issue 32 goes on): making the int8 forms
# (quantize), ORT Mobile's files (bundle) and the text teacher,
# which optimum exports to ONNX alone. This list may only shrink.
FORMAT_BRANCHES_LEFT = {
    ("edgerec.quantize", 'if fmt == "onnx":'): 2,
    ("edgerec.bundle", 'if not target.onnx.ort_format or "onnx" not in meta["files"]:'): 1,
    ("edgerec.bundle", '[step_entry["files"]["onnx"]] if step_entry and "onnx" in step_entry["files"] else []'): 1,
    ("edgerec.export", 'if "onnx" not in target.formats:'): 1,
}


def test_format_knowledge_stays_behind_the_formats_protocol():
    """Outside `edgerec.formats` (and the CLI's help texts), no new code branches on a format's
    name: it asks `FORMATS[fmt]`."""
    import re

    pattern = re.compile(r'(==|!=)\s*"(onnx|tflite)"|"(onnx|tflite)"\s+(not\s+)?in\b|in\s+\(\s*"(onnx|tflite)"')
    found: dict = {}
    for name, path in modules().items():
        if name.startswith(("edgerec.formats", "edgerec.cli")):
            continue
        for line in path.read_text().splitlines():
            if pattern.search(line):
                found[name, line.strip()] = found.get((name, line.strip()), 0) + 1
    assert found == FORMAT_BRANCHES_LEFT, set(found.items()) ^ set(FORMAT_BRANCHES_LEFT.items())
