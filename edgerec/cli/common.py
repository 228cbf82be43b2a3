"""What every command shares: one-line errors, JSON output, quiet third-party loggers."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer

from edgerec.core.errors import EdgerecError

# Loggers that print import-time noise unrelated to the user's job (torchao's optional CUDA
# kernels that cannot load on a CPU box; a torch deprecation warning torchao triggers).
_NOISY = ("torchao", "torch.utils._pytree")


def quiet_third_party() -> None:
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Expected failures: one line on stderr, exit code 2, no traceback. Ctrl-C exits 130."""
    quiet_third_party()
    try:
        yield
    except EdgerecError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None


def log_to_stderr(message: str) -> None:
    """Where commands send the library's progress lines: stderr, so stdout stays the result."""
    typer.echo(message, err=True)


def forward(function, options: dict, **given):
    """Call the API function behind a command (`edgerec.api`) with the command's options, which
    have the same names (tests/api/test_api.py holds them together); `given` overrides or adds
    (the log, options the command converts). Options the function does not take (--json) stay."""
    import inspect

    takes = inspect.signature(function).parameters
    if "log" in takes:
        given.setdefault("log", log_to_stderr)
    return function(**{k: v for k, v in options.items() if k in takes and k not in given}, **given)


def emit_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")


def table(title: str, rows: list[tuple[str, str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Table(title=title, show_header=False, title_justify="left")
    out.add_column(style="bold")
    out.add_column(justify="right")
    for key, value in rows:
        out.add_row(key, value)
    Console().print(out)


def plain_table(headers: list[str], rows: list[list[str]]) -> None:
    """Aligned columns that never truncate (rich shrinks cells to the terminal width)."""
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)]
    for row in [headers, *rows]:
        typer.echo("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())


def metric_rows(summary: dict[str, dict]) -> list[tuple[str, str]]:
    return [(name, f"{v['mean']:.4f}  [{v['ci95'][0]:.4f}, {v['ci95'][1]:.4f}]") for name, v in summary.items()]


def finite(value):
    """Callback for float options: NaN and infinity are never a setting (ranges catch them in
    current typer; this keeps it so whatever parses the number)."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


# Every numeric option carries its range, checked before the command runs (one line, exit 2);
# tests/test_cli_sweep.py fails for a numeric option without one.
Hidden = Annotated[int, typer.Option(min=1, max=8192, help="Hidden size.")]
Layers = Annotated[int, typer.Option(min=1, max=64, help="Transformer layers.")]
Heads = Annotated[int, typer.Option(min=1, max=128, help="Attention heads (must divide --hidden).")]
Intermediate = Annotated[int, typer.Option(min=1, max=65536, help="FFN size.")]
MaxLen = Annotated[int, typer.Option(min=2, max=8192, help="History length read (most recent items).")]
Dropout = Annotated[float, typer.Option(min=0.0, max=0.9, callback=finite, help="Dropout (hidden and attention).")]
Epochs = Annotated[int, typer.Option(min=1, max=100_000, help="Maximum epochs.")]
BatchSize = Annotated[int, typer.Option(min=1, max=65536, help="Users per batch (per process).")]
LearningRate = Annotated[float, typer.Option(min=1e-9, max=10.0, callback=finite, help="AdamW learning rate.")]
Patience = Annotated[
    int, typer.Option(min=1, max=100_000, help="Stop after this many epochs without a better validation NDCG@10.")
]
MaxMinutes = Annotated[
    Optional[float],
    typer.Option(
        min=0.01,
        max=100_000.0,
        callback=finite,
        help="Wall-clock guard for training (the budget is --epochs; the result says when this cut it short).",
    ),
]
Seed = Annotated[int, typer.Option(min=0, max=2**32 - 1, help="Random seed.")]
WarmupSteps = Annotated[
    int, typer.Option(min=0, max=10_000_000, help="Linear learning-rate warm-up, in optimizer steps.")
]
Schedule = Annotated[
    Literal["constant", "cosine"],
    typer.Option(
        help="Learning rate after warm-up: constant, or cosine (down to 0 at the last of --epochs, set per epoch)."
    ),
]
Precision = Annotated[
    Literal["fp32", "bf16", "auto"],
    typer.Option(
        help="Forward passes in fp32, in bf16 autocast, or auto: bf16 where the CPU has bf16 dot "
        "products (AVX512-BF16 / AMX) or the GPU supports it. The manifest records which ran."
    ),
]
Overwrite = Annotated[bool, typer.Option(help="Replace an existing artifact.")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
PublicKey = Annotated[
    Optional[Path],
    typer.Option(
        help="Verify the bundle's signature with this public key first (edgerec sign); refuse the bundle if it fails."
    ),
]
Formats = Annotated[
    Optional[str],
    typer.Option(
        help="Comma-separated formats to write, from the profile's formats and offers (edgerec targets "
        "show T), e.g. onnx,tflite,executorch. Default: the profile's formats."
    ),
]


def format_list(value: str | None) -> tuple[str, ...] | None:
    """`--formats onnx,executorch` as a tuple (None when not given)."""
    if value is None:
        return None
    names = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    if not names:
        raise typer.BadParameter("name at least one format", param_hint="--formats")
    return names
