"""The protocol every model format implements (see the package docstring)."""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgerec.core.errors import EdgerecError


@dataclass
class Int8Plan:
    """How `quantize` makes one int8 form of one file: `make(units)` writes a file with exactly
    those units in int8 (the rest float) and returns its path; `units` are the ones the accuracy
    loop may keep in float one by one; `structural` the units that stay float whatever the
    accuracy, with why; `float_ops` the op types the profile keeps float."""

    make: Callable[[list[str]], Path]
    units: list[str]
    structural: dict[str, str] = field(default_factory=dict)
    float_ops: tuple = ()


class ModelFormat(abc.ABC):
    name: str  # the profile's `formats` key
    suffix: str = ""  # the files' suffix (model.<suffix>, step.<suffix>); "" = the name
    # runtime name -> how to open a file of this format for a target profile (`open_model`);
    # None for a runtime that only runs in an environment of its own (`devices.envs`)
    runtimes: dict = {}
    # The batch the files are exported with (None: any batch); an app makes one call per user.
    fixed_batch: int | None = None
    # Users a parity check replays through a file (None: every one given); batch-1 formats
    # take fewer, since each user is one call.
    parity_users: int | None = None
    step_parity_users: int = 64
    writes_step = True  # can write the incremental step model

    def file_name(self, stem: str) -> str:
        return f"{stem}.{self.suffix or self.name}"

    def missing(self) -> str | None:
        """Why this format cannot be written here (an optional extra not installed), or None."""
        return None

    def input_shape(self, max_len: int) -> list:
        """The `input_ids` shape of the full model's files, for metadata.json."""
        return [self.fixed_batch or "batch", max_len]

    @abc.abstractmethod
    def input_dtype(self, target) -> str:
        """The dtype of the ids the format's files take for this target profile."""

    @abc.abstractmethod
    def write_full(self, graph, path: Path, target, max_len: int, top_k: int | None, metadata: dict) -> None:
        """The full scoring graph (`graphs.scoring_graph`) as a file of this format."""

    @abc.abstractmethod
    def write_step(self, graph, path: Path, spec, target, top_k: int | None, metadata: dict) -> None:
        """The incremental step graph (`graphs.step_graph`) as a file of this format."""

    def write_entry(self, graph, path: Path, target, inputs, outputs: list[str], metadata: dict, what: str) -> None:
        """A further entry point (`formats.entries`: rerank, rules) as a file of this format.
        `inputs(batch, dtype)` gives example inputs by name, the ids in `dtype`; `outputs` names
        the outputs in order."""
        raise EdgerecError(f"{self.name} cannot hold the {what} entry point yet")

    @abc.abstractmethod
    def int8_forms(self, settings) -> list[str]:
        """The int8 forms the profile's `[quantization]` allows for this format, preferred first."""

    def session_config(self, form: str) -> dict:
        """Session entries an app must set to run a file of this int8 form ({} for none)."""
        return {}

    def runtime_version_needed(self, form: str) -> str | None:
        """The oldest release of this format's runtime that runs a file of this int8 form as it
        is meant to run (None: any release a profile names)."""
        return None

    @abc.abstractmethod
    def plan_int8(
        self, form: str, src: Path, work: Path, calibration: Path, settings, sequences, meta, target, log, model=None
    ):
        """An `Int8Plan` for `form` of the fp32 file `src` (metadata `meta`): calibration on
        `sequences`, if the form needs it, runs here and its ranges go into the `calibration`
        folder; the files `make` writes go to `work`. `model()` loads the PyTorch model the
        bundle was exported from, for formats that quantize the graph rather than the file."""

    @abc.abstractmethod
    def quantize_step(
        self, src: Path, dst: Path, calibration: Path, settings, sequences, log, model=None
    ) -> tuple[str, dict]:
        """The step model `src` in int8 at `dst` with the profile's scheme for this format:
        (scheme, {unit kept float: why})."""

    app_file_keys: tuple[str, ...] = ()  # the metadata.json keys `app_files` writes

    def app_files(self, folder: Path, meta: dict, step_entry: dict | None, target, histories) -> dict:
        """Files an app of this format loads besides the model files (e.g. ORT Mobile's .ort),
        written into the bundle `folder` and checked: their metadata.json entries by key."""
        return {}

    # A text teacher (a Hugging Face model over titles) exported for comparison: formats that
    # can, say so and implement `write_text_model`.
    exports_text = False

    def write_text_model(self, rec, model_dir: Path, out: Path):
        """The text teacher `rec` (loaded from `model_dir`) as the file `out`; returns a
        `runtimes.Scorer` for that file."""
        raise EdgerecError(f"a text teacher cannot be exported to {self.name}")

    @abc.abstractmethod
    def top_k_items(self, path: Path, input_ids) -> np.ndarray:
        """The `items` output [B, K] of an in-graph top-K file for encoded inputs, on this host."""

    @abc.abstractmethod
    def open_bundle_file(self, path: Path, meta: dict, threads: int):
        """A `runtimes.Scorer` for a bundle file, opened as an app on this host would."""


class UnsupportedMix(EdgerecError):
    """The quantizer cannot make this mix of int8 and float ops (e.g. a tied item table read by
    an int8 lookup and a float output layer, under ai-edge-quantizer 0.10)."""

    expected = True  # fit_tolerance handles it: the quantizer's output stays off the console


CHUNK = 64  # calibration sequences per collection step
