"""LiteRT (ai-edge-litert) on this host; tflite-runtime 2.14 runs in its own environment (IsolatedScorer)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgerec.core.files import litert_interpreter
from edgerec.devices.runtimes import Scorer


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
