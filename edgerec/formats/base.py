"""The protocol every model format implements (see the package docstring)."""

from __future__ import annotations

import abc
from pathlib import Path

import numpy as np


class ModelFormat(abc.ABC):
    name: str  # the profile's `formats` key and the files' suffix: model.<name>, step.<name>
    # Users a parity check replays through a file (None: every one given); batch-1 formats
    # take fewer, since each user is one call.
    parity_users: int | None = None
    step_parity_users: int = 64

    @abc.abstractmethod
    def input_dtype(self, target) -> str:
        """The dtype of the ids the format's files take for this target profile."""

    @abc.abstractmethod
    def write_full(self, graph, path: Path, target, max_len: int, top_k: int | None, metadata: dict) -> None:
        """The full scoring graph (`graphs.scoring_graph`) as a file of this format."""

    @abc.abstractmethod
    def write_step(self, graph, path: Path, spec, target, top_k: int | None, metadata: dict) -> None:
        """The incremental step graph (`graphs.step_graph`) as a file of this format."""

    @abc.abstractmethod
    def int8_forms(self, settings) -> list[str]:
        """The int8 forms the profile's `[quantization]` allows for this format, preferred first."""

    def session_config(self, form: str) -> dict:
        """Session entries an app must set to run a file of this int8 form ({} for none)."""
        return {}

    @abc.abstractmethod
    def top_k_items(self, path: Path, input_ids) -> np.ndarray:
        """The `items` output [B, K] of an in-graph top-K file for encoded inputs, on this host."""

    @abc.abstractmethod
    def open_bundle_file(self, path: Path, meta: dict, threads: int):
        """A `runtimes.Scorer` for a bundle file, opened as an app on this host would."""
