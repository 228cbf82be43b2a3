"""Nothing wrong gets through: a changed bundle or artifact file is refused by every reader, and
faults during a run (a runtime that crashes, a full disk, two commands on one output) end in one
line with the earlier artifact intact."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgerec.cli import app
from edgerec.core.artifacts import atomic_artifact, output_lock, read_manifest
from edgerec.core.errors import EdgerecError
from edgerec.core.models import Shape
from edgerec.core.training import TrainConfig
from edgerec.devices.envs import run_runner
from edgerec.stages.export import ExportConfig, export
from edgerec.stages.recommend import Recommender
from edgerec.stages.teacher import TeacherConfig, train_teacher
from edgerec.stages.validate import ValidateConfig, validate

SHAPE = Shape(hidden=16, layers=1, heads=2, intermediate=32, max_len=8)
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "app.py"
# examples/app.py must run without edgerec: the same trick as tests/test_recommend_examples.py
NO_EDGEREC = (
    "import runpy, sys; sys.modules['edgerec'] = None; sys.argv = sys.argv[1:]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)


@pytest.fixture(scope="module")
def built(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("integrity")
    train_teacher(
        data_dir,
        root / "teacher",
        TeacherConfig(kind="causal", shape=SHAPE, train=TrainConfig(epochs=1, batch_size=16)),
    )
    export(root / "teacher", data_dir, root / "bundle", ExportConfig(target="x86_64-avx2", parity_users=16))
    return root


def flip_byte(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))


def bundle_copy(built, tmp_path) -> Path:
    return Path(shutil.copytree(built / "bundle", tmp_path / "bundle"))


def test_metadata_records_every_bundle_file(built):
    meta = json.loads((built / "bundle" / "metadata.json").read_text())
    on_disk = {p.name for p in (built / "bundle").iterdir() if p.name not in ("metadata.json", "manifest.json")}
    assert set(meta["integrity"]) == on_disk and {"model.onnx", "items.json"} <= on_disk
    for name, record in meta["integrity"].items():
        assert record["bytes"] == (built / "bundle" / name).stat().st_size and len(record["sha256"]) == 64


@pytest.mark.parametrize("name", ["model.onnx", "items.json", "metadata.json"])
def test_a_changed_bundle_file_is_refused_by_validate_recommend_and_the_example(built, tmp_path, data_dir, name):
    bundle = bundle_copy(built, tmp_path)
    if name == "metadata.json":  # an edit that keeps it valid JSON: the manifest's hash catches it
        meta = json.loads((bundle / name).read_text())
        meta["max_len"] += 0  # same value, different bytes
        (bundle / name).write_text(json.dumps(meta))
    else:
        flip_byte(bundle / name)
    with pytest.raises(EdgerecError, match=f"{name}: has changed since it was written"):
        validate(bundle, data_dir, ValidateConfig(target="x86_64-avx2", warmup=0, users=4), log=lambda m: None)
    with pytest.raises(EdgerecError, match=f"{name}: has changed"):
        Recommender(bundle)
    result = CliRunner().invoke(app, ["recommend", "--bundle", str(bundle), "--history", "i1"])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and name in result.stderr
    out = subprocess.run(
        [sys.executable, "-c", NO_EDGEREC, str(EXAMPLE), str(bundle), "--history", "i1"], capture_output=True, text=True
    )
    assert out.returncode != 0 and f"{name} is not the file the bundle was built with" in out.stderr


def test_a_truncated_bundle_file_names_its_size(built, tmp_path):
    bundle = bundle_copy(built, tmp_path)
    blob = (bundle / "model.onnx").read_bytes()
    (bundle / "model.onnx").write_bytes(blob[:100])
    with pytest.raises(EdgerecError, match=r"model.onnx: has 100 bytes, \d+ were written \(truncated\)"):
        Recommender(bundle)


def test_allow_modified_lets_an_edit_through_and_records_it(built, tmp_path, data_dir):
    bundle = bundle_copy(built, tmp_path)
    items = json.loads((bundle / "items.json").read_text())
    items[0]["title"] = "Renamed on purpose"
    (bundle / "items.json").write_text(json.dumps(items))
    report = validate(
        bundle,
        data_dir,
        ValidateConfig(target="x86_64-avx2", warmup=0, users=4, allow_modified=True),
        log=lambda m: None,
    )
    assert report["modified_files"] == ["items.json"]
    assert Recommender(bundle, allow_modified=True).modified == ["items.json"]


def test_a_damaged_weight_file_in_an_artifact_is_one_line(built, tmp_path, data_dir):
    teacher = Path(shutil.copytree(built / "teacher", tmp_path / "teacher"))
    weights = teacher / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-7])
    result = CliRunner().invoke(app, ["evaluate", str(teacher), "--data", str(data_dir)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.strip().splitlines() == [
        f"error: {weights}: has changed since it was written (sha256 differs); re-run the teacher stage that made it"
    ]
    manifest = teacher / "manifest.json"  # without the manifest, the loader itself names the file
    manifest.unlink()
    with pytest.raises(EdgerecError, match="damaged safetensors file"):
        from edgerec.core.models import load_model

        load_model(teacher / "model")


@pytest.mark.parametrize("how", [signal.SIGSEGV, signal.SIGKILL])
def test_a_runtime_that_crashes_is_one_line(built, tmp_path, how):
    python = tmp_path / "python"  # a "runtime environment" whose interpreter dies as a runtime can
    python.write_text(f"#!/bin/sh\nkill -{how.name[3:]} $$\n")
    python.chmod(0o755)
    with pytest.raises(EdgerecError, match=rf"model.onnx: onnxruntime crashed \({how.name}\)"):
        run_runner(python, "onnxruntime", built / "bundle" / "model.onnx", [[1, 2, 3]])


def _limited_write(limit: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_full_disk_leaves_the_earlier_artifact_intact(tmp_path, interactions_csv):
    out = tmp_path / "data"
    cli = [
        sys.executable,
        "-m",
        "edgerec.cli",
        "data",
        str(interactions_csv),
        "--out",
        str(out),
        "--title-col",
        "title",
    ]
    subprocess.run(cli, check=True, capture_output=True)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    failed = subprocess.run([*cli, "--overwrite"], capture_output=True, text=True, preexec_fn=_limited_write(1024))
    assert failed.returncode == 2, failed.stderr
    assert (
        failed.stderr.strip().splitlines()[-1].startswith(f"error: {out}: writing the artifact failed (File too large")
    )
    assert "Traceback" not in failed.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no temporary folder or lock left


def test_a_second_writer_of_the_same_output_is_refused(tmp_path, interactions_csv, lock_holder):
    out = tmp_path / "data"
    with lock_holder(out) as pid:  # as another edgerec command holds it while writing
        result = CliRunner().invoke(app, ["data", str(interactions_csv), "--out", str(out)])
    assert result.exit_code == 2
    assert (
        result.stderr.strip() == f"error: {out}: another edgerec command (pid {pid}) is writing it "
        "now; wait for it to finish or choose another output"
    )
    assert not out.exists()
    with output_lock(out), output_lock(out):  # one process may nest its own claims
        assert (tmp_path / ".data.lock").read_text().split()[0] == str(os.getpid())
    assert not (tmp_path / ".data.lock").exists()


def test_two_commands_racing_on_one_output_leave_one_whole_artifact(tmp_path, interactions_csv):
    out = tmp_path / "data"
    cli = [sys.executable, "-m", "edgerec.cli", "data", str(interactions_csv), "--out", str(out)]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    runs = [subprocess.Popen(cli, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    results = [(p.wait(), p.stderr.read()) for p in runs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert loser.strip().splitlines()[-1].startswith(f"error: {out}: ")  # being written, or already there
    read_manifest(out, "data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_an_artifact_of_another_stage_is_never_replaced(tmp_path, data_dir):
    out = Path(shutil.copytree(data_dir, tmp_path / "data"))
    with pytest.raises(EdgerecError, match="holds a 'data' artifact; refusing to replace it with a 'teacher'"):
        with atomic_artifact(out, "teacher", overwrite=True):
            pass
    read_manifest(out, "data")


@pytest.mark.parametrize("script", ["export", "prune"])
def test_a_benchmark_without_its_inputs_ends_in_one_line(tmp_path, script):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{script}.py"
    out = subprocess.run([sys.executable, str(path)], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == (  # (third-party import noise may come before it)
        "error: runs/bench-teacher/data: no such artifact directory "
        "(the inputs come from `python benchmarks/distill.py`)"
    )
