"""Choosing a file's int8 form, for any format: each form the profile allows is made
(`ModelFormat.plan_int8`), fitted to the accuracy tolerance on the validation users
(`fit_tolerance`, `judge`), counted on the profile's emulated ARM CPU (`arm_counter`), and the
one to ship picked (`choose_form`). `quantize_file` runs all of it for one file of a bundle;
`edgerec quantize` (edgerec/stages/quantize.py) calls it once per file.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np

from edgerec.core import metrics
from edgerec.core.artifacts import write_json
from edgerec.core.errors import EdgerecError
from edgerec.core.evaluation import rank_users
from edgerec.devices.emulator import OFF, EmulatedDevice, EmulatorUnavailable, switched_off
from edgerec.devices.runtimes import encode
from edgerec.formats import FORMATS, RUNTIMES, open_model
from edgerec.formats.base import UnsupportedMix

# --------------------------------------------------------------------------- accuracy-aware


def validation_ranking(scorer, data) -> tuple[np.ndarray, np.ndarray]:
    """(per-user NDCG@10, top-10 items) on the validation users (full ranking, history masked)."""
    histories, targets = data.examples("valid")
    ranks, top = rank_users(scorer, histories, targets, data.num_items)
    return np.where(ranks < 10, 1.0 / np.log2(ranks + 2.0), 0.0), top


def validation_ndcg(scorer, data) -> np.ndarray:
    """Per-user NDCG@10 on the validation users (full ranking, history masked)."""
    return validation_ranking(scorer, data)[0]


def agreement_verdict(top: np.ndarray, reference_top: np.ndarray, floor: float | None) -> dict:
    """Mean top-10 agreement of an int8 form with fp32 on the validation users, and whether it
    keeps the profile's `min_top10_agreement` (always, when the profile sets none)."""
    agreement = float(metrics.topk_agreement(top, reference_top).mean())
    kept = floor is None or agreement >= floor
    return {
        "top10_agreement_vs_fp32": agreement,
        "min_top10_agreement": floor,
        "agreement_fits": kept,
        "agreement_why": "" if kept else f"top-10 agreement with fp32 {agreement:.4f} < {floor} (min_top10_agreement)",
    }


def judge(got: np.ndarray, reference: np.ndarray, max_drop: float) -> dict:
    """Does int8's per-user validation NDCG@10 `got` fit the tolerance against fp32's?

    It fails only when the mean drop is larger than `max_drop` (relative) *and* real: the paired
    bootstrap 95% interval of int8 - fp32 lies below 0 (design.md's protocol: one number on 943
    users is not evidence). Without the second condition a 0.0015 NDCG@10 wobble on MovieLens-100K
    (1.3%, paired interval across 0) kept the item table in float and the file at 0.74x of fp32."""
    test = metrics.paired_bootstrap(got, reference)
    floor = float(np.mean(reference)) * (1.0 - max_drop)
    beyond = float(np.mean(got)) < floor
    return {
        "ndcg10": float(np.mean(got)),
        "floor": floor,
        "paired_vs_fp32": test,
        "fits": not (beyond and test["ci95"][1] < 0),
        "why": (
            "within the tolerance"
            if not beyond
            else "the drop is not significant (paired 95% interval reaches 0)"
            if test["ci95"][1] >= 0
            else "the drop is larger than the tolerance and significant"
        ),
    }


def fit_tolerance(quantize, score, units: list[str], reference: np.ndarray, max_drop: float, log) -> dict:
    """Quantize everything; if validation NDCG@10 drops beyond `max_drop` (relative, and
    significantly: `judge`), measure each unit alone and keep the costliest in float until it
    fits. `quantize(units) -> path`, `score(path) -> per-user NDCG@10`. A mix `quantize` cannot
    make (UnsupportedMix) counts as not fitting: a unit that cannot be quantized alone is ranked
    last (its cost unknown), and a subset that cannot be made is passed over."""
    mean = float(np.mean(reference))
    path = quantize(units)
    verdict = judge(score(path), reference, max_drop)
    trail = [{"float": [], **verdict}]
    if verdict["fits"]:
        return {"path": path, "kept_float": [], "sensitivity": {}, "trail": trail, **verdict}
    log(
        f"int8 NDCG@10 {verdict['ndcg10']:.4f} < {verdict['floor']:.4f} (paired interval "
        f"{verdict['paired_vs_fp32']['ci95'][0]:+.4f}, {verdict['paired_vs_fp32']['ci95'][1]:+.4f}): "
        f"ranking {len(units)} units by sensitivity"
    )
    sensitivity: dict[str, float | None] = {}
    for unit in units:
        try:
            sensitivity[unit] = mean - float(np.mean(score(quantize([unit]))))
        except UnsupportedMix as exc:
            log(f"{unit} alone: {exc}")
            sensitivity[unit] = None
    order = sorted(units, key=lambda u: -math.inf if sensitivity[u] is None else -sensitivity[u])
    order = [u for u in order if sensitivity[u] is not None] + [u for u in order if sensitivity[u] is None]
    unmeasured = [u for u in order if sensitivity[u] is None]
    kept: list[str] = []
    for unit in order:
        if unit in kept:
            continue
        kept.append(unit)
        try:
            path = quantize([u for u in units if u not in kept])
        except UnsupportedMix as exc:
            trail.append({"float": list(kept), "fits": False, "why": str(exc)})
            verdict = {**verdict, "fits": False}
            # the mix may need the units that cannot be quantized alone kept float with these
            kept += [u for u in unmeasured if u not in kept]
            try:
                path = quantize([u for u in units if u not in kept])
            except UnsupportedMix as exc2:
                trail.append({"float": list(kept), "fits": False, "why": str(exc2)})
                continue
        verdict = judge(score(path), reference, max_drop)
        trail.append({"float": list(kept), **verdict})
        if verdict["fits"]:
            break
    if not verdict["fits"]:
        raise EdgerecError(f"int8 NDCG@10 stays below {verdict['floor']:.4f} even with every unit in float")
    reasons = [
        {
            "unit": u,
            "why": f"quantized alone it cost {sensitivity[u]:+.4f} validation NDCG@10, the most of the remaining units"
            if sensitivity[u] is not None
            else "the quantizer cannot quantize it alone, and the units before it were not enough",
        }
        for u in kept
    ]
    return {"path": path, "kept_float": reasons, "sensitivity": sensitivity, "trail": trail, **verdict}


# ------------------------------------------------------------------------------- choosing


def _form_folders(forms: Path, name: str, made: Path, filename: str, session: dict) -> tuple[Path, Path | None]:
    """Counted on ARM as an app opens it: with default session options (an empty metadata.json);
    a form that needs session entries is counted with them too, in a folder beside it."""
    folder = forms / name
    folder.mkdir(parents=True)
    shutil.copy(made, folder / filename)
    write_json(folder / "metadata.json", {})
    if not session:
        return folder / filename, None
    entries = forms / f"{name}-with-entries"
    entries.mkdir()
    shutil.copy(made, entries / filename)
    write_json(entries / "metadata.json", {"onnx_session_config": {filename: session}})
    return folder / filename, entries / filename


def try_form(fmt, form, src, work, calibration, plan_inputs: dict, data, local, reference, max_drop, log) -> dict:
    """One int8 form of one file, fitted to the accuracy tolerance (`fit_tolerance`) and held to
    the profile's top-10 agreement floor (`agreement_verdict`). `reference`: fp32's (per-user
    NDCG@10, top-10) on the validation users. Its file lands in a folder of its own with an empty
    metadata.json, so the standalone runner (emulated ARM included) opens it with default session
    options, as an app would; a form that needs session entries gets a second folder with them."""
    settings, sequences, meta, target = (plan_inputs[k] for k in ("settings", "sequences", "meta", "target"))
    session = FORMATS[fmt].session_config(form)
    plan = FORMATS[fmt].plan_int8(
        form, src, work, calibration, settings, sequences, meta, target, log, plan_inputs["model"]
    )
    units, structural, float_ops = plan.units, plan.structural, plan.float_ops
    reference_ndcg, reference_top = reference
    tops: dict[Path, np.ndarray] = {}

    def score(path):
        ndcg, tops[path] = validation_ranking(
            open_model(local, path, {**meta, "onnx_session_config": {path.name: session}}, target), data
        )
        return ndcg

    try:
        fit = fit_tolerance(plan.make, score, units, reference_ndcg, max_drop, log)
    except EdgerecError as exc:
        failed = {"fits": False, "why": str(exc), "path": src, "int8_bytes": src.stat().st_size, "ndcg10": math.nan}
        return failed | {"kept_float": [], "quantized_units": []}
    agreement = agreement_verdict(tops[fit["path"]], reference_top, settings.min_top10_agreement)
    if not agreement["agreement_fits"]:
        log(f"{src.name}: {form} refused: {agreement['agreement_why']}")
        return {
            **fit,
            **agreement,
            "fits": False,
            "why": agreement["agreement_why"],
            "path": src,
            "int8_bytes": fit["path"].stat().st_size,
            "quantized_units": [],
        }
    path, path_with_entries = _form_folders(work / "forms", f"{fmt}-{form}", fit["path"], src.name, session)
    kept = [k["unit"] for k in fit["kept_float"]]
    return {
        **fit,
        **agreement,
        "fits": True,
        "path": path,
        "int8_bytes": path.stat().st_size,
        "session_config": session,
        "path_with_entries": path_with_entries,
        "quantized_units": [u for u in units if u not in kept],
        "kept_float": fit["kept_float"]
        + [{"unit": u, "why": why} for u, why in structural.items()]
        + [{"unit": t, "why": "keep_float in the target profile"} for t in float_ops],
    }


def arm_counter(target, emulate: bool, histories, max_len: int, log):
    """`count(runtime, path) -> ARM instructions per call` on the profile's first emulated CPU, or
    (None, why not). Rows: encoded validation histories, as validate's test users are."""
    if not target.device.emulate:
        return None, "the profile names no emulated CPU ([device] emulate)"
    if switched_off(emulate):
        return None, f"not counted ({OFF})"
    try:
        device = EmulatedDevice.open(target.device.emulate[0], log, target.device)
    except EmulatorUnavailable as exc:
        return None, f"not counted: {exc}"
    cannot = device.can_count()
    if cannot:
        return None, f"not counted: {cannot}"
    rows = histories[: target.device.users]

    def count(runtime: str, path: Path, dtype: str) -> float:
        ids = encode(rows, max_len, dtype)
        return device.instructions_per_call(runtime, path, ids)["instructions_per_call"]

    count.cpu = device.cpu
    return count, ""


def choose_form(candidates: dict, max_size_ratio: float | None, counted: bool) -> tuple[str, str]:
    """The form to ship: among the forms whose accuracy fits and (if any do) whose size is within
    `max_size_ratio`, the one with the fewest ARM instructions per call when they were counted,
    else the first in the profile's order."""
    fitting = [f for f, c in candidates.items() if c["fits"]]
    if not fitting:
        raise EdgerecError(
            "no int8 form keeps validation NDCG@10 within the tolerance: "
            + "; ".join(f"{f}: {c['why']}" for f, c in candidates.items())
        )
    small = [f for f in fitting if max_size_ratio is None or candidates[f]["size_ratio"] <= max_size_ratio]
    pool, size_note = (
        (small, "")
        if small
        else (fitting, f"; no form is within {max_size_ratio}x of the fp32 size, so size did not decide")
    )
    if counted:
        pool = [f for f in pool if "arm_instructions_per_call" in candidates[f]]
        best = min(pool, key=lambda f: candidates[f]["arm_instructions_per_call"])
        slower = "; every such form costs more than fp32" if candidates[best]["arm_vs_fp32"] > 1.0 else ""
        return best, (
            f"fewest ARM instructions per call as an app loads it ({candidates[best]['arm_vs_fp32']:.3f}x fp32) "
            f"among {len(pool)} form(s) whose accuracy{'' if size_note else ' and size'} fit{size_note}{slower}"
        )
    return pool[0], f"first form in the profile's order whose accuracy{'' if size_note else ' and size'} fit{size_note}"


# ------------------------------------------------------------------------------- one file


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def _too_new(fmt: str, form: str, runtimes) -> str:
    """Why a form cannot ship to the profile's runtimes ('' if it can): it needs a newer release
    than the oldest the profile names (`min_version`)."""
    need = FORMATS[fmt].runtime_version_needed(form)
    old = [r for r in runtimes if need and _version(r.min_version) < _version(need)]
    return (
        f"needs {old[0].name} >= {need}; the profile names {old[0].min_version} (raise min_version to allow it)"
        if old
        else ""
    )


def _candidate(fmt, form, src: Path, work, calibration, plan_inputs, data, local, reference, max_drop, log) -> dict:
    """One form tried (`try_form`), or refused up front when it needs a newer runtime."""
    refused = _too_new(fmt, form, [r for r in plan_inputs["target"].runtimes if RUNTIMES[r.name][0] == fmt])
    if refused:
        log(f"{src.name}: int8 form {form} not tried: {refused}")
        return {"fits": False, "why": refused, "int8_bytes": src.stat().st_size, "size_ratio": 1.0}
    log(f"{src.name}: int8 form {form}")
    c = try_form(fmt, form, src, work, calibration, plan_inputs, data, local, reference, max_drop, log)
    c["size_ratio"] = c["int8_bytes"] / src.stat().st_size
    return c


def _count_form(c: dict, count, runtime: str, dtype, fp32_count: float) -> None:
    """ARM instructions per call of a fitting form, as its app loads it (and with the session
    entries it may ship with), against fp32's."""
    c["arm_instructions_per_call"] = count(runtime, c["path"], dtype)
    c["arm_vs_fp32"] = c["arm_instructions_per_call"] / fp32_count
    if c["path_with_entries"]:
        with_entries = count(runtime, c["path_with_entries"], dtype)
        c["arm_with_session_entries"] = {"instructions_per_call": with_entries, "vs_fp32": with_entries / fp32_count}


def _ndcg_on_runtimes(runtimes, local, local_ndcg: float, out: Path, meta: dict, target, data) -> dict:
    """The final file must load and rank on every runtime the profile names (e.g. tflite-runtime
    2.14 for rpi4), not only the one the tolerance loop used."""
    return {
        r.name: local_ndcg if r is local else float(np.mean(validation_ndcg(open_model(r, out, meta, target), data)))
        for r in runtimes
    }


def _entry(
    fmt, chosen, why, candidates, src: Path, out: Path, runtime, reference, on_runtimes, max_drop, arm_instructions
) -> dict:
    """The manifest entry of the shipped form, with every form's verdict beside it."""
    fit = candidates[chosen]
    fp32_size, int8_size = src.stat().st_size, out.stat().st_size
    return {
        "scheme": chosen,
        "runtime": runtime,
        "runtime_version_needed": FORMATS[fmt].runtime_version_needed(chosen),
        "fp32_bytes": fp32_size,
        "int8_bytes": int8_size,
        "size_ratio": int8_size / fp32_size,
        "valid_ndcg10_fp32": reference,
        "valid_ndcg10_int8": fit["ndcg10"],
        "valid_ndcg10_by_runtime": on_runtimes,
        "valid_top10_agreement_vs_fp32": fit["top10_agreement_vs_fp32"],
        "ndcg_retained": fit["ndcg10"] / reference if reference else math.nan,
        "max_ndcg_drop": max_drop,
        "quantized_units": fit["quantized_units"],
        "kept_float": fit["kept_float"],
        "paired_vs_fp32": fit["paired_vs_fp32"],
        "accepted": fit["why"],
        "sensitivity": fit["sensitivity"],
        "trail": fit["trail"],
        "chosen_because": why,
        "arm_instructions": arm_instructions,
        "forms": {
            f: {k: v for k, v in c.items() if k not in ("path", "path_with_entries", "trail", "sensitivity")}
            for f, c in candidates.items()
        },
    }


def quantize_file(
    fmt, src: Path, out: Path, work: Path, calibration: Path, plan_inputs: dict, data, counter, max_drop, log
) -> tuple[dict, dict]:
    """Every int8 form of `src` the profile allows, fitted and (when `counter` counts) counted;
    the chosen form's file is copied to `out`. `plan_inputs`: settings, sequences, meta, target,
    model (as `ModelFormat.plan_int8` takes them). `counter`: `arm_counter`'s (count, why not).
    Returns the manifest entry and the file's ONNX session entries ({} when it needs none)."""
    settings, meta, target = plan_inputs["settings"], plan_inputs["meta"], plan_inputs["target"]
    count, not_counted = counter
    runtimes = [r for r in target.runtimes if RUNTIMES[r.name][0] == fmt]
    local = next((r for r in runtimes if r.environment == "local"), runtimes[0])
    dtype = FORMATS[fmt].input_dtype(target)
    per_user, fp32_top = validation_ranking(open_model(local, src, meta, target), data)
    reference = float(np.mean(per_user))
    forms = FORMATS[fmt].int8_forms(settings)
    fp32_count = count(runtimes[0].name, src, dtype) if count and len(forms) > 1 else None
    candidates = {
        form: _candidate(
            fmt, form, src, work, calibration, plan_inputs, data, local, (per_user, fp32_top), max_drop, log
        )
        for form in forms
    }
    if fp32_count:
        for form, c in candidates.items():
            if c["fits"]:
                log(f"{src.name}: counting {form}'s instructions per call on emulated {count.cpu}")
                _count_form(c, count, runtimes[0].name, dtype, fp32_count)
    chosen, why = choose_form(candidates, settings.max_size_ratio, fp32_count is not None)
    fit = candidates[chosen]
    arm_instructions = (
        {"cpu": count.cpu, "runtime": runtimes[0].name, "fp32_per_call": fp32_count}
        if fp32_count
        else (not_counted if len(forms) > 1 else "one form allowed")
    )
    shutil.copy(fit["path"], out)
    session = FORMATS[fmt].session_config(chosen)
    on_runtimes = _ndcg_on_runtimes(
        runtimes,
        local,
        fit["ndcg10"],
        out,
        {**meta, "onnx_session_config": {out.name: session} if session else {}},
        target,
        data,
    )
    entry = _entry(
        fmt, chosen, why, candidates, src, out, local.name, reference, on_runtimes, max_drop, arm_instructions
    )
    fp32_size, int8_size = entry["fp32_bytes"], entry["int8_bytes"]
    counted = f", {fit['arm_vs_fp32']:.3f}x fp32's ARM instructions on {count.cpu}" if fp32_count else ""
    log(
        f"{src.name}: shipped {chosen}, {fp32_size / 1e6:.3f} -> {int8_size / 1e6:.3f} MB, validation NDCG@10 "
        f"{reference:.4f} -> {fit['ndcg10']:.4f}{counted}: {why}"
    )
    return entry, session
