"""The public Python API (`import edgerec`): every object has a docstring with an example, the
examples run (as doctests, in pipeline order, each on the artifacts of the one before), and
each stage function takes the options of its CLI command under the same names and defaults."""

from __future__ import annotations

import doctest
import inspect
import sys

import pytest

import edgerec

# The order the examples run in: each uses the artifacts the one before it wrote.
ORDER = (
    "EdgerecError",
    "data",
    "teacher",
    "import_teacher",
    "distill",
    "prune",
    "export",
    "quantize",
    "validate",
    "Recommender",
    "build",
)


def test_importing_edgerec_loads_neither_the_api_nor_torch():
    import subprocess

    code = "import sys, edgerec; print('edgerec.api' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_every_public_object_has_a_docstring_with_an_example():
    import edgerec.api

    assert set(ORDER) == set(edgerec.API) == set(edgerec.api.__all__)
    missing = [name for name in edgerec.API if ">>>" not in (inspect.getdoc(getattr(edgerec, name)) or "")]
    assert not missing, f"no example in the docstring of: {missing}"


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'distil'"):
        edgerec.distil  # noqa: B018


def test_the_docstring_examples_run(tmp_path, interactions_csv):
    """One doctest run over the pipeline, on tiny models (about a minute on 2 cores)."""
    globs = {"edgerec": edgerec, "work": tmp_path, "interactions": interactions_csv, "quiet": lambda message: None}
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    ran = []
    for name in ORDER:
        obj = getattr(edgerec, name)
        for test in finder.find(obj, name, globs=globs):
            test.globs = globs  # one namespace: each example goes on from the artifacts before it
            runner.run(test, out=sys.stdout.write, clear_globs=False)
            ran.append(name)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctest examples failed (output above)"
    assert ran == list(ORDER)


# CLI options that the API spells differently, or that only a console has
CLI_ONLY = {"json_out", "ctx"}
API_ONLY = {"log"}


def cli_commands():
    from edgerec.cli import build, data, distill, export, prune, quantize, teacher, validate

    return {
        "data": data.data,
        "teacher": teacher.train,
        "import_teacher": teacher.import_,
        "distill": distill.distill,
        "prune": prune.prune,
        "export": export.export,
        "quantize": quantize.quantize,
        "validate": validate.validate,
        "build": build.build,
    }


def cli_default(param):
    default = param.default
    return str(default) if hasattr(default, "__fspath__") else default


# Where the API's default differs from the CLI's on purpose: the teacher's training options
# default to None there, the kind's own defaults (the CLI shows the id teacher's and swaps in
# the text teacher's for options left out).
KIND_DEFAULTS = {"epochs", "batch_size", "lr", "weight_decay", "warmup_steps", "patience", "precision"}


@pytest.mark.parametrize("name", sorted(cli_commands()))
def test_each_function_takes_its_commands_options(name):
    cli = {k: p for k, p in inspect.signature(cli_commands()[name]).parameters.items() if k not in CLI_ONLY}
    api = {k: p for k, p in inspect.signature(getattr(edgerec, name)).parameters.items() if k not in API_ONLY}
    assert set(api) == set(cli), f"only in the API: {set(api) - set(cli)}; only in the CLI: {set(cli) - set(api)}"
    differ = {}
    for key, param in api.items():
        if name == "teacher" and key in KIND_DEFAULTS:
            assert param.default is None
            continue
        want = cli_default(cli[key])
        got = str(param.default) if hasattr(param.default, "__fspath__") else param.default
        if param.default is inspect.Parameter.empty or want is inspect.Parameter.empty:
            if (param.default is inspect.Parameter.empty) != (want is inspect.Parameter.empty):
                differ[key] = (got, want)
        elif got != want:
            differ[key] = (got, want)
    assert not differ, f"defaults that differ (API, CLI): {differ}"


def test_the_version_is_pyprojects():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert edgerec.__version__ == pyproject["project"]["version"]
