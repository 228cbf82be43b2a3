"""Prune: importance finds a dead head, surgery shrinks the matrices, the result recovers,
loads, exports with parity; impossible requests fail clearly."""

import pytest
import torch

from edgerec.core.distillation import DistillConfig
from edgerec.core.errors import EdgerecError
from edgerec.core.interactions import load_data
from edgerec.core.models import Shape, build_id_model, load_model
from edgerec.core.training import TrainConfig
from edgerec.stages.distill import distill
from edgerec.stages.export import ExportConfig, export
from edgerec.stages.prune import PruneConfig, importance, plan, prune, prune_model
from edgerec.stages.teacher import TeacherConfig, train_teacher

TINY = TrainConfig(epochs=2, batch_size=16, lr=1e-2)
STUDENT = Shape(hidden=16, layers=2, heads=2, intermediate=32, max_len=12)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("prune")
    train_teacher(
        data_dir,
        root / "teacher",
        TeacherConfig(shape=Shape(hidden=32, layers=1, heads=2, intermediate=64, max_len=12), train=TINY),
    )
    distill(root / "teacher", data_dir, root / "student", DistillConfig(student=STUDENT, train=TINY))
    return root


def test_importance_ranks_a_dead_head_last_and_surgery_removes_it(data_dir):
    data = load_data(data_dir)
    torch.manual_seed(0)
    model = build_id_model("causal", data.vocab_size, STUDENT)
    value = model.bert.encoder.layer[1].attention.self.value
    with torch.no_grad():  # head 0 of layer 1 contributes nothing: zero value projection
        value.weight[:8] = 0
        value.bias[:8] = 0
    heads, neurons = importance(model, data, STUDENT.max_len)
    assert heads[1][0] == 0 and heads[1][1] > 0 and neurons[0].shape == (32,)
    before = sum(p.numel() for p in model.parameters())
    removed = prune_model(model, heads, neurons, drop_heads=1, drop_ffn=16)
    assert removed["heads"][1] == [0]
    assert model.bert.encoder.layer[1].attention.self.query.weight.shape == (8, 16)
    assert model.bert.encoder.layer[0].intermediate.dense.weight.shape == (16, 16)
    assert sum(p.numel() for p in model.parameters()) < before


def test_prune_recovers_and_exports(tmp_path, data_dir, artifacts):
    manifest = prune(
        artifacts / "student",
        artifacts / "teacher",
        data_dir,
        tmp_path / "pruned",
        PruneConfig(sparsity=0.5, recovery=TINY),
        log=lambda m: None,
    )
    p = manifest["pruning"]
    assert manifest["stage"] == "pruned" and p["parameters_after"] < p["parameters_before"]
    assert p["heads_per_layer"] == 1 and p["ffn_per_layer"] == 16
    assert p["exported_onnx_bytes_after"] < p["exported_onnx_bytes_before"]
    rec = load_model(tmp_path / "pruned" / "model")  # a standard checkpoint: pruned_heads + sizes
    assert rec.num_parameters == p["parameters_after"]
    bundle = export(tmp_path / "pruned", data_dir, tmp_path / "dist", ExportConfig(target="x86_64-vnni"))
    assert bundle["parity"]["onnxruntime"]["top10_agreement"] == 1.0


def test_iterative_schedule(tmp_path, data_dir, artifacts):
    manifest = prune(
        artifacts / "student",
        artifacts / "teacher",
        data_dir,
        tmp_path / "pruned",
        PruneConfig(sparsity=0.5, iterations=2, recovery=TINY),
        log=lambda m: None,
    )
    steps = manifest["pruning"]["steps"]
    assert [s["sparsity"] for s in steps] == [0.25, 0.5]
    assert steps[0]["parameters"] > steps[1]["parameters"]


def test_impossible_requests(tmp_path, data_dir, artifacts):
    with pytest.raises(EdgerecError, match=r"\[0, 1\)"):
        PruneConfig(sparsity=1.0).validate()
    with pytest.raises(EdgerecError, match="all 2 heads"):
        plan(2, 32, 0.8)
    with pytest.raises(EdgerecError, match="all 2 heads"):
        prune(artifacts / "student", artifacts / "teacher", data_dir, tmp_path / "p", PruneConfig(sparsity=0.8))
    with pytest.raises(EdgerecError, match="no such artifact directory"):
        prune(data_dir / "nope", artifacts / "teacher", data_dir, tmp_path / "p")
    assert not (tmp_path / "p").exists()


def test_item_table_factorisation_exports_with_parity(tmp_path, data_dir, artifacts):
    import onnx

    manifest = prune(
        artifacts / "student",
        artifacts / "teacher",
        data_dir,
        tmp_path / "low-rank",
        PruneConfig(sparsity=0.0, embedding_rank=4, recovery=TINY),
        log=lambda m: None,
    )
    rec = load_model(tmp_path / "low-rank" / "model")
    assert rec.meta["item_rank"] == 4
    table = rec.model.bert.embeddings.word_embeddings
    assert table.items.weight.shape == (load_data(data_dir).vocab_size, 4)
    assert manifest["pruning"]["parameters_after"] < manifest["pruning"]["parameters_before"]
    bundle = export(tmp_path / "low-rank", data_dir, tmp_path / "dist", ExportConfig(target="arm64"))
    assert all(p["top10_agreement"] == 1.0 for p in bundle["parity"].values())
    model = onnx.load(str(tmp_path / "dist" / "model.onnx"))
    big = [i for i in model.graph.initializer if list(i.dims) == [load_data(data_dir).vocab_size, 4]]
    assert len(big) == 1, "the rank-4 item table is stored once, read by the lookup and the output layer"
    with pytest.raises(EdgerecError, match="larger than the hidden size"):
        prune(
            artifacts / "student",
            artifacts / "teacher",
            data_dir,
            tmp_path / "x",
            PruneConfig(sparsity=0.0, embedding_rank=99),
        )


def test_distill_with_a_factorised_item_table(tmp_path, data_dir, artifacts):
    manifest = distill(
        artifacts / "teacher", data_dir, tmp_path / "s", DistillConfig(student=STUDENT, train=TINY, item_rank=4)
    )
    assert load_model(tmp_path / "s" / "model").meta["item_rank"] == 4
    assert manifest["parameters"]["student"] < sum(
        p.numel() for p in build_id_model("causal", load_data(data_dir).vocab_size, STUDENT).parameters()
    )
    with pytest.raises(EdgerecError, match="--item-rank"):
        DistillConfig(student=STUDENT, item_rank=17).validate()


def test_whole_layer_removal_and_size_budget(tmp_path, data_dir, artifacts):
    manifest = prune(
        artifacts / "student",
        artifacts / "teacher",
        data_dir,
        tmp_path / "one-layer",
        PruneConfig(sparsity=0.0, drop_layers=1, recovery=TINY),
        log=lambda m: None,
    )
    rec = load_model(tmp_path / "one-layer" / "model")  # reloads: pruned_heads renumbered
    assert len(rec.model.bert.encoder.layer) == 1 and manifest["pruning"]["steps"][0]["removed"]["layers"] in ([0], [1])
    half = prune(
        artifacts / "student",
        artifacts / "teacher",
        data_dir,
        tmp_path / "half",
        PruneConfig(sparsity=0.5, recovery=TINY),
        log=lambda m: None,
    )
    budget = int(half["pruning"]["parameters_after"] * 1.15) - 50  # just too small without a smaller table
    manifest = prune(
        artifacts / "student",
        artifacts / "teacher",
        data_dir,
        tmp_path / "budget",
        PruneConfig(sparsity=0.5, max_bytes=budget, recovery=TINY),
        log=lambda m: None,
    )
    assert manifest["pruning"]["steps"][0]["removed"]["item_rank"] >= 1
    assert manifest["pruning"]["parameters_after"] * 1.15 <= budget
    with pytest.raises(EdgerecError, match="would remove all 2 layers"):
        prune(artifacts / "student", artifacts / "teacher", data_dir, tmp_path / "x", PruneConfig(drop_layers=2))
    with pytest.raises(EdgerecError, match="rank-1 item table"):
        prune(
            artifacts / "student",
            artifacts / "teacher",
            data_dir,
            tmp_path / "x",
            PruneConfig(sparsity=0.5, max_bytes=1000, recovery=TINY),
            log=lambda m: None,
        )
