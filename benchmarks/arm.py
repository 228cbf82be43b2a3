"""The default student on the aarch64 builds of its runtimes, under qemu user mode: ARM
instructions per call of fp32 and of every int8 form, parity, and int8 accuracy on ARM kernels.

    python benchmarks/arm.py [--work runs] [--users 50]

Inputs: the data and the default student that the README's first command leaves in --work
(`edgerec build --target arm64`: runs/data, runs/student). Steps, in one run:

1. Export the student for arm64 (ONNX + TFLite + ExecuTorch, `--formats onnx,tflite,executorch`)
   and rpi4 (TFLite for tflite-runtime 2.14), and make every int8 form of each file as `edgerec
   quantize` makes it (`ModelFormat.plan_int8`), every weight unit quantized: ONNX static QDQ,
   static QOperator, dynamic, weight-only (folded at load); TFLite dynamic, full-integer
   (static), weight-only; ExecuTorch PT2E static and dynamic (XNNPACKQuantizer).
2. For each emulated CPU (cortex-a72: no dot product; cortex-a76: sdot/udot; max with 128-bit
   SVE2 + i8mm), each file on its aarch64 runtime (onnxruntime 1.32, ai-edge-litert 2.3; the rpi4
   files on tflite-runtime 2.14, cortex-a72 only; the .pte files on executorch 1.1.0 with torch
   2.10, cortex-a76 only: see EXECUTORCH_CPU): scores of the first --users test users against
   PyTorch (fp32: max |diff|, top-10 agreement) and against the same file on this machine
   (int8: top-10 agreement, NDCG@10 on ARM vs here, paired bootstrap), and instructions per
   batch-1 call ((105 calls - 5 calls) / 100, one thread, fixed hash seed).
3. `edgerec quantize --target arm64` and `--target rpi4` as shipped (each counts its profile's forms
   on its emulated CPU, cortex-a76 / cortex-a72, and picks): the chosen forms, their instructions
   vs fp32 and their size.
4. The step model's update vs a full pass at windows n = 50 and 200 on cortex-a76 (the student's
   weights with positions counted from the window start: instruction counts do not depend on the
   weights), fp32 ONNX and TFLite; and the step model (window 200) in fp32 and every int8 form on
   each CPU, instructions per update.

Instruction counts carry no timing noise, but on a loaded host one now and then lands far off, so
every count is the median of two (three when they disagree by more than 1%; all in `counts`).
Emulated seconds mean nothing and are not reported.
Writes benchmarks/results/arm.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, print_table, run_benchmark, save  # noqa: E402

CPUS = ["cortex-a72", "cortex-a76", "max,sve-default-vector-length=16"]
ONNX_FORMS = ["static_qdq", "static_qoperator", "dynamic", "weight_only"]
ALL_FORMS = {"onnx": ONNX_FORMS, "tflite": ["dynamic", "static", "weight_only"], "executorch": ["static", "dynamic"]}
# The aarch64 ExecuTorch (1.1.0 + torch 2.10, edgerec/devices/sysroot.py ON_DEMAND) imports torch
# in every emulated process (~25 s each under qemu): its files are counted on this CPU only.
EXECUTORCH_CPU = "cortex-a76"
FORMATS_BY_TARGET = {"arm64": ("onnx", "tflite", "executorch"), "rpi4": ("tflite",)}


def make_forms(bundle: Path, data, target, folder: Path, rec, log) -> dict:
    """fp32 and every int8 form of the bundle's files, each made as `edgerec quantize` makes it
    (`ModelFormat.plan_int8`, every weight unit quantized) in a folder of its own with the
    metadata.json entries its runner needs: {(fmt, form): path}."""
    from edgerec.formats import FORMATS
    from edgerec.stages.quantize import load_calibration

    meta = json.loads((bundle / "metadata.json").read_text())
    sequences = load_calibration(data.path / "calibration.npz", meta["num_items"], meta["max_len"])
    files = {}
    for fmt, name in meta["files"].items():
        src = bundle / name
        files[(fmt, "fp32")] = src
        calibration = folder / f"{target.name}-{fmt}-calibration"
        calibration.mkdir(parents=True)
        for form in ALL_FORMS[fmt]:
            out, work = folder / f"{target.name}-{fmt}-{form}", folder / f"{target.name}-{fmt}-{form}-work"
            out.mkdir()
            work.mkdir()
            session = FORMATS[fmt].session_config(form)
            (out / "metadata.json").write_text(json.dumps({"onnx_session_config": {name: session}} if session else {}))
            plan = FORMATS[fmt].plan_int8(
                form, src, work, calibration, target.quantization, sequences, meta, target, log, model=lambda: rec
            )
            shutil.move(plan.make(plan.units), out / name)
            shutil.rmtree(work)
            files[(fmt, form)] = out / name
    return files


def host_scores(runtime, path: Path, meta: dict, target, histories) -> np.ndarray:
    from edgerec.formats import open_model

    session = json.loads((path.parent / "metadata.json").read_text()).get("onnx_session_config", {})
    return open_model(runtime, path, {**meta, "onnx_session_config": session}, target).scores(histories)[:, 1:]


def on_arm(files: dict, bundle: Path, target, cpus, rec, histories, targets, jobs: int, log) -> list[dict]:
    """Parity, ARM-vs-here accuracy and instructions per call for every file on every CPU, `jobs`
    emulated processes at a time (each is single-threaded). A file the aarch64 runtime crashes on
    is a row that says so."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from edgerec.core import metrics
    from edgerec.core.errors import EdgerecError
    from edgerec.devices.emulator import EmulatedDevice
    from edgerec.devices.runtimes import encode
    from edgerec.formats import FORMATS, RUNTIMES
    from edgerec.formats.checks import score_outputs

    meta = json.loads((bundle / "metadata.json").read_text())
    n = meta["num_items"]
    with torch.inference_mode():
        reference = rec.scores(histories)[:, 1:].astype(np.float64)
    _, torch_top, _ = score_outputs(reference, None, n, histories, targets, None, "PyTorch")
    tasks, here = [], {}
    for runtime in target.runtimes:
        fmt = RUNTIMES[runtime.name][0]
        for (file_fmt, form), path in files.items():
            if file_fmt == fmt:
                here[runtime.name, form] = host_scores(runtime, path, meta, target, histories).astype(np.float64)
                tasks += [
                    (cpu, runtime.name, fmt, form, path) for cpu in cpus if fmt != "executorch" or cpu == EXECUTORCH_CPU
                ]
    devices = {cpu: EmulatedDevice.open(cpu, log) for cpu in cpus}

    def one(task):
        cpu, runtime, fmt, form, path = task
        log(f"{target.name} {fmt} {form} on {runtime}, emulated {cpu}")
        row = {
            "target": target.name,
            "cpu": cpu,
            "runtime": runtime,
            "format": fmt,
            "form": form,
            "bytes": path.stat().st_size,
        }
        ids = encode(histories, meta["max_len"], FORMATS[fmt].input_dtype(target))
        try:
            arm = np.asarray(devices[cpu].run_runner(runtime, path, ids)["scores"], np.float64)
            counted = devices[cpu].instructions_per_call(runtime, path, ids)
        except EdgerecError as exc:
            return {**row, "error": str(exc).split(": ", 1)[-1]}
        _, arm_top, arm_user = score_outputs(arm, None, n, histories, targets, None, str(path))
        _, here_top, here_user = score_outputs(here[runtime, form], None, n, histories, targets, None, str(path))
        return {
            **row,
            "instructions_per_call": counted["instructions_per_call"],
            "counts": counted["counts"],
            "max_abs_diff_vs_pytorch": float(np.abs(arm - reference).max()),
            "top10_agreement_vs_pytorch": float(metrics.topk_agreement(arm_top, torch_top).mean()),
            "max_abs_diff_vs_host": float(np.abs(arm - here[runtime, form]).max()),
            "top10_agreement_vs_host": float(metrics.topk_agreement(arm_top, here_top).mean()),
            "identical_top10_vs_host": float((arm_top == here_top).all(axis=1).mean()),
            "ndcg10_arm": float(arm_user["NDCG@10"].mean()),
            "ndcg10_host": float(here_user["NDCG@10"].mean()),
            "paired_arm_minus_host": metrics.paired_bootstrap(arm_user["NDCG@10"], here_user["NDCG@10"]),
        }

    with ThreadPoolExecutor(jobs) as pool:
        rows = list(pool.map(one, tasks))
    fp32 = {(r["cpu"], r["runtime"]): r.get("instructions_per_call") for r in rows if r["form"] == "fp32"}
    for r in rows:
        base = fp32.get((r["cpu"], r["runtime"]))
        r["vs_fp32"] = r["instructions_per_call"] / base if base and "instructions_per_call" in r else None
    return rows


def step_vs_full(student: Path, folder: Path, windows, histories, log) -> list[dict]:
    """Instructions of one step-model update vs one full pass, per window n, on cortex-a76."""
    from edgerec.core.graphs import scoring_graph, step_graph, step_layout
    from edgerec.core.models import load_model
    from edgerec.devices.emulator import EmulatedDevice
    from edgerec.devices.runtimes import encode
    from edgerec.formats.onnx.export import export_onnx, export_step_onnx
    from edgerec.formats.tflite.export import export_step_tflite, export_tflite

    device = EmulatedDevice.open("cortex-a76", log)
    rows = []
    for n in windows:
        rec = load_model(student / "model")
        rec.positions, rec.max_len = "start", n  # the same weights, positions from the window start
        spec = step_layout(rec, n)
        full_ids = encode([h[-n:] for h in histories], n, "int64")
        full_ids = full_ids[(full_ids != 0).all(axis=1)][:5]  # full windows: the most work a pass does
        if len(full_ids) == 0:
            raise SystemExit(f"error: no test history has {n} items")
        for fmt, runtime in (("onnx", "onnxruntime"), ("tflite", "litert")):
            full, step = folder / f"full-{n}.{fmt}", folder / f"step-{n}.{fmt}"
            log(f"step vs full, n = {n}, {fmt}")
            if fmt == "onnx":
                export_onnx(scoring_graph(rec), full, n, 17, "int64", None, {})
                export_step_onnx(step_graph(rec, window=n), step, spec, 17, "int64", None, {})
            else:
                export_tflite(scoring_graph(rec), full, n)
                export_step_tflite(step_graph(rec, window=n), step, spec, None)
            ids = full_ids.astype(np.int64 if fmt == "onnx" else np.int32)
            full_count = device.instructions_per_call(runtime, full, ids)["instructions_per_call"]
            step_count = device.instructions_per_call(runtime, step, ids[:2], few=1, many=2, step=True)
            rows.append(
                {
                    "window": n,
                    "format": fmt,
                    "runtime": runtime,
                    "cpu": "cortex-a76",
                    "full_pass_instructions": full_count,
                    "step_update_instructions": step_count["instructions_per_call"],
                    "step_updates_counted": step_count["calls"][1] - step_count["calls"][0],
                    "full_over_step": full_count / step_count["instructions_per_call"],
                }
            )
    return rows


def step_forms(student: Path, data, folder: Path, cpus, histories, jobs: int, log) -> list[dict]:
    """Instructions per update of the step model (window = the student's max_len) in fp32 and
    every int8 form, per CPU: the student's weights with positions from the window start.
    Counted over the updates of one 30-item history (two histories minus one). Full-integer
    TFLite is left out: the full model's aborts in both aarch64 runtimes."""
    from concurrent.futures import ThreadPoolExecutor

    from edgerec.core.errors import EdgerecError
    from edgerec.core.graphs import step_graph, step_layout
    from edgerec.core.models import load_model
    from edgerec.core.targets import load_target
    from edgerec.devices.emulator import EmulatedDevice
    from edgerec.devices.incremental import calibration_feeds
    from edgerec.devices.runtimes import encode
    from edgerec.formats.onnx.export import export_step_onnx
    from edgerec.formats.onnx.int8 import (
        SESSION_CONFIG,
        calibrate_onnx,
        form_settings,
        onnx_units,
        quantize_onnx,
        structural_float,
    )
    from edgerec.formats.tflite.export import export_step_tflite
    from edgerec.formats.tflite.int8 import TFLITE_UNITS, quantize_tflite
    from edgerec.stages.quantize import load_calibration

    rec = load_model(student / "model")
    rec.positions = "start"
    spec = step_layout(rec)
    settings = load_target("arm64").quantization
    base = folder / "step-fp32"
    base.mkdir()
    export_step_onnx(step_graph(rec), base / "step.onnx", spec, 17, "int64", None, {})
    export_step_tflite(step_graph(rec), base / "step.tflite", spec, None)
    files = {("onnx", "fp32"): base / "step.onnx", ("tflite", "fp32"): base / "step.tflite"}
    sequences = load_calibration(data.path / "calibration.npz", rec.num_items, rec.max_len)[:64]
    ranges = folder / "step-ranges.json"
    calibrate_onnx(base / "step.onnx", calibration_feeds(base / "step.onnx", sequences), "minmax", ranges)
    for fmt, forms in (("onnx", ONNX_FORMS), ("tflite", ["dynamic", "weight_only"])):
        src = base / f"step.{fmt}"
        for form in forms:
            out = folder / f"step-{fmt}-{form}"
            out.mkdir()
            dst = out / src.name
            if fmt == "onnx":
                form_set = form_settings(settings, form)
                keep = settings.keep_float if form != "weight_only" else ()
                quantize_onnx(
                    src,
                    dst,
                    form_set,
                    ranges,
                    [u for u in onnx_units(src, keep) if u not in structural_float(src, form_set)],
                )
                if form in SESSION_CONFIG:
                    (out / "metadata.json").write_text(
                        json.dumps({"onnx_session_config": {src.name: SESSION_CONFIG[form]}})
                    )
            else:
                quantize_tflite(src, dst, form, settings.per_channel, None, list(TFLITE_UNITS))
            files[fmt, form] = dst
    rows_ids = [h[-30:] for h in histories if len(h) >= 30][:2]
    devices = {cpu: EmulatedDevice.open(cpu, log) for cpu in cpus}

    def one(task):
        cpu, (fmt, form), path = task
        log(f"step {fmt} {form}, emulated {cpu}")
        ids = encode(rows_ids, rec.max_len, "int64" if fmt == "onnx" else "int32")
        row = {"cpu": cpu, "format": fmt, "form": form, "bytes": path.stat().st_size, "window": rec.max_len}
        runtime = "onnxruntime" if fmt == "onnx" else "litert"
        try:
            got = devices[cpu].instructions_per_call(runtime, path, ids, few=1, many=2, step=True)
        except EdgerecError as exc:
            return {**row, "error": str(exc).split(": ", 1)[-1]}
        return {
            **row,
            "instructions_per_update": got["instructions_per_call"],
            "counts": got["counts"],
            "updates_counted": got["calls"][1] - got["calls"][0],
        }

    with ThreadPoolExecutor(jobs) as pool:
        rows = list(pool.map(one, [(cpu, key, path) for cpu in cpus for key, path in files.items()]))
    fp32 = {(r["cpu"], r["format"]): r.get("instructions_per_update") for r in rows if r["form"] == "fp32"}
    for r in rows:
        base_count = fp32.get((r["cpu"], r["format"]))
        r["vs_fp32"] = (
            r["instructions_per_update"] / base_count if base_count and "instructions_per_update" in r else None
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs"))
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=2, help="emulated processes at a time (one core each)")
    parser.add_argument(
        "--cpu", action="append", dest="cpus", help=f"qemu CPU model, repeatable (default: {' '.join(CPUS)})"
    )
    args = parser.parse_args()

    from edgerec.core.interactions import load_data
    from edgerec.core.models import load_model
    from edgerec.formats import target_profile
    from edgerec.stages.export import ExportConfig, export
    from edgerec.stages.quantize import QuantizeConfig, quantize

    started = time.perf_counter()
    cpus = args.cpus or CPUS

    def log(message):
        print(message, file=sys.stderr, flush=True)

    data = load_data(args.work / "data")
    student = args.work / "student"
    rec = load_model(student / "model")
    histories, targets = data.examples("test")
    histories, targets = histories[: args.users], targets[: args.users]
    result = {"machine": machine(), "users": len(histories), "student": str(student), "cpus": cpus}
    with tempfile.TemporaryDirectory(prefix="edgerec-arm-") as tmp:
        tmp = Path(tmp)
        rows = []
        for name, on_cpus in (("arm64", cpus), ("rpi4", ["cortex-a72"])):
            formats = FORMATS_BY_TARGET[name]
            target = target_profile(name, formats=formats)
            export(
                student,
                data.path,
                tmp / f"{name}-fp32",
                ExportConfig(target=name, formats=formats),
                overwrite=True,
                log=log,
            )
            files = make_forms(tmp / f"{name}-fp32", data, target, tmp / "forms", rec, log)
            rows += on_arm(files, tmp / f"{name}-fp32", target, on_cpus, rec, histories, targets, args.jobs, log)
        result["files"] = rows
        result["shipped"] = {}
        for name in ("arm64", "rpi4"):  # as `edgerec quantize` ships it: counted on the profile's CPU
            log(f"edgerec quantize --target {name}")
            manifest = quantize(
                tmp / f"{name}-fp32",
                data.path,
                tmp / f"{name}-int8",
                QuantizeConfig(target=name),
                overwrite=True,
                log=log,
            )
            for fmt, r in manifest["quantization"].items():
                result["shipped"][f"{name} {fmt}"] = {
                    **{
                        k: r[k]
                        for k in (
                            "scheme",
                            "size_ratio",
                            "chosen_because",
                            "arm_instructions",
                            "valid_ndcg10_fp32",
                            "valid_ndcg10_int8",
                        )
                    },
                    "vs_fp32": r["forms"][r["scheme"]].get("arm_vs_fp32"),
                    "forms": {
                        f: {k: c.get(k) for k in ("size_ratio", "arm_vs_fp32", "fits")} for f, c in r["forms"].items()
                    },
                }
        result["step_vs_full"] = step_vs_full(student, tmp, [50, 200], data.examples("test")[0], log)
        result["step_forms"] = step_forms(student, data, tmp, cpus, data.examples("test")[0], args.jobs, log)
    result["minutes"] = round((time.perf_counter() - started) / 60, 1)

    print_table(
        [
            "target",
            "cpu",
            "runtime",
            "form",
            "KB",
            "instr/call",
            "vs fp32",
            "|diff| vs torch",
            "top10 vs torch",
            "top10 vs host",
            "NDCG@10 ARM / host",
            "paired ARM-host",
        ],
        [
            [
                r["target"],
                r["cpu"].split(",")[0] + (" sve128" if "sve" in r["cpu"] else ""),
                r["runtime"],
                r["form"],
                f"{r['bytes'] / 1e3:.0f}",
                f"{r['instructions_per_call']:,.0f}",
                f"{r['vs_fp32']:.3f}" if r["vs_fp32"] else "-",
                f"{r['max_abs_diff_vs_pytorch']:.1e}",
                f"{r['top10_agreement_vs_pytorch']:.3f}",
                f"{r['top10_agreement_vs_host']:.3f}",
                f"{r['ndcg10_arm']:.4f} / {r['ndcg10_host']:.4f}",
                "[{:+.4f}, {:+.4f}]".format(*r["paired_arm_minus_host"]["ci95"]),
            ]
            for r in result["files"]
            if "error" not in r
        ],
    )
    for r in result["files"]:
        if "error" in r:
            print(f"{r['target']} {r['form']} {r['format']} on {r['runtime']}, emulated {r['cpu']}: {r['error']}")
    print()
    print_table(
        ["shipped", "form", "size vs fp32", "instructions vs fp32", "on", "why"],
        [
            [
                what,
                s["scheme"],
                f"{s['size_ratio']:.3f}",
                f"{s['vs_fp32']:.3f}" if s["vs_fp32"] else "-",
                s["arm_instructions"]["cpu"] if isinstance(s["arm_instructions"], dict) else "-",
                s["chosen_because"],
            ]
            for what, s in result["shipped"].items()
        ],
    )
    print()
    print_table(
        ["window n", "format", "full pass instr", "step update instr", "full / step"],
        [
            [
                r["window"],
                r["format"],
                f"{r['full_pass_instructions']:,.0f}",
                f"{r['step_update_instructions']:,.0f}",
                f"{r['full_over_step']:.1f}x",
            ]
            for r in result["step_vs_full"]
        ],
    )
    print()
    print_table(
        ["step model", "cpu", "form", "KB", "instr/update", "vs fp32"],
        [
            [
                r["format"],
                r["cpu"].split(",")[0] + (" sve128" if "sve" in r["cpu"] else ""),
                r["form"],
                f"{r['bytes'] / 1e3:.0f}",
                f"{r['instructions_per_update']:,.0f}" if "error" not in r else r["error"],
                f"{r['vs_fp32']:.3f}" if r.get("vs_fp32") else "-",
            ]
            for r in result["step_forms"]
        ],
    )
    print(f"\nwrote {save('arm', result)} ({result['minutes']} min)")


if __name__ == "__main__":
    run_benchmark(main, inputs_from="edgerec build --target arm64")
