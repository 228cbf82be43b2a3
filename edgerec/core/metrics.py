"""Full-ranking metrics (design.md's accuracy protocol), intervals and paired tests.

Every item in the catalogue is ranked (no sampled negatives). Ranks are 0-based; ties are broken
deterministically by item index (a tied item with a smaller index ranks ahead of the target), so
a model that scores everything equal does not get a lucky rank. Items already in the history are
masked by default (the target itself is never masked).
RecBole's metric code breaks on NumPy >= 1.24 (RUCAIBox/RecBole #1604); these are written here and
tested against hand-computed cases.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

HR_KS = (1, 5, 10, 20)
NDCG_KS = (5, 10, 20)


def _item_scores(scores: np.ndarray, num_items: int, histories, targets, mask_history: bool):
    """Scores restricted to items 1..num_items, with history items (not the target) at -inf."""
    s = np.array(scores[:, : num_items + 1], dtype=np.float64, copy=True)
    s[:, 0] = -np.inf  # padding is never an item
    if mask_history and histories is not None:
        rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
        cols = np.concatenate([np.asarray(h, dtype=np.int64) for h in histories]) if len(rows) else rows
        s[rows, cols] = -np.inf
        if targets is not None:
            t = np.asarray(targets, dtype=np.int64)
            s[np.arange(len(t)), t] = np.asarray(scores, dtype=np.float64)[np.arange(len(t)), t]
    return s


def target_ranks(scores, targets, num_items: int, histories=None, mask_history: bool = True):
    """0-based rank of each target among all items (higher score = better)."""
    targets = np.asarray(targets, dtype=np.int64)
    s = _item_scores(np.asarray(scores), num_items, histories, targets, mask_history)
    target_score = s[np.arange(len(targets)), targets][:, None]
    better = (s > target_score).sum(axis=1)
    columns = np.arange(s.shape[1])[None, :]
    tied_ahead = ((s == target_score) & (columns < targets[:, None])).sum(axis=1)
    return (better + tied_ahead).astype(np.int64)


def top_k(scores, k: int, num_items: int, histories=None, mask_history: bool = True) -> np.ndarray:
    """Indices of the k best candidates per row, best first; ties go to the smaller index.

    Candidates are the items 1..num_items, less the history when `mask_history` (and less any
    item whose score is NaN). A row with fewer than k candidates ends in 0, the padding index,
    which is never an item: `candidate_counts` says how many each row has. The result has
    min(k, num_items) columns.
    """
    s = _item_scores(np.asarray(scores), num_items, histories, None, mask_history)
    k = max(0, min(k, num_items))
    out = np.zeros((len(s), k), dtype=np.int64)
    for row in range(len(s)):
        values = s[row]
        cand = np.flatnonzero(values > -np.inf)  # masked columns are -inf; NaN compares False
        if len(cand) > k:
            # every candidate at least as good as the k-th best: a tie at the boundary is
            # resolved by index below, not by where a partition happened to split it
            kth = np.partition(values[cand], len(cand) - k)[len(cand) - k] if k else np.inf
            cand = cand[values[cand] >= kth]
        order = np.lexsort((cand, -values[cand]))[:k]
        out[row, : len(order)] = cand[order]
    return out


def candidate_counts(num_items: int, histories=None, mask_history: bool = True) -> np.ndarray:
    """How many items each row can be recommended: the catalogue less the distinct history
    items in 1..num_items (what bounds `top_k`'s real entries)."""
    if not mask_history or histories is None:
        return np.full(0 if histories is None else len(histories), num_items, dtype=np.int64)
    return np.array(
        [num_items - len({int(i) for i in h if 1 <= int(i) <= num_items}) for h in histories], dtype=np.int64
    )


def per_user_metrics(ranks: np.ndarray) -> dict[str, np.ndarray]:
    ranks = np.asarray(ranks)
    out: dict[str, np.ndarray] = {}
    for k in HR_KS:
        out[f"HR@{k}"] = (ranks < k).astype(np.float64)
    gain = 1.0 / np.log2(ranks + 2.0)
    for k in NDCG_KS:
        out[f"NDCG@{k}"] = np.where(ranks < k, gain, 0.0)
    out["MRR"] = 1.0 / (ranks + 1.0)
    return out


def topk_agreement(top_a: np.ndarray, top_b: np.ndarray) -> np.ndarray:
    """Per-user share of model A's top-K that is also in model B's top-K (0 entries, the
    padding of a short list, are not items; two empty lists agree)."""
    out = []
    for a, b in zip(top_a, top_b):
        a, b = set(np.asarray(a).tolist()) - {0}, set(np.asarray(b).tolist()) - {0}
        out.append(len(a & b) / max(len(a), len(b)) if a or b else 1.0)
    return np.array(out, dtype=np.float64)


def bootstrap_interval(values: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95):
    """Per-user bootstrap of the mean: (mean, low, high)."""
    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(n_boot, len(values)))
    means = values[idx].mean(axis=1)
    alpha = (1 - level) / 2
    return float(values.mean()), float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def summarize(per_user: dict[str, np.ndarray], n_boot: int = 1000, seed: int = 0) -> dict[str, dict]:
    summary = {}
    for name, values in per_user.items():
        mean, low, high = bootstrap_interval(values, n_boot, seed)
        summary[name] = {"mean": mean, "ci95": [low, high]}
    return summary


def paired_bootstrap(a: Sequence[float], b: Sequence[float], n_boot: int = 2000, seed: int = 0) -> dict:
    """Paired bootstrap of the per-user difference mean(a - b), on the same users.

    `p_value` is the two-sided bootstrap p-value for "no difference". Call A better than B only
    when the interval excludes 0.
    """
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if diff.size == 0:
        raise ValueError("paired_bootstrap needs at least one user")
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(n_boot, len(diff)))].mean(axis=1)
    p = 2 * min((means <= 0).mean(), (means >= 0).mean())
    return {
        "diff": float(diff.mean()),
        "ci95": [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))],
        "p_value": float(min(1.0, p)),
    }


# ----------------------------------------------------------------------- beyond accuracy


def item_popularity(sequences, num_items: int) -> np.ndarray:
    """Training interactions per item index (index 0 = padding stays 0)."""
    counts = np.zeros(num_items + 1, dtype=np.int64)
    for seq in sequences:
        np.add.at(counts, np.asarray(seq, dtype=np.int64), 1)
    counts[0] = 0
    return counts


def gini(counts: np.ndarray) -> float:
    """Gini index of non-negative counts: 0 = every item recommended equally often, -> 1 = all
    recommendations go to one item."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = len(x), x.sum()
    if n == 0 or total == 0:
        return 0.0
    ranks = np.arange(1, n + 1)
    return float(((2 * ranks - n - 1) * x).sum() / (n * total))


def beyond_accuracy(
    top: np.ndarray, popularity: np.ndarray, tail_share_of_items: float = 0.8, n_boot: int = 0, seed: int = 0
) -> dict:
    """What users see, across all of them, from their top-K lists (item indices 1..N):
    coverage (share of the catalogue recommended to anyone), mean training popularity of the
    recommended items, Gini index of how often each item is recommended (all N items, zeros
    included) and the share of recommendations from the tail: items outside the top 20% by
    training popularity (ties at the cut go to the head)."""
    top = np.asarray(top, dtype=np.int64)
    num_items = len(popularity) - 1
    pop = np.asarray(popularity[1:], dtype=np.float64)
    head_size = int(np.ceil(num_items * (1 - tail_share_of_items)))
    threshold = np.sort(pop)[::-1][head_size - 1] if head_size else np.inf
    head = pop >= threshold

    def figures(rows):
        counts = np.bincount(rows.ravel(), minlength=num_items + 1)[1:]
        return {
            "coverage": float((counts > 0).mean()),
            "mean_popularity": float(popularity[rows].mean()),
            "gini": gini(counts),
            "tail_share": float(counts[~head].sum() / max(counts.sum(), 1)),
        }

    out = figures(top)
    if n_boot:
        # User bootstrap for the per-recommendation means only. Coverage and Gini depend on how
        # many distinct users there are, and a bootstrap sample repeats users, so their bootstrap
        # intervals sit below the point estimate (measured): compare those with
        # `paired_half_sample` instead.
        rng = np.random.default_rng(seed)
        draws = [figures(top[rng.integers(0, len(top), len(top))]) for _ in range(n_boot)]
        out["ci95"] = {
            k: [float(np.quantile([d[k] for d in draws], 0.025)), float(np.quantile([d[k] for d in draws], 0.975))]
            for k in ("mean_popularity", "tail_share")
        }
    return out


def paired_half_sample(
    top_a, top_b, popularity: np.ndarray, key: str = "coverage", n: int = 1000, seed: int = 0
) -> dict:
    """A set-level figure of model A minus model B: on all users, and its 95% range over random
    halves of the users (the same half for both models, drawn without replacement)."""
    top_a, top_b = np.asarray(top_a), np.asarray(top_b)
    rng = np.random.default_rng(seed)
    half = len(top_a) // 2
    diffs = []
    for _ in range(n):
        users = rng.choice(len(top_a), half, replace=False)
        diffs.append(beyond_accuracy(top_a[users], popularity)[key] - beyond_accuracy(top_b[users], popularity)[key])
    full = beyond_accuracy(top_a, popularity)[key] - beyond_accuracy(top_b, popularity)[key]
    return {
        "diff": float(full),
        "half_sample_range95": [float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975))],
        "share_of_halves_above_zero": float(np.mean(np.asarray(diffs) > 0)),
    }
