"""int8 vs fp32 of the same student, per format: file size, test NDCG@10 and batch-1 latency.

    python benchmarks/quantize.py [--model runs/bench-teacher/student-distilled] [--runs 1000]

Exports the student for `arm64` (ONNX + TFLite), runs `edgerec quantize` with the profile's
settings, and also builds the full-integer TFLite (ai-edge-quantizer static_wi8_ai8) to show why
the profile does not use it. NDCG@10 on all test users (full ranking, history masked) with 95%
intervals and a paired bootstrap vs fp32 on the same users; latency p50/p95 at batch 1 with the
profile's threads, engines timed in round-robin blocks in one process. Writes
benchmarks/results/quantize.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fmt_ci, machine, print_table, save  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("runs/bench-teacher/student-distilled"))
    parser.add_argument("--data", type=Path, default=Path("runs/bench-teacher/data"))
    parser.add_argument("--target", default="arm64")
    parser.add_argument("--runs", type=int, default=1000)
    args = parser.parse_args()

    from edgerec import metrics
    from edgerec.data import load_data
    from edgerec.evaluate import evaluate
    from edgerec.export import ExportConfig, export
    from edgerec.quantize import QuantizeConfig, quantize, quantize_tflite
    from edgerec.runtimes import LiteRTScorer, OnnxScorer, encode
    from edgerec.targets import load_target

    target = load_target(args.target)
    data = load_data(args.data)
    histories = data.examples("test")[0]
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "fp32", Path(tmp) / "int8"
        export(args.model, args.data, fp32, ExportConfig(target=args.target))
        started = time.perf_counter()
        manifest = quantize(fp32, args.data, int8, QuantizeConfig(target=args.target), log=lambda m: None)
        seconds = time.perf_counter() - started
        static = Path(tmp) / "static.tflite"
        quantize_tflite(fp32 / "model.tflite", static, "static", True, _tflite_calibration(fp32, data),
                        ["FULLY_CONNECTED", "BATCH_MATMUL"])
        max_len = json.loads((fp32 / "metadata.json").read_text())["max_len"]
        n, threads = data.num_items, target.threads
        models = {
            "onnx fp32": (OnnxScorer(fp32 / "model.onnx", max_len, n, target.onnx.input_dtype, threads), fp32 / "model.onnx"),
            "onnx int8": (OnnxScorer(int8 / "model.onnx", max_len, n, target.onnx.input_dtype, threads), int8 / "model.onnx"),
            "tflite fp32": (LiteRTScorer(fp32 / "model.tflite", max_len, n, threads), fp32 / "model.tflite"),
            "tflite int8": (LiteRTScorer(int8 / "model.tflite", max_len, n, threads), int8 / "model.tflite"),
            "tflite full-integer": (LiteRTScorer(static, max_len, n, threads), static),
        }
        reports = {name: evaluate(scorer, data, "test") for name, (scorer, _) in models.items()}
        sizes = {name: path.stat().st_size for name, (_, path) in models.items()}
        inputs = [encode([histories[i % len(histories)]], max_len, "int64") for i in range(args.runs)]
        times = {name: [] for name in models}
        block = 50
        for start in range(0, len(inputs), block):  # round-robin blocks: noise hits all alike
            for name, (scorer, _) in models.items():
                for i, ids in enumerate(inputs[start: start + block]):
                    ids = ids.astype(scorer.dtype)
                    began = time.perf_counter()
                    scorer.run(ids)
                    if i >= 5:
                        times[name].append((time.perf_counter() - began) * 1e3)

    stats = {name: {"p50_ms": float(np.percentile(t, 50)), "p95_ms": float(np.percentile(t, 95))}
             for name, t in times.items()}
    rows, results = [], {}
    for name in models:
        fmt = name.split()[0]
        base = f"{fmt} fp32"
        ndcg = reports[name]["per_user"]["NDCG@10"]
        ref = reports[base]["per_user"]["NDCG@10"]
        paired = metrics.paired_bootstrap(ndcg, ref) if name != base else None
        results[name] = {
            "bytes": sizes[name], "size_ratio": sizes[name] / sizes[base],
            "test": {k: reports[name]["metrics"][k] for k in ("HR@10", "NDCG@10", "MRR")},
            "ndcg_ratio": float(np.mean(ndcg) / np.mean(ref)), "paired_vs_fp32": paired,
            **stats[name], "p50_ratio": stats[name]["p50_ms"] / stats[base]["p50_ms"]}
        rows.append([name, f"{sizes[name] / 1e6:.3f}", f"{results[name]['size_ratio']:.3f}",
                     fmt_ci(reports[name]["metrics"]["NDCG@10"]), f"{results[name]['ndcg_ratio']:.3f}",
                     f"{stats[name]['p50_ms']:.4f}", f"{stats[name]['p95_ms']:.4f}",
                     f"{results[name]['p50_ratio']:.2f}"])
    print_table(["model", "MB", "size / fp32", "test NDCG@10 [95% CI]", "NDCG / fp32", "p50 ms",
                 "p95 ms", "p50 / fp32"], rows)
    payload = {"model": str(args.model), "target": args.target, "threads": target.threads, "runs": args.runs,
               "batch": 1, "machine": machine(), "quantize_seconds": round(seconds, 1),
               "quantization": {f: {k: v for k, v in r.items() if k not in ("trail",)}
                                for f, r in manifest["quantization"].items()},
               "results": results}
    print(f"wrote {save('quantize', payload)}")


def _tflite_calibration(bundle: Path, data):
    from edgerec.quantize import calibrate_tflite

    with tempfile.TemporaryDirectory() as tmp:
        max_len = json.loads((bundle / "metadata.json").read_text())["max_len"]
        return calibrate_tflite(bundle / "model.tflite", data.calibration(), max_len, Path(tmp) / "c.json")


if __name__ == "__main__":
    main()
