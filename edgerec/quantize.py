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

Cost-aware: with an emulated ARM CPU in the profile (`[device] emulate`, edgerec/emulator.py),
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

from edgerec import metrics
from edgerec.artifacts import atomic_artifact, check_output, output_lock, read_manifest, write_json
from edgerec.bundle import ort_files
from edgerec.console import quietly
from edgerec.data import load_data
from edgerec.emulator import OFF, EmulatedDevice, EmulatorUnavailable, switched_off
from edgerec.errors import EdgerecError
from edgerec.evaluate import rank_users
from edgerec.files import bundle_integrity, load_npz, load_onnx, read_bundle
from edgerec.formats import FORMATS
from edgerec.incremental import calibration_feeds
from edgerec.int8_forms import form_settings, weight_only_onnx
from edgerec.runtimes import RUNTIMES, encode, open_model
from edgerec.targets import load_target
from edgerec.writers import compact_names

WEIGHT_OPS = ("MatMul", "Gemm", "Gather")
TFLITE_UNITS = ("FULLY_CONNECTED", "BATCH_MATMUL", "EMBEDDING_LOOKUP")
CHUNK = 64  # calibration sequences per collection step


@dataclass(frozen=True)
class QuantizeConfig:
    target: str
    calibration_method: str | None = None  # minmax | entropy | percentile; None: the profile's
    max_ndcg_drop: float | None = None  # None: the profile's
    calibration_file: str | None = None  # None: the data artifact's calibration.npz
    # Count ARM instructions of each int8 form on the profile's emulated CPU to choose among
    # them ([quantization] onnx_forms / tflite_forms, [device] emulate; edgerec/emulator.py).
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


def input_feeds(sequences, max_len: int, dtype: str, size: int = CHUNK):
    """Calibration feeds for a full model: chunks of `size` encoded histories."""
    for start in range(0, len(sequences), size):
        yield {"input_ids": encode(sequences[start : start + size], max_len, dtype)}


# ------------------------------------------------------------------------------------- ONNX


def _ort_method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    return {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[name]


@quietly("ONNX Runtime's calibration")
def calibrate_onnx(model: Path, feeds, method: str, out: Path) -> int:
    """Run calibration feeds (an iterable of input dicts, e.g. `input_feeds(...)`) through `model`
    one at a time; write ORT's ranges JSON to `out`."""
    from onnxruntime.quantization import CalibrationDataReader, create_calibrator
    from onnxruntime.quantization.calibrate import TensorsData, save_tensors_data

    class Chunk(CalibrationDataReader):
        def __init__(self, feed):
            self.items = iter([feed])

        def get_next(self):
            return next(self.items, None)

    with tempfile.TemporaryDirectory(prefix="edgerec-calib-") as tmp:
        calibrator = create_calibrator(
            Path(model), None, augmented_model_path=str(Path(tmp) / "aug.onnx"), calibrate_method=_ort_method(method)
        )
        # One chunk per collect_data call: ORT folds each call's outputs into its running ranges
        # (min-max) or histograms and drops them, so memory is one chunk's activations. (Its
        # max_intermediate_outputs option is not used: in ORT 1.32 it discards the collected
        # outputs unmerged when the count is reached.)
        for feed in feeds:
            calibrator.collect_data(Chunk(feed))
        ranges = calibrator.compute_data()
        assert isinstance(ranges, TensorsData)
    broken = [
        name
        for name, value in ranges.data.items()
        if not np.all(np.isfinite(np.asarray(value.range_value, dtype=np.float64)))
    ]
    if broken:
        raise EdgerecError(
            f"{model}: the model produces NaN/inf on calibration data ({len(broken)} tensors, e.g. {broken[0]})"
        )
    save_tensors_data(ranges, out)
    return len(ranges.data)


def onnx_units(model_path: Path, keep_float=()) -> list[str]:
    """Names of the nodes with a weight (initializer input) that int8 can apply to."""
    model = load_onnx(model_path, load_external_data=False)
    weights = {i.name for i in model.graph.initializer}
    return [
        n.name
        for n in model.graph.node
        if n.op_type in WEIGHT_OPS and n.op_type not in keep_float and any(i in weights for i in n.input)
    ]


def _graph(model_path: Path):
    model = load_onnx(model_path, load_external_data=False)
    return model.graph, {i.name: len(i.dims) for i in model.graph.initializer}


def _per_tensor_weights(model_path: Path) -> list[str]:
    """Weights that stay per-tensor under a per-channel QDQ profile: lookup tables (ORT gives a
    Gather's output the table's per-row scales, then fails at run time) and batched (3-D) MatMul
    constants. Measured, ORT 1.32."""
    graph, weights = _graph(model_path)
    names = {n.input[0] for n in graph.node if n.op_type == "Gather" and n.input[0] in weights}
    names |= {i for n in graph.node if n.op_type == "MatMul" for i in n.input if weights.get(i, 2) != 2}
    return sorted(names)


def structural_float(model_path: Path, settings) -> dict[str, str]:
    """Nodes the profile's format cannot quantize, with the reason: per-channel QLinearMatMul
    (static QOperator) and per-channel MatMulInteger (dynamic) take 2-D weights only, so batched
    (3-D) MatMul constants stay float (ORT 1.32 fails at run time otherwise: "b zero point is not
    valid"). edgerec's own graphs no longer have any since the attention is folded into 2-D
    matrices (`models.composed_attention`); bundles exported by earlier versions have."""
    if not settings.per_channel:
        return {}
    if settings.scheme == "static" and settings.format == "QOperator":
        why = "per-channel QLinearMatMul (QOperator) takes 2-D weights only; this one is batched"
    elif settings.scheme == "dynamic":
        why = "per-channel MatMulInteger (dynamic) takes 2-D weights only; this one is batched"
    else:
        return {}
    graph, weights = _graph(model_path)
    return {n.name: why for n in graph.node if n.op_type == "MatMul" and any(weights.get(i, 2) != 2 for i in n.input)}


@quietly("ONNX Runtime's quantizer")
def quantize_onnx(src: Path, dst: Path, settings, ranges: Path | None, units: list[str]) -> None:
    """int8 ONNX with the profile's settings; only `units` (node names) are quantized."""
    from onnxruntime.quantization import (
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    if not units:  # nothing left to quantize: the fp32 file is the answer
        shutil.copy(src, dst)
        return
    if settings.scheme == "weight_only":
        weight_only_onnx(src, dst, units)
        return
    op_types = sorted({t for t in WEIGHT_OPS if t not in settings.keep_float})
    if settings.scheme == "dynamic":
        quantize_dynamic(
            src,
            dst,
            weight_type=types[settings.weight_type],
            per_channel=settings.per_channel,
            reduce_range=settings.reduce_range,
            op_types_to_quantize=op_types,
            nodes_to_quantize=units,
            extra_options={"MatMulConstBOnly": True},
        )
        _compact(dst)
        return
    overrides = (
        {name: [{"symmetric": True}] for name in _per_tensor_weights(src)}
        if settings.per_channel and settings.format == "QDQ"
        else {}
    )
    quantize_static(
        src,
        dst,
        None,
        calibration_cache_path=ranges,
        quant_format=getattr(QuantFormat, settings.format),
        op_types_to_quantize=op_types,
        per_channel=settings.per_channel,
        reduce_range=settings.reduce_range,
        activation_type=types[settings.activation_type],
        weight_type=types[settings.weight_type],
        calibrate_method=_ort_method(settings.calibration),
        nodes_to_quantize=units,
        extra_options={"MatMulConstBOnly": True, "TensorQuantOverrides": overrides},
    )
    _compact(dst)


def _compact(path: Path) -> None:
    import onnx

    model = onnx.load(str(path))
    compact_names(model)
    onnx.save(model, str(path))


# ----------------------------------------------------------------------------------- TFLite


def _tflite_quantizer(src: Path, scheme: str, per_channel: bool, units):
    from ai_edge_quantizer import algorithm_manager, qtyping, quantizer, recipe

    granularity = qtyping.QuantGranularity
    q = quantizer.Quantizer(str(src))
    # Lookup tables and the output FULLY_CONNECTED share the item table: per-tensor there. Per-row
    # scales (with TFLite's int64 zero points) cost 0.34x vs 0.30x of the fp32 file here, at equal NDCG.
    tensorwise = granularity.TENSORWISE
    channel = granularity.CHANNELWISE if per_channel else tensorwise
    if scheme == "static":  # full integer: every op the recipe supports, activations included
        q.load_quantization_recipe(recipe.static_wi8_ai8())
        for op in TFLITE_UNITS:
            if op not in units:
                q.update_quantization_recipe(".*", op, algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)
    for op in units:
        if scheme == "static":
            continue
        if op == "EMBEDDING_LOOKUP" or scheme == "weight_only":
            # no integer-compute lookup in the recipes: int8 storage, explicit DEQUANTIZE
            q.add_weight_only_config(
                ".*", op, 8, granularity=tensorwise if op in ("EMBEDDING_LOOKUP", "FULLY_CONNECTED") else channel
            )
        elif scheme == "dynamic" and op == "FULLY_CONNECTED":
            q.add_dynamic_config(".*", op, 8, granularity=tensorwise)
        elif scheme == "dynamic":
            q.add_weight_only_config(".*", op, 8, granularity=channel)
    return q


@quietly("ai-edge-quantizer's calibration")
def calibrate_tflite(src: Path, sequences, max_len: int, out: Path) -> dict:
    """ai-edge-quantizer's calibration (min/max of every tensor), saved as JSON."""
    from ai_edge_litert.interpreter import Interpreter

    signature = next(iter(Interpreter(model_path=str(src)).get_signature_list()))
    q = _tflite_quantizer(src, "static", False, TFLITE_UNITS)
    result = None
    for start in range(0, len(sequences), CHUNK):  # bounded: one chunk of samples at a time
        samples = [{"input_ids": encode([s], max_len, "int32")} for s in sequences[start : start + CHUNK]]
        result = q.calibrate({signature: samples}, previous_calibration_result=result, num_threads=1)
    plain = {name: {k: np.asarray(v).tolist() for k, v in qsv.items()} for name, qsv in result.items()}
    broken = [
        n for n, qsv in plain.items() for v in qsv.values() if not np.all(np.isfinite(np.asarray(v, dtype=np.float64)))
    ]
    if broken:
        raise EdgerecError(f"{src}: the model produces NaN/inf on calibration data (e.g. {broken[0]})")
    write_json(out, plain)
    return result


@quietly("ai-edge-quantizer")
def quantize_tflite(src: Path, dst: Path, scheme: str, per_channel: bool, calibration, units) -> None:
    if not units:
        shutil.copy(src, dst)
        return
    q = _tflite_quantizer(src, scheme, per_channel, units)
    try:
        result = q.quantize(calibration if q.need_calibration else None, enable_progress_report=False)
    except TypeError as exc:  # AEQ 0.10: str + bytes in dequant_insert (see _try_form)
        raise UnsupportedMix(
            f"ai-edge-quantizer cannot quantize {', '.join(units)} with the other ops float ({exc})"
        ) from None
    Path(dst).write_bytes(result.quantized_model)


def quantize_steps(bundle: Path, folder: Path, files: dict, settings, sequences, log) -> dict:
    """The step model's files in int8 with the profile's schemes. ONNX static: calibrated on the
    inputs the step model sees when the calibration histories are replayed through it
    (`incremental.calibration_feeds`), ranges saved in `calibration/step-onnx.json`; ONNX
    dynamic: `quantize_dynamic`. TFLite: the `dynamic` recipe (a full-integer step model has
    the same LayerNorm problem as the full one). How far the int8 step model's answers move is
    measured by `edgerec validate` against the int8 full model."""
    out = {}
    for fmt, name in files.items():
        src, dst = bundle / name, folder / name
        kept, scheme = {}, "dynamic"
        if fmt == "onnx":
            scheme = settings.scheme
            kept = structural_float(src, settings)
            ranges = None
            if scheme == "static":
                ranges = folder / "calibration" / "step-onnx.json"
                log(f"calibrating {name}: replaying {min(len(sequences), CHUNK)} calibration histories")
                calibrate_onnx(src, calibration_feeds(src, sequences[:CHUNK]), settings.calibration, ranges)
            quantize_onnx(
                src, dst, settings, ranges, [u for u in onnx_units(src, settings.keep_float) if u not in kept]
            )
        else:
            quantize_tflite(src, dst, "dynamic", settings.per_channel, None, list(TFLITE_UNITS))
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


class UnsupportedMix(EdgerecError):
    """The quantizer cannot make this mix of int8 and float ops (e.g. a tied item table read by
    an int8 lookup and a float output layer, under ai-edge-quantizer 0.10)."""

    expected = True  # fit_tolerance handles it: the quantizer's output stays off the console


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
    fmt, form, src, work, tmp, settings, sequences, meta, target, data, local, reference, max_drop, log
) -> dict:
    """One int8 form of one file, fitted to the accuracy tolerance (`fit_tolerance`). Its file
    lands in a folder of its own with a metadata.json carrying the ONNX session entries it needs,
    so the standalone runner (emulated ARM included) opens it as an app would."""
    session = FORMATS[fmt].session_config(form)
    if fmt == "onnx":
        form_set = form_settings(settings, form)
        structural = structural_float(src, form_set)
        units = [u for u in onnx_units(src, settings.keep_float) if u not in structural]
        ranges = tmp / "calibration" / "onnx.json"
        if form.startswith("static_") and not ranges.exists():
            log(f"calibrating {src.name} on {len(sequences)} sequences ({settings.calibration})")
            calibrate_onnx(
                src, input_feeds(sequences, meta["max_len"], target.onnx.input_dtype), settings.calibration, ranges
            )

        def run(chosen):
            path = work / f"onnx-{len(list(work.iterdir()))}.onnx"
            quantize_onnx(src, path, form_set, ranges, chosen)
            return path

        float_ops = settings.keep_float if form != "weight_only" else ()
    else:
        units, structural, float_ops = list(TFLITE_UNITS), {}, ()
        calibration = None
        if form == "static":
            # ai-edge-quantizer 0.10's static recipe has no integer lookup, and adding a
            # weight-only lookup to it fails inside the quantizer (str + bytes in
            # dequant_insert): the tables stay float under this scheme.
            structural = {
                "EMBEDDING_LOOKUP": "no integer lookup in ai-edge-quantizer's static "
                "recipe; weight-only mixed in fails (AEQ 0.10)"
            }
            units.remove("EMBEDDING_LOOKUP")
            log(f"calibrating {src.name} on {len(sequences)} sequences (min/max)")
            calibration = calibrate_tflite(src, sequences, meta["max_len"], tmp / "calibration" / "tflite.json")

        def run(chosen):
            path = work / f"tflite-{len(list(work.iterdir()))}.tflite"
            quantize_tflite(src, path, form, settings.per_channel, calibration, chosen)
            return path

    def score(path):
        return validation_ndcg(
            open_model(local, path, {**meta, "onnx_session_config": {path.name: session}}, target), data
        )

    try:
        fit = fit_tolerance(run, score, units, reference, max_drop, log)
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


def quantize(
    bundle: Path,
    data_dir: Path,
    out_dir: Path | None,
    config: QuantizeConfig,
    *,
    targets_dir: Path | None = None,
    overwrite: bool = False,
    log=print,
) -> dict:
    """Read an fp32 bundle (edgerec export), write an int8 bundle (default dist/<target>-int8)."""
    target = load_target(config.target, targets_dir)
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
                step = quantize_steps(Path(bundle), tmp, meta["step_model"]["files"], settings, sequences, log)
                extra["step_model"] = {**meta["step_model"], "precision": "int8", "quantization": step}
                manifest["step_quantization"] = step
            meta.pop("ort_format", None)  # the fp32 bundle's: made again from the int8 files
            if session_config:
                extra["onnx_session_config"] = session_config
            ort_entry = ort_files(
                tmp,
                {**meta, "files": files, "onnx_session_config": session_config},
                extra.get("step_model"),
                target,
                data.examples("test")[0][:64],
            )
            if ort_entry:
                extra["ort_format"] = ort_entry
                manifest["ort_format"] = ort_entry
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
