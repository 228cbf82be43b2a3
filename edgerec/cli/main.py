"""The root `edgerec` app: one sub-module per command."""

import typer

from edgerec import __version__
from edgerec.cli import (
    build,
    data,
    distill,
    evaluate,
    export,
    prune,
    quantize,
    recommend,
    targets,
    teacher,
    validate,
)

app = typer.Typer(
    name="edgerec",
    help="Turn a fine-tuned BERT recommender into a small model that runs inside the app.\n\n"
    "Pipeline: data -> teacher -> distill -> prune -> export -> quantize -> validate.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    rich_markup_mode="markdown",  # joins wrapped docstring lines into paragraphs
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgerec {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """edgerec: on-device recommenders from BERT teachers."""


app.command("data")(data.data)
app.add_typer(teacher.app, name="teacher")
app.command("distill")(distill.distill)
app.command("evaluate")(evaluate.evaluate)
app.command("prune")(prune.prune)
app.command("export")(export.export)
app.command("quantize")(quantize.quantize)
app.command("validate")(validate.validate)
app.command("build")(build.build)
app.command("recommend")(recommend.recommend)
app.add_typer(targets.app, name="targets")
