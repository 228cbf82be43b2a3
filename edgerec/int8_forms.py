"""The int8 forms `quantize` can ship, by name, and the one it writes by hand.

A profile lists the forms it allows (`[quantization] onnx_forms`, `tflite_forms`); `quantize`
makes each, fits it to the accuracy tolerance and ships the cheapest on the profile's emulated
ARM CPU. ONNX: `static_qdq`, `static_qoperator` (ONNX Runtime's calibrated static int8),
`dynamic` (its dynamic int8) and `weight_only` (written here). TFLite: ai-edge-quantizer's
`dynamic`, `static` (full integer) and `weight_only` recipes.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from edgerec.files import load_onnx
from edgerec.writers import compact_names

# ONNX Runtime keeps DequantizeLinear nodes out of constant folding so that its QDQ fusions can
# see them; this entry lets it fold them, so a weight-only file's int8 weights become float
# weights once, when the session is created, instead of being dequantized on every call (2.2x
# the fp32 file's ARM instructions per call on Cortex-A76, measured; folded: 1.00x). Apps set it
# with SessionOptions.addConfigEntry / add_session_config_entry; metadata.json carries it.
SESSION_CONFIG = {"weight_only": {"session.disable_quant_qdq": "1"}}


def onnx_forms(settings) -> list[str]:
    """The ONNX int8 forms a profile allows, in its order of preference."""
    if settings.onnx_forms:
        return list(settings.onnx_forms)
    return ["dynamic"] if settings.scheme == "dynamic" else [f"static_{settings.format.lower()}"]


def tflite_forms(settings) -> list[str]:
    return list(settings.tflite_forms) or [settings.tflite_scheme]


def form_settings(settings, form: str):
    """The quantization settings one ONNX form runs with (the profile's types, per-channel ...)."""
    if form.startswith("static_"):
        return replace(settings, scheme="static", format={"static_qdq": "QDQ", "static_qoperator": "QOperator"}[form])
    return replace(settings, scheme=form)  # dynamic | weight_only


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
