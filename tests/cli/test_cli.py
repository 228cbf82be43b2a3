import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from edgerec.cli import app

HEAVY = ("torch", "transformers", "onnxruntime", "onnx", "litert_torch", "ai_edge_litert", "tensorflow", "pandas")
COMMANDS = [
    [],
    ["data"],
    ["teacher"],
    ["teacher", "import"],
    ["evaluate"],
    ["distill"],
    ["targets"],
    ["targets", "list"],
    ["targets", "show"],
    ["export"],
    ["prune"],
    ["quantize"],
    ["validate"],
    ["build"],
    ["recommend"],
]


def test_importing_the_cli_loads_no_heavy_library():
    code = "import sys, edgerec.cli; heavy = %r; print(','.join(m for m in heavy if m in sys.modules))" % (HEAVY,)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "root")
def test_help_runs_without_heavy_imports(command):
    code = (
        "import sys; from edgerec.cli import app\n"
        "try:\n    app(%r, prog_name='edgerec')\nexcept SystemExit as e:\n    code = e.code\n"
        "heavy = [m for m in %r if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy)); sys.exit(code)" % (command + ["--help"], HEAVY)
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "Usage" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "HEAVY="


def test_console_script_version():
    out = subprocess.run([sys.executable, "-m", "edgerec.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("edgerec ")


def test_bad_input_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "i.csv"
    bad.write_text("user,item,timestamp\na,b,never\n")
    result = CliRunner().invoke(app, ["data", str(bad), "--out", str(tmp_path / "d")])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "i.csv" in lines[0]
    assert "Traceback" not in result.output
    assert not (tmp_path / "d").exists()


def test_data_json_output(tmp_path, interactions_csv):
    result = CliRunner().invoke(
        app, ["data", str(interactions_csv), "--out", str(tmp_path / "d"), "--title-col", "title", "--json"]
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest["stage"] == "data" and manifest["counts"]["users"] == 48


def test_teacher_and_evaluate_commands(tmp_path, data_dir):
    runner = CliRunner()
    teacher = tmp_path / "t"
    result = runner.invoke(
        app,
        [
            "teacher",
            "--data",
            str(data_dir),
            "--out",
            str(teacher),
            "--hidden",
            "16",
            "--layers",
            "1",
            "--intermediate",
            "32",
            "--max-len",
            "12",
            "--epochs",
            "2",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["stage"] == "teacher"
    report = tmp_path / "r.json"
    result = runner.invoke(app, ["evaluate", str(teacher), "--data", str(data_dir), "--out", str(report)])
    assert result.exit_code == 0, result.output
    assert "NDCG@10" in result.output
    saved = json.loads(report.read_text())
    assert 0 <= saved["metrics"]["NDCG@10"]["mean"] <= 1 and saved["users"] == 48
    result = runner.invoke(app, ["teacher", "--data", str(data_dir), "--out", str(teacher)])
    assert result.exit_code == 2 and "already exists" in result.output


def test_teacher_rejects_unknown_kind(tmp_path, data_dir):
    result = CliRunner().invoke(
        app, ["teacher", "--data", str(data_dir), "--out", str(tmp_path / "t"), "--kind", "gpt"]
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("error: Invalid value for '--kind'") and "'gpt' is not one of" in result.stderr
