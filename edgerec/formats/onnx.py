"""ONNX: torch.onnx.export (`writers`), run by ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgerec.formats.base import ModelFormat
from edgerec.int8_forms import SESSION_CONFIG, onnx_forms
from edgerec.runtimes import OnnxScorer
from edgerec.writers import export_onnx, export_step_onnx


class OnnxFormat(ModelFormat):
    name = "onnx"

    def input_dtype(self, target) -> str:
        return target.onnx.input_dtype  # int64 by default; int32 where a runtime wants it

    def write_full(self, graph, path: Path, target, max_len: int, top_k: int | None, metadata: dict) -> None:
        export_onnx(graph, path, max_len, target.onnx.opset, target.onnx.input_dtype, top_k, metadata)

    def write_step(self, graph, path: Path, spec, target, top_k: int | None, metadata: dict) -> None:
        export_step_onnx(graph, path, spec, target.onnx.opset, target.onnx.input_dtype, top_k, metadata)

    def int8_forms(self, settings) -> list[str]:
        return onnx_forms(settings)

    def session_config(self, form: str) -> dict:
        return dict(SESSION_CONFIG.get(form, {}))

    def top_k_items(self, path: Path, input_ids) -> np.ndarray:
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(["items"], {"input_ids": input_ids})[0]

    def open_bundle_file(self, path: Path, meta: dict, threads: int):
        dtype = meta["inputs"]["input_ids"]["dtype"]["onnx"]
        return OnnxScorer(
            path,
            meta["max_len"],
            meta["num_items"],
            dtype,
            threads,
            session_config=meta.get("onnx_session_config", {}).get(Path(path).name),
        )


ONNX = OnnxFormat()
