"""Shared fixtures: tiny synthetic interactions with a learnable sequential pattern.

Every test builds its data and models in-process; nothing is downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The emulated-ARM checks of the arm64 / rpi4 profiles take a minute or more per validate; they
# run for real in tests/test_emulator.py (which clears this), and the other tests' reports say
# "not run".
os.environ.setdefault("EDGEREC_EMULATE", "0")

N_ITEMS = 24


def synthetic_rows(n_users: int = 48, seed: int = 0) -> list[dict]:
    """Users walk the catalogue in steps of +1 (mostly), so the next item is predictable."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        length = int(rng.integers(6, 18))
        item = int(rng.integers(0, N_ITEMS))
        t = 1_000_000 + u * 1000
        seen = set()
        for step in range(length):
            while item in seen:
                item = (item + 1) % N_ITEMS
            seen.add(item)
            rows.append(
                {
                    "user": f"u{u}",
                    "item": f"i{item}",
                    "timestamp": t + step * 10,
                    "title": f"Movie {item} {'Space' if item % 2 else 'Love'} Story",
                }
            )
            item = (item + (1 if rng.random() < 0.85 else int(rng.integers(2, 5)))) % N_ITEMS
    return rows


@pytest.fixture(scope="session")
def interactions_csv(tmp_path_factory) -> Path:
    import pandas as pd

    path = tmp_path_factory.mktemp("raw") / "interactions.csv"
    pd.DataFrame(synthetic_rows()).to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory, interactions_csv) -> Path:
    from edgerec.stages.data import DataConfig, make_data

    out = tmp_path_factory.mktemp("artifacts") / "data"
    make_data(out, interactions=interactions_csv, config=DataConfig(title_col="title"))
    return out


@pytest.fixture
def lock_holder():
    """`with lock_holder(out) as pid:` another process holds `out`'s output lock meanwhile, as a
    concurrent edgerec command would."""
    import contextlib
    import subprocess
    import sys

    @contextlib.contextmanager
    def hold(out: Path):
        code = (
            "import sys; from edgerec.core.artifacts import output_lock\n"
            f"with output_lock({str(out)!r}):\n    print('held', flush=True); sys.stdin.read()"
        )
        holder = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        try:
            assert holder.stdout.readline().strip() == "held"
            yield holder.pid
        finally:
            holder.communicate("")

    return hold


@pytest.fixture(scope="session")
def arm64_onnx(tmp_path_factory, data_dir) -> Path:
    """The fp32 arm64 bundle folder (model.onnx + model.ort) of a 2-epoch causal teacher.

    Shared by the format tests; it lives here, not in tests/formats/conftest.py, because a second
    conftest module shadows this one for the tests that import `synthetic_rows` from it.
    """
    from edgerec.core.models import Shape
    from edgerec.core.training import TrainConfig
    from edgerec.stages.export import ExportConfig, export
    from edgerec.stages.teacher import TeacherConfig, train_teacher

    shape = Shape(hidden=32, layers=1, heads=2, intermediate=64, max_len=12)
    root = tmp_path_factory.mktemp("arm64-onnx")
    train = TrainConfig(epochs=2, batch_size=16, lr=1e-2)
    train_teacher(data_dir, root / "model", TeacherConfig(kind="causal", shape=shape, train=train))
    export(root / "model", data_dir, root / "fp32", ExportConfig(target="arm64", formats=("onnx",)))
    return root / "fp32"
