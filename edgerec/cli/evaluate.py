"""`edgerec evaluate`: full-ranking metrics of a model on a data artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from edgerec.cli.common import (
    JsonOut,
    emit_json,
    metric_rows,
    table,
    user_errors,
)
from edgerec.core.errors import EdgerecError


def evaluate(
    model: Annotated[Path, typer.Argument(help="Teacher or student artifact (or its model/ folder).")],
    data: Annotated[Path, typer.Option("--data", "-d", help="Data artifact.")] = Path("runs/data"),
    split: Annotated[
        Literal["test", "valid"], typer.Option(help="'test' (last item) or 'valid' (second-last).")
    ] = "test",
    keep_history: Annotated[
        bool, typer.Option(help="Rank items the user already has too (by default they are masked out).")
    ] = False,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write the report as JSON here.")] = None,
    json_out: JsonOut = False,
) -> None:
    """Full-ranking HR@K, NDCG@K and MRR of a model, with 95% per-user bootstrap intervals.

    Every item in the catalogue is ranked (no sampled negatives); items already in the user's
    history are masked unless --keep-history."""
    with user_errors():
        from edgerec.core.artifacts import check_file_output, check_writable, write_json
        from edgerec.core.evaluation import evaluate_artifact, public

        if out is not None:
            check_file_output(out, "the evaluation report")
            check_writable(out.parent, "the evaluation report")
        report = public(evaluate_artifact(model, data, split, mask_history=not keep_history))
        if out is not None:
            try:
                out.parent.mkdir(parents=True, exist_ok=True)
                write_json(out, report)
            except OSError as exc:
                raise EdgerecError(f"{out}: cannot write the report ({exc.strerror})") from None
    if json_out:
        emit_json(report)
        return
    table(
        f"{model} on {data} ({split}, {report['users']} users, full ranking)",
        metric_rows(report["metrics"]) + [("parameters", f"{report['parameters']:,}")],
    )
