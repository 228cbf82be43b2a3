"""Incremental on-device inference: a step model that updates with each new interaction.

A full pass re-encodes the user's whole history every time the user taps something new. A
causal student does not need to: what each layer reads of an item (its keys and values) never
changes once the item is in the window, provided positions are counted from the window's first
item (`distill --positions start`). The step model caches it in one state tensor and does only
the new item's work: L x (4d^2 + 2d x ff + 2nd) multiply-adds plus the output layer.

What is cached is each layer's *input* at every slot, not its keys and values: both are linear in
it, so they are absorbed into the single query (`models.composed_attention`, the rewrite the
full graph's last layer uses too). That halves the state (d per layer and slot instead of 2d)
and removes the key and value projections and their reshapes from every update.

The step graph itself (`step.onnx` / `step.tflite` beside the full model in a bundle, its inputs
and outputs) is built in `graphs.step_graph`, written by `writers`, exported and replay-checked
by `export`, quantized by `quantize` and validated by `validate`. This module is what is the
step model's own beyond that: the metadata an app reads, the calibration feeds that replaying
produces, and `StepSession`, which drives a step file from Python with the checks the graph
leaves to the app.

Rolling the window: a step with `position` equal to the window is out of range. When the window is full the app
starts over: zero the state and feed the newest `roll_keep` items (metadata) from position 0,
then go on. Between rolls the result is the full model's on the items since the last roll (at
least `roll_keep`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from edgerec.core.errors import EdgerecError
from edgerec.core.files import read_bundle
from edgerec.core.graphs import StateLayout, step_output_names
from edgerec.devices import device_runner


def describe(spec: StateLayout, dtype: dict, top_k: int | None, roll_keep: int) -> dict:
    """metadata.json's `step_model` entry: everything an app needs to drive the step file."""
    state_shape = spec.shape("batch")
    entry = {
        "inputs": {
            "item": {"dtype": dtype, "shape": ["batch"], "meaning": "the new item (items.json index)"},
            "position": {
                "dtype": dtype,
                "shape": ["batch"],
                "meaning": f"its slot: the number of items already in the state, 0..{spec.window - 1}",
            },
            "state": {
                "dtype": "float32",
                "shape": state_shape,
                "init": "zeros",
                "meaning": "state[:, l, j] is layer l's input (hidden state) for the item at "
                "slot j; slots at or after `position` are ignored",
            },
        },
        "outputs": {
            "scores": "as the full model's scores, after the new item",
            "next_state": "feed back as `state` on the next call",
        },
        "top_k": top_k,  # None: scores over every item
        "tflite_outputs": step_output_names(top_k),  # TFLite's output_0, output_1, ... in this order
        "layout": spec.to_dict(),
        "roll": {
            "when": f"position would be {spec.window} (the window is full)",
            "keep": roll_keep,
            "how": f"zero the state (and history), then feed the newest {roll_keep} items from "
            "position 0 before the new one",
        },
        "errors": "a position outside [0, window) or a state of another shape is the app's bug: "
        "the graph does not check it (edgerec.devices.incremental.StepSession does)",
    }
    if top_k:
        entry["inputs"]["history"] = {
            "dtype": dtype,
            "shape": ["batch", spec.window],
            "init": "zeros",
            "meaning": "items in the window (excluded from the top-K)",
        }
        entry["outputs"] = {
            "items": "int64 [batch, K] best unseen items (TFLite output_0); "
            "0 past the last one when fewer than K are unseen",
            "scores": "float32 [batch, K] (TFLite output_1); -inf where items is 0",
            "next_state": "feed back as `state` (TFLite output_2)",
            "next_history": "feed back as `history` (TFLite output_3)",
        }
    return entry


def calibration_feeds(path: Path, sequences, chunk: int = 64):
    """The inputs a step file sees when `sequences` are replayed through it (fp32, ONNX Runtime,
    batches of `chunk` histories advancing together): one feed per update step, for calibrating
    its int8 version. Histories longer than the window keep their newest items."""
    call, specs = device_runner.open_step(str(path), 1)
    window = int(specs["state"][0][2])
    for start in range(0, len(sequences), chunk):
        rows = [np.asarray(s, dtype=np.int64)[-window:] for s in sequences[start : start + chunk]]
        state = {
            name: np.zeros([len(rows), *shape[1:]], dtype)
            for name, (shape, dtype) in specs.items()
            if name not in ("item", "position")
        }
        for t in range(max((len(r) for r in rows), default=0)):
            active = np.array([i for i, r in enumerate(rows) if len(r) > t])
            feed = {
                "item": np.array([rows[i][t] for i in active], specs["item"][1]),
                "position": np.full(len(active), t, specs["position"][1]),
                **{name: value[active] for name, value in state.items()},
            }
            yield feed
            out = call(feed)
            for name in state:
                state[name][active] = out["next_" + name]


class StepSession:
    """Drive a step model file from Python (ONNX Runtime or LiteRT), with the checks the graph
    itself leaves to the app: a bad position, a state of the wrong shape or from another model.

        session = StepSession("dist/arm64/step.onnx")
        for item in history:
            scores = session.add(item)   # scores (or (items, scores) for a top-K file)
    """

    def __init__(self, path: Path, threads: int = 1, roll_keep: int | None = None, allow_modified: bool = False):
        """A step file inside a bundle is checked against the hash its metadata.json records
        (`allow_modified` lets a changed file through; `self.modified` says so)."""
        self.path = Path(path)
        if not self.path.is_file():
            raise EdgerecError(f"{self.path}: no such step model")
        self.modified: list[str] = []
        if (self.path.parent / "metadata.json").is_file():
            _, self.modified = read_bundle(self.path.parent, names=[self.path.name], allow_modified=allow_modified)
        try:
            self.call, self.specs = device_runner.open_step(str(self.path), threads)
        except Exception as exc:
            raise EdgerecError(f"{self.path}: cannot load the step model ({str(exc).splitlines()[0]})") from None
        self.fingerprint = hashlib.sha256(self.path.read_bytes()).hexdigest()
        shape = self.specs["state"][0]
        self.window = int(shape[2])
        self.roll_keep = int(roll_keep or max(1, self.window // 2))
        self.reset()

    def reset(self) -> None:
        self.items: list[int] = []
        self.state = device_runner.initial_state(self.specs)

    def save_state(self) -> dict:
        """Everything needed to resume after an app restart: the state arrays, the items in the
        window and a fingerprint of the step file (a state only fits the model that made it)."""
        return {
            "model": self.fingerprint,
            "items": list(self.items),
            **{name: value.copy() for name, value in self.state.items()},
        }

    def load_state(self, saved: dict) -> None:
        """Resume from `save_state()`; refuses a state of the wrong shape or from another model."""
        if saved.get("model") != self.fingerprint:
            raise EdgerecError(
                f"this state was saved from another model ({str(saved.get('model'))[:12]}), "
                f"not {self.path.name} ({self.fingerprint[:12]})"
            )
        items = [int(i) for i in saved.get("items", [])]
        if len(items) > self.window:
            raise EdgerecError(f"the saved window holds {len(items)} items; this model's holds {self.window}")
        arrays = {}
        for name, (shape, dtype) in self.specs.items():
            if name in ("item", "position"):
                continue
            got = np.asarray(saved.get(name))
            if got.shape != tuple([1, *shape[1:]]):
                raise EdgerecError(
                    f"state '{name}' has shape {list(got.shape)}; this model's is "
                    f"{[1, *shape[1:]]} (a state from another model?)"
                )
            arrays[name] = got.astype(dtype)
        self.items, self.state = items, arrays

    def add(self, item: int):
        if len(self.items) >= self.window:  # roll: restart from the newest roll_keep items
            keep = self.items[-self.roll_keep :]
            self.reset()
            for old in keep:
                self._step(old)
        return self._step(int(item))

    def _step(self, item: int):
        position = len(self.items)
        if not 0 <= position < self.window:
            raise EdgerecError(f"position {position} is outside the window [0, {self.window})")
        out, self.state = device_runner.step_once(self.call, self.specs, item, position, self.state)
        self.items.append(item)
        return (out["items"], out["scores"]) if "items" in out else out["scores"]
