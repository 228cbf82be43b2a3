"""Sizes that keep the package readable (issue 32): modules of about 400 lines or fewer, and
function bodies of about 60 lines or fewer. A body is counted from its first statement after
the docstring, so a CLI command's option declarations (its signature) do not count."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "edgerec"
MAX_MODULE_LINES = 420
MAX_BODY_LINES = 65


def body_lines(node: ast.FunctionDef) -> int:
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        body = body[1:]
    return body[-1].end_lineno - body[0].lineno + 1 if body else 0


def test_modules_stay_short():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_function_bodies_stay_short():
    long = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and body_lines(node) > MAX_BODY_LINES:
                long[f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}"] = body_lines(node)
    assert not long, f"function bodies over {MAX_BODY_LINES} lines: {long}"
