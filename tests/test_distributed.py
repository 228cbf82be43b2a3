"""Training runs unchanged under torchrun with DDP: 2 CPU processes, gloo backend."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from edgerec.training import Dist, shard


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
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--standalone", "-m", "edgerec.cli", "teacher", "--data", str(data_dir),
           "--out", str(out), "--hidden", "16", "--layers", "1", "--intermediate", "32",
           "--max-len", "12", "--epochs", "3", "--json"]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "teacher" and manifest["training"]["epochs_run"] == 3
    assert (out / "model" / "model.safetensors").is_file()
    # only rank 0 printed the result and wrote the artifact
    assert result.stdout.count('"stage": "teacher"') == 1
    assert [p.name for p in tmp_path.iterdir()] == ["t"]
