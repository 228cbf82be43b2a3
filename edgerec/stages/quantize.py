"""`edgerec quantize --target T`: int8 post-training quantization of an exported fp32 bundle.

Two steps, both kept in the output so they can be inspected:

1. Calibration: the calibration set (`edgerec data`'s `calibration.npz`, or `--calibration FILE`)
   is streamed through the fp32 model in chunks and the activation ranges are saved
   (`calibration/onnx.json`: ONNX Runtime's own TensorsData format; `calibration/tflite.json`:
   ai-edge-quantizer's min/max per tensor). Memory stays bounded: each chunk is folded into the
   running ranges (min-max) or histograms before the next one runs.
2. Quantization, in each int8 form the profile allows (`onnx_forms`, `tflite_forms`):
   - ONNX: ONNX Runtime's `quantize_static` (QDQ or QOperator, u8/s8, per-channel, reduce_range)
     from the saved ranges, `quantize_dynamic` (int8 weights, activations quantized per call), or
     `weight_only_onnx` (int8 storage that ORT folds into float weights at load). Every
     node with a weight is quantized, including the item-embedding Gather and the output Gemm,
     which hold most of the bytes; attention's activation x activation MatMuls stay float
     (`MatMulConstBOnly`), and so do the op types the profile lists in `keep_float`. Lookup tables
     and batched constants are per-tensor even under a per-channel profile (see
     `_per_tensor_weights`).
   - TFLite: ai-edge-quantizer recipes (`tflite_scheme`): `dynamic` = int8 weights everywhere,
     FULLY_CONNECTED computing in int8 on activations quantized at run time, lookups and
     BATCH_MATMUL weight-only; `static` = full integer (static_wi8_ai8); `weight_only`.
     optimum is not used: its ORTQuantizer needs a `datasets.Dataset` and a transformers config,
     and wraps the same ORT calls made here directly.

Accuracy-aware: NDCG@10 on the validation users, int8 vs the fp32 file on the same runtime. When
the relative drop exceeds the profile's `max_ndcg_drop`, each quantizable unit (an ONNX node with
a weight; a TFLite op type) is quantized alone to measure its cost, and the costliest are kept in
float one by one until the drop fits. The manifest lists what stayed in float and why.

Cost-aware: with an emulated ARM CPU in the profile (`[device] emulate`, edgerec/devices/emulator.py),
each form that fits is run on the aarch64 build of its runtime and its instructions per batch-1
call counted; the form with the fewest among those within `max_size_ratio` ships (`choose_form`).
What runs cheapest on x86 says little about ARM (the int8 kernels differ), so the choice is made
on the target's own code.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edgerec.core import metrics
from edgerec.core.artifacts import atomic_artifact, check_output, output_lock, read_manifest, write_json
from edgerec.core.errors import EdgerecError
from edgerec.core.evaluation import rank_users, resolve_model_dir
from edgerec.core.files import bundle_integrity, load_npz, read_bundle
from edgerec.core.interactions import load_data
from edgerec.core.models import load_model
from edgerec.core.targets import Target, load_target
from edgerec.devices.emulator import OFF, EmulatedDevice, EmulatorUnavailable, switched_off
from edgerec.devices.runtimes import encode
from edgerec.formats import FORMATS, RUNTIMES, open_model, target_profile
from edgerec.formats.base import UnsupportedMix


@dataclass(frozen=True)
class QuantizeConfig:
    target: str
    calibration_method: str | None = None  # minmax | entropy | percentile; None: the profile's
    max_ndcg_drop: float | None = None  # None: the profile's
    calibration_file: str | None = None  # None: the data artifact's calibration.npz
    # Count ARM instructions of each int8 form on the profile's emulated CPU to choose among
    # them ([quantization] onnx_forms / tflite_forms, [device] emulate; edgerec/devices/emulator.py).
    emulate: bool = True


# ---------------------------------------------------------------------------- calibration data


def load_calibration(path: Path, num_items: int, max_len: int) -> list[np.ndarray]:
    """Calibration histories in model index space, checked. Accepts the data artifact's
    `calibration.npz` (items + offsets) or an `.npz` with `input_ids` [n, max_len] (left-padded)."""
    path = Path(path)
    if not path.exists():
        raise EdgerecError(f"{path}: calibration set not found (run edgerec data, or pass --calibration)")
    arrays = load_npz(path, "an .npz calibration set")
    if "input_ids" in arrays:
        ids = arrays["input_ids"]
        if ids.ndim != 2 or ids.shape[1] != max_len:
            raise EdgerecError(
                f"{path}: input_ids has shape {list(ids.shape)}; the model takes [n, {max_len}] (left-padded with 0)"
            )
        sequences = [row[row != 0] for row in ids]
    elif {"items", "offsets"} <= set(arrays):
        flat, offsets = arrays["items"], arrays["offsets"]
        sequences = [flat[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
    else:
        raise EdgerecError(f"{path}: expected arrays 'input_ids' or 'items' + 'offsets', found {sorted(arrays)}")
    sequences = [np.asarray(s, dtype=np.int64) for s in sequences]
    if not sequences or not any(len(s) for s in sequences):
        raise EdgerecError(f"{path}: the calibration set is empty")
    if any(len(s) == 0 for s in sequences):
        raise EdgerecError(f"{path}: {sum(len(s) == 0 for s in sequences)} calibration sequences are empty")
    bad = [int(v) for s in sequences for v in s if not 1 <= v <= num_items]
    if bad:
        raise EdgerecError(
            f"{path}: {len(bad)} calibration items are not in the model's catalogue "
            f"of {num_items} (e.g. index {bad[0]})"
        )
    return sequences


# ------------------------------------------------------------------------------------- ONNX


# ----------------------------------------------------------------------------------- TFLite


def quantize_steps(bundle: Path, folder: Path, files: dict, settings, sequences, log, model=None) -> dict:
    """The step model's files in int8 with each format's scheme for the profile
    (`ModelFormat.quantize_step`). How far the int8 step model's answers move is measured by
    `edgerec validate` against the int8 full model."""
    out = {}
    for fmt, name in files.items():
        src, dst = bundle / name, folder / name
        scheme, kept = FORMATS[fmt].quantize_step(src, dst, folder / "calibration", settings, sequences, log, model)
        out[fmt] = {
            "scheme": scheme,
            "fp32_bytes": src.stat().st_size,
            "int8_bytes": dst.stat().st_size,
            "size_ratio": dst.stat().st_size / src.stat().st_size,
            "kept_float": [{"unit": u, "why": why} for u, why in kept.items()],
        }
        log(f"{name}: {out[fmt]['fp32_bytes'] / 1e6:.3f} -> {out[fmt]['int8_bytes'] / 1e6:.3f} MB ({scheme})")
    return out


# --------------------------------------------------------------------------- accuracy-aware


def validation_ndcg(scorer, data) -> np.ndarray:
    """Per-user NDCG@10 on the validation users (full ranking, history masked)."""
    histories, targets = data.examples("valid")
    ranks, _ = rank_users(scorer, histories, targets, data.num_items)
    return np.where(ranks < 10, 1.0 / np.log2(ranks + 2.0), 0.0)


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


def _try_form(
    fmt, form, src, work, tmp, settings, sequences, meta, target, data, local, reference, max_drop, log, model=None
) -> dict:
    """One int8 form of one file, fitted to the accuracy tolerance (`fit_tolerance`). Its file
    lands in a folder of its own with a metadata.json carrying the ONNX session entries it needs,
    so the standalone runner (emulated ARM included) opens it as an app would."""
    session = FORMATS[fmt].session_config(form)
    plan = FORMATS[fmt].plan_int8(form, src, work, tmp / "calibration", settings, sequences, meta, target, log, model)
    units, structural, float_ops = plan.units, plan.structural, plan.float_ops

    def score(path):
        return validation_ndcg(
            open_model(local, path, {**meta, "onnx_session_config": {path.name: session}}, target), data
        )

    try:
        fit = fit_tolerance(plan.make, score, units, reference, max_drop, log)
    except EdgerecError as exc:
        return {
            "fits": False,
            "why": str(exc),
            "path": src,
            "int8_bytes": src.stat().st_size,
            "ndcg10": math.nan,
            "kept_float": [],
            "quantized_units": [],
        }
    folder = work / "forms" / f"{fmt}-{form}"
    folder.mkdir(parents=True)
    shutil.copy(fit["path"], folder / src.name)
    write_json(folder / "metadata.json", {"onnx_session_config": {src.name: session}} if session else {})
    kept = [k["unit"] for k in fit["kept_float"]]
    return {
        **fit,
        "fits": True,
        "path": folder / src.name,
        "int8_bytes": (folder / src.name).stat().st_size,
        "session_config": session,
        "quantized_units": [u for u in units if u not in kept],
        "kept_float": fit["kept_float"]
        + [{"unit": u, "why": why} for u, why in structural.items()]
        + [{"unit": t, "why": "keep_float in the target profile"} for t in float_ops],
    }


def arm_counter(target, config: QuantizeConfig, histories, max_len: int, log):
    """`count(runtime, path) -> ARM instructions per call` on the profile's first emulated CPU, or
    (None, why not). Rows: encoded validation histories, as validate's test users are."""
    if not target.device.emulate:
        return None, "the profile names no emulated CPU ([device] emulate)"
    if switched_off(config.emulate):
        return None, f"not counted ({OFF})"
    try:
        device = EmulatedDevice.open(target.device.emulate[0], log)
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
        return best, (
            f"fewest ARM instructions per call ({candidates[best]['arm_vs_fp32']:.3f}x fp32) "
            f"among {len(pool)} form(s) whose accuracy{'' if size_note else ' and size'} fit{size_note}"
        )
    return pool[0], f"first form in the profile's order whose accuracy{'' if size_note else ' and size'} fit{size_note}"


# ----------------------------------------------------------------------------------- driver


def _model_loader(source: dict):
    """`load()` -> the PyTorch model an exported bundle came from (loaded once, on first use):
    formats that quantize the graph rather than the file (ExecuTorch's PT2E) need it."""
    loaded = []

    def load():
        if not loaded:
            path = Path(source.get("inputs", {}).get("model", {}).get("path", ""))
            if not path.name or not path.exists():
                raise EdgerecError(
                    f"the model this bundle was exported from ({path or 'unrecorded'}) is gone; "
                    "this format's int8 is made from it"
                )
            loaded.append(load_model(resolve_model_dir(path)))
        return loaded[0]

    return load


def quantize(
    bundle: Path,
    data_dir: Path,
    out_dir: Path | None,
    config: QuantizeConfig,
    *,
    targets_dir: Path | None = None,
    profile: Target | None = None,
    overwrite: bool = False,
    log=print,
) -> dict:
    """Read an fp32 bundle (edgerec export), write an int8 bundle (default dist/<target>-int8).
    `profile`: the target profile already loaded (else `config.target` is loaded)."""
    target = profile or load_target(config.target, targets_dir)  # narrowed to the bundle's formats below
    out_dir = Path(out_dir or Path("dist") / f"{target.name}-int8")
    with output_lock(out_dir):  # held for the whole run, not only the final write
        check_output(out_dir, "quantize", overwrite)
        source = read_manifest(bundle, "export")
        if source.get("target", {}).get("name") != target.name:
            raise EdgerecError(
                f"{bundle}: exported for target {source.get('target', {}).get('name')!r}, "
                f"not {target.name!r}; export it for {target.name} first"
            )
        meta, _ = read_bundle(bundle, fix="export it again")
        data = load_data(data_dir)
        if data.num_items != meta["num_items"]:
            raise EdgerecError(f"{bundle} scores {meta['num_items']} items but {data_dir} has {data.num_items}")
        settings = target.quantization
        if config.calibration_method:
            if config.calibration_method not in ("minmax", "entropy", "percentile"):
                raise EdgerecError(
                    f"--calibration-method must be minmax, entropy or percentile, got {config.calibration_method!r}"
                )
            settings = replace(settings, calibration=config.calibration_method)
        max_drop = settings.max_ndcg_drop if config.max_ndcg_drop is None else config.max_ndcg_drop
        calibration_path = Path(config.calibration_file) if config.calibration_file else data.path / "calibration.npz"
        sequences = load_calibration(calibration_path, meta["num_items"], meta["max_len"])
        files = source["files_by_format"]
        target = target_profile(target, formats=files)  # the formats this bundle has
        model = _model_loader(source)
        inputs = {"bundle": Path(bundle), "data": Path(data_dir), "calibration": calibration_path}

        def scorer(runtime, path):
            return open_model(runtime, path, meta, target)

        with atomic_artifact(out_dir, "quantize", config=config, inputs=inputs, overwrite=overwrite) as (tmp, manifest):
            (tmp / "calibration").mkdir()
            work = Path(tempfile.mkdtemp(prefix="edgerec-quant-", dir=tmp))
            results, session_config = {}, {}
            valid_histories = data.examples("valid")[0]
            count, not_counted = arm_counter(target, config, valid_histories, meta["max_len"], log)
            for fmt, name in files.items():
                src = Path(bundle) / name
                runtimes = [r for r in target.runtimes if RUNTIMES[r.name][0] == fmt]
                local = next((r for r in runtimes if r.environment == "local"), runtimes[0])
                dtype = FORMATS[fmt].input_dtype(target)
                started = time.perf_counter()
                per_user = validation_ndcg(scorer(local, src), data)
                reference = float(np.mean(per_user))
                forms = FORMATS[fmt].int8_forms(settings)
                fp32_count = count(runtimes[0].name, src, dtype) if count and len(forms) > 1 else None
                candidates = {}
                for form in forms:
                    log(f"{name}: int8 form {form}")
                    candidates[form] = _try_form(
                        fmt,
                        form,
                        src,
                        work,
                        tmp,
                        settings,
                        sequences,
                        meta,
                        target,
                        data,
                        local,
                        per_user,
                        max_drop,
                        log,
                        model,
                    )
                    c = candidates[form]
                    c["size_ratio"] = c["int8_bytes"] / src.stat().st_size
                    if fp32_count and c["fits"]:
                        log(f"{name}: counting {form}'s instructions per call on emulated {count.cpu}")
                        c["arm_instructions_per_call"] = count(runtimes[0].name, c["path"], dtype)
                        c["arm_vs_fp32"] = c["arm_instructions_per_call"] / fp32_count
                chosen, why = choose_form(candidates, settings.max_size_ratio, fp32_count is not None)
                fit = candidates[chosen]
                shutil.copy(fit["path"], tmp / name)
                if FORMATS[fmt].session_config(chosen):  # per file: the step model has its own form
                    session_config = {name: FORMATS[fmt].session_config(chosen)}
                # The final file must load and rank on every runtime the profile names (e.g.
                # tflite-runtime 2.14 for rpi4), not only the one the tolerance loop used.
                on_runtimes = {
                    r.name: (
                        fit["ndcg10"]
                        if r is local
                        else float(
                            np.mean(
                                validation_ndcg(
                                    open_model(r, tmp / name, {**meta, "onnx_session_config": session_config}, target),
                                    data,
                                )
                            )
                        )
                    )
                    for r in runtimes
                }
                fp32_size, int8_size = src.stat().st_size, (tmp / name).stat().st_size
                results[fmt] = {
                    "scheme": chosen,
                    "runtime": local.name,
                    "fp32_bytes": fp32_size,
                    "int8_bytes": int8_size,
                    "size_ratio": int8_size / fp32_size,
                    "valid_ndcg10_fp32": reference,
                    "valid_ndcg10_int8": fit["ndcg10"],
                    "valid_ndcg10_by_runtime": on_runtimes,
                    "ndcg_retained": fit["ndcg10"] / reference if reference else math.nan,
                    "max_ndcg_drop": max_drop,
                    "quantized_units": fit["quantized_units"],
                    "kept_float": fit["kept_float"],
                    "paired_vs_fp32": fit["paired_vs_fp32"],
                    "accepted": fit["why"],
                    "sensitivity": fit["sensitivity"],
                    "trail": fit["trail"],
                    "chosen_because": why,
                    "arm_instructions": (
                        {"cpu": count.cpu, "runtime": runtimes[0].name, "fp32_per_call": fp32_count}
                        if fp32_count
                        else (not_counted if len(forms) > 1 else "one form allowed")
                    ),
                    "forms": {
                        f: {k: v for k, v in c.items() if k not in ("path", "trail", "sensitivity")}
                        for f, c in candidates.items()
                    },
                    "seconds": round(time.perf_counter() - started, 2),
                }
                counted = f", {fit['arm_vs_fp32']:.3f}x fp32's ARM instructions on {count.cpu}" if fp32_count else ""
                log(
                    f"{name}: {chosen}, {fp32_size / 1e6:.3f} -> {int8_size / 1e6:.3f} MB, validation NDCG@10 "
                    f"{reference:.4f} -> {fit['ndcg10']:.4f}{counted}"
                )
            shutil.rmtree(work)
            for side in ("items.json", "items-extra.json"):
                if (Path(bundle) / side).is_file():
                    shutil.copy(Path(bundle) / side, tmp / side)
            quant_meta = {
                fmt: {k: r[k] for k in ("scheme", "size_ratio", "valid_ndcg10_fp32", "valid_ndcg10_int8")}
                for fmt, r in results.items()
            }
            extra = {}
            if meta.get("step_model"):
                step = quantize_steps(Path(bundle), tmp, meta["step_model"]["files"], settings, sequences, log, model)
                extra["step_model"] = {**meta["step_model"], "precision": "int8", "quantization": step}
                manifest["step_quantization"] = step
            for fmt in files:  # the fp32 bundle's app files: made again from the int8 files
                for key in FORMATS[fmt].app_file_keys:
                    meta.pop(key, None)
            if session_config:
                extra["onnx_session_config"] = session_config
            for fmt in files:
                entries = FORMATS[fmt].app_files(
                    tmp,
                    {**meta, "files": files, "onnx_session_config": session_config},
                    extra.get("step_model"),
                    target,
                    data.examples("test")[0][:64],
                )
                extra.update(entries)
                manifest.update(entries)
            write_json(
                tmp / "metadata.json",
                {
                    **meta,
                    "files": files,
                    "precision": "int8",
                    "quantization": quant_meta,
                    **extra,
                    "integrity": bundle_integrity(tmp),
                },
            )
            manifest.update(
                target=target.to_dict(),
                files_by_format=files,
                fp32_bundle=str(bundle),
                calibration={
                    "method": settings.calibration,
                    "sequences": len(sequences),
                    "source": str(calibration_path),
                },
                quantization=results,
                sizes={f: (tmp / p).stat().st_size for f, p in files.items()},
            )
        return manifest
