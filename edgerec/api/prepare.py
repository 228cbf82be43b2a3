"""The first two stages as functions: `edgerec.data`, `edgerec.teacher`, `edgerec.import_teacher`.

Each takes the options of its command (`edgerec data --help`, ...) under the same names, writes
the same artifact, and returns the manifest the command prints (`--json`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from edgerec.core.models import Shape
from edgerec.core.synthetic import SyntheticConfig
from edgerec.core.training import TrainConfig
from edgerec.stages import teacher as teacher_stage
from edgerec.stages.data import CalibrationRecipe, DataConfig, make_data
from edgerec.stages.teacher import TEACHER_SHAPE, TEACHER_TRAIN, TEXT_TEACHER, TeacherConfig


def data(
    interactions: str | Path | None = None,
    out: str | Path = "runs/data",
    *,
    dataset: str | None = None,
    items: str | Path | None = None,
    user_col: str = "user",
    item_col: str = "item",
    time_col: str = "timestamp",
    title_col: str | None = None,
    genres_col: str | None = None,
    min_interactions: int = 3,
    drop_duplicates: bool = False,
    synthetic: str | None = None,
    seed: int = 0,
    calibration: str | Path | None = None,
    overwrite: bool = False,
) -> dict:
    """Per-user sequences, a leave-one-out split, the item vocabulary and a calibration set.

    `interactions` is a CSV, TSV, Parquet or JSONL file with user, item and timestamp columns;
    without it, the built-in `dataset` (movielens-100k by default, fetched once into the
    cache), or a generated log of `synthetic` = "ITEMSxUSERS". Users' last item is the test
    target and the one before it the validation target. Returns the artifact's manifest.

    Examples:
        A generated log of 60 items and 40 users:

        >>> manifest = edgerec.data(out=work / "data", synthetic="60x40")
        >>> manifest["counts"]["users"], manifest["counts"]["items"] <= 60
        (40, True)
    """
    config = DataConfig(
        user_col=user_col,
        item_col=item_col,
        time_col=time_col,
        title_col=title_col,
        genres_col=genres_col,
        min_interactions=min_interactions,
        drop_duplicates=drop_duplicates,
        calibration=CalibrationRecipe.load(Path(calibration) if calibration else None),
    )
    return make_data(
        Path(out),
        interactions=Path(interactions) if interactions else None,
        dataset=dataset,
        items_file=Path(items) if items else None,
        config=config,
        overwrite=overwrite,
        synthetic=SyntheticConfig.parse(synthetic, seed=seed) if synthetic is not None else None,
    )


def teacher(
    data: str | Path = "runs/data",
    out: str | Path = "runs/teacher",
    *,
    kind: Literal["causal", "masked", "text"] = "causal",
    base: str | Path | None = None,
    hidden: int = TEACHER_SHAPE.hidden,
    layers: int = TEACHER_SHAPE.layers,
    heads: int = TEACHER_SHAPE.heads,
    intermediate: int = TEACHER_SHAPE.intermediate,
    max_len: int = TEACHER_SHAPE.max_len,
    dropout: float = TEACHER_SHAPE.dropout,
    attention_dropout: float = TEACHER_SHAPE.attention_dropout,
    weight_decay: float | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    patience: int | None = None,
    max_minutes: float | None = None,
    seed: int = 0,
    precision: Literal["fp32", "bf16", "auto"] | None = None,
    warmup_steps: int | None = None,
    schedule: Literal["constant", "cosine"] = "constant",
    text_max_tokens: int = TEXT_TEACHER.text_max_tokens,
    text_items: int = TEXT_TEACHER.text_items,
    text_order: Literal["recent-first", "recent-last"] = TEXT_TEACHER.text_order,
    text_genres: bool = TEXT_TEACHER.text_genres,
    examples_per_user: int = TEXT_TEACHER.text_examples_per_user,
    text_head_init: Literal["titles", "random"] = TEXT_TEACHER.text_head_init,
    overwrite: bool = False,
) -> dict | None:
    """Train a BERT teacher over item ids (`kind` causal or masked), or fine-tune a local
    pre-trained language BERT (`kind="text"`, `base` its folder) over the history's titles;
    keep the best checkpoint by validation NDCG@10.

    Training options left as None take the kind's defaults: the id teacher's (200 epochs,
    batch 64, lr 1e-3, patience 15, 45 warm-up steps, fp32) or the text teacher's
    (`edgerec.stages.teacher.TEXT_TEACHER`). An interrupted call resumes from its last finished
    epoch. Under torchrun every rank calls it; rank 0 returns the manifest, the others None.

    Examples:
        One epoch of a tiny teacher:

        >>> manifest = edgerec.teacher(work / "data", work / "teacher", hidden=16, heads=1,
        ...                            intermediate=32, max_len=16, epochs=1)
        >>> manifest["kind"], manifest["training"]["epochs_run"]
        ('causal', 1)
    """
    defaults = TEXT_TEACHER.train if kind == "text" else TEACHER_TRAIN
    given = {
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "warmup_steps": warmup_steps,
        "patience": patience,
        "precision": precision,
    }
    train = TrainConfig(
        **{**{k: getattr(defaults, k) for k in given}, **{k: v for k, v in given.items() if v is not None}},
        max_minutes=max_minutes,
        seed=seed,
        schedule=schedule,
    )
    config = TeacherConfig(
        kind=kind,
        text_max_tokens=text_max_tokens,
        text_items=text_items,
        text_order=text_order,
        text_genres=text_genres,
        text_examples_per_user=examples_per_user,
        text_head_init=text_head_init,
        shape=Shape(
            hidden=hidden,
            layers=layers,
            heads=heads,
            intermediate=intermediate,
            max_len=max_len,
            dropout=dropout,
            attention_dropout=attention_dropout,
        ),
        train=train,
    )
    return teacher_stage.train_teacher(
        Path(data), Path(out), config, base=Path(base) if base else None, overwrite=overwrite
    )


def import_teacher(
    path: str | Path,
    data: str | Path = "runs/data",
    out: str | Path = "runs/teacher",
    *,
    text_max_tokens: int = 128,
    text_items: int = 20,
    text_order: Literal["recent-first", "recent-last"] = "recent-first",
    text_genres: bool = False,
    overwrite: bool = False,
) -> dict:
    """Use your own fine-tuned Hugging Face BERT (a safetensors folder) as the teacher
    (`edgerec teacher import`): BertForSequenceClassification over items with its tokenizer,
    or BertForMaskedLM / BertLMHeadModel over item tokens (items.txt). It is checked against
    the data's items and evaluated like a trained teacher. `text_*` say how a text checkpoint
    reads a history (as it was fine-tuned).

    Examples:
        The teacher trained above, saved as a Hugging Face checkpoint with the items.txt an id
        checkpoint brings (line n = token n), imported back:

        >>> import json, shutil
        >>> checkpoint = shutil.copytree(work / "teacher" / "model", work / "checkpoint")
        >>> ids = [str(item["id"]) for item in json.loads((work / "data" / "items.json").read_text())]
        >>> _ = (checkpoint / "items.txt").write_text("\\n".join(["[PAD]", *ids, "[MASK]"]) + "\\n")
        >>> manifest = edgerec.import_teacher(checkpoint, work / "data", work / "imported")
        >>> manifest["stage"], manifest["kind"]
        ('teacher', 'causal')
    """
    reading = TeacherConfig(
        kind="text",
        text_max_tokens=text_max_tokens,
        text_items=text_items,
        text_order=text_order,
        text_genres=text_genres,
    )
    return teacher_stage.import_teacher(Path(path), Path(data), Path(out), overwrite=overwrite, text=reading)
