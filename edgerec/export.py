"""`edgerec export --target T`: ONNX and/or TFLite for a target profile, parity-checked.

The exported graph is the app's whole job: `input_ids` [batch, max_len] (the most recent items,
left-padded with 0) -> `scores` [batch, num_items] (column j = item index j + 1), or with
`top_k`, `items` and `scores` of the K best unseen items. A masked (BERT4Rec) model appends its
[MASK] inside the graph, so every bundle has the same interface.

Formulation choices that decide which ops appear (design.md):
- the last position is taken with `torch.narrow` (a SLICE), never `h[:, -1]`, which became a
  GATHER_ND version that tflite-runtime 2.14 lacks, and the final layer computes only that
  position (`models.last_position_hidden`);
- attention is HF's eager implementation (litert-torch has no lowering for SDPA, #827);
- TFLite is converted with a fixed batch of 1 and fixed length (dynamic dims are fragile there).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgerec.artifacts import atomic_artifact, read_manifest, write_json
from edgerec.errors import EdgerecError


@dataclass(frozen=True)
class ExportConfig:
    target: str
    top_k: int | None = None  # in-graph top-K with the history masked
    parity_users: int = 512  # test users compared against PyTorch
    step: bool | None = None  # also the incremental step model; None: the profile's step_model


def scoring_graph(rec, top_k: int | None = None):
    """The torch module that is exported: ids -> item scores (or top-K items and scores)."""
    import torch

    from edgerec.models import composed_attention, last_position_hidden

    kind, n, max_len = rec.kind, rec.num_items, rec.max_len
    token_of = torch.as_tensor(rec.token_of, dtype=torch.long)
    identity = bool((token_of == torch.arange(len(token_of))).all())
    mask_token = int(rec.meta.get("mask_token") or 0)

    class ScoringGraph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = rec.model
            for name, value in zip(("a", "c", "bm", "b"), composed_attention(rec.model.bert.encoder.layer[-1])):
                self.register_buffer(name, value)

        def forward(self, input_ids):
            ids = input_ids.long()
            history = ids
            if not identity:  # an imported checkpoint with its own token order
                ids = token_of[ids]
            if kind == "masked":
                ids = torch.cat([torch.narrow(ids, 1, 1, max_len - 1),
                                 torch.full_like(torch.narrow(ids, 1, 0, 1), mask_token)], dim=1)
            logits = self.model.cls(last_position_hidden(self.model, ids, rec.positions,
                                                         (self.a, self.c, self.bm, self.b)))
            scores = logits[:, token_of[1:]] if not identity else torch.narrow(logits, 1, 1, n)
            if top_k is None:
                return scores
            return top_k_unseen(scores, history, top_k)

    return ScoringGraph().eval()


# Set while the TFLite converter traces a graph: `top_k_unseen` then avoids scatter.
_PORTABLE_TOP_K = contextvars.ContextVar("edgerec_portable_top_k", default=False)


@contextlib.contextmanager
def portable_top_k(on: bool = True):
    """Trace `top_k_unseen` in its scatter-free form (what TFLite files get) while inside."""
    token = _PORTABLE_TOP_K.set(on)
    try:
        yield
    finally:
        _PORTABLE_TOP_K.reset(token)


def top_k_unseen(scores, history, top_k: int):
    """In-graph top-K of `scores` [B, items] (column j = item j + 1) over the items not in
    `history` [B, L] (item ids, 0 = empty): (items int64 [B, K], scores [B, K]).

    ONNX (and eager PyTorch): the history's items are set to -1e9 with one ScatterElements, then
    one TopK of K. TFLite: tflite-runtime 2.14 has no scatter (STABLEHLO_SCATTER) and lacks the
    GATHER_ND versions a gather becomes, so there the K best items outside the history are taken
    from the K + L best overall (the history has at most L items): push the candidates found in
    the history to the bottom, take the top K of the rest, and read the chosen items with a
    one-hot matmul; only TOPK_V2, EQUAL, REDUCE_ANY and matmuls. That costs a TopK of K + L and
    an O((K + L) L) comparison: on ONNX Runtime the whole call with the scatter form measured
    0.039 ms p50 against 0.152 ms (benchmarks/export.py times both). Same items either way.
    """
    import torch

    if not _PORTABLE_TOP_K.get():
        padded = torch.cat([torch.full_like(torch.narrow(scores, 1, 0, 1), -1e9), scores], dim=1)
        best, items = torch.topk(padded.scatter(1, history.long(), -1e9), top_k, dim=1)
        return items, best
    wide = min(top_k + int(history.shape[1]), int(scores.shape[1]))
    values, candidates = torch.topk(scores, wide, dim=1)
    items = candidates + 1
    seen = (items.unsqueeze(2) == history.long().unsqueeze(1)).any(dim=2)
    values = values - 1e9 * seen.to(values.dtype)
    best, slot = torch.topk(values, top_k, dim=1)
    # items[slot] as a one-hot matmul (exact for indices < 2^24)
    pick = (slot.unsqueeze(2) == torch.arange(wide).view(1, 1, wide)).to(values.dtype)
    chosen = (pick @ items.to(values.dtype).unsqueeze(2)).squeeze(2)
    return chosen.to(torch.int64), best


def export_onnx(graph, path: Path, max_len: int, opset: int, dtype: str, top_k: int | None,
                metadata: dict) -> None:
    import torch

    example = torch.ones((2, max_len), dtype=getattr(torch, dtype))
    write_onnx(graph, {"input_ids": example}, ["items", "scores"] if top_k else ["scores"], path, opset,
               metadata)


def write_onnx(graph, inputs: dict, outputs: list[str], path: Path, opset: int, metadata: dict,
               what: str = "ONNX export") -> None:
    """torch.onnx.export with every input and output batch-dynamic, then the bundle's facts in
    `metadata_props`, compact names and the checker."""
    import onnx
    import torch

    try:
        torch.onnx.export(graph, tuple(inputs.values()), str(path), input_names=list(inputs),
                          output_names=outputs, opset_version=opset, dynamo=False,
                          dynamic_axes={name: {0: "batch"} for name in [*inputs, *outputs]},
                          do_constant_folding=True)
    except Exception as exc:  # unsupported opset or operator: one line naming the profile's choice
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise EdgerecError(f"{what} at opset {opset} failed: {first}") from None
    model = onnx.load(str(path))
    # Apps read these with OnnxModelMetadata.getCustomMetadata() (Android) / ORT's modelmeta.
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = f"edgerec.{key}", json.dumps(value) if not isinstance(value, str) else value
    compact_names(model)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def compact_names(model) -> None:
    """Short names for internal tensors ("t12") and nodes ("MatMul_3"), in place.

    The exporter's names spell out module paths ("/model/bert/encoder/layer.0/...") and ORT's
    quantizer appends suffixes to them: 19 KB of a 0.2 MB int8 file here, shipped in every app.
    The graph inputs and outputs (the app's interface) keep their names. Hand-written because
    neither onnx nor onnxruntime ships a renaming pass. Graphs with subgraphs are left as they are.
    """
    graph = model.graph
    if any(a.g.node or a.graphs for n in graph.node for a in n.attribute):
        return
    keep = {v.name for v in graph.input} | {v.name for v in graph.output} | {""}
    names: dict[str, str] = {}

    counter = iter(range(10**9))

    def short(name: str) -> str:
        if name in keep:
            return name
        if name not in names:  # never a name the interface already uses
            names[name] = next(n for n in (f"t{i}" for i in counter) if n not in keep)
        return names[name]

    for tensor in graph.initializer:
        tensor.name = short(tensor.name)
    for index, node in enumerate(graph.node):
        node.name = f"{node.op_type}_{index}"
        node.input[:] = [short(x) for x in node.input]
        node.output[:] = [short(x) for x in node.output]
    for info in graph.value_info:
        info.name = short(info.name)


def export_tflite(graph, path: Path, max_len: int) -> None:
    import torch

    # int32 ids: TFLite's GATHER takes int32 indices natively (the converter narrows int64 anyway).
    write_tflite(graph, {"input_ids": torch.ones((1, max_len), dtype=torch.int32)}, path)


def write_tflite(graph, inputs: dict, path: Path, what: str = "TFLite conversion") -> None:
    import litert_torch

    try:
        with decomposed_layer_norms(graph), portable_top_k():
            edge = litert_torch.convert(graph, sample_kwargs=inputs)
    except Exception as exc:  # the converter raises many types; one line for the user
        raise EdgerecError(f"{what} failed: {str(exc).splitlines()[0][:300]}") from None
    edge.export(str(path))


@contextlib.contextmanager
def decomposed_layer_norms(module):
    """Every LayerNorm in `module` written as mean / subtract / mean of squares / rsqrt while the
    TFLite converter traces it. TFLite has no LayerNorm builtin and litert-torch's lowering of
    torch's op adds four RESHAPEs and a SQUARED_DIFFERENCE per norm (14 ops; this is 9): the
    default one-layer student's full graph goes from 96 to 76 ops and its step graph from 92 to
    66 (same results to 1e-6). LiteRT p50 0.94-0.97x for the full graph (benchmarks/export.py),
    within noise for step updates (benchmarks/incremental.py). ONNX keeps its single
    LayerNormalization node. Hand-written because neither converter has such an option."""
    import types

    import torch

    def forward(self, x):
        centred = x - x.mean(-1, keepdim=True)
        y = centred * torch.rsqrt((centred * centred).mean(-1, keepdim=True) + self.eps)
        return y * self.weight + self.bias if self.weight is not None else y

    norms = [m for m in module.modules() if isinstance(m, torch.nn.LayerNorm)
             and len(m.normalized_shape) == 1 and (m.weight is None) == (m.bias is None)]
    for norm in norms:
        norm.forward = types.MethodType(forward, norm)
    try:
        yield
    finally:
        for norm in norms:
            del norm.forward


def parity(reference, candidate, histories, atol: float, name: str) -> dict:
    """Max |difference| and top-10 agreement on real test histories; raise once, with the list."""
    from edgerec import metrics

    ref, got = reference.scores(histories), candidate.scores(histories)  # column 0: padding
    diff = float(np.abs(ref[:, 1:] - got[:, 1:]).max())
    n = ref.shape[1] - 1
    top_ref = metrics.top_k(ref, 10, n, mask_history=False)
    top_got = metrics.top_k(got, 10, n, mask_history=False)
    agreement = float(metrics.topk_agreement(top_ref, top_got).mean())
    result = {"max_abs_diff": diff, "top10_agreement": agreement, "users": len(histories),
              "atol": atol}
    problems = []
    if not diff <= atol:
        problems.append(f"scores differ by up to {diff:.3g} (tolerance {atol:g})")
    if agreement < 1.0:
        problems.append(f"top-10 agreement {agreement:.4f} < 1")
    if problems:
        raise EdgerecError(f"{name} parity check failed vs PyTorch: {'; '.join(problems)}")
    return result


def top_k_check(graph, folder: Path, files: dict, target, meta: dict, histories) -> dict:
    """Items from each exported top-K file (on the first runtime of its format) vs the same graph
    in PyTorch; raises on any difference."""
    import torch

    from edgerec.runtimes import RUNTIMES, encode

    with torch.inference_mode():
        expected = graph(torch.from_numpy(encode(histories, meta["max_len"], "int64")))[0].numpy()
    result = {}
    for fmt, name in files.items():
        runtime = next(r for r in target.runtimes if RUNTIMES[r.name][0] == fmt)
        if fmt == "onnx":
            import onnxruntime as ort

            session = ort.InferenceSession(str(folder / name), providers=["CPUExecutionProvider"])
            got = session.run(["items"], {"input_ids": encode(histories, meta["max_len"], target.onnx.input_dtype)})[0]
        elif runtime.environment == "isolated":
            from edgerec.envs import python_for, run_runner

            got = run_runner(python_for(runtime.name), runtime.name, folder / name,
                             encode(histories, meta["max_len"], "int32"), target.threads)["scores"]
        else:
            from ai_edge_litert.interpreter import Interpreter

            runner = Interpreter(model_path=str(folder / name)).get_signature_runner()
            got = np.concatenate([runner(input_ids=row[None].astype(np.int32))["output_0"]
                                  for row in encode(histories, meta["max_len"], "int32")])
        same = float((np.asarray(got) == expected).all(axis=1).mean())
        if same < 1.0:
            raise EdgerecError(f"{fmt} top-K on {runtime.name} differs from PyTorch for {1 - same:.1%} of users")
        result[f"{fmt} on {runtime.name}"] = {"users": len(histories), "identical_lists": same}
    return result


def export(model_dir: Path, data_dir: Path, out_dir: Path, config: ExportConfig, *,
           targets_dir: Path | None = None, overwrite: bool = False) -> dict:
    """Write `out_dir` (default dist/<target>/): model file(s), items.json, metadata.json."""
    from edgerec import __version__
    from edgerec.data import load_data
    from edgerec.evaluate import check_compatible, resolve_model_dir
    from edgerec.models import load_model
    from edgerec.runtimes import RUNTIMES, open_model
    from edgerec.targets import load_target

    target = load_target(config.target, targets_dir)
    source = read_manifest(model_dir, ("student", "pruned", "teacher"))
    rec = load_model(resolve_model_dir(model_dir))
    if rec.kind == "text":
        raise EdgerecError(f"{model_dir}: a text teacher needs a tokenizer on the device; distil "
                           "it into an id-based student first (edgerec distill)")
    data = load_data(data_dir)
    check_compatible(rec, data)
    if config.top_k is not None and not 1 <= config.top_k <= rec.num_items:
        raise EdgerecError(f"--top-k must be in [1, {rec.num_items}], got {config.top_k}")
    dtype = target.onnx.input_dtype
    histories = data.examples("test")[0][: config.parity_users]
    step = target.step_model if config.step is None else config.step
    if step:
        from edgerec.incremental import export_steps, layout

        layout(rec)  # refuse a model a step graph would not be exact for, before any work
    graph = scoring_graph(rec, config.top_k)
    plain = scoring_graph(rec, None)  # parity is checked on the scores
    meta = {"target": target.name, "edgerec_version": __version__, "source_stage": source["stage"],
            "kind": rec.kind, "max_len": rec.max_len, "padding_id": 0, "num_items": rec.num_items,
            "inputs": {"input_ids": {"dtype": {"onnx": dtype, "tflite": "int32"},
                                     "shape": {"onnx": ["batch", rec.max_len],
                                               "tflite": [1, rec.max_len]},
                                     "layout": "most recent item last, left-padded with 0"}},
            "outputs": ({"items": "int64 [batch, K] item indices (items.json), best first "
                                   "(TFLite signature output output_0)",
                         "scores": "float32 [batch, K]; items in the input window excluded "
                                   "(TFLite: output_1)"}
                        if config.top_k
                        else {"scores": "float32 [batch, num_items]: column j scores the item "
                                        "with index j + 1 in items.json; higher is better"}),
            "top_k": config.top_k}
    out_dir = Path(out_dir or Path("dist") / target.name)
    with atomic_artifact(out_dir, "export", config=config, inputs={"model": Path(model_dir),
                         "data": Path(data_dir)}, overwrite=overwrite) as (tmp, manifest):
        files, checks, timings = {}, {}, {}
        for fmt in target.formats:
            started = time.perf_counter()
            files[fmt] = f"model.{fmt}"
            if fmt == "onnx":
                export_onnx(graph, tmp / files[fmt], rec.max_len, target.onnx.opset, dtype,
                            config.top_k, meta)
                if config.top_k:  # parity runs on a scores-only twin of the same weights
                    export_onnx(plain, tmp / "parity.onnx", rec.max_len, target.onnx.opset,
                                dtype, None, {})
            else:
                export_tflite(graph, tmp / files[fmt], rec.max_len)
                if config.top_k:
                    export_tflite(plain, tmp / "parity.tflite", rec.max_len)
            timings[fmt] = round(time.perf_counter() - started, 2)
        for runtime in target.runtimes:
            fmt = RUNTIMES[runtime.name][0]
            if fmt not in files:
                raise EdgerecError(f"target {target.name}: runtime {runtime.name} runs {fmt}, "
                                   f"which the profile's formats {list(target.formats)} omit")
            path = tmp / (f"parity.{fmt}" if config.top_k else files[fmt])
            users = histories if fmt == "onnx" else histories[:128]  # batch-1 TFLite is slower
            checks[runtime.name] = parity(rec, open_model(runtime, path, meta, target), users,
                                          target.budgets.parity_atol, f"{fmt} on {runtime.name}")
        top_k_checks = (top_k_check(graph, tmp, files, target, meta, histories[:64])  # what the app reads
                        if config.top_k else None)
        for twin in ("parity.onnx", "parity.tflite"):
            (tmp / twin).unlink(missing_ok=True)
        step_entry = None
        if step:
            started = time.perf_counter()
            step_entry = export_steps(rec, tmp, target, config.top_k, histories, meta)
            timings["step"] = round(time.perf_counter() - started, 2)
        shutil.copy(data.path / "items.json", tmp / "items.json")
        write_json(tmp / "metadata.json", {**meta, "files": files, "parity": checks, "top_k_check": top_k_checks,
                                           **({"step_model": step_entry} if step else {})})
        manifest.update(target=target.to_dict(), files_by_format=files, parity=checks, top_k_check=top_k_checks,
                        step_model=step_entry, seconds=timings,
                        sizes={f: (tmp / p).stat().st_size for f, p in files.items()})
    return manifest
