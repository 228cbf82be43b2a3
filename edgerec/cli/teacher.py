"""`edgerec teacher`: train a BERT teacher, fine-tune a text teacher, or import a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgerec.cli.common import emit_json, table, user_errors

app = typer.Typer(no_args_is_help=False)


@app.callback(invoke_without_command=True)
def train(
    ctx: typer.Context,
    data: Annotated[Path, typer.Option("--data", "-d", help="Data artifact.")] = Path("runs/data"),
    out: Annotated[Path, typer.Option("--out", "-o", help="Teacher artifact to write.")] = Path("runs/teacher"),
    kind: Annotated[str, typer.Option(
        help="causal (next item at every position), masked (BERT4Rec cloze) or text "
             "(BertForSequenceClassification over titles; needs --base).")] = "causal",
    base: Annotated[Optional[Path], typer.Option(
        help="Local pre-trained BERT directory for --kind text (e.g. all-MiniLM-L6-v2).")] = None,
    hidden: Annotated[int, typer.Option(help="Hidden size.")] = 64,
    layers: Annotated[int, typer.Option(help="Transformer layers.")] = 2,
    heads: Annotated[int, typer.Option(help="Attention heads (must divide --hidden).")] = 2,
    intermediate: Annotated[int, typer.Option(help="FFN size.")] = 256,
    max_len: Annotated[int, typer.Option(help="History length read (most recent items).")] = 200,
    dropout: Annotated[float, typer.Option(help="Dropout (hidden and attention).")] = 0.2,
    epochs: Annotated[int, typer.Option(help="Maximum epochs.")] = 200,
    batch_size: Annotated[int, typer.Option(help="Users per batch (per process).")] = 64,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-3,
    patience: Annotated[int, typer.Option(help="Stop after this many epochs without a better validation NDCG@10.")] = 15,
    max_minutes: Annotated[Optional[float], typer.Option(help="Wall-clock budget for training.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing artifact.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON on stdout.")] = False,
) -> None:
    """Train a teacher (default: causal BERT over item ids) and keep the best checkpoint by
    validation NDCG@10.

    Re-running an interrupted command resumes from its last finished epoch. Runs unchanged under
    `torchrun --nproc-per-node N -m edgerec.cli teacher ...` or `accelerate launch`.
    """
    if ctx.invoked_subcommand is not None:
        return
    with user_errors():
        from edgerec.models import Shape
        from edgerec.teacher import TeacherConfig, train_teacher
        from edgerec.training import TrainConfig

        if kind not in ("causal", "masked", "text"):
            from edgerec.errors import EdgerecError

            raise EdgerecError(f"unknown --kind '{kind}' (causal, masked or text)")
        config = TeacherConfig(
            kind=kind,
            shape=Shape(hidden=hidden, layers=layers, heads=heads, intermediate=intermediate,
                        max_len=max_len, dropout=dropout, attention_dropout=dropout),
            train=TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, patience=patience,
                              max_minutes=max_minutes, seed=seed),
        )
        manifest = train_teacher(data, out, config, base=base, overwrite=overwrite)
    if manifest is None:  # not rank 0 under torchrun
        return
    _show(manifest, out, json_out)


@app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(help="Fine-tuned Hugging Face BERT directory (safetensors).")],
    data: Annotated[Path, typer.Option("--data", "-d", help="Data artifact whose items it scores.")] = Path("runs/data"),
    out: Annotated[Path, typer.Option("--out", "-o", help="Teacher artifact to write.")] = Path("runs/teacher"),
    overwrite: Annotated[bool, typer.Option(help="Replace an existing artifact.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON on stdout.")] = False,
) -> None:
    """Adopt an existing fine-tuned checkpoint: BertForSequenceClassification (id2label names the
    items), BertForMaskedLM or BertLMHeadModel over item tokens (items.txt: line n = token n).
    Says exactly which items do not match the data."""
    with user_errors():
        from edgerec.teacher import import_teacher

        manifest = import_teacher(path, data, out, overwrite=overwrite)
    _show(manifest, out, json_out)


def _show(manifest: dict, out: Path, json_out: bool) -> None:
    if json_out:
        emit_json(manifest)
        return
    test = manifest["metrics"]["test"]
    rows = [("kind", manifest["kind"]), ("parameters", f"{manifest['parameters']:,}")]
    rows += [(name, f"{value:.4f}") for name, value in test.items()]
    if "training" in manifest:
        t = manifest["training"]
        rows += [("epochs (best)", f"{t['epochs_run']} ({t['best_epoch']})"),
                 ("stopped by", t["stopped"]), ("training time", f"{t['seconds']:.0f} s")]
    table(f"teacher -> {out} (test, full ranking)", rows)
