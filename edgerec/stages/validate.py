"""`edgerec validate --target T`: the bundle on the target's own runtimes, against its budgets.

Each runtime the profile names runs the bundle in a separate process through the standalone
`device_runner.py` (NumPy + the runtime, no edgerec), using only the bundle's files, exactly as an
app would: one batch-1 call per test user. That one process gives the scores (accuracy), the
per-call latency after a warm-up, the model load time (cold start) and the peak resident memory
of a process that does nothing else. tflite-runtime 2.14 runs in its own environment (envs.py).

Accuracy is full-ranking on the test users with the history masked, next to the teacher and the
fp32 student (PyTorch) on the same users, found through the bundle's lineage (its manifests) or
given explicitly. Budgets come from the profile; latency is measured on this machine, which is
not the profile's reference device, and the report says so. A bundle with a step model is also
replayed item by item through it on every runtime (`validate_steps`).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgerec.core import metrics
from edgerec.core.artifacts import check_writable, read_artifact, read_manifest
from edgerec.core.budgets import (
    check_budgets,
    coverage_budgets,
    instruction_budgets,
    latency_stands_for_device,
    this_machine,
)
from edgerec.core.errors import EdgerecError
from edgerec.core.evaluation import beyond_accuracy, item_ids_hash, resolve_model_dir
from edgerec.core.files import read_bundle, read_json
from edgerec.core.interactions import load_data
from edgerec.core.models import load_model
from edgerec.core.report import write_report
from edgerec.core.signing import verify_bundle
from edgerec.core.targets import Target, load_target
from edgerec.devices.device import SshDevice
from edgerec.devices.emulator import OFF, EmulatorUnavailable, switched_off
from edgerec.devices.envs import python_for, run_runner
from edgerec.devices.runtimes import encode
from edgerec.formats import FORMATS, RUNTIMES, target_profile
from edgerec.formats.checks import accuracy, latency_stats, replay, score_outputs
from edgerec.formats.emulated import validate_emulated
from edgerec.formats.onnx.text import TextOnnxScorer, cached_text_onnx


@dataclass(frozen=True)
class ValidateConfig:
    target: str
    warmup: int = 50  # untimed batch-1 calls before timing
    users: int | None = None  # test users (None: all); each is one timed batch-1 call
    device: str | None = None  # ssh://user@host[:port]: run the bundle there (edgerec/devices/device.py)
    device_python: str = "python3"
    ssh_key: str | None = None
    allow_modified: bool = False  # validate files that differ from the hashes the bundle records
    emulate: bool = True  # run the profile's [device] emulate CPUs (edgerec/devices/emulator.py)
    public_key: str | None = None  # verify the bundle's signature first (edgerec.core.signing)


def lineage(bundle: Path) -> dict[str, Path | None]:
    """The fp32 bundle, student and teacher this bundle came from, where they still exist."""
    found: dict[str, Path | None] = {"fp32_bundle": None, "student": None, "teacher": None}
    try:
        manifest = read_manifest(bundle)
        if manifest["stage"] == "quantize":
            found["fp32_bundle"] = Path(manifest["inputs"]["bundle"]["path"])
            manifest = read_manifest(found["fp32_bundle"], "export")
        model = Path(manifest["inputs"]["model"]["path"])
        model_manifest = read_manifest(model)
        if model_manifest["stage"] == "teacher":
            found["teacher"] = model
        else:
            found["student"] = model
            found["teacher"] = Path(model_manifest["inputs"]["teacher"]["path"])
    except (EdgerecError, KeyError, OSError):
        pass
    return {k: (v if v is not None and v.exists() else None) for k, v in found.items()}


def load_bundle(bundle: Path, target, allow_modified: bool = False) -> tuple[dict, list, list[str]]:
    """metadata.json and items.json, every bundle file checked against the hashes metadata.json
    records (`files.read_bundle`), checked against each other and the target; also returns the
    files let through as modified (`allow_modified`)."""
    bundle = Path(bundle)
    meta, modified = read_bundle(bundle, allow_modified=allow_modified)
    items = read_json(bundle / "items.json", "the bundle's item list")
    if meta.get("target") != target.name:
        raise EdgerecError(f"{bundle}: a bundle for target {meta.get('target')!r}, not {target.name!r}")
    if not isinstance(items, list) or len(items) != meta.get("num_items"):
        raise EdgerecError(
            f"{bundle}: items.json lists {len(items) if isinstance(items, list) else 'no'} "
            f"items but metadata.json says the model scores {meta.get('num_items')}"
        )
    for fmt, name in meta.get("files", {}).items():
        if not (bundle / name).is_file():
            raise EdgerecError(f"{bundle}: {name} is missing")
    return meta, items, modified


def run_bundle(
    bundle: Path, meta: dict, target, histories, targets, num_items: int, warmup: int, teacher_top=None, device=None
) -> dict:
    """Every runtime of the profile on the bundle, each in its own runner process (on `device`
    when given: an `SshDevice`)."""
    results = {}
    for runtime in target.runtimes:
        fmt = RUNTIMES[runtime.name][0]
        name = meta["files"].get(fmt)
        if name is None:
            raise EdgerecError(f"{bundle}: runtime {runtime.name} needs a .{fmt} file, the bundle has none")
        dtype = FORMATS[fmt].input_dtype(target)
        ids = encode(histories, meta["max_len"], dtype)
        if device is not None:
            out = device.run_runner(runtime.name, Path(bundle) / name, ids, target.threads, warmup)
        else:
            python = python_for(runtime.name) if runtime.environment == "isolated" else sys.executable
            out = run_runner(python, runtime.name, Path(bundle) / name, ids, target.threads, warmup)
        summary, top, per_user = score_outputs(
            out["scores"],
            meta.get("top_k"),
            num_items,
            histories,
            targets,
            teacher_top,
            f"{bundle}: {name} on {runtime.name}",
        )
        results[runtime.name] = {
            "top": top,
            "file": name,
            "bytes": (Path(bundle) / name).stat().st_size,
            "metrics": summary,
            "per_user_ndcg10": per_user["NDCG@10"],
            "latency": latency_stats(out["seconds"]),
            "latency_ms": (np.asarray(out["seconds"]) * 1e3).tolist(),
            "load_ms": float(out["load_seconds"]) * 1e3,
            "peak_rss_mb": float(out["peak_rss_bytes"]) / 1e6,
        }
    return results


def validate_steps(
    bundle: Path, entry: dict, target, histories, targets, num_items: int, full_runs: dict, warmup: int = 0, device=None
) -> dict:
    """Replay every test history through the bundle's step files on each runtime of the profile:
    the final top-10 against the full model's on the same runtime (identical in fp32; after int8
    the two files are quantized separately, so agreement is reported), accuracy, and per-update
    latency beside the full model's per-call latency."""
    out = {}
    for runtime in target.runtimes:
        fmt = RUNTIMES[runtime.name][0]
        name = entry["files"].get(fmt)
        if name is None or runtime.name not in full_runs:
            continue
        dtype = FORMATS[fmt].input_dtype(target)
        result = replay(
            runtime,
            Path(bundle) / name,
            encode(histories, entry["layout"]["window"], dtype),
            target.threads,
            warmup,
            device,
        )
        reference = full_runs[runtime.name]["top"]
        summary, top, _ = score_outputs(
            result["scores"],
            entry.get("top_k"),
            num_items,
            histories,
            targets,
            reference,
            f"{bundle}: {name} on {runtime.name}",
        )
        latency = latency_stats(result["seconds"])
        out[runtime.name] = {
            "file": name,
            "bytes": (Path(bundle) / name).stat().st_size,
            "users": len(histories),
            "updates": latency["runs"],
            "metrics": summary,
            "identical_top10": float((top == reference).all(axis=1).mean()),
            "top10_agreement_with_full_model": summary["top10_agreement"]["mean"],
            "latency_per_update": latency,
            "p50_vs_full_call": latency["p50_ms"] / full_runs[runtime.name]["latency"]["p50_ms"],
        }
    return out


def _pytorch(model_dir: Path, data, histories, targets, teacher_top=None, timed: int = 200) -> dict:
    rec = load_model(resolve_model_dir(model_dir))
    scores = rec.scores(histories)
    summary, top, per_user = accuracy(scores, histories, targets, data.num_items, teacher_top)
    seconds = []
    for history in histories[:timed]:  # batch-1 eager calls, as a PyTorch user would run it
        started = time.perf_counter()
        rec.scores([history])
        seconds.append(time.perf_counter() - started)
    size = sum(p.stat().st_size for p in resolve_model_dir(model_dir).glob("*.safetensors"))
    return {
        "metrics": summary,
        "top": top,
        "per_user_ndcg10": per_user["NDCG@10"],
        "latency": latency_stats(seconds),
        "bytes": size,
        "parameters": rec.num_parameters,
        "kind": rec.kind,
    }


def _text_onnx(teacher: Path, data, histories, targets, reference: dict, timed: int = 200) -> dict:
    """A text teacher in ONNX Runtime (optimum's export, cached per teacher): the "before" model
    runtime to runtime. Same users, same inputs, batch-1 calls as the PyTorch reference."""
    model_dir = resolve_model_dir(teacher)
    rec = load_model(model_dir)
    path = cached_text_onnx(teacher, model_dir)
    scorer = TextOnnxScorer(rec, path)
    summary, _, per_user = accuracy(scorer.scores(histories), histories, targets, data.num_items, reference["top"])
    seconds = []
    for history in histories[:timed]:
        started = time.perf_counter()
        scorer.scores([history])
        seconds.append(time.perf_counter() - started)
    return {
        "metrics": summary,
        "latency": latency_stats(seconds),
        "bytes": path.stat().st_size,
        "file": "model.onnx (fp32, optimum)",
        "runtime": "onnxruntime",
        "ndcg10_minus_pytorch": float(np.mean(per_user["NDCG@10"] - reference["per_user_ndcg10"])),
    }


def _references(teacher, student, data, histories, targets, log) -> tuple[dict, dict | None]:
    """The teacher and the fp32 student in PyTorch on the same users (and a text teacher in ONNX
    Runtime too): ({"teacher": ..., "student": ...}, the text teacher's ONNX run or None)."""
    references, teacher_top, teacher_onnx = {}, None, None
    if teacher:
        log(f"teacher (PyTorch): {teacher}")
        references["teacher"] = _pytorch(teacher, data, histories, targets)
        teacher_top = references["teacher"]["top"]
        if references["teacher"]["kind"] == "text":
            log("text teacher in ONNX Runtime (the before model, runtime to runtime)")
            teacher_onnx = _text_onnx(teacher, data, histories, targets, references["teacher"])
    if student:
        log(f"fp32 student (PyTorch): {student}")
        references["student"] = _pytorch(student, data, histories, targets, teacher_top)
    return references, teacher_onnx


def _on_arm(bundle: Path, meta: dict, target, config: ValidateConfig, histories, targets, num_items, log):
    """validate_emulated's result, or why it did not run (never a silent PASS)."""
    if not target.device.emulate:
        return "the profile names no emulated CPU"
    if switched_off(config.emulate):
        return f"not run ({OFF})"
    try:
        return validate_emulated(bundle, meta, target, histories, targets, num_items, log)
    except EmulatorUnavailable as exc:  # the machine cannot emulate: say so
        log(f"warning: the ARM check did not run: {exc}")
        return f"did not run: {exc}"


def _checked_inputs(bundle: Path, data_dir: Path, target, config: ValidateConfig, teacher, student, report_dir):
    """Everything validate reads, checked before any work (a bad input is one line, not a
    half-run validation): (meta, modified files, data, teacher, student, device)."""
    if config.device is not None and not config.device_python.strip():
        raise EdgerecError("--device-python is empty: name the Python on the device (e.g. python3)")
    device = SshDevice.parse(config.device, config.device_python, config.ssh_key) if config.device is not None else None
    if config.public_key is not None:
        verify_bundle(bundle, Path(config.public_key))
    meta, items, modified = load_bundle(bundle, target, config.allow_modified)
    check_writable(Path(report_dir or bundle), "the validation report")
    data = load_data(data_dir)
    if meta["num_items"] != data.num_items or item_ids_hash(
        [str(i["id"]) if isinstance(i, dict) else str(i) for i in items]
    ) != item_ids_hash(data.item_ids()):
        raise EdgerecError(f"{bundle}: its items.json does not match the item vocabulary of {data_dir}")
    found = lineage(bundle)
    teacher = Path(teacher) if teacher else found["teacher"]
    student = Path(student) if student else found["student"]
    if teacher:
        read_artifact(teacher, "teacher")
    if student:
        read_artifact(student, ("student", "pruned"))
    return meta, modified, data, teacher, student, device


def _budgets(target, runs, teacher_ndcg, where, stands_for_device, beyond, label, emulated) -> list[dict]:
    """Every budget of the profile: accuracy and latency, coverage, ARM instructions."""
    return (
        check_budgets(target, runs, teacher_ndcg, where, stands_for_device)
        + coverage_budgets(target, runs, beyond, label)
        + instruction_budgets(target, emulated)
    )


def _paired_vs_teacher(runs: dict, references: dict) -> dict:
    """Per runtime: the paired bootstrap of its per-user NDCG@10 against the teacher's."""
    teacher = references["teacher"]["per_user_ndcg10"]
    return {runtime: metrics.paired_bootstrap(r["per_user_ndcg10"], teacher) for runtime, r in runs.items()}


def _run_compared(compare, target, config, histories, targets, num_items, teacher_top, device, modified) -> dict:
    """Other bundles on the same users, for the report's plots; their modified files join `modified`."""
    compared = {}
    for name, other in (compare or {}).items():
        other_meta, _, other_modified = load_bundle(other, target, config.allow_modified)
        modified += [f"{other}/{file}" for file in other_modified]
        compared[name] = run_bundle(
            other, other_meta, target, histories, targets, num_items, config.warmup, teacher_top, device
        )
    return compared


def validate(
    bundle: Path,
    data_dir: Path,
    config: ValidateConfig,
    *,
    teacher: Path | None = None,
    student: Path | None = None,
    compare: dict[str, Path] | None = None,
    targets_dir: Path | None = None,
    profile: Target | None = None,
    report_dir: Path | None = None,
    log=print,
) -> dict:
    """Measure the bundle (and `compare` bundles, for the report's plots); write report.json and
    report.html into `report_dir` (default: the bundle). Returns the report. `profile`: the
    target profile already loaded (else `config.target` is loaded)."""
    target = profile or load_target(config.target, targets_dir)  # narrowed to the bundle's formats below
    bundle = Path(bundle)
    meta, modified, data, teacher, student, device = _checked_inputs(
        bundle, data_dir, target, config, teacher, student, report_dir
    )
    target = target_profile(target, formats=meta.get("files"))  # the runtimes of the bundle's formats
    histories, targets = data.examples("test")
    if config.users:
        histories, targets = histories[: config.users], targets[: config.users]
    references, teacher_onnx = _references(teacher, student, data, histories, targets, log)
    teacher_top = references["teacher"]["top"] if teacher else None
    log(
        f"{bundle}: {len(histories)} test users, batch 1, on {', '.join(r.name for r in target.runtimes)}"
        + (f" at {config.device}" if device else "")
    )
    runs = run_bundle(bundle, meta, target, histories, targets, data.num_items, config.warmup, teacher_top, device)
    compared = _run_compared(compare, target, config, histories, targets, data.num_items, teacher_top, device, modified)
    step = None
    if meta.get("step_model"):
        log("step model: replaying every history item by item")
        step = validate_steps(
            bundle, meta["step_model"], target, histories, targets, data.num_items, runs, config.warmup, device
        )
    emulated = _on_arm(bundle, meta, target, config, histories, targets, data.num_items, log)
    teacher_ndcg = references["teacher"]["metrics"]["NDCG@10"]["mean"] if teacher else None
    label = meta.get("precision", "fp32")
    beyond = beyond_accuracy(data, runs, references, label)
    machine = this_machine()
    where = config.device or f"this machine ({machine['cpu']})"
    budgets = _budgets(
        target, runs, teacher_ndcg, where, latency_stands_for_device(target, machine, device), beyond, label, emulated
    )
    report = {
        "target": target.to_dict(),
        "bundle": str(bundle),
        "data": str(data_dir),
        "users": len(histories),
        "precision": label,
        "machine": machine,
        "lineage": {k: str(v) if v else None for k, v in {"teacher": teacher, "student": student}.items()},
        "runtimes": _public(runs),
        "compare": {k: _public(v) for k, v in compared.items()},
        "references": {
            k: {kk: vv for kk, vv in v.items() if kk not in ("top", "per_user_ndcg10")} for k, v in references.items()
        },
        "beyond_accuracy": beyond,
        "budgets": budgets,
        "passed": all(b["status"] != "FAIL" for b in budgets),
        "step_model": step,
        "emulated_arm": emulated,
        "teacher_onnxruntime": teacher_onnx,
        "device": config.device or "this machine",
        "modified_files": modified,  # let through by allow_modified: not the files that were built
        "note": f"latency measured on {where}; the budget is for {target.budgets.reference_device}",
    }
    if teacher:
        report["paired_vs_teacher"] = _paired_vs_teacher(runs, references)
    try:
        write_report(Path(report_dir or bundle), report, runs, compared, references, label)
    except OSError as exc:
        raise EdgerecError(f"{report_dir or bundle}: writing the report failed ({exc.strerror})") from None
    return report


def _public(runs: dict) -> dict:
    return {
        k: {kk: vv for kk, vv in v.items() if kk not in ("per_user_ndcg10", "latency_ms", "top")}
        for k, v in runs.items()
    }
