"""Export: every shipped profile's files load and run on every runtime it names, with 100% top-10
agreement vs PyTorch on the test users; bad input fails cleanly."""

import json
from dataclasses import replace

import numpy as np
import pytest

from edgerec.core.errors import EdgerecError
from edgerec.core.interactions import load_data
from edgerec.core.models import Shape, load_model
from edgerec.core.training import TrainConfig
from edgerec.stages.export import ExportConfig, export
from edgerec.stages.teacher import TeacherConfig, train_teacher

SHAPE = Shape(hidden=16, layers=1, heads=2, intermediate=32, max_len=12)


def _model(root, data_dir, kind):
    out = root / f"teacher-{kind}"
    if not out.exists():
        train_teacher(
            data_dir, out, TeacherConfig(kind=kind, shape=SHAPE, train=TrainConfig(epochs=3, batch_size=16, lr=1e-2))
        )
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("models")
    return {kind: _model(root, data_dir, kind) for kind in ("causal", "masked")}


@pytest.mark.parametrize("target", ["x86_64-avx2", "x86_64-vnni", "arm64"])
@pytest.mark.parametrize("kind", ["causal", "masked"])
def test_export_parity_on_every_runtime(tmp_path, data_dir, models, target, kind):
    manifest = export(models[kind], data_dir, tmp_path / "dist", ExportConfig(target=target))
    bundle = tmp_path / "dist"
    meta = json.loads((bundle / "metadata.json").read_text())
    assert meta["target"] == target and meta["max_len"] == SHAPE.max_len and meta["padding_id"] == 0
    for runtime, check in manifest["parity"].items():
        assert check["top10_agreement"] == 1.0 and check["max_abs_diff"] < 1e-4, runtime
    assert set(manifest["parity"]) == {r["name"] for r in manifest["target"]["runtimes"]}
    items = json.loads((bundle / "items.json").read_text())
    assert len(items) == load_data(data_dir).num_items
    assert not list(tmp_path.glob(".dist*"))


def test_onnx_carries_metadata_and_a_dynamic_batch(tmp_path, data_dir, models):
    import onnx
    import onnxruntime as ort

    export(models["causal"], data_dir, tmp_path / "d", ExportConfig(target="x86_64-avx2"))
    model = onnx.load(str(tmp_path / "d" / "model.onnx"))
    props = {p.key: p.value for p in model.metadata_props}
    assert props["edgerec.max_len"] == str(SHAPE.max_len) and props["edgerec.target"] == "x86_64-avx2"
    assert model.opset_import[0].version == 17
    session = ort.InferenceSession(str(tmp_path / "d" / "model.onnx"))
    for batch in (1, 5):
        ids = np.zeros((batch, SHAPE.max_len), np.int64)
        ids[:, -3:] = [1, 2, 3]
        (scores,) = session.run(None, {"input_ids": ids})
        assert scores.shape == (batch, load_data(data_dir).num_items)


def test_in_graph_top_k_masks_the_history(tmp_path, data_dir, models):
    import onnxruntime as ort

    from edgerec.core import metrics

    export(models["causal"], data_dir, tmp_path / "d", ExportConfig(target="x86_64-avx2", top_k=5))
    session = ort.InferenceSession(str(tmp_path / "d" / "model.onnx"))
    histories = load_data(data_dir).examples("test")[0][:20]
    from edgerec.devices.runtimes import encode

    items, scores = session.run(["items", "scores"], {"input_ids": encode(histories, SHAPE.max_len, "int64")})
    rec = load_model(models["causal"] / "model")
    # the graph can only exclude what it sees: the last max_len items
    window = [h[-SHAPE.max_len :] for h in histories]
    expected = metrics.top_k(rec.scores(histories), 5, rec.num_items, window)
    assert (items == expected).all()
    for row, history in zip(items, histories):
        assert not set(row.tolist()) & set(history[-SHAPE.max_len :].tolist())
    assert (np.diff(scores, axis=1) <= 0).all()


@pytest.mark.slow
def test_rpi4_bundle_runs_in_tflite_runtime_2_14(tmp_path, data_dir, models):
    """Verified with the runtime itself (its own NumPy 1.x environment), not by reading."""
    manifest = export(models["causal"], data_dir, tmp_path / "d", ExportConfig(target="rpi4"))
    assert manifest["parity"]["tflite-runtime"]["top10_agreement"] == 1.0
    assert (tmp_path / "d" / "model.tflite").is_file() and not (tmp_path / "d" / "model.onnx").exists()
    import subprocess

    from edgerec.devices.envs import python_for

    probe = subprocess.run(
        [
            str(python_for("tflite-runtime")),
            "-c",
            "import tflite_runtime, numpy; print(tflite_runtime.__version__, numpy.__version__)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    version, numpy_version = probe.stdout.split()
    assert version.startswith("2.14") and numpy_version.startswith("1.")


def _custom_profile(tmp_path, base: str, name: str, old: str, new: str):
    """A user profile folder holding a shipped profile renamed and with one line changed."""
    from edgerec.core.targets import SHIPPED

    folder = tmp_path / "targets"
    folder.mkdir(exist_ok=True)
    text = (SHIPPED / f"{base}.toml").read_text().replace(f'name = "{base}"', f'name = "{name}"')
    assert old in text
    (folder / f"{name}.toml").write_text(text.replace(old, new))
    return folder


def test_parity_failure_fails_the_export(tmp_path, data_dir, models):
    folder = _custom_profile(tmp_path, "x86_64-avx2", "strict", "parity_atol = 1e-4", "parity_atol = 1e-15")
    with pytest.raises(
        EdgerecError, match="onnx on onnxruntime parity check failed vs PyTorch: scores differ by up to"
    ):
        export(models["causal"], data_dir, tmp_path / "d", ExportConfig(target="strict"), targets_dir=folder)
    assert not (tmp_path / "d").exists()


def test_bad_inputs(tmp_path, data_dir, models):
    with pytest.raises(EdgerecError, match="did you mean arm64"):
        export(models["causal"], data_dir, tmp_path / "d", ExportConfig(target="arm46"))
    with pytest.raises(EdgerecError, match="is a 'data' artifact, expected student or pruned or teacher"):
        export(data_dir, data_dir, tmp_path / "d", ExportConfig(target="arm64"))
    with pytest.raises(EdgerecError, match="--top-k must be in"):
        export(models["causal"], data_dir, tmp_path / "d", ExportConfig(target="arm64", top_k=0))
    folder = _custom_profile(tmp_path, "arm64", "odd", 'formats = ["onnx", "tflite"]', 'formats = ["onnx"]')
    with pytest.raises(EdgerecError, match=r"'onnx.opset' is 99; allowed: \[7, 23\]"):  # refused at load
        export(
            models["causal"],
            data_dir,
            tmp_path / "d",
            ExportConfig(target="future"),
            targets_dir=_custom_profile(tmp_path, "x86_64-avx2", "future", "opset = 17", "opset = 99"),
        )
    with pytest.raises(EdgerecError, match="runtime litert runs tflite"):
        export(models["causal"], data_dir, tmp_path / "d", ExportConfig(target="odd"), targets_dir=folder)
    assert not (tmp_path / "d").exists()


def test_export_cli(tmp_path, data_dir, models):
    from typer.testing import CliRunner

    from edgerec.cli import app

    result = CliRunner().invoke(
        app,
        [
            "export",
            "--target",
            "x86_64-avx2",
            "--model",
            str(models["causal"]),
            "--data",
            str(data_dir),
            "--out",
            str(tmp_path / "d"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "onnxruntime" in result.output and "1.000" in result.output


@pytest.mark.parametrize("kind", ["causal", "masked"])
def test_last_position_hidden_matches_the_full_forward(kind):
    import torch

    from edgerec.core.models import build_id_model, last_position_hidden

    model = build_id_model(kind, 40, Shape(hidden=16, layers=3, heads=4, intermediate=32, max_len=10)).eval()
    ids = torch.zeros((3, 10), dtype=torch.long)
    ids[0, -4:] = torch.tensor([5, 6, 7, 8])
    ids[1, :] = torch.arange(1, 11)
    ids[2, -1] = 3
    with torch.no_grad():
        full = model.bert(input_ids=ids, attention_mask=(ids != 0).long()).last_hidden_state[:, -1]
        fast = last_position_hidden(model, ids)
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("target", ["arm64", pytest.param("rpi4", marks=pytest.mark.slow)])
def test_in_graph_top_k_in_tflite(tmp_path, data_dir, models, target):
    """TFLite top-K picks exactly what PyTorch picks, on LiteRT and on tflite-runtime 2.14."""
    manifest = export(models["causal"], data_dir, tmp_path / "d", ExportConfig(target=target, top_k=5))
    checks = manifest["top_k_check"]
    assert checks and all(c["identical_lists"] == 1.0 for c in checks.values())
    assert {k.split(" on ")[0] for k in checks} == set(manifest["files_by_format"])
    assert not list((tmp_path / "d").glob("parity.*"))


def test_compact_names_never_reuse_an_interface_name():
    import onnx
    from onnx import TensorProto, helper

    from edgerec.formats.onnx.export import compact_names

    # inputs called like the short names (e.g. a graph cut out of an exported one)
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["t0"], ["/long/module/path/relu"]),
            helper.make_node("Neg", ["/long/module/path/relu"], ["t1"]),
        ],
        "g",
        [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("t1", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(graph)
    compact_names(model)
    onnx.checker.check_model(model, full_check=True)
    assert model.graph.node[0].output[0] not in ("t0", "t1")
    assert [model.graph.input[0].name, model.graph.output[0].name] == ["t0", "t1"]


def test_decomposed_layer_norms_match_and_are_restored():
    import torch

    from edgerec.formats.tflite.export import decomposed_layer_norms

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8, eps=1e-12))
    torch.nn.init.normal_(model[1].weight)
    torch.nn.init.normal_(model[1].bias)
    x = torch.randn(3, 5, 8) * 10
    expected = model(x)
    with decomposed_layer_norms(model):
        assert "forward" in vars(model[1])
        got = model(x)
    assert "forward" not in vars(model[1])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_arm64_bundle_is_app_ready_items_and_ort_mobile_files(tmp_path, data_dir, models):
    import onnxruntime as ort

    from edgerec.devices.runtimes import encode

    export(models["causal"], data_dir, tmp_path / "dist", ExportConfig(target="arm64"))
    bundle = tmp_path / "dist"
    text = (bundle / "items.json").read_text()
    items = json.loads(text)
    assert "\n " not in text and all(set(entry) <= {"id", "title"} for entry in items)  # compact, app fields only
    assert [e["id"] for e in items] == load_data(data_dir).item_ids()
    meta = json.loads((bundle / "metadata.json").read_text())
    entry = meta["ort_format"]
    assert entry["files"] == {"model.onnx": "model.ort"} and entry["platform"] == "arm"
    assert entry["check"]["model.ort"]["identical_top10"] == 1.0
    assert entry["mobile_usability"]["recommended_execution_provider"] in (
        "CPU",
        "compare NNAPI / CoreML with the CPU EP",
    )
    config = (bundle / "required_operators.config").read_text()
    assert "# - model.ort" in config and "ai.onnx;" in config and str(tmp_path) not in config
    assert {"model.ort", "required_operators.config"} <= set(meta["integrity"])
    histories = load_data(data_dir).examples("test")[0]  # the .ort file answers as the .onnx one does
    ids = encode(histories, meta["max_len"], "int64")
    onnx_scores, ort_scores = (
        ort.InferenceSession(str(bundle / name), providers=["CPUExecutionProvider"]).run(
            ["scores"], {"input_ids": ids}
        )[0]
        for name in ("model.onnx", "model.ort")
    )
    np.testing.assert_array_equal(
        np.argsort(-onnx_scores, 1, kind="stable")[:, :10], np.argsort(-ort_scores, 1, kind="stable")[:, :10]
    )
    for side in ("items.json", "metadata.json", "required_operators.config"):
        assert (bundle / side).stat().st_size < (bundle / "model.onnx").stat().st_size, side


@pytest.mark.parametrize("target", ["arm64", "rpi4"])
def test_two_layer_causal_export_computes_its_mask_at_run_time(tmp_path, data_dir, target):
    """A causal model with a layer before the last needs the [L, L] causal mask: built from the
    input, not folded into a constant (it was 160 KB of a 2-layer ML-1M TFLite file), and still
    loading on tflite-runtime 2.14 (rpi4)."""
    from ai_edge_litert.interpreter import Interpreter

    two = tmp_path / "teacher"
    train_teacher(
        data_dir,
        two,
        TeacherConfig(shape=replace(SHAPE, layers=2), train=TrainConfig(epochs=1, batch_size=16, lr=1e-2)),
    )
    manifest = export(two, data_dir, tmp_path / "d", ExportConfig(target=target))
    for runtime, check in manifest["parity"].items():
        assert check["top10_agreement"] == 1.0 and check["max_abs_diff"] < 1e-4, runtime
    interpreter = Interpreter(model_path=str(tmp_path / "d" / "model.tflite"))
    square = []
    for detail in interpreter.get_tensor_details():
        try:
            value = interpreter.get_tensor(detail["index"])
        except ValueError:  # not a constant
            continue
        if value.ndim >= 2 and value.shape[-2:] == (SHAPE.max_len, SHAPE.max_len):
            square.append(detail["name"])
    assert not square
