"""The recommender models (Hugging Face BERT) and the one way every stage scores them.

Three kinds of model, all transformers BERT classes:
- "causal": `BertLMHeadModel` with `is_decoder=True` over item-id tokens; the output at the last
  position scores the next item (SASRec-style).
- "masked": `BertForMaskedLM` over item-id tokens (BERT4Rec); the history gets a [MASK] appended and
  the output at that position scores the next item.
- "text": `BertForSequenceClassification` over the history rendered as item titles, one label per item.

Inputs are left-padded to `max_len`, so the model reads the answer from the last slot
(`max_len - 1`) for every history length. Absolute positions come in two conventions (`meta
["positions"]`): "end" (the default: position = slot, so the newest item is always at max_len - 1)
and "start" (counted from the first item of the window: a history of n items sits at 0..n-1,
whatever the padding). Only "start" lets an app cache each item's keys and values as it arrives
(edgerec.devices.incremental): under "end" every new item shifts the position of all the others.
A model directory (`model/` inside a teacher or student artifact) holds the HF checkpoint plus
`edgerec.json`; the scores a `RecModel` returns are over the *data's* item indices (column 0 =
padding), whatever token order an imported checkpoint uses.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgerec.core.artifacts import MANIFEST, verify_artifact
from edgerec.core.errors import EdgerecError
from edgerec.core.files import check_safetensors, load_safetensors, read_json
from edgerec.core.model_surgery import factorize_items
from edgerec.core.text_input import TextEncoder
from edgerec.core.training import autocast

KINDS = ("causal", "masked", "text")
POSITIONS = ("end", "start")
_ARCHITECTURES = {"causal": "BertLMHeadModel", "masked": "BertForMaskedLM", "text": "BertForSequenceClassification"}
META = "edgerec.json"


@dataclass(frozen=True)
class Shape:
    """Size of an id-based BERT recommender."""

    hidden: int = 64
    layers: int = 2
    heads: int = 2
    intermediate: int = 256
    max_len: int = 200
    dropout: float = 0.2
    attention_dropout: float = 0.2

    def validate(self) -> None:
        if min(self.hidden, self.layers, self.heads, self.intermediate) < 1:
            raise EdgerecError(f"model shape: sizes must be >= 1, got {self}")
        if self.hidden % self.heads:
            raise EdgerecError(f"model shape: hidden {self.hidden} is not divisible by heads {self.heads}")
        if self.max_len < 2:
            raise EdgerecError(f"model shape: max_len must be >= 2, got {self.max_len}")
        if not (0 <= self.dropout < 1 and 0 <= self.attention_dropout < 1):
            raise EdgerecError("model shape: dropout must be in [0, 1)")


def build_id_model(kind: str, vocab_size: int, shape: Shape):
    """A fresh id-based BERT (causal or masked) with the item table tied to the output layer."""
    import transformers

    shape.validate()
    if kind not in ("causal", "masked"):
        raise EdgerecError(f"unknown id-model kind '{kind}' (causal or masked)")
    config = transformers.BertConfig(
        vocab_size=vocab_size,
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.intermediate,
        max_position_embeddings=shape.max_len,
        type_vocab_size=1,
        pad_token_id=0,
        hidden_dropout_prob=shape.dropout,
        attention_probs_dropout_prob=shape.attention_dropout,
        is_decoder=(kind == "causal"),
        tie_word_embeddings=True,
        use_cache=False,
        # Eager attention converts to TFLite (litert-torch has no lowering for SDPA, #827) and to
        # ONNX with the same graph; at these sizes it is as fast on CPU.
        attn_implementation="eager",
    )
    cls = getattr(transformers, _ARCHITECTURES[kind])
    return cls(config)


def left_pad(histories, max_len: int, mask_token: int | None = None) -> np.ndarray:
    """[B, max_len] int64 input ids: the most recent items, padded on the left with 0.

    With `mask_token`, the last slot is the [MASK] the masked (BERT4Rec) model predicts at.
    """
    room = max_len - (1 if mask_token is not None else 0)
    out = np.zeros((len(histories), max_len), dtype=np.int64)
    for row, history in enumerate(histories):
        tail = np.asarray(history[-room:] if room > 0 else [], dtype=np.int64)
        end = room
        out[row, end - len(tail) : end] = tail
        if mask_token is not None:
            out[row, -1] = mask_token
    return out


class RecModel:
    """A loaded model: `scores(histories) -> [B, num_items + 1]` over the data's item indices."""

    def __init__(self, model, meta: dict[str, Any], tokenizer=None, directory: Path | None = None):
        self.model = model.eval()
        self.meta = meta
        self.kind = meta["kind"]
        self.max_len = int(meta["max_len"])
        self.num_items = int(meta["num_items"])
        self.tokenizer = tokenizer
        self.directory = directory
        # data index -> the checkpoint's own token / label index (identity for models we trained)
        self.token_of = np.asarray(meta.get("token_of_item") or self._identity(), dtype=np.int64)
        self.positions = meta.get("positions", "end")
        self.precision = "fp32"  # "bf16": scores() runs under bf16 autocast (a resolved precision)
        if self.positions not in POSITIONS:
            raise EdgerecError(f"unknown position convention {self.positions!r} ({' or '.join(POSITIONS)})")

    def _identity(self) -> list[int]:
        # id models: token i is data item i; text models: label j is data item j + 1
        if self.kind == "text":
            return [0] + list(range(self.num_items))
        return list(range(self.num_items + 1))

    @functools.cached_property
    def text_encoder(self) -> TextEncoder:
        return TextEncoder(self.tokenizer, self.meta["titles"], self.max_len, self.meta.get("render"))

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def encode(self, histories, trim: bool = False):
        """The model inputs for a batch of histories (data indices), as torch tensors.

        `trim`: pad only to the batch's longest history instead of max_len, with the position
        ids the full-width row would give (same scores; less work for short batches).
        """
        import torch

        if self.kind == "text":
            return self.text_encoder(histories)
        tokens = [self.token_of[np.asarray(h, dtype=np.int64)] for h in histories]
        mask_token = int(self.meta["mask_token"]) if self.kind == "masked" else None
        width = self.max_len
        if trim:
            extra = 1 if mask_token is not None else 0
            width = max(1, min(self.max_len, max((len(t) + extra for t in tokens), default=1)))
        ids = torch.from_numpy(left_pad(tokens, width, mask_token))
        inputs = {"input_ids": ids, "attention_mask": (ids != 0).long()}
        if self.positions == "start":
            inputs["position_ids"] = start_positions(ids)
        elif width < self.max_len:
            inputs["position_ids"] = torch.arange(self.max_len - width, self.max_len).repeat(len(ids), 1)
        return inputs

    def logits(self, inputs):
        """Raw logits over the checkpoint's own vocabulary at the answer position."""
        if self.kind == "text":
            return self.model(**inputs).logits
        return last_position_logits(
            self.model, inputs["input_ids"], inputs["attention_mask"], inputs.get("position_ids")
        )

    def scores(self, histories, batch_size: int = 32) -> np.ndarray:
        """Item scores [B, num_items + 1] (column 0, padding, is -inf), in the order given.

        Histories are scored shortest first, each batch padded to its own longest. Validating a
        2.1M-parameter teacher on MovieLens-100K's 943 users took 19.6 s in batches of 256
        padded to max_len, 10.7 s sorted, 6.2 s sorted in batches of 32 (AVX2 EPYC, 2 cores):
        small batches keep the [B, heads, L, L] attention tensors in cache and track length."""
        import torch

        order = np.argsort([len(h) for h in histories], kind="stable")
        out = np.empty((len(histories), self.num_items + 1), dtype=np.float32)
        with torch.inference_mode(), autocast(self.precision):
            for start in range(0, len(histories), batch_size):
                rows = order[start : start + batch_size]
                logits = self.logits(self.encode([histories[i] for i in rows], trim=True))
                out[rows] = self.to_item_scores(logits.float().numpy())
        return out

    def to_item_scores(self, logits: np.ndarray) -> np.ndarray:
        scores = np.empty((len(logits), self.num_items + 1), dtype=np.float32)
        scores[:, 0] = -np.inf
        scores[:, 1:] = logits[:, np.maximum(self.token_of[1:], 0)]
        scores[:, 1:][:, self.token_of[1:] < 0] = -np.inf  # items an imported teacher has no label for
        return scores


def start_positions(input_ids):
    """Position ids counted from the first item of each left-padded row (padding gets 0)."""
    import torch

    pad = (input_ids == 0).sum(dim=1, keepdim=True)
    # a Python int: exported graphs get a constant instead of a Shape/Gather/Range chain
    length = int(input_ids.shape[1])
    return (torch.arange(length, dtype=input_ids.dtype) - pad).clamp(min=0)


def last_position_logits(model, input_ids, attention_mask, position_ids=None):
    """Encode, then apply the output head at the last position only (the output layer is the
    largest matmul, and only one position is ever read)."""
    hidden = model.bert(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).last_hidden_state
    return model.cls(hidden[:, -1, :])


def last_position_hidden(model, input_ids, positions: str = "end", composed=None):
    """The encoder output at the last position only, computing no more than that needs.

    Every layer but the last runs as usual; the last layer computes its query, attention and FFN
    for the last position alone, attending over the whole history through `composed_attention`
    (`composed`: its result for the last layer, precomputed by a module being exported, since
    the tracers would record the float64 products). Only the last position is ever read, so this
    removes (max_len - 1) / max_len of the final layer's FFN and attention-output work: with one
    layer, most of the model. Written by hand because HF BERT has no "last token only" mode; the
    exported graph is parity-checked against the plain model.
    """
    import torch

    bert, embeddings = model.bert, model.bert.embeddings
    # Python ints, not traced shapes: the exported graph gets constant Reshape targets instead of
    # Shape/Gather/Concat chains, which cost more than the arithmetic at this size.
    length = int(input_ids.shape[1])
    width = int(embeddings.word_embeddings.embedding_dim)
    # HF's embeddings with absolute positions 0..length-1 and token type 0, as in training. The
    # position + token-type sum folds into one constant table, read with a lookup whose indices
    # depend on the input (min(ids, 0) + arange; ids >= 0) so that exporters keep it a Gather/EMBEDDING_LOOKUP:
    # int8 quantizers (ORT, ai-edge-quantizer) quantize a lookup table but not an Add's constant,
    # and a folded fp32 [L, H] constant would be a quarter of an int8 file.
    # The table is stored negated and subtracted: ONNX Runtime fuses Add + LayerNormalization into
    # SkipLayerNormalization, whose CPU kernel took 2x the whole model's time on this [L, H] input
    # (0.079 vs 0.037 ms p50 at batch 1, ORT 1.32); a Sub does not match that fusion. Exact.
    negated = -(embeddings.position_embeddings.weight[:length] + embeddings.token_type_embeddings.weight[0])
    if positions == "start":
        position_ids = start_positions(input_ids)
    else:
        position_ids = input_ids.clamp(max=0) + torch.arange(length, dtype=input_ids.dtype)
    hidden = embeddings.LayerNorm(
        embeddings.word_embeddings(input_ids) - torch.nn.functional.embedding(position_ids, negated)
    )
    # The last query sees every non-padding position (causal or not), so its mask is the padding
    # mask alone; HF's full [L, L] causal mask is only built when earlier layers need it.
    blocked = (input_ids == 0).to(hidden.dtype)[:, None, None, :] * torch.finfo(hidden.dtype).min
    *early, last = bert.encoder.layer
    if early:  # HF's extended mask: causal for decoders, the padding mask otherwise
        if bert.config.is_decoder:
            # HF's causal mask compares two aranges, which exporters fold into an [L, L] constant
            # (160 KB of int32 at L = 200 in a TFLite file, 27% of a 2-layer ML-1M student's);
            # positions derived from the input (as above) keep it a run-time comparison. Same values.
            order = input_ids.clamp(max=0) + torch.arange(length, dtype=input_ids.dtype)  # [B, L]
            seen = (order[:, None, :] <= order[:, :, None]) & (input_ids != 0)[:, None, :]
            mask = (1.0 - seen.to(hidden.dtype))[:, None] * torch.finfo(hidden.dtype).min
        else:
            mask = bert.get_extended_attention_mask((input_ids != 0).long(), input_ids.shape)
        for layer in early:
            hidden = layer(hidden, attention_mask=mask)[0]
    now = torch.narrow(hidden, 1, length - 1, 1).reshape(-1, width)  # [B, H]
    heads = last.attention.self.num_attention_heads
    a, c, bm, b = composed if composed is not None else composed_attention(last)
    query = torch.nn.functional.linear(now, a, c).view(-1, heads, width)
    weights = torch.softmax(query @ hidden.transpose(1, 2) + blocked.view(-1, 1, length), dim=-1)
    mixed = (weights @ hidden).view(-1, heads * width)
    attended = last.attention.output.LayerNorm(torch.nn.functional.linear(mixed, bm, b) + now)
    return last.output(last.intermediate(attended), attended)


def composed_attention(layer):
    """One BERT layer's attention for a single query row x [B, H] against the layer's inputs X
    [B, n, H] at every position it may see, as two matrices, with the key and value projections
    absorbed (the history is never projected: O(n * H * heads) instead of O(n * H^2)):
        scores_h = x A_h + c_h  .  X^T          A_h = Wq_h^T Wk_h / sqrt(size), c_h = bq_h Wk_h / sqrt(size)
        output   = sum_h softmax(scores_h) X Bm_h + b    Bm_h = Wv_h^T Wo_h^T, b = bv Wo^T + bo
    (the query's bias on the keys is the same for every slot and cancels in the softmax; the
    softmax weights sum to 1, so the value bias passes through). Returns float32 tensors
    A^T [heads*H, H], c [heads*H], Bm^T [H, heads*H], b [H], computed in float64. With
    heads*size = H and 2 heads they hold as many numbers as Wq, Wk, Wv, Wo; a query row costs two
    matrix products where the plain layer runs four plus the per-head reshapes. Exact up to float
    rounding; every export is parity-checked against the plain HF forward."""
    import math

    import torch

    att, out = layer.attention.self, layer.attention.output.dense
    heads, size = att.num_attention_heads, att.attention_head_size
    width = out.out_features
    f64 = {"dtype": torch.float64}
    wq = att.query.weight.detach().to(**f64).reshape(heads, size, width)
    bq = att.query.bias.detach().to(**f64).reshape(heads, size)
    wk = att.key.weight.detach().to(**f64).reshape(heads, size, width)
    wv = att.value.weight.detach().to(**f64).reshape(heads, size, width)
    wo = out.weight.detach().to(**f64).reshape(width, heads, size)
    a = torch.einsum("hsi,hsj->hji", wq, wk).reshape(heads * width, width) / math.sqrt(size)
    c = torch.einsum("hs,hsj->hj", bq, wk).reshape(heads * width) / math.sqrt(size)
    bm = torch.einsum("hsi,jhs->jhi", wv, wo).reshape(width, heads * width)
    b = out.weight.detach().to(**f64) @ att.value.bias.detach().to(**f64) + out.bias.detach().to(**f64)
    return [t.float().contiguous() for t in (a, c, bm, b)]


# How a text teacher reads a history, kept in its edgerec.json ("render") so that scoring renders
# exactly as training did. Imported checkpoints without it get these defaults.
def save_model(directory: Path, model, meta: dict[str, Any], tokenizer=None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    (directory / META).write_text(json.dumps(meta, indent=1) + "\n")


def load_model(directory: Path) -> RecModel:
    """Load a model directory (safetensors only, never remote code)."""
    import transformers

    directory = Path(directory)
    if directory.is_file():
        raise EdgerecError(f"{directory}: is a file, expected a model artifact directory")
    meta_path = directory / META
    if not meta_path.is_file():
        raise EdgerecError(f"{directory}: not an edgerec model (no {META})")
    if not (directory / "model.safetensors").is_file():
        raise EdgerecError(f"{directory}: no model.safetensors (only safetensors weights are loaded)")
    if directory.name == "model" and (directory.parent / MANIFEST).is_file():
        verify_artifact(directory.parent, under="model")  # the files its stage wrote, unchanged
    meta = read_json(meta_path, "a model's metadata")
    kind = meta.get("kind") if isinstance(meta, dict) else None
    if kind not in KINDS:
        raise EdgerecError(f"{meta_path}: unknown model kind {kind!r}")
    check_safetensors(directory / "model.safetensors")
    read_json(directory / "config.json", "a model's config")
    cls = getattr(transformers, _ARCHITECTURES[kind])
    try:
        if meta.get("item_rank"):  # factorised item table: build the structure, then load strictly
            config = transformers.AutoConfig.from_pretrained(directory, trust_remote_code=False)
            config._attn_implementation = "eager"
            model = cls(config)
            factorize_items(model, int(meta["item_rank"]), init="random")
            model.load_state_dict(load_safetensors(directory / "model.safetensors"), strict=True)
        else:
            model = cls.from_pretrained(
                directory, use_safetensors=True, trust_remote_code=False, attn_implementation="eager"
            )
        tokenizer = None
        if kind == "text":
            tokenizer = transformers.AutoTokenizer.from_pretrained(directory, trust_remote_code=False)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        # transformers' own errors for a config or tokenizer it cannot use, a shape mismatch
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise EdgerecError(f"{directory}: cannot load the model ({first})") from None
    return RecModel(model, meta, tokenizer, directory)
