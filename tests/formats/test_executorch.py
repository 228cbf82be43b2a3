"""ExecuTorch as the third format, through the same seam: a .pte with the XNNPACK backend that
matches PyTorch on the test users, an in-graph top-K, int8 through PT2E in both forms within the
profile's accuracy tolerance, and validate's metrics and budgets on ExecuTorch's runtime."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("executorch.exir", reason="the executorch extra is not installed")

from edgerec.core.errors import EdgerecError  # noqa: E402
from edgerec.core.models import Shape  # noqa: E402
from edgerec.core.training import TrainConfig  # noqa: E402
from edgerec.formats import FORMATS, target_profile  # noqa: E402
from edgerec.stages.export import ExportConfig, export  # noqa: E402
from edgerec.stages.quantize import QuantizeConfig, quantize  # noqa: E402
from edgerec.stages.recommend import Recommender  # noqa: E402
from edgerec.stages.teacher import TeacherConfig, train_teacher  # noqa: E402
from edgerec.stages.validate import ValidateConfig, validate  # noqa: E402

APP = Path(__file__).resolve().parents[2] / "examples" / "app.py"
NO_EDGEREC = (  # the app with every `import edgerec...` made impossible
    "import runpy, sys; sys.modules['edgerec'] = None; sys.argv = sys.argv[1:]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)
SHAPE = Shape(hidden=16, layers=1, heads=2, intermediate=32, max_len=12)
ALL = ("onnx", "executorch")


@pytest.fixture(scope="module")
def model(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("et") / "teacher"
    train_teacher(
        data_dir, out, TeacherConfig(kind="causal", shape=SHAPE, train=TrainConfig(epochs=3, batch_size=16, lr=1e-2))
    )
    return out


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, data_dir, model):
    out = tmp_path_factory.mktemp("et-bundle") / "fp32"
    export(model, data_dir, out, ExportConfig(target="arm64", formats=ALL))
    return out


def test_pte_matches_pytorch_and_says_how_to_call_it(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["files_by_format"] == {"onnx": "model.onnx", "executorch": "model.pte"}
    check = manifest["parity"]["executorch"]
    assert check["top10_agreement"] == 1.0 and check["max_abs_diff"] < 1e-4
    meta = json.loads((bundle / "metadata.json").read_text())
    spec = meta["inputs"]["input_ids"]
    assert spec["dtype"]["executorch"] == "int64" and spec["shape"]["executorch"] == [1, SHAPE.max_len]
    assert spec["shape"]["onnx"] == ["batch", SHAPE.max_len]
    assert "model.pte" in meta["integrity"]
    # the runtimes of the profile not written here are not checked (litert: no .tflite asked for)
    assert set(manifest["parity"]) == {"onnxruntime", "executorch"}


def test_the_example_app_runs_the_pte_without_edgerec(bundle):
    items = json.loads((bundle / "items.json").read_text())
    history = [items[i]["id"] for i in (3, 7, 1, 12, 5)]
    run = subprocess.run(
        [sys.executable, "-c", NO_EDGEREC, str(APP), str(bundle), "--history", ",".join(history)]
        + ["--format", "executorch"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-600:]
    got = [line.split("[")[1].split("]")[0] for line in run.stdout.strip().splitlines()]
    assert got == [r["item"] for r in Recommender(bundle).recommend(history)]  # the ONNX file's ranking


def test_in_graph_top_k_on_executorch(tmp_path, data_dir, model):
    manifest = export(model, data_dir, tmp_path / "k", ExportConfig(target="arm64", top_k=5, formats=("executorch",)))
    assert manifest["top_k_check"]["executorch on executorch"]["identical_lists"] == 1.0
    assert not list((tmp_path / "k").glob("parity.*"))


def test_int8_forms_fit_and_validate_runs_on_executorch(tmp_path, data_dir, bundle):
    out = tmp_path / "int8"
    manifest = quantize(bundle, data_dir, out, QuantizeConfig(target="arm64"))
    et = manifest["quantization"]["executorch"]
    assert set(et["forms"]) == {"static", "dynamic"}
    assert et["scheme"] in ("static", "dynamic") and et["size_ratio"] < 1.0
    assert et["ndcg_retained"] >= 1 - et["max_ndcg_drop"] or "not significant" in et["accepted"]
    assert (out / "calibration" / "executorch-static.json").is_file()
    assert any(k["unit"] == "item lookup" for k in et["kept_float"])
    report = validate(out, data_dir, ValidateConfig(target="arm64"), report_dir=tmp_path / "r")
    assert set(report["runtimes"]) == {"onnxruntime", "executorch"}
    run = report["runtimes"]["executorch"]
    assert run["metrics"]["NDCG@10"]["mean"] > 0 and run["latency"]["runs"] > 0
    assert any(row["where"] == "executorch" for row in report["budgets"])


def test_formats_outside_the_profile_and_the_step_model_are_refused(tmp_path, data_dir, model):
    with pytest.raises(EdgerecError, match="offers the formats onnx, tflite, executorch, not 'coreml'"):
        target_profile("arm64", formats=("coreml",))
    with pytest.raises(EdgerecError, match="offers the formats"):
        target_profile("x86_64-avx2", formats=("executorch",))
    with pytest.raises(EdgerecError, match="cannot hold the step model"):
        export(model, data_dir, tmp_path / "s", ExportConfig(target="arm64", step=True, formats=ALL))
    assert not (tmp_path / "s").exists()


def test_the_default_profile_leaves_executorch_out():
    target = target_profile("arm64")
    assert target.formats == ("onnx", "tflite") and "executorch" not in {r.name for r in target.runtimes}
    assert FORMATS["executorch"].file_name("model") == "model.pte"
    assert np.dtype(FORMATS["executorch"].input_dtype(target)) == np.int64
