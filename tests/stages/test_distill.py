import numpy as np
import pytest

from edgerec.core.distillation import DistillConfig
from edgerec.core.errors import EdgerecError
from edgerec.core.models import Shape, build_id_model, load_model
from edgerec.core.soft_targets import _causal_windows, _soft_targets
from edgerec.core.training import TrainConfig
from edgerec.stages.distill import distill, size_student, student_parameters
from edgerec.stages.teacher import TeacherConfig, train_teacher

TEACHER = Shape(hidden=32, layers=1, heads=2, intermediate=64, max_len=12, dropout=0.0, attention_dropout=0.0)
STUDENT = Shape(hidden=8, layers=1, heads=2, intermediate=16, max_len=12, dropout=0.0, attention_dropout=0.0)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("teach") / "teacher"
    train_teacher(
        data_dir, out, TeacherConfig(shape=TEACHER, train=TrainConfig(epochs=25, batch_size=16, lr=1e-2, patience=50))
    )
    return out


def config(**kw):
    train = TrainConfig(epochs=kw.pop("epochs", 20), batch_size=16, lr=1e-2, patience=50)
    return DistillConfig(student=STUDENT, top_k=8, train=train, **kw)


def test_distilled_student_is_small_and_ranks(tmp_path, data_dir, teacher_dir, monkeypatch):
    monkeypatch.setenv("EDGEREC_CACHE", str(tmp_path / "cache"))
    manifest = distill(teacher_dir, data_dir, tmp_path / "s", config())
    p, m = manifest["parameters"], manifest["metrics"]
    assert p["student"] < p["teacher"] / 3
    assert m["test"]["NDCG@10"] > 0.3  # random is about 0.1 on 24 items
    assert 0 <= m["test"]["top10_agreement"] <= 1
    student = load_model(tmp_path / "s" / "model")
    assert student.kind == "causal" and student.num_parameters == p["student"]
    cache = list((tmp_path / "cache" / "teacher-targets").glob("*.npz"))
    assert len(cache) == 1


def test_teacher_targets_are_cached_and_reused(tmp_path, data_dir, teacher_dir, monkeypatch):
    import edgerec.core.soft_targets as d

    monkeypatch.setenv("EDGEREC_CACHE", str(tmp_path / "cache"))
    calls = []
    real = d.compute_targets
    monkeypatch.setattr(d, "compute_targets", lambda *a, **k: calls.append(1) or real(*a, **k))
    distill(teacher_dir, data_dir, tmp_path / "a", config(epochs=1))
    distill(teacher_dir, data_dir, tmp_path / "b", config(epochs=2, alpha=0.9))  # same targets
    assert len(calls) == 1
    distill(teacher_dir, data_dir, tmp_path / "c", config(epochs=1, temperature=3.0))
    assert len(calls) == 2  # another temperature: other targets


def test_soft_targets_keep_the_whole_mass():
    logits = np.random.default_rng(0).normal(size=(5, 40))
    idx, logp, tail = _soft_targets(logits, 7, 2.0)
    total = np.exp(logp).sum(1) + np.exp(tail)
    np.testing.assert_allclose(total, 1.0, atol=1e-5)
    z = logits / 2.0
    full = np.exp(z - z.max(1, keepdims=True))
    full /= full.sum(1, keepdims=True)
    np.testing.assert_allclose(np.exp(logp), np.take_along_axis(full, idx, 1), rtol=1e-4)
    assert np.sort(full, 1)[:, -7:].sum(1) == pytest.approx(np.exp(logp).sum(1), rel=1e-4)


def test_causal_windows_cover_every_position_once():
    seqs = [np.arange(1, 31), np.arange(1, 4), np.arange(1, 2)]
    plan = [np.arange(29), np.arange(2), np.arange(0)]
    offsets = np.array([0, 29, 31, 31])
    jobs = _causal_windows(seqs, plan, offsets, max_len=10)
    rows = np.concatenate([r for _, r, _ in jobs])
    assert sorted(rows.tolist()) == list(range(31))
    for window, r, cols in jobs:
        assert len(window) <= 10
        # the prediction read at cols is for the prefix ending at that item
        for row, col in zip(r, cols):
            user = int(np.searchsorted(offsets, row, side="right") - 1)
            assert window[col] == seqs[user][row - offsets[user]]
    assert all(cols[0] >= 5 for _, r, cols in jobs[1:2])  # later windows keep >= max_len/2 context


def _kd_case(top_logp_dtype=np.float32):
    """A 6-item catalogue, one student and one KD position: (student, targets, batch, idx, logp,
    tail, q), q = the student's softmax at T = 2 over the items at that position."""
    import torch

    num_items = 6
    student = build_id_model("causal", num_items + 2, STUDENT)
    student.eval()
    teacher_logits = np.random.default_rng(1).normal(size=(1, num_items))
    idx, logp, tail = _soft_targets(teacher_logits, 3, 2.0)
    targets = {"top_items": idx + 1, "top_logp": logp.astype(top_logp_dtype), "tail_logp": tail}
    ids = torch.tensor([[1, 2, 3]])
    batch = {
        "input_ids": ids,
        "labels": torch.tensor([[-100, -100, 4]]),
        "position_ids": torch.tensor([[9, 10, 11]]),
        "kd_rows": torch.tensor([[-1, -1, 0]]),
    }
    with torch.no_grad():
        hidden = student.bert(input_ids=ids, position_ids=batch["position_ids"]).last_hidden_state
        q = torch.softmax(student.cls(hidden[0, -1])[1 : num_items + 1].double() / 2.0, 0).numpy()
    return student, targets, batch, idx, logp, tail, q


def test_distillation_loss_matches_a_direct_kl(data_dir):
    import torch

    from edgerec.core.distillation import distill_loss_module

    student, targets, batch, idx, logp, tail, q = _kd_case(np.float16)
    only_kd = distill_loss_module(student, targets, 6, alpha=1.0, temperature=2.0)
    with torch.no_grad():
        got = float(only_kd(**batch))
    p_top = np.exp(logp.astype(np.float16).astype(np.float64))[0]
    q_top = q[idx[0]]
    p_tail, q_tail = np.exp(tail[0]), 1 - q_top.sum()
    want = 4.0 * ((p_top * np.log(p_top / q_top)).sum() + p_tail * np.log(p_tail / q_tail))
    assert got == pytest.approx(want, rel=1e-3)


def test_sizing_by_budget():
    vocab = 1684
    shape = size_student(vocab, max_params=200_000)
    assert student_parameters(shape, vocab) <= 200_000
    bigger = size_student(vocab, max_params=2_000_000)
    assert student_parameters(bigger, vocab) > student_parameters(shape, vocab)
    assert size_student(vocab, max_size_mb=0.2) == shape
    real = build_id_model("causal", vocab, shape)
    assert sum(p.numel() for p in real.parameters()) == student_parameters(shape, vocab)
    with pytest.raises(EdgerecError, match="no student fits"):
        size_student(vocab, max_params=1000)


def test_bad_inputs(tmp_path, data_dir, teacher_dir):
    with pytest.raises(EdgerecError, match="not divisible"):
        distill(teacher_dir, data_dir, tmp_path / "s", DistillConfig(student=Shape(hidden=10, heads=3)))
    with pytest.raises(EdgerecError, match="expected teacher"):
        distill(data_dir, data_dir, tmp_path / "s", config())
    with pytest.raises(EdgerecError, match="temperature"):
        distill(teacher_dir, data_dir, tmp_path / "s", config(temperature=0))
    assert not (tmp_path / "s").exists()


def test_teacher_for_other_items_is_refused(tmp_path, teacher_dir):
    import pandas as pd
    from conftest import synthetic_rows

    from edgerec.stages.data import make_data

    rows = synthetic_rows(20)
    for row in rows:
        row["item"] = "x" + row["item"]  # same shape, other item ids
    pd.DataFrame(rows).to_csv(tmp_path / "other.csv", index=False)
    make_data(tmp_path / "other", interactions=tmp_path / "other.csv")
    with pytest.raises(EdgerecError, match="another item vocabulary"):
        distill(teacher_dir, tmp_path / "other", tmp_path / "s", config())
    assert not (tmp_path / "s").exists()


def test_tail_boost_reweights_the_teacher_toward_rare_items(data_dir):
    """With tail_boost b the KD target is p_i (pop_i + 1)^-b renormalised (tail bin: mean weight)."""
    import torch

    from edgerec.core.distillation import distill_loss_module

    student, targets, batch, idx, logp, tail, q = _kd_case()
    popularity = np.array([0, 50, 20, 10, 5, 1, 0])
    boosted = distill_loss_module(student, targets, 6, 1.0, 2.0, popularity, tail_boost=0.5)
    with torch.no_grad():
        got = float(boosted(**batch))
    w = (popularity[1:] + 1.0) ** -0.5
    p_top, p_tail = np.exp(logp[0].astype(np.float64)) * w[idx[0]], np.exp(tail[0]) * w.mean()
    p_top, p_tail = p_top / (p_top.sum() + p_tail), p_tail / (p_top.sum() + p_tail)
    q_top, q_tail = q[idx[0]], 1 - q[idx[0]].sum()
    want = 4.0 * ((p_top * np.log(p_top / q_top)).sum() + p_tail * np.log(p_tail / q_tail))
    assert got == pytest.approx(want, rel=1e-4)
    with pytest.raises(EdgerecError, match="--tail-boost"):
        DistillConfig(student=STUDENT, tail_boost=-1).validate()


@pytest.mark.parametrize("kind,positions", [("causal", "start"), ("masked", "end")])
def test_student_kinds_and_position_conventions_train_and_rank(
    tmp_path, data_dir, teacher_dir, monkeypatch, kind, positions
):
    monkeypatch.setenv("EDGEREC_CACHE", str(tmp_path / "cache"))
    manifest = distill(teacher_dir, data_dir, tmp_path / "s", config(student_kind=kind, positions=positions, epochs=40))
    assert manifest["metrics"]["test"]["NDCG@10"] > 0.3  # random is about 0.1 on 24 items
    student = load_model(tmp_path / "s" / "model")
    assert (student.kind, student.positions) == (kind, positions)


def test_start_positions_count_from_the_first_item_whatever_the_padding():
    import torch

    from edgerec.core.batches import segment_positions
    from edgerec.core.models import RecModel, left_pad, start_positions

    ids = torch.from_numpy(left_pad([[5, 6, 7], [9]], 5))
    assert start_positions(ids).tolist() == [[0, 0, 0, 1, 2], [0, 0, 0, 0, 0]]
    # training numbers a window the way inference numbers the left-padded history
    assert segment_positions(3, 5, "start").tolist() == start_positions(ids)[0, 2:].tolist()
    assert segment_positions(3, 5, "end").tolist() == [2, 3, 4]
    # the same history gives the same scores however long the padded window is
    model = build_id_model("causal", 12, STUDENT)
    short = RecModel(model, {"kind": "causal", "num_items": 10, "max_len": 4, "positions": "start"})
    long = RecModel(model, {"kind": "causal", "num_items": 10, "max_len": 12, "positions": "start"})
    np.testing.assert_allclose(short.scores([[3, 4, 5]]), long.scores([[3, 4, 5]]), atol=1e-5)


def test_bad_student_kind_or_positions_is_one_clear_error(tmp_path, data_dir, teacher_dir):
    for kw, message in (
        ({"student_kind": "rnn"}, "--student-kind"),
        ({"positions": "middle"}, "--positions"),
        ({"student_kind": "masked", "positions": "start"}, "causal students"),
    ):
        with pytest.raises(EdgerecError, match=message):
            distill(teacher_dir, data_dir, tmp_path / "x", config(**kw))
    assert not (tmp_path / "x").exists()


def test_init_from_teacher_copies_embeddings_head_and_chosen_layers():
    import torch

    from edgerec.core.model_surgery import init_from_teacher, teacher_init_layers

    torch.manual_seed(0)
    teacher = build_id_model("causal", 30, Shape(hidden=16, layers=3, heads=2, intermediate=32, max_len=12)).eval()
    same = build_id_model("causal", 30, Shape(hidden=16, layers=3, heads=2, intermediate=32, max_len=12)).eval()
    assert init_from_teacher(same, teacher) is None
    ids = torch.tensor([[0, 0, 3, 7, 1, 9]])
    with torch.no_grad():  # every weight copied: the same function
        assert torch.equal(same(input_ids=ids).logits, teacher(input_ids=ids).logits)

    assert teacher_init_layers(3, 1) == [0] and teacher_init_layers(3, 2) == [0, 2]
    assert teacher_init_layers(4, 3) == [0, 2, 3]
    small = build_id_model("causal", 30, Shape(hidden=16, layers=2, heads=2, intermediate=32, max_len=8))
    assert init_from_teacher(small, teacher) is None
    s, t = small.state_dict(), teacher.state_dict()
    assert torch.equal(s["bert.embeddings.word_embeddings.weight"], t["bert.embeddings.word_embeddings.weight"])
    assert torch.equal(s["cls.predictions.bias"], t["cls.predictions.bias"])
    # positions count from the end: the student's 8 slots are the teacher's last 8
    assert torch.equal(
        s["bert.embeddings.position_embeddings.weight"], t["bert.embeddings.position_embeddings.weight"][-8:]
    )
    for i, j in enumerate([0, 2]):
        key = "bert.encoder.layer.{}.intermediate.dense.weight"
        assert torch.equal(s[key.format(i)], t[key.format(j)])

    narrow = build_id_model("causal", 30, Shape(hidden=8, layers=1, heads=2, intermediate=32, max_len=12))
    before = narrow.state_dict()["bert.embeddings.word_embeddings.weight"].clone()
    assert "width" in init_from_teacher(narrow, teacher)
    assert torch.equal(narrow.state_dict()["bert.embeddings.word_embeddings.weight"], before)  # untouched
    masked = build_id_model("masked", 30, Shape(hidden=16, layers=1, heads=2, intermediate=32, max_len=12))
    assert init_from_teacher(masked, teacher) is not None


def test_distill_records_how_the_student_started(tmp_path, data_dir, teacher_dir, monkeypatch):
    monkeypatch.setenv("EDGEREC_CACHE", str(tmp_path / "cache"))
    wide = Shape(hidden=32, layers=1, heads=2, intermediate=64, max_len=12, dropout=0.0, attention_dropout=0.0)
    started = distill(
        teacher_dir,
        data_dir,
        tmp_path / "a",
        DistillConfig(student=wide, top_k=8, train=TrainConfig(epochs=1, batch_size=16, lr=1e-4)),
    )
    assert started["init"] == {"from": "teacher", "layers": [0]}
    # one epoch at a small rate from the teacher's weights ranks about as the teacher does
    m = started["metrics"]
    assert m["test"]["NDCG@10"] > m["teacher_test"]["NDCG@10"] - 0.1
    random = distill(teacher_dir, data_dir, tmp_path / "b", config(epochs=1, init="random"))
    assert random["init"] == {"from": "random"}
    narrow = distill(teacher_dir, data_dir, tmp_path / "c", config(epochs=1))
    assert narrow["init"]["from"] == "random" and "width" in narrow["init"]["why"]
    with pytest.raises(EdgerecError, match="--init"):
        config(init="").validate()


def test_init_from_another_model_artifact(tmp_path, data_dir, teacher_dir, monkeypatch):
    monkeypatch.setenv("EDGEREC_CACHE", str(tmp_path / "cache"))
    wide = Shape(hidden=32, layers=1, heads=2, intermediate=64, max_len=12, dropout=0.0, attention_dropout=0.0)
    train = TrainConfig(epochs=1, batch_size=16, lr=1e-4)
    m = distill(
        teacher_dir, data_dir, tmp_path / "a", DistillConfig(student=wide, top_k=8, train=train, init=str(teacher_dir))
    )
    assert m["init"] == {"from": str(teacher_dir), "layers": [0]}
    assert "init" in m["inputs"]  # its content hash, like the teacher's
    with pytest.raises(EdgerecError, match="cannot start the student"):  # hidden 8 from hidden 32
        distill(teacher_dir, data_dir, tmp_path / "b", config(epochs=1, init=str(teacher_dir)))
    with pytest.raises(EdgerecError, match="no such model"):
        distill(teacher_dir, data_dir, tmp_path / "c", config(epochs=1, init=str(tmp_path / "missing")))
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_larger_students_add_a_layer_first_and_stay_under_the_teacher():
    from edgerec.core.distillation import STUDENT_SHAPE
    from edgerec.stages.distill import larger_students

    # ML-1M: 3,708 ids (padding, 3,706 items, [MASK]); the hidden-64, 2-layer teacher has 358,268 parameters
    ladder = larger_students(STUDENT_SHAPE, 3708, 358_268)
    assert [(s.hidden, s.layers) for s in ladder] == [(64, 2)]
    assert student_parameters(ladder[0], 3708) == 358_268
    assert larger_students(STUDENT_SHAPE, 3708, 300_000) == []
    wide = larger_students(STUDENT_SHAPE, 3708, 2_650_748)  # the hidden-256 teacher
    assert [(s.hidden, s.layers) for s in wide[:3]] == [(64, 2), (96, 1), (96, 2)]
    assert all(s.heads == s.hidden // 32 and s.intermediate == 4 * s.hidden for s in wide)


def test_keep_grows_the_student_until_it_keeps_enough(tmp_path, data_dir, teacher_dir, monkeypatch):
    import edgerec.stages.distill as d

    monkeypatch.setenv("EDGEREC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(d, "_SIZES", [(8, 2), (16, 1), (16, 2)])  # a ladder under the tiny teacher
    logged = []
    grown = distill(teacher_dir, data_dir, tmp_path / "a", config(epochs=2, keep=2.0, grow=1), log=logged.append)
    sizing = grown["sizing"]
    assert [t["shape"]["layers"] for t in sizing["tries"]] == [1, 2]  # grow=1: one larger student only
    assert not sizing["met"] and sizing["chosen"]["layers"] == 2
    assert sizing["teacher_valid_ndcg10"] > 0
    for t in sizing["tries"]:  # both below twice the teacher, significantly so
        assert t["kept"] == pytest.approx(t["valid_ndcg10"] / sizing["teacher_valid_ndcg10"], abs=1e-4)
        assert t["short"] and t["minus_keep_x_teacher"]["ci95"][1] < 0
    assert load_model(tmp_path / "a" / "model").model.config.num_hidden_layers == 2
    assert grown["config"]["student"]["layers"] == 1  # the config asked for; build's is_current compares it
    assert len(logged) == 1 and "trying 2 layer(s)" in logged[0]
    enough = distill(teacher_dir, data_dir, tmp_path / "b", config(epochs=2, keep=0.01))
    assert len(enough["sizing"]["tries"]) == 1 and enough["sizing"]["met"] and not enough["sizing"]["tries"][0]["short"]
    assert load_model(tmp_path / "b" / "model").model.config.num_hidden_layers == 1
    assert "sizing" not in distill(teacher_dir, data_dir, tmp_path / "c", config(epochs=1))
    with pytest.raises(EdgerecError, match="--keep"):
        config(keep=3.0).validate()
