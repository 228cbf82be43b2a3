"""`edgerec prune`: structured pruning of a student, then recovery by distillation.

Attention heads and FFN neurons are ranked by a first-order Taylor estimate of how much the loss
on the *validation* users would change if each were removed, |sum activation x gradient| (Michel
et al., 2019, "Are Sixteen Heads Really Better than One?"; Molchanov et al., 2019), and the least
important are removed physically: HF's `prune_heads` shrinks the Q/K/V and output matrices and
records `config.pruned_heads`, and `prune_linear_layer` shrinks the FFN matrices. Every layer loses
the same number of heads and neurons, so the result is a standard `BertLMHeadModel` checkpoint
(`intermediate_size` updated) that loads, trains and exports like any other.

Recovery is a short distillation from the teacher through the same loop and the same cached
teacher targets as `edgerec distill` (the teacher does not run again). `iterations > 1` prunes in
steps (a share of the target sparsity, recover, repeat).

Hand-written because no maintained library does structured pruning of HF BERT with recovery
distillation (design.md: INC 3.x and NNCF 3.0 dropped it); the ranking and surgery are ~100 lines
over transformers' own pruning utilities.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgerec.core.artifacts import artifact_hash, check_output, read_artifact, read_manifest, writes_output
from edgerec.core.distillation import DistillConfig, train_student, write_student
from edgerec.core.errors import EdgerecError
from edgerec.core.evaluation import check_compatible, evaluate, headline, resolve_model_dir
from edgerec.core.graphs import scoring_graph
from edgerec.core.interactions import load_data
from edgerec.core.model_surgery import factorize_items, item_rank
from edgerec.core.models import RecModel, Shape, load_model
from edgerec.core.training import TrainConfig, setup_distributed
from edgerec.formats.onnx.export import export_onnx


@dataclass(frozen=True)
class PruneConfig:
    sparsity: float = 0.5  # share of heads and of FFN neurons removed from every layer
    embedding_rank: int | None = None  # factorise the item table to this rank (truncated SVD)
    drop_layers: int = 0  # remove this many whole layers, the least important first
    # Fit an int8 size budget (bytes): after head/FFN pruning, pick the largest item-table rank
    # whose int8 model fits (edgerec prune --target T uses the profile's max_model_mb).
    max_bytes: int | None = None
    iterations: int = 1  # prune in this many steps, recovering after each
    # Recovery: a short distillation (same teacher targets, same loss as edgerec distill).
    recovery: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=60, patience=10, max_minutes=4.0))
    alpha: float = 0.5
    temperature: float = 2.0

    def validate(self) -> None:
        if not 0 <= self.sparsity < 1:
            raise EdgerecError(f"--sparsity must be in [0, 1), got {self.sparsity}")
        if self.embedding_rank is not None and self.embedding_rank < 1:
            raise EdgerecError(f"--embedding-rank must be >= 1, got {self.embedding_rank}")
        if self.drop_layers < 0:
            raise EdgerecError(f"--drop-layers must be >= 0, got {self.drop_layers}")
        if self.max_bytes is not None and self.embedding_rank is not None:
            raise EdgerecError("give either a size budget (--target) or --embedding-rank, not both")
        if self.iterations < 1:
            raise EdgerecError(f"--iterations must be >= 1, got {self.iterations}")
        self.recovery.validate()


def plan(heads: int, intermediate: int, sparsity: float) -> tuple[int, int]:
    """How many heads and FFN neurons each layer loses at this sparsity."""
    drop_heads = int(round(heads * sparsity))
    drop_ffn = int(round(intermediate * sparsity))
    if drop_heads >= heads:
        raise EdgerecError(
            f"sparsity {sparsity} would remove all {heads} heads of every layer; use a lower "
            "--sparsity, or --drop-layers to remove whole layers"
        )
    if drop_ffn >= intermediate:
        raise EdgerecError(f"sparsity {sparsity} would remove all {intermediate} FFN neurons of every layer")
    return drop_heads, drop_ffn


def importance(
    model, data, max_len: int, batch_size: int = 128, meta: dict | None = None
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per layer: Taylor importance of each attention head and each FFN neuron on the validation
    users (next-item cross-entropy at the answer position). `meta`: the model's edgerec.json
    (kind, position convention); a causal model with "end" positions when omitted."""
    import torch

    layers = model.bert.encoder.layer
    heads = [np.zeros(layer.attention.self.num_attention_heads) for layer in layers]
    neurons = [np.zeros(layer.intermediate.dense.out_features) for layer in layers]
    hooks = []

    def on_context(index):
        def hook(module, args):
            context = args[0]
            size = layers[index].attention.self.attention_head_size

            def grad_hook(grad):
                contribution = (context * grad).reshape(*context.shape[:-1], -1, size).sum(dim=(1, 3))
                heads[index] += contribution.abs().sum(0).detach().double().numpy()

            context.register_hook(grad_hook)

        return hook

    def on_ffn(index):
        def hook(module, args, output):
            def grad_hook(grad):
                neurons[index] += (output * grad).sum(1).abs().sum(0).detach().double().numpy()

            output.register_hook(grad_hook)

        return hook

    for index, layer in enumerate(layers):
        hooks.append(layer.attention.output.dense.register_forward_pre_hook(on_context(index)))
        hooks.append(layer.intermediate.register_forward_hook(on_ffn(index)))
    histories, targets = data.examples("valid")
    was_training = model.training
    meta = dict(meta or {"kind": "causal", "num_items": data.num_items}, max_len=max_len)
    rec = RecModel(model, meta)  # eval(): no dropout, the estimate is about the model as it will run
    try:
        for start in range(0, len(histories), batch_size):
            logits = rec.logits(rec.encode(histories[start : start + batch_size]))
            loss = torch.nn.functional.cross_entropy(
                logits, torch.as_tensor(targets[start : start + batch_size], dtype=torch.long), reduction="sum"
            )
            model.zero_grad(set_to_none=True)
            loss.backward()
    finally:
        for hook in hooks:
            hook.remove()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return heads, neurons


def prune_model(model, head_scores, neuron_scores, drop_heads: int, drop_ffn: int) -> dict:
    """Remove the `drop_heads` least important heads and `drop_ffn` least important neurons from
    every layer, physically. Returns what was removed (original head numbering)."""
    import torch
    from transformers.pytorch_utils import prune_linear_layer

    removed_heads = {}
    for index, layer in enumerate(model.bert.encoder.layer):
        if drop_heads:
            # HF numbers heads as in the unpruned model: map the current ones back.
            already = set(model.config.pruned_heads.get(index, []))
            original = [h for h in range(model.config.num_attention_heads) if h not in already]
            worst = np.argsort(head_scores[index], kind="stable")[:drop_heads]
            removed_heads[index] = sorted(original[i] for i in worst)
        if drop_ffn:
            order = np.argsort(-neuron_scores[index], kind="stable")
            keep = torch.as_tensor(np.sort(order[: len(order) - drop_ffn]), dtype=torch.long)
            layer.intermediate.dense = prune_linear_layer(layer.intermediate.dense, keep, dim=0)
            layer.output.dense = prune_linear_layer(layer.output.dense, keep, dim=1)
    if drop_heads:
        model.prune_heads(removed_heads)
    if drop_ffn:
        model.config.intermediate_size = model.bert.encoder.layer[0].intermediate.dense.out_features
    return {"heads": removed_heads, "ffn_neurons_per_layer": model.config.intermediate_size}


def drop_layers(model, head_scores, neuron_scores, count: int) -> list[int]:
    """Remove the `count` layers whose heads and neurons matter least (summed Taylor importance),
    renumbering HF's `pruned_heads` so the checkpoint reloads. Returns the removed indices."""
    import torch

    layers = model.bert.encoder.layer
    if count >= len(layers):
        raise EdgerecError(f"--drop-layers {count} would remove all {len(layers)} layers")
    score = [float(h.sum() + n.sum()) for h, n in zip(head_scores, neuron_scores)]
    removed = sorted(np.argsort(score, kind="stable")[:count].tolist())
    kept = [i for i in range(len(layers)) if i not in removed]
    model.bert.encoder.layer = torch.nn.ModuleList([layers[i] for i in kept])
    model.config.num_hidden_layers = len(kept)
    old = model.config.pruned_heads
    model.config.pruned_heads = {new: old[i] for new, i in enumerate(kept) if i in old}
    return removed


def rank_for_budget(model, max_bytes: int, overhead: float = 1.15) -> int | None:
    """The largest item-table rank whose int8 model (1 byte per parameter, plus `overhead` for
    scales, biases and the graph, measured ~1.13 here) fits `max_bytes`; None when it already fits."""
    table = model.bert.embeddings.word_embeddings
    parameters = sum(p.numel() for p in model.parameters())
    if parameters * overhead <= max_bytes:
        return None
    vocab, hidden = table.num_embeddings, table.embedding_dim
    rest = parameters - sum(p.numel() for p in table.parameters())
    rank = int((max_bytes / overhead - rest) // (vocab + hidden))
    if rank < 1:
        raise EdgerecError(
            f"even a rank-1 item table leaves the model above {max_bytes / 1e6:.3f} MB in int8; "
            "raise --sparsity or the budget"
        )
    return min(rank, hidden)


def onnx_bytes(rec) -> int:
    """Size of the model's fp32 ONNX export (edgerec's export graph), measured by exporting it."""
    import tempfile

    import torch

    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        path = Path(tmp) / "model.onnx"
        export_onnx(scoring_graph(rec), path, rec.max_len, 17, "int64", None, {})
        return path.stat().st_size


def _check_request(config: PruneConfig, model) -> tuple[int, int]:
    """Fail before any work on a request this model cannot meet; (heads, FFN neurons) per layer now."""
    bert, layer = model.config, model.bert.encoder.layer[0]
    heads_now, ffn_now = layer.attention.self.num_attention_heads, layer.intermediate.dense.out_features
    plan(heads_now, ffn_now, config.sparsity)
    if config.drop_layers >= bert.num_hidden_layers:
        raise EdgerecError(f"--drop-layers {config.drop_layers} would remove all {bert.num_hidden_layers} layers")
    if config.embedding_rank and config.embedding_rank > bert.hidden_size:
        raise EdgerecError(
            f"--embedding-rank {config.embedding_rank} is larger than the hidden size {bert.hidden_size}"
        )
    if config.embedding_rank and item_rank(model) and config.embedding_rank >= item_rank(model):
        raise EdgerecError(f"the item table already has rank {item_rank(model)}")
    return heads_now, ffn_now


def _recovery_config(config: PruneConfig, rec) -> DistillConfig:
    """The distillation that recovers the pruned model: its own shape, less the dropped layers."""
    bert = rec.model.config
    shape = Shape(
        hidden=bert.hidden_size,
        layers=bert.num_hidden_layers - config.drop_layers,
        heads=bert.num_attention_heads,
        intermediate=bert.intermediate_size,
        max_len=rec.max_len,
        dropout=bert.hidden_dropout_prob,
        attention_dropout=bert.attention_probs_dropout_prob,
    )
    return DistillConfig(
        student=shape,
        alpha=config.alpha,
        temperature=config.temperature,
        train=config.recovery,
        student_kind=rec.kind,
        positions=rec.positions,
    )


def _cut(model, step: int, config: PruneConfig, now: tuple[int, int], data, rec) -> tuple[dict, list]:
    """One step's removal: the heads and FFN neurons that bring it to this step's share (least
    important first), and on the first step the dropped layers and the factorised item table."""
    heads_now, ffn_now = now
    share = config.sparsity * step / config.iterations
    current = model.bert.encoder.layer[0]
    drop_heads = int(round(heads_now * share)) - (heads_now - current.attention.self.num_attention_heads)
    drop_ffn = int(round(ffn_now * share)) - (ffn_now - current.intermediate.dense.out_features)
    head_scores, neuron_scores = importance(model.cpu(), data, rec.max_len, meta=rec.meta)
    removed = prune_model(model, head_scores, neuron_scores, max(drop_heads, 0), max(drop_ffn, 0))
    if config.drop_layers and step == 1:
        removed["layers"] = drop_layers(model, head_scores, neuron_scores, config.drop_layers)
    rank = config.embedding_rank
    if config.max_bytes and step == 1:
        rank = rank_for_budget(model, config.max_bytes)
    if rank and step == 1:  # the table is factorised once, then recovers
        factorize_items(model, rank, init="svd")
        removed["item_rank"] = rank
    return removed, head_scores


def _prune_and_recover(model, config: PruneConfig, now, data, rec, teacher_dir, out_dir, dist, log):
    """`config.iterations` rounds of cutting a share of what is left and recovering by
    distillation; returns the model, each round's record and the last recovery's result."""
    steps, trained = [], None
    distill_config = _recovery_config(config, rec)
    for step in range(1, config.iterations + 1):
        removed, head_scores = _cut(model, step, config, now, data, rec)
        parameters = sum(p.numel() for p in model.parameters())
        log(
            f"step {step}/{config.iterations}: removed heads {removed['heads']}, FFN now "
            f"{removed['ffn_neurons_per_layer']} per layer, {parameters:,} parameters; recovering"
        )
        trained = train_student(
            lambda _teacher: (model, None),
            teacher_dir,
            data,
            distill_config,
            dist,
            out_dir,
            desc=f"recover {step}/{config.iterations}",
        )
        model = trained["student"]
        steps.append(
            {
                "step": step,
                "sparsity": config.sparsity * step / config.iterations,
                "removed": removed,
                "parameters": parameters,
                "valid_ndcg10": trained["result"].best_metric,
                "head_importance": [h.tolist() for h in head_scores],
                "seconds": round(trained["result"].seconds, 1),
            }
        )
    return model, steps, trained


@writes_output
def prune(
    student_dir: Path,
    teacher_dir: Path,
    data_dir: Path,
    out_dir: Path,
    config: PruneConfig = PruneConfig(),
    *,
    overwrite: bool = False,
    log=print,
) -> dict | None:
    """Prune a student artifact, recover it by distillation, write a `pruned` artifact."""
    config.validate()
    check_output(out_dir, "pruned", overwrite)
    source = read_manifest(student_dir, ("student", "pruned"))
    read_artifact(teacher_dir, "teacher")  # used for recovery, after the pruning: check it now
    rec = load_model(resolve_model_dir(student_dir))
    if rec.kind != "causal":
        raise EdgerecError(f"{student_dir}: prune works on causal students (edgerec distill), not {rec.kind!r}")
    data = load_data(data_dir)
    check_compatible(rec, data)
    model = rec.model
    now = _check_request(config, model)
    before = rec.num_parameters
    before_metrics = headline(evaluate(rec, data, "test"))
    before_bytes = onnx_bytes(rec)
    dist = setup_distributed()
    started = time.perf_counter()
    model, steps, trained = _prune_and_recover(model, config, now, data, rec, teacher_dir, out_dir, dist, log)
    if not dist.is_main:
        return None
    extra = {
        "pruning": {
            "exported_onnx_bytes_before": before_bytes,
            "exported_onnx_bytes_after": onnx_bytes(RecModel(model.cpu().eval(), trained["meta"])),
            "source": str(student_dir),
            "source_stage": source["stage"],
            "source_hash": artifact_hash(student_dir),
            "parameters_before": before,
            "parameters_after": sum(p.numel() for p in model.parameters()),
            "test_before": before_metrics,
            "heads_per_layer": model.bert.encoder.layer[0].attention.self.num_attention_heads,
            "ffn_per_layer": model.config.intermediate_size,
            "steps": steps,
            "seconds": round(time.perf_counter() - started, 1),
        }
    }
    trained.pop("student")
    return write_student(
        out_dir,
        data,
        student=model,
        overwrite=overwrite,
        stage="pruned",
        manifest_config=config,
        extra=extra,
        **trained,
    )
