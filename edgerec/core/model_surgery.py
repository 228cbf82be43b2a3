"""Changes to a loaded BERT recommender's structure that transformers has no option for: a
student started from a subset of its teacher's layers (DistilBERT's initialisation), and the
item table factorised into a rank-r table and a shared projection. Used by distill and prune."""

from __future__ import annotations

import functools

from edgerec.core.errors import EdgerecError


def teacher_init_layers(teacher_layers: int, student_layers: int) -> list[int]:
    """Which teacher layers a student of `student_layers` starts from: evenly spaced from the first
    to the last, as DistilBERT's every other layer; a one-layer student takes the first (the ML-1M
    teacher with its second layer dropped ranks at valid NDCG@10 0.152, with its first 0.145)."""
    if student_layers > teacher_layers:
        raise EdgerecError(f"a {student_layers}-layer student cannot start from a {teacher_layers}-layer teacher")
    if student_layers == 1:
        return [0]
    step = (teacher_layers - 1) / (student_layers - 1)
    return [round(i * step) for i in range(student_layers)]


def init_from_teacher(student, teacher, layers: list[int] | None = None) -> str | None:
    """Start an id student from its teacher's weights, in place (DistilBERT's initialisation, Sanh
    et al. 2019: the teacher's embeddings and a subset of its layers): item, position and type
    embeddings, the output transform and bias, and teacher layers `layers` (default
    `teacher_init_layers`). Returns None when done, else why it cannot be (different kind, width,
    layer shape or catalogue); the caller then keeps the random start. Hand-written: neither
    transformers nor optimum copies a subset of layers between two configs.
    """
    import torch

    if type(student) is not type(teacher):
        return f"the teacher is a {type(teacher).__name__}, the student a {type(student).__name__}"
    s, t = student.config, teacher.config
    if (s.hidden_size, s.vocab_size) != (t.hidden_size, t.vocab_size):
        return (
            f"the teacher's width / catalogue ({t.hidden_size}, {t.vocab_size}) differs from the "
            f"student's ({s.hidden_size}, {s.vocab_size})"
        )
    if (s.intermediate_size, s.num_attention_heads) != (t.intermediate_size, t.num_attention_heads):
        return "the teacher's layers have another FFN width or head count"
    if item_rank(student) or item_rank(teacher):
        return "a factorised item table"
    layers = layers if layers is not None else teacher_init_layers(t.num_hidden_layers, s.num_hidden_layers)
    source, target = teacher.state_dict(), student.state_dict()
    with torch.no_grad():
        for name, tensor in target.items():
            if name.startswith("bert.encoder.layer."):
                index, rest = name[len("bert.encoder.layer.") :].split(".", 1)
                name_t = f"bert.encoder.layer.{layers[int(index)]}.{rest}"
            else:
                name_t = name
            if name_t not in source:
                continue
            value = source[name_t]
            if name.endswith("position_embeddings.weight"):  # positions are slots from the end
                n = min(len(value), len(tensor))
                tensor[-n:].copy_(value[-n:])
            elif value.shape == tensor.shape:
                tensor.copy_(value)
    return None


def factorize_items(model, rank: int, init: str = "svd") -> None:
    """Replace the tied item table E [vocab, hidden] by E ~= A @ W^T, A [vocab, rank] per item and
    W [hidden, rank] shared, in both places it is used (input lookup and output layer), in place.

    `init="svd"` starts from the truncated SVD of the current table (edgerec prune); `"random"`
    for a fresh student (edgerec distill --item-rank). Hand-written because HF BERT has no
    factorised-embedding option (ALBERT has one, but no causal variant).
    """
    import torch

    FactorizedItems, FactorizedDecoder = _factorized_modules()  # noqa: N806 (classes)
    embeddings, predictions = model.bert.embeddings, model.cls.predictions
    table = embeddings.word_embeddings.weight.detach()
    vocab, hidden = table.shape
    if not 1 <= rank <= hidden:
        raise EdgerecError(f"item rank must be in [1, hidden size {hidden}], got {rank}")
    items = FactorizedItems(vocab, rank, hidden)
    if init == "svd":
        u, s, vt = torch.linalg.svd(table.float(), full_matrices=False)
        with torch.no_grad():
            items.items.weight.copy_(u[:, :rank] * s[:rank])
            items.project.weight.copy_(vt[:rank].T)
    embeddings.word_embeddings = items
    predictions.decoder = FactorizedDecoder(items, predictions.bias)
    model.config.tie_word_embeddings = False  # the two uses share A and W by construction


@functools.lru_cache(maxsize=1)
def _factorized_modules():
    import torch

    class FactorizedItems(torch.nn.Module):
        """Item lookup through a rank-r table and a shared projection: [.., rank] -> [.., hidden]."""

        def __init__(self, vocab: int, rank: int, hidden: int):
            super().__init__()
            self.items = torch.nn.Embedding(vocab, rank, padding_idx=0)
            self.project = torch.nn.Linear(rank, hidden, bias=False)
            torch.nn.init.normal_(self.items.weight, std=0.02)
            self.rank, self.embedding_dim, self.num_embeddings = rank, hidden, vocab

        def forward(self, ids):
            return self.project(self.items(ids))

    class FactorizedDecoder(torch.nn.Module):
        """Scores h . (A W^T)_i = (h W) . A_i + b_i, with the lookup's A and W. Holds no parameters
        of its own (plain references), so the checkpoint stores each tensor once."""

        def __init__(self, items, bias):
            super().__init__()
            self._shared = [items, bias]

        def forward(self, hidden):
            items, bias = self._shared
            # F.linear(z, A) exports as one Gemm reading A, the same initializer the lookup reads
            return torch.nn.functional.linear(hidden @ items.project.weight, items.items.weight, bias)

    return FactorizedItems, FactorizedDecoder


def item_rank(model) -> int | None:
    return getattr(model.bert.embeddings.word_embeddings, "rank", None) if hasattr(model, "bert") else None
