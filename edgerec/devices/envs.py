"""Isolated Python environments for runtimes that cannot share edgerec's.

tflite-runtime 2.14 was built against NumPy 1.x and cannot create an interpreter under NumPy 2
(design.md), exactly like the Python on many devices. Such a runtime gets its own venv in the
cache, created on first use from the package index, and models run there through the standalone
`device_runner.py` — the same mechanism a remote device uses.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

from edgerec.core.datasets import cache_dir
from edgerec.core.errors import EdgerecError
from edgerec.core.files import load_npz

ENVIRONMENTS = {
    "tflite-runtime": ["tflite-runtime==2.14.0", "numpy<2"],
}


# The oldest release of a runtime a profile names (`min_version`), for checking that what a
# bundle ships loads there: the newest patch of that minor release.
# (onnx: what ORT's ORT-format converter imports, edgerec/formats/onnx/mobile.py; 1.17 with NumPy
# 1.x, because ORT releases before 1.19 fail to import under NumPy 2, and newer ones run with 1.x)
OLDEST = {
    "onnxruntime": ["onnxruntime=={}.*", "onnx==1.17.0", "numpy<2"],
    "litert": ["ai-edge-litert=={}.*"],
}


def oldest_python(runtime: str, version: str) -> Path:
    """The interpreter of an environment holding release `version` of `runtime` (e.g. the
    profile's `min_version` of onnxruntime), created (once) if needed."""
    if runtime not in OLDEST:
        raise EdgerecError(f"no environment with an older release is defined for runtime '{runtime}'")
    return python_for(f"{runtime}-{version}", [spec.format(version) for spec in OLDEST[runtime]])


def python_for(runtime: str, packages: list[str] | None = None) -> Path:
    """The interpreter of the runtime's environment (`ENVIRONMENTS`, or `packages` under that
    name), created (once) if needed."""
    if packages is None and runtime not in ENVIRONMENTS:
        raise EdgerecError(f"no isolated environment is defined for runtime '{runtime}'")
    packages = packages or ENVIRONMENTS[runtime]
    folder = cache_dir() / "envs" / runtime
    python = folder / "bin" / "python"
    ready = folder / ".ready"
    if ready.is_file() and python.is_file():
        return python
    # Built in place (a venv hard-codes its own path); `.ready` is written last, so a crash
    # halfway leaves a folder that the next call removes and builds again.
    shutil.rmtree(folder, ignore_errors=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, capture_output=True)
        result = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *packages],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise EdgerecError(f"cannot set up the {runtime} environment: {last}")
        ready.write_text("ok\n")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return python


def run_isolated(runtime: str, model: Path, input_ids, threads: int = 1):
    """Run the standalone runner in the runtime's environment; returns (scores, seconds)."""
    out = run_runner(python_for(runtime), runtime, model, input_ids, threads)
    return out["scores"], out["seconds"]


def run_runner(
    python: Path | str, runtime: str, model: Path, input_ids, threads: int = 1, warmup: int = 0, step: bool = False
) -> dict:
    """`device_runner.py` under the given interpreter, in its own process: scores, per-call
    seconds, load seconds and peak RSS of a process that only loads and runs the model.
    `step`: the model is a step model, each row is replayed item by item."""
    import tempfile

    runner = Path(__file__).with_name("device_runner.py")
    with tempfile.TemporaryDirectory() as tmp:
        inputs = save_inputs(Path(tmp), input_ids)
        result = subprocess.run(
            [
                str(python),
                str(runner),
                str(model),
                str(inputs),
                str(Path(tmp) / "out.npz"),
                "--threads",
                str(threads),
                "--warmup",
                str(warmup),
                *(["--step"] if step else []),
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise EdgerecError(f"{model}: {runtime} {runner_failure(result.returncode, result.stderr)}")
        return load_npz(Path(tmp) / "out.npz", f"the {runtime} runner's output")


def save_inputs(folder: Path, inputs) -> Path:
    """The runner's inputs file in `folder`: encoded `input_ids` as inputs.npy, or named arrays
    (an entry point with several inputs, `{name: [N, ...]}`) as inputs.npz."""
    import numpy as np

    if isinstance(inputs, dict):
        np.savez(folder / "inputs.npz", **{k: np.asarray(v) for k, v in inputs.items()})
        return folder / "inputs.npz"
    np.save(folder / "inputs.npy", inputs)
    return folder / "inputs.npy"


def take_rows(inputs, rows):
    """Rows `rows` of the runner's inputs (an array, or every array of a dict)."""
    import numpy as np

    if isinstance(inputs, dict):
        return {k: np.asarray(v)[rows] for k, v in inputs.items()}
    return np.asarray(inputs)[rows]


def runner_failure(returncode: int, stderr: str) -> str:
    """How a runner process ended, in a few words: the signal that killed it (a segfault in the
    runtime, the OOM killer) or its exit code and last line of error output."""
    lines = [line for line in (stderr or "").strip().splitlines() if line.strip()]
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"crashed ({name}){': ' + lines[-1] if lines else ''}"
    return f"failed (exit {returncode}): {lines[-1] if lines else 'no output'}"
