"""`edgerec quantize --target T`: int8 post-training quantization of an exported bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from edgerec.cli.common import JsonOut, Overwrite, emit_json, finite, forward, plain_table, user_errors
from edgerec.cli.targets import TargetsDir


def quantize(
    target: Annotated[str, typer.Option("--target", "-T", help="Target profile (edgerec targets list).")],
    bundle: Annotated[
        Optional[Path], typer.Option("--bundle", "-b", help="fp32 bundle from edgerec export (default dist/<target>).")
    ] = None,
    data: Annotated[
        Path, typer.Option("--data", "-d", help="Data artifact (calibration set, validation users).")
    ] = Path("runs/data"),
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="int8 bundle (default dist/<target>-int8).")
    ] = None,
    calibration: Annotated[
        Optional[Path],
        typer.Option(
            help="Your own calibration set: .npz with input_ids [n, max_len] (left-padded) or "
            "items + offsets; default the data artifact's calibration.npz."
        ),
    ] = None,
    calibration_method: Annotated[
        Optional[Literal["minmax", "entropy", "percentile"]],
        typer.Option(help="minmax, entropy or percentile (default: the profile's)."),
    ] = None,
    max_ndcg_drop: Annotated[
        Optional[float],
        typer.Option(
            min=0.0,
            max=1.0,
            callback=finite,
            help="Tolerated relative drop of validation NDCG@10 vs fp32 before layers are kept in "
            "float; a larger drop counts only when significant (paired bootstrap 95% interval "
            "below 0). Default: the profile's.",
        ),
    ] = None,
    emulate: Annotated[
        bool,
        typer.Option(
            help="Count each int8 form's ARM instructions per call on the profile's first emulated CPU "
            "([device] emulate) and ship the cheapest whose accuracy (and size) fit; without it, "
            "the first such form in the profile's order."
        ),
    ] = True,
    targets_dir: TargetsDir = None,
    overwrite: Overwrite = False,
    json_out: JsonOut = False,
) -> None:
    """Quantize an exported bundle to int8 in the form the target profile allows that runs cheapest on ARM.

    Each int8 form the profile lists (onnx_forms, tflite_forms: static QDQ/QOperator, dynamic,
    weight-only) is made and fitted to the accuracy tolerance: validation NDCG@10 against the fp32
    file on the same runtime; if the drop exceeds it, the most sensitive layers stay in float.
    With an emulated CPU in the profile ([device] emulate), each form's ARM instructions per call
    are counted there and the cheapest form within max_size_ratio ships; otherwise the first that
    fits. Calibration ranges are kept in the bundle (calibration/); the manifest lists every form's
    size, accuracy and instructions, and why one was chosen."""
    options = dict(locals())
    with user_errors():
        from edgerec.api import quantize as run

        manifest = forward(run, options)
    if json_out:
        emit_json(manifest)
        return
    print_quantized(manifest, out or Path("dist") / f"{target}-int8")


def print_quantized(manifest: dict, out: Path) -> None:
    """Each format's shipped int8 form: size, validation NDCG@10, ARM cost, what stayed float, why."""
    typer.echo(f"int8 bundle -> {out}")
    rows = [
        [
            fmt,
            r["scheme"],
            r["runtime"],
            f"{r['fp32_bytes'] / 1e6:.3f}",
            f"{r['int8_bytes'] / 1e6:.3f}",
            f"{r['size_ratio']:.3f}",
            f"{r['valid_ndcg10_fp32']:.4f}",
            f"{r['valid_ndcg10_int8']:.4f}",
            (
                f"{r['forms'][r['scheme']]['arm_vs_fp32']:.3f}x on {r['arm_instructions']['cpu']}"
                if isinstance(r.get("arm_instructions"), dict)
                else "not counted"
            ),
            ", ".join(k["unit"] for k in r["kept_float"]) or "-",
        ]
        for fmt, r in manifest["quantization"].items()
    ]
    plain_table(
        [
            "format",
            "form",
            "runtime",
            "fp32 MB",
            "int8 MB",
            "ratio",
            "valid NDCG@10 fp32",
            "int8",
            "ARM instructions vs fp32",
            "kept in float",
        ],
        rows,
    )
    for fmt, r in manifest["quantization"].items():
        counted = r.get("arm_instructions")
        typer.echo(
            f"{fmt}: {r['scheme']}: {r['chosen_because']}"
            + (f" (ARM instructions {counted})" if isinstance(counted, str) else "")
        )
