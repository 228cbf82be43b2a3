"""One small protocol for every runtime a bundle runs on, so parity, accuracy and latency code is
written once: `scores(histories) -> [B, num_items + 1]` (column 0 = padding, -inf), exactly like
the PyTorch `RecModel`.

The exported graph takes `input_ids` [batch, max_len] (left-padded, the most recent items, 0 =
padding) and returns `scores` [batch, num_items], column j for the item with index j + 1.
"""

from __future__ import annotations

import abc
from pathlib import Path

import numpy as np

from edgerec.envs import run_isolated
from edgerec.errors import EdgerecError
from edgerec.files import litert_interpreter
from edgerec.models import left_pad


def encode(histories, max_len: int, dtype: str) -> np.ndarray:
    return left_pad(histories, max_len).astype(np.dtype(dtype))


class Scorer(abc.ABC):
    max_len: int
    dtype: str
    num_items: int
    fixed_batch: int | None = None

    @abc.abstractmethod
    def run(self, input_ids: np.ndarray) -> np.ndarray:
        """Raw scores [B, num_items] for a batch of encoded inputs."""

    def scores(self, histories, batch_size: int = 256) -> np.ndarray:
        out = []
        step = self.fixed_batch or batch_size
        for start in range(0, len(histories), step):
            ids = encode(histories[start : start + step], self.max_len, self.dtype)
            if self.fixed_batch:
                rows = [self.run(ids[i : i + 1]) for i in range(len(ids))]
                raw = np.concatenate(rows)
            else:
                raw = self.run(ids)
            full = np.full((len(ids), self.num_items + 1), -np.inf, np.float32)
            full[:, 1:] = raw
            out.append(full)
        return np.concatenate(out) if out else np.zeros((0, self.num_items + 1), np.float32)


class OnnxScorer(Scorer):
    def __init__(
        self,
        path: Path,
        max_len: int,
        num_items: int,
        dtype: str = "int64",
        threads: int = 1,
        provider: str = "CPUExecutionProvider",
        session_config: dict | None = None,
    ):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        for key, value in (session_config or {}).items():  # this file's entry in onnx_session_config
            options.add_session_config_entry(key, value)
        try:
            self.session = ort.InferenceSession(str(path), options, providers=[provider])
        except Exception as exc:  # ORT raises its own Fail / InvalidGraph types
            raise EdgerecError(f"{path}: onnxruntime cannot load it ({str(exc).splitlines()[0]})") from None
        self.max_len, self.num_items, self.dtype = max_len, num_items, dtype

    def run(self, input_ids):
        return self.session.run(["scores"], {"input_ids": input_ids})[0]


class LiteRTScorer(Scorer):
    """ai-edge-litert's interpreter; the TFLite graph has a fixed batch of 1."""

    fixed_batch = 1

    def __init__(self, path: Path, max_len: int, num_items: int, threads: int = 1):
        self.interpreter = litert_interpreter(path, threads)
        signatures = self.interpreter.get_signature_list()
        name = next(iter(signatures))
        self.runner = self.interpreter.get_signature_runner(name)
        self.output = next(iter(signatures[name]["outputs"]))
        details = self.runner.get_input_details()["input_ids"]
        self.max_len, self.num_items, self.dtype = max_len, num_items, np.dtype(details["dtype"]).name

    def run(self, input_ids):
        return self.runner(input_ids=input_ids)[self.output]


class IsolatedScorer(Scorer):
    """A runtime in its own environment (e.g. tflite-runtime 2.14 with NumPy 1.x), driven through
    the standalone device runner."""

    def __init__(self, runtime: str, path: Path, max_len: int, num_items: int, dtype: str, threads: int = 1):
        self.runtime, self.path, self.threads = runtime, Path(path), threads
        self.max_len, self.num_items, self.dtype = max_len, num_items, dtype

    def run(self, input_ids):
        scores, _ = run_isolated(self.runtime, self.path, input_ids, self.threads)
        return scores

    def scores(self, histories, batch_size: int = 100_000) -> np.ndarray:
        return super().scores(histories, batch_size)  # one subprocess for the whole set


# runtime name -> (format it runs, how to open a file of that format for a target profile)
RUNTIMES = {
    "onnxruntime": (
        "onnx",
        lambda path, meta, target, runtime: OnnxScorer(
            path,
            meta["max_len"],
            meta["num_items"],
            target.onnx.input_dtype,
            target.threads,
            runtime.execution_provider,
            meta.get("onnx_session_config", {}).get(Path(path).name),
        ),
    ),
    "litert": (
        "tflite",
        lambda path, meta, target, runtime: LiteRTScorer(path, meta["max_len"], meta["num_items"], target.threads),
    ),
    "tflite-runtime": (
        "tflite",
        lambda path, meta, target, runtime: IsolatedScorer(
            runtime.name, path, meta["max_len"], meta["num_items"], "int32", target.threads
        ),
    ),
}


def open_model(runtime, path: Path, meta: dict, target):
    """A scorer for `path` on the given runtime of a target profile."""
    if runtime.environment == "isolated" and runtime.name != "tflite-runtime":
        raise EdgerecError(f"runtime '{runtime.name}' has no isolated environment")
    return RUNTIMES[runtime.name][1](path, meta, target, runtime)
