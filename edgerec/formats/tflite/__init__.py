"""TFLite: litert-torch's converter (`export`), int8 through ai-edge-quantizer (`int8`), run by
LiteRT on this host (`runtime`) or by tflite-runtime 2.14 in its own environment."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgerec.formats.base import Int8Plan, ModelFormat
from edgerec.formats.tflite.export import export_step_tflite, export_tflite, write_tflite
from edgerec.formats.tflite.int8 import TFLITE_UNITS, calibrate_tflite, quantize_tflite, tflite_forms
from edgerec.formats.tflite.runtime import LiteRTScorer


def _open(path, meta, target, runtime):
    return LiteRTScorer(path, meta["max_len"], meta["num_items"], target.threads)


class TfliteFormat(ModelFormat):
    name = "tflite"
    # tflite-runtime 2.14 needs NumPy 1.x: it runs in an environment of its own (devices.envs)
    runtimes = {"litert": _open, "tflite-runtime": None}
    # fixed batch of 1 (dynamic dims are fragile in litert-torch): each user is one call
    fixed_batch = 1
    parity_users = 128
    step_parity_users = 16

    def input_dtype(self, target) -> str:
        return "int32"  # TFLite's GATHER takes int32 indices natively

    def write_full(self, graph, path: Path, target, max_len: int, top_k: int | None, metadata: dict) -> None:
        export_tflite(graph, path, max_len)  # the bundle's metadata.json is the app's source

    def write_step(self, graph, path: Path, spec, target, top_k: int | None, metadata: dict) -> None:
        export_step_tflite(graph, path, spec, top_k)

    def write_entry(self, graph, path, target, inputs, outputs, metadata, what) -> None:
        write_tflite(graph, inputs(1, self.input_dtype(target)), path, f"{what} TFLite conversion")

    def int8_forms(self, settings) -> list[str]:
        return tflite_forms(settings)

    def plan_int8(self, form, src, work, calibration, settings, sequences, meta, target, log, model=None) -> Int8Plan:
        units, structural, ranges = list(TFLITE_UNITS), {}, None
        if form == "static":
            # ai-edge-quantizer 0.10's static recipe has no integer lookup, and adding a
            # weight-only lookup to it fails inside the quantizer (str + bytes in
            # dequant_insert): the tables stay float under this scheme.
            structural = {
                "EMBEDDING_LOOKUP": "no integer lookup in ai-edge-quantizer's static "
                "recipe; weight-only mixed in fails (AEQ 0.10)"
            }
            units.remove("EMBEDDING_LOOKUP")
            log(f"calibrating {src.name} on {len(sequences)} sequences (min/max)")
            ranges = calibrate_tflite(src, sequences, meta["max_len"], calibration / "tflite.json")

        def make(chosen):
            path = work / f"tflite-{len(list(work.iterdir()))}.tflite"
            quantize_tflite(src, path, form, settings.per_channel, ranges, chosen)
            return path

        return Int8Plan(make, units, structural)

    def quantize_step(self, src, dst, calibration, settings, sequences, log, model=None):
        """Always the `dynamic` recipe: a full-integer step model has the full one's LayerNorm
        problem (see the arm64 profile's tflite_scheme)."""
        quantize_tflite(src, dst, "dynamic", settings.per_channel, None, list(TFLITE_UNITS))
        return "dynamic", {}

    def top_k_items(self, path: Path, input_ids) -> np.ndarray:
        from ai_edge_litert.interpreter import Interpreter

        runner = Interpreter(model_path=str(path)).get_signature_runner()  # batch 1: one call per row
        return np.concatenate([runner(input_ids=row[None].astype(np.int32))["output_0"] for row in input_ids])

    def open_bundle_file(self, path: Path, meta: dict, threads: int):
        return LiteRTScorer(path, meta["max_len"], meta["num_items"], threads)


TFLITE = TfliteFormat()
