"""Knowledge distillation, shared by `edgerec distill` and `edgerec prune`'s recovery: the
teacher's top-K soft targets, computed once and cached on disk; the loss (ground truth plus
the KL to the teacher over its top-K and one tail bin); the training run on the shared DDP loop
(`core.training.fit`); and writing the trained student as a model artifact."""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgerec.core.artifacts import (
    atomic_artifact,
    write_json,
)
from edgerec.core.batches import batches_of, causal_batches, pack, segment_positions, validator
from edgerec.core.errors import EdgerecError
from edgerec.core.evaluation import evaluate, headline, item_ids_hash, public, resolve_model_dir
from edgerec.core.losses import chunked_rows
from edgerec.core.metrics import item_popularity
from edgerec.core.model_surgery import init_from_teacher, item_rank, teacher_init_layers
from edgerec.core.models import (
    RecModel,
    Shape,
    save_model,
)
from edgerec.core.soft_targets import load_or_compute_targets, row_lookup
from edgerec.core.training import TrainConfig, fit, prepare_work_dir, work_dir_for

# Sized for a phone: one layer of width 64 costs ~0.3 ms per query at batch 1 on a CPU core
# and, with ML-100K's 1.7k items, ~0.2M parameters (under 0.25 MB in int8); the item table, not
# the encoder, dominates from ~10^4 items on, so width is the lever that matters.
STUDENT_SHAPE = Shape(hidden=64, layers=1, heads=2, intermediate=256, max_len=200, dropout=0.2, attention_dropout=0.2)


@dataclass(frozen=True)
class DistillConfig:
    student: Shape = field(default_factory=lambda: STUDENT_SHAPE)
    alpha: float = 0.5  # weight of the distillation term against the ground-truth term
    temperature: float = 2.0
    top_k: int = 100  # teacher items kept per position; the rest is one bin
    kd_positions: int = 16  # prefixes per user for masked / text teachers (causal: all)
    train: TrainConfig = field(default_factory=TrainConfig)
    # Factorised item table (E ~= A W^T, A [items, rank]); None: a full [items, hidden] table.
    item_rank: int | None = None
    # Counter popularity collapse: reweight the teacher's soft targets by (training count + 1)^-b
    # before the KL, so the student learns more of the teacher's mass on tail items. 0: off.
    tail_boost: float = 0.0
    # "causal" (SASRec-style, attention to the past only: every position of a window is a
    # training example) or "masked" (BERT4Rec-style, bidirectional: the history gets a [MASK]
    # appended and the answer is read there).
    student_kind: str = "causal"
    # Position ids (models.py): "start" counts from the window's first item, which is what an
    # incremental step model needs (edgerec.devices.incremental); "end" is the measured default.
    positions: str = "end"
    mask_prob: float = 0.2  # masked students: share of history positions hidden (cloze term)
    # "teacher": start from the teacher's embeddings, output layer and evenly spaced layers
    # (models.init_from_teacher) where its shape allows, else from random weights (said on the
    # console, recorded in the manifest); "random": always random; a path: the same copy from
    # that id model artifact instead (e.g. a small model of the student's width when the teacher
    # is wider), which must fit, and for the same items.
    init: str = "teacher"
    # Grow the student while it keeps less than `keep` of the teacher's validation NDCG@10 (None:
    # train the given shape only; the test split stays unseen). Each try is the next larger
    # default shape (_SIZES: a second layer before more width), at most `grow` more students,
    # never more parameters than the teacher. `edgerec build` sets it from the target
    # (keep_for_target): one layer was enough on ML-100K and not on ML-1M (docs/concepts/distillation.md).
    keep: float | None = None
    grow: int = 2

    def validate(self) -> None:
        self.student.validate()
        if self.keep is not None and not 0 < self.keep <= 2:
            raise EdgerecError(f"--keep must be in (0, 2], got {self.keep}")
        if self.grow < 0:
            raise EdgerecError(f"--grow must be >= 0, got {self.grow}")
        if not self.init:
            raise EdgerecError("--init must be teacher, random or a model artifact's path")
        if self.student_kind not in ("causal", "masked"):
            raise EdgerecError(f"--student-kind must be causal or masked, got {self.student_kind!r}")
        if self.positions not in ("end", "start"):
            raise EdgerecError(f"--positions must be end or start, got {self.positions!r}")
        if self.student_kind == "masked" and self.positions == "start":
            raise EdgerecError(
                "--positions start is for causal students (a masked student re-encodes the whole history anyway)"
            )
        if not 0 <= self.mask_prob < 1:
            raise EdgerecError(f"mask_prob must be in [0, 1), got {self.mask_prob}")
        self.train.validate()
        if not 0 <= self.alpha <= 1:
            raise EdgerecError(f"--alpha must be in [0, 1], got {self.alpha}")
        if not self.temperature > 0:
            raise EdgerecError(f"--temperature must be > 0, got {self.temperature}")
        if self.top_k < 1 or self.kd_positions < 1:
            raise EdgerecError("--top-k and --kd-positions must be >= 1")
        if self.tail_boost < 0:
            raise EdgerecError(f"--tail-boost must be >= 0, got {self.tail_boost}")
        if self.item_rank is not None and not 1 <= self.item_rank <= self.student.hidden:
            raise EdgerecError(f"--item-rank must be in [1, hidden {self.student.hidden}], got {self.item_rank}")


def init_input(init: str | None) -> dict[str, Path]:
    """{"init": artifact} when a student starts from another artifact (`--init PATH`): its
    content hash is one of the student's inputs, recorded by distill and compared by build."""
    if init in (None, "teacher", "random"):
        return {}
    source = resolve_model_dir(Path(init)).parent
    return {"init": source} if (source / "manifest.json").is_file() else {}


def masked_student_batches(sequences, max_len: int, batch_size: int, mask_token: int, mask_prob: float, kd_rows):
    """Examples for a masked (bidirectional) student, one per user and epoch: a random prefix of
    the history with [MASK] appended, labelled with the next item and carrying the teacher's
    target for that prefix (what the app asks of the model), plus BERT4Rec's cloze term on
    randomly hidden history items (ground truth only: the teacher scores next items, not gaps).
    """
    room = max_len - 1

    def make(indices, rng):
        for batch in batches_of(indices, batch_size):
            segments = []
            for u in batch:
                seq = sequences[u]
                end = int(rng.integers(1, len(seq)))  # predict seq[end] from what came before
                window = np.asarray(seq[max(0, end - room) : end], np.int64)
                n = len(window)
                hide = rng.random(n) < mask_prob
                kd = np.full(n + 1, -1, np.int64)
                kd[n] = kd_rows[u].get(end - 1, -1)
                segments.append(
                    {
                        "input_ids": np.append(np.where(hide, mask_token, window), mask_token),
                        "labels": np.append(np.where(hide, window, -100), seq[end]),
                        "position_ids": segment_positions(n + 1, max_len),
                        "kd_rows": kd,
                    }
                )
            yield pack(segments, max_len, causal=False)

    return make


def distill_loss_module(
    student,
    targets,
    num_items: int,
    alpha: float,
    temperature: float,
    popularity: np.ndarray | None = None,
    tail_boost: float = 0.0,
):
    import torch
    import torch.nn.functional as F

    top_items = torch.from_numpy(targets["top_items"].astype(np.int64))
    top_logp = torch.from_numpy(targets["top_logp"].astype(np.float32))
    tail_logp = torch.from_numpy(targets["tail_logp"])
    if tail_boost:  # p_i * w_i renormalised; the tail bin gets the mean weight of all items
        log_w = -tail_boost * torch.log1p(torch.from_numpy(popularity[1:].astype(np.float32)))
        top_logp = top_logp + log_w[top_items - 1]
        tail_logp = tail_logp + torch.logsumexp(log_w, 0) - float(np.log(len(log_w)))
        norm = torch.logsumexp(torch.cat([top_logp, tail_logp[:, None]], dim=1), dim=1)
        top_logp, tail_logp = top_logp - norm[:, None], tail_logp - norm

    def block_loss(hidden, labels, rows, n: int, n_soft: int):
        """(1 - alpha) CE / n + alpha T^2 KL / n_soft over this block's positions (CE / n alone
        when the batch has no soft target)."""
        logits = student.cls(hidden)
        loss = (1 - alpha if n_soft else 1.0) / n * F.cross_entropy(logits, labels, reduction="sum")
        if not n_soft:
            return loss
        has = rows >= 0
        if not bool(has.all()):  # a causal teacher targets every position: no copy then
            logits, rows = logits[has], rows[has]
        if not rows.shape[0]:
            return loss
        items = top_items[rows] - 1
        # one fused log-softmax over the item columns (not z - logsumexp(z): each op is a
        # full [positions, items] pass forward and back, and these passes, not the matmuls,
        # were most of a default student's step)
        log_q = F.log_softmax(logits[:, 1 : num_items + 1] / temperature, dim=1)
        q_top = log_q.gather(1, items)
        q_tail = torch.log(torch.clamp(-torch.expm1(torch.logsumexp(q_top, dim=1)), min=1e-30))
        p_top, p_tail = top_logp[rows], tail_logp[rows]
        kl = (p_top.exp() * (p_top - q_top)).sum(1) + p_tail.exp() * (p_tail - q_tail)
        return loss + alpha * temperature**2 / n_soft * kl.sum()

    class DistillLoss(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = student

        def forward(self, input_ids, labels, position_ids, kd_rows, attention_mask=None):
            if attention_mask is None:  # left-padded rows; packed batches bring their own mask
                attention_mask = (input_ids != 0).long()
            hidden = self.model.bert(
                input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask
            ).last_hidden_state
            keep = labels != -100
            labels, rows = labels[keep], kd_rows[keep]
            n, n_soft = max(1, labels.shape[0]), int((rows >= 0).sum()) if alpha else 0
            # per block of positions, so the [positions, items] logits never exist whole
            return chunked_rows(
                lambda h, y, r: block_loss(h, y, r, n, n_soft),
                hidden[keep],
                labels,
                rows,
                num_items=self.model.config.vocab_size,
            )

    return DistillLoss()


def start_from(student, source, config: DistillConfig, name: str = "teacher") -> dict:
    """Copy `source`'s weights (a RecModel: the teacher, or DistillConfig.init's model) into a
    fresh student where the shapes allow. Returns how it started, for the manifest:
    {"from": name, "layers": [...]}, or {"from": "random", "why": ...}."""
    model = source.model
    why = None
    if source.kind not in ("causal", "masked"):
        why = f"a {source.kind} {name} has no id embeddings to copy"
    elif source.positions != config.positions:
        why = f"the {name} counts positions from the {source.positions}, the student from the {config.positions}"
    elif model.config.num_hidden_layers < config.student.layers:
        why = f"the student has more layers than the {name}"
    if why is None:
        layers = teacher_init_layers(model.config.num_hidden_layers, config.student.layers)
        why = init_from_teacher(student, model, layers)
        if why is None:
            return {"from": name, "layers": layers}
    return {"from": "random", "why": why}


def student_meta(student, data, config: DistillConfig) -> dict:
    """What the student's manifest says of its inputs and catalogue."""
    meta = {
        "kind": config.student_kind,
        "num_items": data.num_items,
        "mask_token": data.mask_token,
        "max_len": config.student.max_len,
        "item_ids_sha256": item_ids_hash(data.item_ids()),
        "positions": config.positions,
    }
    if item_rank(student):
        meta["item_rank"] = item_rank(student)
    return meta


def student_batches(seqs: list, kd_rows: list, data, config: DistillConfig):
    """The batch maker for the student's kind, each position pointing at its soft-target row."""
    if config.student_kind == "masked":
        return masked_student_batches(
            seqs, config.student.max_len, config.train.batch_size, data.mask_token, config.mask_prob, kd_rows
        )
    return causal_batches(
        seqs, config.student.max_len, config.train.batch_size, kd_rows=kd_rows, positions=config.positions
    )


def train_student(
    make_student,
    teacher_dir: Path,
    data,
    config: DistillConfig,
    dist,
    out_dir: Path,
    usable: list[int] | None = None,
    desc: str = "distill",
) -> dict:
    """Train the model `make_student(teacher)` returns (fresh, or pruned and recovering) with how
    it started, against the cached teacher targets; the seed is set after the targets are ready,
    before it is built."""
    import torch

    sequences = data.train_sequences()
    usable = usable if usable is not None else [u for u, s in enumerate(sequences) if len(s) >= 2]
    started = time.perf_counter()
    targets = load_or_compute_targets(teacher_dir, data, config, dist)
    teacher = targets.pop("teacher")
    target_seconds = time.perf_counter() - started
    target_info = {
        "rows": int(len(targets["tail_logp"])),
        "computed": bool(targets.pop("computed")),
        "precision": teacher.precision,
    }
    torch.manual_seed(config.train.seed)
    student, start = make_student(teacher)
    student = student.to(dist.device)
    meta = student_meta(student, data, config)
    rows = row_lookup(targets)
    seqs = [sequences[u] for u in usable]
    batches = student_batches(seqs, [rows[u] for u in usable], data, config)
    loss_module = distill_loss_module(
        student,
        targets,
        data.num_items,
        config.alpha,
        config.temperature,
        item_popularity(sequences, data.num_items),
        config.tail_boost,
    )
    work = prepare_work_dir(
        out_dir,
        {
            "config": asdict(config),
            "teacher": str(teacher_dir),
            "data": str(data.path),
            "world": dist.world,
            "parameters": sum(p.numel() for p in student.parameters()),
        },
        dist,
    )
    result = fit(student, loss_module, batches, len(seqs), validator(data, meta), config.train, work, dist, desc=desc)
    return {
        "student": student,
        "meta": meta,
        "teacher": teacher,
        "teacher_dir": teacher_dir,
        "config": config,
        "result": result,
        "start": start,
        "cache_path": targets["cache_path"],
        "target_seconds": target_seconds,
        "target_info": target_info,
        "work": work_dir_for(out_dir),
    }


def write_student(
    out_dir,
    data,
    *,
    student,
    meta,
    teacher,
    teacher_dir,
    config,
    result,
    cache_path,
    target_seconds,
    work,
    overwrite=False,
    stage="student",
    manifest_config=None,
    extra=None,
    target_info=None,
    start=None,
):
    student.cpu()
    rec = RecModel(student, meta)
    test = evaluate(rec, data, "test", reference=teacher)
    teacher_test = evaluate(teacher, data, "test")
    inputs = {"data": data.path, "teacher": Path(teacher_dir), **init_input(start.get("from") if start else None)}
    with atomic_artifact(out_dir, stage, config=manifest_config or config, inputs=inputs, overwrite=overwrite) as (
        tmp,
        manifest,
    ):
        save_model(tmp / "model", student, meta)
        shutil.copy(data.path / "items.json", tmp / "items.json")
        write_json(tmp / "test_report.json", public(test))
        manifest.update(
            parameters={"student": rec.num_parameters, "teacher": teacher.num_parameters},
            metrics={
                "valid_ndcg10": result.best_metric,
                "test": headline(test),
                "teacher_test": headline(teacher_test),
            },
            teacher_targets={"cache": cache_path, "seconds": round(target_seconds, 1), **(target_info or {})},
            training={
                "epochs_run": result.epochs_run,
                "best_epoch": result.best_epoch,
                "stopped": result.stopped,
                "seconds": round(result.seconds, 1),
                "precision": result.precision,
                "history": result.history,
            },
            **({"init": start} if start else {}),
            **(extra or {}),
        )
    shutil.rmtree(work, ignore_errors=True)
    return manifest
