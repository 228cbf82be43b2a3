"""TFLite in int8: ai-edge-quantizer's recipes (dynamic: int8 weights and FULLY_CONNECTED on
activations quantized per call; static: full integer from min/max ranges; weight-only)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from edgerec.core.artifacts import write_json
from edgerec.core.console import quietly
from edgerec.core.errors import EdgerecError
from edgerec.devices.runtimes import encode
from edgerec.formats.base import CHUNK, UnsupportedMix

TFLITE_UNITS = ("FULLY_CONNECTED", "BATCH_MATMUL", "EMBEDDING_LOOKUP")


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
    except TypeError as exc:  # AEQ 0.10: str + bytes in dequant_insert (see edgerec/formats/int8.try_form)
        raise UnsupportedMix(
            f"ai-edge-quantizer cannot quantize {', '.join(units)} with the other ops float ({exc})"
        ) from None
    Path(dst).write_bytes(result.quantized_model)


def tflite_forms(settings) -> list[str]:
    return list(settings.tflite_forms) or [settings.tflite_scheme]
