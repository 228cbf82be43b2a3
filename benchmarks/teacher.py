"""Which teacher kind is better on movielens-100k: causal (next item at every position) or
masked (BERT4Rec cloze)? Same shape, same budget, same test users; full ranking.

    python benchmarks/teacher.py [--minutes 15] [--work runs/bench-teacher]

Prints a table and writes benchmarks/results/teacher.json. The two kinds are compared with a
paired bootstrap of per-user NDCG@10 differences (design.md's protocol).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fmt_ci, machine, print_table, run_benchmark, save  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="training budget per teacher")
    parser.add_argument("--work", type=Path, default=Path("runs/bench-teacher"))
    parser.add_argument("--kinds", default="causal,masked")
    args = parser.parse_args()

    from edgerec.core.evaluation import evaluate
    from edgerec.core.interactions import load_data
    from edgerec.core.metrics import paired_bootstrap
    from edgerec.core.models import load_model
    from edgerec.stages.data import make_data
    from edgerec.stages.teacher import TeacherConfig, train_teacher

    data_dir = args.work / "data"
    if not (data_dir / "manifest.json").is_file():
        make_data(data_dir, dataset="movielens-100k")
    data = load_data(data_dir)
    results, per_user = {}, {}
    for kind in args.kinds.split(","):
        default = TeacherConfig()
        config = replace(default, kind=kind, train=replace(default.train, max_minutes=args.minutes))
        started = time.perf_counter()
        manifest = train_teacher(data_dir, args.work / f"teacher-{kind}", config, overwrite=True)
        wall = time.perf_counter() - started
        report = evaluate(load_model(args.work / f"teacher-{kind}" / "model"), data, "test")
        per_user[kind] = report["per_user"]["NDCG@10"]
        results[kind] = {
            "config": {"shape": vars(config.shape), "train": vars(config.train)},
            "parameters": manifest["parameters"],
            "wall_seconds": round(wall, 1),
            "training": {k: v for k, v in manifest["training"].items() if k != "history"},
            "test": report["metrics"],
        }
    rows = [
        [
            kind,
            f"{r['parameters']:,}",
            fmt_ci(r["test"]["HR@10"]),
            fmt_ci(r["test"]["NDCG@10"]),
            f"{r['test']['MRR']['mean']:.4f}",
            r["training"]["best_epoch"],
            r["training"]["stopped"],
            f"{r['wall_seconds'] / 60:.1f}",
        ]
        for kind, r in results.items()
    ]
    print_table(
        ["kind", "params", "HR@10 [95% CI]", "NDCG@10 [95% CI]", "MRR", "best epoch", "stopped by", "minutes"], rows
    )
    payload = {
        "dataset": "movielens-100k",
        "users": len(data.users),
        "protocol": "leave-one-out, full ranking, history masked",
        "machine": machine(),
        "results": results,
    }
    if "causal" in per_user and "masked" in per_user:
        test = paired_bootstrap(per_user["causal"], per_user["masked"])
        payload["causal_minus_masked_ndcg10"] = test
        print(
            f"\ncausal - masked NDCG@10: {test['diff']:+.4f} "
            f"[{test['ci95'][0]:+.4f}, {test['ci95'][1]:+.4f}], p = {test['p_value']:.4f}"
        )
    print(f"\nwrote {save('teacher', payload)}")


if __name__ == "__main__":
    run_benchmark(main)
