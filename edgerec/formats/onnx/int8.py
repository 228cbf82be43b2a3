"""ONNX in int8: calibration with ONNX Runtime's calibrators (ranges in its TensorsData format),
quantize_static (QDQ or QOperator) and quantize_dynamic from those ranges, and the weight-only form
(int8 storage that ORT folds into float weights at load, `session.disable_quant_qdq`)."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgerec.core.console import quietly
from edgerec.core.errors import EdgerecError
from edgerec.core.files import load_onnx
from edgerec.devices.runtimes import encode
from edgerec.formats.base import CHUNK
from edgerec.formats.onnx.export import compact_names
from edgerec.formats.onnx.nbits import nbits_left, nbits_onnx

WEIGHT_OPS = ("MatMul", "Gemm", "Gather")


def input_feeds(sequences, max_len: int, dtype: str, size: int = CHUNK):
    """Calibration feeds for a full model: chunks of `size` encoded histories."""
    for start in range(0, len(sequences), size):
        yield {"input_ids": encode(sequences[start : start + size], max_len, dtype)}


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
    if settings.scheme == "matmul_nbits":
        return nbits_left(model_path, onnx_units(model_path))
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
    if settings.scheme == "matmul_nbits":
        nbits_onnx(src, dst, units)
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


# ONNX Runtime keeps DequantizeLinear nodes out of constant folding so that its QDQ fusions can
# see them; this entry lets it fold them, so a weight-only file's int8 weights become float
# weights once, when the session is created, instead of being dequantized on every call (2.2x
# the fp32 file's ARM instructions per call on Cortex-A76, measured; folded: 1.00x). Apps set it
# with SessionOptions.addConfigEntry / add_session_config_entry; metadata.json carries it.
SESSION_CONFIG = {"weight_only": {"session.disable_quant_qdq": "1"}}

# MatMulNBits with 8-bit weights: ORT 1.17-1.21 refuse the file ("Only 4b quantization is
# supported"), 1.22 loads it and gives 1.32's scores to 1e-7 (x86, measured); the ARM64 kernels
# that compute it in int8 (accuracy level 4) came with 1.23 (ORT's release notes; counted here on
# 1.32 only).
RUNTIME_VERSION_NEEDED = {"matmul_nbits": "1.23"}


def onnx_forms(settings) -> list[str]:
    """The ONNX int8 forms a profile allows, in its order of preference."""
    if settings.onnx_forms:
        return list(settings.onnx_forms)
    return ["dynamic"] if settings.scheme == "dynamic" else [f"static_{settings.format.lower()}"]


def form_settings(settings, form: str):
    """The quantization settings one ONNX form runs with (the profile's types, per-channel ...)."""
    if form.startswith("static_"):
        return replace(settings, scheme="static", format={"static_qdq": "QDQ", "static_qoperator": "QOperator"}[form])
    return replace(settings, scheme=form)  # dynamic | weight_only | matmul_nbits


def _channel_axis(node, position: int) -> int:
    """The output-channel axis of a 2-D weight as `node` uses it: rows of a lookup table and of a
    transposed Gemm weight, columns of a MatMul / plain Gemm weight."""
    if node.op_type == "Gather" or position == 0:
        return 0
    transposed = any(a.name == "transB" and a.i for a in node.attribute)
    return 0 if node.op_type == "Gemm" and transposed else 1


def weight_only_onnx(src: Path, dst: Path, units: list[str]) -> None:
    """int8 storage for the 2-D weights that only `units` use: symmetric int8 per output channel
    (per tensor where two users disagree on the channel axis) + a DequantizeLinear node making the
    float weight. A weight shared by a lookup and the output layer (tied item table) is stored
    once. Written by hand: ORT's quantizers have no weight-only int8 for Gather/Gemm at opset 17
    (MatMulNBits is a contrib op; blocked DequantizeLinear needs opset 21)."""
    import onnx
    from onnx import helper, numpy_helper

    model = load_onnx(src)
    graph = model.graph
    weights = {i.name: i for i in graph.initializer}
    users: dict[str, set[str]] = {}
    axes: dict[str, set[int]] = {}
    for node in graph.node:
        for position, name in enumerate(node.input):
            if name in weights:
                users.setdefault(name, set()).add(node.name)
                axes.setdefault(name, set()).add(_channel_axis(node, position))
    chosen, added, dequantize = set(units), [], []
    for name, used_by in users.items():
        w = numpy_helper.to_array(weights[name])
        if w.dtype != np.float32 or w.ndim != 2 or not used_by <= chosen:
            continue
        axis = next(iter(axes[name])) if len(axes[name]) == 1 else None
        peak = np.abs(w).max(axis=1 - axis) if axis is not None else np.abs(w).max(keepdims=True)[0]
        scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
        shaped = scale.reshape((-1, 1) if axis == 0 else (1, -1)) if axis is not None else scale
        q = np.clip(np.rint(w / shaped), -127, 127).astype(np.int8)
        if axis is None:
            scale = scale.reshape(())
        added += [
            numpy_helper.from_array(q, f"{name}_int8"),
            numpy_helper.from_array(scale, f"{name}_scale"),
            numpy_helper.from_array(np.zeros(scale.shape, np.int8), f"{name}_zero"),
        ]
        dequantize.append(
            helper.make_node(
                "DequantizeLinear",
                [f"{name}_int8", f"{name}_scale", f"{name}_zero"],
                [name],
                name=f"{name}_dequantize",
                **({"axis": axis} if axis is not None else {}),
            )
        )
    keep = [i for i in graph.initializer if i.name not in {n.output[0] for n in dequantize}]
    del graph.initializer[:]
    graph.initializer.extend(keep + added)
    nodes = dequantize + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    compact_names(model)
    onnx.save(model, str(dst))
