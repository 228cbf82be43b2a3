"""`edgerec export --target T`: the bundle an app embeds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgerec.cli.common import Formats, JsonOut, Overwrite, emit_json, format_list, forward, plain_table, user_errors
from edgerec.cli.targets import TargetsDir


def export(
    target: Annotated[str, typer.Option("--target", "-T", help="Target profile (edgerec targets list).")],
    model: Annotated[Path, typer.Option("--model", "-m", help="Student or teacher artifact.")] = Path("runs/student"),
    data: Annotated[Path, typer.Option("--data", "-d", help="Data artifact (items, parity users).")] = Path(
        "runs/data"
    ),
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="Bundle directory (default dist/<target>).")
    ] = None,
    top_k: Annotated[
        Optional[int],
        typer.Option(
            min=1, max=10**7, help="Return the K best unseen items and their scores from the ONNX graph itself."
        ),
    ] = None,
    step: Annotated[
        Optional[bool],
        typer.Option(
            "--step/--no-step",
            help="Also export the incremental step model (step.onnx / step.tflite: one call per new "
            "item, each layer's input cached in a state tensor the app carries). Needs a causal "
            "student distilled with --positions start. Default: the profile's step_model.",
        ),
    ] = None,
    emulate: Annotated[
        bool,
        typer.Option(
            help="Also check parity on the aarch64 builds of the runtimes for the CPU models the "
            "profile's [device] emulate names (qemu user mode; set up once into the cache)."
        ),
    ] = True,
    formats: Formats = None,
    rerank: Annotated[
        Optional[int],
        typer.Option(
            min=1,
            max=10**7,
            metavar="C",
            help="Also write rerank.<fmt>: the scores of the C candidates the app passes (e.g. the page "
            "its server sent), at a cost that does not grow with the catalogue.",
        ),
    ] = None,
    rules: Annotated[
        bool,
        typer.Option(
            "--rules",
            help="Also write rules.<fmt>: the top-K (needs --top-k) with per-call inputs `allowed` "
            "(uint8 per item, 0 = exclude: stock, region, category) and `boost` (added to the scores).",
        ),
    ] = False,
    targets_dir: TargetsDir = None,
    overwrite: Overwrite = False,
    json_out: JsonOut = False,
) -> None:
    """Export the profile's formats (ONNX, TFLite; ExecuTorch's .pte with --formats) and check
    each file on every runtime the profile names for it against PyTorch (max |score difference|
    and top-10 agreement on real test users); a mismatch fails the export and leaves nothing behind.

    The bundle holds the model file(s), `items.json` (model index -> your item id, titles) and
    `metadata.json` (inputs, outputs, padding, max length, target, parity)."""
    options = dict(locals())
    with user_errors():
        from edgerec.api import export as run

        manifest = forward(run, options, formats=format_list(formats))
    if json_out:
        emit_json(manifest)
        return
    rows = [
        [runtime, f"{p['max_abs_diff']:.2e}", f"{p['top10_agreement']:.3f}", str(p["users"])]
        for runtime, p in manifest["parity"].items()
    ]
    arm = manifest.get("parity_emulated_arm")
    rows += [
        [where, f"{p['max_abs_diff']:.2e}", f"{p['top10_agreement']:.3f}", str(p["users"])]
        for where, p in (arm.items() if isinstance(arm, dict) else [])
    ]
    typer.echo(f"bundle -> {out or Path('dist') / target}")
    for fmt, size in manifest["sizes"].items():
        typer.echo(f"  {manifest['files_by_format'][fmt]}: {size / 1e6:.3f} MB")
    plain_table(["runtime", "max |diff| vs torch", "top-10 agreement", "users"], rows)
    if isinstance(arm, str):
        typer.echo(f"ARM parity (emulated): {arm}")
    for name, entry in (manifest.get("entries") or {}).items():
        checked = ", ".join(f"{runtime} ({_entry_check(c)})" for runtime, c in entry["check"].items())
        typer.echo(f"{name}: {', '.join(entry['files'].values())}, checked vs torch on {checked}")
    if manifest.get("step_model"):
        step_model = manifest["step_model"]
        typer.echo(
            f"step model: {', '.join(step_model['files'].values())}, state "
            f"{step_model['inputs']['state']['shape']} (replayed item by item vs the full model)"
        )
        plain_table(
            ["runtime", "max |diff| vs torch", "top-10 agreement", "users"],
            [
                [runtime, f"{p['max_abs_diff']:.2e}", f"{p['top10_agreement']:.3f}", str(p["users"])]
                for runtime, p in step_model["replay_check"].items()
            ],
        )


def _entry_check(check: dict) -> str:
    if "max_abs_diff" in check:
        return f"max |diff| {check['max_abs_diff']:.2e}, {check['users']} users"
    return f"identical lists {check['identical_lists']:.3f}, {check['users']} users"
