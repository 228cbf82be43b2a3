"""A bundle on the aarch64 builds of its runtimes, per CPU model the profile emulates
(edgerec/devices/emulator.py): the same files, the same test users, scores compared with this
machine's runtime, and ARM instructions per call. `edgerec validate` reports it."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from edgerec.core import metrics
from edgerec.devices.emulator import EmulatedDevice
from edgerec.devices.envs import python_for, run_runner
from edgerec.devices.runtimes import encode
from edgerec.formats import FORMATS, RUNTIMES
from edgerec.formats.checks import score_outputs

STEP_REPLAY_USERS = 8  # a replay is one emulated call per history item: keep it to a few users


def validate_emulated(bundle: Path, meta: dict, target, histories, targets, num_items: int, log=print) -> dict:
    """The bundle on the aarch64 builds of its runtimes, per CPU model the profile emulates
    (edgerec/devices/emulator.py), on the first `device.users` test users: scores against the same
    file on this machine's runtime (max |diff|, top-10 agreement), NDCG@10 on ARM kernels vs
    here (paired), and ARM instructions per batch-1 call for the full and the step model."""
    n = min(target.device.users, len(histories))
    hist, tgt = histories[:n], targets[:n]
    out = {"users": n, "cpus": {}}
    step = meta.get("step_model")
    for cpu in target.device.emulate:
        device = EmulatedDevice.open(cpu, log, target.device)
        cannot = device.can_count()
        result = {}
        for runtime in target.runtimes:
            fmt = RUNTIMES[runtime.name][0]
            name = meta["files"][fmt]
            ids = encode(hist, meta["max_len"], FORMATS[fmt].input_dtype(target))
            log(f"{device.name}: {name} on aarch64 {runtime.name}, {n} test users")
            arm = device.run_runner(runtime.name, Path(bundle) / name, ids, 1)
            python = python_for(runtime.name) if runtime.environment == "isolated" else sys.executable
            here = run_runner(python, runtime.name, Path(bundle) / name, ids, 1)
            where = f"{bundle}: {name} on aarch64 {runtime.name} ({device.name})"
            _, arm_top, arm_user = score_outputs(arm["scores"], meta.get("top_k"), num_items, hist, tgt, None, where)
            _, here_top, here_user = score_outputs(
                here["scores"], meta.get("top_k"), num_items, hist, tgt, None, f"{bundle}: {name} on {runtime.name}"
            )
            entry = {
                "file": name,
                "users": n,
                "top10_agreement_with_host": float(metrics.topk_agreement(arm_top, here_top).mean()),
                "identical_top10": float((arm_top == here_top).all(axis=1).mean()),
                "ndcg10_arm": float(arm_user["NDCG@10"].mean()),
                "ndcg10_host": float(here_user["NDCG@10"].mean()),
                "paired_arm_minus_host": metrics.paired_bootstrap(arm_user["NDCG@10"], here_user["NDCG@10"]),
            }
            if not meta.get("top_k"):
                entry["max_abs_diff_vs_host"] = float(
                    np.max(np.abs(np.asarray(arm["scores"], np.float64) - np.asarray(here["scores"], np.float64)))
                )
            if step and fmt in step.get("files", {}):
                entry["step_replay"] = _step_replay(
                    device, runtime, bundle, meta, target, hist, tgt, arm_top, num_items, log
                )
            if cannot:
                entry["instructions"] = f"not measured: {cannot}"
            else:
                log(f"{device.name}: counting instructions per call ({name})")
                entry["instructions"] = device.instructions_per_call(runtime.name, Path(bundle) / name, ids)
                if step and fmt in step.get("files", {}):
                    step_ids = encode(hist, step["layout"]["window"], FORMATS[fmt].input_dtype(target))
                    entry["step_instructions"] = device.instructions_per_call(
                        runtime.name, Path(bundle) / step["files"][fmt], step_ids[:5], few=1, many=6, step=True
                    )
            result[runtime.name] = entry
        out["cpus"][cpu] = result
    return out


def _step_replay(device, runtime, bundle: Path, meta: dict, target, hist, tgt, arm_top, num_items, log) -> dict:
    """The step file replayed item by item on ARM kernels, against the full file there."""
    step, fmt = meta["step_model"], RUNTIMES[runtime.name][0]
    k = min(STEP_REPLAY_USERS, len(hist))
    step_ids = encode(hist[:k], step["layout"]["window"], FORMATS[fmt].input_dtype(target))
    log(f"{device.name}: replaying {step['files'][fmt]} for {k} test users")
    replayed = device.run_runner(runtime.name, Path(bundle) / step["files"][fmt], step_ids, 1, step=True)
    where = f"{bundle}: {step['files'][fmt]} on {device.name}"
    _, step_top, _ = score_outputs(replayed["scores"], meta.get("top_k"), num_items, hist[:k], tgt[:k], None, where)
    return {
        "users": k,
        "identical_top10_with_full": float((step_top == arm_top[:k]).all(axis=1).mean()),
        "top10_agreement_with_full": float(metrics.topk_agreement(step_top, arm_top[:k]).mean()),
    }
