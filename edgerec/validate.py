"""`edgerec validate --target T`: the bundle on the target's own runtimes, against its budgets.

Each runtime the profile names runs the bundle in a separate process through the standalone
`device_runner.py` (NumPy + the runtime, no edgerec), using only the bundle's files, exactly as an
app would: one batch-1 call per test user. That one process gives the scores (accuracy), the
per-call latency after a warm-up, the model load time (cold start) and the peak resident memory
of a process that does nothing else. tflite-runtime 2.14 runs in its own environment (envs.py).

Accuracy is full-ranking on the test users with the history masked, next to the teacher and the
fp32 student (PyTorch) on the same users, found through the bundle's lineage (its manifests) or
given explicitly. Budgets come from the profile; latency is measured on this machine, which is
not the profile's reference device, and the report says so.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgerec.artifacts import read_manifest
from edgerec.errors import EdgerecError


@dataclass(frozen=True)
class ValidateConfig:
    target: str
    warmup: int = 50  # untimed batch-1 calls before timing
    users: int | None = None  # test users (None: all); each is one timed batch-1 call
    device: str | None = None  # ssh://user@host[:port]: run the bundle there (edgerec/device.py)
    device_python: str = "python3"
    ssh_key: str | None = None


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


def load_bundle(bundle: Path, target) -> tuple[dict, list]:
    """metadata.json and items.json, checked against each other and the target."""
    bundle = Path(bundle)
    if not (bundle / "metadata.json").is_file():
        raise EdgerecError(f"{bundle}: not a bundle (no metadata.json; run edgerec export)")
    try:
        meta = json.loads((bundle / "metadata.json").read_text())
        items = json.loads((bundle / "items.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EdgerecError(f"{bundle}: unreadable bundle file ({exc})") from None
    if meta.get("target") != target.name:
        raise EdgerecError(f"{bundle}: a bundle for target {meta.get('target')!r}, not {target.name!r}")
    if len(items) != meta.get("num_items"):
        raise EdgerecError(f"{bundle}: items.json lists {len(items)} items but metadata.json says the "
                           f"model scores {meta.get('num_items')}")
    for fmt, name in meta.get("files", {}).items():
        if not (bundle / name).is_file():
            raise EdgerecError(f"{bundle}: {name} is missing")
    return meta, items


def latency_stats(seconds) -> dict:
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    return {"runs": int(ms.size), "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "p95_ms": float(np.percentile(ms, 95)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "std_ms": float(ms.std())}


def _accuracy(full_scores, histories, targets, num_items: int, reference_top=None, top=None,
              truncated_at: int | None = None) -> tuple[dict, np.ndarray, dict]:
    """Full-ranking metrics of `full_scores` [users, num_items + 1]. For a top-K output
    (`truncated_at` = K) only ranks below K are known: cut-offs above K are left out and MRR
    counts ranks below K only; `top` is then the lists the model returned."""
    from edgerec import metrics

    ranks = metrics.target_ranks(full_scores, targets, num_items, histories)
    if truncated_at is not None:
        # a target the file did not return is a miss at every cut-off (masking returned history
        # items would otherwise let a small item index tie its way above the cut-off)
        returned = np.isfinite(np.asarray(full_scores)[np.arange(len(targets)), np.asarray(targets)])
        ranks = np.where(returned, ranks, num_items)
    if top is None:
        top = metrics.top_k(full_scores, 10, num_items, histories)
    per_user = metrics.per_user_metrics(ranks)
    if truncated_at is not None:
        per_user = {name: values for name, values in per_user.items()
                    if "@" not in name or int(name.split("@")[1]) <= truncated_at}
        per_user["MRR"] = np.where(ranks < truncated_at, per_user["MRR"], 0.0)
    if reference_top is not None:
        per_user["top10_agreement"] = metrics.topk_agreement(top, reference_top)
    return metrics.summarize(per_user), top, per_user


def score_outputs(output, top_k: int | None, num_items: int, histories, targets, reference_top, where: str):
    """`_accuracy` of what a runner returned: scores [users, num_items], or for a top-K file its
    `items` [users, K] (item indices, best first), ranked K, K-1, ... 1 and every other item
    below them. Checks the shape and values first; `where` names the file and runtime."""
    output = np.asarray(output)
    if not top_k:
        if output.ndim != 2 or output.shape[1] != num_items:
            raise EdgerecError(f"{where} outputs {output.shape[-1]} scores per user but items.json lists "
                               f"{num_items} items")
        if not np.isfinite(output).all():
            raise EdgerecError(f"{where} produced NaN/inf scores")
        full = np.full((len(output), num_items + 1), -np.inf, np.float32)
        full[:, 1:] = output
        return _accuracy(full, histories, targets, num_items, reference_top)
    if top_k < 10:
        raise EdgerecError(f"{where} returns its top {top_k}; validate needs at least 10 (the accuracy "
                           "budget, agreement and coverage are at 10): export with --top-k 10 or more")
    if output.ndim != 2 or output.shape[1] != top_k or output.min(initial=1) < 1 or output.max(initial=1) > num_items:
        raise EdgerecError(f"{where} did not return [users, {top_k}] item indices in 1..{num_items}")
    items = output.astype(np.int64)
    full = np.full((len(items), num_items + 1), -np.inf, np.float32)
    np.put_along_axis(full, items, np.arange(top_k, 0, -1, dtype=np.float32)[None, :], axis=1)
    return _accuracy(full, histories, targets, num_items, reference_top, top=items[:, :10], truncated_at=top_k)


def run_bundle(bundle: Path, meta: dict, target, histories, targets, num_items: int, warmup: int,
               teacher_top=None, device=None) -> dict:
    """Every runtime of the profile on the bundle, each in its own runner process (on `device`
    when given: an `SshDevice`)."""
    from edgerec.envs import python_for, run_runner
    from edgerec.runtimes import RUNTIMES, encode

    results = {}
    for runtime in target.runtimes:
        fmt = RUNTIMES[runtime.name][0]
        name = meta["files"].get(fmt)
        if name is None:
            raise EdgerecError(f"{bundle}: runtime {runtime.name} needs a .{fmt} file, the bundle has none")
        dtype = target.onnx.input_dtype if fmt == "onnx" else "int32"
        ids = encode(histories, meta["max_len"], dtype)
        if device is not None:
            out = device.run_runner(runtime.name, Path(bundle) / name, ids, target.threads, warmup)
        else:
            python = python_for(runtime.name) if runtime.environment == "isolated" else sys.executable
            out = run_runner(python, runtime.name, Path(bundle) / name, ids, target.threads, warmup)
        summary, top, per_user = score_outputs(out["scores"], meta.get("top_k"), num_items, histories, targets,
                                               teacher_top, f"{bundle}: {name} on {runtime.name}")
        results[runtime.name] = {"top": top,
            "file": name, "bytes": (Path(bundle) / name).stat().st_size, "metrics": summary,
            "per_user_ndcg10": per_user["NDCG@10"], "latency": latency_stats(out["seconds"]),
            "latency_ms": (np.asarray(out["seconds"]) * 1e3).tolist(),
            "load_ms": float(out["load_seconds"]) * 1e3, "peak_rss_mb": float(out["peak_rss_bytes"]) / 1e6}
    return results


def _pytorch(model_dir: Path, data, histories, targets, teacher_top=None, timed: int = 200) -> dict:
    from edgerec.evaluate import resolve_model_dir
    from edgerec.models import load_model

    rec = load_model(resolve_model_dir(model_dir))
    scores = rec.scores(histories)
    summary, top, per_user = _accuracy(scores, histories, targets, data.num_items, teacher_top)
    seconds = []
    for history in histories[:timed]:  # batch-1 eager calls, as a PyTorch user would run it
        started = time.perf_counter()
        rec.scores([history])
        seconds.append(time.perf_counter() - started)
    size = sum(p.stat().st_size for p in resolve_model_dir(model_dir).glob("*.safetensors"))
    return {"metrics": summary, "top": top, "per_user_ndcg10": per_user["NDCG@10"],
            "latency": latency_stats(seconds), "bytes": size, "parameters": rec.num_parameters}


def coverage_budgets(target, runs: dict, beyond: dict, label: str) -> list[dict]:
    """The profile's optional `min_coverage_retained`: bundle coverage@10 / the teacher's."""
    limit = target.budgets.min_coverage_retained
    if limit is None:
        return []
    rows = []
    for runtime, r in runs.items():
        kept = beyond["models"][f"{label} {r['file']} ({runtime})"].get("vs_teacher", {}).get("coverage")
        rows.append({"budget": "coverage@10 kept vs teacher", "where": runtime,
                     "value": None if kept is None else round(kept, 4), "limit": f">= {limit}",
                     "status": ("SKIP (no teacher found; pass --teacher)" if kept is None
                                else "PASS" if kept >= limit else "FAIL")})
    return rows


def check_budgets(target, runs: dict, teacher_ndcg: float | None, where: str = "this machine") -> list[dict]:
    budgets, rows = target.budgets, []
    for runtime, r in runs.items():
        mb = r["bytes"] / 1e6
        rows.append({"budget": "model size", "where": f"{r['file']} ({runtime})", "value": round(mb, 4),
                     "limit": f"<= {budgets.max_model_mb} MB", "status": "PASS" if mb <= budgets.max_model_mb else "FAIL"})
        p95 = r["latency"]["p95_ms"]
        rows.append({"budget": "p95 latency, batch 1", "where": f"{runtime} on {where}", "value": round(p95, 4),
                     "limit": f"<= {budgets.max_p95_ms} ms ({budgets.reference_device})",
                     "status": "PASS" if p95 <= budgets.max_p95_ms else "FAIL"})
        ndcg = r["metrics"]["NDCG@10"]["mean"]
        if teacher_ndcg:
            kept = ndcg / teacher_ndcg
            rows.append({"budget": "NDCG@10 kept vs teacher", "where": runtime, "value": round(kept, 4),
                         "limit": f">= {budgets.min_ndcg_retained}",
                         "status": "PASS" if kept >= budgets.min_ndcg_retained else "FAIL"})
        else:
            rows.append({"budget": "NDCG@10 kept vs teacher", "where": runtime, "value": None,
                         "limit": f">= {budgets.min_ndcg_retained}", "status": "SKIP (no teacher found; pass --teacher)"})
    return rows


def validate(bundle: Path, data_dir: Path, config: ValidateConfig, *, teacher: Path | None = None,
             student: Path | None = None, compare: dict[str, Path] | None = None,
             targets_dir: Path | None = None, report_dir: Path | None = None, log=print) -> dict:
    """Measure the bundle (and `compare` bundles, for the report's plots); write report.json and
    report.html into `report_dir` (default: the bundle). Returns the report."""
    from edgerec.data import load_data
    from edgerec.device import SshDevice
    from edgerec.evaluate import item_ids_hash
    from edgerec.report import write_report
    from edgerec.targets import load_target

    target = load_target(config.target, targets_dir)
    device = SshDevice.parse(config.device, config.device_python, config.ssh_key) if config.device else None
    bundle = Path(bundle)
    meta, items = load_bundle(bundle, target)
    data = load_data(data_dir)
    if meta["num_items"] != data.num_items or item_ids_hash([str(i["id"]) if isinstance(i, dict) else str(i)
                                                             for i in items]) != item_ids_hash(data.item_ids()):
        raise EdgerecError(f"{bundle}: its items.json does not match the item vocabulary of {data_dir}")
    found = lineage(bundle)
    teacher = Path(teacher) if teacher else found["teacher"]
    student = Path(student) if student else found["student"]
    histories, targets = data.examples("test")
    if config.users:
        histories, targets = histories[: config.users], targets[: config.users]
    references, teacher_top = {}, None
    if teacher:
        log(f"teacher (PyTorch): {teacher}")
        references["teacher"] = _pytorch(teacher, data, histories, targets)
        teacher_top = references["teacher"]["top"]
    if student:
        log(f"fp32 student (PyTorch): {student}")
        references["student"] = _pytorch(student, data, histories, targets, teacher_top)
    log(f"{bundle}: {len(histories)} test users, batch 1, on {', '.join(r.name for r in target.runtimes)}"
        + (f" at {config.device}" if device else ""))
    runs = run_bundle(bundle, meta, target, histories, targets, data.num_items, config.warmup, teacher_top, device)
    compared = {}
    for label, other in (compare or {}).items():
        other_meta, _ = load_bundle(other, target)
        compared[label] = run_bundle(other, other_meta, target, histories, targets, data.num_items,
                                     config.warmup, teacher_top, device)
    step = None
    if meta.get("step_model"):
        from edgerec.incremental import validate_steps

        log("step model: replaying every history item by item")
        step = validate_steps(bundle, meta["step_model"], target, histories, targets, data.num_items,
                              runs, config.warmup, device)
    teacher_ndcg = references["teacher"]["metrics"]["NDCG@10"]["mean"] if teacher else None
    beyond = beyond_accuracy(data, runs, references, meta.get("precision", "fp32"))
    budgets = check_budgets(target, runs, teacher_ndcg, config.device or "this machine")
    budgets += coverage_budgets(target, runs, beyond, meta.get("precision", "fp32"))
    passed = all(b["status"] != "FAIL" for b in budgets)
    label = meta.get("precision", "fp32")
    report = {
        "target": target.to_dict(), "bundle": str(bundle), "data": str(data_dir), "users": len(histories),
        "precision": label, "machine": _machine(), "lineage": {k: str(v) if v else None for k, v in
                                                                {"teacher": teacher, "student": student}.items()},
        "runtimes": _public(runs), "compare": {k: _public(v) for k, v in compared.items()},
        "references": {k: {kk: vv for kk, vv in v.items() if kk not in ("top", "per_user_ndcg10")}
                       for k, v in references.items()},
        "beyond_accuracy": beyond, "budgets": budgets, "passed": passed, "step_model": step,
        "device": config.device or "this machine",
        "note": (f"latency measured on {config.device}" if config.device else "latency measured on this machine")
        + f"; the budget is for {target.budgets.reference_device}"}
    if teacher:
        from edgerec import metrics

        report["paired_vs_teacher"] = {
            runtime: metrics.paired_bootstrap(r["per_user_ndcg10"], references["teacher"]["per_user_ndcg10"])
            for runtime, r in runs.items()}
    write_report(Path(report_dir or bundle), report, runs, compared, references, label)
    return report


def _public(runs: dict) -> dict:
    return {k: {kk: vv for kk, vv in v.items() if kk not in ("per_user_ndcg10", "latency_ms", "top")}
            for k, v in runs.items()}


def beyond_accuracy(data, runs: dict, references: dict, label: str) -> dict:
    """Coverage, popularity, Gini and tail share of every model's top-10 on the same users, and
    each one's ratio to the teacher's."""
    from edgerec import metrics

    popularity = metrics.item_popularity(data.train_sequences(), data.num_items)
    models = {f"{name} (PyTorch)": ref["top"] for name, ref in references.items()}
    models.update({f"{label} {r['file']} ({runtime})": r["top"] for runtime, r in runs.items()})
    figures = {name: metrics.beyond_accuracy(top, popularity, n_boot=200) for name, top in models.items()}
    teacher = figures.get("teacher (PyTorch)")
    if teacher:
        for values in figures.values():
            values["vs_teacher"] = {k: (values[k] / teacher[k] if teacher[k] else None)
                                    for k in ("coverage", "mean_popularity", "gini", "tail_share")}
    deciles = np.minimum((np.argsort(np.argsort(-popularity[1:], kind="stable")) * 10) // data.num_items, 9)
    by_decile = {name: (np.bincount(deciles[np.asarray(top).ravel() - 1], minlength=10) / np.asarray(top).size).tolist()
                 for name, top in models.items()}
    return {"models": figures, "share_by_popularity_decile": by_decile,
            "definition": "top-10 per test user, history masked; popularity = training interactions; "
                          "tail = items outside the top 20% by popularity"}


def _machine() -> dict:
    import os
    import platform

    cpu = ""
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "")
    except OSError:
        pass
    return {"cpu": cpu or platform.processor(), "cores": os.cpu_count(), "platform": platform.platform()}

