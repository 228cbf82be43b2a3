"""Evaluation with the accuracy protocol of design.md: full ranking over the catalogue with the
user's history masked, HR@K and NDCG@K with intervals, on the same users; and the checks that a
model and a data artifact belong together."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from edgerec.core import metrics
from edgerec.core.errors import EdgerecError
from edgerec.core.interactions import load_data
from edgerec.core.models import load_model


class Scorer(Protocol):
    def scores(self, histories, batch_size: int = ...) -> np.ndarray: ...


def rank_users(
    scorer: Scorer,
    histories,
    targets,
    num_items: int,
    *,
    k: int = 10,
    mask_history: bool = True,
    users: np.ndarray | None = None,
    batch_size: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """(0-based target ranks, top-k indices) for the given users, scored in batches.

    Users are scored shortest history first (results come back in the order given), so a
    scorer that pads each batch to its own longest history (RecModel) does little padding."""
    index = np.arange(len(histories)) if users is None else np.asarray(users)
    order = np.argsort([len(histories[i]) for i in index], kind="stable")
    ranks, tops = [], []
    for start in range(0, len(index), batch_size):
        rows = index[order[start : start + batch_size]]
        hist = [histories[i] for i in rows]
        scores = scorer.scores(hist)  # each scorer batches as suits it
        ranks.append(metrics.target_ranks(scores, targets[rows], num_items, hist, mask_history))
        tops.append(metrics.top_k(scores, k, num_items, hist, mask_history))
    if not ranks:
        return np.zeros(0, np.int64), np.zeros((0, k), np.int64)
    back = np.argsort(order, kind="stable")
    return np.concatenate(ranks)[back], np.concatenate(tops)[back]


def evaluate(
    scorer: Scorer,
    data,
    split: str = "test",
    *,
    mask_history: bool = True,
    reference: Scorer | None = None,
    n_boot: int = 1000,
) -> dict:
    """Metrics with 95% per-user bootstrap intervals; with `reference`, top-10 agreement too."""
    histories, targets = data.examples(split)
    if len(targets) == 0:
        raise EdgerecError(f"{data.path}: no users to evaluate")
    ranks, top = rank_users(scorer, histories, targets, data.num_items, mask_history=mask_history)
    per_user = metrics.per_user_metrics(ranks)
    if reference is not None:
        _, ref_top = rank_users(reference, histories, targets, data.num_items, mask_history=mask_history)
        per_user["top10_agreement"] = metrics.topk_agreement(top, ref_top)
    return {
        "split": split,
        "users": int(len(targets)),
        "mask_history": mask_history,
        "metrics": metrics.summarize(per_user, n_boot=n_boot),
        "per_user": per_user,
    }


def headline(report: dict) -> dict[str, float]:
    """The means only, e.g. for a manifest or a progress line."""
    return {name: round(v["mean"], 6) for name, v in report["metrics"].items()}


def public(report: dict) -> dict:
    """The report without per-user arrays (what goes into JSON)."""
    return {k: v for k, v in report.items() if k != "per_user"}


def evaluate_artifact(model_dir: Path, data_dir: Path, split: str = "test", mask_history: bool = True) -> dict:
    data = load_data(data_dir)
    model = load_model(resolve_model_dir(model_dir))
    check_compatible(model, data)
    report = evaluate(model, data, split, mask_history=mask_history)
    report["model"] = str(model_dir)
    report["data"] = str(data_dir)
    report["parameters"] = model.num_parameters
    return report


def resolve_model_dir(path: Path) -> Path:
    """Accept an artifact directory (holding model/) or the model directory itself."""
    path = Path(path)
    if (path / "model").is_dir():
        return path / "model"
    if not path.exists():
        raise EdgerecError(f"{path}: no such model directory")
    return path


def check_compatible(model, data) -> None:
    if model.num_items != data.num_items:
        raise EdgerecError(
            f"model {model.directory} scores {model.num_items} items but {data.path} has "
            f"{data.num_items}; evaluate a model with the data artifact it was built from"
        )
    expected = model.meta.get("item_ids_sha256")
    if expected and expected != item_ids_hash(data.item_ids()):
        raise EdgerecError(f"model {model.directory} was built for another item vocabulary than {data.path}")


def item_ids_hash(ids: list[str]) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(ids).encode()).hexdigest()


def beyond_accuracy(data, runs: dict, references: dict, label: str) -> dict:
    """Coverage, popularity, Gini and tail share of every model's top-10 on the same users, and
    each one's ratio to the teacher's (validate's report). `runs`: per runtime, the bundle's
    file and top-10 lists; `references`: the PyTorch models' top-10 lists; `label`: the
    bundle's precision."""
    popularity = metrics.item_popularity(data.train_sequences(), data.num_items)
    models = {f"{name} (PyTorch)": ref["top"] for name, ref in references.items()}
    models.update({f"{label} {r['file']} ({runtime})": r["top"] for runtime, r in runs.items()})
    figures = {name: metrics.beyond_accuracy(top, popularity, n_boot=200) for name, top in models.items()}
    teacher = figures.get("teacher (PyTorch)")
    if teacher:
        for values in figures.values():
            values["vs_teacher"] = {
                k: (values[k] / teacher[k] if teacher[k] else None)
                for k in ("coverage", "mean_popularity", "gini", "tail_share")
            }
    deciles = np.minimum((np.argsort(np.argsort(-popularity[1:], kind="stable")) * 10) // data.num_items, 9)
    by_decile = {
        name: (np.bincount(deciles[np.asarray(top).ravel() - 1], minlength=10) / np.asarray(top).size).tolist()
        for name, top in models.items()
    }
    return {
        "models": figures,
        "share_by_popularity_decile": by_decile,
        "definition": "top-10 per test user, history masked; popularity = training interactions; "
        "tail = items outside the top 20% by popularity",
    }
