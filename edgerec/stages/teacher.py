"""`edgerec teacher`: train a BERT teacher over item ids, fine-tune a text teacher, or import one.

Id teachers: "causal" (next-item loss at every position, SASRec-style, full softmax over the
catalogue) or "masked" (BERT4Rec cloze loss). The text teacher is `BertForSequenceClassification`
fine-tuned from a local pre-trained BERT directory, reading the history as item titles.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgerec.core.artifacts import atomic_artifact, check_output, write_json, writes_output
from edgerec.core.batches import causal_batches, masked_batches, validator
from edgerec.core.errors import EdgerecError
from edgerec.core.evaluation import evaluate, headline, item_ids_hash, public
from edgerec.core.files import check_safetensors, read_json
from edgerec.core.interactions import load_data
from edgerec.core.losses import chunked_rows
from edgerec.core.models import RecModel, Shape, build_id_model, save_model
from edgerec.core.text_teacher import init_item_head, item_titles, text_model, text_training
from edgerec.core.training import TrainConfig, fit, prepare_work_dir, resolve_precision, setup_distributed, work_dir_for

# The default teacher is what a team brings to edgerec: a BERT recommender far bigger than the
# device can take. 2.1M parameters on MovieLens-100K (hidden 256, 2 layers, 4 heads, FFN 1024),
# 12x the default student; `edgerec build` trains it when given no teacher. A post-LN BERT this
# wide stays on the popularity plateau at lr 1e-3 unless the learning rate warms up (45 steps,
# 3 epochs of MovieLens-100K at batch 64). At dropout 0.2 it peaked early and overfit (test
# NDCG@10 0.084 on movielens-100k); hidden dropout 0.5 with AdamW weight decay 0.5 reached
# 0.098 (fp32) / 0.096 (bf16), best epoch 22 of 37. Dropout 0.5 alone gave 0.090, decay 1.0
# 0.090, replacing 10% of input items by the mask token 0.083, a deeper hidden-192 x 4 was still
# on the plateau after 17 epochs (benchmarks/teacher_recipe.py and the issue notes).
TEACHER_SHAPE = Shape(hidden=256, layers=2, heads=4, intermediate=1024, dropout=0.5, attention_dropout=0.2)
TEACHER_TRAIN = TrainConfig(warmup_steps=45, patience=15, weight_decay=0.5)
# The 227K-parameter teacher `edgerec build` trained before (test NDCG@10 0.093-0.095): kept for
# the benchmarks that compare with it.
QUICK_TEACHER_SHAPE = Shape()


@dataclass(frozen=True)
class TeacherConfig:
    kind: str = "causal"  # measured better than "masked" on movielens-100k: benchmarks/results/teacher.json
    shape: Shape = field(default_factory=lambda: TEACHER_SHAPE)
    train: TrainConfig = field(default_factory=lambda: TEACHER_TRAIN)
    mask_prob: float = 0.2  # masked kind: share of positions hidden per sequence
    text_max_tokens: int = 128  # text kind: tokens read from the rendered history
    text_order: str = "recent-first"  # text kind: where the most recent item's title goes
    text_items: int = 20  # text kind: the most recent items rendered (then cut at text_max_tokens)
    text_genres: bool = False  # text kind: each title followed by its genres
    # text kind: training examples (a random prefix -> the item after it) per user and epoch
    text_examples_per_user: int = 1
    # text kind: the new item head starts "random" (transformers' init) or from "titles": each
    # item's row is the pre-trained model's own (centred, normalised) reading of its title and its
    # bias the log of its training count, so the first step already ranks by text similarity
    # and popularity instead of by noise
    text_head_init: str = "titles"


# The text teacher's defaults (`teacher --kind text`): a pre-trained language BERT fine-tuned with
# a new item head, reading the most recent titles first (64 tokens: about 8 titles). On
# movielens-100k with all-MiniLM-L6-v2, 4 epochs (benchmarks/text_render.py, validation NDCG@10):
# the head started from the titles 0.054 vs 0.043 from transformers' random init; lr 5e-4 was
# unstable (0.036 after 3 epochs).
TEXT_TEACHER = TeacherConfig(
    kind="text",
    text_max_tokens=64,
    text_examples_per_user=4,
    text_head_init="titles",
    train=TrainConfig(
        epochs=12, batch_size=32, lr=2e-4, weight_decay=0.01, warmup_steps=100, patience=3, precision="auto"
    ),
)


# --------------------------------------------------------------------------- batches and losses


def _token_loss_module(model):
    """Cross-entropy at the labelled positions only: the output layer runs where a label is."""
    import torch

    class TokenLoss(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, labels, position_ids, attention_mask=None):
            if attention_mask is None:  # left-padded rows; packed batches bring their own mask
                attention_mask = (input_ids != 0).long()
            hidden = self.model.bert(
                input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask
            ).last_hidden_state
            keep = labels != -100
            targets = labels[keep]
            # summed per block of positions so the [positions, items] logits never exist whole
            total = chunked_rows(block_loss, hidden[keep], targets, num_items=self.model.config.vocab_size)
            return total / max(1, targets.shape[0])

    def block_loss(hidden, targets):
        return torch.nn.functional.cross_entropy(model.cls(hidden), targets, reduction="sum")

    return TokenLoss()


# --------------------------------------------------------------------------- training


def _text_setup(data, train_seqs, meta: dict, config: TeacherConfig, base: Path):
    """A text teacher: the local BERT with an item head, over rendered histories."""
    if config.text_examples_per_user < 1 or config.text_items < 1 or config.text_max_tokens < 8:
        raise EdgerecError("text teacher: examples per user and items must be >= 1, tokens >= 8")
    if config.text_head_init not in ("titles", "random"):
        raise EdgerecError(f"unknown text head init {config.text_head_init!r} (titles or random)")
    model, tokenizer = text_model(base, data)
    meta.update(
        max_len=config.text_max_tokens,
        titles=item_titles(data, config.text_genres),
        render={"order": config.text_order, "limit": config.text_items},
    )
    usable = [s for s in train_seqs if len(s) >= 2]
    if config.text_head_init == "titles":
        init_item_head(model, tokenizer, meta, usable, data.num_items)
    loss_module, batches = text_training(model, tokenizer, usable, meta, config)
    return model, tokenizer, loss_module, batches, usable


def _id_setup(data, train_seqs, meta: dict, config: TeacherConfig, base):
    """An id teacher (causal or masked) of `config.shape`, trained from scratch."""
    model = build_id_model(config.kind, data.vocab_size, config.shape)
    meta["max_len"] = config.shape.max_len
    if config.kind == "causal":
        usable = [s for s in train_seqs if len(s) >= 2]
        batches = causal_batches(usable, config.shape.max_len, config.train.batch_size)
    else:
        usable = [s for s in train_seqs if len(s) >= 1]
        batches = masked_batches(
            usable, config.shape.max_len, config.train.batch_size, data.mask_token, config.mask_prob
        )
    return model, None, _token_loss_module(model), batches, usable


@writes_output
def train_teacher(
    data_dir: Path,
    out_dir: Path,
    config: TeacherConfig = TeacherConfig(),
    *,
    base: Path | None = None,
    overwrite: bool = False,
) -> dict | None:
    """Train (id kinds) or fine-tune (text kind, `base` = local pre-trained BERT) a teacher.

    Runs under torchrun / accelerate launch; returns the manifest on rank 0, None elsewhere.
    """
    import torch

    config.shape.validate()
    config.train.validate()
    check_output(out_dir, "teacher", overwrite)
    data = load_data(data_dir)
    train_seqs = data.train_sequences()
    if config.kind == "text" and base is None:
        raise EdgerecError("the text teacher needs --base PATH (a local pre-trained BERT directory)")
    if config.kind != "text" and base is not None:
        raise EdgerecError("--base is for the text teacher (--kind text)")
    dist = setup_distributed()
    torch.manual_seed(config.train.seed)
    meta = {
        "kind": config.kind,
        "num_items": data.num_items,
        "mask_token": data.mask_token,
        "item_ids_sha256": item_ids_hash(data.item_ids()),
    }
    setup = _text_setup if config.kind == "text" else _id_setup
    model, tokenizer, loss_module, batches, usable = setup(data, train_seqs, meta, config, base)
    if not usable:
        raise EdgerecError(f"{data_dir}: the training split is empty (every history is too short)")
    model.to(dist.device)
    work = prepare_work_dir(
        out_dir, {"config": asdict(config), "data": str(data_dir), "base": str(base), "world": dist.world}, dist
    )
    examples = len(usable) * (config.text_examples_per_user if config.kind == "text" else 1)
    precision = resolve_precision(config.train.precision, dist.device) if config.kind == "text" else "fp32"
    result = fit(
        model,
        loss_module,
        batches,
        examples,
        validator(data, meta, tokenizer, precision),
        config.train,
        work,
        dist,
        desc=f"teacher ({config.kind})",
    )
    if not dist.is_main:
        return None
    return _write_teacher(out_dir, data, model, meta, tokenizer, config, result, base, overwrite)


def _write_teacher(out_dir, data, model, meta, tokenizer, config, result, base, overwrite):
    model.cpu()
    rec = RecModel(model, meta, tokenizer)
    started = time.perf_counter()
    test = evaluate(rec, data, "test")
    with atomic_artifact(out_dir, "teacher", config=config, inputs={"data": data.path}, overwrite=overwrite) as (
        tmp,
        manifest,
    ):
        save_model(tmp / "model", model, meta, tokenizer)
        shutil.copy(data.path / "items.json", tmp / "items.json")
        write_json(tmp / "test_report.json", public(test))
        manifest.update(
            kind=config.kind,
            base=str(base) if base else None,
            parameters=rec.num_parameters,
            metrics={"valid_ndcg10": result.best_metric, "test": headline(test)},
            training={
                "epochs_run": result.epochs_run,
                "best_epoch": result.best_epoch,
                "stopped": result.stopped,
                "seconds": round(result.seconds, 1),
                "precision": result.precision,
                "eval_seconds": round(time.perf_counter() - started, 1),
                "history": result.history,
            },
        )
    shutil.rmtree(work_dir_for(out_dir), ignore_errors=True)
    return manifest


# --------------------------------------------------------------------------- import


def _checkpoint_config(path: Path) -> tuple[dict, str, str]:
    """A fine-tuned BERT checkpoint's config, checked: (config, architecture, edgerec kind)."""
    if path.is_file():
        raise EdgerecError(f"{path}: is a file, expected a Hugging Face model directory")
    if not path.is_dir():
        raise EdgerecError(f"{path}: no such checkpoint directory")
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise EdgerecError(f"{path}: not a Hugging Face model directory (no config.json)")
    if not (path / "model.safetensors").is_file():
        raise EdgerecError(f"{path}: no model.safetensors (only safetensors weights are loaded)")
    raw = read_json(cfg_path, "a Hugging Face config")
    if not isinstance(raw, dict):
        raise EdgerecError(f"{cfg_path}: not a Hugging Face config (a JSON object)")
    if raw.get("model_type") != "bert":
        raise EdgerecError(f"{path}: model_type is {raw.get('model_type')!r}; edgerec imports BERT")
    check_safetensors(path / "model.safetensors")
    arch = (raw.get("architectures") or [""])[0]
    kinds = {"BertForSequenceClassification": "text", "BertForMaskedLM": "masked", "BertLMHeadModel": "causal"}
    if arch not in kinds:
        raise EdgerecError(f"{path}: architecture {arch!r} is not one of {', '.join(kinds)}")
    return raw, arch, kinds[arch]


def _aligned_meta(path: Path, raw: dict, kind: str, data, text: TeacherConfig | None) -> tuple[dict, dict]:
    """The imported model's edgerec metadata, its tokens aligned with the data's items:
    (meta, the alignment's vocabulary report)."""
    if kind == "text":
        labels = [str(raw.get("id2label", {}).get(str(j), "")) for j in range(len(raw.get("id2label", {})))]
        # a text teacher reads titles, so it can read items it has no label for: mismatches are
        # counted and explained, not refused (an id model cannot even encode an unknown item)
        token_of, vocabulary = _align(labels, data, path, offset=0, what="id2label", partial=True)
        known = sum(1 for t in token_of[1:] if t >= 0)
        if 2 * known < data.num_items:
            raise EdgerecError(
                f"{path}: only {known} of the data's {data.num_items} items are labels of "
                "this checkpoint: is it fine-tuned on this catalogue?"
            )
        reading = text or TeacherConfig(kind="text", text_max_tokens=128)
        max_len = min(int(raw.get("max_position_embeddings", 512)), reading.text_max_tokens)
    else:
        tokens = _read_token_vocab(path)
        if len(tokens) != raw.get("vocab_size"):
            raise EdgerecError(
                f"{path}: items.txt has {len(tokens)} tokens, config vocab_size is {raw.get('vocab_size')}"
            )
        token_of, vocabulary = _align(tokens, data, path, offset=0, what="items.txt")
        max_len = int(raw["max_position_embeddings"])
    meta = {
        "kind": kind,
        "num_items": data.num_items,
        "max_len": max_len,
        "item_ids_sha256": item_ids_hash(data.item_ids()),
        "token_of_item": token_of,
    }
    if kind == "text":
        meta["titles"] = item_titles(data, reading.text_genres)
        meta["render"] = {"order": reading.text_order, "limit": reading.text_items}
    else:
        meta["mask_token"] = tokens.index("[MASK]") if "[MASK]" in tokens else None
        if kind == "masked" and meta["mask_token"] is None:
            raise EdgerecError(f"{path}: a masked (BERT4Rec) model needs a [MASK] token in items.txt")
    return meta, vocabulary


@writes_output
def import_teacher(
    path: Path, data_dir: Path, out_dir: Path, *, overwrite: bool = False, text: TeacherConfig | None = None
) -> dict:
    """Adopt an existing fine-tuned checkpoint, aligning its vocabulary with the data's items.

    A text checkpoint reads the history as it was fine-tuned to: `text`'s text_max_tokens,
    text_items, text_order and text_genres (default: 128 tokens, the 20 most recent titles first,
    no genres)."""
    import transformers

    path = Path(path)
    check_output(out_dir, "teacher", overwrite)
    raw, arch, kind = _checkpoint_config(path)
    data = load_data(data_dir)
    meta, vocabulary = _aligned_meta(path, raw, kind, data, text)
    cls = getattr(transformers, arch)
    try:
        model = cls.from_pretrained(path, use_safetensors=True, trust_remote_code=False, attn_implementation="eager")
        tokenizer = (
            transformers.AutoTokenizer.from_pretrained(path, trust_remote_code=False) if kind == "text" else None
        )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:  # transformers' load errors
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise EdgerecError(f"{path}: cannot load the checkpoint ({first})") from None
    rec = RecModel(model, meta, tokenizer)
    test = evaluate(rec, data, "test")
    with atomic_artifact(
        out_dir, "teacher", config={"imported": str(path)}, inputs={"data": data.path}, overwrite=overwrite
    ) as (tmp, manifest):
        save_model(tmp / "model", model, meta, tokenizer)
        shutil.copy(data.path / "items.json", tmp / "items.json")
        write_json(tmp / "test_report.json", public(test))
        manifest.update(
            kind=kind,
            imported_from=str(path),
            parameters=rec.num_parameters,
            metrics={"test": headline(test)},
            vocabulary=vocabulary,
        )
    return manifest


def _read_token_vocab(path: Path) -> list[str]:
    """An id model's token vocabulary: items.txt, one token per line (line n = token n);
    [PAD] and [MASK] name the special tokens."""
    vocab = path / "items.txt"
    if not vocab.is_file():
        raise EdgerecError(
            f"{path}: an id-based checkpoint needs items.txt (one item id per line, "
            "line n = token n, with [PAD] and [MASK] for the special tokens)"
        )
    return [line.strip() for line in vocab.read_text().splitlines()]


def _align(names: list[str], data, path: Path, offset: int, what: str, partial: bool = False) -> tuple[list[int], dict]:
    """For each data item index, the checkpoint's token/label index; say exactly what differs.

    `partial`: a data item the checkpoint lacks maps to -1 (scored last) and a checkpoint entry
    the data lacks is ignored; both are counted and explained in one line each. Otherwise any
    mismatch is an error."""
    position = {name: i + offset for i, name in enumerate(names)}
    data_ids = data.item_ids()
    missing = [i for i in data_ids if i not in position]
    special = {"[PAD]", "[MASK]", ""}
    extra = sorted(set(names) - set(data_ids) - special)
    vocabulary = {
        "data_items": len(data_ids),
        "checkpoint_entries": len(set(names) - special),
        "data_items_unknown_to_checkpoint": len(missing),
        "checkpoint_entries_not_in_data": len(extra),
        "notes": [],
    }
    if partial:
        if extra:
            vocabulary["notes"].append(
                f"{len(extra)} of the teacher's {what} entries are not items of {data.path} (e.g. "
                f"{', '.join(extra[:3])}): ignored, so neither the teacher's scores nor the student "
                "ever name them"
            )
        if missing:
            vocabulary["notes"].append(
                f"{len(missing)} items of {data.path} have no {what} entry in the teacher (e.g. "
                f"{', '.join(missing[:3])}): the teacher ranks them last and gives them no soft "
                "target, so the student learns them from the ground truth alone"
            )
        return [position.get("[PAD]", 0)] + [position.get(i, -1) for i in data_ids], vocabulary
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} data item(s) absent from {what} (e.g. {', '.join(missing[:5])})")
        if extra:
            parts.append(f"{len(extra)} {what} entr(ies) not in the data (e.g. {', '.join(extra[:5])})")
        raise EdgerecError(f"{path}: vocabulary does not match {data.path}: {'; '.join(parts)}")
    pad = position.get("[PAD]", 0)
    return [pad] + [position[i] for i in data_ids], vocabulary
