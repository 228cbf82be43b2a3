"""TFLite: litert-torch's converter (`writers`), run by LiteRT or tflite-runtime 2.14."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgerec.formats.base import ModelFormat
from edgerec.int8_forms import tflite_forms
from edgerec.runtimes import LiteRTScorer
from edgerec.writers import export_step_tflite, export_tflite


class TfliteFormat(ModelFormat):
    name = "tflite"
    # fixed batch of 1 (dynamic dims are fragile in litert-torch): each user is one call
    parity_users = 128
    step_parity_users = 16

    def input_dtype(self, target) -> str:
        return "int32"  # TFLite's GATHER takes int32 indices natively

    def write_full(self, graph, path: Path, target, max_len: int, top_k: int | None, metadata: dict) -> None:
        export_tflite(graph, path, max_len)  # the bundle's metadata.json is the app's source

    def write_step(self, graph, path: Path, spec, target, top_k: int | None, metadata: dict) -> None:
        export_step_tflite(graph, path, spec, top_k)

    def int8_forms(self, settings) -> list[str]:
        return tflite_forms(settings)

    def top_k_items(self, path: Path, input_ids) -> np.ndarray:
        from ai_edge_litert.interpreter import Interpreter

        runner = Interpreter(model_path=str(path)).get_signature_runner()  # batch 1: one call per row
        return np.concatenate([runner(input_ids=row[None].astype(np.int32))["output_0"] for row in input_ids])

    def open_bundle_file(self, path: Path, meta: dict, threads: int):
        return LiteRTScorer(path, meta["max_len"], meta["num_items"], threads)


TFLITE = TfliteFormat()
