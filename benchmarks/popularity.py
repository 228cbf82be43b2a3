"""Does compression push recommendations toward popular items, and does --tail-boost help?

    python benchmarks/popularity.py [--work runs/bench-teacher] [--boost 0.5] [--minutes 10]

Trains one student with `edgerec distill --tail-boost B` (same teacher, data, shape and budget as
the default student in benchmarks/distill.py, which must have run), then compares teacher,
default student and boosted student on the same test users: coverage@10, mean popularity, Gini
and tail share of their top-10 lists (user-bootstrap 95% intervals for the per-recommendation
means; coverage differences as a 95% range over random halves of the users, the same half for
both models), and NDCG@10 with a paired bootstrap. Writes
benchmarks/results/popularity.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fmt_ci, machine, print_table, run_benchmark, save  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/bench-teacher"))
    parser.add_argument("--boost", type=float, default=0.5)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--reuse", action="store_true", help="use an existing boosted student instead of training it")
    args = parser.parse_args()

    from edgerec.core import metrics
    from edgerec.core.distillation import DistillConfig
    from edgerec.core.evaluation import evaluate, rank_users
    from edgerec.core.interactions import load_data
    from edgerec.core.models import load_model
    from edgerec.core.training import TrainConfig
    from edgerec.stages.distill import distill

    data_dir, teacher_dir = args.work / "data", args.work / "teacher-causal"
    boosted_dir = args.work / f"student-tail-boost-{args.boost:g}"
    if args.reuse and (boosted_dir / "manifest.json").is_file():
        from edgerec.core.artifacts import read_manifest

        manifest = read_manifest(boosted_dir, "student")
    else:
        manifest = distill(
            teacher_dir,
            data_dir,
            boosted_dir,
            DistillConfig(tail_boost=args.boost, train=TrainConfig(max_minutes=args.minutes)),
            overwrite=True,
        )
    data = load_data(data_dir)
    histories, targets = data.examples("test")
    popularity = metrics.item_popularity(data.train_sequences(), data.num_items)
    models = {
        "teacher": teacher_dir,
        "student (default)": args.work / "student-distilled",
        f"student (tail boost {args.boost:g})": boosted_dir,
    }
    tops, ndcg, figures, rows = {}, {}, {}, []
    for name, path in models.items():
        rec = load_model(path / "model")
        _, tops[name] = rank_users(rec, histories, targets, data.num_items)
        report = evaluate(rec, data, "test")
        ndcg[name] = report["per_user"]["NDCG@10"]
        figures[name] = {
            **metrics.beyond_accuracy(tops[name], popularity, n_boot=1000),
            "ndcg10": report["metrics"]["NDCG@10"],
        }
        f = figures[name]
        rows.append(
            [
                name,
                f"{f['coverage']:.3f}",
                _ci(f, "mean_popularity", 1),
                f"{f['gini']:.3f}",
                _ci(f, "tail_share"),
                fmt_ci(f["ndcg10"]),
            ]
        )
    print_table(
        ["model", "coverage@10", "mean popularity [95% CI]", "Gini", "tail share [95% CI]", "test NDCG@10 [95% CI]"],
        rows,
    )
    base, boosted = "student (default)", f"student (tail boost {args.boost:g})"
    paired = {
        "coverage_default_minus_teacher": metrics.paired_half_sample(tops[base], tops["teacher"], popularity),
        "coverage_boost_minus_default": metrics.paired_half_sample(tops[boosted], tops[base], popularity),
        "tail_share_boost_minus_default": metrics.paired_half_sample(
            tops[boosted], tops[base], popularity, "tail_share"
        ),
        "ndcg_boost_minus_default": metrics.paired_bootstrap(ndcg[boosted], ndcg[base]),
        "ndcg_default_minus_teacher": metrics.paired_bootstrap(ndcg[base], ndcg["teacher"]),
    }
    for name, p in paired.items():
        low, high = p.get("ci95") or p["half_sample_range95"]
        print(
            f"{name}: {p['diff']:+.4f} [{low:+.4f}, {high:+.4f}]"
            + (" (range over random halves of the users)" if "half_sample_range95" in p else " (paired bootstrap)")
        )
    payload = {
        "boost": args.boost,
        "machine": machine(),
        "figures": figures,
        "paired": paired,
        "boosted_training": manifest["training"] if manifest else None,
    }
    print(f"wrote {save('popularity', payload)}")


def _ci(figures: dict, key: str, digits: int = 3) -> str:
    low, high = figures["ci95"][key]
    return f"{figures[key]:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


if __name__ == "__main__":
    run_benchmark(main, "python benchmarks/distill.py")
