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

The step graph (ONNX and TFLite, beside the full model in a bundle, `step.onnx` / `step.tflite`):

    inputs   item      [batch]          the new item (items.json index)
             position  [batch]          its slot in the window: 0 for the first item, then 1, 2...
             state     [batch, L, n, d] every layer's input at every slot (zeros to start)
             history   [batch, n]       (top-K graphs only) the items in the window, 0 = empty
    outputs  scores    [batch, items]   as the full model's `scores` (or items, scores: top-K)
             next_state, next_history   fed back as `state` / `history` on the next call

L = layers, n = the window (max_len), d = the hidden size. TFLite names outputs output_0,
output_1, ... in the order above.

Rolling the window: a step with `position == n` is out of range. When the window is full the app
starts over: zero the state and feed the newest `roll_keep` items (metadata) from position 0,
then go on. Between rolls the result is the full model's on the items since the last roll (at
least `roll_keep`). Written by hand: no exporter in the stack (optimum, litert-torch) makes a
cached step graph for a BERT encoder, and HF's cache classes trace to dynamic shapes that
TFLite and tflite-runtime 2.14 cannot run.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgerec import device_runner
from edgerec.errors import EdgerecError


@dataclass(frozen=True)
class StateLayout:
    layers: int
    hidden: int
    heads: tuple[int, ...]  # per layer (pruned layers may have fewer); for the description
    window: int

    def shape(self, batch: int | str = 1) -> list:
        return [batch, self.layers, self.window, self.hidden]

    def to_dict(self) -> dict:
        return {"layers": self.layers, "hidden": self.hidden, "heads_per_layer": list(self.heads),
                "window": self.window}


def layout(rec, window: int | None = None) -> StateLayout:
    """The state a step model of `rec` carries; refuses models it would not be exact for."""
    if rec.kind != "causal":
        raise EdgerecError(f"a step model needs a causal student, not a {rec.kind!r} model: with "
                           "bidirectional attention every item's state changes with each new one")
    if rec.positions != "start":
        raise EdgerecError("a step model needs positions counted from the window start (distill "
                           "--positions start): with the default 'end' positions each new item "
                           "moves every cached one")
    if not rec.token_of.tolist() == list(range(len(rec.token_of))):
        raise EdgerecError("a step model is exported for students edgerec trained (identity item order)")
    layers = rec.model.bert.encoder.layer
    window = int(window or rec.max_len)
    if not 1 <= window <= rec.model.config.max_position_embeddings:
        raise EdgerecError(f"window must be in [1, {rec.model.config.max_position_embeddings}], got {window}")
    return StateLayout(len(layers), int(rec.model.config.hidden_size),
                       tuple(int(layer.attention.self.num_attention_heads) for layer in layers), window)


def step_graph(rec, top_k: int | None = None, window: int | None = None):
    """The torch module exported as the step model (see the module docstring).

    Written for the fewest runtime operators, since at this size an update costs its operator
    count more than its arithmetic: the attention's four projections are two precomputed
    matrices (`composed_attention`), the new item's row stays 2-D, masks are single selects,
    and a one-layer state is written in place of a slice-and-concatenate."""
    import torch

    from edgerec.export import top_k_unseen
    from edgerec.models import composed_attention

    spec = layout(rec, window)
    n, num_items, width = spec.window, rec.num_items, spec.hidden
    bert = rec.model.bert
    embeddings = bert.embeddings
    minimum = torch.finfo(torch.float32).min

    class StepGraph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = rec.model
            # position + token-type rows for slots 0..n-1, one lookup table
            self.register_buffer("slots", (embeddings.position_embeddings.weight[:n]
                                           + embeddings.token_type_embeddings.weight[0]).detach().clone())
            self.heads = [layer.attention.self.num_attention_heads for layer in bert.encoder.layer]
            for index, layer in enumerate(bert.encoder.layer):
                for name, value in zip(("a", "c", "bm", "b"), composed_attention(layer)):
                    self.register_buffer(f"{name}{index}", value)

        def forward(self, item, position, state, history=None):
            item, position = item.long(), position.long()
            ahead = torch.arange(n).view(1, n)
            slot = (ahead == position.view(-1, 1)).view(-1, 1, n, 1)  # where the new item goes
            # empty slots and the future are blocked; the new item sees itself
            blocked = torch.where(ahead > position.view(-1, 1), minimum, 0.0).view(-1, 1, n)
            x = embeddings.LayerNorm(embeddings.word_embeddings(item)
                                     + torch.nn.functional.embedding(position, self.slots))  # [B, H]
            written = []
            for index, layer in enumerate(bert.encoder.layer):
                # the layer's input at every slot, the new item's written in
                own = state if spec.layers == 1 else torch.narrow(state, 1, index, 1)
                inputs = torch.where(slot, x.view(-1, 1, 1, width), own)  # [B, 1, n, H]
                written.append(inputs)
                cached = inputs.view(-1, n, width)
                a, c, bm, b = (getattr(self, f"{name}{index}") for name in ("a", "c", "bm", "b"))
                query = torch.nn.functional.linear(x, a, c).view(-1, self.heads[index], width)
                weights = torch.softmax(query @ cached.transpose(1, 2) + blocked, dim=-1)
                mixed = (weights @ cached).view(-1, self.heads[index] * width)
                attended = layer.attention.output.LayerNorm(torch.nn.functional.linear(mixed, bm, b) + x)
                x = layer.output(layer.intermediate(attended), attended)
            scores = torch.narrow(rec.model.cls(x), 1, 1, num_items)
            next_state = written[0] if len(written) == 1 else torch.cat(written, dim=1)
            if top_k is None:
                return scores, next_state
            next_history = torch.where(slot.view(-1, n), item.view(-1, 1), history.long()).to(history.dtype)
            items, best = top_k_unseen(scores, next_history, top_k)
            return items, best, next_state, next_history

    return StepGraph().eval()


def step_inputs(spec: StateLayout, dtype: str, top_k: int | None, batch: int = 1) -> dict:
    """Example inputs (the initial state) for export and for a first call."""
    import torch

    inputs = {"item": torch.ones(batch, dtype=getattr(torch, dtype)),
              "position": torch.zeros(batch, dtype=getattr(torch, dtype)),
              "state": torch.zeros(spec.shape(batch))}
    if top_k:
        inputs["history"] = torch.zeros((batch, spec.window), dtype=getattr(torch, dtype))
    return inputs


def output_names(top_k: int | None) -> list[str]:
    return ["items", "scores", "next_state", "next_history"] if top_k else ["scores", "next_state"]


def export_step_onnx(graph, path: Path, spec: StateLayout, opset: int, dtype: str,
                     top_k: int | None, metadata: dict) -> None:
    from edgerec.export import write_onnx

    write_onnx(graph, step_inputs(spec, dtype, top_k, batch=2), output_names(top_k), path, opset, metadata,
               "step model ONNX export")


def export_step_tflite(graph, path: Path, spec: StateLayout, top_k: int | None) -> None:
    from edgerec.export import write_tflite

    # int32 ids, as the full TFLite model; fixed batch of 1
    write_tflite(graph, step_inputs(spec, "int32", top_k), path, "step model TFLite conversion")


def describe(spec: StateLayout, dtype: dict, top_k: int | None, roll_keep: int) -> dict:
    """metadata.json's `step_model` entry: everything an app needs to drive the step file."""
    state_shape = spec.shape("batch")
    entry = {
        "inputs": {
            "item": {"dtype": dtype, "shape": ["batch"], "meaning": "the new item (items.json index)"},
            "position": {"dtype": dtype, "shape": ["batch"],
                         "meaning": f"its slot: the number of items already in the state, 0..{spec.window - 1}"},
            "state": {"dtype": "float32", "shape": state_shape, "init": "zeros",
                      "meaning": "state[:, l, j] is layer l's input (hidden state) for the item at "
                                 "slot j; slots at or after `position` are ignored"},
        },
        "outputs": {"scores": "as the full model's scores, after the new item",
                    "next_state": "feed back as `state` on the next call"},
        "top_k": top_k,  # None: scores over every item
        "tflite_outputs": output_names(top_k),  # TFLite's output_0, output_1, ... in this order
        "layout": spec.to_dict(),
        "roll": {"when": f"position would be {spec.window} (the window is full)", "keep": roll_keep,
                 "how": f"zero the state (and history), then feed the newest {roll_keep} items from "
                        "position 0 before the new one"},
        "errors": "a position outside [0, window) or a state of another shape is the app's bug: "
                  "the graph does not check it (edgerec.incremental.StepSession does)",
    }
    if top_k:
        entry["inputs"]["history"] = {"dtype": dtype, "shape": ["batch", spec.window], "init": "zeros",
                                      "meaning": "items in the window (excluded from the top-K)"}
        entry["outputs"] = {"items": "int64 [batch, K] best unseen items (TFLite output_0)",
                            "scores": "float32 [batch, K] (TFLite output_1)",
                            "next_state": "feed back as `state` (TFLite output_2)",
                            "next_history": "feed back as `history` (TFLite output_3)"}
    return entry


def calibration_feeds(path: Path, sequences, chunk: int = 64):
    """The inputs a step file sees when `sequences` are replayed through it (fp32, ONNX Runtime,
    batches of `chunk` histories advancing together): one feed per update step, for calibrating
    its int8 version. Histories longer than the window keep their newest items."""
    call, specs = device_runner.open_step(str(path), 1)
    window = int(specs["state"][0][2])
    for start in range(0, len(sequences), chunk):
        rows = [np.asarray(s, dtype=np.int64)[-window:] for s in sequences[start: start + chunk]]
        state = {name: np.zeros([len(rows), *shape[1:]], dtype) for name, (shape, dtype) in specs.items()
                 if name not in ("item", "position")}
        for t in range(max((len(r) for r in rows), default=0)):
            active = np.array([i for i, r in enumerate(rows) if len(r) > t])
            feed = {"item": np.array([rows[i][t] for i in active], specs["item"][1]),
                    "position": np.full(len(active), t, specs["position"][1]),
                    **{name: value[active] for name, value in state.items()}}
            yield feed
            out = call(feed)
            for name in state:
                state[name][active] = out["next_" + name]


def replay(runtime, path: Path, input_ids, threads: int = 1, warmup: int = 0, device=None) -> dict:
    """Replay each row of `input_ids` (left-padded, as the full model takes them) through a step
    file item by item from an empty state, in the runtime's own runner process (on `device`
    when given): the final `scores` (top-K `items`) per row and every update's `seconds`."""
    from edgerec.envs import python_for, run_runner

    if device is not None:
        return device.run_runner(runtime.name, Path(path), input_ids, threads, warmup, step=True)
    python = python_for(runtime.name) if runtime.environment == "isolated" else sys.executable
    return run_runner(python, runtime.name, Path(path), input_ids, threads, warmup, step=True)


def _replay_scorer(runtime, path: Path, max_len: int, num_items: int, dtype: str, threads: int):
    from edgerec.runtimes import _Scorer

    class Replayed(_Scorer):
        def run(self, input_ids):
            return replay(runtime, path, input_ids, threads)["scores"]

        def scores(self, histories, batch_size: int = 100_000):
            return super().scores(histories, batch_size)  # one runner process for the whole set

    scorer = Replayed()
    scorer.max_len, scorer.num_items, scorer.dtype = max_len, num_items, dtype
    return scorer


def export_steps(rec, folder: Path, target, top_k: int | None, histories, metadata: dict,
                 roll_keep: int | None = None) -> dict:
    """Write `step.<fmt>` for every format of the profile into `folder`, replay test histories
    through each runtime's file and require the full PyTorch model's scores (and top-K lists);
    returns metadata.json's `step_model` entry."""
    import torch

    from edgerec.export import parity, scoring_graph
    from edgerec.runtimes import RUNTIMES, encode

    spec = layout(rec)
    graph = step_graph(rec, top_k)
    plain = step_graph(rec) if top_k else graph  # parity is checked on the scores
    files = {}
    for fmt in target.formats:
        files[fmt] = f"step.{fmt}"
        twins = [(graph, files[fmt], top_k)] + ([(plain, f"step-parity.{fmt}", None)] if top_k else [])
        for module, name, k in twins:
            if fmt == "onnx":
                export_step_onnx(module, folder / name, spec, target.onnx.opset, target.onnx.input_dtype,
                                 k, metadata)
            else:
                export_step_tflite(module, folder / name, spec, k)
    checks = {}
    for runtime in target.runtimes:
        fmt = RUNTIMES[runtime.name][0]
        dtype = target.onnx.input_dtype if fmt == "onnx" else "int32"
        users = histories[:64] if fmt == "onnx" else histories[:16]  # every update is one call
        path = folder / (f"step-parity.{fmt}" if top_k else files[fmt])
        scorer = _replay_scorer(runtime, path, spec.window, rec.num_items, dtype, target.threads)
        checks[runtime.name] = parity(rec, scorer, users, target.budgets.parity_atol,
                                      f"step model ({fmt}) on {runtime.name}, replayed")
        if top_k:
            ids = encode(users, spec.window, dtype)
            with torch.inference_mode():
                expected = scoring_graph(rec, top_k)(torch.from_numpy(ids.astype(np.int64)))[0].numpy()
            got = replay(runtime, folder / files[fmt], ids, target.threads)["scores"]
            same = float((np.asarray(got) == expected).all(axis=1).mean())
            if same < 1.0:
                raise EdgerecError(f"step model top-K ({fmt}) on {runtime.name} differs from the full "
                                   f"model for {1 - same:.1%} of users")
            checks[runtime.name]["identical_top_k_lists"] = same
    for fmt in target.formats:
        (folder / f"step-parity.{fmt}").unlink(missing_ok=True)
    entry = describe(spec, {"onnx": target.onnx.input_dtype, "tflite": "int32"}, top_k,
                     roll_keep or max(1, spec.window // 2))
    return {"files": files, **entry, "replay_check": checks}


def validate_steps(bundle: Path, entry: dict, target, histories, targets, num_items: int,
                   full_runs: dict, warmup: int = 0, device=None) -> dict:
    """Replay every test history through the bundle's step files on each runtime of the profile:
    the final top-10 against the full model's on the same runtime (identical in fp32; after int8
    the two files are quantized separately, so agreement is reported), accuracy, and per-update
    latency beside the full model's per-call latency."""
    from edgerec.runtimes import RUNTIMES, encode
    from edgerec.validate import latency_stats, score_outputs

    out = {}
    for runtime in target.runtimes:
        fmt = RUNTIMES[runtime.name][0]
        name = entry["files"].get(fmt)
        if name is None or runtime.name not in full_runs:
            continue
        dtype = target.onnx.input_dtype if fmt == "onnx" else "int32"
        result = replay(runtime, Path(bundle) / name, encode(histories, entry["layout"]["window"], dtype),
                        target.threads, warmup, device)
        reference = full_runs[runtime.name]["top"]
        summary, top, _ = score_outputs(result["scores"], entry.get("top_k"), num_items, histories, targets,
                                        reference, f"{bundle}: {name} on {runtime.name}")
        latency = latency_stats(result["seconds"])
        out[runtime.name] = {
            "file": name, "bytes": (Path(bundle) / name).stat().st_size, "users": len(histories),
            "updates": latency["runs"], "metrics": summary,
            "identical_top10": float((top == reference).all(axis=1).mean()),
            "top10_agreement_with_full_model": summary["top10_agreement"]["mean"],
            "latency_per_update": latency,
            "p50_vs_full_call": latency["p50_ms"] / full_runs[runtime.name]["latency"]["p50_ms"]}
    return out


class StepSession:
    """Drive a step model file from Python (ONNX Runtime or LiteRT), with the checks the graph
    itself leaves to the app: a bad position, a state of the wrong shape or from another model.

        session = StepSession("dist/arm64/step.onnx")
        for item in history:
            scores = session.add(item)   # scores (or (items, scores) for a top-K file)
    """

    def __init__(self, path: Path, threads: int = 1, roll_keep: int | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise EdgerecError(f"{self.path}: no such step model")
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
        return {"model": self.fingerprint, "items": list(self.items),
                **{name: value.copy() for name, value in self.state.items()}}

    def load_state(self, saved: dict) -> None:
        """Resume from `save_state()`; refuses a state of the wrong shape or from another model."""
        if saved.get("model") != self.fingerprint:
            raise EdgerecError(f"this state was saved from another model ({str(saved.get('model'))[:12]}), "
                               f"not {self.path.name} ({self.fingerprint[:12]})")
        items = [int(i) for i in saved.get("items", [])]
        if len(items) > self.window:
            raise EdgerecError(f"the saved window holds {len(items)} items; this model's holds {self.window}")
        arrays = {}
        for name, (shape, dtype) in self.specs.items():
            if name in ("item", "position"):
                continue
            got = np.asarray(saved.get(name))
            if got.shape != tuple([1, *shape[1:]]):
                raise EdgerecError(f"state '{name}' has shape {list(got.shape)}; this model's is "
                                   f"{[1, *shape[1:]]} (a state from another model?)")
            arrays[name] = got.astype(dtype)
        self.items, self.state = items, arrays

    def add(self, item: int):
        if len(self.items) >= self.window:  # roll: restart from the newest roll_keep items
            keep = self.items[-self.roll_keep:]
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

