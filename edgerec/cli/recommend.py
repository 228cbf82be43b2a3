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
    allow: Annotated[
        str,
        typer.Option(
            help="Recommend only these items (stock, region, the category shown): item ids separated by "
            "commas, or @FILE with one id per line. Default: every item."
        ),
    ] = "",
    exclude: Annotated[
        str, typer.Option(help="Never recommend these items: item ids separated by commas, or @FILE.")
    ] = "",
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

        ids = _ids(history)
        rules = {"allowed": _ids(allow) if allow else None, "excluded": _ids(exclude)}
        recommender = Recommender(bundle, allow_modified=allow_modified, public_key=public_key)
        rows = recommender.recommend(ids, k=k, explain=explain, **rules)
        left = recommender.candidates(ids, **rules)
    if json_out:
        emit_json({"k": k, "returned": len(rows), "candidates": left, "items": rows})
        return
    if len(rows) < k:
        typer.echo(
            f"note: {len(rows)} of the {k} items asked for: only {left} items of the catalogue are "
            "neither in the history nor left out by --allow / --exclude",
            err=True,
        )
    table = []
    for rank, row in enumerate(rows, start=1):
        because = "; ".join(f"{b.get('title') or b['item']} ({b['contribution']:+.2f})" for b in row.get("because", []))
        table.append(
            [str(rank), row["item"], row.get("title") or "", f"{row['score']:.3f}"] + ([because] if explain else [])
        )
    plain_table(["#", "item", "title", "score"] + (["because of (score drop if left out)"] if explain else []), table)


def _ids(text: str) -> list[str]:
    """Item ids from "a,b,c" or "@FILE" (one id per line); one line for a missing file."""
    from edgerec.core.errors import EdgerecError

    if text.startswith("@"):
        path = Path(text[1:])
        if not path.is_file():
            raise EdgerecError(f"{path}: no such file of item ids")
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return [part.strip() for part in text.split(",") if part.strip()]
