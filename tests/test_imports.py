"""The package's import graph, read from the source (ast): it has no cycle, and library modules
import edgerec's own modules at the top, where a reader sees what depends on what.

The lean start-up of the CLI (`import edgerec.cli` loads no torch, onnxruntime or litert) is
tests/test_cli.py's; this file keeps the layering that makes it cheap to hold."""

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "edgerec"

# Where a function-local import of an edgerec module is allowed, and why. The CLI imports the
# library inside each command so that `edgerec --help` never pays for it (the library's modules
# import torch, onnxruntime and litert inside functions for the same reason, but that is about
# third-party packages, which this test does not police).
LOCAL_IMPORTS_ALLOWED = {
    "edgerec.cli": "commands import the library when they run, so `edgerec --help` stays fast",
}
# The package itself (exactly: not its modules) loads the API on first use of `edgerec.distill`,
# so `import edgerec` (and with it the CLI) stays cheap.
LOCAL_IMPORTS_ALLOWED_EXACT = {"edgerec": "`edgerec.distill` and the rest load edgerec.api when first asked for"}


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
    assert (
        "edgerec.stages.export" in graph and "edgerec.core.graphs" in graph["edgerec.stages.export"]
    )  # it reads real edges
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
        if any(name == p or name.startswith(p + ".") for p in LOCAL_IMPORTS_ALLOWED) or name in (
            LOCAL_IMPORTS_ALLOWED_EXACT
        ):
            continue
        local += [
            f"{path.relative_to(PACKAGE.parent)}:{line} imports {target} inside a function"
            for target, line, at_top in edgerec_imports(path, set(found))
            if not at_top
        ]
    assert not local, "\n".join(local)


LAYERS = ("core", "devices", "formats", "stages", "api", "cli")  # each may import only those before it


def layer(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 2 else "package"


def test_the_folders_are_layers_and_stages_are_rooms():
    """edgerec.core is the machinery, edgerec.formats and edgerec.devices stand on it, the
    stages on all three, the Python API (edgerec.api) on the stages, the CLI on top: no import
    runs back down the list. A stage never imports another stage (what two share lives below
    them), except `build`, which runs them all."""
    graph = import_graph()
    assert {layer(m) for m in graph} >= set(LAYERS), sorted({layer(m) for m in graph})
    wrong = []
    for name, targets in graph.items():
        if layer(name) not in LAYERS:
            continue
        for target in targets:
            if layer(target) in LAYERS and LAYERS.index(layer(target)) > LAYERS.index(layer(name)):
                wrong.append(f"{name} ({layer(name)}) imports {target} ({layer(target)})")
            if layer(name) == layer(target) == "stages" and name != "edgerec.stages.build":
                wrong.append(f"stage {name} imports stage {target}")
    assert not wrong, "\n".join(wrong)


def test_tests_are_laid_out_like_the_package():
    tests = Path(__file__).resolve().parent
    folders = {p.name for p in tests.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))}
    assert folders <= set(LAYERS) | {"examples", "docs"}, folders - set(LAYERS)
    assert set(LAYERS) - {"cli"} <= folders | {"cli"}


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


FORMAT_NAMES = ("onnx", "tflite", "executorch")
_NAMES = "|".join(FORMAT_NAMES)
BRANCH = re.compile(rf'(==|!=)\s*"({_NAMES})"|"({_NAMES})"\s+(not\s+)?in\b|in\s+\(\s*"({_NAMES})"')


def test_format_knowledge_stays_behind_the_formats_protocol():
    """Outside a format's own package (`edgerec.formats.onnx`, ...), no code branches on a
    format's name: stages, the shared format machinery and the CLI ask `FORMATS[fmt]`."""
    found = []
    for name, path in modules().items():
        if any(name.startswith(f"edgerec.formats.{fmt}") for fmt in FORMAT_NAMES):
            continue
        found += [f"{name}: {line.strip()}" for line in path.read_text().splitlines() if BRANCH.search(line)]
    assert not found, "\n".join(found)


def test_the_branch_finder_finds_branches():
    assert BRANCH.search('if fmt == "onnx":') and BRANCH.search('if "tflite" not in target.formats:')
    assert BRANCH.search('x in ("executorch", "onnx")') and not BRANCH.search('files["onnx"]')
