"""Where a teacher epoch's time goes on this CPU, and what bf16 autocast would buy.

    python benchmarks/train_profile.py [--data runs/bench-profile/data] [--batches 8]

The default 2.1M-parameter causal teacher (hidden 256, 2 layers, FFN 1024, length 200) on
MovieLens-100K: the same loss module and batches `edgerec teacher` trains with, timed for a few
batches (forward, backward, optimizer step), then one torch.profiler pass that ranks the
operators by self CPU time. With `--bf16` support in the CPU (AVX512-BF16 / AMX), the same
batches under `torch.autocast("cpu", torch.bfloat16)`, timed in the same process, alternating
with fp32 so machine load hits both alike. Writes results/train_profile.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, print_table, run_benchmark, save  # noqa: E402


def cpu_flags() -> list[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return line.split(":", 1)[1].split()
    return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("runs/bench-profile/data"))
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile

    from edgerec.core.batches import causal_batches
    from edgerec.core.interactions import load_data
    from edgerec.core.models import Shape, build_id_model
    from edgerec.stages.data import make_data
    from edgerec.stages.teacher import _token_loss_module

    if not args.data.exists():
        make_data(args.data)  # built-in movielens-100k
    data = load_data(args.data)
    sequences = [s for s in data.train_sequences() if len(s) >= 2]
    shape = Shape(hidden=256, layers=2, heads=4, intermediate=1024, max_len=200)
    torch.manual_seed(0)
    model = build_id_model("causal", data.vocab_size, shape).train()
    loss_module = _token_loss_module(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    order = np.random.default_rng(0).permutation(len(sequences))
    batches = list(causal_batches(sequences, shape.max_len, 64)(order, np.random.default_rng(0)))
    sample = batches[: args.batches]
    per_epoch = len(batches)
    flags = cpu_flags()
    variants = ["fp32"] + (["bf16 autocast"] if {"avx512_bf16", "amx_bf16"} & set(flags) else [])

    def step(batch, bf16: bool) -> tuple[float, float, float]:
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_module(batch["input_ids"], batch["labels"], batch["position_ids"])
        forward = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        backward = time.perf_counter()
        optimizer.step()
        return forward - started, backward - forward, time.perf_counter() - backward

    for batch in sample[:2]:  # warm-up: first-call allocations and kernel selection
        for variant in variants:
            step(batch, variant != "fp32")
    times = {v: np.zeros(3) for v in variants}
    for _ in range(args.rounds):
        for variant in variants:  # alternating, so load changes hit every variant
            for batch in sample:
                times[variant] += step(batch, variant != "fp32")
    calls = args.rounds * len(sample)
    rows, results = [], {}
    for variant, (fwd, bwd, opt) in times.items():
        seconds = (fwd + bwd + opt) / calls
        results[variant] = {
            "forward_s": fwd / calls,
            "backward_s": bwd / calls,
            "optimizer_s": opt / calls,
            "batch_s": seconds,
            "epoch_s_estimate": seconds * per_epoch,
        }
        rows.append(
            [
                variant,
                f"{fwd / calls:.3f}",
                f"{bwd / calls:.3f}",
                f"{opt / calls:.3f}",
                f"{seconds * per_epoch:.1f}",
                f"{results['fp32']['batch_s'] / seconds:.2f}x",
            ]
        )
    print_table(
        ["variant", "forward s/batch", "backward s/batch", "step s/batch", "epoch s (est.)", "speed vs fp32"], rows
    )

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for batch in sample[:3]:
            step(batch, False)
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events)
    top = [{"op": e.key, "share": e.self_cpu_time_total / total, "calls": e.count} for e in events[:10]]
    print()
    print_table(
        ["operator (fp32, self CPU)", "share", "calls"], [[t["op"], f"{t['share']:.1%}", t["calls"]] for t in top]
    )
    path = save(
        "train_profile",
        {
            "machine": {**machine(), "cpu_flags": [f for f in flags if f.startswith(("avx", "amx", "fma"))]},
            "setup": {
                "model": f"causal teacher, hidden 256, 2 layers, FFN 1024, length 200, dropout {shape.dropout}",
                "parameters": sum(p.numel() for p in model.parameters()),
                "batch_users": 64,
                "batches_timed": len(sample),
                "rounds": args.rounds,
                "batches_per_epoch": per_epoch,
            },
            "results": results,
            "fp32_profile_top_ops": top,
        },
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    run_benchmark(main)
