"""The training loop that `teacher` and `distill` share: plain PyTorch DDP, resumable, early-stopped.

It runs unchanged as one process or under `torchrun` / `accelerate launch` (both set RANK,
WORLD_SIZE, MASTER_ADDR...): each rank trains on its shard of users, validates on its shard, and
the validation sums are all-reduced, so every rank takes the same early-stopping decision. Only
rank 0 writes checkpoints. Backend: nccl on GPUs, gloo on CPU.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgerec.core.errors import EdgerecError
from edgerec.core.memory import reuse_freed_memory


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 200
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    # Epochs without a better validation NDCG@10 before stopping; the best weights are kept.
    patience: int = 20
    max_minutes: float | None = None  # wall-clock budget; stops after the epoch that crosses it
    seed: int = 0
    # Linear learning-rate warm-up over this many optimizer steps. Post-LN BERTs wider than ~128
    # sat on the popularity plateau at lr 1e-3 without it (see issue notes); 0 keeps the
    # measured default teacher unchanged.
    warmup_steps: int = 0
    # Forward passes in bf16 autocast ("bf16"), in fp32 ("fp32"), or bf16 where the CPU has bf16
    # dot products (AVX512-BF16 / AMX) or on a bf16 GPU, fp32 elsewhere ("auto"). The loss's
    # softmax and the optimizer stay fp32 (autocast's own rules); the manifest says which ran.
    precision: str = "fp32"
    # Learning rate over the epochs after warm-up: "constant", or "cosine" (from lr down to 0 at
    # the last epoch of `epochs`, half a cosine, set once per epoch: the budget is epochs, so
    # the same command decays the same way on any machine; an early stop ends it sooner).
    schedule: str = "constant"

    def validate(self) -> None:
        if self.schedule not in SCHEDULES:
            raise EdgerecError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1 or self.warmup_steps < 0:
            raise EdgerecError("epochs, batch size and patience must be >= 1, warm-up >= 0")
        if not self.lr > 0:
            raise EdgerecError(f"learning rate must be > 0, got {self.lr}")
        if self.precision not in PRECISIONS:
            raise EdgerecError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")


PRECISIONS = ("fp32", "bf16", "auto")
SCHEDULES = ("constant", "cosine")


def epoch_lr(config: TrainConfig, epoch: int) -> float:
    """The learning rate of epoch `epoch` (0-based) before warm-up scaling."""
    if config.schedule == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * epoch / config.epochs))
    return config.lr


BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo: oneDNN has bf16 dot products


def resolve_precision(precision: str, device: str = "cpu") -> str:
    """What "auto" means on this machine: bf16 where it has fast bf16 arithmetic, else fp32."""
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    try:
        flags = next((line.split(":", 1)[1].split() for line in open("/proc/cpuinfo") if line.startswith("flags")), [])
    except OSError:
        flags = []
    return "bf16" if any(f in flags for f in BF16_CPU_FLAGS) else "fp32"


def autocast(precision: str, device: str = "cpu"):
    """The forward pass's autocast context for a resolved precision (a no-op for fp32)."""
    import torch

    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast("cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16)


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_world: int = 1
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_sum(self, values: list[float]) -> list[float]:
        if self.world == 1:
            return values
        import torch
        import torch.distributed as dist

        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


def setup_distributed() -> Dist:
    """Join the process group that torchrun / accelerate launch describe in the environment."""
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    cuda = torch.cuda.is_available()
    if world == 1:
        return Dist(device="cuda" if cuda else "cpu")
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    rank = dist.get_rank()
    device = "cpu"
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    else:
        # Share the cores between the local processes instead of oversubscribing them.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    return Dist(rank=rank, world=world, local_world=local_world, device=device)


def shard(n: int, dist: Dist, epoch: int, seed: int, shuffle: bool = True) -> np.ndarray:
    """This rank's indices for an epoch; padded like DistributedSampler so every rank gets as many."""
    order = np.random.default_rng(seed + epoch).permutation(n) if shuffle else np.arange(n)
    per = math.ceil(n / dist.world)
    order = np.resize(order, per * dist.world)
    return order[dist.rank :: dist.world]


@dataclass
class FitResult:
    best_metric: float
    best_epoch: int
    epochs_run: int
    seconds: float
    history: list[dict] = field(default_factory=list)
    stopped: str = "epochs"
    precision: str = "fp32"  # what the forward passes ran in


def fit(
    model,
    loss_module,
    make_batches: Callable[[np.ndarray, np.random.Generator], Iterable[dict]],
    num_examples: int,
    validate: Callable[[object, Dist], tuple[float, float]],
    config: TrainConfig,
    work_dir: Path,
    dist: Dist,
    desc: str = "train",
) -> FitResult:
    """Train `loss_module` (which owns `model`), keep the best `model` by validation metric.

    `make_batches(indices, rng)` yields batches (dicts of tensors) for this rank's examples;
    `validate(model, dist)` returns (sum of the per-user metric, number of users) on this rank's
    shard. Checkpoints go to `work_dir/last` (resumable) and `work_dir/best`.
    """
    import torch
    from safetensors.torch import load_model
    from tqdm.auto import tqdm

    config.validate()
    torch.manual_seed(config.seed)
    optimizer = torch.optim.AdamW(loss_module.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    last, best = Path(work_dir) / "last", Path(work_dir) / "best"
    state = _resume(last, loss_module, optimizer)
    trainable = loss_module
    if dist.world > 1:  # wrapped after loading, so every rank starts from the same weights
        trainable = torch.nn.parallel.DistributedDataParallel(loss_module)
    started = time.perf_counter() - state["seconds"]
    stopped = "epochs"
    precision = resolve_precision(config.precision, dist.device)
    bar = tqdm(
        total=config.epochs,
        initial=state["epoch"],
        desc=desc,
        disable=not dist.is_main,
        unit="epoch",
        dynamic_ncols=True,
    )
    with reuse_freed_memory() as heap:
        while state["epoch"] < config.epochs:
            epoch = state["epoch"]
            batches = make_batches(
                shard(num_examples, dist, epoch, config.seed), np.random.default_rng([config.seed, epoch, dist.rank])
            )
            losses = _train_epoch(trainable, optimizer, batches, config, epoch, state, precision, dist, heap)
            total, count = dist.all_sum(list(validate(model, dist)))
            heap.release()  # the epoch's freed blocks go back: the heap does not grow epoch after epoch
            metric = total / max(count, 1.0)
            improved = _record_epoch(state, epoch, losses, metric, started)
            if dist.is_main:
                _save_checkpoints(improved, best, last, model, loss_module, optimizer, state)
            dist.barrier()
            bar.update(1)
            bar.set_postfix(
                loss=f"{state['history'][-1]['loss']:.3f}",
                val_ndcg10=f"{metric:.4f}",
                best=f"{state['best_metric']:.4f}",
            )
            stopped = _stop_reason(config, state, epoch)
            if stopped != "epochs":
                break
    bar.close()
    if state["best_epoch"] > 0 and dist.is_main:  # only rank 0 goes on to write the artifact
        load_model(model, str(best / "model.safetensors"))
    return FitResult(
        best_metric=state["best_metric"],
        best_epoch=state["best_epoch"],
        epochs_run=state["epoch"],
        seconds=state["seconds"],
        history=state["history"],
        stopped=stopped,
        precision=precision,
    )


def _resume(last: Path, loss_module, optimizer) -> dict:
    """Resume from the last finished epoch, or start a fresh state. The work dir must be visible
    to every rank (one machine, or a shared filesystem); our own files, loaded with weights_only=True."""
    import torch
    from safetensors.torch import load_model

    if not (last / "state.json").is_file():
        return {"epoch": 0, "best_metric": -1.0, "best_epoch": -1, "history": [], "seconds": 0.0, "steps": 0}
    state = json.loads((last / "state.json").read_text())
    load_model(loss_module, str(last / "weights.safetensors"))
    optimizer.load_state_dict(torch.load(last / "optimizer.pt", weights_only=True))
    return state


def _train_epoch(
    trainable, optimizer, batches, config: TrainConfig, epoch: int, state: dict, precision, dist, heap
) -> list:
    """One pass over this rank's batches at the epoch's learning rate (warmed up by step)."""
    lr = epoch_lr(config, epoch)
    for group in optimizer.param_groups:
        group["lr"] = lr
    trainable.train()
    losses = []
    for batch in batches:
        with autocast(precision, dist.device):
            loss = trainable(**batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.warmup_steps:
            scale = min(1.0, (state.get("steps", 0) + 1) / config.warmup_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr * scale
        optimizer.step()
        state["steps"] = state.get("steps", 0) + 1
        losses.append(float(loss.detach()))
        heap.check()
    return losses


def _record_epoch(state: dict, epoch: int, losses: list, metric: float, started: float) -> bool:
    """Add the epoch to the history; True when it is the best so far."""
    loss_mean = float(np.mean(losses)) if losses else float("nan")
    state["history"].append({"epoch": epoch + 1, "loss": loss_mean, "valid_ndcg10": metric})
    state["epoch"] = epoch + 1
    state["seconds"] = time.perf_counter() - started
    improved = metric > state["best_metric"]
    if improved:
        state["best_metric"], state["best_epoch"] = metric, epoch + 1
    return improved


def _save_checkpoints(improved: bool, best: Path, last: Path, model, loss_module, optimizer, state: dict) -> None:
    from safetensors.torch import save_model

    if improved:
        best.mkdir(parents=True, exist_ok=True)
        save_model(model, str(best / "model.safetensors"))
    _save_last(last, loss_module, optimizer, state)


def _stop_reason(config: TrainConfig, state: dict, epoch: int) -> str:
    """ "epochs" to go on; why training stops early otherwise (epoch budgets; the minutes are a guard)."""
    if epoch + 1 - state["best_epoch"] >= config.patience:
        return "early-stopping"
    if config.max_minutes is not None and state["seconds"] >= 60 * config.max_minutes:
        return "time-budget"
    return "epochs"


def _save_last(last: Path, loss_module, optimizer, state: dict) -> None:
    """Write the resume point atomically: a crash mid-write keeps the previous one."""
    import shutil

    import torch
    from safetensors.torch import save_model

    tmp = last.with_name(last.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(loss_module, str(tmp / "weights.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps(state))
    shutil.rmtree(last, ignore_errors=True)
    os.replace(tmp, last)


# --------------------------------------------------------------------------- work folders


def work_dir_for(out_dir: Path) -> Path:
    return Path(out_dir).parent / f".{Path(out_dir).name}.work"


def prepare_work_dir(out_dir: Path, config_payload: dict, dist) -> Path:
    """Resume when the same run was interrupted; start clean when the config changed."""
    work = work_dir_for(out_dir)
    stamp = work / "config.json"
    text = json.dumps(config_payload, sort_keys=True, default=str)
    if dist.is_main:
        if work.exists() and (not stamp.is_file() or stamp.read_text() != text):
            shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        stamp.write_text(text)
    dist.barrier()
    return work
