"""`edgerec build --target T`: the whole pipeline, reusing what is up to date."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgerec.cli.common import (
    Formats,
    JsonOut,
    Precision,
    emit_json,
    finite,
    format_list,
    forward,
    plain_table,
    user_errors,
)
from edgerec.cli.targets import TargetsDir
from edgerec.cli.validate import print_beyond_and_budgets, print_emulated


def build(
    target: Annotated[str, typer.Option("--target", "-T", help="Target profile (edgerec targets list).")] = "arm64",
    interactions: Annotated[
        Optional[Path],
        typer.Argument(help="Your interactions file (user, item, timestamp columns); omit it for --dataset."),
    ] = None,
    dataset: Annotated[str, typer.Option(help="Built-in dataset used when no file is given.")] = "movielens-100k",
    teacher: Annotated[
        Optional[Path],
        typer.Option(
            "--teacher", "-t", help="Use this teacher artifact (trained or imported) instead of training one."
        ),
    ] = None,
    teacher_epochs: Annotated[
        int, typer.Option(min=1, max=100_000, help="Epoch budget of the teacher (early stopping may end it sooner).")
    ] = 60,
    distill_epochs: Annotated[
        int, typer.Option(min=1, max=100_000, help="Epoch budget of distillation (early stopping may end it sooner).")
    ] = 60,
    teacher_minutes: Annotated[
        float,
        typer.Option(
            min=0.01,
            max=100_000.0,
            callback=finite,
            help="Wall-clock guard for the teacher; the build warns when it cuts training short.",
        ),
    ] = 30.0,
    distill_minutes: Annotated[
        float,
        typer.Option(
            min=0.01,
            max=100_000.0,
            callback=finite,
            help="Wall-clock guard for distillation; the build warns when it cuts training short.",
        ),
    ] = 30.0,
    sparsity: Annotated[
        Optional[float],
        typer.Option(
            min=0.0,
            max=0.99,
            callback=finite,
            help="Add the prune stage: remove this share of attention heads and FFN neurons, then recover "
            "(off by default; about 4 more minutes).",
        ),
    ] = None,
    keep: Annotated[
        Optional[float],
        typer.Option(
            min=0.0,
            max=2.0,
            callback=finite,
            help="Share of the teacher's validation NDCG@10 the student must keep, else a larger one "
            "(a second layer, then more width, up to the teacher's size) is distilled. Default: the "
            "target's min_ndcg_retained with room for int8; 0: never grow.",
        ),
    ] = None,
    precision: Precision = "auto",
    work: Annotated[Path, typer.Option(help="Folder for the intermediate artifacts.")] = Path("runs"),
    dist: Annotated[Path, typer.Option(help="Folder for the app bundles (dist/<target>).")] = Path("dist"),
    emulate: Annotated[
        bool,
        typer.Option(
            help="Also validate on the aarch64 runtimes for the CPU models the profile's [device] emulate "
            "names (qemu user mode; set up once into the cache, about 2 minutes)."
        ),
    ] = True,
    formats: Formats = None,
    targets_dir: TargetsDir = None,
    json_out: JsonOut = False,
) -> None:
    """Run data -> teacher -> distill -> [prune] -> export -> quantize -> validate for one target.

    Each stage writes the artifact its own command would (under --work); a stage whose artifact
    was made from the same inputs with the same settings is reused, so a second build with
    nothing changed only re-validates. The app embeds `dist/<target>/`; `report.html` there shows
    the plots. Exit code 0 when every budget passes, 1 when one fails, 2 for bad input."""
    options = dict(locals())
    with user_errors():
        from edgerec.api import build as run

        result = forward(run, options, formats=format_list(formats))
    report = result["report"]
    if json_out:
        emit_json(result)
    else:
        typer.echo("")
        rows = [[p["model"], f"{p['mb']:.3f}", f"{p['p50_ms']:.3f}", f"{p['ndcg10']:.4f}"] for p in report["points"]]
        plain_table(["model", "MB", f"p50 ms (batch 1, on {report['machine']['cpu']})", "test NDCG@10"], rows)
        print_emulated(report.get("emulated_arm"))
        print_beyond_and_budgets(report)
        for name, stage in result["stages"].items():
            if stage.get("warning"):
                typer.echo(f"warning: {name}: {stage['warning']}")
        seconds = sum(s["seconds"] for s in result["stages"].values())
        typer.echo(
            f"\n{'PASS' if report['passed'] else 'FAIL'}  bundle -> {result['bundle']}  "
            f"report -> {Path(result['bundle']) / 'report.html'}  ({seconds / 60:.1f} min of stage work)"
        )
    raise typer.Exit(0 if report["passed"] else 1)
