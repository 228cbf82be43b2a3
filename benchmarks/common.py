"""Helpers shared by the benchmark scripts: machine description, tables, JSON results."""

from __future__ import annotations

import json
import logging
import os
import platform
from pathlib import Path

# Import-time noise of other libraries (torchao's optional CUDA kernels, a torch deprecation):
# the scripts' own tables are what a reader wants to see.
for _name in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_name).setLevel(logging.ERROR)

RESULTS = Path(__file__).resolve().parent / "results"


# The CPU features that change which kernels run (int8 dot products, bf16, AMX): recorded with
# every result, since these machines differ from one session to the next.
KERNEL_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def machine() -> dict:
    cpu, flags = "", []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not cpu:
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                have = set(line.split(":", 1)[1].split())
                flags = [f for f in KERNEL_FLAGS if f in have]
    except OSError:
        pass
    import torch

    return {
        "cpu": cpu or platform.processor(),
        "cpu_flags": flags,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


def print_table(headers: list[str], rows: list[list]) -> None:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))


def save(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def fmt_ci(summary: dict) -> str:
    return f"{summary['mean']:.4f} [{summary['ci95'][0]:.4f}, {summary['ci95'][1]:.4f}]"


def run_benchmark(main, inputs_from: str | None = None) -> None:
    """Run a benchmark's `main()`: an input that is missing or damaged (any edgerec error) ends
    in one line on stderr, exit 2, naming the script that makes the inputs, not a traceback."""
    import sys

    from edgerec.core.errors import EdgerecError

    try:
        main()
    except EdgerecError as exc:
        hint = f" (the inputs come from `{inputs_from}`)" if inputs_from else ""
        print(f"error: {exc}{hint}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def run_single_threaded(jobs: list[tuple[str, list[str]]], work: Path, parallel: int) -> None:
    """Run `jobs` (name, argv) as child processes with one torch/OpenMP thread each, `parallel`
    at a time, each logging to work/<name>.log. Two single-threaded runs share 2 cores without
    the oversubscription a 2-thread run suffers beside another busy process (6-10x slower here)."""
    import subprocess
    import sys
    import time

    pending, running = list(jobs), []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    while pending or running:
        while pending and len(running) < parallel:
            name, argv = pending.pop(0)
            log = open(Path(work) / f"{name}.log", "w")
            running.append(subprocess.Popen([sys.executable, *argv], stdout=log, stderr=subprocess.STDOUT, env=env))
            print(f"started {name}", flush=True)
        time.sleep(5)
        for proc in [p for p in running if p.poll() is not None]:
            running.remove(proc)
            if proc.returncode:
                raise SystemExit(f"a run failed (exit {proc.returncode}): see {work}/*.log")
