"""`edgerec targets`: list and show the hardware target profiles."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgerec.cli.common import JsonOut, emit_json, plain_table, user_errors

app = typer.Typer(
    no_args_is_help=True, rich_markup_mode="markdown", help="List and show hardware target profiles (targets/*.toml)."
)

TargetsDir = Annotated[
    Optional[Path],
    typer.Option(
        help="A folder of your own *.toml profiles (also EDGEREC_TARGETS_DIR); they override "
        "shipped profiles of the same name."
    ),
]


@app.command("list")
def list_(targets_dir: TargetsDir = None, json_out: JsonOut = False) -> None:
    """One line per profile: name, formats (offered ones in parentheses: --formats), runtimes, budgets."""
    with user_errors():
        from edgerec.core.targets import available, load_target_file

        profiles = {name: load_target_file(path) for name, path in available(targets_dir).items()}
    if json_out:
        emit_json({name: t.to_dict() for name, t in profiles.items()})
        return
    rows = [
        [
            name,
            ",".join(t.formats) + "".join(f" (+{f})" for f in t.offers),
            ",".join(f"{r.name}>={r.min_version}" for r in t.runtimes),
            f"<={t.budgets.max_model_mb:g} MB",
            f"<={t.budgets.max_p95_ms:g} ms",
            f">={t.budgets.min_ndcg_retained:.0%}",
        ]
        for name, t in profiles.items()
    ]
    plain_table(["target", "formats", "runtimes", "size", "p95", "NDCG kept"], rows)


@app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="Target name, e.g. arm64.")],
    targets_dir: TargetsDir = None,
    json_out: JsonOut = False,
) -> None:
    """Everything a profile sets, with the file it came from."""
    with user_errors():
        from edgerec.core.targets import available, load_target

        target = load_target(name, targets_dir)
        path = available(targets_dir)[name]
    if json_out:
        emit_json({**target.to_dict(), "file": str(path)})
        return
    typer.echo(f"# {path}")
    typer.echo(path.read_text())
