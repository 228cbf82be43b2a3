import dataclasses
import json

import pytest
from typer.testing import CliRunner

from edgerec.cli import app
from edgerec.core.errors import EdgerecError
from edgerec.core.targets import (
    SHIPPED,
    Target,
    _build,
    available,
    load_target,
    load_target_file,
)

SHIPPED_NAMES = sorted(p.stem for p in SHIPPED.glob("*.toml"))


def test_the_expected_profiles_ship():
    assert {"arm64", "rpi4", "x86_64-avx2", "x86_64-vnni"} <= set(SHIPPED_NAMES)


@pytest.mark.parametrize("name", SHIPPED_NAMES)
def test_every_profile_loads_and_round_trips(name, tmp_path):
    target = load_target(name)
    assert isinstance(target, Target) and target.name == name
    again = _build(Target, json.loads(json.dumps(target.to_dict())), tmp_path / "x.toml", "")
    assert again == target
    assert target.budgets.max_model_mb > 0 and 0 < target.budgets.min_ndcg_retained <= 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        target.threads = 8


def test_rpi4_targets_the_legacy_runtime():
    rpi4 = load_target("rpi4")
    assert rpi4.formats == ("tflite",)
    assert [(r.name, r.min_version, r.environment) for r in rpi4.runtimes] == [("tflite-runtime", "2.14", "isolated")]
    assert load_target("x86_64-avx2").quantization.reduce_range is True
    assert load_target("x86_64-vnni").quantization.reduce_range is False


def _write(folder, name, text):
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


BASE = """version = 1
name = "{name}"
description = "mine"
formats = ["onnx"]
[[runtimes]]
name = "onnxruntime"
min_version = "1.17"
[budgets]
max_model_mb = 2
max_p95_ms = 3.5
min_ndcg_retained = 0.9
reference_device = "my phone"
"""


@pytest.mark.parametrize(
    "extra, message",
    [
        ("colour = 'red'\n", "unknown key 'colour' (allowed:"),
        ("threads = 'four'\n", "'threads' must be int, got 'four'"),
        ("[quantization]\nformat = 'QXX'\n", "'quantization.format' is 'QXX'; allowed: QDQ, QOperator"),
        ("[quantization]\nreduce_rang = true\n", "unknown key 'quantization.reduce_rang'"),
        ("[onnx]\nopset = 17.5\n", "'onnx.opset' must be int"),
        ("[onnx]\nopset = true\n", "'onnx.opset' must be int, got True"),
    ],
)
def test_bad_profiles_name_the_file_and_the_key(tmp_path, extra, message):
    text = BASE.format(name="mine")
    if extra.startswith("["):
        text += extra
    else:
        text = extra + text
    path = _write(tmp_path, "mine", text)
    with pytest.raises(EdgerecError, match="mine.toml") as err:
        load_target_file(path)
    assert message in str(err.value)


def test_runtime_names_and_formats_are_checked(tmp_path):
    path = _write(tmp_path, "mine", BASE.format(name="mine").replace('"onnxruntime"', '"tensorrt"'))
    with pytest.raises(
        EdgerecError,
        match=r"'runtimes\[0\].name' is 'tensorrt'; allowed: executorch, litert, onnxruntime, tflite-runtime",
    ):
        load_target_file(path)
    path = _write(tmp_path, "mine", BASE.format(name="mine").replace('["onnx"]', '["coreml"]'))
    with pytest.raises(EdgerecError, match=r"'formats\[0\]' is 'coreml'"):
        load_target_file(path)
    path = _write(tmp_path, "mine", BASE.format(name="other"))
    with pytest.raises(EdgerecError, match="must match the file name"):
        load_target_file(path)


def test_user_folder_adds_and_overrides(tmp_path, monkeypatch):
    _write(tmp_path, "myphone", BASE.format(name="myphone"))
    _write(tmp_path, "arm64", BASE.format(name="arm64"))
    assert load_target("myphone", tmp_path).description == "mine"
    assert load_target("arm64", tmp_path).description == "mine"
    monkeypatch.setenv("EDGEREC_TARGETS_DIR", str(tmp_path))
    assert "myphone" in available()


def test_unknown_target_suggests_close_names():
    with pytest.raises(EdgerecError, match="did you mean arm64"):
        load_target("arm46")


def test_targets_cli(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["targets", "list"])
    assert result.exit_code == 0 and "rpi4" in result.output
    result = runner.invoke(app, ["targets", "show", "rpi4", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["formats"] == ["tflite"]
    result = runner.invoke(app, ["targets", "show", "rpi5"])
    assert result.exit_code == 2 and "unknown target 'rpi5'" in result.output
