"""Which recipe makes the 2.1M-parameter default teacher (12x the default student) at least as
accurate as the 227K quick teacher on movielens-100k? Same data, same test users, full ranking.

    python benchmarks/teacher_recipe.py [--recipes quick,wide-d02,wide] [--precision fp32,bf16]
                                        [--parallel 2] [--work runs/bench-recipe]

Every recipe x precision trains in its own process (one torch thread each, `--parallel` at a
time: two single-threaded runs use 2 cores without the oversubscription a 2-thread run suffers
beside another process). Budgets are epochs (60, patience 15), so the figures do not depend on
how busy the machine is; the minutes do. Prints a table, writes
benchmarks/results/teacher_recipe.json with each teacher's test metrics (95% intervals) and the
paired bootstrap of its per-user NDCG@10 against the quick teacher's at the same precision.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fmt_ci, machine, print_table, run_benchmark, run_single_threaded, save  # noqa: E402

# name -> (shape overrides, training overrides) over the default teacher (edgerec.stages.teacher)
RECIPES = {
    "quick": (
        {"hidden": 64, "heads": 2, "intermediate": 256, "dropout": 0.2, "attention_dropout": 0.2},
        {"weight_decay": 0.0, "warmup_steps": 0},
    ),
    "wide-d02": ({"dropout": 0.2, "attention_dropout": 0.2}, {"weight_decay": 0.0}),
    "wide-d05": ({"attention_dropout": 0.5}, {"weight_decay": 0.0}),
    "wide": ({}, {}),  # the default: dropout 0.5 / 0.2, weight decay 0.5
}


def train_one(data_dir: Path, out: Path, recipe: str, precision: str, epochs: int) -> None:
    """Child process: train one teacher, evaluate it on the test users, write result.json."""
    import torch

    torch.set_num_threads(1)
    from edgerec.core.evaluation import evaluate
    from edgerec.core.interactions import load_data
    from edgerec.core.models import load_model
    from edgerec.stages.teacher import TeacherConfig, train_teacher

    shape_over, train_over = RECIPES[recipe]
    default = TeacherConfig()
    config = replace(
        default,
        shape=replace(default.shape, **shape_over),
        train=replace(default.train, epochs=epochs, patience=15, precision=precision, **train_over),
    )
    started = time.perf_counter()
    manifest = train_teacher(data_dir, out, config, overwrite=True)
    wall = time.perf_counter() - started
    report = evaluate(load_model(out / "model"), load_data(data_dir), "test")
    (out / "result.json").write_text(
        json.dumps(
            {
                "recipe": recipe,
                "config": {"shape": asdict(config.shape), "train": asdict(config.train)},
                "parameters": manifest["parameters"],
                "wall_seconds": round(wall, 1),
                "training": {k: v for k, v in manifest["training"].items() if k != "history"},
                "history": manifest["training"]["history"],
                "test": report["metrics"],
                "per_user_ndcg10": list(report["per_user"]["NDCG@10"]),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default="quick,wide-d02,wide")
    parser.add_argument("--precision", default="fp32", help="comma-separated: fp32, bf16")
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=60, help="epoch budget (early stopping: patience 15)")
    parser.add_argument("--work", type=Path, default=Path("runs/bench-recipe"))
    parser.add_argument("--name", default="teacher_recipe", help="results file (benchmarks/results/NAME.json)")
    parser.add_argument("--one", nargs=2, metavar=("RECIPE", "PRECISION"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    from edgerec.core.interactions import load_data
    from edgerec.core.metrics import paired_bootstrap
    from edgerec.stages.data import make_data

    data_dir = args.work / "data"
    if args.one:
        train_one(data_dir, args.work / f"{args.one[0]}-{args.one[1]}", *args.one, args.epochs)
        return
    if not (data_dir / "manifest.json").is_file():
        make_data(data_dir, dataset="movielens-100k")
    runs = [(r, p) for p in args.precision.split(",") for r in args.recipes.split(",")]
    unknown = [r for r, _ in runs if r not in RECIPES]
    if unknown:
        raise SystemExit(f"unknown recipe(s) {unknown}; known: {', '.join(RECIPES)}")
    run_single_threaded(
        [
            (f"{r}-{p}", [__file__, "--work", str(args.work), "--epochs", str(args.epochs), "--one", r, p])
            for r, p in runs
        ],
        args.work,
        args.parallel,
    )
    results = {f"{r} {p}": json.loads((args.work / f"{r}-{p}" / "result.json").read_text()) for r, p in runs}
    for recipe, precision in runs:
        base = results.get(f"quick {precision}")
        res = results[f"{recipe} {precision}"]
        if base is not None and recipe != "quick":
            res["minus_quick_ndcg10"] = paired_bootstrap(res["per_user_ndcg10"], base["per_user_ndcg10"])
    rows = []
    for name, r in results.items():
        vs = r.get("minus_quick_ndcg10")
        rows.append(
            [
                name,
                f"{r['parameters']:,}",
                fmt_ci(r["test"]["NDCG@10"]),
                fmt_ci(r["test"]["HR@10"]),
                f"{r['training']['best_epoch']}/{r['training']['epochs_run']}",
                f"{vs['diff']:+.4f} [{vs['ci95'][0]:+.4f}, {vs['ci95'][1]:+.4f}]" if vs else "-",
                f"{r['wall_seconds'] / 60:.1f}",
            ]
        )
    print_table(
        [
            "teacher",
            "params",
            "NDCG@10 [95% CI]",
            "HR@10 [95% CI]",
            "best/run epochs",
            "- quick, paired",
            "minutes (1 thread)",
        ],
        rows,
    )
    for r in results.values():
        r.pop("per_user_ndcg10")
    payload = {
        "dataset": "movielens-100k",
        "users": len(load_data(data_dir).users),
        "protocol": "leave-one-out, full ranking, history masked",
        "machine": machine(),
        "threads_per_run": 1,
        "parallel_runs": args.parallel,
        "recipes": {k: {"shape": s, "train": t} for k, (s, t) in RECIPES.items()},
        "results": results,
    }
    print(f"\nwrote {save(args.name, payload)}")


if __name__ == "__main__":
    run_benchmark(main)
