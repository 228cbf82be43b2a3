"""A tiny teacher exported for arm64 as ONNX, shared by the format tests."""

import pytest

from edgerec.core.models import Shape
from edgerec.core.training import TrainConfig

SHAPE = Shape(hidden=32, layers=1, heads=2, intermediate=64, max_len=12)


@pytest.fixture(scope="session")
def arm64_onnx(tmp_path_factory, data_dir):
    """The fp32 arm64 bundle folder (model.onnx + model.ort) of a 2-epoch causal teacher."""
    from edgerec.stages.export import ExportConfig, export
    from edgerec.stages.teacher import TeacherConfig, train_teacher

    root = tmp_path_factory.mktemp("arm64-onnx")
    train = TrainConfig(epochs=2, batch_size=16, lr=1e-2)
    train_teacher(data_dir, root / "model", TeacherConfig(kind="causal", shape=SHAPE, train=train))
    export(root / "model", data_dir, root / "fp32", ExportConfig(target="arm64", formats=("onnx",)))
    return root / "fp32"
