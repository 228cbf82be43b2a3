"""int8 vs fp32 of the same student, per format: file size, test NDCG@10 and batch-1 latency.

    python benchmarks/quantize.py [--model runs/bench-teacher/student-distilled] [--runs 1000]

Exports the student for `arm64` (ONNX + TFLite), runs `edgerec quantize` with the profile's
settings, and also builds the full-integer TFLite (ai-edge-quantizer static_wi8_ai8) to show why
the profile does not use it. NDCG@10 on all test users (full ranking, history masked) with 95%
intervals and a paired bootstrap vs fp32 on the same users; latency p50/p95 at batch 1 with the
profile's threads, engines timed in round-robin blocks in one process.

Then how much int8 could buy at all (`headroom`): the ONNX model's weight-bearing nodes (the
only ones int8 changes) are cut out into a graph of their own, fed the activations they see on
real histories, and timed in fp32, in each of ORT's int8 forms (static QDQ, static QOperator,
dynamic), and as a "floor" with every weight shrunk to one output column (the same nodes,
inputs and outputs: dispatch and I/O without the arithmetic). The fp32 model minus the best
saving any int8 form makes on those nodes is the fastest an int8 model could be, with every
other node as in fp32 and no Q/DQ cost: a bound, not an estimate. Writes
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

from common import fmt_ci, machine, print_table, run_benchmark, save  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("runs/bench-teacher/student-distilled"))
    parser.add_argument("--data", type=Path, default=Path("runs/bench-teacher/data"))
    parser.add_argument("--target", default="arm64")
    parser.add_argument("--runs", type=int, default=1000)
    args = parser.parse_args()

    from edgerec.core import metrics
    from edgerec.core.evaluation import evaluate
    from edgerec.core.interactions import load_data
    from edgerec.core.targets import load_target
    from edgerec.devices.runtimes import encode
    from edgerec.formats.onnx.runtime import OnnxScorer
    from edgerec.formats.tflite.int8 import quantize_tflite
    from edgerec.formats.tflite.runtime import LiteRTScorer
    from edgerec.stages.export import ExportConfig, export
    from edgerec.stages.quantize import QuantizeConfig, quantize

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
        quantize_tflite(
            fp32 / "model.tflite",
            static,
            "static",
            True,
            _tflite_calibration(fp32, data),
            ["FULLY_CONNECTED", "BATCH_MATMUL"],
        )
        max_len = json.loads((fp32 / "metadata.json").read_text())["max_len"]
        n, threads = data.num_items, target.threads
        models = {
            "onnx fp32": (
                OnnxScorer(fp32 / "model.onnx", max_len, n, target.onnx.input_dtype, threads),
                fp32 / "model.onnx",
            ),
            "onnx int8": (
                OnnxScorer(int8 / "model.onnx", max_len, n, target.onnx.input_dtype, threads),
                int8 / "model.onnx",
            ),
            "tflite fp32": (LiteRTScorer(fp32 / "model.tflite", max_len, n, threads), fp32 / "model.tflite"),
            "tflite int8": (LiteRTScorer(int8 / "model.tflite", max_len, n, threads), int8 / "model.tflite"),
            "tflite full-integer": (LiteRTScorer(static, max_len, n, threads), static),
        }
        reports = {name: evaluate(scorer, data, "test") for name, (scorer, _) in models.items()}
        headroom = int8_headroom(fp32 / "model.onnx", int8 / "model.onnx", target, data, max_len, args.runs, Path(tmp))
        sizes = {name: path.stat().st_size for name, (_, path) in models.items()}
        inputs = [encode([histories[i % len(histories)]], max_len, "int64") for i in range(args.runs)]
        times = {name: [] for name in models}
        block = 50
        for start in range(0, len(inputs), block):  # round-robin blocks: noise hits all alike
            for name, (scorer, _) in models.items():
                for i, ids in enumerate(inputs[start : start + block]):
                    ids = ids.astype(scorer.dtype)
                    began = time.perf_counter()
                    scorer.run(ids)
                    if i >= 5:
                        times[name].append((time.perf_counter() - began) * 1e3)

    stats = {
        name: {"p50_ms": float(np.percentile(t, 50)), "p95_ms": float(np.percentile(t, 95))}
        for name, t in times.items()
    }
    rows, results = [], {}
    for name in models:
        fmt = name.split()[0]
        base = f"{fmt} fp32"
        ndcg = reports[name]["per_user"]["NDCG@10"]
        ref = reports[base]["per_user"]["NDCG@10"]
        paired = metrics.paired_bootstrap(ndcg, ref) if name != base else None
        results[name] = {
            "bytes": sizes[name],
            "size_ratio": sizes[name] / sizes[base],
            "test": {k: reports[name]["metrics"][k] for k in ("HR@10", "NDCG@10", "MRR")},
            "ndcg_ratio": float(np.mean(ndcg) / np.mean(ref)),
            "paired_vs_fp32": paired,
            **stats[name],
            "p50_ratio": stats[name]["p50_ms"] / stats[base]["p50_ms"],
        }
        rows.append(
            [
                name,
                f"{sizes[name] / 1e6:.3f}",
                f"{results[name]['size_ratio']:.3f}",
                fmt_ci(reports[name]["metrics"]["NDCG@10"]),
                f"{results[name]['ndcg_ratio']:.3f}",
                f"{stats[name]['p50_ms']:.4f}",
                f"{stats[name]['p95_ms']:.4f}",
                f"{results[name]['p50_ratio']:.2f}",
            ]
        )
    print_table(
        ["model", "MB", "size / fp32", "test NDCG@10 [95% CI]", "NDCG / fp32", "p50 ms", "p95 ms", "p50 / fp32"], rows
    )
    payload = {
        "model": str(args.model),
        "target": args.target,
        "threads": target.threads,
        "runs": args.runs,
        "batch": 1,
        "machine": machine(),
        "quantize_seconds": round(seconds, 1),
        "quantization": {
            f: {k: v for k, v in r.items() if k not in ("trail",)} for f, r in manifest["quantization"].items()
        },
        "results": results,
    }
    payload["headroom"] = headroom
    print()
    print_table(
        ["ONNX, batch 1", "p50 us", "vs fp32 model"],
        [[name, f"{t:.1f}", f"{t / headroom['p50_us']['fp32 model']:.2f}"] for name, t in headroom["p50_us"].items()],
    )
    best = headroom["saving_us_by_form"][headroom["best_form"]]
    print(
        f"weight arithmetic in fp32: {headroom['fp32_weight_arithmetic_us']:.1f} us of the model's "
        f"{headroom['p50_us']['fp32 model']:.1f}; best int8 form on those nodes: {headroom['best_form']}, "
        f"{best:+.1f} us saved -> fastest possible int8 model {headroom['bound_ratio']:.2f}x fp32 "
        f"(the profile's: {headroom['int8_ratio']:.2f}x)"
    )
    print(f"wrote {save('quantize', payload)}")


def weight_graph(model_path: Path, activations: dict, out: Path, shrink: bool = False) -> list[str]:
    """The weight-bearing nodes of `model_path` (those int8 applies to) as a graph of their own,
    one input per activation they read (named as in the model, batch-dynamic). `shrink` keeps one
    output column of every weight: the same nodes and tensors without the arithmetic."""
    import onnx
    from onnx import helper, numpy_helper

    from edgerec.formats.onnx.int8 import onnx_units

    model = onnx.load(str(model_path))
    units = set(onnx_units(model_path))
    tables = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    nodes = [onnx.NodeProto.FromString(n.SerializeToString()) for n in model.graph.node if n.name in units]
    weights = {}
    for node in nodes:
        for j, name in enumerate(node.input):
            if name not in tables:
                continue
            value = tables[name]
            if shrink:  # Gemm(transB) weights [N, K] and biases [N] lose rows; the rest columns
                trans_b = any(a.name == "transB" and a.i for a in node.attribute)
                value = value[:1] if node.op_type == "Gemm" and (j == 2 or trans_b) else value[..., :1]
                name = node.input[j] = f"{name}.{node.name}"  # a tied table is two weights here
            weights[name] = np.ascontiguousarray(value)
    inputs = sorted({i for n in nodes for i in n.input if i and i not in weights})
    graph = helper.make_graph(
        nodes,
        "weights",
        [
            helper.make_tensor_value_info(
                i, helper.np_dtype_to_tensor_dtype(activations[i].dtype), ["batch", *activations[i].shape[1:]]
            )
            for i in inputs
        ],
        [onnx.ValueInfoProto(name=o) for n in nodes for o in n.output],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    sub = helper.make_model(graph, opset_imports=model.opset_import)
    sub.ir_version = model.ir_version
    onnx.save(sub, str(out))
    return inputs


def activations_at(model_path: Path, ids: np.ndarray) -> dict:
    """Every intermediate tensor of the ONNX model on `ids` (ORT, no graph optimizations)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(model_path))
    known = {o.name for o in model.graph.output}
    for node in model.graph.node:
        model.graph.output.extend(onnx.ValueInfoProto(name=o) for o in node.output if o not in known)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {"input_ids": ids})))


def int8_headroom(fp32: Path, int8: Path, target, data, max_len: int, runs: int, tmp: Path) -> dict:
    """How fast an int8 ONNX model could be at best: see the module docstring."""
    import dataclasses

    import onnxruntime as ort

    from edgerec.devices.runtimes import encode
    from edgerec.formats.onnx.int8 import calibrate_onnx, onnx_units, quantize_onnx, structural_float

    histories = data.examples("test")[0]
    ids = encode(histories[:1], max_len, "int64")
    calibration = encode(data.calibration()[:256], max_len, "int64")
    acts = activations_at(fp32, ids)
    names = weight_graph(fp32, acts, tmp / "weights.onnx")
    weight_graph(fp32, acts, tmp / "floor.onnx", shrink=True)
    feed = {name: acts[name] for name in names}
    ranges = tmp / "weights-ranges.json"
    every = activations_at(fp32, calibration)
    calibrate_onnx(tmp / "weights.onnx", [{name: every[name] for name in names}], "minmax", ranges)
    settings = target.quantization
    forms = {
        "static QDQ": dataclasses.replace(settings, scheme="static", format="QDQ"),
        "static QOperator": dataclasses.replace(settings, scheme="static", format="QOperator"),
        "dynamic": dataclasses.replace(settings, scheme="dynamic"),
    }
    paths = {
        "fp32 model": fp32,
        "int8 model (profile)": int8,
        "weight nodes fp32": tmp / "weights.onnx",
        "weight nodes floor": tmp / "floor.onnx",
    }
    for form, chosen in forms.items():
        path = paths[f"weight nodes {form}"] = tmp / f"weights-{form.replace(' ', '-')}.onnx"
        skip = structural_float(tmp / "weights.onnx", chosen)
        quantize_onnx(
            tmp / "weights.onnx", path, chosen, ranges, [u for u in onnx_units(tmp / "weights.onnx") if u not in skip]
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = target.threads, 1
    sessions = {k: ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for k, p in paths.items()}
    feeds = {k: {"input_ids": ids} if "model" in k else feed for k in paths}
    times = {k: [] for k in paths}
    for _ in range(max(1, runs // 50)):  # round-robin blocks, as above
        for k, session in sessions.items():
            for i in range(50):
                began = time.perf_counter()
                session.run(None, feeds[k])
                if i >= 5:
                    times[k].append((time.perf_counter() - began) * 1e6)
    p50 = {k: float(np.median(t)) for k, t in times.items()}
    arithmetic = p50["weight nodes fp32"] - p50["weight nodes floor"]
    savings = {form: p50["weight nodes fp32"] - p50[f"weight nodes {form}"] for form in forms}
    best = max(savings, key=savings.get)
    saving = max(0.0, savings[best])
    return {
        "weight_nodes": len(onnx_units(fp32)),
        "p50_us": p50,
        "fp32_weight_arithmetic_us": arithmetic,
        "saving_us_by_form": savings,
        "best_form": best,
        "best_saving_us": saving,
        "bound_ratio": (p50["fp32 model"] - saving) / p50["fp32 model"],
        "int8_ratio": p50["int8 model (profile)"] / p50["fp32 model"],
    }


def _tflite_calibration(bundle: Path, data):
    from edgerec.formats.tflite.int8 import calibrate_tflite

    with tempfile.TemporaryDirectory() as tmp:
        max_len = json.loads((bundle / "metadata.json").read_text())["max_len"]
        return calibrate_tflite(bundle / "model.tflite", data.calibration(), max_len, Path(tmp) / "c.json")


if __name__ == "__main__":
    run_benchmark(main, "python benchmarks/distill.py")
