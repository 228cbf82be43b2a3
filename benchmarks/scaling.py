"""How the default student's int8 ONNX grows with the catalogue and the history length.

    python benchmarks/scaling.py [--items 10000 100000 1000000] [--lengths 20 50 200]

Synthetic catalogues, random weights (size and speed do not depend on the values): the default
student shape (hidden 64, 1 layer) is exported by edgerec's export graph and quantized with the
arm64 profile's ONNX settings, calibrated on random histories. p50/p95 at batch 1 with 2 threads.
The floor is the int8 item table's bytes divided by this machine's memory read bandwidth
(measured here with NumPy on a buffer larger than the caches): a batch-1 query must read the
whole table once to score every item. Writes benchmarks/results/scaling.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, print_table, run_benchmark, save  # noqa: E402


def read_bandwidth(megabytes: int = 1024, repeats: int = 5) -> float:
    """Bytes per second one core reads from memory: a float64 sum (SIMD, memory-bound) over a
    buffer far larger than the caches, best of `repeats`."""
    buffer = np.ones(megabytes * 2**20 // 8, dtype=np.float64)
    best = np.inf
    for _ in range(repeats):
        started = time.perf_counter()
        buffer.sum()
        best = min(best, time.perf_counter() - started)
    return buffer.nbytes / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--lengths", type=int, nargs="+", default=[20, 50, 200])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from edgerec.core.distillation import STUDENT_SHAPE
    from edgerec.core.graphs import scoring_graph
    from edgerec.core.models import RecModel, build_id_model
    from edgerec.core.targets import load_target
    from edgerec.formats.onnx.export import export_onnx
    from edgerec.formats.onnx.int8 import calibrate_onnx, input_feeds, onnx_units, quantize_onnx
    from edgerec.formats.onnx.runtime import OnnxScorer

    settings = load_target("arm64").quantization
    bandwidth = read_bandwidth()
    rng = np.random.default_rng(0)
    rows, results = [], []
    for items in args.items:
        for length in args.lengths:
            torch.manual_seed(0)
            shape = replace(STUDENT_SHAPE, max_len=length)
            model = build_id_model("causal", items + 2, shape).eval()
            rec = RecModel(model, {"kind": "causal", "num_items": items, "max_len": length, "mask_token": items + 1})
            histories = [rng.integers(1, items + 1, size=int(rng.integers(1, length + 1))) for _ in range(64)]
            with tempfile.TemporaryDirectory() as tmp:
                fp32, int8, ranges = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx", Path(tmp) / "r.json"
                with torch.inference_mode():
                    export_onnx(scoring_graph(rec), fp32, length, 17, "int64", None, {})
                calibrate_onnx(fp32, input_feeds(histories, length, "int64"), settings.calibration, ranges)
                quantize_onnx(fp32, int8, settings, ranges, onnx_units(fp32, settings.keep_float))
                scorer = OnnxScorer(int8, length, items, "int64", args.threads)
                from edgerec.devices.runtimes import encode

                inputs = [encode([histories[i % len(histories)]], length, "int64") for i in range(args.runs + 20)]
                for ids in inputs[:20]:
                    scorer.run(ids)
                times = []
                for ids in inputs[20:]:
                    started = time.perf_counter()
                    scorer.run(ids)
                    times.append((time.perf_counter() - started) * 1e3)
                size = int8.stat().st_size
                fp32_size = fp32.stat().st_size
            table = (items + 2) * shape.hidden  # int8 bytes of the item table
            floor = table / bandwidth * 1e3
            p50 = float(np.percentile(times, 50))
            results.append(
                {
                    "items": items,
                    "max_len": length,
                    "int8_bytes": size,
                    "fp32_bytes": fp32_size,
                    "table_int8_bytes": table,
                    "p50_ms": p50,
                    "p95_ms": float(np.percentile(times, 95)),
                    "floor_ms": floor,
                    "p50_over_floor": p50 / floor,
                }
            )
            rows.append(
                [
                    f"{items:,}",
                    length,
                    f"{size / 1e6:.2f}",
                    f"{table / size:.0%}",
                    f"{p50:.3f}",
                    f"{np.percentile(times, 95):.3f}",
                    f"{floor:.3f}",
                    f"{p50 / floor:.1f}",
                ]
            )
            print(f"  {items:,} items, max_len {length}: {p50:.3f} ms", flush=True)
    print_table(["items", "max_len", "int8 MB", "table share", "p50 ms", "p95 ms", "floor ms", "p50 / floor"], rows)
    payload = {
        "threads": args.threads,
        "runs": args.runs,
        "batch": 1,
        "machine": machine(),
        "read_bandwidth_gb_s": bandwidth / 1e9,
        "shape": "default student (hidden 64, 1 layer, 2 heads, FFN 256)",
        "results": results,
    }
    print(f"memory read bandwidth (NumPy, 1 thread): {bandwidth / 1e9:.1f} GB/s")
    print(f"wrote {save('scaling', payload)}")


if __name__ == "__main__":
    run_benchmark(main)
