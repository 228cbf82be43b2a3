"""Distillation on movielens-100k: the default teacher, the default student distilled from it,
and the same student trained on the ground truth alone (alpha = 0). Same test users, full ranking.

    python benchmarks/distill.py [--work runs/bench-teacher] [--minutes 10]

Reuses the data and causal teacher that benchmarks/teacher.py leaves in --work (trains them if
missing). Prints a table, paired tests, and writes benchmarks/results/distill.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fmt_ci, machine, print_table, run_benchmark, save  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/bench-teacher"))
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget per student")
    parser.add_argument("--name", default="distill", help="results file name (benchmarks/results/NAME.json)")
    args = parser.parse_args()

    from edgerec.core.distillation import DistillConfig
    from edgerec.core.evaluation import evaluate
    from edgerec.core.interactions import load_data
    from edgerec.core.metrics import paired_bootstrap
    from edgerec.core.models import load_model
    from edgerec.stages.data import make_data
    from edgerec.stages.distill import distill
    from edgerec.stages.teacher import TeacherConfig, train_teacher

    data_dir, teacher_dir = args.work / "data", args.work / "teacher-causal"
    if not (data_dir / "manifest.json").is_file():
        make_data(data_dir, dataset="movielens-100k")
    if not (teacher_dir / "manifest.json").is_file():
        train_teacher(data_dir, teacher_dir, TeacherConfig())
    data = load_data(data_dir)
    teacher = load_model(teacher_dir / "model")
    rows, results, per_user = [], {}, {}
    report = evaluate(teacher, data, "test")
    per_user["teacher"] = report["per_user"]
    results["teacher"] = {"parameters": teacher.num_parameters, "test": report["metrics"], "seconds": None}
    default = DistillConfig()
    for name, alpha in (("student distilled", default.alpha), ("student alone", 0.0)):
        config = replace(default, alpha=alpha, train=replace(default.train, max_minutes=args.minutes))
        out = args.work / name.replace(" ", "-")
        started = time.perf_counter()
        manifest = distill(teacher_dir, data_dir, out, config, overwrite=True)
        wall = time.perf_counter() - started
        model = load_model(out / "model")
        report = evaluate(model, data, "test", reference=teacher)
        per_user[name] = report["per_user"]
        results[name] = {
            "parameters": model.num_parameters,
            "test": report["metrics"],
            "seconds": round(wall, 1),
            "alpha": alpha,
            "training": {k: v for k, v in manifest["training"].items() if k != "history"},
            "teacher_targets_seconds": manifest["teacher_targets"]["seconds"],
        }
    for name, r in results.items():
        t = r["test"]
        agreement = t.get("top10_agreement", {}).get("mean")
        rows.append(
            [
                name,
                f"{r['parameters']:,}",
                fmt_ci(t["HR@10"]),
                fmt_ci(t["NDCG@10"]),
                f"{t['MRR']['mean']:.4f}",
                "-" if agreement is None else f"{agreement:.3f}",
                "-" if r["seconds"] is None else f"{r['seconds'] / 60:.1f}",
            ]
        )
    print_table(["model", "params", "HR@10 [95% CI]", "NDCG@10 [95% CI]", "MRR", "top10 agree", "minutes"], rows)
    tests = {}
    for a, b in (("student distilled", "teacher"), ("student distilled", "student alone")):
        test = paired_bootstrap(per_user[a]["NDCG@10"], per_user[b]["NDCG@10"])
        tests[f"{a} - {b}"] = test
        print(
            f"NDCG@10 {a} - {b}: {test['diff']:+.4f} [{test['ci95'][0]:+.4f}, "
            f"{test['ci95'][1]:+.4f}], p = {test['p_value']:.4f}"
        )
    ratio = results["student distilled"]["parameters"] / results["teacher"]["parameters"]
    print(f"student / teacher parameters: {ratio:.3f}")
    payload = {
        "dataset": "movielens-100k",
        "users": len(data.users),
        "machine": machine(),
        "protocol": "leave-one-out, full ranking, history masked",
        "results": results,
        "paired_ndcg10": tests,
        "parameter_ratio": ratio,
    }
    payload["teacher_config"] = json.loads((teacher_dir / "manifest.json").read_text())["config"]
    print(f"wrote {save(args.name, payload)}")


if __name__ == "__main__":
    run_benchmark(main)
