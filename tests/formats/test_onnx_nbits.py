"""The matmul_nbits ONNX form: every weight multiply as MatMulNBits (8-bit, accuracy level 4), the
tied item table stored once, runs with default session options, and its .ort keeps the int8."""

import json

import numpy as np
import pytest

from edgerec.devices.runtimes import encode
from edgerec.formats.onnx.int8 import onnx_units
from edgerec.formats.onnx.nbits import block_size, nbits_onnx, quantize_rows


@pytest.fixture
def bundle(arm64_onnx):
    return arm64_onnx


def _run(path, ids):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])  # default options
    return session.run(["scores"], {"input_ids": ids})[0]


def test_rows_round_trip_within_half_a_step():
    w = np.random.default_rng(0).normal(size=(5, 64)).astype(np.float32)
    q, scales = quantize_rows(w, 32)
    assert q.shape == (5, 2, 32) and q.dtype == np.uint8 and scales.shape == (5, 2)
    back = (q.astype(np.float32) - 128) * scales[..., None]
    assert np.abs(back.reshape(5, 64) - w).max() <= scales.max() / 2 + 1e-6
    assert block_size(64) == 64 and block_size(96) == 32 and block_size(300) is None


def test_every_multiply_runs_in_int8_and_the_table_is_stored_once(tmp_path, bundle):
    import onnx
    from onnx import numpy_helper

    src = bundle / "model.onnx"
    meta = json.loads((bundle / "metadata.json").read_text())
    left = nbits_onnx(src, tmp_path / "q.onnx", onnx_units(src))
    assert set(left.values()) == {"a lookup table no multiply shares: int8 rows cost more per call than float ones"}
    model = onnx.load(str(tmp_path / "q.onnx"))
    ops = [n.op_type for n in model.graph.node]
    names = {i.name for i in model.graph.initializer}
    weight_matmuls = [n for n in model.graph.node if n.op_type == "MatMul" and set(n.input) & names]
    assert "Gemm" not in ops and weight_matmuls == [] and ops.count("MatMulNBits") >= 4
    nbits = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    assert all({a.name: a.i for a in n.attribute}["accuracy_level"] == 4 for n in nbits)
    tables = [numpy_helper.to_array(i) for i in model.graph.initializer]
    float_2d = [t for t in tables if t.dtype == np.float32 and t.ndim == 2 and t.shape[1] > 2]
    assert len(float_2d) == 1 and float_2d[0].shape[0] == meta["max_len"]  # all but the position table
    b_inputs = {n.input[1] for n in model.graph.node if n.op_type == "MatMulNBits"}
    gathered = {n.input[0] for n in model.graph.node if n.op_type == "GatherBlockQuantized"}
    assert len(b_inputs & gathered) == 1  # the item table: one uint8 copy for the lookup and the head
    assert (tmp_path / "q.onnx").stat().st_size < 0.45 * src.stat().st_size
    ids = encode([[1, 2, 3], [4, 5, 6, 7, 8], [9]], meta["max_len"], "int64")
    fp32, int8 = _run(src, ids), _run(tmp_path / "q.onnx", ids)
    assert np.abs(fp32 - int8).max() < 0.05 * np.abs(fp32).max()
    assert (np.argsort(-fp32, axis=1)[:, :3] == np.argsort(-int8, axis=1)[:, :3]).mean() >= 0.6


def test_a_unit_left_out_keeps_its_shared_table_float(tmp_path, bundle):
    src = bundle / "model.onnx"
    units = onnx_units(src)
    lookups = [u for u in units if "Gather" in u]
    nbits_onnx(src, tmp_path / "q.onnx", [u for u in units if u not in lookups])
    import onnx

    ops = [n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node]
    assert "Gather" in ops and ("Gemm" in ops or "MatMul" in ops)  # the tied head stays float with it
