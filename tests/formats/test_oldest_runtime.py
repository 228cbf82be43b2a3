"""What `edgerec quantize --target arm64` ships loads and ranks the same in the oldest ONNX Runtime
release the profile names (`min_version`), model.onnx with default session options and model.ort
alike: a form that needs a newer runtime than the profile allows is not shipped."""

import json

import numpy as np
import pytest

from edgerec.core.errors import EdgerecError
from edgerec.core.targets import SHIPPED, load_target
from edgerec.devices.envs import oldest_python, run_runner
from edgerec.devices.runtimes import encode
from edgerec.stages.quantize import QuantizeConfig, quantize


@pytest.fixture(scope="module")
def shipped(tmp_path_factory, data_dir, arm64_onnx):
    out = tmp_path_factory.mktemp("oldest") / "int8"
    return out, quantize(arm64_onnx, data_dir, out, QuantizeConfig(target="arm64"), log=lambda m: None)


def test_the_shipped_onnx_files_rank_the_same_in_the_oldest_runtime(shipped):
    import onnxruntime as ort

    folder, manifest = shipped
    onnx = manifest["quantization"]["onnx"]
    floor = next(r.min_version for r in load_target("arm64").runtimes if r.name == "onnxruntime")
    need = onnx["runtime_version_needed"]
    assert need is None or tuple(map(int, need.split("."))) <= tuple(map(int, floor.split(".")))
    try:
        python = oldest_python("onnxruntime", floor)
    except EdgerecError as exc:  # no package index to install the old wheel from
        pytest.skip(f"cannot set up onnxruntime {floor}: {exc}")
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta.get("onnx_session_config", {}).get("model.onnx") in (None, {})  # default session options
    ids = encode([[1, 2, 3], [4, 5, 6, 7], [9, 10], [3]], meta["max_len"], "int64")
    for name in ("model.onnx", "model.ort"):
        here = ort.InferenceSession(str(folder / name), providers=["CPUExecutionProvider"])
        expected = here.run(["scores"], {"input_ids": ids})[0]
        got = run_runner(python, "onnxruntime", folder / name, ids)["scores"]
        assert np.abs(got - expected).max() < 1e-4, name
        top = np.argsort(-expected, axis=1)[:, :5]
        assert (np.argsort(-got, axis=1)[:, :5] == top).all(), name


def test_a_form_newer_than_the_profile_allows_is_not_tried(tmp_path, data_dir, arm64_onnx):
    profile = (SHIPPED / "arm64.toml").read_text().replace('min_version = "1.23"', 'min_version = "1.17"')
    (tmp_path / "targets").mkdir()
    (tmp_path / "targets" / "arm64.toml").write_text(profile)
    manifest = quantize(
        arm64_onnx,
        data_dir,
        tmp_path / "q",
        QuantizeConfig(target="arm64"),
        targets_dir=tmp_path / "targets",
        log=lambda m: None,
    )
    onnx = manifest["quantization"]["onnx"]
    assert onnx["scheme"] != "matmul_nbits"
    assert "needs onnxruntime >= 1.23" in onnx["forms"]["matmul_nbits"]["why"]
