"""Memory against speed of the heap setting `fit` trains under (`memory.reuse_freed_memory`):
a 4-epoch distillation of the default student from the ML-1M teacher, each setting in its own
process, one after another; peak RSS sampled while it runs, seconds per epoch from the manifest.

    python benchmarks/train_memory.py [--work runs/bench-ml1m] [--epochs 4]

Settings: "edgerec" (what `fit` does: mmap threshold 1 GB, trim threshold max, malloc_trim
after every epoch and mid-epoch once the process holds over a quarter of the machine's memory),
"uncapped" (the same without the mid-epoch release: fit before the cap), "mmap64" (uncapped
with a 64 MB mmap threshold), "glibc-default" (no mallopt at all). Needs the ML-1M teacher and
data from `benchmarks/ml1m.py`. Writes
benchmarks/results/train_memory.json.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, print_table, run_benchmark, save  # noqa: E402

SETTINGS = ("edgerec", "uncapped", "mmap64", "glibc-default")


def one(setting: str, work: Path, epochs: int) -> dict:
    import edgerec.core.memory as memory
    import edgerec.core.training as training
    from edgerec.core.distillation import DistillConfig
    from edgerec.core.training import TrainConfig
    from edgerec.stages.distill import distill

    libc = ctypes.CDLL("libc.so.6")
    original = training.reuse_freed_memory
    if setting == "uncapped":
        training.reuse_freed_memory = lambda: original(0.0)
    elif setting == "glibc-default":

        @contextlib.contextmanager
        def patched():
            yield memory.Heap(None, 0)

        training.reuse_freed_memory = patched
    elif setting == "mmap64":

        @contextlib.contextmanager
        def patched():
            libc.mallopt(-3, 64 << 20)  # M_MMAP_THRESHOLD
            libc.mallopt(-1, (1 << 31) - 1)  # M_TRIM_THRESHOLD
            try:
                yield memory.Heap(libc.malloc_trim, 0)  # no cap: release after each epoch only
            finally:
                libc.mallopt(-3, 128 * 1024)
                libc.mallopt(-1, 128 * 1024)

        training.reuse_freed_memory = patched
    peak = [0]

    def watch():
        while True:
            peak[0] = max(peak[0], memory.resident_bytes())
            time.sleep(0.2)

    threading.Thread(target=watch, daemon=True).start()
    manifest = distill(
        work / "teacher",
        work / "data",
        work / f"memory-{setting}",
        DistillConfig(train=TrainConfig(epochs=epochs, precision="auto")),
        overwrite=True,
    )
    return {
        "setting": setting,
        "seconds_per_epoch": round(manifest["training"]["seconds"] / epochs, 1),
        "peak_rss_gb": round(peak[0] / 1e9, 2),
        "precision": manifest["training"]["precision"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/bench-ml1m"))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.work, args.epochs)))
        return
    rows = []
    for setting in SETTINGS:
        out = subprocess.run(
            [sys.executable, __file__, "--work", str(args.work), "--epochs", str(args.epochs), "--one", setting],
            capture_output=True,
            text=True,
        )
        if out.returncode:
            raise SystemExit(f"{setting} failed:\n{out.stderr[-2000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    print_table(
        ["setting", "s / epoch", "peak RSS GB"],
        [[r["setting"], r["seconds_per_epoch"], r["peak_rss_gb"]] for r in rows],
    )
    payload = {"machine": machine(), "epochs": args.epochs, "dataset": "movielens-1m", "results": rows}
    print(f"\nwrote {save('train_memory', payload)}")


if __name__ == "__main__":
    run_benchmark(main)
