"""Run a model file and compare what it returns: parity against PyTorch, the step model's
item-by-item replay, latency statistics and the checks on a runner's outputs. Shared by
`export` (parity at export time), `quantize` and `validate`, for the full and the step model.

Every runtime is reached through `runtimes` (a scorer in this process) or `envs.run_runner` (the
standalone `device_runner.py` in its own process, the runtime's own environment or a device).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from edgerec.core import metrics
from edgerec.core.errors import EdgerecError
from edgerec.devices.envs import python_for, run_runner
from edgerec.devices.runtimes import Scorer, encode
from edgerec.formats import FORMATS, RUNTIMES


def parity(reference, candidate, histories, atol: float, name: str) -> dict:
    """Max |difference| and top-10 agreement on real test histories; raise once, with the list."""
    ref, got = reference.scores(histories), candidate.scores(histories)  # column 0: padding
    diff = float(np.abs(ref[:, 1:] - got[:, 1:]).max())
    n = ref.shape[1] - 1
    top_ref = metrics.top_k(ref, 10, n, mask_history=False)
    top_got = metrics.top_k(got, 10, n, mask_history=False)
    agreement = float(metrics.topk_agreement(top_ref, top_got).mean())
    result = {"max_abs_diff": diff, "top10_agreement": agreement, "users": len(histories), "atol": atol}
    problems = []
    if not diff <= atol:
        problems.append(f"scores differ by up to {diff:.3g} (tolerance {atol:g})")
    if agreement < 1.0:
        problems.append(f"top-10 agreement {agreement:.4f} < 1")
    if problems:
        raise EdgerecError(f"{name} parity check failed vs PyTorch: {'; '.join(problems)}")
    return result


def top_k_check(graph, folder: Path, files: dict, target, meta: dict, histories) -> dict:
    """Items from each exported top-K file (on the first runtime of its format) vs the same graph
    in PyTorch; raises on any difference."""
    import torch

    with torch.inference_mode():
        expected = graph(torch.from_numpy(encode(histories, meta["max_len"], "int64")))[0].numpy()
    result = {}
    for fmt, name in files.items():
        runtime = next(r for r in target.runtimes if RUNTIMES[r.name][0] == fmt)
        ids = encode(histories, meta["max_len"], FORMATS[fmt].input_dtype(target))
        if runtime.environment == "isolated":  # its own environment: the runner returns the first output
            got = run_runner(python_for(runtime.name), runtime.name, folder / name, ids, target.threads)["scores"]
        else:
            got = FORMATS[fmt].top_k_items(folder / name, ids)
        same = float((np.asarray(got) == expected).all(axis=1).mean())
        if same < 1.0:
            raise EdgerecError(f"{fmt} top-K on {runtime.name} differs from PyTorch for {1 - same:.1%} of users")
        result[f"{fmt} on {runtime.name}"] = {"users": len(histories), "identical_lists": same}
    return result


def replay(runtime, path: Path, input_ids, threads: int = 1, warmup: int = 0, device=None) -> dict:
    """Replay each row of `input_ids` (left-padded, as the full model takes them) through a step
    file item by item from an empty state, in the runtime's own runner process (on `device`
    when given): the final `scores` (top-K `items`) per row and every update's `seconds`."""
    if device is not None:
        return device.run_runner(runtime.name, Path(path), input_ids, threads, warmup, step=True)
    python = python_for(runtime.name) if runtime.environment == "isolated" else sys.executable
    return run_runner(python, runtime.name, Path(path), input_ids, threads, warmup, step=True)


def replay_scorer(runtime, path: Path, max_len: int, num_items: int, dtype: str, threads: int):
    class Replayed(Scorer):
        def run(self, input_ids):
            return replay(runtime, path, input_ids, threads)["scores"]

        def scores(self, histories, batch_size: int = 100_000):
            return super().scores(histories, batch_size)  # one runner process for the whole set

    scorer = Replayed()
    scorer.max_len, scorer.num_items, scorer.dtype = max_len, num_items, dtype
    return scorer


def latency_stats(seconds) -> dict:
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    return {
        "runs": int(ms.size),
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "std_ms": float(ms.std()),
    }


def accuracy(
    full_scores, histories, targets, num_items: int, reference_top=None, top=None, truncated_at: int | None = None
) -> tuple[dict, np.ndarray, dict]:
    """Full-ranking metrics of `full_scores` [users, num_items + 1]. For a top-K output
    (`truncated_at` = K) only ranks below K are known: cut-offs above K are left out and MRR
    counts ranks below K only; `top` is then the lists the model returned."""
    ranks = metrics.target_ranks(full_scores, targets, num_items, histories)
    if truncated_at is not None:
        # a target the file did not return is a miss at every cut-off (masking returned history
        # items would otherwise let a small item index tie its way above the cut-off)
        returned = np.isfinite(np.asarray(full_scores)[np.arange(len(targets)), np.asarray(targets)])
        ranks = np.where(returned, ranks, num_items)
    if top is None:
        top = metrics.top_k(full_scores, 10, num_items, histories)
    per_user = metrics.per_user_metrics(ranks)
    if truncated_at is not None:
        per_user = {
            name: values
            for name, values in per_user.items()
            if "@" not in name or int(name.split("@")[1]) <= truncated_at
        }
        per_user["MRR"] = np.where(ranks < truncated_at, per_user["MRR"], 0.0)
    if reference_top is not None:
        per_user["top10_agreement"] = metrics.topk_agreement(top, reference_top)
    return metrics.summarize(per_user), top, per_user


def score_outputs(output, top_k: int | None, num_items: int, histories, targets, reference_top, where: str):
    """`_accuracy` of what a runner returned: scores [users, num_items], or for a top-K file its
    `items` [users, K] (item indices, best first), ranked K, K-1, ... 1 and every other item
    below them. Checks the shape and values first; `where` names the file and runtime."""
    output = np.asarray(output)
    if not top_k:
        if output.ndim != 2 or output.shape[1] != num_items:
            raise EdgerecError(
                f"{where} outputs {output.shape[-1]} scores per user but items.json lists {num_items} items"
            )
        if not np.isfinite(output).all():
            raise EdgerecError(f"{where} produced NaN/inf scores")
        full = np.full((len(output), num_items + 1), -np.inf, np.float32)
        full[:, 1:] = output
        return accuracy(full, histories, targets, num_items, reference_top)
    if top_k < 10:
        raise EdgerecError(
            f"{where} returns its top {top_k}; validate needs at least 10 (the accuracy "
            "budget, agreement and coverage are at 10): export with --top-k 10 or more"
        )
    if output.ndim != 2 or output.shape[1] != top_k or output.min(initial=1) < 0 or output.max(initial=1) > num_items:
        raise EdgerecError(f"{where} did not return [users, {top_k}] item indices in 1..{num_items} (0 = no item left)")
    items = output.astype(np.int64)
    full = np.full((len(items), num_items + 1), -np.inf, np.float32)
    np.put_along_axis(full, items, np.arange(top_k, 0, -1, dtype=np.float32)[None, :], axis=1)
    full[:, 0] = -np.inf  # the 0 entries of a short list are no item
    return accuracy(full, histories, targets, num_items, reference_top, top=items[:, :10], truncated_at=top_k)
