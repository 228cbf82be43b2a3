"""TFLite files from the student's graphs: litert-torch's converter, with LayerNorm decomposed into
the ops LiteRT's XNNPACK delegate runs."""

from __future__ import annotations

import contextlib
import types
from pathlib import Path

from edgerec.core.console import quietly
from edgerec.core.errors import EdgerecError
from edgerec.core.graphs import StateLayout, portable_top_k, step_inputs


def export_tflite(graph, path: Path, max_len: int) -> None:
    import torch

    # int32 ids: TFLite's GATHER takes int32 indices natively (the converter narrows int64 anyway).
    write_tflite(graph, {"input_ids": torch.ones((1, max_len), dtype=torch.int32)}, path)


@quietly("the litert-torch converter")
def write_tflite(graph, inputs: dict, path: Path, what: str = "TFLite conversion") -> None:
    import litert_torch

    try:
        with decomposed_layer_norms(graph), portable_top_k():
            edge = litert_torch.convert(graph, sample_kwargs=inputs)
    except Exception as exc:  # the converter raises many types; one line for the user
        raise EdgerecError(f"{what} failed: {str(exc).splitlines()[0][:300]}") from None
    edge.export(str(path))


@contextlib.contextmanager
def decomposed_layer_norms(module):
    """Every LayerNorm in `module` written as mean / subtract / mean of squares / rsqrt while the
    TFLite converter traces it. TFLite has no LayerNorm builtin and litert-torch's lowering of
    torch's op adds four RESHAPEs and a SQUARED_DIFFERENCE per norm (14 ops; this is 9): the
    default one-layer student's full graph goes from 96 to 76 ops and its step graph from 92 to
    66 (same results to 1e-6). LiteRT p50 0.94-0.97x for the full graph (benchmarks/export.py),
    within noise for step updates (benchmarks/incremental.py). ONNX keeps its single
    LayerNormalization node. Hand-written because neither converter has such an option."""
    import torch

    def forward(self, x):
        centred = x - x.mean(-1, keepdim=True)
        y = centred * torch.rsqrt((centred * centred).mean(-1, keepdim=True) + self.eps)
        return y * self.weight + self.bias if self.weight is not None else y

    norms = [
        m
        for m in module.modules()
        if isinstance(m, torch.nn.LayerNorm) and len(m.normalized_shape) == 1 and (m.weight is None) == (m.bias is None)
    ]
    for norm in norms:
        norm.forward = types.MethodType(forward, norm)
    try:
        yield
    finally:
        for norm in norms:
            del norm.forward


def export_step_tflite(graph, path: Path, spec: StateLayout, top_k: int | None) -> None:
    # int32 ids, as the full TFLite model; fixed batch of 1
    write_tflite(graph, step_inputs(spec, "int32", top_k), path, "step model TFLite conversion")
