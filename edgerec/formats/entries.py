"""The bundle's further entry points, written beside `model.<fmt>` when export is asked for them:
`rerank.<fmt>` (`export --rerank C`: score the C candidates the app passes) and `rules.<fmt>`
(`export --rules`, with `--top-k`: the top-K with per-call `allowed` and `boost` inputs).

What they compute is `graphs` (`rerank_graph`, `scoring_graph(rules=True)`); here are their
inputs, how every format of the profile writes them (`ModelFormat.write_entry`), their
metadata.json description, and the check that each runtime's file gives PyTorch's answer on real
test histories: the rerank scores within the profile's parity tolerance, the rules lists
identical. Each file holds its own copy of the weights (one file per entry point, which every
runtime opens the same way); `quantize` carries them over in float (metadata says so).
"""

from __future__ import annotations

import abc
import sys
from pathlib import Path

import numpy as np

from edgerec.core.errors import EdgerecError
from edgerec.core.graphs import rerank_graph, scoring_graph
from edgerec.devices.envs import python_for, run_runner
from edgerec.devices.runtimes import encode
from edgerec.formats import FORMATS, RUNTIMES

ID_INPUTS = ("input_ids", "candidates")  # the inputs that take the format's id dtype


class Entry(abc.ABC):
    name: str
    outputs: tuple[str, ...]

    @abc.abstractmethod
    def graph(self, rec, top_k: int | None):
        """The torch module written for this entry."""

    @abc.abstractmethod
    def feeds(self, rec, histories, size: int | None, rng) -> dict[str, np.ndarray]:
        """Inputs for `histories` (ids in int64): what the check runs, and the tracing example."""

    @abc.abstractmethod
    def inputs_doc(self, rec, dtypes: dict, size: int | None) -> dict:
        """metadata.json's `inputs` of this entry (`dtypes`: the id dtype per format)."""

    @abc.abstractmethod
    def compare(self, expected: list, got: list, atol: float, where: str) -> dict:
        """PyTorch's outputs against a runtime's (both in output order); raises on a mismatch."""


class Rerank(Entry):
    name, outputs = "rerank", ("scores",)

    def graph(self, rec, top_k):
        return rerank_graph(rec)

    def feeds(self, rec, histories, size, rng):
        candidates = rng.integers(1, rec.num_items + 1, size=(len(histories), size))
        candidates[:, -1:] = 0  # an empty slot, as an app pads a short page
        return {"input_ids": encode(histories, rec.max_len, "int64"), "candidates": candidates.astype(np.int64)}

    def inputs_doc(self, rec, dtypes, size):
        return {
            "input_ids": {"dtype": dtypes, "shape": [1, rec.max_len], "layout": "as model.<fmt>'s input_ids"},
            "candidates": {
                "dtype": dtypes,
                "shape": [1, size],
                "layout": "item indices (items.json) to score; 0 = an empty slot",
            },
        }

    def compare(self, expected, got, atol, where):
        want, have = np.asarray(expected[0]), np.asarray(got[0])
        empty = np.isneginf(want)
        if have.shape != want.shape or not (np.isneginf(have) == empty).all():
            raise EdgerecError(f"{where}: the empty candidate slots differ from PyTorch")
        diff = float(np.abs(want[~empty] - have[~empty]).max(initial=0.0))
        if not diff <= atol:
            raise EdgerecError(f"{where}: scores differ from PyTorch by up to {diff:.3g} (tolerance {atol:g})")
        return {"users": len(want), "max_abs_diff": diff, "atol": atol}


class Rules(Entry):
    name, outputs = "rules", ("items", "scores")

    def graph(self, rec, top_k):
        return scoring_graph(rec, top_k, rules=True)

    def feeds(self, rec, histories, size, rng):
        shape = (len(histories), rec.num_items)
        return {
            "input_ids": encode(histories, rec.max_len, "int64"),
            "allowed": (rng.random(shape) < 0.5).astype(np.uint8),
            "boost": rng.normal(0.0, 0.5, shape).astype(np.float32),
        }

    def inputs_doc(self, rec, dtypes, size):
        return {
            "input_ids": {"dtype": dtypes, "shape": [1, rec.max_len], "layout": "as model.<fmt>'s input_ids"},
            "allowed": {
                "dtype": "uint8",
                "shape": [1, rec.num_items],
                "layout": "column j: 1 = item j + 1 may be recommended, 0 = excluded (stock, region, category)",
            },
            "boost": {
                "dtype": "float32",
                "shape": [1, rec.num_items],
                "layout": "column j is added to item j + 1's score before the top-K (zeros: none)",
            },
        }

    def compare(self, expected, got, atol, where):
        want, have = np.asarray(expected[0]), np.asarray(got[0])
        same = float((have == want).all(axis=1).mean()) if have.shape == want.shape else 0.0
        if same < 1.0:
            raise EdgerecError(f"{where}: the top-K lists differ from PyTorch for {1 - same:.1%} of users")
        return {"users": len(want), "identical_lists": same}


ENTRIES = {e.name: e for e in (Rerank(), Rules())}


def example_inputs(feeds: dict, dtype: str) -> dict:
    """Torch tensors of `feeds` with the ids in `dtype`, for a format's writer."""
    import torch

    cast = {k: v.astype(dtype) if k in ID_INPUTS else v for k, v in feeds.items()}
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in cast.items()}


def write_entries(rec, folder: Path, target, wanted: dict, top_k: int | None, histories, metadata: dict, log) -> dict:
    """Write and check every entry in `wanted` ({name: size or None}) for every format of the
    profile into `folder`; returns metadata.json's `entries`."""
    import torch

    rng = np.random.default_rng(0)
    result = {}
    for name, size in wanted.items():
        entry = ENTRIES[name]
        graph = entry.graph(rec, top_k)
        feeds = entry.feeds(rec, histories, size, rng)
        files = {}
        for fmt in target.formats:
            files[fmt] = FORMATS[fmt].file_name(name)
            log(f"writing {files[fmt]}")

            def inputs(batch: int, dtype: str):
                return example_inputs({k: v[:1].repeat(batch, axis=0) for k, v in feeds.items()}, dtype)

            FORMATS[fmt].write_entry(graph, folder / files[fmt], target, inputs, list(entry.outputs), metadata, name)
        with torch.inference_mode():
            expected = graph(**example_inputs(feeds, "int64"))
        expected = [t.numpy() for t in (expected if isinstance(expected, tuple) else (expected,))]
        checks = {}
        for runtime in target.runtimes:
            fmt = RUNTIMES[runtime.name][0]
            got = run_feeds(runtime, folder / files[fmt], feeds, FORMATS[fmt].input_dtype(target), target.threads)
            checks[runtime.name] = entry.compare(
                expected, got, target.budgets.parity_atol, f"{files[fmt]} on {runtime.name}"
            )
        dtypes = {f: FORMATS[f].input_dtype(target) for f in target.formats}
        result[name] = {
            "files": files,
            "inputs": entry.inputs_doc(rec, dtypes, size),
            "outputs": list(entry.outputs),
            "precision": "fp32",
            "check": checks,
        }
    return result


def run_feeds(runtime, path: Path, feeds: dict, dtype: str, threads: int = 1, device=None) -> list:
    """Every row of `feeds` through the file in the runtime's own runner process (on `device`
    when given), one batch-1 call each: the outputs in the file's order."""
    feeds = {k: v.astype(dtype) if k in ID_INPUTS else v for k, v in feeds.items()}
    if device is not None:
        out = device.run_runner(runtime.name, Path(path), feeds, threads)
    else:
        python = python_for(runtime.name) if runtime.environment == "isolated" else sys.executable
        out = run_runner(python, runtime.name, Path(path), feeds, threads)
    return [out[f"output_{i}"] for i in range(sum(k.startswith("output_") for k in out))]
