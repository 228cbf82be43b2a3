"""The text teacher (titles -> next item) and importing fine-tuned checkpoints, on tiny BERTs
with a real WordPiece tokenizer built in-process."""

import json

import pytest

from edgerec.data import load_data
from edgerec.errors import EdgerecError
from edgerec.models import Shape, load_model
from edgerec.teacher import TeacherConfig, import_teacher, train_teacher
from edgerec.training import TrainConfig


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
    config = transformers.BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=64,
                                     max_position_embeddings=64)
    transformers.BertModel(config).save_pretrained(path, safe_serialization=True)
    return path


def test_text_teacher_trains_and_scores_every_item(tmp_path, data_dir, base_dir):
    config = TeacherConfig(kind="text", text_max_tokens=48,
                           train=TrainConfig(epochs=3, batch_size=16, lr=5e-3, patience=5))
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
        base_dir, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={l: i for i, l in enumerate(labels)})
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


def test_import_says_which_items_do_not_match(tmp_path, data_dir, base_dir):
    data = load_data(data_dir)
    labels = data.item_ids()[:-2] + ["ghost-1", "ghost-2"]
    _classifier_checkpoint(tmp_path / "ckpt", base_dir, labels)
    with pytest.raises(EdgerecError) as err:
        import_teacher(tmp_path / "ckpt", data_dir, tmp_path / "t")
    message = str(err.value)
    assert "2 data item(s) absent from id2label" in message and data.item_ids()[-1] in message
    assert "ghost-1" in message
    assert not (tmp_path / "t").exists()


def test_import_id_checkpoint_with_items_txt(tmp_path, data_dir):
    data = load_data(data_dir)
    trained = tmp_path / "trained"
    shape = Shape(hidden=16, layers=1, heads=2, intermediate=32, max_len=12)
    train_teacher(data_dir, trained, TeacherConfig(kind="masked", shape=shape,
                                                   train=TrainConfig(epochs=2, batch_size=16)))
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
