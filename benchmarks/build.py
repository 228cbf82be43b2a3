"""The main job, `edgerec build --target arm64`, measured: its final table (every model's size,
batch-1 latency on this machine and test NDCG@10, the budgets), its time and its peak resident
memory stage by stage. The build runs as a child process; its resident set (and that of
everything it starts: the emulator, the exporters) is sampled every 0.2 s and charged to the
stage its log last announced (`[i/6] name running`).

    python benchmarks/build.py [--target arm64] [--work runs/bench-build] [-- BUILD ARGS...]

Arguments after `--` go to `edgerec build` unchanged (an interactions file, --teacher-epochs,
...). `/usr/bin/time -v` gives the same whole-build peak ("Maximum resident set size") but not
the stage it happened in. Writes benchmarks/results/build.json; the README's table is generated
from it (docs/generate.py).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, print_table, run_benchmark, save  # noqa: E402

STAGE_LINE = re.compile(r"^\[(\d|-)/\d\] (\w+)\s+(running|reused|skipped|given|done)|^\[6/6\] (validate)")
PAGE = os.sysconf("SC_PAGE_SIZE")


def tree_rss(pid: int) -> tuple[int, int]:
    """(resident bytes of `pid`, of `pid` and all its descendants) from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry))

    def rss(p: int) -> int:
        try:
            with open(f"/proc/{p}/statm") as f:
                return int(f.read().split()[1]) * PAGE
        except (OSError, ValueError, IndexError):
            return 0

    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        total += rss(p)
        stack += children.get(p, [])
    return rss(pid), total


def measure(command: list[str], log_path: Path) -> dict:
    """Run `command`, return {"stages": {name: {"peak_rss_gb", "peak_tree_rss_gb", "seconds"}},
    "peak_rss_gb", "peak_tree_rss_gb", "minutes", "returncode"}."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    current = ["start"]
    stages: dict[str, dict] = {}
    done = threading.Event()

    def sample():
        while not done.is_set():
            own, tree = tree_rss(proc.pid)
            s = stages.setdefault(current[0], {"peak_rss": 0, "peak_tree_rss": 0, "since": time.perf_counter()})
            s["peak_rss"], s["peak_tree_rss"] = max(s["peak_rss"], own), max(s["peak_tree_rss"], tree)
            time.sleep(0.2)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    with open(log_path, "w") as log:
        for line in proc.stdout:
            log.write(line)
            log.flush()
            m = STAGE_LINE.match(line)
            if m and (m.group(3) == "running" or m.group(4)):
                current[0] = m.group(2) or m.group(4)
                print(f"  {time.perf_counter() - started:7.1f} s  {line.rstrip()}", flush=True)
    code = proc.wait()
    done.set()
    watcher.join()
    order = list(stages)
    out = {}
    for i, name in enumerate(order):
        end = stages[order[i + 1]]["since"] if i + 1 < len(order) else time.perf_counter()
        s = stages[name]
        out[name] = {
            "peak_rss_gb": round(s["peak_rss"] / 1e9, 2),
            "peak_tree_rss_gb": round(s["peak_tree_rss"] / 1e9, 2),
            "seconds": round(end - s["since"], 1),
        }
    return {
        "stages": out,
        "peak_rss_gb": max((s["peak_rss_gb"] for s in out.values()), default=0.0),
        "peak_tree_rss_gb": max((s["peak_tree_rss_gb"] for s in out.values()), default=0.0),
        "minutes": round((time.perf_counter() - started) / 60, 1),
        "returncode": code,
    }


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="arm64")
    parser.add_argument("--work", type=Path, default=Path("runs/bench-build"))
    parser.add_argument("--name", default="build", help="results file name (benchmarks/results/NAME.json)")
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    args.work.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "edgerec",
        "build",
        "--target",
        args.target,
        "--work",
        str(args.work / "runs"),
        "--dist",
        str(args.work / "dist"),
        *extra,
    ]
    print(" ".join(command[2:]), flush=True)
    result = measure(command, args.work / "build.log")
    if result["returncode"]:
        raise SystemExit(f"the build failed (exit {result['returncode']}); its log: {args.work / 'build.log'}")
    print_table(
        ["stage", "seconds", "peak RSS GB (build)", "peak RSS GB (with children)"],
        [[k, v["seconds"], v["peak_rss_gb"], v["peak_tree_rss_gb"]] for k, v in result["stages"].items()],
    )
    print(
        f"\nwhole build: {result['minutes']} min, peak {result['peak_rss_gb']} GB"
        f" ({result['peak_tree_rss_gb']} GB with children)"
    )
    report = json.loads((args.work / "dist" / args.target / "report.json").read_text())
    payload = {
        "machine": machine(),
        "command": " ".join(["edgerec", *command[3:]]),
        **result,
        "passed": report["passed"],
        "points": report["points"],
        "budgets": report["budgets"],
        "emulated_arm": report.get("emulated_arm"),
    }
    print(f"wrote {save(args.name, payload)}")


if __name__ == "__main__":
    run_benchmark(main)
