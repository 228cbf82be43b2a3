"""Exported student vs the same student in PyTorch eager: batch-1 latency on real test histories.

The baseline ("pytorch eager") is the HF model's forward with the head applied at the last
position; "pytorch eager (export graph)" runs the exported graph itself (final layer computed for
the last position only) eagerly, to separate the graph's savings from the runtime's. "litert
(torch LayerNorm lowering)" is the same graph converted without edgerec's decomposed LayerNorms
(`writers.decomposed_layer_norms`), to measure what they buy. "onnxruntime, top-10 in graph" is the
`--top-k 10` graph as exported (one scatter masks the history, then TopK 10) beside the portable
form the TFLite files use (TopK of 10 + max_len, compare, one-hot pick), exported to ONNX here
only to time it.

    python benchmarks/export.py [--model runs/bench-teacher/student-distilled] [--runs 300]

Runs the PyTorch scoring graph, the ONNX file in onnxruntime and the TFLite file in LiteRT, all
with the same thread count, in round-robin blocks in one process so machine noise hits them alike; prints
p50/p95 and the ratios, writes benchmarks/results/export.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, print_table, run_benchmark, save  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("runs/bench-teacher/student-distilled"))
    parser.add_argument("--data", type=Path, default=Path("runs/bench-teacher/data"))
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import litert_torch
    import onnxruntime as ort
    import torch

    from edgerec.core.graphs import portable_top_k, scoring_graph
    from edgerec.core.interactions import load_data
    from edgerec.core.models import load_model
    from edgerec.devices.runtimes import encode
    from edgerec.formats.onnx.export import export_onnx
    from edgerec.formats.onnx.runtime import OnnxScorer
    from edgerec.formats.tflite.runtime import LiteRTScorer
    from edgerec.stages.export import ExportConfig, export

    torch.set_num_threads(args.threads)
    data = load_data(args.data)
    rec = load_model(args.model / "model")
    histories = data.examples("test")[0]
    with tempfile.TemporaryDirectory() as tmp:
        manifest = export(args.model, args.data, Path(tmp) / "b", ExportConfig(target="arm64"))
        onnx = OnnxScorer(Path(tmp) / "b" / "model.onnx", rec.max_len, rec.num_items, "int64", args.threads)
        tfl = LiteRTScorer(Path(tmp) / "b" / "model.tflite", rec.max_len, rec.num_items, args.threads)
        graph = scoring_graph(rec)
        plain = Path(tmp) / "plain-norms.tflite"
        litert_torch.convert(
            graph, sample_kwargs={"input_ids": torch.ones((1, rec.max_len), dtype=torch.int32)}
        ).export(str(plain))
        tfl_plain = LiteRTScorer(plain, rec.max_len, rec.num_items, args.threads)
        top_k = {}
        for form, portable in (("scatter", False), ("portable", True)):
            path = Path(tmp) / f"top10-{form}.onnx"
            with portable_top_k(portable):
                export_onnx(scoring_graph(rec, 10), path, rec.max_len, 17, "int64", 10, {})
            options = ort.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
            top_k[form] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        inputs = [encode([histories[i % len(histories)]], rec.max_len, "int64") for i in range(args.runs)]

        def torch_hf(ids):  # what a PyTorch user runs: the HF forward, head at the last position
            with torch.inference_mode():
                tensor = torch.from_numpy(ids)
                return rec.logits({"input_ids": tensor, "attention_mask": (tensor != 0).long()})

        def torch_graph(ids):  # the exported graph itself, run eagerly
            with torch.inference_mode():
                return graph(torch.from_numpy(ids))

        engines = {
            "pytorch eager": torch_hf,
            "pytorch eager (export graph)": torch_graph,
            "onnxruntime": onnx.run,
            "litert (tflite)": lambda ids: tfl.run(ids.astype(np.int32)),
            "litert (torch LayerNorm lowering)": lambda ids: tfl_plain.run(ids.astype(np.int32)),
            "onnxruntime, top-10 in graph": lambda ids: top_k["scatter"].run(None, {"input_ids": ids}),
            "onnxruntime, top-10 in graph (portable form)": lambda ids: top_k["portable"].run(None, {"input_ids": ids}),
        }
        for run in engines.values():  # warm-up
            for ids in inputs[:20]:
                run(ids)
        times = {name: [] for name in engines}
        # Round-robin blocks of consecutive calls: noise hits every engine alike, and no engine
        # is timed while another's thread pool is still spinning (call-by-call interleaving
        # made ORT 4x slower here, because torch's and ORT's spinning threads shared 2 cores).
        block = 50
        for start in range(0, len(inputs), block):
            for name, run in engines.items():
                for i, ids in enumerate(inputs[start : start + block]):
                    started = time.perf_counter()
                    run(ids)
                    if i >= 5:  # the first calls of a block pay for the switch
                        times[name].append((time.perf_counter() - started) * 1e3)
    stats = {
        name: {
            "p50_ms": float(np.percentile(t, 50)),
            "p95_ms": float(np.percentile(t, 95)),
            "mean_ms": float(np.mean(t)),
        }
        for name, t in times.items()
    }
    base = stats["pytorch eager"]["p50_ms"]
    sizes = {"onnxruntime": manifest["sizes"]["onnx"], "litert (tflite)": manifest["sizes"]["tflite"]}
    rows = [
        [
            name,
            f"{s['p50_ms']:.3f}",
            f"{s['p95_ms']:.3f}",
            f"{s['p50_ms'] / base:.3f}",
            f"{sizes[name] / 1e6:.2f}" if name in sizes else "-",
        ]
        for name, s in stats.items()
    ]
    print_table(["engine", "p50 ms", "p95 ms", "p50 / pytorch", "file MB"], rows)
    payload = {
        "model": str(args.model),
        "parameters": rec.num_parameters,
        "runs": args.runs,
        "threads": args.threads,
        "batch": 1,
        "max_len": rec.max_len,
        "machine": machine(),
        "latency": stats,
        "sizes_bytes": sizes,
        "parity": manifest["parity"],
        "ratios_p50_vs_pytorch": {n: s["p50_ms"] / base for n, s in stats.items()},
    }
    print(f"wrote {save('export', payload)}")


if __name__ == "__main__":
    run_benchmark(main, "python benchmarks/distill.py")
