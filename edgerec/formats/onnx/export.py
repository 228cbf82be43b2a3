"""ONNX files from the student's graphs: torch.onnx.export (dynamo off: fixed, readable graphs), with
the names compacted and edgerec's metadata in the file's properties."""

from __future__ import annotations

import json
from pathlib import Path

from edgerec.core.console import quietly
from edgerec.core.errors import EdgerecError
from edgerec.core.graphs import StateLayout, step_inputs, step_output_names


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
