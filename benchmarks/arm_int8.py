"""Int8 as the phone feels it: each ONNX file opened as an app opens it (default session options;
model.ort on ORT's ORT-format path), ARM instructions per batch-1 call on the emulated Cortex-A76
(ORT 1.32 aarch64) against the fp32 file, with size, operators and ranking on ARM vs this host.

    python benchmarks/arm_int8.py [--work runs] [--users 50]

Students: `ml100k-default` (the default student the README's first command leaves in --work:
runs/export-arm64, runs/data) and `items-100k` (the same student with its item table widened
to 100,000 items, the extra rows drawn like the trained ones: instruction counts depend on the
shapes, not the weights, so its NDCG is not reported). Forms: fp32, matmul_nbits (as `edgerec
quantize` makes it) and weight-only (its default-session cost). The floor: a session run on a
graph with no node and on a one-node graph (Cast).
Writes benchmarks/results/arm_int8.json (`rows`, `floor`). Not yet measured here: the ML-1M
2-layer student and TFLite files (issue 33).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, print_table, save  # noqa: E402

ITEMS = 100_000


def widen(src: Path, dst: Path, items: int) -> None:
    """`src` with `items` items: the tied table and the head's bias get new rows (normal, the
    trained rows' spread), the slice that drops the padding rows and the output shape follow."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    old = graph.output[0].type.tensor_type.shape.dim[1].dim_value
    rng = np.random.default_rng(0)
    for init in graph.initializer:
        a = numpy_helper.to_array(init)
        if a.shape[:1] == (old + 2,):
            extra = rng.normal(a.mean(), a.std(), (items - old, *a.shape[1:])).astype(a.dtype)
            init.CopyFrom(numpy_helper.from_array(np.concatenate([a, extra]), init.name))
    for node in graph.node:
        if node.op_type == "Constant":
            a = numpy_helper.to_array(node.attribute[0].t)
            if a.shape == (1,) and a[0] == old + 1:
                node.attribute[0].t.CopyFrom(numpy_helper.from_array(np.array([items + 1], a.dtype)))
    for out in graph.output:
        out.type.tensor_type.shape.dim[1].dim_value = items
    onnx.save(model, str(dst))


def floor_graphs(folder: Path) -> dict[str, Path]:
    """Over input_ids [batch, 200] int64: a graph with no node (its `scores` output a constant) and
    a one-node graph (`scores` = Cast of input_ids to float)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    paths = {}
    for name, nodes in (("no node", []), ("one node", [helper.make_node("Cast", ["input_ids"], ["scores"], to=1)])):
        graph = helper.make_graph(
            nodes,
            name.replace(" ", "_"),
            [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", 200])],
            [helper.make_tensor_value_info("scores", TensorProto.FLOAT, None)],
            initializer=[] if nodes else [numpy_helper.from_array(np.zeros((1, 200), np.float32), "scores")],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        paths[name] = folder / name.replace(" ", "_") / "model.onnx"
        paths[name].parent.mkdir()
        onnx.save(model, str(paths[name]))
        (paths[name].parent / "metadata.json").write_text("{}")
    return paths


def make_forms(src: Path, folder: Path, platform: str) -> dict[str, Path]:
    """fp32, matmul_nbits and weight-only of `src`, each with its .ort, in folders of their own
    with an empty metadata.json (no session entries: as an app opens the file)."""
    from edgerec.formats.onnx.int8 import onnx_units, weight_only_onnx
    from edgerec.formats.onnx.mobile import write_ort
    from edgerec.formats.onnx.nbits import nbits_onnx

    units = onnx_units(src)
    makers = {
        "fp32": lambda dst: shutil.copy(src, dst),
        "matmul_nbits": lambda dst: nbits_onnx(src, dst, units),
        "weight_only": lambda dst: weight_only_onnx(src, dst, units),
    }
    out = {}
    for form, make in makers.items():
        (folder / form).mkdir(parents=True)
        make(folder / form / "model.onnx")
        (folder / form / "metadata.json").write_text("{}")
        write_ort(folder / form, ["model.onnx"], platform)  # no folding: the .ort as it is
        out[form] = folder / form
    return out


def _operators(path: Path) -> int | None:
    import onnx

    return len(onnx.load(str(path)).graph.node) if path.suffix == ".onnx" else None


def measure(device, student: str, forms: dict, ids, hist, targets, num_items, accuracy: bool) -> list[dict]:
    from edgerec.core import metrics
    from edgerec.devices.envs import run_runner
    from edgerec.formats.checks import score_outputs
    from edgerec.formats.onnx.int8 import RUNTIME_VERSION_NEEDED

    rows = []
    for file in ("model.onnx", "model.ort"):
        fp32 = None
        for form, folder in forms.items():
            path = folder / file
            count = device.instructions_per_call("onnxruntime", path, ids)["instructions_per_call"]
            fp32 = fp32 or count
            arm = device.run_runner("onnxruntime", path, ids, 1)
            here = run_runner(sys.executable, "onnxruntime", path, ids, 1)
            _, arm_top, arm_user = score_outputs(arm["scores"], None, num_items, hist, targets, None, str(path))
            _, here_top, here_user = score_outputs(here["scores"], None, num_items, hist, targets, None, str(path))
            rows.append(
                {
                    "student": student,
                    "file": file,
                    "load": "default",
                    "form": form,
                    "bytes": path.stat().st_size,
                    "operators": _operators(path),
                    "instructions_per_call": count,
                    "fp32_instructions_per_call": fp32,
                    "vs_fp32": count / fp32,
                    "top10_agreement_vs_host": float(metrics.topk_agreement(arm_top, here_top).mean()),
                    "ndcg10_arm": float(arm_user["NDCG@10"].mean()) if accuracy else None,
                    "ndcg10_fp32": None,
                    "runtime_version_needed": RUNTIME_VERSION_NEEDED.get(form),
                    "shipped": None,
                }
            )
            print(f"{student} {file} {form}: {count:,.0f} ({count / fp32:.3f}x)", flush=True)
        first = next(r for r in rows if r["student"] == student and r["file"] == file and r["form"] == "fp32")
        for r in rows:
            if r["student"] == student and r["file"] == file:
                r["ndcg10_fp32"] = first["ndcg10_arm"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("runs"))
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--int8", type=Path, default=Path("dist/arm64"), help="the int8 bundle quantize shipped")
    args = parser.parse_args()

    from edgerec.core.interactions import load_data
    from edgerec.devices.emulator import EmulatedDevice
    from edgerec.devices.runtimes import encode

    src = args.work / "export-arm64" / "model.onnx"
    meta = json.loads((src.parent / "metadata.json").read_text())
    data = load_data(args.work / "data")
    hist, targets = data.examples("test")
    hist, targets = hist[: args.users], targets[: args.users]
    ids = encode(hist, meta["max_len"], "int64")
    device = EmulatedDevice.open("cortex-a76", print)
    shipped = json.loads((args.int8 / "manifest.json").read_text())["quantization"]["onnx"]["scheme"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        floor = {
            name: device.instructions_per_call("onnxruntime", path, ids)["instructions_per_call"]
            for name, path in floor_graphs(tmp).items()
        }
        rows = measure(
            device, "ml100k-default", make_forms(src, tmp / "ml100k", "arm"), ids, hist, targets, data.num_items, True
        )
        widen(src, tmp / "wide.onnx", ITEMS)
        wide = make_forms(tmp / "wide.onnx", tmp / "items-100k", "arm")
        rows += measure(device, "items-100k", wide, ids, hist, targets, ITEMS, False)
    for r in rows:
        r["shipped"] = r["student"] == "ml100k-default" and r["form"] == shipped
    print_table(
        ["student", "file", "form", "bytes", "operators", "instructions / call", "vs fp32", "top-10 vs host"],
        [
            [r["student"], r["file"], r["form"], f"{r['bytes']:,}", r["operators"] or "",
             f"{r['instructions_per_call']:,.0f}", f"{r['vs_fp32']:.3f}", f"{r['top10_agreement_vs_host']:.3f}"]
            for r in rows
        ],
    )  # fmt: skip
    print_table(["floor", "instructions / call"], [[k, f"{v:,.0f}"] for k, v in floor.items()])
    save(
        "arm_int8",
        {
            "machine": machine(),
            "cpu": "cortex-a76",
            "runtime": "onnxruntime 1.32.0 (aarch64, emulated)",
            "users": args.users,
            "floor": floor,
            "rows": rows,
            "not_measured": ["ml1m-2layer", "model.tflite"],
        },
    )


if __name__ == "__main__":
    main()
