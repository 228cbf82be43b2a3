"""Validate: the bundle on its target's runtimes, budgets, report; tampered bundles fail clearly.
Build: the whole pipeline on tiny data, and a second build reuses every artifact."""

import base64
import io
import json
import re
import shutil
import subprocess
import sys
from dataclasses import replace

import pytest

from edgerec.core.errors import EdgerecError
from edgerec.core.models import Shape
from edgerec.core.training import TrainConfig
from edgerec.stages.export import ExportConfig, export
from edgerec.stages.quantize import QuantizeConfig, quantize
from edgerec.stages.teacher import TeacherConfig, train_teacher
from edgerec.stages.validate import ValidateConfig, validate

SHAPE = Shape(hidden=32, layers=1, heads=2, intermediate=64, max_len=12)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("validate")
    train_teacher(
        data_dir,
        root / "teacher",
        TeacherConfig(kind="causal", shape=SHAPE, train=TrainConfig(epochs=3, batch_size=16, lr=1e-2)),
    )
    export(root / "teacher", data_dir, root / "fp32", ExportConfig(target="arm64"))
    quantize(root / "fp32", data_dir, root / "int8", QuantizeConfig(target="arm64"), log=lambda m: None)
    return root


def _copy(bundles, tmp_path, name="int8"):
    shutil.copytree(bundles / name, tmp_path / name)
    return tmp_path / name


def test_validate_measures_every_runtime_and_writes_a_report(tmp_path, data_dir, bundles):
    bundle = _copy(bundles, tmp_path)
    report = validate(bundle, data_dir, ValidateConfig(target="arm64", warmup=5), log=lambda m: None)
    assert set(report["runtimes"]) == {"onnxruntime", "litert"}
    assert report["lineage"]["teacher"] == str(bundles / "teacher")  # found through the manifests
    for runtime, r in report["runtimes"].items():
        assert r["latency"]["runs"] == report["users"] and r["latency"]["p50_ms"] > 0, runtime
        assert r["peak_rss_mb"] > 0 and r["load_ms"] > 0
        assert 0 <= r["metrics"]["NDCG@10"]["mean"] <= 1 and "top10_agreement" in r["metrics"]
    assert {b["budget"] for b in report["budgets"]} == {
        "model size",
        "p95 latency, batch 1",
        "NDCG@10 kept vs teacher",
        "coverage@10 kept vs teacher",
    }
    beyond = report["beyond_accuracy"]["models"]
    assert set(beyond) == {"teacher (PyTorch)", "int8 model.onnx (onnxruntime)", "int8 model.tflite (litert)"}
    for figures in beyond.values():
        assert 0 < figures["coverage"] <= 1 and 0 <= figures["gini"] <= 1 and 0 <= figures["tail_share"] <= 1
        assert figures["ci95"]["tail_share"][0] <= figures["tail_share"] <= figures["ci95"]["tail_share"][1]
    assert beyond["teacher (PyTorch)"]["vs_teacher"]["coverage"] == 1.0
    for b in report["budgets"]:  # arm64's latency budget is a phone's: this machine cannot check it
        expected = (
            ("NOT CHECKED (measured here, not on the reference device)",)
            if b["budget"].startswith("p95")
            else ("PASS", "FAIL")
        )
        assert b["status"] in expected, b
    assert report["machine"]["cpu"] in {b["where"] for b in report["budgets"] if b["budget"].startswith("p95")}.pop()
    assert json.loads((bundle / "report.json").read_text())["passed"] == report["passed"]
    page = (bundle / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 4 and "<script" not in page and "http" not in page.replace("http-equiv", "")
    import matplotlib.image

    for encoded in images:  # every plot decodes to a non-empty picture with more than one colour
        pixels = matplotlib.image.imread(io.BytesIO(base64.b64decode(encoded)), format="png")
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100 and pixels.std() > 0.01


def test_a_failed_budget_exits_1(tmp_path, data_dir, bundles):
    bundle = _copy(bundles, tmp_path)
    profile = (__import__("edgerec.core.targets", fromlist=["x"]).available()["arm64"]).read_text()
    (tmp_path / "targets").mkdir()
    (tmp_path / "targets" / "arm64.toml").write_text(profile.replace("max_model_mb = 1.0", "max_model_mb = 0.0001"))
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgerec",
            "validate",
            "-T",
            "arm64",
            "-b",
            str(bundle),
            "-d",
            str(data_dir),
            "--targets-dir",
            str(tmp_path / "targets"),
            "--warmup",
            "1",
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 1, run.stderr[-500:]
    assert re.search(r"model size\s+model.onnx \(onnxruntime\)\s+\S+\s+<= 0.0001 MB\s+FAIL", run.stdout)


def _truncate(bundle):
    data = (bundle / "model.onnx").read_bytes()
    (bundle / "model.onnx").write_bytes(data[: len(data) // 2])


def _drop_item(bundle):
    items = json.loads((bundle / "items.json").read_text())
    (bundle / "items.json").write_text(json.dumps(items[:-1]))


def _other_target(bundle):
    meta = json.loads((bundle / "metadata.json").read_text())
    (bundle / "metadata.json").write_text(json.dumps({**meta, "target": "rpi4"}))


def _lying_metadata(bundle):  # items.json and metadata agree, the model does not
    meta = json.loads((bundle / "metadata.json").read_text())
    items = json.loads((bundle / "items.json").read_text())
    (bundle / "items.json").write_text(json.dumps(items[:-1]))
    (bundle / "metadata.json").write_text(json.dumps({**meta, "num_items": meta["num_items"] - 1}))


@pytest.mark.parametrize(
    "tamper, message",
    [
        (_truncate, "onnxruntime failed"),
        (_drop_item, "items.json lists"),
        (_other_target, "a bundle for target 'rpi4'"),
        (_lying_metadata, "does not match the item vocabulary"),
    ],
)
def test_tampered_bundles_fail_with_a_clear_message(tmp_path, data_dir, bundles, tamper, message):
    """Any edit is refused by the integrity check first; let through on purpose, each is still
    caught by what it breaks."""
    bundle = _copy(bundles, tmp_path)
    tamper(bundle)
    with pytest.raises(EdgerecError, match="has changed since it was written|bytes, .* were written"):
        validate(bundle, data_dir, ValidateConfig(target="arm64", warmup=1), log=lambda m: None)
    with pytest.raises(EdgerecError, match=message):
        validate(bundle, data_dir, ValidateConfig(target="arm64", warmup=1, allow_modified=True), log=lambda m: None)
    for extra in ([], ["--allow-modified"]):
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "edgerec",
                "validate",
                "-T",
                "arm64",
                "-b",
                str(bundle),
                "-d",
                str(data_dir),
                *extra,
            ],
            capture_output=True,
            text=True,
        )
        assert run.returncode == 2 and "Traceback" not in run.stderr
        assert run.stderr.strip().splitlines()[-1].startswith("error: ")


@pytest.mark.slow
def test_build_runs_every_stage_then_reuses_them(tmp_path, interactions_csv):
    from edgerec.core.distillation import DistillConfig
    from edgerec.stages.build import BuildConfig, build

    tiny = TrainConfig(epochs=2, batch_size=16, lr=1e-2)
    kwargs = dict(
        teacher_config=TeacherConfig(shape=SHAPE, train=tiny),
        distill_config=DistillConfig(
            student=Shape(hidden=16, layers=1, heads=2, intermediate=32, max_len=12), train=tiny
        ),
        log=lambda m: None,
    )
    config = BuildConfig(
        target="x86_64-vnni",
        interactions=str(interactions_csv),
        work=str(tmp_path / "runs"),
        dist=str(tmp_path / "dist"),
    )
    first = build(config, **kwargs)
    assert [first["stages"][s]["status"] for s in ("data", "teacher", "distill", "export", "quantize")] == ["built"] * 5
    assert (tmp_path / "dist" / "x86_64-vnni" / "model.onnx").is_file()
    assert (tmp_path / "dist" / "x86_64-vnni" / "report.html").is_file()
    assert {p["model"].split()[0] for p in first["report"]["points"]} >= {"teacher", "student", "int8", "fp32"}
    second = build(config, **kwargs)
    assert [second["stages"][s]["status"] for s in ("data", "teacher", "distill", "export", "quantize")] == [
        "reused"
    ] * 5
    # a student started from another artifact (--init PATH) is reused too: that artifact's hash
    # is one of its inputs (it was rebuilt every time before)
    kwargs["distill_config"] = replace(kwargs["distill_config"], student=SHAPE, init=str(tmp_path / "runs" / "teacher"))
    assert build(config, **kwargs)["stages"]["distill"]["status"] == "built"
    assert build(config, **kwargs)["stages"]["distill"]["status"] == "reused"


def test_top_k_outputs_are_ranked_from_the_items_they_return():
    import numpy as np

    from edgerec.formats.checks import score_outputs

    items = np.array([[5, 3, 7, 1, 2, 4, 6, 8, 9, 10], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]])
    summary, top, per_user = score_outputs(items, 10, 20, [[11], [12]], [3, 15], None, "b")
    assert per_user["HR@1"].tolist() == [0.0, 0.0] and per_user["HR@5"].tolist() == [1.0, 0.0]
    assert per_user["NDCG@10"][0] == pytest.approx(1 / np.log2(3)) and per_user["MRR"].tolist() == [0.5, 0.0]
    assert "HR@20" not in summary and "NDCG@20" not in summary  # unknown beyond K
    assert (top == items).all()
    # two returned items are history (masked by the protocol); target 1 was not returned
    returned = np.array([[5, 3, 7, 8, 9, 10, 11, 12, 13, 14]])
    _, _, per_user = score_outputs(returned, 10, 20, [[5, 3]], [1], None, "b")
    assert per_user["HR@10"].tolist() == [0.0] and per_user["MRR"].tolist() == [0.0]
    with pytest.raises(EdgerecError, match="at least 10"):
        score_outputs(items[:, :5], 5, 20, [[11], [12]], [3, 15], None, "b")
    with pytest.raises(EdgerecError, match="item indices in 1..20"):
        score_outputs(items + 15, 10, 20, [[11], [12]], [3, 15], None, "b")


def test_validate_takes_a_top_k_bundle_on_every_runtime(tmp_path, data_dir, bundles):
    export(bundles / "teacher", data_dir, tmp_path / "topk", ExportConfig(target="arm64", top_k=10))
    report = validate(tmp_path / "topk", data_dir, ValidateConfig(target="arm64", warmup=2), log=lambda m: None)
    full = validate(
        _copy(bundles, tmp_path, "fp32"), data_dir, ValidateConfig(target="arm64", warmup=2), log=lambda m: None
    )
    assert set(report["runtimes"]) == {"onnxruntime", "litert"}
    for runtime, r in report["runtimes"].items():
        assert "NDCG@10" in r["metrics"] and "HR@20" not in r["metrics"], runtime
        # the same model: its top-10 lists can differ from the full file's only where a history
        # is longer than the window (the graph excludes the window's items, the metric the history)
        assert abs(r["metrics"]["NDCG@10"]["mean"] - full["runtimes"][runtime]["metrics"]["NDCG@10"]["mean"]) < 0.02


def test_a_latency_budget_is_checked_only_where_it_stands_for_the_device():
    from edgerec.core.budgets import latency_stands_for_device
    from edgerec.core.targets import load_target

    avx2, arm64 = load_target("x86_64-avx2"), load_target("arm64")
    epyc = {"cpu": "AMD EPYC", "flags": ["avx", "avx2", "fma", "sse4_2"]}
    old = {"cpu": "old Xeon", "flags": ["avx", "sse4_2"]}
    assert latency_stands_for_device(avx2, epyc, None) and not latency_stands_for_device(avx2, old, None)
    assert not latency_stands_for_device(arm64, epyc, None)  # a phone's budget, on a server
    assert latency_stands_for_device(arm64, epyc, device=object())  # measured on the device itself


def test_an_artifact_from_before_an_option_existed_is_current_only_if_it_did_the_same():
    from edgerec.stages.build import _as_before

    wanted = {"alpha": 0.5, "init": "random", "train": {"epochs": 5, "schedule": "constant"}}
    old = {"alpha": 0.5, "train": {"epochs": 5}}  # written before `init` and `schedule` existed
    assert _as_before(old, wanted) == wanted
    assert _as_before(old, {**wanted, "init": "teacher"}) != {**wanted, "init": "teacher"}
    assert _as_before({**old, "train": {"epochs": 6}}, wanted) != wanted
