"""Model file formats behind one protocol (`ModelFormat`): what is specific to ONNX, TFLite or
ExecuTorch lives in its package here, and stages ask the protocol instead of branching on a
format's name.

A format knows how to write the full and the step graph for a target profile, which input dtype
its files take, how many users its parity checks replay, which int8 forms it offers and how to
make each, the files an app of that format needs besides the model, and which runtimes open its
files on this host (`runtimes`). Adding a format is one package here, its key in `FORMATS`, and
its name in the profiles.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path

from edgerec.core.errors import EdgerecError
from edgerec.core.targets import Target, load_target
from edgerec.devices.envs import ENVIRONMENTS
from edgerec.devices.runtimes import IsolatedScorer
from edgerec.formats.base import ModelFormat
from edgerec.formats.executorch import EXECUTORCH
from edgerec.formats.onnx import ONNX
from edgerec.formats.tflite import TFLITE

# In the order a bundle's files are preferred when one is enough (recommend, explanations).
FORMATS: dict[str, ModelFormat] = {fmt.name: fmt for fmt in (ONNX, TFLITE, EXECUTORCH)}

# runtime name -> (the format it runs, how to open a file of it for a target profile)
RUNTIMES = {name: (fmt.name, opener) for fmt in FORMATS.values() for name, opener in fmt.runtimes.items()}


def get(name: str) -> ModelFormat:
    if name not in FORMATS:
        raise EdgerecError(f"unknown model format {name!r} (known: {', '.join(FORMATS)})")
    return FORMATS[name]


def target_profile(
    target: str | Target, targets_dir: Path | None = None, formats: Iterable[str] | None = None
) -> Target:
    """A target profile (by name, or one already loaded) narrowed to the formats a stage writes
    or reads: the profile's `formats` by default, or `formats` (each in the profile's `formats`
    or `offers`), with only the runtimes of those formats. Refuses a format whose optional extra
    is not installed before any work starts."""
    if not isinstance(target, Target):
        target = load_target(target, targets_dir)
    chosen = tuple(dict.fromkeys(formats)) if formats else target.formats
    allowed = target.formats + tuple(f for f in target.offers if f not in target.formats)
    for name in chosen:
        if name not in allowed:
            raise EdgerecError(f"target {target.name} offers the formats {', '.join(allowed)}, not {name!r}")
        why = get(name).missing()
        if why:
            raise EdgerecError(why)
    for runtime in target.runtimes:
        if runtime.name not in RUNTIMES:
            raise EdgerecError(f"target {target.name}: unknown runtime {runtime.name!r}")
        if RUNTIMES[runtime.name][0] not in allowed:
            raise EdgerecError(
                f"target {target.name}: runtime {runtime.name} runs {RUNTIMES[runtime.name][0]}, "
                f"which the profile's formats {list(allowed)} omit"
            )
    runtimes = tuple(r for r in target.runtimes if RUNTIMES[r.name][0] in chosen)
    missing = [name for name in chosen if not any(RUNTIMES[r.name][0] == name for r in runtimes)]
    if missing:
        raise EdgerecError(f"target {target.name}: no runtime in the profile runs {', '.join(missing)}")
    return dataclasses.replace(target, formats=chosen, runtimes=runtimes)


def open_model(runtime, path: Path, meta: dict, target):
    """A scorer for `path` on the given runtime of a target profile: in this process, or for
    a runtime with an environment of its own (`devices.envs`), through the standalone runner."""
    if runtime.environment == "isolated" or runtime.name in ENVIRONMENTS:
        if runtime.name not in ENVIRONMENTS:
            raise EdgerecError(f"runtime '{runtime.name}' has no isolated environment")
        dtype = FORMATS[RUNTIMES[runtime.name][0]].input_dtype(target)
        return IsolatedScorer(runtime.name, path, meta["max_len"], meta["num_items"], dtype, target.threads)
    return RUNTIMES[runtime.name][1](path, meta, target, runtime)


__all__ = ["FORMATS", "RUNTIMES", "ModelFormat", "get", "open_model", "target_profile"]
