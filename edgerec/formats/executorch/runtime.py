"""ExecuTorch's runtime on this host (the `executorch` wheel's pybindings: the same C++ runtime
and XNNPACK delegate an app links), one batch-1 call per user."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgerec.core.console import third_party
from edgerec.core.errors import EdgerecError
from edgerec.devices.runtimes import Scorer


def load_method(path: Path, threads: int = 1):
    """The program's `forward` as `call(ids) -> [outputs]`."""
    import torch
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime

    path = Path(path)
    if not path.is_file():
        raise EdgerecError(f"{path}: not found (a .pte model)")
    try:
        with third_party("ExecuTorch"):
            portable_lib._unsafe_reset_threadpool(threads)  # XNNPACK's threads, as the app sets them
            method = Runtime.get().load_program(path).load_method("forward")
    except Exception as exc:
        raise EdgerecError(f"{path}: ExecuTorch cannot load it ({str(exc).splitlines()[0][:200]})") from None
    return lambda ids: [o.numpy() for o in method.execute([torch.from_numpy(np.ascontiguousarray(ids))])]


class ExecuTorchScorer(Scorer):
    """A .pte model; exported with a fixed batch of 1."""

    fixed_batch = 1

    def __init__(self, path: Path, max_len: int, num_items: int, threads: int = 1):
        self.call = load_method(path, threads)
        self.max_len, self.num_items, self.dtype = max_len, num_items, "int64"

    def run(self, input_ids):
        return self.call(input_ids)[0]
