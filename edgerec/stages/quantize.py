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
call counted; the form with the fewest among those within `max_size_ratio` ships (`choose_form`;
the fitting, counting and choosing are in edgerec/formats/int8.py, for every format alike).
What runs cheapest on x86 says little about ARM (the int8 kernels differ), so the choice is made
on the target's own code.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edgerec.core.artifacts import atomic_artifact, check_output, output_lock, read_manifest, write_json
from edgerec.core.errors import EdgerecError
from edgerec.core.evaluation import resolve_model_dir
from edgerec.core.files import bundle_integrity, load_npz, read_bundle
from edgerec.core.interactions import load_data
from edgerec.core.models import load_model
from edgerec.core.targets import Target, load_target
from edgerec.formats import FORMATS, target_profile
from edgerec.formats.int8 import arm_counter, quantize_file


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


def _settings(config: QuantizeConfig, target: Target):
    """The profile's quantization settings with the command line's overrides, and the tolerance."""
    settings = target.quantization
    if config.calibration_method:
        if config.calibration_method not in ("minmax", "entropy", "percentile"):
            raise EdgerecError(
                f"--calibration-method must be minmax, entropy or percentile, got {config.calibration_method!r}"
            )
        settings = replace(settings, calibration=config.calibration_method)
    max_drop = settings.max_ndcg_drop if config.max_ndcg_drop is None else config.max_ndcg_drop
    return settings, max_drop


def _read_source(bundle: Path, data_dir: Path, target: Target):
    """The fp32 bundle's export manifest and metadata, checked against the target and the data."""
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
    return source, meta, data


def _write_metadata(
    tmp: Path, bundle: Path, meta: dict, files: dict, results: dict, session_config: dict, plan_inputs, data, log
) -> dict:
    """The int8 bundle's metadata.json and side files: the step model in int8, each format's app
    files made again from the int8 files. Returns the manifest entries they add."""
    target, settings, sequences = plan_inputs["target"], plan_inputs["settings"], plan_inputs["sequences"]
    for side in ("items.json", "items-extra.json"):
        if (bundle / side).is_file():
            shutil.copy(bundle / side, tmp / side)
    quant_meta = {
        fmt: {k: r[k] for k in ("scheme", "size_ratio", "valid_ndcg10_fp32", "valid_ndcg10_int8")}
        for fmt, r in results.items()
    }
    extra, entries = {}, {}
    if meta.get("entries"):  # rerank / rules files: carried over in float, and said so
        extra["entries"] = {}
        for name, entry in meta["entries"].items():
            for file in entry["files"].values():
                shutil.copy(bundle / file, tmp / file)
            extra["entries"][name] = {**entry, "precision": "fp32", "note": "carried over in float by quantize"}
            log(f"{name} entry point: {', '.join(entry['files'].values())} carried over in float (no int8 form yet)")
    if meta.get("step_model"):
        step = quantize_steps(bundle, tmp, meta["step_model"]["files"], settings, sequences, log, plan_inputs["model"])
        extra["step_model"] = {**meta["step_model"], "precision": "int8", "quantization": step}
        entries["step_quantization"] = step
    for fmt in files:  # the fp32 bundle's app files: made again from the int8 files
        for key in FORMATS[fmt].app_file_keys:
            meta.pop(key, None)
    if session_config:
        extra["onnx_session_config"] = session_config
    for fmt in files:
        made = FORMATS[fmt].app_files(
            tmp,
            {**meta, "files": files, "onnx_session_config": session_config},
            extra.get("step_model"),
            target,
            data.examples("test")[0][:64],
        )
        extra.update(made)
        entries.update(made)
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
    return entries


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
    bundle = Path(bundle)
    target = profile or load_target(config.target, targets_dir)  # narrowed to the bundle's formats below
    out_dir = Path(out_dir or Path("dist") / f"{target.name}-int8")
    with output_lock(out_dir):  # held for the whole run, not only the final write
        check_output(out_dir, "quantize", overwrite)
        source, meta, data = _read_source(bundle, data_dir, target)
        settings, max_drop = _settings(config, target)
        calibration_path = Path(config.calibration_file) if config.calibration_file else data.path / "calibration.npz"
        sequences = load_calibration(calibration_path, meta["num_items"], meta["max_len"])
        files = source["files_by_format"]
        target = target_profile(target, formats=files)  # the formats this bundle has
        plan_inputs = {
            "settings": settings,
            "sequences": sequences,
            "meta": meta,
            "target": target,
            "model": _model_loader(source),
        }
        inputs = {"bundle": bundle, "data": Path(data_dir), "calibration": calibration_path}
        with atomic_artifact(out_dir, "quantize", config=config, inputs=inputs, overwrite=overwrite) as (tmp, manifest):
            (tmp / "calibration").mkdir()
            work = Path(tempfile.mkdtemp(prefix="edgerec-quant-", dir=tmp))
            counter = arm_counter(target, config.emulate, data.examples("valid")[0], meta["max_len"], log)
            results, session_config = {}, {}
            for fmt, name in files.items():
                started = time.perf_counter()
                results[fmt], session = quantize_file(
                    fmt, bundle / name, tmp / name, work, tmp / "calibration", plan_inputs, data, counter, max_drop, log
                )
                results[fmt]["seconds"] = round(time.perf_counter() - started, 2)
                if session:  # per file: the step model has its own form
                    session_config[name] = session
            shutil.rmtree(work)
            manifest.update(_write_metadata(tmp, bundle, meta, files, results, session_config, plan_inputs, data, log))
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
