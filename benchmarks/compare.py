"""edgerec's output vs what a user would do without it, side by side on MovieLens-100K.

    python benchmarks/compare.py [--teacher runs/bench-teacher/teacher-causal] \
        [--student runs/bench-teacher/student-distilled] [--runs 600]

Rows: the teacher in PyTorch fp32 (HF forward); the teacher exported as a plain ONNX file (HF
forward, all positions, as `torch.onnx.export` gives it); that file quantized with optimum's
ORTQuantizer and its `AutoQuantizationConfig.avx2` / `.arm64` presets, dynamic and static (static
ranges from ONNX Runtime's min-max calibrator on the same calibration set, because optimum's
`fit` wants a `datasets.Dataset`); the edgerec student exported fp32; and edgerec's final int8
ONNX and TFLite for arm64. Columns: file size, parameters, p50/p95 latency at batch 1 (2 threads,
round-robin blocks in one process), peak RSS of a separate process that only loads and runs the
model, test NDCG@10 and HR@10 (full ranking, history masked, 943 users).
Writes benchmarks/results/compare.json.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fmt_ci, machine, print_table, run_benchmark, save  # noqa: E402

PEAK = textwrap.dedent("""
    import sys, numpy as np
    kind, path, max_len, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    ids = np.ones((1, max_len), np.int64)
    if kind == "torch":
        import torch
        torch.set_num_threads(threads)
        from edgerec.core.models import load_model
        rec = load_model(path)
        run = lambda: rec.scores([list(range(1, max_len + 1))])
    elif kind.startswith("onnx"):
        import onnxruntime as ort
        o = ort.SessionOptions(); o.intra_op_num_threads = threads
        s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
        feed = {"input_ids": ids} if kind == "onnx" else {"input_ids": ids, "attention_mask": ids}
        run = lambda: s.run(None, feed)
    else:
        from ai_edge_litert.interpreter import Interpreter
        it = Interpreter(model_path=path, num_threads=threads)
        r = it.get_signature_runner(next(iter(it.get_signature_list())))
        run = lambda: r(input_ids=ids.astype(np.int32))
    for _ in range(50):
        run()
    print(next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:")))
""")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", type=Path, default=Path("runs/bench-teacher/teacher-causal"))
    parser.add_argument("--student", type=Path, default=Path("runs/bench-teacher/student-distilled"))
    parser.add_argument("--data", type=Path, default=Path("runs/bench-teacher/data"))
    parser.add_argument("--runs", type=int, default=600)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="compare", help="results file name (benchmarks/results/NAME.json)")
    args = parser.parse_args()

    import onnxruntime as ort
    import torch
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    from edgerec.core import metrics
    from edgerec.core.evaluation import evaluate
    from edgerec.core.interactions import load_data
    from edgerec.core.models import load_model
    from edgerec.devices.runtimes import Scorer, encode
    from edgerec.formats.onnx.runtime import OnnxScorer
    from edgerec.formats.tflite.runtime import LiteRTScorer
    from edgerec.stages.export import ExportConfig, export
    from edgerec.stages.quantize import QuantizeConfig, quantize

    torch.set_num_threads(args.threads)
    data = load_data(args.data)
    teacher = load_model(args.teacher / "model")
    histories = data.examples("test")[0]
    n, max_len = data.num_items, teacher.max_len

    class PlainOnnx(Scorer):  # the HF forward as exported: logits at every position
        def __init__(self, path):
            options = ort.SessionOptions()
            options.intra_op_num_threads = args.threads
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            self.max_len, self.num_items, self.dtype = max_len, n, "int64"

        def run(self, ids):
            logits = self.session.run(None, {"input_ids": ids, "attention_mask": (ids != 0).astype(np.int64)})[0]
            return logits[:, -1, 1 : n + 1]

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        plain = tmp / "teacher" / "model.onnx"
        plain.parent.mkdir()
        example = torch.ones((1, max_len), dtype=torch.long)
        torch.onnx.export(
            teacher.model,
            (example, example),
            str(plain),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            opset_version=17,
            dynamo=False,
            dynamic_axes={
                "input_ids": {0: "batch", 1: "length"},
                "attention_mask": {0: "batch", 1: "length"},
                "logits": {0: "batch", 1: "length"},
            },
        )
        ranges_file = tmp / "ranges.json"
        _calibrate_plain(plain, data.calibration(), max_len, ranges_file)
        from onnxruntime.quantization.calibrate import load_tensors_data

        # optimum 2.1 documents (min, max) tuples here, but ONNX Runtime 1.32's quantizer rejects
        # tuples ("tensors_range contains unexpected types"); ORT's own TensorData objects pass
        # through optimum unchanged and work. (A user would hit that error first.)
        ranges = load_tensors_data(ranges_file).data
        quantized = {}
        for preset in ("avx2", "arm64"):
            for static in (False, True):
                config = getattr(AutoQuantizationConfig, preset)(is_static=static, per_channel=False)
                out = ORTQuantizer.from_pretrained(plain.parent, file_name="model.onnx").quantize(
                    config, tmp / f"{preset}-{static}", calibration_tensors_range=ranges if static else None
                )
                quantized[f"teacher optimum {preset} {'static' if static else 'dynamic'}"] = next(
                    Path(out).glob("*.onnx")
                )
        export(args.student, args.data, tmp / "fp32", ExportConfig(target="arm64"))
        quantize(tmp / "fp32", args.data, tmp / "int8", QuantizeConfig(target="arm64"), log=lambda m: None)
        engines = {
            "teacher PyTorch fp32": ("torch", args.teacher / "model", teacher, teacher.num_parameters),
            "teacher ONNX fp32 (plain export)": ("onnx-plain", plain, PlainOnnx(plain), teacher.num_parameters),
            **{name: ("onnx-plain", path, PlainOnnx(path), teacher.num_parameters) for name, path in quantized.items()},
            "edgerec student ONNX fp32": (
                "onnx",
                tmp / "fp32" / "model.onnx",
                OnnxScorer(tmp / "fp32" / "model.onnx", max_len, n, "int64", args.threads),
                None,
            ),
            "edgerec final int8 ONNX": (
                "onnx",
                tmp / "int8" / "model.onnx",
                OnnxScorer(tmp / "int8" / "model.onnx", max_len, n, "int64", args.threads),
                None,
            ),
            "edgerec final int8 TFLite": (
                "tflite",
                tmp / "int8" / "model.tflite",
                LiteRTScorer(tmp / "int8" / "model.tflite", max_len, n, args.threads),
                None,
            ),
        }
        student_params = load_model(args.student / "model").num_parameters
        reports, peaks, sizes = {}, {}, {}
        for name, (kind, path, scorer, _) in engines.items():
            reports[name] = evaluate(scorer, data, "test")
            sizes[name] = (
                sum(p.stat().st_size for p in Path(path).glob("*.safetensors"))
                if kind == "torch"
                else Path(path).stat().st_size
            )
            peaks[name] = _peak(kind, path, max_len, args.threads)
        inputs = [encode([histories[i % len(histories)]], max_len, "int64") for i in range(args.runs)]

        def call(name, scorer, ids):
            if engines[name][0] == "torch":
                with torch.inference_mode():
                    tensor = torch.from_numpy(ids)
                    return scorer.logits({"input_ids": tensor, "attention_mask": (tensor != 0).long()})
            return scorer.run(ids.astype(scorer.dtype))

        times = {name: [] for name in engines}
        for start in range(0, len(inputs), 50):  # round-robin blocks: noise hits every engine alike
            for name, (_, _, scorer, _) in engines.items():
                for i, ids in enumerate(inputs[start : start + 50]):
                    began = time.perf_counter()
                    call(name, scorer, ids)
                    if i >= 5:
                        times[name].append((time.perf_counter() - began) * 1e3)

    results, rows = {}, []
    base = "teacher PyTorch fp32"
    final = "edgerec final int8 ONNX"
    for name, (kind, _, _, params) in engines.items():
        p50, p95 = float(np.percentile(times[name], 50)), float(np.percentile(times[name], 95))
        results[name] = {
            "bytes": sizes[name],
            "parameters": params or student_params,
            "p50_ms": p50,
            "p95_ms": p95,
            "peak_rss_mb": peaks[name] / 1e6,
            "test": {k: reports[name]["metrics"][k] for k in ("NDCG@10", "HR@10", "MRR")},
        }
        rows.append(
            [
                name,
                f"{sizes[name] / 1e6:.3f}",
                f"{params or student_params:,}",
                f"{p50:.3f}",
                f"{p95:.3f}",
                f"{peaks[name] / 1e6:.0f}",
                fmt_ci(reports[name]["metrics"]["NDCG@10"]),
                f"{reports[name]['metrics']['HR@10']['mean']:.3f}",
            ]
        )
    print_table(
        ["model", "MB", "parameters", "p50 ms", "p95 ms", "peak RSS MB", "test NDCG@10 [95% CI]", "HR@10"], rows
    )
    ratios = {}
    for other in [base] + [k for k in engines if "optimum" in k]:
        for mine in ("edgerec final int8 ONNX", "edgerec final int8 TFLite"):
            ratios[f"{mine} vs {other}"] = {
                "smaller": sizes[other] / sizes[mine],
                "faster_p50": results[other]["p50_ms"] / results[mine]["p50_ms"],
                "ndcg_diff": metrics.paired_bootstrap(
                    reports[mine]["per_user"]["NDCG@10"], reports[other]["per_user"]["NDCG@10"]
                ),
            }
    print()
    print_table(
        ["comparison", "x smaller", "x faster (p50)", "NDCG@10 diff [95% CI]"],
        [
            [
                k,
                f"{v['smaller']:.1f}",
                f"{v['faster_p50']:.1f}",
                f"{v['ndcg_diff']['diff']:+.4f} [{v['ndcg_diff']['ci95'][0]:+.4f}, {v['ndcg_diff']['ci95'][1]:+.4f}]",
            ]
            for k, v in ratios.items()
        ],
    )
    payload = {
        "teacher": str(args.teacher),
        "student": str(args.student),
        "runs": args.runs,
        "threads": args.threads,
        "batch": 1,
        "machine": machine(),
        "results": results,
        "ratios": ratios,
        "final": final,
    }
    print(f"wrote {save(args.name, payload)}")


def _calibrate_plain(model: Path, sequences, max_len: int, out: Path) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        create_calibrator,
    )
    from onnxruntime.quantization.calibrate import save_tensors_data

    from edgerec.devices.runtimes import encode

    batches = [encode(sequences[i : i + 32], max_len, "int64") for i in range(0, len(sequences), 32)]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([])

        def get_next(self):
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as tmp:
        calibrator = create_calibrator(
            model, None, augmented_model_path=str(Path(tmp) / "aug.onnx"), calibrate_method=CalibrationMethod.MinMax
        )
        for batch in batches:  # one batch per call: ORT folds it into the running ranges
            reader = Reader()
            reader.items = iter([{"input_ids": batch, "attention_mask": (batch != 0).astype(np.int64)}])
            calibrator.collect_data(reader)
        save_tensors_data(calibrator.compute_data(), out)


def _peak(kind: str, path: Path, max_len: int, threads: int) -> int:
    result = subprocess.run(
        [sys.executable, "-c", PEAK, kind, str(path), str(max_len), str(threads)], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-500:])
    return int(result.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    run_benchmark(main, "python benchmarks/distill.py")
