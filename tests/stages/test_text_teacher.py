"""The text teacher (titles -> next item) and importing fine-tuned checkpoints, on tiny BERTs
with a real WordPiece tokenizer built in-process."""

import json

import numpy as np
import pytest

from edgerec.core.errors import EdgerecError
from edgerec.core.interactions import load_data
from edgerec.core.models import Shape, load_model
from edgerec.core.training import TrainConfig
from edgerec.stages.teacher import TeacherConfig, import_teacher, train_teacher


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A tiny pre-trained-style BERT directory: config, safetensors weights, tokenizer."""
    import transformers

    path = tmp_path_factory.mktemp("base")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "movie", "space", "love", "story"]
    words += [str(i) for i in range(30)]
    (path / "vocab.txt").write_text("\n".join(words) + "\n")
    tokenizer = transformers.BertTokenizerFast(vocab_file=str(path / "vocab.txt"), do_lower_case=True)
    tokenizer.save_pretrained(path)
    config = transformers.BertConfig(
        vocab_size=len(words),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    transformers.BertModel(config).save_pretrained(path, safe_serialization=True)
    return path


def test_text_teacher_trains_and_scores_every_item(tmp_path, data_dir, base_dir):
    config = TeacherConfig(
        kind="text", text_max_tokens=48, train=TrainConfig(epochs=3, batch_size=16, lr=5e-3, patience=5)
    )
    manifest = train_teacher(data_dir, tmp_path / "t", config, base=base_dir)
    assert manifest["kind"] == "text" and manifest["metrics"]["test"]["NDCG@10"] > 0
    model = load_model(tmp_path / "t" / "model")
    data = load_data(data_dir)
    assert model.model.config.num_labels == data.num_items
    assert model.model.config.id2label[0] == data.items[0]["id"]
    scores = model.scores([[1, 2, 3]])
    assert scores.shape == (1, data.num_items + 1)
    text = model.tokenizer.decode(model.encode([[1, 2]])["input_ids"][0], skip_special_tokens=True)
    assert text.startswith(data.items[1]["title"].lower())  # most recent title first


def test_text_teacher_needs_a_base(tmp_path, data_dir):
    with pytest.raises(EdgerecError, match="needs --base"):
        train_teacher(data_dir, tmp_path / "t", TeacherConfig(kind="text"))
    with pytest.raises(EdgerecError, match="no config.json"):
        train_teacher(data_dir, tmp_path / "t", TeacherConfig(kind="text"), base=tmp_path)


def _classifier_checkpoint(path, base_dir, labels):
    import transformers

    model = transformers.BertForSequenceClassification.from_pretrained(
        base_dir,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    model.save_pretrained(path, safe_serialization=True)
    transformers.AutoTokenizer.from_pretrained(base_dir).save_pretrained(path)
    return model


def test_import_text_checkpoint_in_another_label_order(tmp_path, data_dir, base_dir):
    data = load_data(data_dir)
    labels = list(reversed(data.item_ids()))
    original = _classifier_checkpoint(tmp_path / "ckpt", base_dir, labels)
    manifest = import_teacher(tmp_path / "ckpt", data_dir, tmp_path / "t")
    assert manifest["kind"] == "text"
    model = load_model(tmp_path / "t" / "model")
    # the score of data item i is the checkpoint's logit for the label that names item i
    enc = model.encode([[1, 2, 3]])
    logits = original.eval()(**enc).logits.detach().numpy()[0]
    scores = model.scores([[1, 2, 3]])[0]
    item = 5
    assert scores[item] == pytest.approx(logits[labels.index(data.items[item - 1]["id"])], abs=1e-5)


def test_import_counts_items_that_do_not_match(tmp_path, data_dir, base_dir):
    """A text teacher reads titles, so it can score histories of items it has no label for:
    both kinds of mismatch are counted and explained in one line each, not refused."""
    data = load_data(data_dir)
    labels = data.item_ids()[:-2] + ["ghost-1", "ghost-2", "ghost-3"]
    _classifier_checkpoint(tmp_path / "ckpt", base_dir, labels)
    manifest = import_teacher(tmp_path / "ckpt", data_dir, tmp_path / "t")
    vocabulary = manifest["vocabulary"]
    assert vocabulary["data_items_unknown_to_checkpoint"] == 2
    assert vocabulary["checkpoint_entries_not_in_data"] == 3
    assert len(vocabulary["notes"]) == 2 and "ghost-1" in vocabulary["notes"][0]
    assert data.item_ids()[-1] in vocabulary["notes"][1] or data.item_ids()[-2] in vocabulary["notes"][1]
    model = load_model(tmp_path / "t" / "model")
    scores = model.scores([[1, 2, 3]])[0]
    assert np.isneginf(scores[-2:]).all() and np.isfinite(scores[1:-2]).all()


def test_import_refuses_a_teacher_of_another_catalogue(tmp_path, data_dir, base_dir):
    _classifier_checkpoint(tmp_path / "ckpt", base_dir, [f"other-{i}" for i in range(30)])
    with pytest.raises(EdgerecError, match="fine-tuned on this catalogue"):
        import_teacher(tmp_path / "ckpt", data_dir, tmp_path / "t")
    assert not (tmp_path / "t").exists()


def test_import_id_checkpoint_with_items_txt(tmp_path, data_dir):
    data = load_data(data_dir)
    trained = tmp_path / "trained"
    shape = Shape(hidden=16, layers=1, heads=2, intermediate=32, max_len=12)
    train_teacher(
        data_dir, trained, TeacherConfig(kind="masked", shape=shape, train=TrainConfig(epochs=2, batch_size=16))
    )
    # a user's own checkpoint: plain HF files plus items.txt
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    for name in ("config.json", "model.safetensors"):
        (ckpt / name).write_bytes((trained / "model" / name).read_bytes())
    tokens = ["[PAD]"] + data.item_ids() + ["[MASK]"]
    (ckpt / "items.txt").write_text("\n".join(tokens) + "\n")
    manifest = import_teacher(ckpt, data_dir, tmp_path / "t")
    before = json.loads((trained / "manifest.json").read_text())["metrics"]["test"]["NDCG@10"]
    assert manifest["kind"] == "masked"
    assert manifest["metrics"]["test"]["NDCG@10"] == pytest.approx(before, abs=1e-6)
    (ckpt / "items.txt").write_text("\n".join(tokens[:-1]) + "\n")
    with pytest.raises(EdgerecError, match="items.txt has"):
        import_teacher(ckpt, data_dir, tmp_path / "t2")


def test_import_refuses_pickles_and_other_models(tmp_path, data_dir):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertForMaskedLM"]}))
    (ckpt / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(EdgerecError, match="only safetensors"):
        import_teacher(ckpt, data_dir, tmp_path / "t")
    (ckpt / "model.safetensors").write_bytes(b"")
    (ckpt / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(EdgerecError, match="edgerec imports BERT"):
        import_teacher(ckpt, data_dir, tmp_path / "t")


@pytest.mark.parametrize("order", ["recent-first", "recent-last"])
def test_cached_encoding_is_what_the_tokenizer_returns(data_dir, base_dir, order):
    """TextEncoder builds ids from titles tokenized once; they must equal the tokenizer's own
    output for the rendered string, truncated on the oldest side."""
    import transformers

    from edgerec.core.text_input import TextEncoder, item_text, render_history

    data = load_data(data_dir)
    tokenizer = transformers.AutoTokenizer.from_pretrained(base_dir)
    titles = [""] + [item_text(e, genres=True) for e in data.items]
    render = {"order": order, "limit": 6}
    encoder = TextEncoder(tokenizer, titles, max_tokens=24, render=render)
    tokenizer.truncation_side = "right" if order == "recent-first" else "left"
    histories = [[1], [3, 2, 1], list(range(1, 12)), [5, 5, 7, 2, 9, 4, 3, 8]]
    for history in histories:
        expected = tokenizer(render_history(history, titles, render), truncation=True, max_length=24)
        ids = expected["input_ids"]
        if order == "recent-last" and len(ids) == 24:  # left truncation drops [CLS]: put it back
            ids = (
                [tokenizer.cls_token_id]
                + tokenizer(render_history(history, titles, render), add_special_tokens=False)["input_ids"][-22:]
                + [tokenizer.sep_token_id]
            )
        assert encoder.ids(history) == ids
    batch = encoder(histories)
    assert batch["input_ids"].shape[0] == len(histories)
    assert batch["attention_mask"].sum(1).tolist() == [len(encoder.ids(h)) for h in histories]
    newest = data.items[0]["title"].lower()  # item 1 is the most recent item of [3, 2, 1]
    text = tokenizer.decode(encoder.ids([3, 2, 1]), skip_special_tokens=True)
    assert (
        text.startswith(newest)
        if order == "recent-first"
        else text.rstrip().endswith(
            tokenizer.decode(tokenizer(item_text(data.items[0], genres=True), add_special_tokens=False)["input_ids"])
        )
    )


def test_text_teacher_options_reach_scoring(tmp_path, data_dir, base_dir):
    config = TeacherConfig(
        kind="text",
        text_max_tokens=32,
        text_order="recent-last",
        text_items=4,
        text_genres=True,
        text_examples_per_user=3,
        train=TrainConfig(epochs=1, batch_size=16, lr=5e-3),
    )
    manifest = train_teacher(data_dir, tmp_path / "t", config, base=base_dir)
    model = load_model(tmp_path / "t" / "model")
    assert model.meta["render"] == {"order": "recent-last", "limit": 4}
    from edgerec.core.text_input import item_text

    assert model.meta["titles"][1:] == [item_text(e, genres=True) for e in load_data(data_dir).items]
    assert item_text({"id": "7", "title": "Heat", "genres": ["Action", "Crime"]}, genres=True) == "Heat (Action, Crime)"
    assert item_text({"id": "7", "title": "Heat", "genres": ["Action"]}) == "Heat"
    assert model.text_encoder.render["order"] == "recent-last"
    assert manifest["config"]["text_examples_per_user"] == 3


@pytest.fixture(scope="module")
def text_teacher(tmp_path_factory, data_dir, base_dir):
    out = tmp_path_factory.mktemp("text") / "teacher"
    config = TeacherConfig(
        kind="text", text_max_tokens=40, text_examples_per_user=2, train=TrainConfig(epochs=2, batch_size=16, lr=5e-3)
    )
    train_teacher(data_dir, out, config, base=base_dir)
    return out


def test_text_teacher_exports_to_onnx_as_the_before_model(tmp_path, data_dir, text_teacher):
    """optimum's ONNX export of the text teacher, checked against PyTorch, with its tokenizer;
    marked as a reference, never as a device bundle."""
    from edgerec.stages.export import ExportConfig, export

    manifest = export(
        text_teacher, data_dir, tmp_path / "before", ExportConfig(target="x86_64-avx2"), log=lambda m: None
    )
    check = manifest["parity"]["onnxruntime"]
    assert check["top10_agreement"] == 1.0 and check["max_abs_diff"] < 1e-3
    meta = json.loads((tmp_path / "before" / "metadata.json").read_text())
    assert meta["kind"] == "text" and meta["reference_only"] is True
    assert {"model.onnx", "tokenizer.json", "edgerec.json", "items.json"} <= {
        p.name for p in (tmp_path / "before").iterdir()
    }
    from edgerec.core.files import read_bundle

    with pytest.raises(EdgerecError, match="not a device bundle"):  # quantize / validate refuse it in one line
        read_bundle(tmp_path / "before")


def test_validate_measures_a_text_teacher_in_onnx_runtime(tmp_path, data_dir, text_teacher, monkeypatch):
    from edgerec.stages.validate import _pytorch, _text_onnx

    monkeypatch.setenv("EDGEREC_CACHE", str(tmp_path / "cache"))
    data = load_data(data_dir)
    histories, targets = data.examples("test")
    reference = _pytorch(text_teacher, data, histories, targets, timed=5)
    assert reference["kind"] == "text"
    onnx = _text_onnx(text_teacher, data, histories, targets, reference, timed=5)
    assert onnx["metrics"]["NDCG@10"]["mean"] == pytest.approx(reference["metrics"]["NDCG@10"]["mean"], abs=1e-6)
    assert onnx["metrics"]["top10_agreement"]["mean"] == 1.0 and onnx["latency"]["runs"] == 5
    assert list((tmp_path / "cache" / "text-onnx").glob("*/model.onnx"))  # exported once, cached


def test_distil_an_id_student_from_a_text_teacher(tmp_path, data_dir, text_teacher, monkeypatch):
    from edgerec.core.distillation import DistillConfig
    from edgerec.stages.distill import distill

    monkeypatch.setenv("EDGEREC_CACHE", str(tmp_path / "cache"))
    shape = Shape(hidden=16, layers=1, heads=2, intermediate=32, max_len=12)
    manifest = distill(
        text_teacher,
        data_dir,
        tmp_path / "s",
        DistillConfig(student=shape, kd_positions=4, train=TrainConfig(epochs=2, batch_size=16)),
    )
    student = load_model(tmp_path / "s" / "model")
    assert student.kind == "causal" and manifest["metrics"]["test"]["NDCG@10"] > 0


def test_item_head_from_titles_ranks_by_text_and_popularity(tmp_path, data_dir, base_dir):
    """text_head_init="titles": before any training step, the head's rows are the base model's
    reading of each title and its bias the log training count (most popular item: highest)."""
    from edgerec.core.metrics import item_popularity

    config = TeacherConfig(
        kind="text", text_max_tokens=32, text_head_init="titles", train=TrainConfig(epochs=1, batch_size=16, lr=1e-9)
    )
    train_teacher(data_dir, tmp_path / "t", config, base=base_dir)
    model = load_model(tmp_path / "t" / "model").model
    data = load_data(data_dir)
    counts = item_popularity(data.train_sequences(), data.num_items)[1:]
    bias = model.classifier.bias.detach().numpy()
    assert int(np.argmax(bias)) == int(np.argmax(counts))
    rows = model.classifier.weight.detach().numpy()
    norms = np.linalg.norm(rows, axis=1)
    assert np.allclose(norms, norms[0], rtol=1e-3)  # normalised rows, one common scale


def test_cli_text_teacher_takes_the_text_defaults(tmp_path, data_dir, base_dir):
    """`teacher --kind text`: options left out take the text teacher's training defaults (not
    the id teacher's lr 1e-3), options given win; the rendering options reach the model."""
    from typer.testing import CliRunner

    from edgerec.cli import app
    from edgerec.stages.teacher import TEXT_TEACHER

    result = CliRunner().invoke(
        app,
        [
            "teacher",
            "--kind",
            "text",
            "--base",
            str(base_dir),
            "--data",
            str(data_dir),
            "--out",
            str(tmp_path / "t"),
            "--epochs",
            "1",
            "--text-max-tokens",
            "24",
            "--examples-per-user",
            "2",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    train = json.loads((tmp_path / "t" / "manifest.json").read_text())["config"]["train"]
    assert train["lr"] == TEXT_TEACHER.train.lr and train["epochs"] == 1
    assert train["weight_decay"] == TEXT_TEACHER.train.weight_decay
    assert load_model(tmp_path / "t" / "model").max_len == 24
