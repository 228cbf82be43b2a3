"""Where the matmul_nbits form's ARM instructions go on the default student: the form applied to
one group of weight nodes at a time, each file opened with default session options on the
emulated Cortex-A76 (ORT 1.32 aarch64), instructions per batch-1 call vs the fp32 file.

    python benchmarks/nbits_units.py [--work runs] [--users 50]

Inputs: the fp32 arm64 bundle the README's first command leaves in --work (runs/export-arm64)
and its data (runs/data). Groups: the scoring head with the item lookup (they share the item
table), the position lookup, the encoder's weight multiplies, all of them, and the form as
`edgerec quantize` makes it (every unit it can take; the position table stays float).
Writes benchmarks/results/nbits_units.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, print_table, save  # noqa: E402


def groups(model_path: Path) -> dict[str, list[str]]:
    """Unit groups by what they read: {group: node names}."""
    import onnx

    from edgerec.formats.onnx.int8 import onnx_units

    graph = onnx.load(str(model_path)).graph
    units = onnx_units(model_path)
    table_users: dict[str, list[str]] = {}
    for node in graph.node:
        if node.name in units:
            weight = next(i for i in node.input if i in {t.name for t in graph.initializer})
            table_users.setdefault(weight, []).append(node.name)
    tied = next(users for users in table_users.values() if len(users) > 1)  # lookup + head
    lookups = [u for u in units if u.startswith("Gather") and u not in tied]
    encoder = [u for u in units if u not in tied and u not in lookups]
    return {
        "head + item lookup": tied,
        "position lookup": lookups,
        "encoder multiplies": encoder,
        "every unit (position table in int8 too)": units,
        "as quantize makes it (position table float)": units,
    }


LONE = ("position lookup", "every unit (position table in int8 too)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("runs"))
    parser.add_argument("--users", type=int, default=50)
    args = parser.parse_args()

    from edgerec.core.interactions import load_data
    from edgerec.devices.emulator import EmulatedDevice
    from edgerec.devices.runtimes import encode
    from edgerec.formats.onnx import nbits

    src = args.work / "export-arm64" / "model.onnx"
    meta = json.loads((src.parent / "metadata.json").read_text())
    data = load_data(args.work / "data")
    ids = encode(data.examples("valid")[0][: args.users], meta["max_len"], "int64")
    device = EmulatedDevice.open("cortex-a76", print)
    rows, results = [], []
    with tempfile.TemporaryDirectory() as tmp:
        variants = {"fp32": None, **groups(src)}
        for name, units in variants.items():
            folder = Path(tmp) / str(len(results))
            folder.mkdir()
            path = folder / "model.onnx"
            if units is None:
                shutil.copy(src, path)
                left = {}
            else:  # lookup-only tables in int8 too where the group asks for them, to show their cost
                left = nbits.nbits_onnx(src, path, units, lone_lookups=name in LONE)
            (folder / "metadata.json").write_text("{}")  # default session options, as an app opens it
            count = device.instructions_per_call("onnxruntime", path, ids)
            results.append(
                {
                    "units": name,
                    "nodes": units or [],
                    "left_float": left,
                    "bytes": path.stat().st_size,
                    "instructions_per_call": count["instructions_per_call"],
                    "counts": count["counts"],
                }
            )
        fp32 = results[0]["instructions_per_call"]
        for r in results:
            r["vs_fp32"] = r["instructions_per_call"] / fp32
            rows.append([r["units"], f"{r['bytes']:,}", f"{r['instructions_per_call']:,.0f}", f"{r['vs_fp32']:.3f}"])
    print_table(["matmul_nbits on", "bytes", "instructions / call (cortex-a76)", "vs fp32"], rows)
    save("nbits_units", {"machine": machine(), "cpu": "cortex-a76", "users": args.users, "rows": results})


if __name__ == "__main__":
    main()
