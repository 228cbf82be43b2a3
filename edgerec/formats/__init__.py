"""Model file formats behind one protocol (`ModelFormat`): what is specific to ONNX or TFLite
lives in its module here, and stages ask the protocol instead of branching on a format's name.

A format knows how to write the full and the step graph for a target profile, which input dtype
its files take, how many users its parity checks replay, which int8 forms it offers, the session
entries a form needs, and how an app-like host opens one of its bundle files. Adding a format is
one module here, a runtime in `edgerec.runtimes.RUNTIMES` and its name in the profiles.
"""

from __future__ import annotations

from edgerec.errors import EdgerecError
from edgerec.formats.base import ModelFormat
from edgerec.formats.onnx import ONNX
from edgerec.formats.tflite import TFLITE

# In the order a bundle's files are preferred when one is enough (recommend, explanations).
FORMATS: dict[str, ModelFormat] = {fmt.name: fmt for fmt in (ONNX, TFLITE)}


def get(name: str) -> ModelFormat:
    if name not in FORMATS:
        raise EdgerecError(f"unknown model format {name!r} (known: {', '.join(FORMATS)})")
    return FORMATS[name]


__all__ = ["FORMATS", "ModelFormat", "get"]
