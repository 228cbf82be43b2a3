"""Hardware target profiles: `targets/*.toml` loaded into frozen dataclasses.

What differs between targets lives in these files, not in `if target == ...` chains. Loading is
strict: an unknown key, a wrong type or a value outside the allowed set fails with a message that
names the file, the key and what is allowed. Users add profiles from a folder of their own
(`--targets-dir` or EDGEREC_TARGETS_DIR); a profile there overrides a shipped one of the same name.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path

from edgerec.core.errors import EdgerecError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SHIPPED = Path(__file__).resolve().parents[2] / "targets"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Runtime:
    name: str  # onnxruntime | litert | tflite-runtime | executorch
    min_version: str
    # Where the runtime lives when it cannot share edgerec's environment (tflite-runtime 2.14
    # needs NumPy 1.x): "local" (same Python) or "isolated" (its own venv, like a device).
    environment: str = "local"
    execution_provider: str = "CPUExecutionProvider"


@dataclass(frozen=True)
class OnnxSettings:
    opset: int = 17
    input_dtype: str = "int64"  # int64 | int32
    # ORT Mobile: also ship model.ort (+ step.ort) and required_operators.config for a reduced
    # build, optimized for this platform (arm | amd64); "" ships ONNX only.
    ort_format: str = ""


@dataclass(frozen=True)
class Quantization:
    scheme: str = "static"  # ONNX: static (calibrated int8) | dynamic (weight-only int8)
    # TFLite: dynamic (int8 weights; FULLY_CONNECTED in int8 on run-time-quantized activations,
    # lookups and BATCH_MATMUL weight-only) | static (full integer) | weight_only
    tflite_scheme: str = "dynamic"
    format: str = "QDQ"  # QDQ | QOperator
    per_channel: bool = True
    activation_type: str = "uint8"  # uint8 | int8
    weight_type: str = "int8"  # uint8 | int8
    reduce_range: bool = False
    calibration: str = "minmax"  # minmax | entropy | percentile
    keep_float: tuple[str, ...] = ()  # op types left in float
    max_ndcg_drop: float = 0.01  # tolerated relative NDCG@10 drop vs fp32 (when significant)
    # The int8 forms quantize may ship, in order of preference (edgerec/stages/quantize.py). ONNX:
    # static_qdq | static_qoperator (calibrated, the settings above) | dynamic (int8 weights,
    # activations quantized per call) | weight_only (int8 storage, DequantizeLinear folded into
    # float weights when the session is created) | matmul_nbits (8-bit MatMulNBits with int8
    # compute, accuracy level 4; the item lookup reads the same table: edgerec/formats/onnx/nbits.py).
    # TFLite: dynamic | static | weight_only. Empty:
    # the one form `scheme`/`format` (ONNX) and `tflite_scheme` name. With more than one form and
    # an emulated CPU in [device], quantize ships the form with the fewest ARM instructions per
    # call among those whose accuracy fits (and size, below); else the first that fits.
    onnx_forms: tuple[str, ...] = ()
    tflite_forms: tuple[str, ...] = ()
    # ExecuTorch: static (PT2E, int8 weights and activations from calibration ranges) | dynamic
    # (int8 weights, activations quantized per call), both with XNNPACK's quantizer.
    executorch_forms: tuple[str, ...] = ("dynamic", "static")
    # Optional: int8 file size / fp32 file size a form must stay within to be chosen.
    max_size_ratio: float | None = None
    # Optional: the share of fp32's top-10 on the validation users a form must keep to be chosen
    # (mean top-10 agreement with the fp32 file). NDCG@10 alone cannot see a form that reorders
    # the list while hitting the held-out item as often: ExecuTorch static int8 kept NDCG@10
    # (paired p = 0.07) and 0.964 of fp32's top-10 (benchmarks/results/pte.json).
    min_top10_agreement: float | None = None


@dataclass(frozen=True)
class Budgets:
    max_model_mb: float
    max_p95_ms: float
    min_ndcg_retained: float  # student NDCG@10 / teacher NDCG@10 on the same users
    reference_device: str
    parity_atol: float = 1e-4  # export parity: max |score difference| vs PyTorch in fp32
    # Optional: bundle catalogue coverage@10 / the teacher's (popularity collapse guard).
    min_coverage_retained: float | None = None
    # CPU flags (/proc/cpuinfo) with which the validating machine itself stands for the reference
    # device, so its latency can be held to max_p95_ms. Empty: only a run on a device
    # (validate --device) checks the latency budget; elsewhere it is reported as not checked.
    host_stands_for_device_with: tuple[str, ...] = ()
    # Optional: ARM instructions per batch-1 call of the bundle's full model on the first
    # emulated CPU of [device] (no timing noise; the median of two or three counts).
    max_instructions_per_call: float | None = None


@dataclass(frozen=True)
class DeviceSettings:
    # qemu CPU models to run the bundle on, through the aarch64 builds of the runtimes
    # (edgerec/devices/emulator.py), e.g. ["cortex-a76"]; empty: no emulated device.
    emulate: tuple[str, ...] = ()
    # Test users run under emulation (150-450x slower than native); full-set metrics stay on
    # the host.
    users: int = 50
    # How an ARM instruction count is taken: (the count of a process making count_calls[1]
    # batch-1 calls - one making count_calls[0]) / the difference, so start-up cancels; taken
    # count_repeats times (once more when they disagree by > 1%) and the median reported.
    count_calls: tuple[int, ...] = (5, 105)
    count_repeats: int = 2

    def __post_init__(self):
        calls = self.count_calls
        if len(calls) != 2 or not 0 <= calls[0] < calls[1]:
            raise EdgerecError(f"device.count_calls must be two call counts, fewer first, got {list(calls)}")


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    formats: tuple[str, ...]  # what export and build write by default
    runtimes: tuple[Runtime, ...]
    budgets: Budgets
    # Formats written only when asked (export/build --formats), e.g. one that needs an extra.
    offers: tuple[str, ...] = ()
    threads: int = 1
    onnx: OnnxSettings = field(default_factory=OnnxSettings)
    quantization: Quantization = field(default_factory=Quantization)
    # Also export the incremental step model (edgerec.devices.incremental) beside the full one; needs a
    # causal student with positions counted from the window start (distill --positions start).
    step_model: bool = False
    device: DeviceSettings = field(default_factory=DeviceSettings)
    version: int = SCHEMA_VERSION

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


ALLOWED = {
    "formats": {"onnx", "tflite", "executorch"},
    "offers": {"onnx", "tflite", "executorch"},
    "name@runtimes": {"onnxruntime", "litert", "tflite-runtime", "executorch"},
    "environment": {"local", "isolated"},
    "input_dtype": {"int64", "int32"},
    "ort_format": {"", "arm", "amd64"},
    "scheme": {"static", "dynamic"},
    "tflite_scheme": {"static", "dynamic", "weight_only"},
    "onnx_forms": {"static_qdq", "static_qoperator", "dynamic", "weight_only", "matmul_nbits"},
    "tflite_forms": {"static", "dynamic", "weight_only"},
    "executorch_forms": {"static", "dynamic"},
    "format": {"QDQ", "QOperator"},
    "activation_type": {"uint8", "int8"},
    "weight_type": {"uint8", "int8"},
    "calibration": {"minmax", "entropy", "percentile"},
}


# The sense of every number a profile holds: (lowest, highest), both allowed; None = no bound.
# A value outside is refused with the key and the range, as a wrong type is (a budget of -2 ms
# would make every bundle fail; an opset of 3 would make every export fail later and obscurely).
RANGES = {
    "threads": (1, 256),
    "opset": (7, 23),  # what torch.onnx.export (dynamo=False) and ORT 1.17+ both know
    "max_ndcg_drop": (0.0, 1.0),
    "max_size_ratio": (1e-6, 1.0),
    "min_top10_agreement": (0.0, 1.0),
    "max_model_mb": (1e-6, None),
    "max_p95_ms": (1e-6, None),
    "min_ndcg_retained": (0.0, 10.0),
    "parity_atol": (0.0, 1.0),
    "min_coverage_retained": (0.0, 10.0),
    "max_instructions_per_call": (1.0, None),
    "users": (1, 1_000_000),
    "count_calls": (0, 100_000),
    "count_repeats": (1, 9),
    "version": (1, None),
}
_VERSION = re.compile(r"^\d+(\.\d+){0,3}$")


def _in_range(value, path: Path, key: str, leaf: str):
    if isinstance(value, float) and not math.isfinite(value):
        raise EdgerecError(f"{path}: '{key}' is {value!r}; a finite number is needed")
    low, high = RANGES.get(leaf, (None, None))
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise EdgerecError(f"{path}: '{key}' is {value!r}; allowed: {bounds}")
    if leaf == "min_version" and not _VERSION.match(value):
        raise EdgerecError(f"{path}: '{key}' is {value!r}; expected a version like \"1.17\"")


def _build(cls, raw, path: Path, where: str):
    if not isinstance(raw, dict):
        raise EdgerecError(f"{path}: '{where}' must be a table")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            raise EdgerecError(f"{path}: unknown key '{_join(where, key)}' (allowed: {', '.join(sorted(names))})")
    values = {}
    for f in dataclasses.fields(cls):
        key = _join(where, f.name)
        if f.name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise EdgerecError(f"{path}: missing key '{key}'")
            continue
        values[f.name] = _convert(hints[f.name], raw[f.name], path, key)
    return cls(**values)


def _convert(hint, value, path: Path, key: str):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if type(None) in args:  # `X | None`: TOML has no null, so a present key is an X
        if value is None:  # (a profile read back from report.json / to_dict)
            return None
        return _convert(next(a for a in args if a is not type(None)), value, path, key)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path, key)
    if origin is tuple:
        if not isinstance(value, list):
            raise EdgerecError(f"{path}: '{key}' must be a list, got {type(value).__name__}")
        inner = typing.get_args(hint)[0]
        return tuple(_convert(inner, v, path, f"{key}[{i}]") for i, v in enumerate(value))
    expected = {int: (int,), float: (int, float), str: (str,), bool: (bool,)}[hint]
    if isinstance(value, bool) and hint is not bool or not isinstance(value, expected):
        raise EdgerecError(f"{path}: '{key}' must be {hint.__name__}, got {value!r}")
    leaf = key.split(".")[-1].split("[")[0]
    rule = ALLOWED.get(f"{leaf}@{key.split('.')[0].split('[')[0]}") or ALLOWED.get(leaf)
    if rule is not None and value not in rule:
        raise EdgerecError(f"{path}: '{key}' is {value!r}; allowed: {', '.join(sorted(rule))}")
    _in_range(value, path, key, leaf)
    return float(value) if hint is float else value


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def load_target_file(path: Path) -> Target:
    try:
        raw = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise EdgerecError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise EdgerecError(f"{path}: not a text file (a target profile is TOML)") from None
    except tomllib.TOMLDecodeError as exc:
        raise EdgerecError(f"{path}: not valid TOML ({exc})") from None
    target = _build(Target, raw, Path(path), "")
    if target.version != SCHEMA_VERSION:
        raise EdgerecError(f"{path}: version {target.version} is not supported (expected {SCHEMA_VERSION})")
    if target.name != Path(path).stem:
        raise EdgerecError(f"{path}: name '{target.name}' must match the file name '{Path(path).stem}'")
    if not target.formats or not target.runtimes:
        raise EdgerecError(f"{path}: a target needs at least one format and one runtime")
    return target


def search_path(targets_dir: Path | None = None) -> list[Path]:
    """User folders first (so they override shipped profiles), then the shipped ones."""
    folders = []
    for folder in (targets_dir, os.environ.get("EDGEREC_TARGETS_DIR")):
        if folder:
            if not Path(folder).is_dir():
                raise EdgerecError(f"{folder}: targets directory does not exist")
            folders.append(Path(folder))
    folders.append(SHIPPED)
    return folders


def available(targets_dir: Path | None = None) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in search_path(targets_dir):
        for path in sorted(folder.glob("*.toml")):
            found.setdefault(path.stem, path)
    return found


def load_target(name: str, targets_dir: Path | None = None) -> Target:
    profiles = available(targets_dir)
    if name not in profiles:
        close = difflib.get_close_matches(name, profiles, n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise EdgerecError(f"unknown target '{name}' (available: {', '.join(sorted(profiles))}){hint}")
    return load_target_file(profiles[name])
