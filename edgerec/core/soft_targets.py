"""The teacher's soft targets for distillation: at each chosen prefix of each training sequence,
the teacher's top-K item log-probabilities at temperature T and one tail bin for the rest of the
catalogue. Computed once (rank 0) and cached on disk, keyed by the teacher's and the data's
content hashes and the settings that change them. `config` is a `DistillConfig`
(edgerec/core/distillation.py: top_k, temperature, kd_positions, train.precision)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from edgerec.core.artifacts import artifact_hash
from edgerec.core.datasets import cache_dir
from edgerec.core.evaluation import check_compatible, resolve_model_dir
from edgerec.core.files import load_npz
from edgerec.core.models import load_model
from edgerec.core.training import resolve_precision

CACHE_VERSION = 1


def cache_key(teacher_dir: Path, data_dir: Path, config, kind: str) -> str:
    payload = {
        "teacher": artifact_hash(teacher_dir),
        "data": artifact_hash(data_dir),
        "top_k": config.top_k,
        "temperature": config.temperature,
        "positions": "all" if kind == "causal" else config.kd_positions,
        "version": CACHE_VERSION,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def _soft_targets(logits: np.ndarray, top_k: int, temperature: float):
    """Top-K item logits (at T) and the log of the probability left for all other items."""
    z = logits / temperature
    k = min(top_k, z.shape[1])
    idx = np.argpartition(-z, k - 1, axis=1)[:, :k]
    top = np.take_along_axis(z, idx, axis=1)
    m = z.max(axis=1, keepdims=True)
    lse_all = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
    lse_top = m[:, 0] + np.log(np.exp(top - m).sum(axis=1))
    tail = np.log(np.clip(-np.expm1(lse_top - lse_all), 1e-30, None))
    # an imported teacher scores items it has no label for -inf: probability 0, finite log
    logp = np.maximum(top - lse_all[:, None], -1e4)
    return idx.astype(np.int32), logp.astype(np.float32), tail.astype(np.float32)


def _positions(n_targets: int, kind: str, per_user: int) -> np.ndarray:
    """Which prefixes (by index of their last item) get a teacher target."""
    if kind == "causal" or n_targets <= per_user:
        return np.arange(n_targets)
    return np.unique(np.linspace(0, n_targets - 1, per_user).round().astype(np.int64))


def compute_targets(teacher, sequences, config, batch: int = 64, progress: bool = True) -> dict[str, np.ndarray]:
    """Teacher targets for the prefix ending at each chosen position of each training sequence.

    Rows are (user, position p): the target for predicting item p+1 from items 0..p.
    """
    from tqdm.auto import tqdm

    plan = [_positions(max(len(seq) - 1, 0), teacher.kind, config.kd_positions) for seq in sequences]
    offsets = np.zeros(len(sequences) + 1, np.int64)
    offsets[1:] = np.cumsum([len(p) for p in plan])
    total = int(offsets[-1])
    idx = np.zeros((total, min(config.top_k, teacher.num_items)), np.int32)
    logp = np.zeros(idx.shape, np.float32)
    tail = np.zeros(total, np.float32)
    bar = tqdm(total=total, desc="teacher targets", unit="pos", disable=not progress)
    if teacher.kind == "causal":
        jobs = _causal_windows(sequences, plan, offsets, teacher.max_len)
        jobs.sort(key=lambda job: len(job[0]))  # similar lengths share a batch: less padding
        for start in range(0, len(jobs), batch):
            chunk = jobs[start : start + batch]
            logits = _causal_all_positions(teacher, [w for w, _, _ in chunk])
            for (window, rows, cols), row_logits in zip(chunk, logits):
                i, lp, t = _soft_targets(row_logits[cols], config.top_k, config.temperature)
                idx[rows], logp[rows], tail[rows] = i + 1, lp, t  # column j is item j + 1
                bar.update(len(rows))
    else:
        prefixes = [(offsets[u] + j, sequences[u][: p + 1]) for u, pos in enumerate(plan) for j, p in enumerate(pos)]
        prefixes.sort(key=lambda job: len(job[1]))  # similar lengths share a batch: less padding
        for start in range(0, len(prefixes), batch):
            chunk = prefixes[start : start + batch]
            scores = teacher.scores([h for _, h in chunk])[:, 1:]
            i, lp, t = _soft_targets(scores.astype(np.float64), config.top_k, config.temperature)
            rows = np.array([r for r, _ in chunk])
            idx[rows], logp[rows], tail[rows] = i + 1, lp, t  # column j is item j + 1
            bar.update(len(chunk))
    bar.close()
    return {
        "offsets": offsets,
        "positions": np.concatenate(plan) if plan else np.zeros(0, np.int64),
        "top_items": idx,
        "top_logp": logp.astype(np.float16),
        "tail_logp": tail,
    }


def _causal_windows(sequences, plan, offsets, max_len: int):
    """Windows of at most max_len items covering every position; later windows overlap the
    previous one by half, so every position sees at least max_len/2 items of context."""
    jobs = []
    for u, seq in enumerate(sequences):
        n = len(seq) - 1  # positions with a next item
        covered = 0
        while covered < n:
            begin = 0 if covered == 0 else covered - max_len // 2
            end = min(begin + max_len, n)
            rows = offsets[u] + np.arange(covered, end)
            cols = np.arange(covered - begin, end - begin)
            jobs.append((seq[begin:end], rows, cols))
            covered = end
    return jobs


def _causal_all_positions(teacher, windows) -> list[np.ndarray]:
    """Teacher item logits after every position of each (left-padded) window."""
    import torch

    inputs = teacher.encode(windows, trim=True)
    width = int(inputs["input_ids"].shape[1])
    with torch.inference_mode():
        hidden = teacher.model.bert(**inputs).last_hidden_state
        out = []
        for r, w in enumerate(windows):
            logits = teacher.model.cls(hidden[r, width - len(w) :]).float().numpy()
            out.append(logits[:, teacher.token_of[1:]].astype(np.float64))
    return out


def load_or_compute_targets(teacher_dir: Path, data, config, dist) -> dict:
    teacher = load_model(resolve_model_dir(teacher_dir))
    check_compatible(teacher, data)
    if teacher.kind == "text":  # a 22M language BERT's targets cost more than the distillation
        teacher.precision = resolve_precision(config.train.precision, "cpu")
    key = cache_key(teacher_dir, data.path, config, teacher.kind) + ("-bf16" if teacher.precision == "bf16" else "")
    path = cache_dir() / "teacher-targets" / f"{key}.npz"
    computed = not path.is_file()
    if dist.is_main and computed:
        targets = compute_targets(teacher, data.train_sequences(), config)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
        np.savez(tmp, **targets)
        os.replace(tmp, path)
    dist.barrier()  # other ranks read what rank 0 wrote (one machine or a shared filesystem)
    targets = load_npz(path, "cached teacher targets")
    targets["cache_path"] = str(path)
    targets["teacher"] = teacher
    targets["computed"] = computed  # False: read from the cache (the seconds are the read's)
    return targets


def row_lookup(targets) -> list[dict[int, int]]:
    """Per user: position -> cache row."""
    offsets, positions = targets["offsets"], targets["positions"]
    return [
        {int(p): int(offsets[u]) + j for j, p in enumerate(positions[offsets[u] : offsets[u + 1]])}
        for u in range(len(offsets) - 1)
    ]
