"""`edgerec export --target T`: the profile's formats (ONNX, TFLite; ExecuTorch when asked with
`formats`), parity-checked.

What the files compute is `graphs` (the full scoring graph, the step graph, the in-graph top-K),
how they are written is `writers`; this stage chooses what the profile asks for, checks every
file on every runtime the profile names against PyTorch (`checks`) and writes the bundle:
model file(s), items.json and metadata.json, and with `step` the incremental step model beside
the full one (`incremental` says how an app drives it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgerec.core.artifacts import atomic_artifact, check_output, read_manifest, write_json, writes_output
from edgerec.core.bundle import write_item_files
from edgerec.core.errors import EdgerecError
from edgerec.core.evaluation import check_compatible, resolve_model_dir
from edgerec.core.files import bundle_integrity
from edgerec.core.graphs import scoring_graph, step_graph, step_layout
from edgerec.core.interactions import load_data
from edgerec.core.models import META, load_model
from edgerec.core.targets import Target
from edgerec.core.version import __version__
from edgerec.devices.emulator import OFF, EmulatedDevice, EmulatorUnavailable, switched_off
from edgerec.devices.incremental import describe
from edgerec.devices.runtimes import Scorer, encode
from edgerec.formats import FORMATS, RUNTIMES, open_model, target_profile
from edgerec.formats.checks import parity, replay, replay_scorer, top_k_check
from edgerec.formats.entries import write_entries


@dataclass(frozen=True)
class ExportConfig:
    target: str
    top_k: int | None = None  # in-graph top-K with the history masked
    parity_users: int = 512  # test users compared against PyTorch
    step: bool | None = None  # also the incremental step model; None: the profile's step_model
    # Also check parity on the aarch64 runtimes of the profile's emulated CPUs ([device] emulate)
    emulate: bool = True
    # The formats to write (each in the profile's formats or offers); None: the profile's formats.
    formats: tuple[str, ...] | None = None
    # Further entry points (formats.entries): rerank.<fmt> scoring this many candidates per call,
    # and rules.<fmt>, the top-K with per-call allowed / boost inputs (needs top_k).
    rerank: int | None = None
    rules: bool = False


def _wanted_entries(rec, config: ExportConfig) -> dict:
    """{entry name: size} the config asks for, checked before any work."""
    wanted = {}
    if config.rerank is not None:
        if not 1 <= config.rerank <= rec.num_items:
            raise EdgerecError(f"--rerank must be in [1, {rec.num_items}] candidates, got {config.rerank}")
        wanted["rerank"] = config.rerank
    if config.rules:
        if config.top_k is None:
            raise EdgerecError("--rules needs the in-graph top-K: add --top-k K")
        wanted["rules"] = None
    return wanted


def _bundle_meta(rec, target, source: dict, top_k: int | None) -> dict:
    """metadata.json's description of the model: what it reads and what it returns, per format."""
    return {
        "target": target.name,
        "edgerec_version": __version__,
        "source_stage": source["stage"],
        "kind": rec.kind,
        "max_len": rec.max_len,
        "padding_id": 0,
        "num_items": rec.num_items,
        "inputs": {
            "input_ids": {
                "dtype": {f: FORMATS[f].input_dtype(target) for f in target.formats},
                "shape": {f: FORMATS[f].input_shape(rec.max_len) for f in target.formats},
                "layout": "most recent item last, left-padded with 0",
            }
        },
        "outputs": (
            {
                "items": "int64 [batch, K] item indices (items.json), best first "
                "(TFLite signature output output_0; ExecuTorch output 0); 0 in the slots past the "
                "last item when fewer than K are outside the window",
                "scores": "float32 [batch, K]; items in the input window excluded; -inf "
                "where items is 0 (TFLite: output_1; ExecuTorch: output 1)",
            }
            if top_k
            else {
                "scores": "float32 [batch, num_items]: column j scores the item "
                "with index j + 1 in items.json; higher is better"
            }
        ),
        "top_k": top_k,
    }


def _wants_step(rec, target, config: ExportConfig) -> bool:
    """Whether the bundle gets a step model; refuses, before any work, a format that cannot hold
    one or a model a step graph would not be exact for."""
    step = target.step_model if config.step is None else config.step
    if step:
        no_step = [f for f in target.formats if not FORMATS[f].writes_step]
        if no_step:
            raise EdgerecError(
                f"{', '.join(no_step)} cannot hold the step model yet: export without --step, or without {no_step[0]}"
            )
        step_layout(rec)
    return bool(step)


def _write_models(rec, tmp: Path, target, top_k: int | None, meta: dict, log) -> tuple[dict, dict]:
    """model.<fmt> for every format of the profile (and, with top-K, a scores-only twin of the same
    weights that parity runs on): ({fmt: file name}, {fmt: seconds})."""
    graph, plain = scoring_graph(rec, top_k), scoring_graph(rec, None)
    files, timings = {}, {}
    for fmt in target.formats:
        started = time.perf_counter()
        log(f"writing {FORMATS[fmt].file_name('model')}")
        files[fmt] = FORMATS[fmt].file_name("model")
        FORMATS[fmt].write_full(graph, tmp / files[fmt], target, rec.max_len, top_k, meta)
        if top_k:
            FORMATS[fmt].write_full(plain, tmp / FORMATS[fmt].file_name("parity"), target, rec.max_len, None, {})
        timings[fmt] = round(time.perf_counter() - started, 2)
    return files, timings


def _host_parity(rec, tmp: Path, files: dict, target, top_k: int | None, meta: dict, histories) -> dict:
    """Each runtime of the profile on this machine against PyTorch, on the scores."""
    checks = {}
    for runtime in target.runtimes:
        fmt = RUNTIMES[runtime.name][0]
        if fmt not in files:
            raise EdgerecError(
                f"target {target.name}: runtime {runtime.name} runs {fmt}, "
                f"which the profile's formats {list(target.formats)} omit"
            )
        path = tmp / (FORMATS[fmt].file_name("parity") if top_k else files[fmt])
        users = histories[: FORMATS[fmt].parity_users]
        checks[runtime.name] = parity(
            rec, open_model(runtime, path, meta, target), users, target.budgets.parity_atol, f"{fmt} on {runtime.name}"
        )
    return checks


def _checks(rec, tmp: Path, files: dict, target, top_k, meta: dict, histories, config: ExportConfig, log):
    """Parity with PyTorch on the host runtimes and on the emulated ARM device, and the top-K
    file's own lists (what the app reads); the parity graphs are removed after."""
    checks = _host_parity(rec, tmp, files, target, top_k, meta, histories)
    arm_parity = (
        emulated_parity(rec, tmp, files, meta, target, histories, config, log) if target.device.emulate else None
    )
    top_k_checks = top_k_check(scoring_graph(rec, top_k), tmp, files, target, meta, histories[:64]) if top_k else None
    for fmt in files:
        (tmp / FORMATS[fmt].file_name("parity")).unlink(missing_ok=True)
    return checks, arm_parity, top_k_checks


def _app_side(rec, tmp: Path, files: dict, target, top_k, meta: dict, histories, step: bool, timings: dict, data):
    """The step model (when wanted), items.json and each format's files for the app."""
    step_entry = None
    if step:
        started = time.perf_counter()
        step_entry = export_steps(rec, tmp, target, top_k, histories, meta)
        timings["step"] = round(time.perf_counter() - started, 2)
    write_item_files(tmp, data.items)
    app_files = {}
    for fmt in files:
        app_files.update(FORMATS[fmt].app_files(tmp, {**meta, "files": files}, step_entry, target, histories[:64]))
    return step_entry, app_files


@writes_output
def export(
    model_dir: Path,
    data_dir: Path,
    out_dir: Path,
    config: ExportConfig,
    *,
    targets_dir: Path | None = None,
    profile: Target | None = None,
    overwrite: bool = False,
    log=print,
) -> dict:
    """Write `out_dir` (default dist/<target>/): model file(s), items.json, metadata.json.
    `profile`: the target profile already loaded (else `config.target` is loaded)."""
    target = target_profile(profile or config.target, targets_dir, config.formats)
    out_dir = Path(out_dir or Path("dist") / target.name)
    check_output(out_dir, "export", overwrite)
    source = read_manifest(model_dir, ("student", "pruned", "teacher"))
    rec = load_model(resolve_model_dir(model_dir))
    data = load_data(data_dir)
    check_compatible(rec, data)
    if rec.kind == "text":
        return _export_text(rec, Path(model_dir), Path(data_dir), data, out_dir, target, config, overwrite, log)
    top_k = config.top_k
    if top_k is not None and not 1 <= top_k <= rec.num_items:
        raise EdgerecError(f"--top-k must be in [1, {rec.num_items}], got {top_k}")
    histories = data.examples("test")[0][: config.parity_users]
    step = _wants_step(rec, target, config)
    wanted = _wanted_entries(rec, config)
    meta = _bundle_meta(rec, target, source, top_k)
    inputs = {"model": Path(model_dir), "data": Path(data_dir)}
    with atomic_artifact(out_dir, "export", config=config, inputs=inputs, overwrite=overwrite) as (tmp, manifest):
        files, timings = _write_models(rec, tmp, target, top_k, meta, log)
        checks, arm_parity, top_k_checks = _checks(rec, tmp, files, target, top_k, meta, histories, config, log)
        step_entry, app_files = _app_side(rec, tmp, files, target, top_k, meta, histories, step, timings, data)
        entries = write_entries(rec, tmp, target, wanted, top_k, histories[:64], meta, log) if wanted else None
        write_json(
            tmp / "metadata.json",
            {
                **meta,
                "files": files,
                "parity": checks,
                "top_k_check": top_k_checks,
                **({"parity_emulated_arm": arm_parity} if arm_parity else {}),
                **({"step_model": step_entry} if step else {}),
                **({"entries": entries} if entries else {}),
                **app_files,
                "integrity": bundle_integrity(tmp),
            },
        )
        manifest.update(
            target=target.to_dict(),
            files_by_format=files,
            parity=checks,
            top_k_check=top_k_checks,
            parity_emulated_arm=arm_parity,
            step_model=step_entry,
            entries=entries,
            seconds=timings,
            sizes={f: (tmp / p).stat().st_size for f, p in files.items()},
        )
    return manifest


def _export_text(rec, model_dir: Path, data_dir: Path, data, out_dir: Path, target, config, overwrite, log) -> dict:
    """A text teacher as the "before" model: ONNX (fp32, optimum's exporter) with its tokenizer
    and rendering, parity-checked against PyTorch. For comparison (`validate --teacher`), not for
    the device: an app would need the tokenizer and every title; distil it into an id student."""
    fmt = next((FORMATS[f] for f in target.formats if FORMATS[f].exports_text), None)
    if fmt is None:
        known = [f for f, v in FORMATS.items() if v.exports_text]
        raise EdgerecError(
            f"target {target.name}: a text teacher exports to {', '.join(known)} only, "
            "and this profile's formats omit it"
        )
    histories = data.examples("test")[0][: min(config.parity_users, 128)]
    folder = resolve_model_dir(model_dir)
    log(f"text teacher -> {fmt.name} (fp32): not a device bundle, the model to compare with")
    with atomic_artifact(
        out_dir, "export", config=config, inputs={"model": model_dir, "data": data_dir}, overwrite=overwrite
    ) as (tmp, manifest):
        started = time.perf_counter()
        scorer = fmt.write_text_model(rec, folder, tmp / f"model.{fmt.name}")
        seconds = round(time.perf_counter() - started, 2)
        check = parity(rec, scorer, histories, target.budgets.parity_atol, f"the text teacher's {fmt.name} file")
        for side in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", META):
            if (folder / side).is_file():
                (tmp / side).write_bytes((folder / side).read_bytes())
        write_item_files(tmp, data.items)
        name, runtime = f"model.{fmt.name}", next(iter(fmt.runtimes))
        meta = {
            "target": target.name,
            "edgerec_version": __version__,
            "source_stage": "teacher",
            "kind": "text",
            "reference_only": True,
            "num_items": rec.num_items,
            "max_tokens": rec.max_len,
            "inputs": "input_ids, attention_mask, token_type_ids from the tokenizer here, reading the "
            f"history as {META} renders it (titles, render)",
            "outputs": {"logits": "float32 [batch, labels]; id2label in the model names the items"},
            "files": {fmt.name: name},
            "parity": {runtime: check},
            "note": "the teacher before distillation, for comparison; not a device bundle",
        }
        write_json(tmp / "metadata.json", {**meta, "integrity": bundle_integrity(tmp)})
        manifest.update(
            target=target.to_dict(),
            files_by_format={fmt.name: name},
            parity={runtime: check},
            seconds={fmt.name: seconds},
            reference_only=True,
            sizes={fmt.name: (tmp / name).stat().st_size},
        )
    return manifest


class _EmulatedScorer(Scorer):
    """A bundle file run by the standalone runner on an emulated ARM CPU, as a Scorer."""

    def __init__(self, device, runtime: str, path: Path, max_len: int, num_items: int, dtype: str):
        self.device, self.runtime, self.path = device, runtime, path
        self.max_len, self.num_items, self.dtype = max_len, num_items, dtype

    def run(self, input_ids):
        return self.device.run_runner(self.runtime, self.path, input_ids)["scores"]

    def scores(self, histories, batch_size: int = 100_000):
        return super().scores(histories, batch_size)  # one emulated process for the whole set


def emulated_parity(rec, folder: Path, files: dict, meta: dict, target, histories, config, log) -> dict | str:
    """The parity check again on the aarch64 build of each runtime, per emulated CPU of the
    profile, on its first `device.users` test users; the same tolerance. Where the machine cannot
    emulate, says why (and warns) instead of passing."""
    if switched_off(config.emulate):
        return f"not run ({OFF})"
    users = histories[: target.device.users]
    result = {}
    for cpu in target.device.emulate:
        try:
            device = EmulatedDevice.open(cpu, log)
        except EmulatorUnavailable as exc:
            log(f"warning: the ARM parity check did not run: {exc}")
            return f"did not run: {exc}"
        for runtime in target.runtimes:
            fmt = RUNTIMES[runtime.name][0]
            log(f"emulated {cpu}: parity of {files[fmt]} on aarch64 {runtime.name}, {len(users)} test users")
            scorer = _EmulatedScorer(
                device,
                runtime.name,
                folder / files[fmt],
                meta["max_len"],
                meta["num_items"],
                FORMATS[fmt].input_dtype(target),
            )
            result[f"{runtime.name} on emulated {cpu}"] = parity(
                rec, scorer, users, target.budgets.parity_atol, f"{fmt} on aarch64 {runtime.name} (emulated {cpu})"
            )
    return result


def export_steps(
    rec, folder: Path, target, top_k: int | None, histories, metadata: dict, roll_keep: int | None = None
) -> dict:
    """Write `step.<fmt>` for every format of the profile into `folder`, replay test histories
    through each runtime's file and require the full PyTorch model's scores (and top-K lists);
    returns metadata.json's `step_model` entry."""
    import torch

    spec = step_layout(rec)
    graph = step_graph(rec, top_k)
    plain = step_graph(rec) if top_k else graph  # parity is checked on the scores
    files = {}
    for fmt in target.formats:
        files[fmt] = FORMATS[fmt].file_name("step")
        twins = [(graph, files[fmt], top_k)] + ([(plain, FORMATS[fmt].file_name("step-parity"), None)] if top_k else [])
        for module, name, k in twins:
            FORMATS[fmt].write_step(module, folder / name, spec, target, k, metadata)
    checks = {}
    for runtime in target.runtimes:
        fmt = RUNTIMES[runtime.name][0]
        dtype = FORMATS[fmt].input_dtype(target)
        users = histories[: FORMATS[fmt].step_parity_users]  # every update is one call
        path = folder / (FORMATS[fmt].file_name("step-parity") if top_k else files[fmt])
        scorer = replay_scorer(runtime, path, spec.window, rec.num_items, dtype, target.threads)
        checks[runtime.name] = parity(
            rec, scorer, users, target.budgets.parity_atol, f"step model ({fmt}) on {runtime.name}, replayed"
        )
        if top_k:
            ids = encode(users, spec.window, dtype)
            with torch.inference_mode():
                expected = scoring_graph(rec, top_k)(torch.from_numpy(ids.astype(np.int64)))[0].numpy()
            got = replay(runtime, folder / files[fmt], ids, target.threads)["scores"]
            same = float((np.asarray(got) == expected).all(axis=1).mean())
            if same < 1.0:
                raise EdgerecError(
                    f"step model top-K ({fmt}) on {runtime.name} differs from the full "
                    f"model for {1 - same:.1%} of users"
                )
            checks[runtime.name]["identical_top_k_lists"] = same
    for fmt in target.formats:
        (folder / FORMATS[fmt].file_name("step-parity")).unlink(missing_ok=True)
    entry = describe(
        spec, {f: FORMATS[f].input_dtype(target) for f in target.formats}, top_k, roll_keep or max(1, spec.window // 2)
    )
    return {"files": files, **entry, "replay_check": checks}
