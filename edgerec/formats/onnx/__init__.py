"""ONNX: torch.onnx.export (`export`), int8 through ONNX Runtime's quantizers and a weight-only
form written here (`int8`), ORT Mobile's .ort files (`mobile`), the text teacher through optimum
(`text`), run by ONNX Runtime (`runtime`)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from edgerec.devices.incremental import calibration_feeds
from edgerec.formats.base import CHUNK, Int8Plan, ModelFormat
from edgerec.formats.onnx.export import export_onnx, export_step_onnx, write_onnx
from edgerec.formats.onnx.int8 import (
    RUNTIME_VERSION_NEEDED,
    SESSION_CONFIG,
    calibrate_onnx,
    form_settings,
    input_feeds,
    onnx_forms,
    onnx_units,
    quantize_onnx,
    structural_float,
)
from edgerec.formats.onnx.mobile import ort_files
from edgerec.formats.onnx.runtime import OnnxScorer
from edgerec.formats.onnx.text import TextOnnxScorer, export_text_onnx


def _open(path, meta, target, runtime):
    return OnnxScorer(
        path,
        meta["max_len"],
        meta["num_items"],
        target.onnx.input_dtype,
        target.threads,
        runtime.execution_provider,
        meta.get("onnx_session_config", {}).get(Path(path).name),
    )


class OnnxFormat(ModelFormat):
    name = "onnx"
    runtimes = {"onnxruntime": _open}
    exports_text = True
    app_file_keys = ("ort_format",)

    def input_dtype(self, target) -> str:
        return target.onnx.input_dtype  # int64 by default; int32 where a runtime wants it

    def write_full(self, graph, path: Path, target, max_len: int, top_k: int | None, metadata: dict) -> None:
        export_onnx(graph, path, max_len, target.onnx.opset, target.onnx.input_dtype, top_k, metadata)

    def write_step(self, graph, path: Path, spec, target, top_k: int | None, metadata: dict) -> None:
        export_step_onnx(graph, path, spec, target.onnx.opset, target.onnx.input_dtype, top_k, metadata)

    def write_entry(self, graph, path, target, inputs, outputs, metadata, what) -> None:
        inputs = inputs(2, self.input_dtype(target))  # batch-dynamic, as model.onnx
        write_onnx(graph, inputs, outputs, path, target.onnx.opset, metadata, f"{what} ONNX export")

    def int8_forms(self, settings) -> list[str]:
        return onnx_forms(settings)

    def session_config(self, form: str) -> dict:
        return dict(SESSION_CONFIG.get(form, {}))

    def runtime_version_needed(self, form: str) -> str | None:
        return RUNTIME_VERSION_NEEDED.get(form)

    def plan_int8(self, form, src, work, calibration, settings, sequences, meta, target, log, model=None) -> Int8Plan:
        form_set = form_settings(settings, form)
        structural = structural_float(src, form_set)
        ranges = calibration / "onnx.json"
        if form.startswith("static_") and not ranges.exists():
            log(f"calibrating {src.name} on {len(sequences)} sequences ({settings.calibration})")
            feeds = input_feeds(sequences, meta["max_len"], target.onnx.input_dtype)
            calibrate_onnx(src, feeds, settings.calibration, ranges)

        def make(chosen):
            path = work / f"onnx-{len(list(work.iterdir()))}.onnx"
            quantize_onnx(src, path, form_set, ranges, chosen)
            return path

        return Int8Plan(
            make,
            [u for u in onnx_units(src, settings.keep_float) if u not in structural],
            structural,
            # weight-only and MatMulNBits touch the weights only: everything else is float anyway
            tuple(settings.keep_float) if form not in ("weight_only", "matmul_nbits") else (),
        )

    def quantize_step(self, src, dst, calibration, settings, sequences, log, model=None):
        """The profile's scheme. Static: calibrated on the inputs the step model sees when the
        calibration histories are replayed through it (`incremental.calibration_feeds`), ranges
        in `calibration/step-onnx.json`; dynamic: `quantize_dynamic`."""
        kept = structural_float(src, settings)
        ranges = None
        if settings.scheme == "static":
            ranges = calibration / "step-onnx.json"
            log(f"calibrating {src.name}: replaying {min(len(sequences), CHUNK)} calibration histories")
            calibrate_onnx(src, calibration_feeds(src, sequences[:CHUNK]), settings.calibration, ranges)
        quantize_onnx(src, dst, settings, ranges, [u for u in onnx_units(src, settings.keep_float) if u not in kept])
        return settings.scheme, kept

    def app_files(self, folder, meta, step_entry, target, histories) -> dict:
        entry = ort_files(folder, meta, step_entry, target, histories)
        return {"ort_format": entry} if entry else {}

    def write_text_model(self, rec, model_dir: Path, out: Path):
        folder = out.parent / f".{out.stem}-optimum"
        os.replace(export_text_onnx(model_dir, folder), out)
        shutil.rmtree(folder)
        return TextOnnxScorer(rec, out)

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
