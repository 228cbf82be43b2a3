"""Losses over the whole catalogue whose memory does not grow with positions x items.

The teacher's next-item cross-entropy and the student's cross-entropy + KL both score every
labelled position against every item. Done in one piece, the [positions, items] logits, their
log-softmax and their gradients are live at once: 12,800 positions x 3,707 items (a default
batch on ML-1M) is 190 MB per copy, and at 10^5 items a single copy is 5 GB.

`chunked_rows` splits the positions into blocks whose logits stay under `MAX_LOGITS` elements
and runs the head + loss of each block under `torch.utils.checkpoint`, so only one block's
logits are live, in forward and again in backward, where they are recomputed (the idea behind
Cut Cross-Entropy, Wijmans et al. 2024, without its fused kernel: on CPU the head's matmul is a
small share of a step, and checkpointing is PyTorch's own mechanism, so nothing here is a
hand-written gradient). A batch that fits in one block runs as before, without recomputation.
"""

from __future__ import annotations

from collections.abc import Callable

# Elements of one block's logits: 2^24 floats = 64 MB in fp32 (a few such tensors are live per
# block: logits, log-softmax, their gradients).
MAX_LOGITS = 1 << 24


def block_rows(num_items: int, max_logits: int | None = None) -> int:
    """Positions per block so that a block's [rows, items] logits stay under `max_logits`."""
    return max(1, (MAX_LOGITS if max_logits is None else max_logits) // max(1, num_items))


def chunked_rows(block_loss: Callable, hidden, *per_row, num_items: int, max_logits: int | None = None):
    """Sum of `block_loss(hidden[rows], *[x[rows] for x in per_row])` over blocks of rows.

    `block_loss` returns a summed (not averaged) loss for its rows, so the total is the same
    whatever the blocking; the caller scales it. When there is more than one block, each is
    checkpointed: its logits are freed after forward and recomputed in backward.
    """
    import torch
    from torch.utils.checkpoint import checkpoint

    rows = block_rows(num_items, max_logits)
    n = hidden.shape[0]
    if n <= rows:
        return block_loss(hidden, *per_row)
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, n, rows):
        part = slice(start, start + rows)
        args = [hidden[part], *(x[part] for x in per_row)]
        total = total + checkpoint(block_loss, *args, use_reentrant=False)
    return total
