"""ONNX and TFLite files from the torch graphs in `graphs`: one writer per format for the full
and the step model, the bundle's facts in the ONNX file's `metadata_props`, short tensor names,
and the TFLite LayerNorm lowering.

Converter errors of every kind become one `EdgerecError` line that names the step and, for ONNX,
the profile's opset.
"""

from __future__ import annotations

import contextlib
import json
import types
from pathlib import Path

from edgerec.console import quietly, third_party
from edgerec.errors import EdgerecError
from edgerec.graphs import StateLayout, portable_top_k, step_inputs, step_output_names


def export_onnx(graph, path: Path, max_len: int, opset: int, dtype: str, top_k: int | None, metadata: dict) -> None:
    import torch

    example = torch.ones((2, max_len), dtype=getattr(torch, dtype))
    write_onnx(graph, {"input_ids": example}, ["items", "scores"] if top_k else ["scores"], path, opset, metadata)


@quietly("the ONNX exporter")
def write_onnx(
    graph, inputs: dict, outputs: list[str], path: Path, opset: int, metadata: dict, what: str = "ONNX export"
) -> None:
    """torch.onnx.export with every input and output batch-dynamic, then the bundle's facts in
    `metadata_props`, compact names and the checker."""
    import onnx
    import torch

    try:
        torch.onnx.export(
            graph,
            tuple(inputs.values()),
            str(path),
            input_names=list(inputs),
            output_names=outputs,
            opset_version=opset,
            dynamo=False,
            dynamic_axes={name: {0: "batch"} for name in [*inputs, *outputs]},
            do_constant_folding=True,
        )
    except Exception as exc:  # unsupported opset or operator: one line naming the profile's choice
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise EdgerecError(f"{what} at opset {opset} failed: {first}") from None
    model = onnx.load(str(path))
    # Apps read these with OnnxModelMetadata.getCustomMetadata() (Android) / ORT's modelmeta.
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = f"edgerec.{key}", json.dumps(value) if not isinstance(value, str) else value
    compact_names(model)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def compact_names(model) -> None:
    """Short names for internal tensors ("t12") and nodes ("MatMul_3"), in place.

    The exporter's names spell out module paths ("/model/bert/encoder/layer.0/...") and ORT's
    quantizer appends suffixes to them: 19 KB of a 0.2 MB int8 file here, shipped in every app.
    The graph inputs and outputs (the app's interface) keep their names. Hand-written because
    neither onnx nor onnxruntime ships a renaming pass. Graphs with subgraphs are left as they are.
    """
    graph = model.graph
    if any(a.g.node or a.graphs for n in graph.node for a in n.attribute):
        return
    keep = {v.name for v in graph.input} | {v.name for v in graph.output} | {""}
    names: dict[str, str] = {}

    counter = iter(range(10**9))

    def short(name: str) -> str:
        if name in keep:
            return name
        if name not in names:  # never a name the interface already uses
            names[name] = next(n for n in (f"t{i}" for i in counter) if n not in keep)
        return names[name]

    for tensor in graph.initializer:
        tensor.name = short(tensor.name)
    for index, node in enumerate(graph.node):
        node.name = f"{node.op_type}_{index}"
        node.input[:] = [short(x) for x in node.input]
        node.output[:] = [short(x) for x in node.output]
    for info in graph.value_info:
        info.name = short(info.name)


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


def export_step_onnx(
    graph, path: Path, spec: StateLayout, opset: int, dtype: str, top_k: int | None, metadata: dict
) -> None:
    write_onnx(
        graph,
        step_inputs(spec, dtype, top_k, batch=2),
        step_output_names(top_k),
        path,
        opset,
        metadata,
        "step model ONNX export",
    )


def export_step_tflite(graph, path: Path, spec: StateLayout, top_k: int | None) -> None:
    # int32 ids, as the full TFLite model; fixed batch of 1
    write_tflite(graph, step_inputs(spec, "int32", top_k), path, "step model TFLite conversion")


@quietly("ONNX Runtime's ORT-format converter")
def _fold_with(path: Path, session_config: dict) -> None:
    """Rewrite `path` as ONNX Runtime's basic-optimized graph under `session_config`."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(path.with_suffix(".folded"))
    for key, value in session_config.items():
        options.add_session_config_entry(key, value)
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    path.with_suffix(".folded").replace(path)


def write_ort(folder: Path, names: list[str], platform: str, session_config: dict | None = None) -> dict:
    """ORT Mobile's files beside the ONNX ones in a bundle being written: `<name>.ort` for each
    ONNX file and one `required_operators.config` (the operators a reduced ORT build must keep),
    made by ONNX Runtime's own converter with the profile's platform optimizations baked in
    ("Fixed" style), and ORT's mobile usability verdict for the first model. Returns the
    metadata entry.

    `session_config` (the full model's entry in onnx_session_config) is applied before conversion: an ORT-format
    session cannot constant-fold at load, so a weight-only int8 file's DequantizeLinear nodes are
    folded here, by ONNX Runtime itself (basic optimizations, saved), or the .ort would dequantize
    every weight on every call (2x the time per call, measured). Its .ort then holds float weights."""
    import logging
    import tempfile

    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort
    from onnxruntime.tools.mobile_helpers import usability_checker

    folder = Path(folder)
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            Path(tmp, name).write_bytes((folder / name).read_bytes())
            if session_config and name == names[0]:  # the full model's form; the step file has its own
                _fold_with(Path(tmp, name), session_config)
        try:
            with third_party("ONNX Runtime's ORT-format converter"):
                convert_onnx_models_to_ort(
                    Path(tmp), optimization_styles=[OptimizationStyle.Fixed], target_platform=platform
                )
        except Exception as exc:  # the converter raises what ORT raises
            raise EdgerecError(f"ORT format conversion failed: {str(exc).splitlines()[0][:300]}") from None
        files = {}
        for name in names:
            ort_name = Path(name).with_suffix(".ort").name
            (folder / ort_name).write_bytes(Path(tmp, ort_name).read_bytes())
            files[name] = ort_name
        config = next(Path(tmp).glob("*required_operators*.config"))
        lines = [line for line in config.read_text().splitlines() if not line.startswith("# -")]
        lines[1:1] = [f"# - {ort}" for ort in files.values()]  # relative names, not the temp folder
        (folder / "required_operators.config").write_text("\n".join(lines) + "\n")
    logger = logging.getLogger("edgerec.ort_usability")
    logger.propagate = False
    report = []
    handler = logging.Handler()
    handler.emit = lambda record: report.append(record.getMessage())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        try_eps = bool(usability_checker.analyze_model(folder / names[0], skip_optimize=False, logger=logger))
    finally:
        logger.removeHandler(handler)
    verdicts = [
        line.strip()
        for text in report
        for line in text.splitlines()
        if "should perform well" in line or "not recommended" in line
    ]
    return {
        "files": files,
        "required_operators": "required_operators.config",
        "platform": platform,
        "optimization": "Fixed",
        "mobile_usability": {
            "recommended_execution_provider": "compare NNAPI / CoreML with the CPU EP" if try_eps else "CPU",
            "verdicts": verdicts,
        },
    }
