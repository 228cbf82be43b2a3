"""One small protocol for every runtime a bundle runs on, so parity, accuracy and latency code is
written once: `scores(histories) -> [B, num_items + 1]` (column 0 = padding, -inf), exactly like
the PyTorch `RecModel`.

The exported graph takes `input_ids` [batch, max_len] (left-padded, the most recent items, 0 =
padding) and returns `scores` [batch, num_items], column j for the item with index j + 1.
"""

from __future__ import annotations

import abc
from pathlib import Path

import numpy as np

from edgerec.core.models import left_pad
from edgerec.devices.envs import run_isolated


def encode(histories, max_len: int, dtype: str) -> np.ndarray:
    return left_pad(histories, max_len).astype(np.dtype(dtype))


class Scorer(abc.ABC):
    max_len: int
    dtype: str
    num_items: int
    fixed_batch: int | None = None

    @abc.abstractmethod
    def run(self, input_ids: np.ndarray) -> np.ndarray:
        """Raw scores [B, num_items] for a batch of encoded inputs."""

    def scores(self, histories, batch_size: int = 256) -> np.ndarray:
        out = []
        step = self.fixed_batch or batch_size
        for start in range(0, len(histories), step):
            ids = encode(histories[start : start + step], self.max_len, self.dtype)
            if self.fixed_batch:
                rows = [self.run(ids[i : i + 1]) for i in range(len(ids))]
                raw = np.concatenate(rows)
            else:
                raw = self.run(ids)
            full = np.full((len(ids), self.num_items + 1), -np.inf, np.float32)
            full[:, 1:] = raw
            out.append(full)
        return np.concatenate(out) if out else np.zeros((0, self.num_items + 1), np.float32)


class IsolatedScorer(Scorer):
    """A runtime in its own environment (e.g. tflite-runtime 2.14 with NumPy 1.x), driven through
    the standalone device runner."""

    def __init__(self, runtime: str, path: Path, max_len: int, num_items: int, dtype: str, threads: int = 1):
        self.runtime, self.path, self.threads = runtime, Path(path), threads
        self.max_len, self.num_items, self.dtype = max_len, num_items, dtype

    def run(self, input_ids):
        scores, _ = run_isolated(self.runtime, self.path, input_ids, self.threads)
        return scores

    def scores(self, histories, batch_size: int = 100_000) -> np.ndarray:
        return super().scores(histories, batch_size)  # one subprocess for the whole set


def padded_scores(scores: np.ndarray) -> np.ndarray:
    full = np.full((len(scores), scores.shape[1] + 1), -np.inf, np.float32)
    full[:, 1:] = scores
    return full
