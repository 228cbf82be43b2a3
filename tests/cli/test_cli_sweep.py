"""Every command and every option of the CLI, read from the Typer app itself, fed the bad values of
its type: one line on stderr, exit code 2, no traceback, nothing written.

- numbers: every numeric option must declare a range (min and max); the sweep tries just below
  and just above it, NaN and infinity (floats) and a word;
- choices (Literal): a name that is not one;
- paths: by what the option expects (PATHS below): missing, a file where a folder is expected
  (and the reverse), an empty folder, an artifact of another stage, a truncated or tampered copy;
- other strings: the values in STRINGS.

An option the tables do not cover fails `test_every_option_has_bad_values`, so a new option
cannot land without its cases. Boolean flags take no value and so have none.
"""

from __future__ import annotations

import shutil
import typing
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from edgerec.cli import app
from edgerec.core.distillation import DistillConfig
from edgerec.core.interactions import load_data
from edgerec.core.models import Shape
from edgerec.core.signing import generate_key
from edgerec.core.training import TrainConfig
from edgerec.stages.distill import distill
from edgerec.stages.export import ExportConfig, export
from edgerec.stages.teacher import TeacherConfig, train_teacher

TINY = Shape(hidden=8, layers=1, heads=1, intermediate=8, max_len=8)
TINY_ARGS = ["--hidden", "8", "--layers", "1", "--heads", "1", "--intermediate", "8", "--max-len", "8", "--epochs", "1"]
TARGET = "x86_64-avx2"  # ONNX only: the cheapest bundle

# What each path option expects. Kinds: an artifact of a stage (data, teacher, student, model =
# any model artifact, bundle), out (an artifact to write), folder (a folder to write into),
# file-out (a file to write), file (an input file; toml: one that may be empty), keyfile,
# hf (a Hugging Face directory),
# targets (a folder of target profiles).
PATHS = {
    "data interactions": "file",
    "data --out": "out",
    "data --items": "file",
    "data --calibration": "toml",
    "teacher --data": "data",
    "teacher --out": "out",
    "teacher --base": "hf",
    "teacher import path": "hf",
    "teacher import --data": "data",
    "teacher import --out": "out",
    "evaluate model": "model",
    "evaluate --data": "data",
    "evaluate --out": "file-out",
    "distill --teacher": "teacher",
    "distill --data": "data",
    "distill --out": "out",
    "prune --student": "student",
    "prune --teacher": "teacher",
    "prune --data": "data",
    "prune --out": "out",
    "prune --targets-dir": "targets",
    "export --model": "model",
    "export --data": "data",
    "export --out": "out",
    "export --targets-dir": "targets",
    "quantize --bundle": "bundle",
    "quantize --data": "data",
    "quantize --out": "out",
    "quantize --calibration": "file",
    "quantize --targets-dir": "targets",
    "validate --bundle": "bundle",
    "validate --data": "data",
    "validate --teacher": "teacher",
    "validate --student": "student",
    "validate --ssh-key": "keyfile",
    "validate --report": "folder",
    "validate --targets-dir": "targets",
    "build interactions": "file",
    "build --teacher": "teacher",
    "build --work": "folder",
    "build --dist": "folder",
    "build --targets-dir": "targets",
    "recommend --bundle": "bundle",
    "recommend --public-key": "keyfile",
    "validate --public-key": "keyfile",
    "keygen key": "file-out",
    "sign bundle": "bundle",
    "sign --key": "keyfile",
    "sign --parent": "bundle",
    "verify bundle": "bundle",
    "verify --public-key": "keyfile",
    "verify --installed": "bundle",
    "targets list --targets-dir": "targets",
    "targets show --targets-dir": "targets",
}

# Free-text options and what must be refused.
STRINGS = {
    "data --dataset": ["", "nope"],
    "data --user-col": ["", "nope"],
    "data --item-col": ["", "nope"],
    "data --time-col": ["", "nope"],
    "data --title-col": ["", "nope"],
    "data --genres-col": ["", "nope"],
    "prune --target": ["", "nope"],
    "export --target": ["", "nope"],
    "export --formats": ["", ",", "nope"],
    "quantize --target": ["", "nope"],
    "validate --target": ["", "nope"],
    "validate --device": ["", "nope", "ssh://"],
    "validate --device-python": ["", "  "],
    "build --target": ["", "nope"],
    "build --dataset": ["", "nope"],
    "build --formats": ["", ",", "nope"],
    "recommend --history": ["", "nope", ",,"],
    "recommend --allow": ["nope", "@/nonexistent/ids.txt"],
    "recommend --exclude": ["nope", "@/nonexistent/ids.txt"],
    "targets show name": ["", "nope"],
    "distill --init": ["", "nope"],
    "data --synthetic": ["", "nope", "5x10", "10x", "10x10x10", "1e400x10", "1e9x10"],
}

# Cases that must run without the interactions file (a built-in or synthetic dataset instead).
NO_INTERACTIONS = {"data --dataset", "build --dataset", "data --synthetic"}

# Extra arguments a case needs so that the option is used at all.
CONTEXT = {
    "teacher --base": ["--kind", "text"],
    "prune --targets-dir": ["--target", TARGET],
    "validate --device-python": ["--device", "ssh://nobody@127.0.0.1:9"],
    "validate --ssh-key": ["--device", "ssh://nobody@127.0.0.1:9"],
}


def walk(command, path=()):
    """(command path, command) for every command and group with parameters."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from walk(sub, (*path, name))


def options():
    """{"command --option" (or "command argname"): click parameter} for the whole app."""
    found = {}
    for path, command in walk(typer.main.get_command(app)):
        for param in command.params:
            if param.name == "help":
                continue
            flag = max((o for o in param.opts if o.startswith("--")), key=len, default=param.opts[0])
            found[" ".join([*path, flag if flag.startswith("-") else param.name])] = param
    return found


def base_type(param):
    annotation = param.type_descriptor.annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Union and len(args) == 1:
        annotation = args[0]
    return annotation


def numeric_bad(param) -> list[str]:
    kind = base_type(param)
    assert param.min is not None and param.max is not None, (
        f"{param.name}: a numeric option needs min= and max= (a range the CLI checks)"
    )
    if kind is int:
        return [str(param.min - 1), str(param.max + 1), "abc"]
    return [repr(param.min - max(1.0, abs(param.min))), repr(param.max * 2 + 1), "nan", "inf", "abc"]


def is_flag(param) -> bool:
    return bool(getattr(param, "is_flag", False)) or base_type(param) is bool


@pytest.fixture(scope="module")
def world(tmp_path_factory, data_dir, interactions_csv):
    """Valid artifacts to hold every other argument steady, and broken ones to feed."""
    root = tmp_path_factory.mktemp("sweep")
    train_teacher(
        data_dir, root / "teacher", TeacherConfig(kind="causal", shape=TINY, train=TrainConfig(epochs=1, batch_size=16))
    )
    distill(
        root / "teacher",
        data_dir,
        root / "student",
        DistillConfig(student=TINY, train=TrainConfig(epochs=1, batch_size=16)),
    )
    export(root / "student", data_dir, root / "bundle", ExportConfig(target=TARGET, parity_users=8))
    bad = root / "bad"
    bad.mkdir()
    (bad / "empty-dir").mkdir()
    (bad / "a-file").write_text("not a folder\n")
    (bad / "empty-file").write_bytes(b"")
    (bad / "garbage").write_bytes(bytes(range(256)) * 4)
    for name, source, member, how in (
        ("data", data_dir, "sequences.npz", "truncate"),
        ("teacher", root / "teacher", "model/model.safetensors", "truncate"),
        ("student", root / "student", "model/model.safetensors", "truncate"),
        ("bundle", root / "bundle", "model.onnx", "flip"),
    ):
        copy = bad / f"damaged-{name}"
        shutil.copytree(source, copy)
        blob = (copy / member).read_bytes()
        (copy / member).write_bytes(
            blob[: len(blob) // 2]
            if how == "truncate"
            else blob[: len(blob) // 2] + bytes([blob[len(blob) // 2] ^ 1]) + blob[len(blob) // 2 + 1 :]
        )
    hf = bad / "garbage-hf"
    hf.mkdir()
    (hf / "config.json").write_text("{not json")
    (hf / "model.safetensors").write_bytes(b"\x00" * 16)
    profiles = bad / "garbage-targets"
    profiles.mkdir()
    for name in ("arm64", "rpi4", TARGET, "x86_64-vnni"):
        (profiles / f"{name}.toml").write_text("version = [unclosed\n")
    generate_key(root / "key")
    first_item = load_data(data_dir).item_ids()[0]
    return {
        "root": root,
        "data": data_dir,
        "csv": interactions_csv,
        "teacher": root / "teacher",
        "student": root / "student",
        "bundle": root / "bundle",
        "bad": bad,
        "item": first_item,
        "key": root / "key",
        "public_key": root / "key.pub",
    }


def path_cases(kind: str, w) -> list[str]:
    bad = w["bad"]
    missing, a_file, empty_dir = bad / "missing", bad / "a-file", bad / "empty-dir"
    below_file = a_file / "inside"
    artifact = {
        "data": [w["teacher"], bad / "damaged-data"],
        "teacher": [w["data"], bad / "damaged-teacher"],
        "student": [w["data"], bad / "damaged-student"],
        "model": [w["data"], bad / "damaged-student"],
        "bundle": [w["data"], bad / "damaged-bundle"],
    }
    if kind in artifact:
        return [str(p) for p in (missing, a_file, empty_dir, *artifact[kind])]
    return [
        str(p)
        for p in {
            "out": [a_file, empty_dir, below_file, w["teacher"]],  # the last: an existing artifact
            "folder": [a_file, below_file],
            "file-out": [empty_dir, below_file],
            "file": [missing, empty_dir, bad / "empty-file", bad / "garbage"],
            "toml": [missing, empty_dir, bad / "garbage"],
            "keyfile": [missing, empty_dir],
            "hf": [missing, a_file, empty_dir, bad / "garbage-hf"],
            "targets": [missing, a_file, bad / "garbage-targets"],
        }[kind]
    ]


def base_args(command: str, w, out: Path) -> list[str]:
    """Valid arguments for `command`, so that only the option under test is wrong."""
    d, t, s, b = str(w["data"]), str(w["teacher"]), str(w["student"]), str(w["bundle"])
    return {
        "data": [str(w["csv"]), "--out", str(out), "--title-col", "title"],
        "teacher": ["--data", d, "--out", str(out), *TINY_ARGS],
        "teacher import": [str(w["teacher"] / "model"), "--data", d, "--out", str(out)],
        "evaluate": [t, "--data", d],
        "distill": ["--teacher", t, "--data", d, "--out", str(out), *TINY_ARGS],
        "prune": ["--student", s, "--teacher", t, "--data", d, "--out", str(out), "--recovery-epochs", "1"],
        "export": ["--target", TARGET, "--model", s, "--data", d, "--out", str(out)],
        "quantize": ["--target", TARGET, "--bundle", b, "--data", d, "--out", str(out)],
        "validate": [
            "--target",
            TARGET,
            "--bundle",
            b,
            "--data",
            d,
            "--report",
            str(out),
            "--users",
            "2",
            "--warmup",
            "0",
        ],
        "build": ["--target", TARGET, str(w["csv"]), "--work", str(out / "runs"), "--dist", str(out / "dist")],
        "recommend": ["--bundle", b, "--history", w["item"]],
        "keygen": [str(out)],
        "sign": [b, "--key", str(w["key"])],
        "verify": [b, "--public-key", str(w["public_key"])],
        "targets list": [],
        "targets show": [TARGET],
    }[command]


def with_value(args: list[str], param, value: str) -> list[str]:
    """`args` with the parameter set to `value` (replacing a value already there)."""
    if param.param_type_name == "argument":
        return _set_positional(args, value)
    names = set(param.opts) | set(param.secondary_opts)
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a in names:
            skip = True
            continue
        out.append(a)
    return [*out, param.opts[0], value]


def _set_positional(args: list[str], value: str) -> list[str]:
    """Replace the first argument that is not an option or an option's value."""
    out, i, done = [], 0, False
    while i < len(args):
        a = args[i]
        if a.startswith("-"):
            out += args[i : i + 2]
            i += 2
            continue
        out.append(a if done else value)
        done = True
        i += 1
    return out if done else [value, *out]


def cases(w):
    for key, param in sorted(options().items()):
        command = key.rsplit(" ", 1)[0]
        if is_flag(param):
            continue
        kind = base_type(param)
        if key in PATHS:
            values = path_cases(PATHS[key], w)
        elif key in STRINGS:
            values = STRINGS[key]
        elif typing.get_origin(kind) is typing.Literal:
            values = ["nope", ""]
        elif kind in (int, float):
            values = numeric_bad(param)
        else:
            raise AssertionError(f"{key}: no bad-value cases (add it to PATHS or STRINGS)")
        for value in values:
            yield key, command, param, value


def snapshot(*folders) -> set:
    return {
        (str(p), p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else (str(p),)
        for folder in folders
        for p in Path(folder).rglob("*")
    }


def test_every_option_has_bad_values():
    found = options()
    assert len(found) > 100 and "distill --epochs" in found and "teacher --kind" in found
    uncovered = []
    for key, param in found.items():
        if is_flag(param) or key in PATHS or key in STRINGS:
            continue
        kind = base_type(param)
        if typing.get_origin(kind) is typing.Literal:
            continue
        if kind in (int, float):
            if param.min is None or param.max is None:
                uncovered.append(f"{key}: numeric without min= and max=")
            continue
        uncovered.append(f"{key}: {kind} has no bad-value cases")
    assert not uncovered, "\n".join(uncovered)
    stale = sorted(set(PATHS) | set(STRINGS) - set(found))
    assert not [k for k in stale if k not in found], f"tables name options that no longer exist: {stale}"


@pytest.mark.slow
def test_every_bad_value_is_one_line_exit_2_and_writes_nothing(world, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EDGEREC_CACHE", str(tmp_path / "cache"))
    runner = CliRunner()
    watched = (world["root"], world["data"], tmp_path)
    before = snapshot(*watched)
    failures, ran = [], 0
    for index, (key, command, param, value) in enumerate(cases(world)):
        out = tmp_path / f"out-{index}"
        args = base_args(command, world, out)
        if key in NO_INTERACTIONS:
            args = [a for a in args if a != str(world["csv"])]
        args = with_value(args, param, value) + CONTEXT.get(key, [])
        result = runner.invoke(app, [*command.split(), *args])
        ran += 1
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        problems = []
        if result.exit_code != 2:
            problems.append(f"exit {result.exit_code}")
        if len(lines) != 1 or not lines[0].startswith("error: "):
            problems.append(f"stderr {lines[:4]}")
        if "Traceback" in result.output or result.exception and not isinstance(result.exception, SystemExit):
            problems.append(f"exception {result.exception!r}")
        after = snapshot(*watched)
        if after != before:
            problems.append(f"wrote {sorted(map(str, after ^ before))[:3]}")
            before = after
        if problems:
            failures.append(f"{key} = {value!r}: {'; '.join(problems)}")
    assert ran > 300
    assert not failures, f"{len(failures)} of {ran} cases:\n" + "\n".join(failures)
