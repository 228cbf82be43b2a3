"""ONNX Runtime on this host, opened as an app opens a bundle file (threads, the file's session entries)."""

from __future__ import annotations

from pathlib import Path

from edgerec.core.errors import EdgerecError
from edgerec.devices.runtimes import Scorer


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
