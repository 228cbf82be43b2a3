"""`edgerec distill`: teacher -> small student."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from edgerec.cli.common import (
    BatchSize,
    Dropout,
    Epochs,
    Heads,
    Hidden,
    Intermediate,
    JsonOut,
    Layers,
    LearningRate,
    MaxLen,
    MaxMinutes,
    Overwrite,
    Patience,
    Precision,
    Schedule,
    Seed,
    WarmupSteps,
    emit_json,
    finite,
    forward,
    table,
    user_errors,
)


def distill(
    teacher: Annotated[Path, typer.Option("--teacher", "-t", help="Teacher artifact.")] = Path("runs/teacher"),
    data: Annotated[Path, typer.Option("--data", "-d", help="Data artifact.")] = Path("runs/data"),
    out: Annotated[Path, typer.Option("--out", "-o", help="Student artifact to write.")] = Path("runs/student"),
    hidden: Hidden = 64,
    layers: Layers = 1,
    heads: Heads = 2,
    intermediate: Intermediate = 256,
    max_len: MaxLen = 200,
    dropout: Dropout = 0.2,
    max_params: Annotated[
        Optional[int],
        typer.Option(
            min=1000,
            max=10**10,
            help="Pick the largest default-shaped student with at most this many parameters "
            "(overrides the shape options).",
        ),
    ] = None,
    max_size_mb: Annotated[
        Optional[float],
        typer.Option(
            min=0.001,
            max=100_000.0,
            callback=finite,
            help="Pick the largest default-shaped student whose int8 weights fit in this many MB.",
        ),
    ] = None,
    alpha: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, callback=finite, help="Weight of the teacher term (0 = ground truth only)."),
    ] = 0.5,
    temperature: Annotated[
        float,
        typer.Option(min=0.01, max=100.0, callback=finite, help="Softening temperature for the teacher's scores."),
    ] = 2.0,
    top_k: Annotated[
        int, typer.Option(min=1, max=10**7, help="Teacher items cached per position (the rest is one bin).")
    ] = 100,
    kd_positions: Annotated[
        int, typer.Option(min=1, max=8192, help="Prefixes per user the teacher scores, for masked and text teachers.")
    ] = 16,
    tail_boost: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=10.0,
            callback=finite,
            help="Counter popularity collapse: reweight the teacher's soft targets by (popularity + 1)^-B (0 = off).",
        ),
    ] = 0.0,
    item_rank: Annotated[
        Optional[int],
        typer.Option(
            min=1,
            max=8192,
            help="Factorised item table: items get rank-R vectors and one shared R x hidden projection "
            "(smaller for large catalogues).",
        ),
    ] = None,
    student_kind: Annotated[
        Literal["causal", "masked"],
        typer.Option(
            help="causal: attention to the past only, every position trains (SASRec-style; needed for "
            "a step model). masked: bidirectional, [MASK] appended (BERT4Rec-style)."
        ),
    ] = "causal",
    positions: Annotated[
        Literal["end", "start"],
        typer.Option(
            help="Position ids: 'end' (newest item at the last position) or 'start' (counted from the "
            "window's first item; needed to export an incremental step model)."
        ),
    ] = "end",
    init: Annotated[
        str,
        typer.Option(
            help="teacher: start from the teacher's item table, positions, output layer and evenly "
            "spaced layers when the student has its width and layer shape (else random, said "
            "below the table); random: random weights; PATH: the same copy from that id model "
            "artifact (e.g. a smaller model of the student's width when the teacher is wider)."
        ),
    ] = "teacher",
    keep: Annotated[
        Optional[float],
        typer.Option(
            min=0.0,
            max=2.0,
            callback=finite,
            help="If the student keeps less than this share of the teacher's validation NDCG@10, distil "
            "the next larger default shape (a second layer, then more width; never more parameters "
            "than the teacher) and keep the first that does, or the last tried.",
        ),
    ] = None,
    grow: Annotated[int, typer.Option(min=0, max=10, help="With --keep: at most this many larger students.")] = 2,
    epochs: Epochs = 200,
    batch_size: BatchSize = 64,
    lr: LearningRate = 1e-3,
    patience: Patience = 20,
    max_minutes: MaxMinutes = None,
    seed: Seed = 0,
    precision: Precision = "fp32",
    warmup_steps: WarmupSteps = 0,
    schedule: Schedule = "constant",
    overwrite: Overwrite = False,
    json_out: JsonOut = False,
) -> None:
    """Distil the teacher into a small causal BERT student (item table tied to the output layer).

    Loss: (1 - alpha) x cross-entropy on the true next item + alpha x T^2 x KL to the teacher's
    softened scores over the whole catalogue (its top-K items plus one bin for the rest). The
    teacher's targets are computed once and cached by content hash; any run with the same teacher
    and data reuses them. Runs unchanged under torchrun / accelerate launch.
    """
    options = dict(locals())
    with user_errors():
        from edgerec.api import distill as run

        manifest = forward(run, options)
    if manifest is None:
        return
    if json_out:
        emit_json(manifest)
        return
    print_student(manifest, out)


def print_student(manifest: dict, out: Path) -> None:
    """The student against the teacher on the test users, how it trained and how it started."""
    m, p, t = manifest["metrics"], manifest["parameters"], manifest["training"]
    rows = [("parameters (student / teacher)", f"{p['student']:,} / {p['teacher']:,}")]
    for name in ("HR@10", "NDCG@10", "MRR"):
        rows.append((f"{name} (student / teacher)", f"{m['test'][name]:.4f} / {m['teacher_test'][name]:.4f}"))
    rows += [
        ("top-10 agreement with teacher", f"{m['test']['top10_agreement']:.3f}"),
        ("epochs (best)", f"{t['epochs_run']} ({t['best_epoch']})"),
        ("teacher targets", f"{manifest['teacher_targets']['seconds']:.0f} s"),
        ("training time", f"{t['seconds']:.0f} s"),
    ]
    start = manifest.get("init", {})
    if start.get("from", "random") != "random":
        rows.append(("started from", f"{start['from']} (its layers {', '.join(map(str, start['layers']))})"))
    sizing = manifest.get("sizing")
    if sizing:
        tried = ", ".join(
            f"{t['shape']['layers']}x{t['shape']['hidden']}: {t['kept']:.3f}{' (short)' if t['short'] else ''}"
            for t in sizing["tries"]
        )
        rows.append(
            (
                "kept of teacher's valid NDCG@10",
                f"{tried} ({'met' if sizing['met'] else 'NOT met'}: >= {sizing['keep']:.3f})",
            )
        )
    table(f"student -> {out} (test, full ranking)", rows)
    if start.get("why"):
        typer.echo(f"note: the student started from random weights: {start['why']}")
