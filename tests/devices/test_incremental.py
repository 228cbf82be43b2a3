"""The incremental step model: replaying a history item by item gives the full model's answer on
every runtime, the window rolls as metadata.json says, and bad use fails clearly."""

import json

import numpy as np
import pytest

from edgerec.core.distillation import DistillConfig
from edgerec.core.errors import EdgerecError
from edgerec.core.graphs import step_graph, step_inputs, step_layout
from edgerec.core.models import RecModel, Shape, build_id_model, last_position_hidden, load_model
from edgerec.core.training import TrainConfig
from edgerec.devices.incremental import StepSession
from edgerec.stages.distill import distill
from edgerec.stages.export import ExportConfig, export
from edgerec.stages.teacher import TeacherConfig, train_teacher

TEACHER = Shape(hidden=16, layers=1, heads=2, intermediate=32, max_len=12)
# two layers: the second layer's keys depend on the first layer's output, the case a cache must get right
STUDENT = Shape(hidden=16, layers=2, heads=2, intermediate=32, max_len=12, dropout=0.0, attention_dropout=0.0)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, data_dir):
    import os

    root = tmp_path_factory.mktemp("incremental")
    os.environ.setdefault("EDGEREC_CACHE", str(root / "cache"))
    train_teacher(
        data_dir, root / "teacher", TeacherConfig(shape=TEACHER, train=TrainConfig(epochs=3, batch_size=16, lr=1e-2))
    )
    train = TrainConfig(epochs=3, batch_size=16, lr=1e-2)
    for name, positions in (("start", "start"), ("end", "end")):
        distill(
            root / "teacher",
            data_dir,
            root / name,
            DistillConfig(student=STUDENT, top_k=8, train=train, positions=positions),
        )
    return root


@pytest.mark.parametrize(
    "target,top_k",
    [("arm64", None), ("arm64", 5), ("x86_64-vnni", None), pytest.param("rpi4", None, marks=pytest.mark.slow)],
)
def test_step_model_replays_to_the_full_models_answer_on_every_runtime(tmp_path, data_dir, artifacts, target, top_k):
    manifest = export(
        artifacts / "start", data_dir, tmp_path / "d", ExportConfig(target=target, top_k=top_k, step=True)
    )
    step = manifest["step_model"]
    assert set(step["replay_check"]) == {r["name"] for r in manifest["target"]["runtimes"]}
    for runtime, check in step["replay_check"].items():
        assert check["top10_agreement"] == 1.0 and check["max_abs_diff"] < 1e-4, runtime
        if top_k:
            assert check["identical_top_k_lists"] == 1.0
    meta = json.loads((tmp_path / "d" / "metadata.json").read_text())
    assert meta["step_model"]["inputs"]["state"]["shape"] == ["batch", STUDENT.layers, STUDENT.max_len, STUDENT.hidden]
    for fmt in manifest["target"]["formats"]:
        assert (tmp_path / "d" / f"step.{fmt}").is_file()
    assert not list((tmp_path / "d").glob("step-parity*"))


def test_step_session_matches_the_full_model_and_rolls_the_window(tmp_path, data_dir, artifacts):
    export(artifacts / "start", data_dir, tmp_path / "d", ExportConfig(target="x86_64-avx2", step=True))
    rec = load_model(artifacts / "start" / "model")
    session = StepSession(tmp_path / "d" / "step.onnx")
    history = [int(i) for i in np.random.default_rng(0).integers(1, rec.num_items + 1, size=20)]
    for count, item in enumerate(history, start=1):
        scores = session.add(item)
        if count <= STUDENT.max_len:  # inside the window: exactly the full model
            np.testing.assert_allclose(scores[0], rec.scores([history[:count]])[0, 1:], atol=1e-4)
    # 20 items through a window of 12, rolling to the newest 6 when full: 12, then 6 + 6, then
    # 6 + 2 -> the state holds the last 8 items, and the answer is the full model's on them
    assert session.items == history[-8:]
    np.testing.assert_allclose(scores[0], rec.scores([history[-8:]])[0, 1:], atol=1e-4)


def test_step_session_refuses_a_changed_step_file(tmp_path, data_dir, artifacts):
    export(artifacts / "start", data_dir, tmp_path / "d", ExportConfig(target="x86_64-avx2", step=True))
    path = tmp_path / "d" / "step.onnx"
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(EdgerecError, match="step.onnx: has changed since it was written"):
        StepSession(path)
    assert StepSession(path, allow_modified=True).modified == ["step.onnx"]


def test_step_session_rejects_a_foreign_state_and_a_missing_file(tmp_path, data_dir, artifacts):
    export(artifacts / "start", data_dir, tmp_path / "d", ExportConfig(target="x86_64-avx2", step=True))
    session = StepSession(tmp_path / "d" / "step.onnx")
    for item in (1, 2, 3):
        first = session.add(item)
    saved = session.save_state()
    resumed = StepSession(tmp_path / "d" / "step.onnx")
    resumed.load_state(saved)  # e.g. after an app restart: the same answers from there on
    np.testing.assert_allclose(resumed.add(4), session.add(4), atol=1e-6)
    with pytest.raises(EdgerecError, match="shape"):
        resumed.load_state({**saved, "state": np.zeros((1, 4, 12, 8), np.float32)})
    export(artifacts / "start", data_dir, tmp_path / "e", ExportConfig(target="x86_64-vnni", step=True))
    other = StepSession(tmp_path / "e" / "step.onnx")
    with pytest.raises(EdgerecError, match="another model"):
        other.load_state(saved)
    with pytest.raises(EdgerecError, match="holds 13 items"):  # more items than the window
        resumed.load_state({**saved, "items": list(range(1, 14))})
    assert first.shape[1] > 0
    with pytest.raises(EdgerecError, match="no such step model"):
        StepSession(tmp_path / "missing.onnx")


def test_step_export_refuses_models_it_would_not_be_exact_for(tmp_path, data_dir, artifacts):
    with pytest.raises(EdgerecError, match="--positions start"):
        export(artifacts / "end", data_dir, tmp_path / "d", ExportConfig(target="arm64", step=True))
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("layers", [1, 2])  # one layer: the state is written whole, no slicing
def test_step_graph_in_pytorch_with_pruned_heads(layers):
    import dataclasses

    import torch

    torch.manual_seed(0)
    model = build_id_model("causal", 30, dataclasses.replace(STUDENT, layers=layers, heads=4))
    model.bert.encoder.layer[-1].attention.prune_heads([0])  # 3 heads of size 4 in a width of 16
    rec = RecModel(model, {"kind": "causal", "num_items": 28, "max_len": 12, "positions": "start"})
    graph = step_graph(rec)
    state = step_inputs(step_layout(rec), "int64", None)["state"]
    assert list(state.shape) == [1, layers, 12, STUDENT.hidden]
    history = [3, 7, 1, 9, 12, 4]
    with torch.inference_mode():
        for position, item in enumerate(history):
            scores, state = graph(torch.tensor([item]), torch.tensor([position]), state)
    np.testing.assert_allclose(scores.numpy()[0], rec.scores([history])[0, 1:], atol=1e-5)


def test_export_graph_with_start_positions_matches_the_full_forward():
    import torch

    torch.manual_seed(0)
    model = build_id_model("causal", 30, STUDENT).eval()
    rec = RecModel(model, {"kind": "causal", "num_items": 28, "max_len": 12, "positions": "start"})
    inputs = rec.encode([[3, 7, 1], [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]])
    with torch.inference_mode():
        full = rec.logits(inputs)
        fast = model.cls(last_position_hidden(model, inputs["input_ids"], "start"))
    np.testing.assert_allclose(fast.numpy(), full.numpy(), atol=1e-5)


def test_export_cli_step_flag(tmp_path, data_dir, artifacts):
    from typer.testing import CliRunner

    from edgerec.cli.main import app

    result = CliRunner().invoke(
        app,
        [
            "export",
            "--target",
            "x86_64-avx2",
            "--model",
            str(artifacts / "start"),
            "--data",
            str(data_dir),
            "--out",
            str(tmp_path / "d"),
            "--step",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "step model: step.onnx" in result.output
    bad = CliRunner().invoke(
        app,
        [
            "export",
            "--target",
            "x86_64-avx2",
            "--model",
            str(artifacts / "end"),
            "--data",
            str(data_dir),
            "--out",
            str(tmp_path / "e"),
            "--step",
        ],
    )
    assert bad.exit_code == 2 and "positions start" in bad.output and "Traceback" not in bad.output


@pytest.mark.parametrize(
    "target,top_k", [("x86_64-avx2", None), ("arm64", 4), pytest.param("rpi4", None, marks=pytest.mark.slow)]
)
def test_example_app_incremental_mode_gives_the_full_models_list(tmp_path, data_dir, artifacts, target, top_k):
    """examples/app.py --incremental (NumPy + the runtime, no edgerec) rolls through a history
    longer than the window and lists what the full model lists for the items in its window."""
    import subprocess
    import sys
    from pathlib import Path

    from edgerec.devices.envs import python_for

    app = Path(__file__).resolve().parents[2] / "examples" / "app.py"
    no_edgerec = (
        "import runpy, sys; sys.modules['edgerec'] = None; sys.argv = sys.argv[1:]; "
        "runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    export(artifacts / "start", data_dir, tmp_path / "d", ExportConfig(target=target, top_k=top_k, step=True))
    items = json.loads((tmp_path / "d" / "items.json").read_text())
    picks = [int(i) for i in np.random.default_rng(1).choice(len(items), size=15, replace=False)]
    ids = [items[i]["id"] for i in picks]
    python = python_for("tflite-runtime") if target == "rpi4" else sys.executable
    run = subprocess.run(
        [
            str(python),
            "-c",
            no_edgerec,
            str(app),
            str(tmp_path / "d"),
            "--history",
            ",".join(ids),
            "--incremental",
            "--k",
            "4",
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-600:]
    listed = [line.split("[")[1].split("]")[0] for line in run.stdout.splitlines() if "[" in line]
    # 15 items, window 12, keep 6: the step state holds the last 9 items
    rec = load_model(artifacts / "start" / "model")
    scores = rec.scores([[i + 1 for i in picks[-9:]]])[0, 1:]
    scores[np.asarray(picks[-9:] if top_k else picks)] = -np.inf  # the app masks its whole history
    expected = [items[int(j)]["id"] for j in np.argsort(-scores, kind="stable")[:4]]
    assert listed == expected


def test_quantize_and_validate_cover_the_step_model(tmp_path, data_dir, artifacts):
    from edgerec.stages.quantize import QuantizeConfig, quantize
    from edgerec.stages.validate import ValidateConfig, validate

    export(artifacts / "start", data_dir, tmp_path / "fp32", ExportConfig(target="arm64", step=True))
    fp32 = validate(tmp_path / "fp32", data_dir, ValidateConfig(target="arm64", users=40), log=lambda m: None)
    for runtime, r in fp32["step_model"].items():
        assert r["identical_top10"] == 1.0 and r["users"] == 40, runtime
        assert r["updates"] > 40 and r["latency_per_update"]["p50_ms"] > 0
    assert "Step model (every history replayed" in (tmp_path / "fp32" / "report.html").read_text()
    manifest = quantize(
        tmp_path / "fp32", data_dir, tmp_path / "int8", QuantizeConfig(target="arm64"), log=lambda m: None
    )
    for fmt, q in manifest["step_quantization"].items():
        assert q["int8_bytes"] < q["fp32_bytes"], fmt
    meta = json.loads((tmp_path / "int8" / "metadata.json").read_text())
    assert meta["step_model"]["precision"] == "int8"
    int8 = validate(tmp_path / "int8", data_dir, ValidateConfig(target="arm64", users=40), log=lambda m: None)
    for runtime, r in int8["step_model"].items():  # reported, not required to be identical
        assert 0 <= r["top10_agreement_with_full_model"] <= 1 and np.isfinite(r["metrics"]["NDCG@10"]["mean"])


def test_a_profile_can_ask_for_the_step_model(tmp_path, data_dir, artifacts):
    from edgerec.core.targets import SHIPPED, load_target

    profiles = tmp_path / "targets"
    profiles.mkdir()
    text = (SHIPPED / "x86_64-avx2.toml").read_text().replace('name = "x86_64-avx2"', 'name = "kiosk"')
    (profiles / "kiosk.toml").write_text(text.replace("threads = 2", "threads = 2\nstep_model = true", 1))
    assert load_target("kiosk", profiles).step_model and not load_target("x86_64-avx2").step_model
    manifest = export(artifacts / "start", data_dir, tmp_path / "d", ExportConfig(target="kiosk"), targets_dir=profiles)
    assert manifest["step_model"]["files"] == {"onnx": "step.onnx"}
    plain = export(artifacts / "start", data_dir, tmp_path / "e", ExportConfig(target="x86_64-avx2"))
    assert plain["step_model"] is None and not (tmp_path / "e" / "step.onnx").exists()


def test_validate_replays_a_top_k_step_model(tmp_path, data_dir, artifacts):
    from edgerec.stages.validate import ValidateConfig, validate

    export(artifacts / "start", data_dir, tmp_path / "d", ExportConfig(target="x86_64-avx2", top_k=10, step=True))
    report = validate(tmp_path / "d", data_dir, ValidateConfig(target="x86_64-avx2", warmup=2), log=lambda m: None)
    step = report["step_model"]["onnxruntime"]
    assert step["identical_top10"] == 1.0 and "HR@20" not in step["metrics"]  # fp32: the full file's lists
    assert step["metrics"]["NDCG@10"]["mean"] == pytest.approx(
        report["runtimes"]["onnxruntime"]["metrics"]["NDCG@10"]["mean"]
    )
