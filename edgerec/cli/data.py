"""`edgerec data`: ingest interactions or a built-in dataset into a data artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgerec.cli.common import (
    JsonOut,
    Overwrite,
    emit_json,
    forward,
    table,
    user_errors,
)


def data(
    interactions: Annotated[
        Optional[Path],
        typer.Argument(
            help="Interactions file (CSV, TSV, Parquet or JSONL) with user, item and timestamp "
            "columns. Omit it to use --dataset."
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Artifact directory to write.")] = Path("runs/data"),
    dataset: Annotated[
        Optional[str],
        typer.Option(
            help="Built-in dataset, fetched on first use into the cache (default: movielens-100k "
            "when no file is given)."
        ),
    ] = None,
    items: Annotated[
        Optional[Path], typer.Option(help="Optional item metadata file (titles, genres) keyed by --item-col.")
    ] = None,
    user_col: Annotated[str, typer.Option(help="User id column.")] = "user",
    item_col: Annotated[str, typer.Option(help="Item id column.")] = "item",
    time_col: Annotated[
        str, typer.Option(help="Timestamp column (Unix seconds or a Parquet timestamp).")
    ] = "timestamp",
    title_col: Annotated[Optional[str], typer.Option(help="Item title column.")] = None,
    genres_col: Annotated[Optional[str], typer.Option(help="Item genres column ('|' or space separated).")] = None,
    min_interactions: Annotated[
        int,
        typer.Option(
            min=3,
            max=1_000_000,
            help="Drop users with fewer interactions (>= 3: train, validation and test need one each).",
        ),
    ] = 3,
    drop_duplicates: Annotated[
        bool, typer.Option(help="Drop repeated (user, item, timestamp) rows instead of failing on them.")
    ] = False,
    synthetic: Annotated[
        Optional[str],
        typer.Option(
            help="Generate a synthetic catalogue-scale log instead, ITEMSxUSERS (e.g. 100000x100000): "
            "power-law popularity, drifting latent topics, repeats; the manifest records the generating "
            "process and the oracle's test NDCG@10 (edgerec.core.synthetic).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1, help="Seed of --synthetic.")] = 0,
    calibration: Annotated[
        Optional[Path], typer.Option(help="Calibration recipe TOML (default: calibration/default.toml).")
    ] = None,
    overwrite: Overwrite = False,
    json_out: JsonOut = False,
) -> None:
    """Build per-user sequences, a leave-one-out split, the item vocabulary and a calibration set.

    Users' last item is the test target and the one before it the validation target; item indices
    start at 1 (0 = padding), most popular first.
    """
    options = dict(locals())
    with user_errors():
        from edgerec.api import data as run

        manifest = forward(run, options)
    if json_out:
        emit_json(manifest)
        return
    c = manifest["counts"]
    table(
        f"data -> {out}",
        [
            ("users", str(c["users"])),
            ("items", str(c["items"])),
            ("interactions", str(c["interactions"])),
            ("users dropped (< %d interactions)" % min_interactions, str(c["users_dropped"])),
            ("duplicate rows dropped", str(c["duplicates_dropped"])),
            ("calibration sequences", str(c["calibration_sequences"])),
            *(
                [("synthetic: oracle test NDCG@10", "%.4f" % manifest["synthetic"]["oracle_test"]["NDCG@10"])]
                if manifest.get("synthetic")
                else []
            ),
        ],
    )
