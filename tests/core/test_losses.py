"""Blocked (checkpointed) catalogue losses give the one-block loss and gradients."""

import numpy as np
import pytest
import torch

from edgerec.core import losses
from edgerec.core.batches import causal_batches
from edgerec.core.distillation import distill_loss_module
from edgerec.core.models import Shape, build_id_model
from edgerec.stages.teacher import _token_loss_module

NUM_ITEMS = 30
SHAPE = Shape(hidden=16, layers=1, heads=2, intermediate=32, max_len=10, dropout=0.0, attention_dropout=0.0)


def _batch(with_rows: bool):
    rng = np.random.default_rng(0)
    sequences = [rng.integers(1, NUM_ITEMS + 1, size=int(rng.integers(4, 14))) for _ in range(8)]
    kd_rows = [{j: u * 20 + j for j in range(0, len(s), 2)} for u, s in enumerate(sequences)] if with_rows else None
    return next(causal_batches(sequences, SHAPE.max_len, 8, kd_rows=kd_rows)(np.arange(8), rng))


def _loss_and_grads(module, batch):
    module.zero_grad()
    loss = module(**{k: torch.as_tensor(v) for k, v in batch.items()})
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in module.parameters() if p.grad is not None]


def _compare(module, batch, monkeypatch):
    whole, whole_grads = _loss_and_grads(module, batch)
    rows = int((batch["labels"] != -100).sum())
    monkeypatch.setattr(losses, "MAX_LOGITS", 7 * (NUM_ITEMS + 2))  # 7 positions per block
    assert losses.block_rows(NUM_ITEMS + 2) == 7 < rows
    blocked, blocked_grads = _loss_and_grads(module, batch)
    torch.testing.assert_close(blocked, whole, rtol=1e-5, atol=1e-6)
    assert len(blocked_grads) == len(whole_grads)
    for b, w in zip(blocked_grads, whole_grads):
        torch.testing.assert_close(b, w, rtol=1e-4, atol=1e-6)


def test_teacher_loss_is_the_same_in_blocks(monkeypatch):
    torch.manual_seed(0)
    model = build_id_model("causal", NUM_ITEMS + 2, SHAPE)
    _compare(_token_loss_module(model), _batch(with_rows=False), monkeypatch)


@pytest.mark.parametrize("alpha", [0.0, 0.7])
def test_distill_loss_is_the_same_in_blocks(monkeypatch, alpha):
    torch.manual_seed(0)
    student = build_id_model("causal", NUM_ITEMS + 2, SHAPE)
    rng = np.random.default_rng(1)
    top_items = np.stack([rng.permutation(NUM_ITEMS)[:5] + 1 for _ in range(200)])
    logp = np.log(rng.dirichlet(np.ones(6), size=200)).astype(np.float32)
    targets = {"top_items": top_items, "top_logp": logp[:, :5], "tail_logp": logp[:, 5]}
    module = distill_loss_module(student, targets, NUM_ITEMS, alpha=alpha, temperature=2.0)
    _compare(module, _batch(with_rows=True), monkeypatch)
