"""What the bundle's further entry points cost on ARM: the rules input (`export --rules`) against
the plain top-K model at a 10^4-item catalogue, and candidate reranking (`export --rerank 100`)
against the full-catalogue call at 10^5 items.

    python benchmarks/entries.py [--rules-items 10000] [--rerank-items 100000] [--candidates 100]

Synthetic catalogues, random weights (the instructions a call runs do not depend on the values):
the default student shape (hidden 64, one layer, max_len 200), every file written by edgerec's
own graphs and writers for the arm64 profile, fp32 (the entry points have no int8 form yet).
Each file is counted on the aarch64 builds of ONNX Runtime and LiteRT under qemu (emulated
Cortex-A76, the instruction-counting plugin; edgerec.devices.emulator), batch-1 calls on random
histories. Ratios are of counts taken in this run. Writes benchmarks/results/entries.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, print_table, run_benchmark, save  # noqa: E402

TOP_K = 10
RUNTIMES = ("onnxruntime", "litert")


def student(items: int):
    import torch

    from edgerec.core.distillation import STUDENT_SHAPE
    from edgerec.core.models import RecModel, build_id_model

    torch.manual_seed(0)
    model = build_id_model("causal", items + 2, STUDENT_SHAPE).eval()
    meta = {"kind": "causal", "num_items": items, "max_len": STUDENT_SHAPE.max_len, "mask_token": items + 1}
    return RecModel(model, meta)


def write_files(rec, folder: Path, target, entry: str, size: int | None, histories) -> tuple[dict, dict]:
    """({(what, format): path}, feeds): the plain top-K model, the scores-only model and the entry."""
    from edgerec.core.graphs import scoring_graph
    from edgerec.formats import FORMATS
    from edgerec.formats.entries import ENTRIES, example_inputs

    spec = ENTRIES[entry]
    feeds = spec.feeds(rec, histories, size, np.random.default_rng(1))
    files = {}
    for fmt in ("onnx", "tflite"):
        writer = FORMATS[fmt]
        for what, top_k in (("top-K model", TOP_K), ("scores model", None)):
            path = folder / f"{what.split()[0]}-{rec.num_items}.{writer.suffix or fmt}"
            writer.write_full(scoring_graph(rec, top_k), path, target, rec.max_len, top_k, {})
            files[what, fmt] = path
        path = folder / f"{entry}-{rec.num_items}.{writer.suffix or fmt}"

        def inputs(batch, dtype):
            return example_inputs({k: v[:1].repeat(batch, axis=0) for k, v in feeds.items()}, dtype)

        writer.write_entry(spec.graph(rec, TOP_K), path, target, inputs, list(spec.outputs), {}, entry)
        files[entry, fmt] = path
    return files, feeds


def count(device, files: dict, feeds: dict, few: int, many: int) -> dict:
    """{(what, runtime): instructions per call}."""
    fmt_of = {"onnxruntime": "onnx", "litert": "tflite"}
    out = {}
    for (what, fmt), path in files.items():
        for runtime in RUNTIMES:
            if fmt_of[runtime] != fmt:
                continue
            inputs = feeds if what in ("rules", "rerank") else feeds["input_ids"]
            result = device.instructions_per_call(runtime, path, inputs, few=few, many=many)
            out[what, runtime] = {
                "instructions_per_call": result["instructions_per_call"],
                "counts": result["counts"],
                "bytes": path.stat().st_size,
            }
            print(f"  {what:12s} {runtime:11s} {result['instructions_per_call']:>14,.0f}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules-items", type=int, default=10_000)
    parser.add_argument("--rerank-items", type=int, default=100_000)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--cpu", default="cortex-a76")
    parser.add_argument("--few", type=int, default=3, help="calls in the shorter counted run")
    parser.add_argument("--many", type=int, default=23, help="calls in the longer counted run")
    args = parser.parse_args()

    from edgerec.core.targets import load_target
    from edgerec.devices.emulator import EmulatedDevice

    target = load_target("arm64")
    device = EmulatedDevice.open(args.cpu, print)
    rng = np.random.default_rng(0)
    cases = []
    for entry, items, size in (("rules", args.rules_items, None), ("rerank", args.rerank_items, args.candidates)):
        rec = student(items)
        histories = [rng.integers(1, items + 1, size=int(rng.integers(5, rec.max_len + 1))) for _ in range(32)]
        print(f"{entry}: {items:,} items", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            files, feeds = write_files(rec, Path(tmp), target, entry, size, histories)
            counted = count(device, files, feeds, args.few, args.many)
        for runtime in RUNTIMES:
            base = counted["top-K model", runtime]["instructions_per_call"]
            scores_only = counted["scores model", runtime]["instructions_per_call"]
            own = counted[entry, runtime]
            cases.append(
                {
                    "entry": entry,
                    "items": items,
                    "candidates": size,
                    "runtime": runtime,
                    "cpu": args.cpu,
                    "instructions_per_call": own["instructions_per_call"],
                    "top_k_model_instructions_per_call": base,
                    "scores_model_instructions_per_call": scores_only,
                    "ratio_vs_top_k_model": own["instructions_per_call"] / base,
                    "ratio_vs_scores_model": own["instructions_per_call"] / scores_only,
                    "counts": own["counts"],
                    "bytes": own["bytes"],
                    "top_k_model_bytes": counted["top-K model", runtime]["bytes"],
                }
            )
    print_table(
        ["entry", "items", "runtime", "ARM instr/call", "top-K model", "ratio", "vs scores model"],
        [
            [
                c["entry"] + (f" ({c['candidates']})" if c["candidates"] else ""),
                f"{c['items']:,}",
                c["runtime"],
                f"{c['instructions_per_call']:,.0f}",
                f"{c['top_k_model_instructions_per_call']:,.0f}",
                f"{c['ratio_vs_top_k_model']:.3f}x",
                f"{c['ratio_vs_scores_model']:.3f}x",
            ]
            for c in cases
        ],
    )
    path = save(
        "entries",
        {
            "machine": machine(),
            "method": "instructions per batch-1 call on the aarch64 runtimes under qemu user mode "
            f"(emulated {args.cpu}, counting plugin): (count of {args.many} calls - count of {args.few}) "
            f"/ {args.many - args.few}, median of repeats; fp32 files, random weights, default student "
            f"shape; top-K model = model.<fmt> exported with --top-k {TOP_K}",
            "targets": {"rules_vs_top_k_model_max": 1.05, "rerank_vs_full_model_max": 0.1},
            "cases": cases,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    run_benchmark(main)
