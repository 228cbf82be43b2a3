"""A validation's measurements against the target profile's budgets: one row per budget and
runtime ({budget, where, value, limit, status}), PASS / FAIL, or NOT CHECKED / SKIP with the
reason when the measurement that would decide it was not made where it stands for the device."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def coverage_budgets(target, runs: dict, beyond: dict, label: str) -> list[dict]:
    """The profile's optional `min_coverage_retained`: bundle coverage@10 / the teacher's."""
    limit = target.budgets.min_coverage_retained
    if limit is None:
        return []
    rows = []
    for runtime, r in runs.items():
        kept = beyond["models"][f"{label} {r['file']} ({runtime})"].get("vs_teacher", {}).get("coverage")
        rows.append(
            {
                "budget": "coverage@10 kept vs teacher",
                "where": runtime,
                "value": None if kept is None else round(kept, 4),
                "limit": f">= {limit}",
                "status": (
                    "SKIP (no teacher found; pass --teacher)" if kept is None else "PASS" if kept >= limit else "FAIL"
                ),
            }
        )
    return rows


def check_budgets(
    target, runs: dict, teacher_ndcg: float | None, where: str = "this machine", latency_checked: bool = True
) -> list[dict]:
    """One row per budget and runtime. A latency that does not stand for the reference device
    (`latency_stands_for_device`) is reported, never passed: "NOT CHECKED (...)"."""
    budgets, rows = target.budgets, []
    for runtime, r in runs.items():
        mb = r["bytes"] / 1e6
        rows.append(
            {
                "budget": "model size",
                "where": f"{r['file']} ({runtime})",
                "value": round(mb, 4),
                "limit": f"<= {budgets.max_model_mb} MB",
                "status": "PASS" if mb <= budgets.max_model_mb else "FAIL",
            }
        )
        p95 = r["latency"]["p95_ms"]
        rows.append(
            {
                "budget": "p95 latency, batch 1",
                "where": f"{runtime} on {where}",
                "value": round(p95, 4),
                "limit": f"<= {budgets.max_p95_ms} ms ({budgets.reference_device})",
                "status": ("PASS" if p95 <= budgets.max_p95_ms else "FAIL")
                if latency_checked
                else "NOT CHECKED (measured here, not on the reference device)",
            }
        )
        ndcg = r["metrics"]["NDCG@10"]["mean"]
        if teacher_ndcg:
            kept = ndcg / teacher_ndcg
            rows.append(
                {
                    "budget": "NDCG@10 kept vs teacher",
                    "where": runtime,
                    "value": round(kept, 4),
                    "limit": f">= {budgets.min_ndcg_retained}",
                    "status": "PASS" if kept >= budgets.min_ndcg_retained else "FAIL",
                }
            )
        else:
            rows.append(
                {
                    "budget": "NDCG@10 kept vs teacher",
                    "where": runtime,
                    "value": None,
                    "limit": f">= {budgets.min_ndcg_retained}",
                    "status": "SKIP (no teacher found; pass --teacher)",
                }
            )
    return rows


def instruction_budgets(target, emulated: dict | None) -> list[dict]:
    """`max_instructions_per_call` against the first emulated CPU's count, per runtime."""
    limit = target.budgets.max_instructions_per_call
    if limit is None:
        return []
    rows = []
    cpus = list(emulated["cpus"].items()) if isinstance(emulated, dict) else []
    for runtime in target.runtimes:
        got = cpus[0][1].get(runtime.name, {}).get("instructions") if cpus else None
        where = f"{runtime.name} on emulated {cpus[0][0]}" if cpus else runtime.name
        row = {"budget": "ARM instructions per call, batch 1", "where": where, "limit": f"<= {limit:,.0f}"}
        if isinstance(got, dict):
            row.update(
                value=round(got["instructions_per_call"]),
                status="PASS" if got["instructions_per_call"] <= limit else "FAIL",
            )
        else:
            why = got or (emulated if isinstance(emulated, str) else "no emulated device ran")
            row.update(value=None, status=f"NOT CHECKED ({why})")
        rows.append(row)
    return rows


def this_machine() -> dict:
    """This machine's CPU model and flags: every host latency figure is labelled with them."""
    cpu, flags = "", []
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
        flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith(("flags", "Features"))), [])
    except OSError:
        pass
    return {
        "cpu": cpu or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "flags": sorted(flags),
    }


def latency_stands_for_device(target, machine: dict, device) -> bool:
    """Does a latency measured here stand for the profile's reference device? On a device (ssh)
    yes; on this machine only when its CPU has the flags the profile names."""
    wanted = target.budgets.host_stands_for_device_with
    return device is not None or bool(wanted) and set(wanted) <= set(machine.get("flags", []))
