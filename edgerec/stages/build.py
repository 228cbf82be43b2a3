"""`edgerec build --target T`: data -> teacher -> distill -> export -> quantize -> validate.

Every stage writes the same artifact its own command writes, under `work` (default runs/), and
the app's bundle lands in dist/<target>/. A stage is skipped when its artifact exists and was made
from the same inputs (content hashes in the manifests) with the same config and target profile,
so a second build with nothing changed only re-validates.

Prune runs when `sparsity` is set (off by default: its recovery distillation would take the
default build past 15 minutes on 2 cores; see benchmarks/prune.py for what it gives).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from edgerec.core.artifacts import artifact_hash, check_folder, jsonable, read_artifact, read_manifest
from edgerec.core.datasets import BUILTIN, get_builtin
from edgerec.core.distillation import DistillConfig, init_input
from edgerec.core.errors import EdgerecError
from edgerec.core.files import sha256_file
from edgerec.core.tables import table_kind
from edgerec.core.training import TrainConfig
from edgerec.formats import target_profile
from edgerec.stages.data import DataConfig, make_data
from edgerec.stages.distill import distill, keep_for_target
from edgerec.stages.export import ExportConfig, export
from edgerec.stages.prune import PruneConfig, prune
from edgerec.stages.quantize import QuantizeConfig, quantize
from edgerec.stages.teacher import TEACHER_TRAIN, TeacherConfig, train_teacher
from edgerec.stages.validate import ValidateConfig, validate


@dataclass(frozen=True)
class BuildConfig:
    target: str
    dataset: str = "movielens-100k"  # used when no interactions file is given
    interactions: str | None = None
    teacher: str | None = None  # an existing teacher artifact instead of training one
    # Training budgets are epochs, so a build gives the same model on a busy and an idle machine
    # (early stopping on validation NDCG@10 is deterministic too). In the default build the 2.1M
    # teacher's best epoch was 21 of 36 (patience 15) and the student's 50 of its 60.
    teacher_epochs: int = 60
    distill_epochs: int = 60
    # Forward passes of both trainings: bf16 where the CPU has bf16 dot products, else fp32
    # (benchmarks/precision.py: equivalent accuracy). A given machine always takes the same path.
    precision: str = "auto"
    # Wall-clock guards only: when one cuts training short the build says so (the model then
    # depends on the machine's speed).
    teacher_minutes: float | None = 30.0
    distill_minutes: float | None = 30.0
    sparsity: float | None = None  # prune this share of heads and FFN neurons (None: no prune stage)
    work: str = "runs"
    dist: str = "dist"
    emulate: bool = True  # validate on the profile's emulated ARM CPUs too ([device] emulate)
    # Share of the teacher's validation NDCG@10 the student must keep, else a larger one is
    # distilled (DistillConfig.keep). None: the target's (keep_for_target); 0: never grow.
    keep: float | None = None
    # The formats the bundle holds (each in the profile's formats or offers); None: the profile's.
    formats: tuple[str, ...] | None = None


# Options added after artifacts were already being written, with what an artifact written
# before them did: a manifest without the key was made that way (so `init` is "random", not
# today's default, and an old student is rebuilt).
ADDED_OPTIONS = {"schedule": "constant", "init": "random", "keep": None, "grow": 2}


def _as_before(stored, wanted):
    """`stored` (a manifest's config) with ADDED_OPTIONS it lacks filled in where `wanted` has them."""
    if not isinstance(stored, dict) or not isinstance(wanted, dict):
        return stored
    filled = {k: _as_before(v, wanted.get(k)) for k, v in stored.items()}
    filled.update({k: ADDED_OPTIONS[k] for k in wanted if k in ADDED_OPTIONS and k not in stored})
    return filled


def is_current(out_dir: Path, stage: str, config, inputs: dict[str, Path], extra: dict | None = None) -> bool:
    """The artifact exists, is of `stage`, and was made with this config from these inputs."""
    try:
        manifest = read_manifest(out_dir, stage)
    except EdgerecError:
        return False
    wanted = jsonable(config)
    if _as_before(manifest.get("config"), wanted) != wanted:
        return False
    try:
        current = {name: artifact_hash(path) for name, path in inputs.items()}
    except EdgerecError:
        return False
    if {k: v.get("hash") for k, v in manifest.get("inputs", {}).items()} != current:
        return False
    return all(manifest.get(k) == jsonable(v) for k, v in (extra or {}).items())


def _data_current(out_dir: Path, config, dataset: str | None, interactions: Path | None) -> bool:
    try:
        manifest = read_manifest(out_dir, "data")
    except EdgerecError:
        return False
    stored = manifest.get("config", {})
    wanted = jsonable(config)
    same = all(stored.get(k) == wanted[k] for k in ("min_interactions", "drop_duplicates", "calibration"))
    if interactions is not None:
        source = manifest.get("sources", {}).get("interactions", {})
        return same and source.get("sha256") == sha256_file(interactions)
    return same and manifest.get("dataset") == dataset


def _pruned_from(pruned: Path, student: Path) -> bool:
    """The pruned artifact was made from this very student (its content hash)."""
    try:
        return read_manifest(pruned)["pruning"].get("source_hash") == artifact_hash(student)
    except (EdgerecError, KeyError):
        return False


def _cut_short(path: Path) -> str | None:
    """Why a training stage's result depends on the machine's speed, if its wall-clock guard
    stopped it before its epoch budget or early stopping did."""
    try:
        training = read_manifest(path).get("training", {})
    except EdgerecError:
        return None
    if training.get("stopped") != "time-budget":
        return None
    return (
        f"the wall-clock guard stopped training after {training.get('epochs_run')} epochs, before "
        "its epoch budget or early stopping: on a faster or idler machine the model would differ"
    )


class _Stages:
    """Runs or reuses each stage, logs `[i/6] name ...` and records what happened."""

    total = 6

    def __init__(self, log):
        self.log, self.done = log, {}

    def run(self, index: int, name: str, path: Path, current: bool, make) -> None:
        label = f"[{index}/{self.total}] {name:<9}"
        if current:
            self.log(f"{label} reused  {path}")
            self.done[name] = {"status": "reused", "seconds": 0.0, "path": str(path)}
            return
        self.log(f"{label} running -> {path}")
        started = time.perf_counter()
        make()
        seconds = time.perf_counter() - started
        self.log(f"{label} done in {seconds:.1f} s")
        self.done[name] = {"status": "built", "seconds": round(seconds, 1), "path": str(path)}
        cut = _cut_short(path)
        if cut:
            self.log(f"{label} warning: {cut}")
            self.done[name]["warning"] = cut

    def note(self, index: str, name: str, status: str, path: Path | None, why: str) -> None:
        self.log(f"[{index}/{self.total}] {name:<9} {why}")
        self.done[name] = {"status": status, "seconds": 0.0, "path": str(path) if path else None}


def _paths(config: BuildConfig, target) -> dict[str, Path]:
    work = check_folder(config.work, "the intermediate artifacts")
    dist = check_folder(config.dist, "the app bundles")
    return {
        "data": work / "data",
        "teacher": Path(config.teacher) if config.teacher else work / "teacher",
        "student": work / "student",
        "pruned": work / "pruned",
        "fp32": work / f"export-{target.name}",
        "int8": dist / target.name,
    }


def _source(config: BuildConfig) -> tuple[Path | None, str]:
    """(interactions file or None, built-in dataset name), every input checked before the first
    stage writes anything."""
    interactions = Path(config.interactions) if config.interactions else None
    dataset = config.dataset
    if interactions is not None and not interactions.exists() and str(interactions) in BUILTIN:
        interactions, dataset = None, str(interactions)  # `edgerec build movielens-100k`
    if interactions is not None:
        table_kind(interactions)
    else:
        get_builtin(dataset)
    if config.teacher:
        read_artifact(config.teacher, "teacher")
    return interactions, dataset


def _data_and_teacher(config: BuildConfig, paths: dict, stages: _Stages, teacher_config) -> None:
    interactions, dataset = _source(config)
    data_config = DataConfig()
    stages.run(
        1,
        "data",
        paths["data"],
        _data_current(paths["data"], data_config, dataset, interactions),
        lambda: make_data(
            paths["data"],
            interactions=interactions,
            dataset=None if interactions else dataset,
            config=data_config,
            overwrite=True,
        ),
    )
    if config.teacher:
        read_manifest(paths["teacher"], "teacher")
        stages.note("2", "teacher", "given", paths["teacher"], f"given   {paths['teacher']}")
        return
    teacher_config = teacher_config or TeacherConfig(
        train=replace(
            TEACHER_TRAIN, epochs=config.teacher_epochs, max_minutes=config.teacher_minutes, precision=config.precision
        )
    )
    stages.run(
        2,
        "teacher",
        paths["teacher"],
        is_current(paths["teacher"], "teacher", teacher_config, {"data": paths["data"]}),
        lambda: train_teacher(paths["data"], paths["teacher"], teacher_config, overwrite=True),
    )


def _student(config: BuildConfig, target, paths: dict, stages: _Stages, distill_config, log) -> Path:
    """Distill (and prune with --sparsity): the model the bundle is exported from."""
    # A profile that ships a step model needs positions counted from the window start.
    keep = keep_for_target(target) if config.keep is None else (config.keep or None)
    distill_config = distill_config or DistillConfig(
        train=TrainConfig(epochs=config.distill_epochs, max_minutes=config.distill_minutes, precision=config.precision),
        positions="start" if target.step_model else "end",
        keep=keep,
    )
    distill_inputs = {"data": paths["data"], "teacher": paths["teacher"], **init_input(distill_config.init)}
    stages.run(
        3,
        "distill",
        paths["student"],
        is_current(paths["student"], "student", distill_config, distill_inputs),
        lambda: distill(paths["teacher"], paths["data"], paths["student"], distill_config, overwrite=True, log=log),
    )
    if not config.sparsity:
        stages.note("-", "prune", "skipped", None, "skipped (pass --sparsity to prune heads and FFN neurons)")
        return paths["student"]
    prune_config = PruneConfig(sparsity=config.sparsity)
    prune_inputs = {"data": paths["data"], "teacher": paths["teacher"]}
    stages.run(
        3,
        "prune",
        paths["pruned"],
        is_current(paths["pruned"], "pruned", prune_config, prune_inputs, {})
        and _pruned_from(paths["pruned"], paths["student"]),
        lambda: prune(
            paths["student"], paths["teacher"], paths["data"], paths["pruned"], prune_config, overwrite=True, log=log
        ),
    )
    return paths["pruned"]


def _bundle(config: BuildConfig, target, model: Path, paths: dict, stages: _Stages, log) -> None:
    """Export and quantize: the app's bundle in dist/<target>/."""
    export_config = ExportConfig(target=target.name, emulate=config.emulate, formats=config.formats)
    profile = {"target": target.to_dict()}
    stages.run(
        4,
        "export",
        paths["fp32"],
        is_current(paths["fp32"], "export", export_config, {"model": model, "data": paths["data"]}, profile),
        lambda: export(model, paths["data"], paths["fp32"], export_config, profile=target, overwrite=True, log=log),
    )
    quantize_config = QuantizeConfig(target=target.name, emulate=config.emulate)
    inputs = {"bundle": paths["fp32"], "data": paths["data"], "calibration": paths["data"] / "calibration.npz"}
    stages.run(
        5,
        "quantize",
        paths["int8"],
        is_current(paths["int8"], "quantize", quantize_config, inputs, profile),
        lambda: quantize(
            paths["fp32"], paths["data"], paths["int8"], quantize_config, profile=target, overwrite=True, log=log
        ),
    )


def build(
    config: BuildConfig, *, targets_dir: Path | None = None, teacher_config=None, distill_config=None, log=print
) -> dict:
    """Run (or reuse) every stage; returns {stage: {"status", "seconds", "path"}} and the report.
    `teacher_config` / `distill_config` replace the defaults (shapes, training) from Python."""
    # loaded once, and fail fast: a bad name, a format the profile does not offer, a missing extra
    target = target_profile(config.target, targets_dir, config.formats)
    paths = _paths(config, target)
    stages = _Stages(log)
    _data_and_teacher(config, paths, stages, teacher_config)
    model = _student(config, target, paths, stages, distill_config, log)
    _bundle(config, target, model, paths, stages, log)
    started = time.perf_counter()
    log(f"[6/{stages.total}] validate  {paths['int8']} on {', '.join(r.name for r in target.runtimes)}")
    report = validate(
        paths["int8"],
        paths["data"],
        ValidateConfig(target=target.name, emulate=config.emulate),
        teacher=paths["teacher"],
        student=model,
        compare={"fp32": paths["fp32"]},
        profile=target,
        log=lambda m: log(m) if m.startswith(("emulator:", "emulated ", "warning:")) else None,
    )
    stages.done["validate"] = {
        "status": "built",
        "seconds": round(time.perf_counter() - started, 1),
        "path": str(paths["int8"] / "report.html"),
    }
    return {"stages": stages.done, "report": report, "bundle": str(paths["int8"])}
