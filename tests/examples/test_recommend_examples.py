"""Recommendations and explanations from a bundle alone, and the example app that embeds one
without edgerec (ONNX Runtime; tflite-runtime 2.14 for the Raspberry Pi bundle)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgerec.core.errors import EdgerecError
from edgerec.core.models import Shape
from edgerec.core.training import TrainConfig
from edgerec.stages.export import ExportConfig, export
from edgerec.stages.recommend import Recommender
from edgerec.stages.teacher import TeacherConfig, train_teacher

APP = Path(__file__).resolve().parents[2] / "examples" / "app.py"
# Runs the app with every `import edgerec...` made impossible: it must need only NumPy + runtime.
NO_EDGEREC = (
    "import runpy, sys; sys.modules['edgerec'] = None; sys.argv = sys.argv[1:]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("recommend")
    train_teacher(
        data_dir,
        root / "model",
        TeacherConfig(
            shape=Shape(hidden=16, layers=1, heads=2, intermediate=32, max_len=12),
            train=TrainConfig(epochs=3, batch_size=16, lr=1e-2),
        ),
    )
    for target in ("x86_64-vnni", "rpi4"):
        export(root / "model", data_dir, root / target, ExportConfig(target=target))
    export(root / "model", data_dir, root / "rules", ExportConfig(target="rpi4", top_k=10, rules=True))
    return root


def _history(bundle, n=5):
    items = json.loads((bundle / "items.json").read_text())
    return [items[i]["id"] for i in (3, 7, 1, 12, 5)[:n]]


def test_recommend_and_explain(bundles):
    rec = Recommender(bundles / "x86_64-vnni")
    history = _history(bundles / "x86_64-vnni")
    rows = rec.recommend(history, k=5, explain=True)
    assert len(rows) == 5 and not {r["item"] for r in rows} & set(history)
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    # the contribution is the score drop with that history item left out, recomputed here by hand
    indices = rec.indices(history)
    first = rows[0]
    for reason in first["because"]:
        j = history.index(reason["item"])
        without = rec.scorer.scores([indices[:j] + indices[j + 1 :]])[0, first["index"]]
        assert reason["contribution"] == pytest.approx(first["score"] - without, abs=1e-5)
    with pytest.raises(EdgerecError, match="not in the catalogue"):
        rec.recommend(["no-such-item"])
    with pytest.raises(EdgerecError, match="empty"):
        rec.recommend([])


def test_recommend_cli_json(bundles):
    history = ",".join(_history(bundles / "x86_64-vnni"))
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgerec",
            "recommend",
            "-b",
            str(bundles / "x86_64-vnni"),
            "--history",
            history,
            "-k",
            "3",
            "--explain",
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-400:]
    result = json.loads(run.stdout)
    rows = result["items"]
    assert len(rows) == 3 and all(len(r["because"]) == 3 for r in rows)
    assert result["k"] == 3 and result["returned"] == 3 and result["candidates"] > 3
    bad = subprocess.run(
        [sys.executable, "-m", "edgerec", "recommend", "-b", str(bundles / "x86_64-vnni"), "--history", "nope"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def _app_items(output: str) -> list[str]:
    return [line.split("[")[1].split("]")[0] for line in output.strip().splitlines()]


def test_python_app_needs_only_numpy_and_onnxruntime(bundles):
    bundle = bundles / "x86_64-vnni"
    history = _history(bundle)
    run = subprocess.run(
        [sys.executable, "-c", NO_EDGEREC, str(APP), str(bundle), "--history", ",".join(history), "--explain"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-600:]
    assert _app_items(run.stdout) == [r["item"] for r in Recommender(bundle).recommend(history)]
    assert "because of:" in run.stdout


@pytest.mark.slow
def test_raspberry_pi_app_on_tflite_runtime_2_14(bundles):
    from edgerec.devices.envs import python_for

    bundle = bundles / "rpi4"
    history = _history(bundle)
    run = subprocess.run(
        [str(python_for("tflite-runtime")), "-c", NO_EDGEREC, str(APP), str(bundle), "--history", ",".join(history)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-600:]
    probe = subprocess.run(
        [str(python_for("tflite-runtime")), "-c", "import tflite_runtime; print(tflite_runtime.__version__)"],
        capture_output=True,
        text=True,
    )
    assert probe.stdout.strip() == "2.14.0"
    assert _app_items(run.stdout) == [r["item"] for r in Recommender(bundle).recommend(history)]


@pytest.mark.parametrize("bundle_name", ["x86_64-vnni", "rules"])
def test_the_app_keeps_to_an_allow_list_with_or_without_the_rules_file(bundles, bundle_name):
    """The rules file on tflite-runtime 2.14 (a Raspberry Pi's runtime) and the full scores with
    the rule applied after give edgerec's own list: the ranking with the other items removed."""
    from edgerec.devices.envs import python_for

    items = [entry["id"] for entry in json.loads((bundles / "x86_64-vnni" / "items.json").read_text())]
    history, allowed = _history(bundles / "x86_64-vnni"), items[::3]
    python = python_for("tflite-runtime") if bundle_name == "rules" else sys.executable
    run = subprocess.run(
        [str(python), "-c", NO_EDGEREC, str(APP), str(bundles / bundle_name), "--history", ",".join(history)]
        + ["--allow", ",".join(allowed), "--k", "6"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-600:]
    expected = Recommender(bundles / "x86_64-vnni").recommend(history, k=6, allowed=allowed)
    assert _app_items(run.stdout) == [r["item"] for r in expected]
