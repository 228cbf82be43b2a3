"""The torch modules edgerec exports: the full scoring graph, the incremental step graph and
the in-graph top-K both can end in. `writers` turns them into ONNX and TFLite files.

The full graph is the app's whole job: `input_ids` [batch, max_len] (the most recent items,
left-padded with 0) -> `scores` [batch, num_items] (column j = item index j + 1), or with
`top_k`, `items` and `scores` of the K best unseen items. A masked (BERT4Rec) model appends its
[MASK] inside the graph, so every bundle has the same interface.

Formulation choices that decide which ops appear (design.md):
- the last position is taken with `torch.narrow` (a SLICE), never `h[:, -1]`, which became a
  GATHER_ND version that tflite-runtime 2.14 lacks, and the final layer computes only that
  position (`models.last_position_hidden`);
- attention is HF's eager implementation (litert-torch has no lowering for SDPA, #827), and the
  last layer's (every layer's, in the step graph) is folded into two precomputed matrices
  (`models.composed_attention`);
- TFLite is converted with a fixed batch of 1 and fixed length (dynamic dims are fragile there).

Two further entry points an app may ask for at export (`entries`):
- rules (`rules.<fmt>`): the top-K graph with two more inputs per call, `allowed` uint8
  [batch, num_items] (1 = may be recommended: in stock, in the region, in the category shown)
  and `boost` float32 [batch, num_items] added to the scores first; the K best allowed unseen
  items come back, fewer only when fewer are allowed (the rest of the row empty, as below);
- rerank (`rerank.<fmt>`): `input_ids` and `candidates` int [batch, C] (items.json indices, 0 =
  an empty slot) -> `scores` float32 [batch, C], the full model's scores of those items alone
  (-inf for an empty slot). Its cost does not grow with the catalogue: C rows of the output
  layer are read instead of all of them (the server retrieves, the phone reranks).

The step graph (`step.onnx` / `step.tflite`; what an app does with it is `incremental`'s docstring):

    inputs   item      [batch]          the new item (items.json index)
             position  [batch]          its slot in the window: 0 for the first item, then 1, 2...
             state     [batch, L, n, d] every layer's input at every slot (zeros to start)
             history   [batch, n]       (top-K graphs only) the items in the window, 0 = empty
    outputs  scores    [batch, items]   as the full model's `scores` (or items, scores: top-K)
             next_state, next_history   fed back as `state` / `history` on the next call

L = layers, n = the window (max_len), d = the hidden size. TFLite names outputs output_0,
output_1, ... in the order above. Written by hand: no exporter in the stack (optimum,
litert-torch) makes a cached step graph for a BERT encoder, and HF's cache classes trace to
dynamic shapes that TFLite and tflite-runtime 2.14 cannot run.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass

from edgerec.core.errors import EdgerecError
from edgerec.core.models import composed_attention, last_position_hidden


def _encoder(rec):
    """The module the exported graphs share: `tokens(input_ids)` (the data's indices in the
    checkpoint's token order) and `hidden(input_ids)`, the last position's encoder output."""
    import torch

    kind, max_len = rec.kind, rec.max_len
    token_of = torch.as_tensor(rec.token_of, dtype=torch.long)
    identity = bool((token_of == torch.arange(len(token_of))).all())
    mask_token = int(rec.meta.get("mask_token") or 0)

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = rec.model
            self.identity = identity
            self.register_buffer("token_of", token_of, persistent=False)
            for name, value in zip(("a", "c", "bm", "b"), composed_attention(rec.model.bert.encoder.layer[-1])):
                self.register_buffer(name, value)

        def tokens(self, ids):
            return ids if self.identity else self.token_of[ids]  # an imported checkpoint's own order

        def hidden(self, input_ids):
            ids = self.tokens(input_ids.long())
            if kind == "masked":
                ids = torch.cat(
                    [torch.narrow(ids, 1, 1, max_len - 1), torch.full_like(torch.narrow(ids, 1, 0, 1), mask_token)],
                    dim=1,
                )
            return last_position_hidden(self.model, ids, rec.positions, (self.a, self.c, self.bm, self.b))

    return Encoder


def scoring_graph(rec, top_k: int | None = None, rules: bool = False):
    """The torch module that is exported: ids -> item scores (or top-K items and scores). With
    `rules` (top-K only), it also takes `allowed` and `boost` (the module docstring)."""
    import torch

    if rules and top_k is None:
        raise EdgerecError("business rules need the in-graph top-K: export with --top-k")
    n = rec.num_items

    class ScoringGraph(_encoder(rec)):
        def forward(self, input_ids, allowed=None, boost=None):
            logits = self.model.cls(self.hidden(input_ids))
            scores = torch.narrow(logits, 1, 1, n) if self.identity else logits[:, self.token_of[1:]]
            if top_k is None:
                return scores
            return top_k_unseen(scores, input_ids.long(), top_k, allowed, boost)

    return ScoringGraph().eval()


def rerank_graph(rec):
    """The rerank entry (the module docstring): (input_ids, candidates) -> scores [B, C].

    The output layer's rows for the candidates are looked up (an EMBEDDING_LOOKUP / Gather, which
    every runtime here has) and dotted with the transformed hidden state, so a call costs O(C H)
    there instead of O(items H). Written by hand: HF's LM head has no "these columns only" mode.
    Same scores as the full graph's columns (parity-checked at export)."""
    import torch

    predictions = rec.model.cls.predictions
    factorized = getattr(predictions.decoder, "_shared", None)  # model_surgery.FactorizedDecoder

    class RerankGraph(_encoder(rec)):
        def forward(self, input_ids, candidates):
            candidates = candidates.long()
            tokens = self.tokens(candidates)
            t = predictions.transform(self.hidden(input_ids))  # [B, H]
            if factorized:  # h . (A W^T)_i = (h W) . A_i
                items, bias = factorized
                t, rows = t @ items.project.weight, items.items(tokens)
            else:
                rows, bias = torch.nn.functional.embedding(tokens, predictions.decoder.weight), predictions.bias
            offsets = torch.nn.functional.embedding(tokens, bias.unsqueeze(1)).squeeze(2)
            scores = (rows @ t.unsqueeze(2)).squeeze(2) + offsets
            return torch.where(candidates == 0, torch.full_like(scores, float("-inf")), scores)

    return RerankGraph().eval()


# Set while the TFLite converter traces a graph: `top_k_unseen` then avoids scatter.
_PORTABLE_TOP_K = contextvars.ContextVar("edgerec_portable_top_k", default=False)


@contextlib.contextmanager
def portable_top_k(on: bool = True):
    """Trace `top_k_unseen` in its scatter-free form (what TFLite files get) while inside."""
    token = _PORTABLE_TOP_K.set(on)
    try:
        yield
    finally:
        _PORTABLE_TOP_K.reset(token)


def top_k_unseen(scores, history, top_k: int, allowed=None, boost=None):
    """In-graph top-K of `scores` [B, items] (column j = item j + 1) over the items not in
    `history` [B, L] (item ids, 0 = empty): (items int64 [B, K], scores [B, K]). With the rules
    inputs (`allowed` [B, items], nonzero = may be shown; `boost` [B, items]), the scores are
    `scores + boost` and the items not allowed are masked as the history is, by one select over
    the catalogue before either form below, so both still return exactly the K best allowed.

    ONNX (and eager PyTorch): the history's items are set to -1e9 with one ScatterElements, then
    one TopK of K. TFLite: tflite-runtime 2.14 has no scatter (STABLEHLO_SCATTER) and lacks the
    GATHER_ND versions a gather becomes, so there the K best items outside the history are taken
    from the K + L best overall (the history has at most L items): push the candidates found in
    the history to the bottom, take the top K of the rest, and read the chosen items with a
    one-hot matmul; only TOPK_V2, EQUAL, REDUCE_ANY and matmuls. That costs a TopK of K + L and
    an O((K + L) L) comparison: on ONNX Runtime the whole call with the scatter form measured
    0.039 ms p50 against 0.152 ms (benchmarks/export.py times both). Same items either way.

    Where fewer than K items are left outside the history (a small catalogue, a large K), the
    slots past the last real item hold item 0 (the padding index, never an item) and score
    -inf: the outputs keep their fixed shape and an app stops at the first 0.
    """
    import torch

    if boost is not None:
        scores = scores + boost
    if allowed is not None:
        # compared in float: TFLite has no NOT_EQUAL on uint8 (the converter refuses it)
        scores = torch.where(allowed.to(scores.dtype) > 0, scores, torch.full_like(scores, _MASKED))
    if not _PORTABLE_TOP_K.get():
        padded = torch.cat([torch.full_like(torch.narrow(scores, 1, 0, 1), _MASKED), scores], dim=1)
        best, items = torch.topk(padded.scatter(1, history.long(), _MASKED), top_k, dim=1)
        return _empty_slots(items, best)
    wide = min(top_k + int(history.shape[1]), int(scores.shape[1]))
    values, candidates = torch.topk(scores, wide, dim=1)
    items = candidates + 1
    seen = (items.unsqueeze(2) == history.long().unsqueeze(1)).any(dim=2)
    values = values + _MASKED * seen.to(values.dtype)
    best, slot = torch.topk(values, top_k, dim=1)
    # items[slot] as a one-hot matmul (exact for indices < 2^24)
    pick = (slot.unsqueeze(2) == torch.arange(wide).view(1, 1, wide)).to(values.dtype)
    chosen = (pick @ items.to(values.dtype).unsqueeze(2)).squeeze(2)
    return _empty_slots(chosen.to(torch.int64), best)


# The score a masked column gets before the TopK. A model's scores are logits (|s| < 1e4 by far),
# so anything below half of it was masked: the slot holds no candidate.
_MASKED = -1e9


def _empty_slots(items, best):
    """Item 0 and score -inf in the slots the TopK filled with masked columns (a select each:
    WHERE / SELECT_V2 in TFLite, which tflite-runtime 2.14 has)."""
    import torch

    empty = best < _MASKED / 2
    return (
        torch.where(empty, torch.zeros_like(items), items),
        torch.where(empty, torch.full_like(best, float("-inf")), best),
    )


@dataclass(frozen=True)
class StateLayout:
    layers: int
    hidden: int
    heads: tuple[int, ...]  # per layer (pruned layers may have fewer); for the description
    window: int

    def shape(self, batch: int | str = 1) -> list:
        return [batch, self.layers, self.window, self.hidden]

    def to_dict(self) -> dict:
        return {
            "layers": self.layers,
            "hidden": self.hidden,
            "heads_per_layer": list(self.heads),
            "window": self.window,
        }


def step_layout(rec, window: int | None = None) -> StateLayout:
    """The state a step model of `rec` carries; refuses models it would not be exact for."""
    if rec.kind != "causal":
        raise EdgerecError(
            f"a step model needs a causal student, not a {rec.kind!r} model: with "
            "bidirectional attention every item's state changes with each new one"
        )
    if rec.positions != "start":
        raise EdgerecError(
            "a step model needs positions counted from the window start (distill "
            "--positions start): with the default 'end' positions each new item "
            "moves every cached one"
        )
    if not rec.token_of.tolist() == list(range(len(rec.token_of))):
        raise EdgerecError("a step model is exported for students edgerec trained (identity item order)")
    layers = rec.model.bert.encoder.layer
    window = int(window or rec.max_len)
    if not 1 <= window <= rec.model.config.max_position_embeddings:
        raise EdgerecError(f"window must be in [1, {rec.model.config.max_position_embeddings}], got {window}")
    return StateLayout(
        len(layers),
        int(rec.model.config.hidden_size),
        tuple(int(layer.attention.self.num_attention_heads) for layer in layers),
        window,
    )


def step_graph(rec, top_k: int | None = None, window: int | None = None):
    """The torch module exported as the step model (see the module docstring).

    Written for the fewest runtime operators, since at this size an update costs its operator
    count more than its arithmetic: the attention's four projections are two precomputed
    matrices (`composed_attention`), the new item's row stays 2-D, masks are single selects,
    and a one-layer state is written in place of a slice-and-concatenate."""
    import torch

    spec = step_layout(rec, window)
    n, num_items, width = spec.window, rec.num_items, spec.hidden
    bert = rec.model.bert
    embeddings = bert.embeddings
    minimum = torch.finfo(torch.float32).min

    class StepGraph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = rec.model
            # position + token-type rows for slots 0..n-1, one lookup table
            self.register_buffer(
                "slots",
                (embeddings.position_embeddings.weight[:n] + embeddings.token_type_embeddings.weight[0])
                .detach()
                .clone(),
            )
            self.heads = [layer.attention.self.num_attention_heads for layer in bert.encoder.layer]
            for index, layer in enumerate(bert.encoder.layer):
                for name, value in zip(("a", "c", "bm", "b"), composed_attention(layer)):
                    self.register_buffer(f"{name}{index}", value)

        def forward(self, item, position, state, history=None):
            item, position = item.long(), position.long()
            ahead = torch.arange(n).view(1, n)
            slot = (ahead == position.view(-1, 1)).view(-1, 1, n, 1)  # where the new item goes
            # empty slots and the future are blocked; the new item sees itself
            blocked = torch.where(ahead > position.view(-1, 1), minimum, 0.0).view(-1, 1, n)
            x = embeddings.LayerNorm(
                embeddings.word_embeddings(item) + torch.nn.functional.embedding(position, self.slots)
            )  # [B, H]
            written = []
            for index, layer in enumerate(bert.encoder.layer):
                # the layer's input at every slot, the new item's written in
                own = state if spec.layers == 1 else torch.narrow(state, 1, index, 1)
                inputs = torch.where(slot, x.view(-1, 1, 1, width), own)  # [B, 1, n, H]
                written.append(inputs)
                cached = inputs.view(-1, n, width)
                a, c, bm, b = (getattr(self, f"{name}{index}") for name in ("a", "c", "bm", "b"))
                query = torch.nn.functional.linear(x, a, c).view(-1, self.heads[index], width)
                weights = torch.softmax(query @ cached.transpose(1, 2) + blocked, dim=-1)
                mixed = (weights @ cached).view(-1, self.heads[index] * width)
                attended = layer.attention.output.LayerNorm(torch.nn.functional.linear(mixed, bm, b) + x)
                x = layer.output(layer.intermediate(attended), attended)
            scores = torch.narrow(rec.model.cls(x), 1, 1, num_items)
            next_state = written[0] if len(written) == 1 else torch.cat(written, dim=1)
            if top_k is None:
                return scores, next_state
            next_history = torch.where(slot.view(-1, n), item.view(-1, 1), history.long()).to(history.dtype)
            items, best = top_k_unseen(scores, next_history, top_k)
            return items, best, next_state, next_history

    return StepGraph().eval()


def step_inputs(spec: StateLayout, dtype: str, top_k: int | None, batch: int = 1) -> dict:
    """Example inputs (the initial state) for export and for a first call."""
    import torch

    inputs = {
        "item": torch.ones(batch, dtype=getattr(torch, dtype)),
        "position": torch.zeros(batch, dtype=getattr(torch, dtype)),
        "state": torch.zeros(spec.shape(batch)),
    }
    if top_k:
        inputs["history"] = torch.zeros((batch, spec.window), dtype=getattr(torch, dtype))
    return inputs


def step_output_names(top_k: int | None) -> list[str]:
    return ["items", "scores", "next_state", "next_history"] if top_k else ["scores", "next_state"]
