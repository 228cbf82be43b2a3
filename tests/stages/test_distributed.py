"""Training runs unchanged under torchrun with DDP: 2 CPU processes, gloo backend."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from edgerec.core.errors import EdgerecError
from edgerec.core.training import Dist, shard


def test_shards_cover_every_example_with_equal_sizes():
    parts = [shard(11, Dist(rank=r, world=3), epoch=2, seed=0) for r in range(3)]
    assert len({len(p) for p in parts}) == 1
    assert set(np.concatenate(parts).tolist()) == set(range(11))
    again = [shard(11, Dist(rank=r, world=3), epoch=2, seed=0) for r in range(3)]
    assert all((a == b).all() for a, b in zip(parts, again))


@pytest.mark.slow
def test_teacher_under_torchrun_two_processes(tmp_path, data_dir):
    out = tmp_path / "t"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--standalone",
        "-m",
        "edgerec.cli",
        "teacher",
        "--data",
        str(data_dir),
        "--out",
        str(out),
        "--hidden",
        "16",
        "--layers",
        "1",
        "--intermediate",
        "32",
        "--max-len",
        "12",
        "--epochs",
        "3",
        "--json",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "teacher" and manifest["training"]["epochs_run"] == 3
    assert (out / "model" / "model.safetensors").is_file()
    # only rank 0 printed the result and wrote the artifact
    assert result.stdout.count('"stage": "teacher"') == 1
    assert [p.name for p in tmp_path.iterdir()] == ["t"]


def test_cosine_schedule_decays_by_epoch_and_constant_does_not():
    from edgerec.core.training import TrainConfig, epoch_lr

    cosine = TrainConfig(epochs=4, lr=1e-3, schedule="cosine")
    assert [round(epoch_lr(cosine, e), 6) for e in range(4)] == [1e-3, 0.000854, 0.0005, 0.000146]
    assert all(epoch_lr(TrainConfig(epochs=4, lr=1e-3), e) == 1e-3 for e in range(4))
    with pytest.raises(EdgerecError, match="schedule"):
        TrainConfig(schedule="step").validate()


def test_heap_is_released_mid_epoch_only_over_its_limit():
    from edgerec.core.memory import Heap, resident_bytes

    calls = []
    assert resident_bytes() > 0  # Linux: the tests run where /proc exists
    capped = Heap(calls.append, limit=1)  # any process is over 1 byte
    capped.check()
    assert calls == [0] and capped.releases == 1
    capped.check()  # holds no more than after that release: not again
    assert capped.releases == 1
    uncapped = Heap(calls.append, limit=0)
    uncapped.check()
    assert uncapped.releases == 0
    uncapped.release()
    assert uncapped.releases == 1
