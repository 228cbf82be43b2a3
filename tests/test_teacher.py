import json

import numpy as np
import pytest

from edgerec.errors import EdgerecError
from edgerec.evaluate import evaluate_artifact
from edgerec.models import Shape, load_model
from edgerec.teacher import TeacherConfig, train_teacher, work_dir_for
from edgerec.training import TrainConfig

TINY = Shape(hidden=16, layers=1, heads=2, intermediate=32, max_len=12, dropout=0.0,
             attention_dropout=0.0)


def tiny(kind="causal", epochs=25, **train):
    return TeacherConfig(kind=kind, shape=TINY,
                         train=TrainConfig(epochs=epochs, batch_size=16, lr=1e-2, patience=50, **train))


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
    import edgerec.training as training

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


@pytest.mark.parametrize("shape, message", [
    (Shape(hidden=10, heads=3), "not divisible"),
    (Shape(max_len=1), "max_len must be >= 2"),
])
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
    b = model.scores([long[-TINY.max_len:]])
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert np.isneginf(a[0, 0]) and a.shape == (1, model.num_items + 1)


def test_trimmed_batches_compute_what_full_padding_computes(data_dir):
    import torch

    from edgerec.models import build_id_model
    from edgerec.teacher import _token_loss_module, trim

    model = build_id_model("causal", 30, TINY).eval()
    inputs = np.zeros((2, TINY.max_len), np.int64)
    inputs[0, -3:] = [4, 5, 6]
    inputs[1, -5:] = [1, 2, 3, 4, 5]
    labels = np.where(inputs > 0, 7, -100)
    loss = _token_loss_module(model)
    full = {"input_ids": torch.from_numpy(inputs), "labels": torch.from_numpy(labels),
            "position_ids": torch.arange(TINY.max_len).repeat(2, 1)}
    short = trim(inputs, labels)
    assert short["input_ids"].shape == (2, 5) and short["position_ids"][0].tolist() == [7, 8, 9, 10, 11]
    with torch.no_grad():
        assert float(loss(**short)) == pytest.approx(float(loss(**full)), abs=1e-5)


def test_batches_cover_every_index_once():
    from edgerec.teacher import batches_of

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
    train_teacher(data_dir, tmp_path / "t", TeacherConfig(shape=TINY, train=TrainConfig(
        epochs=2, batch_size=16, lr=1e-2, warmup_steps=4)))
    assert seen[:5] == pytest.approx([2.5e-3, 5e-3, 7.5e-3, 1e-2, 1e-2])
