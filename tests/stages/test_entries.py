"""The bundle's further entry points (edgerec.formats.entries): rerank.<fmt> scores exactly the
full model's columns for the candidates passed, and rules.<fmt> returns the full ranking (plus the
boost) with the history and the excluded items removed, on every runtime of the profile; bad
options fail before any work."""

import json

import numpy as np
import pytest

from edgerec.core.errors import EdgerecError
from edgerec.core.models import Shape
from edgerec.core.training import TrainConfig
from edgerec.stages.export import ExportConfig, export

SHAPE = Shape(hidden=16, layers=1, heads=2, intermediate=32, max_len=12)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, data_dir):
    from edgerec.stages.teacher import TeacherConfig, train_teacher

    out = tmp_path_factory.mktemp("entries") / "teacher"
    train_teacher(data_dir, out, TeacherConfig(shape=SHAPE, train=TrainConfig(epochs=2, batch_size=16, lr=1e-2)))
    return out


def _full_scores(teacher, ids):
    import torch

    from edgerec.core.evaluation import resolve_model_dir
    from edgerec.core.graphs import scoring_graph
    from edgerec.core.models import load_model

    with torch.inference_mode():
        return scoring_graph(load_model(resolve_model_dir(teacher)))(torch.from_numpy(ids)).numpy()


@pytest.mark.parametrize("target", ["arm64", "rpi4"])
def test_rerank_and_rules_files_give_the_full_models_answer_on_every_runtime(tmp_path, data_dir, teacher, target):
    from edgerec.core.interactions import load_data
    from edgerec.devices.runtimes import encode
    from edgerec.formats import RUNTIMES
    from edgerec.formats.entries import run_feeds

    manifest = export(
        teacher,
        data_dir,
        tmp_path / "b",
        ExportConfig(target=target, top_k=5, rerank=8, rules=True, emulate=False),
        log=lambda m: None,
    )
    meta = json.loads((tmp_path / "b" / "metadata.json").read_text())
    runtimes = {r["name"] for r in manifest["target"]["runtimes"]}
    for name in ("rerank", "rules"):
        assert set(meta["entries"][name]["check"]) == runtimes
        for file in meta["entries"][name]["files"].values():
            assert (tmp_path / "b" / file).is_file() and file in meta["integrity"]
    data = load_data(data_dir)
    histories = data.examples("test")[0][:20]
    ids = encode(histories, SHAPE.max_len, "int64")
    full = _full_scores(teacher, ids)  # [users, items], column j = item j + 1
    rng = np.random.default_rng(7)
    candidates = rng.integers(1, data.num_items + 1, size=(len(ids), 8))
    candidates[:, 6:] = 0  # a short page
    allowed = (rng.random(full.shape) < 0.4).astype(np.uint8)
    boost = rng.normal(0, 1.0, full.shape).astype(np.float32)
    for runtime in manifest["target"]["runtimes"]:
        runtime = next(r for r in _runtimes(target) if r.name == runtime["name"])
        fmt = RUNTIMES[runtime.name][0]
        dtype = "int32" if fmt == "tflite" else "int64"
        folder = tmp_path / "b"
        rerank = folder / meta["entries"]["rerank"]["files"][fmt]
        (scores,) = run_feeds(runtime, rerank, {"input_ids": ids, "candidates": candidates}, dtype)
        expected = np.take_along_axis(full, np.maximum(candidates - 1, 0), axis=1)
        assert np.isneginf(scores[:, 6:]).all()
        np.testing.assert_allclose(scores[:, :6], expected[:, :6], atol=1e-4)
        items, best = run_feeds(
            runtime,
            folder / meta["entries"]["rules"]["files"][fmt],
            {"input_ids": ids, "allowed": allowed, "boost": boost},
            dtype,
        )
        for row in range(len(ids)):
            ranked = (full[row] + boost[row]).astype(np.float32)
            shown = [
                j + 1 for j in np.argsort(-ranked, kind="stable") if allowed[row, j] and j + 1 not in set(ids[row])
            ]
            real = [int(i) for i in items[row] if i != 0]
            assert real == shown[:5], (runtime.name, row)
            assert all(i == 0 for i in items[row][len(real) :]) and np.isneginf(best[row][len(real) :]).all()


def _runtimes(target):
    from edgerec.core.targets import load_target

    return load_target(target).runtimes


def test_rerank_of_a_factorized_student_matches_its_full_columns(data_dir, teacher):
    """Pruned students keep items as A W^T (model_surgery.factorize_items): the rerank graph reads
    rows of A, not of a full table."""
    import torch

    from edgerec.core.evaluation import resolve_model_dir
    from edgerec.core.graphs import rerank_graph, scoring_graph
    from edgerec.core.model_surgery import factorize_items
    from edgerec.core.models import load_model

    rec = load_model(resolve_model_dir(teacher))
    factorize_items(rec.model, 4)
    ids = torch.randint(0, rec.num_items + 1, (6, SHAPE.max_len))
    candidates = torch.randint(1, rec.num_items + 1, (6, 5))
    with torch.inference_mode():
        full = scoring_graph(rec)(ids)
        got = rerank_graph(rec)(ids, candidates)
    torch.testing.assert_close(got, full.gather(1, candidates - 1), atol=1e-5, rtol=1e-5)


def test_bad_entry_options_fail_before_any_work(tmp_path, data_dir, teacher):
    with pytest.raises(EdgerecError, match="--rules needs the in-graph top-K"):
        export(teacher, data_dir, tmp_path / "a", ExportConfig(target="arm64", rules=True, emulate=False))
    with pytest.raises(EdgerecError, match="--rerank must be in"):
        export(teacher, data_dir, tmp_path / "b", ExportConfig(target="arm64", rerank=10**6, emulate=False))
    assert not list(tmp_path.iterdir())


def test_quantize_carries_the_entry_points_over_in_float(tmp_path, data_dir, teacher):
    from edgerec.core.files import read_bundle
    from edgerec.stages.quantize import QuantizeConfig, quantize

    export(teacher, data_dir, tmp_path / "fp32", ExportConfig(target="x86_64-avx2", rerank=4), log=lambda m: None)
    lines = []
    quantize(tmp_path / "fp32", data_dir, tmp_path / "int8", QuantizeConfig(target="x86_64-avx2"), log=lines.append)
    meta, modified = read_bundle(tmp_path / "int8")  # every file, the carried one too, matches its hash
    entry = meta["entries"]["rerank"]
    assert not modified and entry["precision"] == "fp32" and "carried over in float" in entry["note"]
    assert (tmp_path / "int8" / "rerank.onnx").read_bytes() == (tmp_path / "fp32" / "rerank.onnx").read_bytes()
    assert any("rerank entry point" in line for line in lines)
