"""The CLI's defaults are the library's defaults (one source of truth, checked)."""

import inspect

from edgerec.cli import distill as distill_cli
from edgerec.cli import teacher as teacher_cli
from edgerec.core.distillation import DistillConfig
from edgerec.stages.teacher import TeacherConfig


def _defaults(function):
    return {name: p.default for name, p in inspect.signature(function).parameters.items()}


def _expected(shape, train):
    return {
        "hidden": shape.hidden,
        "layers": shape.layers,
        "heads": shape.heads,
        "intermediate": shape.intermediate,
        "max_len": shape.max_len,
        "dropout": shape.dropout,
        "epochs": train.epochs,
        "batch_size": train.batch_size,
        "lr": train.lr,
        "patience": train.patience,
        "max_minutes": train.max_minutes,
        "seed": train.seed,
        "warmup_steps": train.warmup_steps,
    }


def test_teacher_cli_defaults_match_teacher_config():
    config = TeacherConfig()
    got = _defaults(teacher_cli.train)
    for name, value in _expected(config.shape, config.train).items():
        assert got[name] == value, name
    assert got["kind"] == config.kind


def test_distill_cli_defaults_match_distill_config():
    config = DistillConfig()
    got = _defaults(distill_cli.distill)
    for name, value in _expected(config.student, config.train).items():
        assert got[name] == value, name
    for name in ("alpha", "temperature", "top_k", "kd_positions"):
        assert got[name] == getattr(config, name), name
