"""Pruned vs unpruned student: parameters, exported ONNX size and latency, test NDCG@10.

    python benchmarks/prune.py [--student runs/bench-teacher/student-distilled] [--sparsity 0.5]

Prunes the default distilled student (50% of heads and FFN neurons by default; a second variant
also factorises the item table to rank 16), recovers each with the default recovery distillation,
exports all for x86_64-vnni (ONNX) and times them at batch 1
in round-robin blocks in one process. NDCG@10 on all test users with 95% intervals and a paired
bootstrap on the same users. Writes benchmarks/results/prune.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fmt_ci, machine, print_table, run_benchmark, save  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", type=Path, default=Path("runs/bench-teacher/student-distilled"))
    parser.add_argument("--teacher", type=Path, default=Path("runs/bench-teacher/teacher-causal"))
    parser.add_argument("--data", type=Path, default=Path("runs/bench-teacher/data"))
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--rank", type=int, default=16, help="item-table rank of the third variant")
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from edgerec.core import metrics
    from edgerec.core.evaluation import evaluate
    from edgerec.core.interactions import load_data
    from edgerec.core.models import load_model
    from edgerec.devices.runtimes import encode
    from edgerec.formats.onnx.runtime import OnnxScorer
    from edgerec.stages.export import ExportConfig, export
    from edgerec.stages.prune import PruneConfig, prune

    torch.set_num_threads(args.threads)
    data = load_data(args.data)
    histories = data.examples("test")[0]
    with tempfile.TemporaryDirectory() as tmp:
        models, manifests, seconds = {"student": args.student}, {}, {}
        variants = {
            f"pruned {args.sparsity:.0%}": PruneConfig(sparsity=args.sparsity),
            f"pruned {args.sparsity:.0%} + item rank {args.rank}": PruneConfig(
                sparsity=args.sparsity, embedding_rank=args.rank
            ),
        }
        for name, config in variants.items():
            out = Path(tmp) / f"pruned-{len(models)}"
            started = time.perf_counter()
            manifests[name] = prune(args.student, args.teacher, args.data, out, config)
            seconds[name] = round(time.perf_counter() - started, 1)
            models[name] = out
        recs = {name: load_model(path / "model") for name, path in models.items()}
        reports = {name: evaluate(rec, data, "test") for name, rec in recs.items()}
        scorers, sizes = {}, {}
        for name, path in models.items():
            bundle = Path(tmp) / f"bundle-{len(scorers)}"
            export(path, args.data, bundle, ExportConfig(target="x86_64-vnni"))
            sizes[name] = (bundle / "model.onnx").stat().st_size
            scorers[name] = OnnxScorer(bundle / "model.onnx", recs[name].max_len, data.num_items, "int64", args.threads)
        inputs = [encode([histories[i % len(histories)]], recs["student"].max_len, "int64") for i in range(args.runs)]
        times = {name: [] for name in models}
        for start in range(0, len(inputs), 50):  # round-robin blocks: noise hits both alike
            for name, scorer in scorers.items():
                for i, ids in enumerate(inputs[start : start + 50]):
                    began = time.perf_counter()
                    scorer.run(ids)
                    if i >= 5:
                        times[name].append((time.perf_counter() - began) * 1e3)
    base = "student"
    results, rows = {}, []
    for name in models:
        p50 = float(np.percentile(times[name], 50))
        ndcg = reports[name]["per_user"]["NDCG@10"]
        results[name] = {
            "parameters": recs[name].num_parameters,
            "onnx_bytes": sizes[name],
            "p50_ms": p50,
            "p95_ms": float(np.percentile(times[name], 95)),
            "test": {k: reports[name]["metrics"][k] for k in ("HR@10", "NDCG@10", "MRR")},
            "ndcg_ratio": float(np.mean(ndcg) / np.mean(reports[base]["per_user"]["NDCG@10"])),
            "paired_vs_student": (
                metrics.paired_bootstrap(ndcg, reports[base]["per_user"]["NDCG@10"]) if name != base else None
            ),
        }
        rows.append(
            [
                name,
                f"{recs[name].num_parameters:,}",
                f"{sizes[name] / 1e6:.3f}",
                f"{p50:.4f}",
                f"{p50 / float(np.percentile(times[base], 50)):.2f}",
                fmt_ci(reports[name]["metrics"]["NDCG@10"]),
                f"{results[name]['ndcg_ratio']:.3f}",
            ]
        )
    print_table(
        ["model", "parameters", "ONNX MB", "ORT p50 ms", "p50 / student", "test NDCG@10 [95% CI]", "NDCG / student"],
        rows,
    )
    payload = {
        "student": str(args.student),
        "teacher": str(args.teacher),
        "sparsity": args.sparsity,
        "rank": args.rank,
        "threads": args.threads,
        "runs": args.runs,
        "machine": machine(),
        "prune_seconds": seconds,
        "recovery": {
            name: {k: m["pruning"][k] for k in ("heads_per_layer", "ffn_per_layer", "steps")}
            for name, m in manifests.items()
        },
        "results": results,
    }
    print(f"wrote {save('prune', payload)}")


if __name__ == "__main__":
    run_benchmark(main, "python benchmarks/distill.py")
