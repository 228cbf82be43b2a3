"""Training epoch time before and after packing, length-sorted validation and heap reuse.

    python benchmarks/train_speed.py [--rounds 2] [--cases ml100k-teacher,ml100k-student,ml1m-teacher]

One epoch (every training batch, then the validation pass that early stopping reads) of the
loops `edgerec teacher` and `edgerec distill` run, in three variants, each in its own process
(glibc's heap settings are per process), alternating round by round so machine load hits all
alike:
- before: what edgerec did until this change: each batch left-padded to its longest history;
  validation in batches of 256 users in data order, each padded to max_len; glibc's defaults.
- packed: batches packed (`edgerec.stages.teacher.pack`) and validation sorted by length in batches of
  32, each padded to its own longest (`RecModel.scores`); glibc's defaults.
- after: packed + `memory.reuse_freed_memory` (what `fit` does with `--precision fp32`).
- bf16: after + the forward pass under bf16 autocast (`--precision bf16`; fast only where the
  CPU has bf16 dot products: AVX512-BF16 or AMX, see the recorded flags).
Same seeds, same examples in every variant: only the layout and the allocator differ (the
distillation loss is today's in all three, fused log-softmax included). Cases:
the 2.1M teacher (hidden 256, 2 layers) and the default student distilled from a teacher's
targets (KD + ground truth) on movielens-100k, and issue 18's ML-1M teacher (hidden 64, 2
layers, length 200). Writes results/train_speed.json with the CPU model and flags.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, print_table, run_benchmark, save  # noqa: E402

VARIANTS = ["before", "packed", "after", "bf16"]
CASES = {
    "ml100k-teacher": {
        "dataset": "movielens-100k",
        "loop": "teacher",
        "shape": dict(hidden=256, layers=2, heads=4, intermediate=1024),
    },
    "ml100k-student": {"dataset": "movielens-100k", "loop": "distill", "shape": None},
    "ml1m-teacher": {
        "dataset": "movielens-1m",
        "loop": "teacher",
        "shape": dict(hidden=64, layers=2, heads=2, intermediate=256),
    },
}


def cpu_flags() -> list[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return [f for f in line.split(":", 1)[1].split() if f.startswith(("avx", "amx", "fma"))]
    return []


def padded_batches(sequences, max_len: int, batch_size: int, kd_rows=None):
    """The batch layout edgerec trained with before packing (the "before" variant): one user
    per row, left-padded, trimmed to the batch's longest window. Same windows as causal_batches
    (same draws from the same generator)."""
    import torch

    from edgerec.core.batches import batches_of

    def make(indices, rng):
        for batch in batches_of(indices, batch_size):
            inputs = np.zeros((len(batch), max_len), np.int64)
            labels = np.full((len(batch), max_len), -100, np.int64)
            kd = np.full((len(batch), max_len), -1, np.int64)
            for r, u in enumerate(batch):
                seq, begin = sequences[u], 0
                if len(seq) > max_len + 1:
                    begin = int(rng.integers(0, len(seq) - max_len))
                window = seq[begin : begin + max_len + 1]
                n = len(window) - 1
                if n > 0:
                    inputs[r, max_len - n :], labels[r, max_len - n :] = window[:-1], window[1:]
                    if kd_rows is not None:
                        kd[r, max_len - n :] = [kd_rows[u].get(begin + j, -1) for j in range(n)]
            used = int((inputs != 0).any(axis=0).argmax())
            out = {
                "input_ids": inputs[:, used:],
                "labels": labels[:, used:],
                "position_ids": np.arange(used, max_len)[None].repeat(len(batch), 0),
            }
            if kd_rows is not None:
                out["kd_rows"] = kd[:, used:]
            yield {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in out.items()}

    return make


def old_validation(rec, histories, targets, num_items):
    """Validation as it ran before: 256 users at a time in data order, padded to max_len."""
    import torch

    from edgerec.core import metrics

    total = 0.0
    with torch.inference_mode():
        for start in range(0, len(histories), 256):
            hist = histories[start : start + 256]
            scores = rec.to_item_scores(rec.logits(rec.encode(hist)).float().numpy())
            ranks = metrics.target_ranks(scores, targets[start : start + 256], num_items, hist, True)
            total += float(metrics.per_user_metrics(ranks)["NDCG@10"].sum())
    return total


def worker(case: str, variant: str, work: Path) -> dict:
    import torch

    from edgerec.core.batches import causal_batches, validator
    from edgerec.core.distillation import (
        STUDENT_SHAPE,
        DistillConfig,
        distill_loss_module,
    )
    from edgerec.core.interactions import load_data
    from edgerec.core.memory import reuse_freed_memory
    from edgerec.core.models import RecModel, Shape, build_id_model
    from edgerec.core.soft_targets import compute_targets, row_lookup
    from edgerec.core.training import Dist, autocast
    from edgerec.stages.data import make_data
    from edgerec.stages.teacher import _token_loss_module

    spec = CASES[case]
    data_dir = work / spec["dataset"]
    if not data_dir.exists():
        make_data(data_dir, dataset=spec["dataset"])
    data = load_data(data_dir)
    sequences = [s for s in data.train_sequences() if len(s) >= 2]
    torch.manual_seed(0)
    kd = None
    if spec["loop"] == "teacher":
        shape = Shape(**spec["shape"])
        model = build_id_model("causal", data.vocab_size, shape)
        loss = _token_loss_module(model)
    else:  # targets from a (randomly initialised) quick teacher: the cost is in the student loop
        shape = STUDENT_SHAPE
        teacher = RecModel(
            build_id_model("causal", data.vocab_size, Shape()).eval(),
            {"kind": "causal", "num_items": data.num_items, "max_len": 200},
        )
        config = DistillConfig()
        targets = compute_targets(teacher, sequences, config, progress=False)
        kd = row_lookup(targets)
        torch.manual_seed(0)
        model = build_id_model("causal", data.vocab_size, shape)
        loss = distill_loss_module(model, targets, data.num_items, config.alpha, config.temperature)
    make = (padded_batches if variant == "before" else causal_batches)(sequences, shape.max_len, 64, kd_rows=kd)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    order = np.random.default_rng(0).permutation(len(sequences))
    batches = list(make(order, np.random.default_rng(0)))
    slots = sum(int(b["input_ids"].numel()) for b in batches)
    histories, vtargets = data.examples("valid")
    rec = RecModel(model, {"kind": "causal", "num_items": data.num_items, "max_len": shape.max_len})
    with reuse_freed_memory() if variant in ("after", "bf16") else contextlib.nullcontext():
        model.train()
        started = time.perf_counter()
        for batch in batches:
            with autocast("bf16" if variant == "bf16" else "fp32"):
                value = loss(**batch)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
        train_s = time.perf_counter() - started
        model.eval()
        started = time.perf_counter()
        if variant == "before":
            ndcg = old_validation(rec, histories, vtargets, data.num_items)
        else:
            ndcg = validator(data, rec.meta)(model, Dist())[0]
        valid_s = time.perf_counter() - started
    return {
        "train_s": train_s,
        "valid_s": valid_s,
        "epoch_s": train_s + valid_s,
        "batches": len(batches),
        "token_slots": slots,
        "real_tokens": int(sum(int((b["labels"] != -100).sum()) for b in batches)),
        "valid_ndcg10_sum": ndcg,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--work", type=Path, default=Path("runs/bench-train-speed"))
    parser.add_argument("--worker", nargs=2, metavar=("CASE", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(*args.worker, args.work)))
        return
    cases = [c for c in args.cases.split(",") if c]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        raise SystemExit(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(CASES)}")
    runs: dict = {c: {v: [] for v in VARIANTS} for c in cases}
    for r in range(args.rounds):
        for case in cases:
            for variant in VARIANTS:
                out = subprocess.run(
                    [sys.executable, __file__, "--work", str(args.work), "--worker", case, variant],
                    capture_output=True,
                    text=True,
                )
                lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
                if out.returncode or not lines:
                    raise SystemExit(f"{case}/{variant} failed:\n{out.stderr[-2000:]}")
                runs[case][variant].append(json.loads(lines[-1][7:]))
                got = runs[case][variant][-1]
                print(
                    f"round {r + 1} {case:15s} {variant:7s} train {got['train_s']:6.1f} s  "
                    f"valid {got['valid_s']:5.1f} s",
                    flush=True,
                )
    rows, results = [], {}
    for case in cases:
        results[case] = {}
        for variant in VARIANTS:
            got = runs[case][variant]
            best = {k: min(g[k] for g in got) for k in ("train_s", "valid_s", "epoch_s")}
            results[case][variant] = {**best, "runs": got}
        base = results[case]["before"]
        for variant in VARIANTS:
            res = results[case][variant]
            res["speedup_epoch"] = base["epoch_s"] / res["epoch_s"]
            first = res["runs"][0]
            rows.append(
                [
                    case,
                    variant,
                    f"{first['token_slots'] / first['real_tokens']:.2f}",
                    f"{res['train_s']:.1f}",
                    f"{res['valid_s']:.1f}",
                    f"{res['epoch_s']:.1f}",
                    f"{base['train_s'] / res['train_s']:.2f}x",
                    f"{base['valid_s'] / res['valid_s']:.2f}x",
                    f"{res['speedup_epoch']:.2f}x",
                ]
            )
    print()
    print_table(
        [
            "case",
            "variant",
            "slots/token",
            "train s",
            "valid s",
            "epoch s",
            "train speed",
            "valid speed",
            "epoch speed",
        ],
        rows,
    )
    path = save(
        "train_speed",
        {
            "machine": {**machine(), "cpu_flags": cpu_flags()},
            "setup": {
                "rounds": args.rounds,
                "batch_users": 64,
                "cases": {c: CASES[c] for c in cases},
                "figure": "fastest of the rounds, per variant",
            },
            "results": results,
        },
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    run_benchmark(main)
