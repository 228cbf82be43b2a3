"""The stages that make and prove the app's bundle, as functions: `edgerec.export`,
`edgerec.quantize`, `edgerec.validate`, and `edgerec.build`, which runs every stage.

Each takes the options of its command (`edgerec export --help`, ...) under the same names and
returns what the command prints with `--json`: the bundle's manifest, or the validation report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from edgerec.stages import build as build_stage
from edgerec.stages import export as export_stage
from edgerec.stages import quantize as quantize_stage
from edgerec.stages import validate as validate_stage


def _optional_path(value: str | Path | None) -> Path | None:
    return Path(value) if value is not None else None


def _formats(value: Sequence[str] | None) -> tuple[str, ...] | None:
    return tuple(dict.fromkeys(value)) if value is not None else None


def export(
    target: str,
    model: str | Path = "runs/student",
    data: str | Path = "runs/data",
    out: str | Path | None = None,
    *,
    top_k: int | None = None,
    step: bool | None = None,
    emulate: bool = True,
    formats: Sequence[str] | None = None,
    rerank: int | None = None,
    rules: bool = False,
    targets_dir: str | Path | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
    """Write the bundle for `target` (default folder dist/<target>): each format's model file,
    items.json and metadata.json, every file checked against PyTorch on every runtime the
    profile names for it (max |score difference| and top-10 agreement on real test users) and,
    with `emulate`, on the profile's emulated ARM CPUs. A mismatch fails the export and leaves
    nothing behind. `formats` picks from the profile's formats and offers (e.g. executorch);
    `top_k` returns the K best unseen items from the graph itself; `step` adds the incremental
    step model (default: the profile's step_model). Two further entry points, each its own
    file: `rerank=C` writes rerank.<fmt>, which scores the C candidates an app passes (its
    cost does not grow with the catalogue), and `rules` writes rules.<fmt>, the top-K with
    per-call `allowed` and `boost` inputs (needs `top_k`); metadata.json's `entries` describes them.

    Examples:
        The ONNX file of the arm64 profile, without the emulated device:

        >>> manifest = edgerec.export("arm64", work / "student", work / "data", work / "dist" / "arm64",
        ...                           formats=["onnx"], emulate=False, log=quiet)
        >>> manifest["files_by_format"]
        {'onnx': 'model.onnx'}
    """
    config = export_stage.ExportConfig(
        target=target, top_k=top_k, step=step, emulate=emulate, formats=_formats(formats), rerank=rerank, rules=rules
    )
    return export_stage.export(
        Path(model),
        Path(data),
        _optional_path(out),
        config,
        targets_dir=_optional_path(targets_dir),
        overwrite=overwrite,
        log=log,
    )


def quantize(
    target: str,
    bundle: str | Path | None = None,
    data: str | Path = "runs/data",
    out: str | Path | None = None,
    *,
    calibration: str | Path | None = None,
    calibration_method: str | None = None,
    max_ndcg_drop: float | None = None,
    emulate: bool = True,
    targets_dir: str | Path | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
    """Quantize an exported bundle (default dist/<target>) to int8, into `out` (default
    dist/<target>-int8), in the form the profile allows that runs cheapest on ARM.

    Each int8 form the profile lists is made with the calibration set and fitted to the
    accuracy tolerance (validation NDCG@10 against the fp32 file on the same runtime; the most
    sensitive layers stay in float when the drop exceeds `max_ndcg_drop`) and to the profile's
    top-10 agreement floor. With `emulate` and an emulated CPU in the profile, each form's ARM
    instructions per call are counted and the cheapest that fits ships; otherwise the first
    that fits. The manifest lists every form and why one was chosen.

    Examples:
        The bundle exported above:

        >>> manifest = edgerec.quantize("arm64", work / "dist" / "arm64", work / "data",
        ...                             work / "dist" / "arm64-int8", emulate=False, log=quiet)
        >>> manifest["quantization"]["onnx"]["scheme"] in ("matmul_nbits", "weight_only", "dynamic", "static")
        True
    """
    config = quantize_stage.QuantizeConfig(
        target=target,
        calibration_method=calibration_method,
        max_ndcg_drop=max_ndcg_drop,
        calibration_file=str(calibration) if calibration else None,
        emulate=emulate,
    )
    bundle = Path(bundle) if bundle is not None else Path("dist") / target
    return quantize_stage.quantize(
        bundle,
        Path(data),
        _optional_path(out),
        config,
        targets_dir=_optional_path(targets_dir),
        overwrite=overwrite,
        log=log,
    )


def validate(
    target: str,
    bundle: str | Path | None = None,
    data: str | Path = "runs/data",
    *,
    teacher: str | Path | None = None,
    student: str | Path | None = None,
    warmup: int = 50,
    users: int | None = None,
    device: str | None = None,
    device_python: str = "python3",
    ssh_key: str | Path | None = None,
    report: str | Path | None = None,
    targets_dir: str | Path | None = None,
    allow_modified: bool = False,
    emulate: bool = True,
    public_key: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Run the bundle (default dist/<target>) on every runtime the target names, each in a
    separate process as an app would, one batch-1 call per test user; check the profile's
    budgets; write report.json and report.html (into `report`, default the bundle).

    The report holds HR/NDCG/MRR next to the teacher and the fp32 student (found through the
    bundle's manifests, or `teacher` / `student`), p50-p99 latency, load time, peak memory, size,
    the emulated ARM device's instructions per call (`emulate`), and `passed`. `device`
    (ssh://user@host[:port]) runs it on a remote device; `public_key` verifies the bundle's
    signature first.

    Examples:
        The int8 bundle above, on this machine's runtimes:

        >>> result = edgerec.validate("arm64", work / "dist" / "arm64-int8", work / "data", warmup=1,
        ...                           emulate=False, log=quiet)
        >>> sorted(result["runtimes"]), isinstance(result["passed"], bool)
        (['onnxruntime'], True)
    """
    config = validate_stage.ValidateConfig(
        target=target,
        warmup=warmup,
        users=users,
        device=device,
        device_python=device_python,
        ssh_key=str(ssh_key) if ssh_key else None,
        allow_modified=allow_modified,
        emulate=emulate,
        public_key=str(public_key) if public_key else None,
    )
    return validate_stage.validate(
        Path(bundle) if bundle is not None else Path("dist") / target,
        Path(data),
        config,
        teacher=_optional_path(teacher),
        student=_optional_path(student),
        targets_dir=_optional_path(targets_dir),
        report_dir=_optional_path(report),
        log=log,
    )


def build(
    target: str = "arm64",
    interactions: str | Path | None = None,
    *,
    dataset: str = "movielens-100k",
    teacher: str | Path | None = None,
    teacher_epochs: int = 60,
    distill_epochs: int = 60,
    teacher_minutes: float = 30.0,
    distill_minutes: float = 30.0,
    sparsity: float | None = None,
    keep: float | None = None,
    precision: str = "auto",
    work: str | Path = "runs",
    dist: str | Path = "dist",
    emulate: bool = True,
    formats: Sequence[str] | None = None,
    targets_dir: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """data -> teacher -> distill -> [prune] -> export -> quantize -> validate for one target.

    Each stage writes the artifact its own function would (under `work`); a stage whose
    artifact was made from the same inputs with the same settings is reused, so a second build
    with nothing changed only re-validates. The app embeds `dist/<target>/`. Returns the stages
    run (seconds, reused or not), the bundle's path and the validation report.

    Examples:
        A second call with nothing changed reuses every artifact and validates again:

        >>> result = edgerec.build("arm64", interactions, teacher_epochs=1, distill_epochs=1, keep=0,
        ...                        work=work / "build", dist=work / "build-dist", formats=["onnx"],
        ...                        emulate=False, log=quiet)
        >>> again = edgerec.build("arm64", interactions, teacher_epochs=1, distill_epochs=1, keep=0,
        ...                       work=work / "build", dist=work / "build-dist", formats=["onnx"],
        ...                       emulate=False, log=quiet)
        >>> {name: stage["status"] for name, stage in again["stages"].items()}
        {'data': 'reused', 'teacher': 'reused', 'distill': 'reused', 'prune': 'skipped',
         'export': 'reused', 'quantize': 'reused', 'validate': 'built'}
    """
    config = build_stage.BuildConfig(
        target=target,
        dataset=dataset,
        interactions=str(interactions) if interactions else None,
        teacher=str(teacher) if teacher else None,
        teacher_epochs=teacher_epochs,
        distill_epochs=distill_epochs,
        teacher_minutes=teacher_minutes,
        distill_minutes=distill_minutes,
        sparsity=sparsity,
        precision=precision,
        work=str(work),
        dist=str(dist),
        emulate=emulate,
        keep=keep,
        formats=_formats(formats),
    )
    return build_stage.build(config, targets_dir=_optional_path(targets_dir), log=log)
