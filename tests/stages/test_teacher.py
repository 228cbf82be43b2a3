import json

import numpy as np
import pytest

from edgerec.core.errors import EdgerecError
from edgerec.core.evaluation import evaluate_artifact
from edgerec.core.models import Shape, load_model
from edgerec.core.training import TrainConfig, work_dir_for
from edgerec.stages.teacher import TeacherConfig, train_teacher

TINY = Shape(hidden=16, layers=1, heads=2, intermediate=32, max_len=12, dropout=0.0, attention_dropout=0.0)


def tiny(kind="causal", epochs=25, **train):
    return TeacherConfig(
        kind=kind, shape=TINY, train=TrainConfig(epochs=epochs, batch_size=16, lr=1e-2, patience=50, **train)
    )


@pytest.mark.parametrize("kind", ["causal", "masked"])
def test_id_teacher_learns_the_pattern(tmp_path, data_dir, kind):
    manifest = train_teacher(data_dir, tmp_path / "t", tiny(kind))
    # the synthetic users mostly step +1 through 24 items: random NDCG@10 is about 0.1
    assert manifest["metrics"]["test"]["NDCG@10"] > 0.35
    assert (tmp_path / "t" / "model" / "model.safetensors").is_file()
    assert not work_dir_for(tmp_path / "t").exists()
    history = manifest["training"]["history"]
    assert history[-1]["loss"] < history[0]["loss"]
    # what evaluate measures from the saved files is what training reported
    report = evaluate_artifact(tmp_path / "t", data_dir)
    assert report["metrics"]["NDCG@10"]["mean"] == pytest.approx(manifest["metrics"]["test"]["NDCG@10"], abs=1e-6)


def test_training_resumes_after_interruption(tmp_path, data_dir, monkeypatch):
    import edgerec.core.training as training

    real = training._save_last
    calls = {"n": 0}

    def crash_after_three(*args, **kwargs):
        real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(training, "_save_last", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        train_teacher(data_dir, tmp_path / "t", tiny(epochs=6))
    assert not (tmp_path / "t").exists()
    state = json.loads((work_dir_for(tmp_path / "t") / "last" / "state.json").read_text())
    assert state["epoch"] == 3
    monkeypatch.setattr(training, "_save_last", real)
    manifest = train_teacher(data_dir, tmp_path / "t", tiny(epochs=6))
    epochs = [h["epoch"] for h in manifest["training"]["history"]]
    assert epochs == [1, 2, 3, 4, 5, 6]  # 1-3 from the first run, 4-6 after resuming


def test_changed_config_does_not_resume(tmp_path, data_dir):
    work = work_dir_for(tmp_path / "t")
    work.mkdir(parents=True)
    (work / "config.json").write_text("{}")
    (work / "stale").write_text("x")
    manifest = train_teacher(data_dir, tmp_path / "t", tiny(epochs=2))
    assert manifest["training"]["epochs_run"] == 2


def test_early_stopping_keeps_best(tmp_path, data_dir):
    config = TeacherConfig(shape=TINY, train=TrainConfig(epochs=40, batch_size=16, lr=1e-2, patience=3))
    manifest = train_teacher(data_dir, tmp_path / "t", config)
    t = manifest["training"]
    valid = [h["valid_ndcg10"] for h in t["history"]]
    assert manifest["metrics"]["valid_ndcg10"] == pytest.approx(max(valid))
    if t["stopped"] == "early-stopping":
        assert t["epochs_run"] - t["best_epoch"] == 3


@pytest.mark.parametrize(
    "shape, message",
    [
        (Shape(hidden=10, heads=3), "not divisible"),
        (Shape(max_len=1), "max_len must be >= 2"),
    ],
)
def test_impossible_shapes(tmp_path, data_dir, shape, message):
    with pytest.raises(EdgerecError, match=message):
        train_teacher(data_dir, tmp_path / "t", TeacherConfig(shape=shape))
    assert not (tmp_path / "t").exists()


def test_not_a_data_artifact(tmp_path):
    with pytest.raises(EdgerecError, match="no such artifact"):
        train_teacher(tmp_path / "nope", tmp_path / "t", tiny())


def test_saved_model_loads_with_safetensors_only(tmp_path, data_dir):
    train_teacher(data_dir, tmp_path / "t", tiny(epochs=1))
    model = load_model(tmp_path / "t" / "model")
    assert model.kind == "causal" and model.max_len == TINY.max_len
    (tmp_path / "t" / "model" / "model.safetensors").unlink()
    with pytest.raises(EdgerecError, match="only safetensors"):
        load_model(tmp_path / "t" / "model")


def test_scores_ignore_padding_and_long_histories(tmp_path, data_dir):
    train_teacher(data_dir, tmp_path / "t", tiny(epochs=1))
    model = load_model(tmp_path / "t" / "model")
    long = list(range(1, 25)) * 3
    a = model.scores([long])
    b = model.scores([long[-TINY.max_len :]])
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert np.isneginf(a[0, 0]) and a.shape == (1, model.num_items + 1)


def _padded_and_packed(kind, positions="end"):
    """Three windows of different lengths, once left-padded one per row (what the model sees at
    inference) and once packed into shared rows."""
    import torch

    from edgerec.core.batches import pack, segment_positions

    windows = [[4, 5, 6], [1, 2, 3, 4, 5, 6, 7, 8], [9, 3], [2, 7, 7, 1]]
    length = TINY.max_len
    inputs = np.zeros((len(windows), length), np.int64)
    labels = np.full_like(inputs, -100)
    position_ids = np.zeros_like(inputs)
    segments = []
    for r, w in enumerate(windows):
        n = len(w)
        lab = np.array([(t * 7) % 29 + 1 for t in w])
        inputs[r, -n:], labels[r, -n:] = w, lab
        position_ids[r, -n:] = segment_positions(n, length, positions)
        segments.append(
            {"input_ids": np.array(w), "labels": lab, "position_ids": segment_positions(n, length, positions)}
        )
    padded = {
        "input_ids": torch.from_numpy(inputs),
        "labels": torch.from_numpy(labels),
        "position_ids": torch.from_numpy(position_ids),
    }
    return padded, pack(segments, length, causal=(kind == "causal"))


@pytest.mark.parametrize("kind,positions", [("causal", "end"), ("causal", "start"), ("masked", "end")])
def test_packed_batches_compute_what_padded_rows_compute(kind, positions):
    import torch

    from edgerec.core.models import build_id_model
    from edgerec.stages.teacher import _token_loss_module

    padded, packed = _padded_and_packed(kind, positions)
    assert packed["input_ids"].shape[0] < padded["input_ids"].shape[0]  # fewer rows than users
    assert int((packed["input_ids"] != 0).sum()) == int((padded["input_ids"] != 0).sum())
    torch.manual_seed(0)
    model = build_id_model(kind, 30, TINY).eval()
    loss = _token_loss_module(model)
    grads = []
    for batch in (padded, packed):
        model.zero_grad()
        value = loss(**batch)
        value.backward()
        grads.append((float(value.detach()), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    assert grads[1][0] == pytest.approx(grads[0][0], abs=1e-5)
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)


def test_packing_keeps_every_token_once_and_its_own_block():
    from edgerec.core.batches import pack

    segments = [
        {"input_ids": np.arange(1, n + 1), "labels": np.arange(1, n + 1), "position_ids": np.arange(n)}
        for n in (7, 5, 3, 2, 6)
    ]
    batch = pack(segments, 8, causal=True)
    ids, mask = batch["input_ids"].numpy(), batch["attention_mask"].numpy()
    assert ids.shape == (3, 8) and sorted(ids[ids > 0].tolist()) == sorted(
        np.concatenate([s["input_ids"] for s in segments]).tolist()
    )
    row = 1  # first fit decreasing: 7 | 6+2 | 5+3
    assert ids[row].tolist()[:8] == [1, 2, 3, 4, 5, 6, 1, 2]
    assert mask[row, 7].tolist() == [0, 0, 0, 0, 0, 0, 1, 1]  # sees its own block, causally
    assert mask[row, 2].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    assert pack(segments, 8, causal=False)["attention_mask"].numpy()[row, 2].tolist() == [1] * 6 + [0, 0]


def test_batches_cover_every_index_once():
    from edgerec.core.batches import batches_of

    batches = batches_of(np.arange(50), 8)
    assert np.concatenate(batches).tolist() == list(range(50))
    assert [len(b) for b in batches] == [8] * 6 + [2]


def test_warmup_ramps_the_learning_rate(tmp_path, data_dir, monkeypatch):
    import torch

    seen = []
    real_step = torch.optim.AdamW.step

    def spy(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    train_teacher(
        data_dir,
        tmp_path / "t",
        TeacherConfig(shape=TINY, train=TrainConfig(epochs=2, batch_size=16, lr=1e-2, warmup_steps=4)),
    )
    assert seen[:5] == pytest.approx([2.5e-3, 5e-3, 7.5e-3, 1e-2, 1e-2])


def test_bf16_training_learns_and_the_manifest_says_what_ran(tmp_path, data_dir):
    from edgerec.core.training import resolve_precision

    for precision, ran in (("bf16", "bf16"), ("fp32", "fp32"), ("auto", resolve_precision("auto"))):
        manifest = train_teacher(data_dir, tmp_path / precision, tiny(precision=precision))
        assert manifest["training"]["precision"] == ran
        # the planted pattern is learned in either precision (as in test_id_teacher_learns_the_pattern)
        assert manifest["metrics"]["test"]["NDCG@10"] > 0.35, (precision, manifest["metrics"]["test"])
    assert resolve_precision("auto") in ("bf16", "fp32")
    with pytest.raises(EdgerecError, match="precision must be one of"):
        TrainConfig(precision="fp16").validate()


def test_the_build_teacher_is_ten_times_the_default_student():
    """The demo must show what edgerec is for: a teacher far bigger than the model it ships
    (issue: the default build distilled a 0.9 MB teacher into a 0.7 MB student)."""
    from edgerec.core.distillation import STUDENT_SHAPE
    from edgerec.core.models import build_id_model
    from edgerec.stages.build import BuildConfig

    def params(shape):
        return sum(p.numel() for p in build_id_model("causal", 1684, shape).parameters())  # ML-100K's vocab

    assert params(TeacherConfig().shape) >= 10 * params(STUDENT_SHAPE)
    assert BuildConfig(target="arm64").precision == "auto"
