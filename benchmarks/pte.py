"""ExecuTorch beside ONNX on the default student, on the host runtimes: accuracy of each int8
form (full ranking, every test user, paired against the same format's fp32 file) and agreement
between the int8 .pte and the int8 model.onnx, and ARM instructions per batch-1 call of the
same files on the emulated Cortex-A76 (benchmarks/arm.py counts every form of every format on
three CPUs, the .pte files included; this is the short run beside ONNX).

    python benchmarks/pte.py [--work runs] [--users 50]

Inputs: runs/data and runs/student from the README's first command (`edgerec build --target
arm64`). Steps, in one run:

1. `export --target arm64 --formats onnx,executorch` of the student (parity vs PyTorch on the
   host runtimes and on the emulated Cortex-A76, as export does).
2. `quantize --target arm64` of that bundle without the emulator: each format's forms are made
   and fitted to the profile's tolerance and top-10 agreement floor; the first that fits, in the
   profile's order, ships. The other ExecuTorch form is made here with the same plan, so both
   are measured (the shipped one and the other, whether it fit or not).
3. Test NDCG@10 and HR@10 of every file on its host runtime (onnxruntime, executorch 1.4.1),
   paired bootstrap of each int8 file against its fp32 file, and top-10 agreement between files.
4. ARM instructions per call ((105 calls - 5 calls) / 100, one thread, median of two counts) of
   each file on the first --users test users, emulated Cortex-A76. The aarch64 ExecuTorch is
   1.1.0 with torch 2.10 (the newest pair with a CPU torch for aarch64 on PyPI; the host's exporter
   and runtime are 1.4.1): see edgerec/devices/sysroot.py ON_DEMAND.

Writes benchmarks/results/pte.json (not executorch.py: that name would shadow the executorch package).
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


def ndcg_hr(scorer, data):
    from edgerec.core.evaluation import rank_users

    histories, targets = data.examples("test")
    ranks, top = rank_users(scorer, histories, targets, data.num_items)
    return np.where(ranks < 10, 1.0 / np.log2(ranks + 2.0), 0.0), (ranks < 10).astype(float), top


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs"))
    parser.add_argument("--users", type=int, default=50, help="test users run under emulation")
    args = parser.parse_args()

    from edgerec.core import metrics
    from edgerec.core.evaluation import resolve_model_dir
    from edgerec.core.interactions import load_data
    from edgerec.core.models import load_model
    from edgerec.devices.emulator import EmulatedDevice
    from edgerec.devices.runtimes import encode
    from edgerec.formats import FORMATS, target_profile
    from edgerec.stages.export import ExportConfig, export
    from edgerec.stages.quantize import QuantizeConfig, load_calibration, quantize

    data = load_data(args.work / "data")
    student = args.work / "student"
    rec = load_model(resolve_model_dir(student))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        exported = export(
            student, args.work / "data", tmp / "fp32", ExportConfig(target="arm64", formats=("onnx", "executorch"))
        )
        quantized = quantize(
            tmp / "fp32", args.work / "data", tmp / "int8", QuantizeConfig(target="arm64", emulate=False)
        )
        meta = json.loads((tmp / "fp32" / "metadata.json").read_text())
        target = target_profile("arm64", formats=("onnx", "executorch"))
        # the other ExecuTorch form, made by the same plan quantize used
        et = FORMATS["executorch"]
        other = next(
            f for f in et.int8_forms(target.quantization) if f != quantized["quantization"]["executorch"]["scheme"]
        )
        sequences = load_calibration(args.work / "data" / "calibration.npz", meta["num_items"], meta["max_len"])
        work = tmp / "work"
        work.mkdir()
        plan = et.plan_int8(
            other,
            tmp / "fp32" / "model.pte",
            work,
            work,
            target.quantization,
            sequences,
            meta,
            target,
            print,
            model=lambda: rec,
        )
        (tmp / "other").mkdir()
        shutil.copy(plan.make(plan.units), tmp / "other" / "model.pte")
        files = {
            ("onnx", "fp32"): tmp / "fp32" / "model.onnx",
            ("onnx", quantized["quantization"]["onnx"]["scheme"]): tmp / "int8" / "model.onnx",
            ("executorch", "fp32"): tmp / "fp32" / "model.pte",
            ("executorch", quantized["quantization"]["executorch"]["scheme"]): tmp / "int8" / "model.pte",
            ("executorch", other): tmp / "other" / "model.pte",
        }
        int8_meta = json.loads((tmp / "int8" / "metadata.json").read_text())
        per_user, tops = {}, {}
        for (fmt, form), path in files.items():
            print(f"test users: {path.name} ({form}) on the host's {next(iter(FORMATS[fmt].runtimes))}")
            scorer = FORMATS[fmt].open_bundle_file(path, int8_meta if path.parent.name == "int8" else meta, 1)
            ndcg, hr, top = ndcg_hr(scorer, data)
            per_user[(fmt, form)] = {"ndcg10": ndcg, "hr10": hr}
            tops[(fmt, form)] = top
        device = EmulatedDevice.open("cortex-a76", print)
        hist = data.examples("test")[0][: args.users]
        arm = {}
        for (fmt, form), path in files.items():
            runtime = next(iter(FORMATS[fmt].runtimes))
            print(f"emulated cortex-a76: counting {path.name} ({form}) on aarch64 {runtime}")
            ids = encode(hist, meta["max_len"], FORMATS[fmt].input_dtype(target))
            arm[(fmt, form)] = device.instructions_per_call(runtime, path, ids)
        sizes = {key: path.stat().st_size for key, path in files.items()}
    rows, results = [], []
    onnx_int8 = next(k for k in files if k[0] == "onnx" and k[1] != "fp32")
    for key in files:
        fmt, form = key
        fp32 = (fmt, "fp32")
        paired = metrics.paired_bootstrap(per_user[key]["ndcg10"], per_user[fp32]["ndcg10"]) if form != "fp32" else None
        entry = {
            "format": fmt,
            "form": form,
            "bytes": sizes[key],
            "size_vs_fp32": sizes[key] / sizes[fp32],
            "test_ndcg10": float(per_user[key]["ndcg10"].mean()),
            "test_hr10": float(per_user[key]["hr10"].mean()),
            "ndcg10_vs_fp32_paired": paired,
            "top10_agreement_vs_fp32": float(metrics.topk_agreement(tops[key], tops[fp32]).mean()),
            "top10_agreement_vs_onnx_int8": float(metrics.topk_agreement(tops[key], tops[onnx_int8]).mean()),
            "arm_instructions_per_call": arm[key]["instructions_per_call"],
            "arm_counts": arm[key]["counts"],
            "arm_vs_onnx_fp32": arm[key]["instructions_per_call"] / arm[("onnx", "fp32")]["instructions_per_call"],
            "arm_vs_own_fp32": arm[key]["instructions_per_call"] / arm[fp32]["instructions_per_call"],
        }
        results.append(entry)
        rows.append(
            [
                f"{fmt} {form}",
                f"{sizes[key] / 1e3:.0f} KB",
                f"{entry['test_ndcg10']:.4f}",
                "-"
                if paired is None
                else f"{paired['diff']:+.4f} [{paired['ci95'][0]:+.4f}, {paired['ci95'][1]:+.4f}]",
                f"{entry['top10_agreement_vs_onnx_int8']:.3f}",
                f"{entry['arm_instructions_per_call']:,.0f}",
                f"{entry['arm_vs_own_fp32']:.3f}x",
            ]
        )
    print_table(
        [
            "file",
            "size",
            "test NDCG@10",
            "vs own fp32 (paired 95%)",
            "top-10 vs ONNX int8",
            "ARM insns/call (A76)",
            "vs own fp32",
        ],
        rows,
    )
    parity_arm = exported["parity_emulated_arm"]
    print(f"parity on emulated ARM: {json.dumps(parity_arm)}")
    path = save(
        "pte",
        {
            "machine": machine(),
            "users": len(per_user[("onnx", "fp32")]["ndcg10"]),
            "emulated_users": args.users,
            "emulated_cpu": "cortex-a76",
            "emulated_runtimes": {"onnxruntime": "1.32.0", "executorch": "1.1.0 (torch 2.10.0 CPU)"},
            "host_runtimes": {"executorch": "1.4.1"},
            "parity": exported["parity"],
            "parity_emulated_arm": parity_arm,
            "quantize_choice": {
                f: {k: q[k] for k in ("scheme", "chosen_because", "kept_float")}
                for f, q in quantized["quantization"].items()
            },
            "files": results,
            "seconds": round(time.perf_counter() - started, 1),
        },
    )
    print(f"-> {path}")


if __name__ == "__main__":
    run_benchmark(main, inputs_from="edgerec build --target arm64")
