"""Training in bf16 autocast vs fp32: the same models, budgets and seeds; test accuracy (paired)
and training time, on movielens-100k.

    python benchmarks/precision.py [--work runs/bench-precision]

Trains the 227K quick teacher (hidden 64, 2 layers; 60 epochs, early stopping) in fp32
and in bf16 (`--precision bf16`), then distils the default student from the fp32 teacher in each
precision (same cached teacher targets). Reports test NDCG@10 / HR@10 with 95% intervals, the
paired bootstrap of bf16 - fp32 per-user NDCG@10, epochs run and training minutes, and which
precision each manifest says ran. bf16 is fast only where the CPU has bf16 dot products
(AVX512-BF16 or AMX): see the recorded flags. Writes benchmarks/results/precision.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fmt_ci, machine, print_table, run_benchmark, save  # noqa: E402


def per_user_ndcg(artifact: Path) -> np.ndarray:
    from edgerec.core.evaluation import rank_users
    from edgerec.core.interactions import load_data
    from edgerec.core.models import load_model

    rec = load_model(artifact / "model")
    data = load_data(Path(json.loads((artifact / "manifest.json").read_text())["inputs"]["data"]["path"]))
    histories, targets = data.examples("test")
    ranks, _ = rank_users(rec, histories, targets, data.num_items)
    return np.where(ranks < 10, 1.0 / np.log2(ranks + 2.0), 0.0)


def _ci(interval):
    mean, low, high = interval
    return mean, [low, high]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/bench-precision"))
    args = parser.parse_args()

    from edgerec.core import metrics
    from edgerec.core.distillation import DistillConfig
    from edgerec.core.training import TrainConfig
    from edgerec.stages.data import make_data
    from edgerec.stages.distill import distill
    from edgerec.stages.teacher import QUICK_TEACHER_SHAPE, TeacherConfig, train_teacher

    work = args.work
    data = work / "data"
    if not data.exists():
        make_data(data, dataset="movielens-100k")
    runs = {}
    for precision in ("fp32", "bf16"):
        out = work / f"teacher-{precision}"
        if not out.exists():
            train_teacher(
                data, out, TeacherConfig(shape=QUICK_TEACHER_SHAPE, train=TrainConfig(epochs=60, precision=precision))
            )
        runs[f"quick teacher, {precision}"] = out
    for precision in ("fp32", "bf16"):
        out = work / f"student-{precision}"
        if not out.exists():
            distill(work / "teacher-fp32", data, out, DistillConfig(train=TrainConfig(epochs=60, precision=precision)))
        runs[f"default student, {precision}"] = out
    result, rows, users = {"machine": machine()}, [], {}
    for name, path in runs.items():
        manifest = json.loads((path / "manifest.json").read_text())
        users[name] = per_user_ndcg(path)
        test = manifest["metrics"]["test"]
        training = manifest["training"]
        result[name] = {
            "test": test,
            "precision_ran": training.get("precision"),
            "epochs_run": training["epochs_run"],
            "best_epoch": training["best_epoch"],
            "training_minutes": round(training["seconds"] / 60, 2),
            "ndcg10": dict(zip(("mean", "ci95"), _ci(metrics.bootstrap_interval(users[name])))),
        }
        rows.append(
            [
                name,
                training.get("precision"),
                fmt_ci(result[name]["ndcg10"]),
                f"{test.get('HR@10', float('nan')):.3f}",
                f"{training['epochs_run']} ({training['best_epoch']})",
                f"{training['seconds'] / 60:.2f}",
            ]
        )
    pairs = {}
    for model in ("quick teacher", "default student"):
        a, b = users[f"{model}, bf16"], users[f"{model}, fp32"]
        pairs[model] = metrics.paired_bootstrap(a, b)
        pairs[model]["time_ratio_fp32_over_bf16"] = (
            result[f"{model}, fp32"]["training_minutes"] / result[f"{model}, bf16"]["training_minutes"]
        )
    result["paired_bf16_minus_fp32"] = pairs
    print_table(["model", "ran in", "test NDCG@10 [95%]", "HR@10", "epochs (best)", "train min"], rows)
    print()
    for model, p in pairs.items():
        print(
            f"{model}: bf16 - fp32 NDCG@10 {p['diff']:+.4f} [{p['ci95'][0]:+.4f}, {p['ci95'][1]:+.4f}] "
            f"(p = {p['p_value']:.2f}); fp32 / bf16 training time {p['time_ratio_fp32_over_bf16']:.2f}x"
        )
    print(f"\nwrote {save('precision', result)}")


if __name__ == "__main__":
    run_benchmark(main)
