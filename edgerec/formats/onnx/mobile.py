"""ORT Mobile's files for a profile that ships ONNX to it (`[onnx] ort_format`): model.ort (+ step.ort),
converted by ONNX Runtime's own tool, and required_operators.config for a reduced runtime build;
each .ort checked against its .onnx."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from edgerec.core import metrics
from edgerec.core.console import third_party
from edgerec.core.errors import EdgerecError
from edgerec.devices.envs import oldest_python, runner_failure
from edgerec.devices.runtimes import encode, padded_scores

_FOLD = """
import json, sys
import onnxruntime as ort
path, entries = sys.argv[1], json.loads(sys.argv[2])
options = ort.SessionOptions()
options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
options.optimized_model_filepath = path + ".folded"
for key, value in entries.items():
    options.add_session_config_entry(key, value)
ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
"""


def _fold_with(path: Path, session_config: dict, converter: Path | None) -> None:
    """Rewrite `path` as ONNX Runtime's basic-optimized graph under `session_config`, by the
    runtime that converts it (`_convert`: a graph saved by ORT 1.32 names opset versions that
    ORT 1.17 refuses to load)."""
    import json
    import subprocess

    run = [str(converter or sys.executable), "-c", _FOLD, str(path), json.dumps(session_config)]
    result = subprocess.run(run, capture_output=True, text=True)
    if result.returncode != 0:
        raise EdgerecError(f"folding {path.name}'s int8 weights {runner_failure(result.returncode, result.stderr)}")
    Path(f"{path}.folded").replace(path)


def _convert(folder: Path, platform: str, converter: Path | None) -> None:
    """ORT's own converter on every .onnx in `folder`: in the environment of the oldest ONNX
    Runtime the profile names when `converter` (its Python) is given, else in this process.

    An .ort loads in the runtime that wrote it and in newer ones, not always in older ones: ORT
    1.32 writes `weight_prepacked` on every MatMulNBits node, an attribute ORT 1.23 refuses
    ("Unrecognized attribute"); the file 1.23's converter writes loads in both (measured)."""
    import subprocess

    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    if converter is None:
        try:
            with third_party("ONNX Runtime's ORT-format converter"):
                styles = [OptimizationStyle.Fixed]
                convert_onnx_models_to_ort(folder, optimization_styles=styles, target_platform=platform)
        except Exception as exc:  # the converter raises what ORT raises
            raise EdgerecError(f"ORT format conversion failed: {str(exc).splitlines()[0][:300]}") from None
        return
    tool = "onnxruntime.tools.convert_onnx_models_to_ort"
    args = [str(folder), "--optimization_style", "Fixed", "--target_platform", platform]
    result = subprocess.run([str(converter), "-m", tool, *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise EdgerecError(f"ORT format conversion {runner_failure(result.returncode, result.stderr)}")


def write_ort(
    folder: Path, names: list[str], platform: str, session_config: dict | None = None, converter: Path | None = None
) -> dict:
    """ORT Mobile's files beside the ONNX ones in a bundle being written: `<name>.ort` for each
    ONNX file and one `required_operators.config` (the operators a reduced ORT build must keep),
    made by ONNX Runtime's own converter with the profile's platform optimizations baked in
    ("Fixed" style), and ORT's mobile usability verdict for the first model. Returns the
    metadata entry.

    `session_config` (the full model's entry in onnx_session_config) is applied before conversion: an ORT-format
    session cannot constant-fold at load, so a weight-only int8 file's DequantizeLinear nodes are
    folded here, by ONNX Runtime itself (basic optimizations, saved), or the .ort would dequantize
    every weight on every call (2x the time per call, measured). Its .ort then holds float weights.
    `converter`: the Python of the oldest ONNX Runtime the profile names (`_convert`)."""
    import logging
    import tempfile

    from onnxruntime.tools.mobile_helpers import usability_checker

    folder = Path(folder)
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            Path(tmp, name).write_bytes((folder / name).read_bytes())
            if session_config and name == names[0]:  # the full model's form; the step file has its own
                _fold_with(Path(tmp, name), session_config, converter)
        _convert(Path(tmp), platform, converter)
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


def ort_files(folder: Path, meta: dict, step_entry: dict | None, target, histories) -> dict | None:
    """model.ort (+ step.ort) and required_operators.config for a profile that ships ONNX to ORT
    Mobile (`[onnx] ort_format`), each .ort checked against its .onnx; None for other profiles."""
    if not target.onnx.ort_format or "onnx" not in meta["files"]:
        return None
    names = [meta["files"]["onnx"]] + (
        [step_entry["files"]["onnx"]] if step_entry and "onnx" in step_entry["files"] else []
    )
    folded = (meta.get("onnx_session_config") or {}).get(names[0])
    oldest = next((r.min_version for r in target.runtimes if r.name == "onnxruntime"), None)
    converter, written_by = None, f"onnxruntime {_host_version()} (this machine's)"
    if oldest:
        try:
            converter, written_by = oldest_python("onnxruntime", oldest), f"onnxruntime {oldest} (the profile's oldest)"
        except EdgerecError as exc:  # no package index: the .ort may not load in runtimes older than this one
            written_by += f"; the profile's oldest, {oldest}, could not be set up: {exc}"
    entry = write_ort(folder, names, target.onnx.ort_format, folded, converter)
    entry["converted_by"] = written_by
    if folded:
        entry["weights"] = (
            "float: folded from the int8 ONNX file's DequantizeLinear nodes before conversion "
            "(ORT-format sessions cannot fold at load)"
        )
    entry["check"] = ort_format_check(folder, entry["files"], meta, target, histories)
    return entry


def _host_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def ort_format_check(folder: Path, pairs: dict, meta: dict, target, histories) -> dict:
    """Each `.ort` file against the `.onnx` it was converted from, on ONNX Runtime, on real test
    histories: identical outputs expected (same graph, same kernels); raises on any top-10
    difference. Step files are converted alike but not replayed here."""
    import onnxruntime as ort

    full = {src: dst for src, dst in pairs.items() if src == meta.get("files", {}).get("onnx", "model.onnx")}
    ids = encode(histories, meta["max_len"], target.onnx.input_dtype)
    result = {}
    for src, dst in full.items():
        outs = [
            ort.InferenceSession(str(Path(folder) / name), providers=["CPUExecutionProvider"]).run(
                None, {"input_ids": ids}
            )[0]
            for name in (src, dst)
        ]
        if meta.get("top_k"):
            same = float((outs[0] == outs[1]).all(axis=1).mean())
        else:
            same = float(
                (
                    metrics.top_k(padded_scores(outs[0]), 10, outs[0].shape[1], mask_history=False)
                    == metrics.top_k(padded_scores(outs[1]), 10, outs[1].shape[1], mask_history=False)
                )
                .all(axis=1)
                .mean()
            )
        if same < 1.0:
            raise EdgerecError(f"{dst} differs from {src} in the top-10 for {1 - same:.1%} of users")
        result[dst] = {
            "users": len(histories),
            "identical_top10": same,
            "max_abs_diff": float(np.abs(outs[0].astype(np.float64) - outs[1]).max()),
        }
    return result
