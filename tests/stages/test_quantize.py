"""Quantize: int8 files that load on every runtime the profile names, embeddings included, the
accuracy-aware fallback, and clean failures on bad calibration data."""

import json
from dataclasses import replace

import numpy as np
import pytest

from edgerec.core.errors import EdgerecError
from edgerec.core.models import Shape
from edgerec.core.targets import load_target
from edgerec.core.training import TrainConfig
from edgerec.formats.int8 import agreement_verdict, fit_tolerance
from edgerec.formats.onnx.int8 import calibrate_onnx, input_feeds
from edgerec.stages.export import ExportConfig, export
from edgerec.stages.quantize import QuantizeConfig, load_calibration, quantize
from edgerec.stages.teacher import TeacherConfig, train_teacher

SHAPE = Shape(hidden=32, layers=1, heads=2, intermediate=64, max_len=12)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("quant")
    model = root / "model"
    train_teacher(
        data_dir, model, TeacherConfig(kind="causal", shape=SHAPE, train=TrainConfig(epochs=3, batch_size=16, lr=1e-2))
    )
    out = {}
    for target in ("arm64", "x86_64-avx2"):
        export(model, data_dir, root / target, ExportConfig(target=target))
        out[target] = root / target
    return out


def _weight_matrices(path):
    """The dtypes of the file's weight matrices (2-D and up; a column of per-row scales is not one)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    weights = [numpy_helper.to_array(i) for i in model.graph.initializer]
    return [w.dtype for w in weights if w.ndim >= 2 and w.shape[-1] > 1]


def test_arm64_int8_bundle(tmp_path, data_dir, bundles):
    manifest = quantize(bundles["arm64"], data_dir, tmp_path / "q", QuantizeConfig(target="arm64"), log=lambda m: None)
    out = tmp_path / "q"
    assert {"model.onnx", "model.tflite", "items.json", "metadata.json", "manifest.json"} <= {
        p.name for p in out.iterdir()
    }
    ranges = json.loads((out / "calibration" / "onnx.json").read_text())
    assert ranges["data"], "the calibration step saves its ranges"
    assert json.loads((out / "metadata.json").read_text())["precision"] == "int8"
    for fmt, result in manifest["quantization"].items():
        assert result["int8_bytes"] < result["fp32_bytes"], fmt
        floor = result["valid_ndcg10_fp32"] * (1 - result["max_ndcg_drop"])
        assert result["valid_ndcg10_int8"] >= floor - 1e-12, fmt
        floor = manifest["target"]["quantization"]["min_top10_agreement"]
        assert floor is None or result["valid_top10_agreement_vs_fp32"] >= floor, fmt
        assert set(result["valid_ndcg10_by_runtime"]) == {
            r["name"] for r in manifest["target"]["runtimes"] if {"onnxruntime": "onnx"}.get(r["name"], "tflite") == fmt
        }
    # the item table (and every other weight matrix but matmul_nbits' float position table) is in 8 bits
    dtypes = _weight_matrices(out / "model.onnx")
    assert dtypes and sum(d.itemsize != 1 for d in dtypes) <= 1
    assert "Gather" in " ".join(manifest["quantization"]["onnx"]["quantized_units"])


def test_qoperator_profile_and_dynamic_override(tmp_path, data_dir, bundles):
    import onnx

    manifest = quantize(
        bundles["x86_64-avx2"], data_dir, tmp_path / "q", QuantizeConfig(target="x86_64-avx2"), log=lambda m: None
    )
    ops = {n.op_type for n in onnx.load(str(tmp_path / "q" / "model.onnx")).graph.node}
    assert ops & {"QLinearMatMul", "QGemm", "MatMulInteger"}, ops  # QOperator: integer kernels
    assert manifest["quantization"]["onnx"]["scheme"] == "static_qoperator"


def test_zero_tolerance_ends_no_measurably_worse_than_fp32(tmp_path, data_dir, bundles):
    manifest = quantize(
        bundles["arm64"],
        data_dir,
        tmp_path / "q",
        QuantizeConfig(target="arm64", max_ndcg_drop=0.0),
        log=lambda m: None,
    )
    for result in manifest["quantization"].values():
        worse = result["valid_ndcg10_int8"] < result["valid_ndcg10_fp32"] - 1e-12
        assert not worse or result["paired_vs_fp32"]["ci95"][1] >= 0, result["accepted"]
        assert result["accepted"] in (
            "within the tolerance",
            "the drop is not significant (paired 95% interval reaches 0)",
        )


def test_agreement_floor_refuses_a_form_that_reorders_the_list():
    reference = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    half = np.array([[1, 2, 9, 10], [5, 6, 7, 8]])  # agreement 0.5 and 1.0: mean 0.75
    verdict = agreement_verdict(half, reference, 0.8)
    assert verdict["top10_agreement_vs_fp32"] == pytest.approx(0.75)
    assert not verdict["agreement_fits"] and "0.7500 < 0.8" in verdict["agreement_why"]
    assert agreement_verdict(half, reference, 0.75)["agreement_fits"]
    assert agreement_verdict(half, reference, None)["agreement_fits"]  # no floor in the profile


def test_fit_tolerance_keeps_the_costliest_units_in_float():
    cost = {"a": 0.001, "b": 0.05, "c": 0.02}
    reference = np.full(500, 1.0)

    def quantize_units(units):
        return tuple(sorted(units))

    def score(units):  # every user loses the same: any drop is significant
        return reference - sum(cost[u] for u in units)

    fit = fit_tolerance(quantize_units, score, list(cost), reference, 0.03, lambda m: None)
    assert [k["unit"] for k in fit["kept_float"]] == ["b"]  # a + c = 0.021 <= 0.03
    assert fit["path"] == ("a", "c") and fit["sensitivity"]["b"] == pytest.approx(0.05)
    assert fit["fits"] and fit["why"] == "within the tolerance"
    fit = fit_tolerance(quantize_units, score, list(cost), reference, 0.1, lambda m: None)
    assert fit["kept_float"] == [] and fit["path"] == ("a", "b", "c")


def test_fit_tolerance_passes_over_mixes_the_quantizer_cannot_make():
    from edgerec.formats.base import UnsupportedMix

    cost = {"lookup": 0.0, "fc": 0.05, "bmm": 0.001}
    reference = np.full(500, 1.0)

    def quantize_units(units):  # the tied table: its lookup int8 with a float output layer fails
        if "lookup" in units and "fc" not in units:
            raise UnsupportedMix("cannot quantize lookup with the other ops float")
        return tuple(sorted(units))

    def score(units):
        return reference - sum(cost[u] for u in units)

    messages = []
    fit = fit_tolerance(quantize_units, score, list(cost), reference, 0.03, messages.append)
    # fc costs the most; keeping it float alone is a mix that cannot be made, so lookup goes too
    assert [k["unit"] for k in fit["kept_float"]] == ["fc", "lookup"] and fit["path"] == ("bmm",)
    assert fit["sensitivity"]["lookup"] is None and any("lookup alone" in m for m in messages)
    assert "cannot quantize it alone" in fit["kept_float"][1]["why"]
    assert fit["trail"][1] == {"float": ["fc"], "fits": False, "why": "cannot quantize lookup with the other ops float"}


def test_fit_tolerance_does_not_act_on_noise():
    rng = np.random.default_rng(0)
    reference = rng.uniform(0, 1, 943)
    # a 1% mean drop made of large per-user swings both ways: beyond a 0.5% tolerance, not significant
    noisy = reference + rng.normal(0, 0.1, 943)
    noisy += (reference.mean() * 0.99) - noisy.mean()
    fit = fit_tolerance(lambda units: tuple(units), lambda path: noisy, ["a", "b"], reference, 0.005, lambda m: None)
    assert fit["kept_float"] == [] and fit["why"].startswith("the drop is not significant")
    assert fit["paired_vs_fp32"]["ci95"][0] < 0 < fit["paired_vs_fp32"]["ci95"][1]


def test_bad_calibration_sets(tmp_path):
    np.savez(tmp_path / "wide.npz", input_ids=np.ones((4, 7), np.int64))
    np.savez(tmp_path / "empty.npz", input_ids=np.zeros((0, 12), np.int64))
    np.savez(tmp_path / "unknown.npz", input_ids=np.full((2, 12), 999, np.int64))
    np.savez(tmp_path / "other.npz", x=np.ones(3))
    cases = {
        "missing.npz": "not found",
        "wide.npz": r"shape \[4, 7\]",
        "empty.npz": "empty",
        "unknown.npz": "not in the model's catalogue",
        "other.npz": "expected arrays",
    }
    for name, message in cases.items():
        with pytest.raises(EdgerecError, match=message):
            load_calibration(tmp_path / name, num_items=24, max_len=12)
    np.savez(tmp_path / "ok.npz", input_ids=np.pad(np.arange(1, 6)[None], ((0, 0), (7, 0))))
    assert [list(s) for s in load_calibration(tmp_path / "ok.npz", 24, 12)] == [[1, 2, 3, 4, 5]]


def test_nan_model_and_wrong_target_fail_without_artifact(tmp_path, data_dir, bundles):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(bundles["arm64"] / "model.onnx"))
    big = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    big.CopyFrom(numpy_helper.from_array(np.full(tuple(big.dims), np.nan, np.float32), big.name))
    onnx.save(model, str(tmp_path / "nan.onnx"))
    with pytest.raises(EdgerecError, match="NaN"):
        calibrate_onnx(
            tmp_path / "nan.onnx", input_feeds([np.array([1, 2, 3])], 12, "int64"), "minmax", tmp_path / "r.json"
        )
    with pytest.raises(EdgerecError, match="exported for target 'arm64'"):
        quantize(bundles["arm64"], data_dir, tmp_path / "q", QuantizeConfig(target="x86_64-vnni"))
    with pytest.raises(EdgerecError, match="calibration set not found"):
        quantize(
            bundles["arm64"],
            data_dir,
            tmp_path / "q",
            QuantizeConfig(target="arm64", calibration_file=str(tmp_path / "nope.npz")),
        )
    assert not (tmp_path / "q").exists() and not list(tmp_path.glob(".q*"))


@pytest.mark.slow
def test_rpi4_int8_runs_in_tflite_runtime_2_14(tmp_path, data_dir, bundles):
    root = bundles["arm64"].parent
    export(root / "model", data_dir, tmp_path / "fp32", ExportConfig(target="rpi4"))
    manifest = quantize(tmp_path / "fp32", data_dir, tmp_path / "q", QuantizeConfig(target="rpi4"), log=lambda m: None)
    result = manifest["quantization"]["tflite"]
    assert set(result["valid_ndcg10_by_runtime"]) == {"tflite-runtime"}
    assert result["int8_bytes"] < result["fp32_bytes"]


def test_cli_bad_calibration_is_one_line(tmp_path, data_dir, bundles):
    import subprocess
    import sys

    np.savez(tmp_path / "wide.npz", input_ids=np.ones((4, 7), np.int64))
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgerec",
            "quantize",
            "-T",
            "arm64",
            "-b",
            str(bundles["arm64"]),
            "-d",
            str(data_dir),
            "-o",
            str(tmp_path / "q"),
            "--calibration",
            str(tmp_path / "wide.npz"),
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith("error: ") and "[4, 7]" in run.stderr
    assert not (tmp_path / "q").exists()


def test_choose_form_prefers_fewest_arm_instructions_within_size():
    from edgerec.formats.int8 import choose_form

    forms = {
        "static_qdq": {"fits": True, "size_ratio": 0.29, "arm_instructions_per_call": 760.0, "arm_vs_fp32": 1.27},
        "dynamic": {"fits": True, "size_ratio": 1.1, "arm_instructions_per_call": 500.0, "arm_vs_fp32": 0.83},
        "weight_only": {"fits": True, "size_ratio": 0.29, "arm_instructions_per_call": 601.0, "arm_vs_fp32": 1.0},
        "bad": {
            "fits": False,
            "size_ratio": 0.2,
            "arm_instructions_per_call": 1.0,
            "arm_vs_fp32": 0.1,
            "why": "too inaccurate",
        },
    }
    chosen, why = choose_form(forms, 0.30, counted=True)
    assert chosen == "weight_only" and "fewest ARM instructions" in why  # dynamic is too big, bad too inaccurate
    assert choose_form(forms, None, counted=True)[0] == "dynamic"
    assert choose_form(forms, 0.30, counted=False)[0] == "static_qdq"  # the profile's order
    chosen, why = choose_form(forms, 0.01, counted=True)
    assert chosen == "dynamic" and "size did not decide" in why
    with pytest.raises(EdgerecError, match="no int8 form keeps"):
        choose_form({"bad": forms["bad"]}, None, counted=True)


def test_weight_only_form_stores_the_tied_table_once_and_folds_at_load(tmp_path, data_dir, bundles):
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    arm64 = load_target("arm64")
    forms = ("weight_only", "static_qdq", "dynamic")
    profile = replace(arm64, quantization=replace(arm64.quantization, onnx_forms=forms))
    manifest = quantize(
        bundles["arm64"], data_dir, tmp_path / "q", QuantizeConfig(target="arm64"), profile=profile, log=lambda m: None
    )
    out = tmp_path / "q"
    result = manifest["quantization"]["onnx"]
    # no emulator in the test run: the profile's first form whose accuracy and size fit
    assert result["scheme"] == "weight_only" and "first form" in result["chosen_because"]
    assert result["arm_instructions"].startswith("not counted")
    assert set(result["forms"]) == set(forms)
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["onnx_session_config"] == {"model.onnx": {"session.disable_quant_qdq": "1"}}
    model = onnx.load(str(out / "model.onnx"))
    tables = [i for i in model.graph.initializer if numpy_helper.to_array(i).ndim == 2]
    assert tables and all(numpy_helper.to_array(i).dtype == np.int8 for i in tables)
    gather = next(n for n in model.graph.node if n.op_type == "Gather" and n.input[0] != "")
    head = [n for n in model.graph.node if n.op_type == "Gemm"][-1]
    assert head.input[1] == gather.input[0] or any(  # one dequantized table feeds both
        n.output[0] == gather.input[0] == head.input[1] for n in model.graph.node
    )
    fp32 = ort.InferenceSession(str(bundles["arm64"] / "model.onnx"))
    options = ort.SessionOptions()
    options.add_session_config_entry("session.disable_quant_qdq", "1")
    int8 = ort.InferenceSession(str(out / "model.onnx"), options)
    ids = np.random.default_rng(0).integers(1, meta["num_items"] + 1, (8, meta["max_len"])).astype(np.int64)
    a, b = fp32.run(None, {"input_ids": ids})[0], int8.run(None, {"input_ids": ids})[0]
    assert np.abs(a - b).max() < 0.05 * np.abs(a).max()
    # the .ort holds the folded float weights: an ORT-format session cannot fold at load
    assert "float" in meta["ort_format"]["weights"]
    ops = {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    assert "DequantizeLinear" in ops


def test_matmul_nbits_ships_with_default_session_options_and_its_ort_keeps_the_int8(tmp_path, data_dir, bundles):
    import onnx

    manifest = quantize(bundles["arm64"], data_dir, tmp_path / "q", QuantizeConfig(target="arm64"), log=lambda m: None)
    out = tmp_path / "q"
    result = manifest["quantization"]["onnx"]
    assert result["scheme"] == "matmul_nbits" and result["runtime_version_needed"] == "1.23"
    meta = json.loads((out / "metadata.json").read_text())
    assert not meta.get("onnx_session_config", {}).get("model.onnx")  # an app opens it as it is
    assert "weights" not in meta["ort_format"]  # nothing folded to float before conversion
    assert meta["ort_format"]["converted_by"].startswith("onnxruntime 1.23")
    ops = {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    assert "MatMulNBits" in ops and "Gemm" not in ops
    ort_ratio = (out / "model.ort").stat().st_size / (bundles["arm64"] / "model.ort").stat().st_size
    assert ort_ratio <= 0.7, ort_ratio  # a tiny model: the .ort's fixed overhead is most of it
