"""Emulated ARM devices: the aarch64 builds of the target runtimes, run under qemu user mode.

A profile's `[device] emulate = ["cortex-a76"]` makes `edgerec validate` run the bundle on the
real aarch64 wheels of its runtimes (onnxruntime, ai-edge-litert, tflite-runtime 2.14 with NumPy
1.x; executorch when a bundle has a .pte, `ON_DEMAND`), on ARM code with the named CPU model's
features (cortex-a72: no dot product; cortex-a76: sdot/udot; max: SVE2 + i8mm), through the same
standalone `device_runner.py` an ssh device or an isolated environment runs. What it measures
that this x86 machine's runtimes cannot: that the ARM kernels compute the same scores, and how
many ARM instructions a call executes. Instruction counts carry no timing noise (repeats usually
agree within 0.2%; each count is the median of two or three); emulated seconds mean nothing and
are not reported.

The userland it runs in is set up once (edgerec/devices/sysroot.py).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgerec.core.errors import EdgerecError
from edgerec.core.files import load_npz
from edgerec.devices.envs import runner_failure, save_inputs, take_rows
from edgerec.devices.sysroot import (  # noqa: F401 (setup, root, OFF: the emulator's API)
    OFF,
    ON_DEMAND,
    PYTHON,
    SITES,
    EmulatorUnavailable,
    root,
    runtime_root,
    setup,
    switched_off,
)

RUNNER = Path(__file__).with_name("device_runner.py")


@dataclass(frozen=True)
class EmulatedDevice:
    """One qemu CPU model running the runner; the same `run_runner` as an ssh device."""

    cpu: str
    folder: Path
    # how instruction counts are taken (a profile's [device] count_calls / count_repeats)
    calls: tuple[int, int] = (5, 105)
    repeats: int = 2

    @classmethod
    def open(cls, cpu: str, log=print, settings=None) -> EmulatedDevice:
        """Check the CPU model (before any set-up when qemu is here), then set up if needed.
        `settings`: a profile's `DeviceSettings`, for how counts are taken."""
        if shutil.which("qemu-aarch64-static"):
            check_cpu(cpu)
        folder = setup(log)
        check_cpu(cpu)
        if settings is None:
            return cls(cpu=cpu, folder=folder)
        return cls(cpu=cpu, folder=folder, calls=tuple(settings.count_calls), repeats=settings.count_repeats)

    @property
    def name(self) -> str:
        return f"emulated {self.cpu}"

    def can_count(self) -> str:
        """ "" when instructions can be counted, else why not."""
        note = (self.folder / "plugin.txt").read_text() if (self.folder / "plugin.txt").is_file() else "no plugin"
        if not note and not (self.folder / "libinsn.so").is_file():
            return "the plugin is missing from the emulator folder"
        return note

    def _command(self, runtime: str, plugin_log: Path | None) -> tuple[list[str], dict]:
        if runtime not in SITES and runtime not in ON_DEMAND:
            raise EdgerecError(f"no aarch64 wheels are defined for runtime '{runtime}'")
        folder = runtime_root(self.folder, runtime)
        env = {
            **os.environ,
            "PYTHONPATH": str(folder / "opt" / runtime),
            "PYTHONHASHSEED": "0",
            "OPENBLAS_NUM_THREADS": "1",
            "PYTHONNOUSERSITE": "1",
        }
        if plugin_log is None:
            return ["qemu-aarch64-static", "-cpu", self.cpu, "-L", str(folder), str(folder / PYTHON)], env
        return [
            "qemu-aarch64",
            "-cpu",
            self.cpu,
            "-L",
            str(folder),
            "-plugin",
            f"{self.folder / 'libinsn.so'},inline=on",
            "-d",
            "plugin",
            "-D",
            str(plugin_log),
            str(folder / PYTHON),
        ], env

    def _runner(
        self, runtime: str, model: Path, input_ids, threads: int, warmup: int, step: bool, count: bool
    ) -> tuple[dict, int | None]:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            inputs = save_inputs(tmp, input_ids)
            plugin_log = tmp / "insn.txt" if count else None
            command, env = self._command(runtime, plugin_log)
            result = subprocess.run(
                [
                    *command,
                    str(RUNNER),
                    str(model),
                    str(inputs),
                    str(tmp / "out.npz"),
                    "--threads",
                    str(threads),
                    "--warmup",
                    str(warmup),
                    *(["--step"] if step else []),
                ],
                capture_output=True,
                text=True,
                env=env,
            )
            if result.returncode != 0:
                raise EdgerecError(
                    f"{model}: {runtime} on {self.name} {runner_failure(result.returncode, result.stderr)}"
                )
            out = load_npz(tmp / "out.npz", f"the {runtime} runner's output on {self.name}")
            instructions = None
            if count:
                found = re.search(r"insns:\s*(\d+)", plugin_log.read_text() if plugin_log.is_file() else "")
                if not found:
                    raise EdgerecError(f"{self.name}: the instruction-counting plugin wrote no count")
                instructions = int(found.group(1))
            return out, instructions

    def run_runner(
        self, runtime: str, model: Path, input_ids, threads: int = 1, warmup: int = 0, step: bool = False
    ) -> dict:
        return self._runner(runtime, model, input_ids, threads, warmup, step, count=False)[0]

    def instructions_per_call(
        self,
        runtime: str,
        model: Path,
        input_ids,
        few: int | None = None,
        many: int | None = None,
        step: bool = False,
        repeats: int | None = None,
        tolerance: float = 0.01,
    ) -> dict:
        """ARM instructions per batch-1 call: (count with `many` calls - count with `few`) /
        (many - few) (default: the device's `calls`), one thread, fixed hash seed, so start-up
        cancels. Rows are real inputs, reused in turn when there are fewer than `many`.
        For a step model a "call" is one update.

        Measured `repeats` times, once more when those disagree by more than `tolerance`, and the
        median reported (all of them in `counts`): repeats usually agree within 0.2%, but on a
        loaded host a count now and then lands far off (0.5x-3.4x its repeats, seen with
        benchmarks/arm.py running beside a test suite), so one count is not trusted alone."""
        few, many = few if few is not None else self.calls[0], many if many is not None else self.calls[1]
        repeats = repeats if repeats is not None else self.repeats
        counts, values = [], []
        while len(values) < repeats or (
            len(values) == repeats and repeats > 1 and max(values) - min(values) > tolerance * min(values)
        ):
            counts.append(self._per_call(runtime, model, input_ids, few, many, step))
            values.append(counts[-1]["instructions_per_call"])
        return {**counts[0], "instructions_per_call": float(np.median(values)), "counts": values}

    def _per_call(self, runtime: str, model: Path, input_ids, few: int, many: int, step: bool) -> dict:
        length = len(next(iter(input_ids.values()))) if isinstance(input_ids, dict) else len(input_ids)
        rows = np.resize(np.arange(length), many)
        counts, calls = [], []
        for n in (few, many):
            ids = take_rows(input_ids, rows[:n])
            _, instructions = self._runner(runtime, model, ids, 1, 0, step, count=True)
            counts.append(instructions)
            calls.append(int((ids != 0).sum()) if step else n)
        per_call = (counts[1] - counts[0]) / max(calls[1] - calls[0], 1)
        return {
            "instructions_per_call": float(per_call),
            "cpu": self.cpu,
            "calls": calls,
            "process_instructions": counts,
        }


def check_cpu(cpu: str) -> None:
    """A qemu `-cpu` value: a model qemu-aarch64 knows, optionally with ,property=value."""
    known = cpu_models()
    if cpu.split(",")[0] not in known:
        raise EdgerecError(f"unknown emulated CPU model '{cpu}' (qemu-aarch64 knows: {', '.join(sorted(known))})")


def cpu_models() -> set[str]:
    """The CPU models qemu-aarch64 emulates (`-cpu help`)."""
    result = subprocess.run(["qemu-aarch64-static", "-cpu", "help"], capture_output=True, text=True)
    return {line.split()[0] for line in result.stdout.splitlines()[1:] if line.strip()}
