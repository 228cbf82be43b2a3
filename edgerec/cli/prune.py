"""`edgerec prune`: remove heads and FFN neurons from a student, then recover by distillation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgerec.cli.common import (
    JsonOut,
    MaxMinutes,
    Overwrite,
    emit_json,
    finite,
    forward,
    table,
    user_errors,
)
from edgerec.cli.targets import TargetsDir


def prune(
    student: Annotated[Path, typer.Option("--student", "-s", help="Student artifact (edgerec distill).")] = Path(
        "runs/student"
    ),
    teacher: Annotated[Path, typer.Option("--teacher", "-t", help="Teacher artifact, for recovery.")] = Path(
        "runs/teacher"
    ),
    data: Annotated[Path, typer.Option("--data", "-d", help="Data artifact.")] = Path("runs/data"),
    out: Annotated[Path, typer.Option("--out", "-o", help="Pruned artifact to write.")] = Path("runs/pruned"),
    sparsity: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=0.99,
            callback=finite,
            help="Share of attention heads and of FFN neurons removed from every layer, in [0, 1).",
        ),
    ] = 0.5,
    embedding_rank: Annotated[
        Optional[int],
        typer.Option(
            min=1,
            max=8192,
            help="Also factorise the item table to this rank (truncated SVD, E ~= A W^T), then recover.",
        ),
    ] = None,
    drop_layers: Annotated[
        int, typer.Option(min=0, max=63, help="Also remove this many whole layers (least important first).")
    ] = 0,
    target: Annotated[
        Optional[str],
        typer.Option(
            "--target",
            "-T",
            help="Fit this profile's size budget: after head/FFN pruning, factorise the item "
            "table to the largest rank whose int8 model fits max_model_mb.",
        ),
    ] = None,
    targets_dir: TargetsDir = None,
    iterations: Annotated[
        int, typer.Option(min=1, max=100, help="Prune in this many steps, recovering after each.")
    ] = 1,
    recovery_epochs: Annotated[int, typer.Option(min=1, max=100_000, help="Maximum recovery epochs per step.")] = 60,
    recovery_patience: Annotated[
        int,
        typer.Option(
            min=1, max=100_000, help="Recovery stops after this many epochs without a better validation NDCG@10."
        ),
    ] = 10,
    max_minutes: MaxMinutes = 4.0,
    overwrite: Overwrite = False,
    json_out: JsonOut = False,
) -> None:
    """Rank attention heads and FFN neurons by their estimated effect on the validation loss
    (|activation x gradient|), remove the least important from every layer physically (smaller
    matrices, a standard HF checkpoint), then recover with a short distillation from the teacher
    using the cached teacher targets. Writes an artifact that export, quantize and validate take
    like a student."""
    options = dict(locals())
    with user_errors():
        from edgerec.api import prune as run

        manifest = forward(run, options)
    if manifest is None:  # not rank 0 under torchrun
        return
    if json_out:
        emit_json(manifest)
        return
    p = manifest["pruning"]
    table(
        f"pruned -> {out}",
        [
            ("parameters", f"{p['parameters_before']:,} -> {p['parameters_after']:,}"),
            (
                "exported ONNX (fp32)",
                f"{p['exported_onnx_bytes_before'] / 1e6:.3f} -> {p['exported_onnx_bytes_after'] / 1e6:.3f} MB",
            ),
            ("heads / FFN neurons per layer", f"{p['heads_per_layer']} / {p['ffn_per_layer']}"),
            ("test NDCG@10 before", f"{p['test_before']['NDCG@10']:.4f}"),
            ("test NDCG@10 after recovery", f"{manifest['metrics']['test']['NDCG@10']:.4f}"),
            ("minutes", f"{p['seconds'] / 60:.1f}"),
        ],
    )
