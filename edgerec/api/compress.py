"""The stages that make the model small, as functions: `edgerec.distill`, `edgerec.prune`.

Each takes the options of its command (`edgerec distill --help`, ...) under the same names,
writes the same artifact, and returns the manifest the command prints (`--json`). Both run
unchanged under torchrun (every rank calls them; rank 0 returns the manifest, the others None).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

from edgerec.core.distillation import DistillConfig
from edgerec.core.interactions import load_data
from edgerec.core.models import Shape
from edgerec.core.targets import load_target
from edgerec.core.training import TrainConfig
from edgerec.stages import distill as distill_stage
from edgerec.stages import prune as prune_stage


def distill(
    teacher: str | Path = "runs/teacher",
    data: str | Path = "runs/data",
    out: str | Path = "runs/student",
    *,
    hidden: int = 64,
    layers: int = 1,
    heads: int = 2,
    intermediate: int = 256,
    max_len: int = 200,
    dropout: float = 0.2,
    max_params: int | None = None,
    max_size_mb: float | None = None,
    alpha: float = 0.5,
    temperature: float = 2.0,
    top_k: int = 100,
    kd_positions: int = 16,
    tail_boost: float = 0.0,
    item_rank: int | None = None,
    student_kind: Literal["causal", "masked"] = "causal",
    positions: Literal["end", "start"] = "end",
    init: str = "teacher",
    keep: float | None = None,
    grow: int = 2,
    epochs: int = 200,
    batch_size: int = 64,
    lr: float = 1e-3,
    patience: int = 20,
    max_minutes: float | None = None,
    seed: int = 0,
    precision: Literal["fp32", "bf16", "auto"] = "fp32",
    warmup_steps: int = 0,
    schedule: Literal["constant", "cosine"] = "constant",
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> dict | None:
    """Distil the teacher into a small causal (or masked) BERT student whose item table is tied
    to its output layer.

    Loss: (1 - alpha) x cross-entropy on the true next item + alpha x T^2 x KL to the teacher's
    softened scores over the whole catalogue (its `top_k` items plus one bin for the rest). The
    teacher's targets are computed once and cached by content hash. `max_params` or
    `max_size_mb` pick the largest default-shaped student that fits instead of the shape
    options; with `keep`, a student that keeps less than that share of the teacher's validation
    NDCG@10 is followed by up to `grow` larger ones.

    Examples:
        One epoch of a tiny student of the teacher trained above:

        >>> manifest = edgerec.distill(work / "teacher", work / "data", work / "student", hidden=16,
        ...                            heads=1, intermediate=32, max_len=16, epochs=1, log=quiet)
        >>> manifest["stage"], manifest["parameters"]["student"] < manifest["parameters"]["teacher"]
        ('student', True)
    """
    shape = Shape(
        hidden=hidden,
        layers=layers,
        heads=heads,
        intermediate=intermediate,
        max_len=max_len,
        dropout=dropout,
        attention_dropout=dropout,
    )
    if max_params is not None or max_size_mb is not None:
        shape = distill_stage.size_student(load_data(Path(data)).vocab_size, max_params, max_size_mb, base=shape)
    config = DistillConfig(
        student=shape,
        alpha=alpha,
        temperature=temperature,
        top_k=top_k,
        kd_positions=kd_positions,
        item_rank=item_rank,
        tail_boost=tail_boost,
        student_kind=student_kind,
        positions=positions,
        init=init,
        keep=keep or None,
        grow=grow,
        train=TrainConfig(
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            patience=patience,
            max_minutes=max_minutes,
            seed=seed,
            warmup_steps=warmup_steps,
            schedule=schedule,
            precision=precision,
        ),
    )
    return distill_stage.distill(Path(teacher), Path(data), Path(out), config, overwrite=overwrite, log=log)


def prune(
    student: str | Path = "runs/student",
    teacher: str | Path = "runs/teacher",
    data: str | Path = "runs/data",
    out: str | Path = "runs/pruned",
    *,
    sparsity: float = 0.5,
    embedding_rank: int | None = None,
    drop_layers: int = 0,
    target: str | None = None,
    targets_dir: str | Path | None = None,
    iterations: int = 1,
    recovery_epochs: int = 60,
    recovery_patience: int = 10,
    max_minutes: float | None = 4.0,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> dict | None:
    """Remove the least important attention heads and FFN neurons from every layer (ranked by
    |activation x gradient| on the validation loss), physically: smaller matrices, a standard
    Hugging Face checkpoint. Then recover by a short distillation from the teacher's cached
    targets. `embedding_rank` also factorises the item table; `target` picks the largest rank
    whose int8 model fits that profile's max_model_mb. The artifact goes on to export like a
    student.

    Examples:
        Half the FFN neurons of the student above, one recovery epoch:

        >>> manifest = edgerec.prune(work / "student", work / "teacher", work / "data", work / "pruned",
        ...                          recovery_epochs=1, log=quiet)
        >>> p = manifest["pruning"]
        >>> p["parameters_after"] < p["parameters_before"]
        True
    """
    max_bytes = None
    if target is not None:
        max_bytes = int(load_target(target, Path(targets_dir) if targets_dir else None).budgets.max_model_mb * 1e6)
    config = prune_stage.PruneConfig(
        sparsity=sparsity,
        embedding_rank=embedding_rank,
        drop_layers=drop_layers,
        max_bytes=max_bytes,
        iterations=iterations,
        recovery=TrainConfig(epochs=recovery_epochs, patience=recovery_patience, max_minutes=max_minutes),
    )
    return prune_stage.prune(Path(student), Path(teacher), Path(data), Path(out), config, overwrite=overwrite, log=log)
