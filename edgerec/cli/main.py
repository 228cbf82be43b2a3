"""The root `edgerec` app: one sub-module per command."""

import sys

import typer
from typer.core import TyperGroup

from edgerec.cli import (
    build,
    data,
    distill,
    evaluate,
    export,
    prune,
    quantize,
    recommend,
    sign,
    targets,
    teacher,
    validate,
)
from edgerec.core.version import __version__


class OneLineErrors(TyperGroup):
    """Usage errors (a value out of range, an unknown choice, a missing option) end like edgerec's
    own errors: one line on stderr naming the option, exit code 2. Typer's default draws a boxed
    panel under a usage block; scripts and logs want the line."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.Abort:
            typer.echo("aborted", err=True)
            sys.exit(1)
        except Exception as exc:
            # click's ClickException (vendored by typer >= 0.2x, plain click before): duck-typed
            if not (hasattr(exc, "format_message") and isinstance(getattr(exc, "exit_code", None), int)):
                raise
            ctx = getattr(exc, "ctx", None)
            if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
                typer.echo(ctx.get_help())  # a bare `edgerec` or `edgerec targets`: show the help
                sys.exit(exc.exit_code)
            where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            message = " ".join(exc.format_message().split())
            typer.echo(f"error: {message}{where}", err=True)
            sys.exit(exc.exit_code)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=OneLineErrors,
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
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    verbose: bool = typer.Option(
        False,
        "--verbose",
        "-v",
        help="Show the converters', quantizers' and runtimes' own output "
        "(captured by default, and shown when one of them fails).",
    ),
) -> None:
    """edgerec: on-device recommenders from BERT teachers."""
    if verbose:
        from edgerec.core.console import set_verbose

        set_verbose(True)


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
app.command("keygen")(sign.keygen)
app.command("sign")(sign.sign)
app.command("verify")(sign.verify)
app.add_typer(targets.app, name="targets")
