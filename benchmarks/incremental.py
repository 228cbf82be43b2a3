"""Incremental inference on movielens-100k: the step model against a full pass, and the causal
student it needs against the bidirectional one. Same test users, full ranking.

    python benchmarks/incremental.py [--work runs/bench-teacher] [--minutes 10] [--runs 600]

1. Accuracy: the default-shaped causal student with positions counted from the window start
   (what a step model needs), the same student with the default "end" positions, and a masked
   (bidirectional, BERT4Rec-style) student, all distilled from the same teacher with the same
   budget; paired bootstrap of per-user NDCG@10.
2. Exactness: `edgerec export --step` + `edgerec validate` on every test user: the step model,
   fed each history item by item, against the full model on the same runtime (ONNX Runtime,
   LiteRT), fp32 and after `edgerec quantize`.
3. Latency at batch 1 for windows n = 50 and 200, one process, engines timed in round-robin
   blocks: one step-model update vs one pass of edgerec's full graph (which already computes
   only the last position in the final layer) vs a plain full re-encoding (the HF forward over
   every position, what the issue's cost formula describes). Beside them, the least any step
   model can do, in a graph with the step model's inputs and outputs: look the new item up,
   write it into the state, score every item with the output layer. Its time over a full pass
   bounds the ratio any step graph could reach on this runtime and CPU.

Reuses the data, teacher and default student that benchmarks/distill.py leaves in --work and
trains the two other students if missing. Writes benchmarks/results/incremental.json.
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

from common import fmt_ci, machine, print_table, run_benchmark, save  # noqa: E402

STUDENTS = {  # name -> (artifact under --work, DistillConfig changes)
    "causal, start positions": ("student-causal-start", {"positions": "start"}),
    "causal, end positions (default)": ("student-distilled", {}),
    "masked (bidirectional)": ("student-masked", {"student_kind": "masked"}),
}


def train_missing(work: Path, minutes: float) -> None:
    from edgerec.core.distillation import DistillConfig
    from edgerec.stages.distill import distill

    default = DistillConfig()
    for folder, changes in STUDENTS.values():
        if not (work / folder / "manifest.json").is_file():
            config = replace(default, train=replace(default.train, max_minutes=minutes), **changes)
            distill(work / "teacher-causal", work / "data", work / folder, config, overwrite=True)


def accuracy(work: Path) -> tuple[dict, dict]:
    from edgerec.core.evaluation import evaluate
    from edgerec.core.interactions import load_data
    from edgerec.core.metrics import paired_bootstrap
    from edgerec.core.models import load_model

    data = load_data(work / "data")
    teacher = load_model(work / "teacher-causal" / "model")
    results, per_user = {}, {}
    for name, (folder, _) in STUDENTS.items():
        import json

        manifest = json.loads((work / folder / "manifest.json").read_text())
        model = load_model(work / folder / "model")
        report = evaluate(model, data, "test", reference=teacher)
        per_user[name] = report["per_user"]["NDCG@10"]
        results[name] = {
            "artifact": str(work / folder),
            "parameters": model.num_parameters,
            "test": report["metrics"],
            "training_seconds": manifest["training"]["seconds"],
            "epochs": manifest["training"]["epochs_run"],
            "stopped": manifest["training"]["stopped"],
        }
    first = "causal, start positions"
    tests = {
        f"{first} - {other}": paired_bootstrap(per_user[first], per_user[other]) for other in STUDENTS if other != first
    }
    return results, tests


def exactness(work: Path, target: str, out: Path) -> dict:
    """The product path: export --step, validate, quantize, validate again (every test user)."""
    from edgerec.stages.export import ExportConfig, export
    from edgerec.stages.quantize import QuantizeConfig, quantize
    from edgerec.stages.validate import ValidateConfig, validate

    model, data = work / STUDENTS["causal, start positions"][0], work / "data"
    export(model, data, out / "fp32", ExportConfig(target=target, step=True), overwrite=True)
    quantize(out / "fp32", data, out / "int8", QuantizeConfig(target=target), overwrite=True, log=lambda m: None)
    result = {}
    for precision in ("fp32", "int8"):
        report = validate(out / precision, data, ValidateConfig(target=target), log=lambda m: None)
        result[precision] = {
            runtime: {
                "users": r["users"],
                "updates": r["updates"],
                "identical_top10": r["identical_top10"],
                "top10_agreement_with_full_model": r["top10_agreement_with_full_model"],
                "step_ndcg10": r["metrics"]["NDCG@10"]["mean"],
                "full_ndcg10": report["runtimes"][runtime]["metrics"]["NDCG@10"]["mean"],
                "step_bytes": r["bytes"],
                "full_bytes": report["runtimes"][runtime]["bytes"],
            }
            for runtime, r in report["step_model"].items()
        }
    return result


def latency(work: Path, windows: list[int], runs: int, threads: int, folder: Path) -> dict:
    import litert_torch
    import onnxruntime as ort
    import torch
    from ai_edge_litert.interpreter import Interpreter

    from edgerec.core.distillation import STUDENT_SHAPE
    from edgerec.core.graphs import scoring_graph, step_graph, step_inputs, step_layout
    from edgerec.core.models import RecModel, build_id_model, load_model, start_positions
    from edgerec.formats.onnx.export import export_onnx, export_step_onnx
    from edgerec.formats.tflite.export import export_step_tflite, export_tflite

    torch.set_num_threads(threads)
    result = {}
    trained = work / STUDENTS["causal, start positions"][0] / "model"
    for layers, n in [(layers, n) for layers in (1, 2) for n in windows]:
        rec = load_model(trained)
        if layers != rec.model.config.num_hidden_layers:
            # the same shape with more layers, random weights: timing only (cost does not depend
            # on the weights), to show where a step model pays
            rec = RecModel(
                build_id_model("causal", rec.model.config.vocab_size, replace(STUDENT_SHAPE, layers=layers)), rec.meta
            )
        rec.max_len = n  # the same weights with a window of n items (positions 0..n-1)
        spec = step_layout(rec, n)
        model = rec.model

        class Reencode(torch.nn.Module):  # a plain full pass: every position, every layer
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, input_ids):
                ids = input_ids.long()
                hidden = self.model.bert(
                    input_ids=ids, attention_mask=(ids != 0).long(), position_ids=start_positions(ids)
                ).last_hidden_state
                return torch.narrow(self.model.cls(torch.narrow(hidden, 1, n - 1, 1)), 2, 1, rec.num_items)

        class Least(torch.nn.Module):  # the work no per-item update can skip
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, item, position, state):
                x = self.model.bert.embeddings.word_embeddings(item.long())  # [B, H]
                slot = (torch.arange(n).view(1, n) == position.long().view(-1, 1)).view(-1, 1, n, 1)
                written = torch.where(slot, x.view(-1, 1, 1, x.shape[-1]), state)
                return torch.narrow(self.model.cls(x), 1, 1, rec.num_items), written

        paths = {
            k: folder / f"{k}-{layers}-{n}"
            for k in ("full.onnx", "step.onnx", "reencode.onnx", "least.onnx", "full.tflite", "step.tflite")
        }
        export_step_onnx(Least().eval(), paths["least.onnx"], spec, 17, "int64", None, {})
        export_onnx(scoring_graph(rec), paths["full.onnx"], n, 17, "int64", None, {})
        export_onnx(Reencode().eval(), paths["reencode.onnx"], n, 17, "int64", None, {})
        export_step_onnx(step_graph(rec, window=n), paths["step.onnx"], spec, 17, "int64", None, {})
        export_tflite(scoring_graph(rec), paths["full.tflite"], n)
        export_step_tflite(step_graph(rec, window=n), paths["step.tflite"], spec, None)
        # the same step graph converted without edgerec's decomposed LayerNorms, to measure them
        litert_torch.convert(step_graph(rec, window=n), sample_kwargs=step_inputs(spec, "int32", None)).export(
            str(folder / f"step-plain-norms-{layers}-{n}.tflite")
        )

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        sessions = {
            k: ort.InferenceSession(str(paths[k]), options, providers=["CPUExecutionProvider"])
            for k in ("full.onnx", "step.onnx", "reencode.onnx", "least.onnx")
        }
        runners = {
            k: Interpreter(model_path=str(paths[k]), num_threads=threads).get_signature_runner()
            for k in ("full.tflite", "step.tflite")
        }
        runners["step-plain-norms"] = Interpreter(
            model_path=str(folder / f"step-plain-norms-{layers}-{n}.tflite"), num_threads=threads
        ).get_signature_runner()
        rng = np.random.default_rng(0)
        ids = np.zeros((1, n), np.int64)
        ids[0] = rng.integers(1, rec.num_items + 1, size=n)  # a full window: the most work a pass does
        state = np.zeros(spec.shape(1), np.float32)
        positions = np.arange(runs) % n
        items = rng.integers(1, rec.num_items + 1, size=runs)
        step_onnx, step_tfl = sessions["step.onnx"], runners["step.tflite"]
        engines = {
            "onnxruntime: plain full re-encode": lambda i: sessions["reencode.onnx"].run(None, {"input_ids": ids}),
            "onnxruntime: edgerec full graph": lambda i: sessions["full.onnx"].run(None, {"input_ids": ids}),
            "onnxruntime: step update": lambda i: step_onnx.run(
                None, {"item": items[i : i + 1], "position": positions[i : i + 1], "state": state}
            ),
            "onnxruntime: least possible step": lambda i: sessions["least.onnx"].run(
                None, {"item": items[i : i + 1], "position": positions[i : i + 1], "state": state}
            ),
            "litert: edgerec full graph": lambda i: runners["full.tflite"](input_ids=ids.astype(np.int32)),
            "litert: step update": lambda i: step_tfl(
                item=items[i : i + 1].astype(np.int32), position=positions[i : i + 1].astype(np.int32), state=state
            ),
            "litert: step update (torch LayerNorm lowering)": lambda i: runners["step-plain-norms"](
                item=items[i : i + 1].astype(np.int32), position=positions[i : i + 1].astype(np.int32), state=state
            ),
        }
        for run in engines.values():
            for i in range(20):
                run(i)
        times = {name: [] for name in engines}
        block = 50
        for start in range(0, runs, block):
            for name, run in engines.items():
                for i in range(start, min(start + block, runs)):
                    began = time.perf_counter()
                    run(i)
                    if i - start >= 5:  # the first calls of a block pay for the switch
                        times[name].append((time.perf_counter() - began) * 1e3)
        stats = {
            name: {
                "p50_ms": float(np.percentile(t, 50)),
                "p95_ms": float(np.percentile(t, 95)),
                "p99_ms": float(np.percentile(t, 99)),
            }
            for name, t in times.items()
        }
        macs = {  # multiply-adds per call, for reference (L layers, width d, FFN f, items V)
            "plain full re-encode": sum(n * (4 * d * d + 2 * d * f) + 2 * n * n * d for d, f in _dims(rec)),
            "step update": sum(4 * d * d + 2 * d * f + 2 * n * d for d, f in _dims(rec)),
            "output layer": rec.num_items * _dims(rec)[-1][0],
        }
        ratios = {
            "onnxruntime step / edgerec full graph": ("onnxruntime: step update", "onnxruntime: edgerec full graph"),
            "onnxruntime step / plain full re-encode": (
                "onnxruntime: step update",
                "onnxruntime: plain full re-encode",
            ),
            "litert step / edgerec full graph": ("litert: step update", "litert: edgerec full graph"),
            "litert step, decomposed / torch LayerNorm lowering": (
                "litert: step update",
                "litert: step update (torch LayerNorm lowering)",
            ),
            "onnxruntime least possible step / edgerec full graph": (
                "onnxruntime: least possible step",
                "onnxruntime: edgerec full graph",
            ),
            "onnxruntime least possible step / plain full re-encode": (
                "onnxruntime: least possible step",
                "onnxruntime: plain full re-encode",
            ),
        }
        result[f"{layers} layer{'s' if layers > 1 else ''}, n = {n}"] = {
            "layers": layers,
            "window": n,
            "trained": layers == 1,
            "latency": stats,
            "macs": macs,
            "file_bytes": {k: p.stat().st_size for k, p in paths.items()},
            "ratios_p50": {name: stats[a]["p50_ms"] / stats[b]["p50_ms"] for name, (a, b) in ratios.items()},
        }
    return result


def _dims(rec):
    return [
        (layer.attention.self.all_head_size, layer.intermediate.dense.out_features)
        for layer in rec.model.bert.encoder.layer
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/bench-teacher"))
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget per student")
    parser.add_argument("--runs", type=int, default=600, help="timed calls per engine and window")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--target", default="arm64")
    args = parser.parse_args()

    train_missing(args.work, args.minutes)
    results, tests = accuracy(args.work)
    rows = [
        [
            name,
            f"{r['parameters']:,}",
            fmt_ci(r["test"]["HR@10"]),
            fmt_ci(r["test"]["NDCG@10"]),
            f"{r['test']['MRR']['mean']:.4f}",
            f"{r['training_seconds'] / 60:.1f} ({r['stopped']})",
        ]
        for name, r in results.items()
    ]
    print_table(["student", "params", "HR@10 [95% CI]", "NDCG@10 [95% CI]", "MRR", "train min"], rows)
    for name, t in tests.items():
        print(f"NDCG@10 {name}: {t['diff']:+.4f} [{t['ci95'][0]:+.4f}, {t['ci95'][1]:+.4f}], p = {t['p_value']:.4f}")
    with tempfile.TemporaryDirectory() as tmp:
        exact = exactness(args.work, args.target, Path(tmp))
        print()
        print_table(
            [
                "precision",
                "runtime",
                "users",
                "updates",
                "identical top-10",
                "top-10 agreement",
                "NDCG@10 step / full",
                "step / full file MB",
            ],
            [
                [
                    p,
                    rt,
                    r["users"],
                    r["updates"],
                    f"{r['identical_top10']:.3f}",
                    f"{r['top10_agreement_with_full_model']:.3f}",
                    f"{r['step_ndcg10']:.4f} / {r['full_ndcg10']:.4f}",
                    f"{r['step_bytes'] / 1e6:.3f} / {r['full_bytes'] / 1e6:.3f}",
                ]
                for p, by in exact.items()
                for rt, r in by.items()
            ],
        )
        timing = latency(args.work, [50, 200], args.runs, args.threads, Path(tmp))
    print()
    print_table(
        ["student", "engine", "p50 ms", "p95 ms", "p99 ms"],
        [
            [n, name, f"{s['p50_ms']:.4f}", f"{s['p95_ms']:.4f}", f"{s['p99_ms']:.4f}"]
            for n, r in timing.items()
            for name, s in r["latency"].items()
        ],
    )
    for n, r in timing.items():
        print(
            f"{n}: "
            + ", ".join(f"{k} {v:.3f}x" for k, v in r["ratios_p50"].items())
            + f"; multiply-adds: re-encode {r['macs']['plain full re-encode']:,}, step "
            f"{r['macs']['step update']:,} + output layer {r['macs']['output layer']:,}"
        )
    payload = {
        "dataset": "movielens-100k",
        "machine": machine(),
        "threads": args.threads,
        "batch": 1,
        "protocol": "leave-one-out, full ranking, history masked",
        "students": results,
        "paired_ndcg10": tests,
        "exactness": exact,
        "latency": timing,
        "target": args.target,
    }
    print(f"wrote {save('incremental', payload)}")


if __name__ == "__main__":
    run_benchmark(main, "python benchmarks/distill.py")
