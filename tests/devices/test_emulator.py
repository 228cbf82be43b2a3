"""The emulated ARM device: the bundle on the aarch64 builds of its runtimes under qemu user mode.

The real test sets the emulator up into the test's cache (debootstrap'd aarch64 userland, aarch64
wheels, the instruction-counting plugin; about 2 minutes, more on a slow mirror) and validates a
tiny arm64 bundle on emulated Cortex-A76. `.ci/run` installs qemu-user-static, qemu-user,
debootstrap and libglib2.0-dev; where they are missing and cannot be installed the test is
skipped and says why.
"""

import os
import shutil
from pathlib import Path

import pytest

from edgerec.core.errors import EdgerecError
from edgerec.devices import emulator, sysroot

SHAPE = dict(hidden=16, layers=1, heads=2, intermediate=32, max_len=12)
can_emulate = all(shutil.which(t) for t in ("qemu-aarch64-static", "qemu-aarch64", "debootstrap")) or (
    os.geteuid() == 0 and shutil.which("apt-get") is not None
)


@pytest.fixture(scope="module")
def arm_bundles(tmp_path_factory, data_dir):
    from edgerec.core.models import Shape
    from edgerec.core.training import TrainConfig
    from edgerec.stages.export import ExportConfig, export
    from edgerec.stages.quantize import QuantizeConfig, quantize
    from edgerec.stages.teacher import TeacherConfig, train_teacher

    root = tmp_path_factory.mktemp("arm")
    train_teacher(
        data_dir,
        root / "teacher",
        TeacherConfig(shape=Shape(**SHAPE), train=TrainConfig(epochs=3, batch_size=16, lr=1e-2)),
    )
    export(root / "teacher", data_dir, root / "fp32", ExportConfig(target="arm64"))
    quantize(root / "fp32", data_dir, root / "int8", QuantizeConfig(target="arm64"), log=lambda m: None)
    return root


# Counts taken with fewer calls and once (the shipped profile: 5 and 105 calls, twice): a test
# checks what is counted and chosen, not the count's last digit, and each emulated process costs
# seconds of start-up.
COUNTING = "count_calls = [2, 12]\ncount_repeats = 1\n"


def _profile(tmp_path, cpu="cortex-a76", users=8, extra="", counting=COUNTING):
    """The shipped arm64 profile with another [device] table (and budget lines in `extra`)."""
    text = (Path(emulator.__file__).resolve().parents[2] / "targets" / "arm64.toml").read_text()
    text = text.split("\n[device]")[0].replace("[budgets]\n", "[budgets]\n" + extra)
    (tmp_path / "targets").mkdir(exist_ok=True)
    device = f'\n[device]\nemulate = ["{cpu}"]\nusers = {users}\n{counting}'
    (tmp_path / "targets" / "arm64.toml").write_text(text + device)
    return tmp_path / "targets"


def test_missing_tools_are_named_and_the_report_says_the_arm_check_did_not_run(
    tmp_path, data_dir, arm_bundles, monkeypatch
):
    from edgerec.stages.validate import ValidateConfig, validate

    monkeypatch.delenv("EDGEREC_EMULATE", raising=False)
    monkeypatch.setenv("EDGEREC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(emulator.shutil, "which", lambda name: None)  # no qemu, no apt
    lines = []
    report = validate(
        arm_bundles / "int8",
        data_dir,
        ValidateConfig(target="arm64", users=8),
        targets_dir=_profile(tmp_path, extra="max_instructions_per_call = 1e9\n"),
        report_dir=tmp_path / "r",
        log=lines.append,
    )
    assert report["emulated_arm"].startswith("did not run: the ARM emulator needs qemu-aarch64-static")
    assert any(line.startswith("warning: the ARM check did not run") for line in lines)
    rows = [b for b in report["budgets"] if b["budget"].startswith("ARM instructions")]
    assert rows and all(b["status"].startswith("NOT CHECKED") for b in rows)
    assert not (tmp_path / "cache" / "emulator").exists()


def test_no_emulate_is_reported_as_not_run(tmp_path, data_dir, arm_bundles, monkeypatch):
    from edgerec.stages.validate import ValidateConfig, validate

    monkeypatch.delenv("EDGEREC_EMULATE", raising=False)
    report = validate(
        arm_bundles / "int8",
        data_dir,
        ValidateConfig(target="arm64", users=8, emulate=False),
        targets_dir=_profile(tmp_path),
        report_dir=tmp_path / "r",
        log=lambda m: None,
    )
    assert report["emulated_arm"].startswith("not run")


@pytest.mark.skipif(not shutil.which("qemu-aarch64-static"), reason="qemu-user-static is not installed")
def test_an_unknown_cpu_model_is_one_line_before_any_setup(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEREC_CACHE", str(tmp_path / "cache"))
    with pytest.raises(EdgerecError, match="unknown emulated CPU model 'cortex-z99'"):
        emulator.EmulatedDevice.open("cortex-z99", log=lambda m: None)
    assert not (tmp_path / "cache" / "emulator").exists()


def test_an_emulated_cpu_list_must_hold_users(tmp_path):
    from edgerec.core.targets import load_target

    with pytest.raises(EdgerecError, match="device.users"):
        load_target("arm64", _profile(tmp_path, users=0))
    with pytest.raises(EdgerecError, match="count_calls must be two call counts, fewer first"):
        load_target("arm64", _profile(tmp_path, counting="count_calls = [10, 5]\n"))
    with pytest.raises(EdgerecError, match="count_repeats"):
        load_target("arm64", _profile(tmp_path, counting="count_repeats = 0\n"))
    shipped = load_target("arm64").device
    assert (shipped.count_calls, shipped.count_repeats) == ((5, 105), 2)


@pytest.mark.slow
@pytest.mark.skipif(
    not can_emulate,
    reason="qemu-user-static, qemu-user and debootstrap are missing and "
    "cannot be installed here (not root or no apt-get)",
)
def test_validate_runs_the_bundle_on_the_aarch64_runtimes(tmp_path_factory, data_dir, arm_bundles, monkeypatch):
    from edgerec.stages.validate import ValidateConfig, validate

    monkeypatch.delenv("EDGEREC_EMULATE", raising=False)
    if "EDGEREC_CACHE" not in os.environ:  # set up once per test session, not in the user's cache
        monkeypatch.setenv("EDGEREC_CACHE", str(tmp_path_factory.getbasetemp() / "emulator-cache"))
    tmp_path = tmp_path_factory.mktemp("emulated")
    lines = []
    reports = {}
    for name in ("fp32", "int8"):
        reports[name] = validate(
            arm_bundles / name,
            data_dir,
            ValidateConfig(target="arm64", users=8),
            targets_dir=_profile(tmp_path, extra="max_instructions_per_call = 1e12\n"),
            report_dir=tmp_path / name,
            log=lines.append,
        )
    counts = {}
    for name, report in reports.items():
        arm = report["emulated_arm"]
        assert isinstance(arm, dict), arm
        runs = arm["cpus"]["cortex-a76"]
        assert set(runs) == {"onnxruntime", "litert"}
        for runtime, run in runs.items():
            assert run["users"] == 8
            # the same file on ARM kernels ranks as this machine's runtime does; in fp32 to within
            # the profile's parity tolerance (int8 kernels round differently on ARM and x86)
            assert run["top10_agreement_with_host"] >= 0.9, (name, runtime, run)
            if name == "fp32":
                assert run["identical_top10"] == 1.0 and run["max_abs_diff_vs_host"] <= 1e-4, (runtime, run)
            count = run["instructions"]
            assert isinstance(count, dict), count  # the plugin was built and counted
            assert count["instructions_per_call"] > 1000 and count["calls"] == [2, 12]  # the profile's
            counts[name, runtime] = count["instructions_per_call"]
        rows = [b for b in report["budgets"] if b["budget"].startswith("ARM instructions")]
        assert [b["status"] for b in rows] == ["PASS", "PASS"]
        html = (tmp_path / name / "report.html").read_text()
        assert "instructions per call, emulated" in html
    assert counts["fp32", "onnxruntime"] != counts["int8", "onnxruntime"]  # different kernels ran
    assert sum("userland (debootstrap" in line for line in lines) <= 1  # set up once, then reused


@pytest.mark.slow
@pytest.mark.skipif(
    not can_emulate,
    reason="qemu-user-static, qemu-user and debootstrap are missing and "
    "cannot be installed here (not root or no apt-get)",
)
def test_export_checks_parity_on_arm_and_quantize_ships_the_form_with_fewest_arm_instructions(
    tmp_path_factory, data_dir, arm_bundles, monkeypatch
):
    from edgerec.formats.int8 import choose_form
    from edgerec.stages.export import ExportConfig, export
    from edgerec.stages.quantize import QuantizeConfig, quantize

    monkeypatch.delenv("EDGEREC_EMULATE", raising=False)
    if "EDGEREC_CACHE" not in os.environ:  # the emulator the test above set up
        monkeypatch.setenv("EDGEREC_CACHE", str(tmp_path_factory.getbasetemp() / "emulator-cache"))
    tmp_path = tmp_path_factory.mktemp("choose")
    targets = _profile(tmp_path, users=8)
    manifest = export(
        arm_bundles / "teacher",
        data_dir,
        tmp_path / "fp32",
        ExportConfig(target="arm64"),
        targets_dir=targets,
        log=lambda m: None,
    )
    arm = manifest["parity_emulated_arm"]
    assert set(arm) == {"onnxruntime on emulated cortex-a76", "litert on emulated cortex-a76"}, arm
    for check in arm.values():
        assert check["users"] == 8 and check["max_abs_diff"] <= check["atol"] and check["top10_agreement"] == 1.0

    manifest = quantize(
        tmp_path / "fp32",
        data_dir,
        tmp_path / "int8",
        QuantizeConfig(target="arm64"),
        targets_dir=targets,
        log=lambda m: None,
    )
    for fmt, result in manifest["quantization"].items():
        assert result["arm_instructions"]["cpu"] == "cortex-a76", result["arm_instructions"]
        forms = result["forms"]
        assert all(f["arm_instructions_per_call"] > 1000 for f in forms.values() if f["fits"])
        # the shipped form is the cheapest on ARM among those that fit (size first, if any fit it)
        assert choose_form(forms, 0.30, counted=True)[0] == result["scheme"], (fmt, forms)
        assert "fewest ARM instructions" in result["chosen_because"]


@pytest.mark.skipif(
    not can_emulate,
    reason="qemu-user-static, qemu-user and debootstrap are missing and "
    "cannot be installed here (not root or no apt-get)",
)
def test_the_pte_matches_pytorch_on_aarch64_executorch(tmp_path_factory, data_dir, arm_bundles, monkeypatch):
    pytest.importorskip("executorch.exir", reason="the executorch extra is not installed")
    from edgerec.stages.export import ExportConfig, export

    monkeypatch.delenv("EDGEREC_EMULATE", raising=False)
    if "EDGEREC_CACHE" not in os.environ:  # the emulator the tests above set up
        monkeypatch.setenv("EDGEREC_CACHE", str(tmp_path_factory.getbasetemp() / "emulator-cache"))
    tmp_path = tmp_path_factory.mktemp("pte-arm")
    lines = []
    manifest = export(
        arm_bundles / "teacher",
        data_dir,
        tmp_path / "fp32",
        ExportConfig(target="arm64", formats=("executorch",)),
        targets_dir=_profile(tmp_path, users=8),
        log=lines.append,
    )
    check = manifest["parity_emulated_arm"]["executorch on emulated cortex-a76"]
    assert check["users"] == 8 and check["max_abs_diff"] <= check["atol"] and check["top10_agreement"] == 1.0
    root = emulator.root()
    assert (root.with_name(root.name + "-executorch") / "opt" / "executorch").is_dir()
    assert (root / "sys/devices/system/cpu/possible").read_text() == ""  # the shared userland unchanged


@pytest.mark.skipif(
    not can_emulate,
    reason="qemu-user-static, qemu-user and debootstrap are missing and "
    "cannot be installed here (not root or no apt-get)",
)
def test_a_runtime_without_an_aarch64_wheel_is_one_line_before_the_userland(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEREC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sysroot, "SITES", {"onnxruntime": ["onnxruntime==1.0.0"]})  # x86-only release
    lines = []
    with pytest.raises(EdgerecError, match=r"emulator: pip \(aarch64 onnxruntime\) failed: .*onnxruntime"):
        emulator.setup(log=lines.append)
    assert not any("debootstrap" in line for line in lines)
    assert not list((tmp_path / "cache" / "emulator").glob("*"))  # nothing half-made is left


@pytest.mark.slow
@pytest.mark.skipif(
    not can_emulate,
    reason="qemu-user-static, qemu-user and debootstrap are missing and "
    "cannot be installed here (not root or no apt-get)",
)
def test_the_step_model_replays_to_the_full_models_answer_on_arm(tmp_path_factory, data_dir, arm_bundles, monkeypatch):
    from edgerec.core.distillation import DistillConfig
    from edgerec.core.models import Shape
    from edgerec.core.training import TrainConfig
    from edgerec.stages.distill import distill
    from edgerec.stages.export import ExportConfig, export
    from edgerec.stages.validate import ValidateConfig, validate

    monkeypatch.delenv("EDGEREC_EMULATE", raising=False)
    if "EDGEREC_CACHE" not in os.environ:  # the emulator the tests above set up
        monkeypatch.setenv("EDGEREC_CACHE", str(tmp_path_factory.getbasetemp() / "emulator-cache"))
    tmp_path = tmp_path_factory.mktemp("step-arm")
    distill(
        arm_bundles / "teacher",
        data_dir,
        tmp_path / "student",
        DistillConfig(
            student=Shape(**SHAPE), top_k=8, positions="start", train=TrainConfig(epochs=2, batch_size=16, lr=1e-2)
        ),
    )
    targets = _profile(tmp_path, users=4)
    export(
        tmp_path / "student",
        data_dir,
        tmp_path / "fp32",
        ExportConfig(target="arm64", step=True),
        targets_dir=targets,
        log=lambda m: None,
    )
    report = validate(
        tmp_path / "fp32",
        data_dir,
        ValidateConfig(target="arm64", users=8),
        targets_dir=targets,
        report_dir=tmp_path / "r",
        log=lambda m: None,
    )
    for runtime, run in report["emulated_arm"]["cpus"]["cortex-a76"].items():
        assert run["step_replay"] == {"users": 4, "identical_top10_with_full": 1.0, "top10_agreement_with_full": 1.0}, (
            runtime,
            run,
        )
        assert run["step_instructions"]["instructions_per_call"] > 1000
    assert "step replay = full top-10" in (tmp_path / "r" / "report.html").read_text()


def test_an_outlying_count_is_measured_again_and_the_median_reported():
    import numpy as np

    class Counted(emulator.EmulatedDevice):
        def __init__(self, values):
            super().__init__("cortex-a76", Path("/nonexistent"))
            object.__setattr__(self, "values", iter(values))

        def _per_call(self, *args):
            return {
                "instructions_per_call": next(self.values),
                "cpu": self.cpu,
                "calls": [5, 105],
                "process_instructions": [0, 0],
            }

    ids = np.ones((1, 4), np.int64)
    agreeing = Counted([600.0, 601.0, 9999.0]).instructions_per_call("onnxruntime", Path("m.onnx"), ids)
    assert agreeing["counts"] == [600.0, 601.0] and agreeing["instructions_per_call"] == 600.5
    outlier = Counted([600.0, 2040.0, 602.0]).instructions_per_call("onnxruntime", Path("m.onnx"), ids)
    assert outlier["counts"] == [600.0, 2040.0, 602.0] and outlier["instructions_per_call"] == 602.0
