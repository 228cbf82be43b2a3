"""`edgerec recommend`: top-K items for a history from a bundle, optionally explained."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgerec.cli.common import JsonOut, PublicKey, emit_json, plain_table, user_errors


def recommend(
    bundle: Annotated[Path, typer.Option("--bundle", "-b", help="Bundle directory (e.g. dist/arm64).")] = Path(
        "dist/arm64"
    ),
    history: Annotated[
        str, typer.Option(help="The user's items, oldest first, as your item ids separated by commas.")
    ] = "",
    k: Annotated[int, typer.Option("-k", min=1, max=1_000_000, help="How many items to recommend.")] = 10,
    explain: Annotated[
        bool, typer.Option(help="For each item, the history items that contributed most (score drop when left out).")
    ] = False,
    allow_modified: Annotated[
        bool,
        typer.Option(help="Use bundle files that differ from the hashes metadata.json records (edited on purpose)."),
    ] = False,
    public_key: PublicKey = None,
    json_out: JsonOut = False,
) -> None:
    """Recommend from the bundle alone (its model file, items.json, metadata.json), on the
    runtime an app would use; items already in the history are not recommended, so fewer than
    K come back when fewer are left (--json: `returned` and `candidates` say so)."""
    with user_errors():
        from edgerec.stages.recommend import Recommender

        ids = [part.strip() for part in history.split(",") if part.strip()]
        recommender = Recommender(bundle, allow_modified=allow_modified, public_key=public_key)
        rows = recommender.recommend(ids, k=k, explain=explain)
        left = recommender.candidates(ids)
    if json_out:
        emit_json({"k": k, "returned": len(rows), "candidates": left, "items": rows})
        return
    if len(rows) < k:
        typer.echo(
            f"note: {len(rows)} of the {k} items asked for: only {left} items of the catalogue are not in the history",
            err=True,
        )
    table = []
    for rank, row in enumerate(rows, start=1):
        because = "; ".join(f"{b.get('title') or b['item']} ({b['contribution']:+.2f})" for b in row.get("because", []))
        table.append(
            [str(rank), row["item"], row.get("title") or "", f"{row['score']:.3f}"] + ([because] if explain else [])
        )
    plain_table(["#", "item", "title", "score"] + (["because of (score drop if left out)"] if explain else []), table)
