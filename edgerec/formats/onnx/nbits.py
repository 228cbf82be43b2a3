"""The `matmul_nbits` ONNX form: every weight multiply as ONNX Runtime's `MatMulNBits` with 8-bit
weights and `accuracy_level=4`, which quantizes the activations per call and multiplies in int8
(ARM64: the dot-product kernels, ORT >= 1.23), and the item lookup read from the same int8
table by `GatherBlockQuantized` (8-bit). It runs in a session with default options and its .ort
keeps the int8 weights: nothing is folded at load.

Written by hand because ORT's own tool for this form (`MatMulNBitsQuantizer`, 1.32) takes MatMul
but not Gemm (every linear layer of a torch.onnx export at opset 17), rewriting the Gemms first
unties the item table shared by the lookup and the scoring head (stored twice), and its 8-bit
Gather is refused (the quantizer makes 4-bit `GatherBlockQuantized` only; the operator itself
runs 8 bits on uint8 rows, ORT 1.23 and 1.32, measured). Here a weight shared by a lookup and a
multiply is stored once, as MatMulNBits' B: `[N, blocks, block_size]` uint8 with per-block
scales and zero point 128 (both operators' default for 8 bits), which for a transposed Gemm
weight `[N, K]` is the table's rows. Only the scales are stored twice (N floats each), because
the two operators want them in different ranks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgerec.core.files import load_onnx
from edgerec.formats.onnx.export import compact_names

BITS = 8
ZERO = 1 << (BITS - 1)  # MatMulNBits' zero point when none is given
ACCURACY_LEVEL = 4  # int8 compute: activations quantized per call
MS = "com.microsoft"


def block_size(k: int) -> int | None:
    """The block along K: the largest power of two in [16, 256] that divides K (one block per
    row at hidden 64: the fewest scales and, on Cortex-A76, the fewest instructions per item),
    or None when K has none."""
    for size in (256, 128, 64, 32, 16):
        if size <= k and k % size == 0:
            return size
    return None


def quantize_rows(w: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """`w` [N, K] float as symmetric 8-bit blocks along K: (B [N, K/size, size] uint8 with zero
    point 128, scales [N, K/size] float32)."""
    n, k = w.shape
    blocks = w.reshape(n, k // size, size)
    peak = np.abs(blocks).max(axis=2)
    scales = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(blocks / scales[..., None]), -127, 127) + ZERO
    return q.astype(np.uint8), scales


def _row_weight(node, weights: dict):
    """(weight name, transposed?) when `node` multiplies by a constant 2-D weight MatMulNBits
    can take as B (Gemm with alpha = beta = 1 and no transA, MatMul with a 2-D constant B), or
    lookups that gather rows of a 2-D constant table; else None."""
    from onnx import helper

    value = {a.name: helper.get_attribute_value(a) for a in node.attribute}.get
    if node.op_type == "Gemm":
        if value("transA", 0) or value("alpha", 1.0) != 1.0 or value("beta", 1.0) != 1.0:
            return None
        name = node.input[1]
        return (name, bool(value("transB", 0))) if name in weights and weights[name].ndim == 2 else None
    if node.op_type == "MatMul":
        name = node.input[1]
        return (name, False) if name in weights and weights[name].ndim == 2 else None
    if node.op_type == "Gather" and value("axis", 0) == 0:
        name = node.input[0]
        return (name, True) if name in weights and weights[name].ndim == 2 else None
    return None


def nbits_onnx(src: Path, dst: Path, units: list[str], lone_lookups: bool = False) -> dict[str, str]:
    """Write `src` with the weights that only `units` use in 8-bit MatMulNBits storage; returns the
    units left in float with the reason (a weight also used by a node outside `units`, or whose K
    has no block size)."""
    import onnx
    from onnx import helper, numpy_helper

    model = load_onnx(src)
    graph = model.graph
    weights = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    plans, left = _plan(graph, weights, units, lone_lookups)
    added, rewritten = [], {}
    for name, (rows, size, nodes) in plans.items():
        q, scales = quantize_rows(rows, size)
        added += [numpy_helper.from_array(q, f"{name}_q8"), numpy_helper.from_array(scales, f"{name}_scales")]
        if any(x.op_type == "Gather" for x in nodes):
            added.append(numpy_helper.from_array(scales[..., None], f"{name}_row_scales"))
        for node in nodes:
            rewritten[node.name] = _rewrite(node, name, rows.shape, size, helper)
    nodes = []
    for node in graph.node:
        nodes += rewritten.get(node.name, [node])
    keep = [i for i in graph.initializer if i.name not in plans]
    del graph.initializer[:]
    graph.initializer.extend(keep + added)
    if any(n.op_type == "Squeeze" for new in rewritten.values() for n in new):
        graph.initializer.append(numpy_helper.from_array(np.array([-2], np.int64), "nbits_block_axis"))
    del graph.node[:]
    graph.node.extend(nodes)
    if not any(o.domain == MS for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS, 1))
    compact_names(model)
    onnx.save(model, str(dst))
    return left


def nbits_left(src: Path, units: list[str]) -> dict[str, str]:
    """The units `nbits_onnx` would leave in float, with the reason (nothing is written)."""
    from onnx import numpy_helper

    graph = load_onnx(src).graph
    return _plan(graph, {i.name: numpy_helper.to_array(i) for i in graph.initializer}, units)[1]


def _plan(graph, weights: dict, units: list[str], lone_lookups: bool = False) -> tuple[dict, dict[str, str]]:
    """({weight: ([N, K] rows, block size, the nodes using it)}, {unit left in float: why})."""
    chosen = set(units)
    users: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            if name in weights:
                users.setdefault(name, []).append(node)
    plans, left = {}, {}
    for name, nodes in users.items():
        w = weights[name]
        if w.dtype != np.float32 or w.ndim != 2 or not all(n.name in chosen for n in nodes):
            continue
        why = _cannot(name, nodes, weights, lone_lookups)
        if why:
            left.update({n.name: why for n in nodes})
            continue
        transposed = _row_weight(nodes[0], weights)[1]
        rows = w if transposed else w.T  # [N, K]
        plans[name] = (np.ascontiguousarray(rows), block_size(rows.shape[1]), nodes)
    return plans, left


def _cannot(name: str, nodes: list, weights: dict, lone_lookups: bool = False) -> str:
    """Why the weight `name`, used by `nodes`, cannot be stored for MatMulNBits ('' if it can).
    `lone_lookups`: tables only lookups read go to int8 too (benchmarks/nbits_units.py)."""
    forms = [_row_weight(n, weights) for n in nodes]
    if any(f is None or f[0] != name for f in forms):
        return "its weight has a use MatMulNBits cannot take"
    if len({f[1] for f in forms}) > 1:
        return "a lookup and a multiply read the table along different axes"
    n, k = weights[name].shape if forms[0][1] else weights[name].shape[::-1]
    size = block_size(k)
    if size is None:
        return f"K = {k} has no MatMulNBits block size"
    if all(x.op_type == "Gather" for x in nodes) and not lone_lookups:
        # e.g. the position table: gathering its int8 rows each call cost 1.24x fp32's ARM
        # instructions on the default student (Cortex-A76, ORT 1.32), for 38 KB saved
        return "a lookup table no multiply shares: int8 rows cost more per call than float ones"
    if size != k and any(x.op_type == "Gather" for x in nodes):
        return f"a lookup of rows longer than one block (K = {k})"
    for x in nodes:
        bias = x.input[2] if x.op_type == "Gemm" and len(x.input) > 2 else ""
        if bias and (bias not in weights or weights[bias].shape != (n,)):
            return "its bias is not a constant of N values"
    return ""


def _rewrite(node, name: str, shape: tuple[int, int], size: int, helper) -> list:
    """The node(s) that replace `node` reading weight `name` ([N, K] rows, blocks of `size`)."""
    n, k = shape
    if node.op_type == "Gather":
        # ORT's 8-bit block-quantized lookup on the same uint8 rows ([N, 1, K]: one block per
        # row, `_cannot`), its scales [N, 1, 1] (the rank it wants); the block axis squeezed away.
        ids, tag = node.input[1], node.name
        return [
            helper.make_node(
                "GatherBlockQuantized",
                [f"{name}_q8", ids, f"{name}_row_scales"],
                [f"{tag}_rows"],
                name=tag,
                domain=MS,
                gather_axis=0,
                quantize_axis=2,
                block_size=size,
                bits=BITS,
            ),
            helper.make_node("Squeeze", [f"{tag}_rows", "nbits_block_axis"], list(node.output), name=f"{tag}_squeeze"),
        ]
    inputs = [node.input[0], f"{name}_q8", f"{name}_scales"]
    if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2]:
        inputs += ["", "", node.input[2]]  # zero_points, g_idx absent; bias
    return [
        helper.make_node(
            "MatMulNBits",
            inputs,
            list(node.output),
            name=node.name,
            domain=MS,
            K=k,
            N=n,
            bits=BITS,
            block_size=size,
            accuracy_level=ACCURACY_LEVEL,
        )
    ]
