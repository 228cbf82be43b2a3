"""What a bundle holds besides the model files, written by `export` and `quantize` alike: the
item list sized for an app, ORT Mobile's files for profiles that ship ONNX to it, and (through
`files.bundle_integrity`) every file's hash in metadata.json."""

from __future__ import annotations

import json
from pathlib import Path

from edgerec.checks import ort_format_check
from edgerec.writers import write_ort


def ort_files(folder: Path, meta: dict, step_entry: dict | None, target, histories) -> dict | None:
    """model.ort (+ step.ort) and required_operators.config for a profile that ships ONNX to ORT
    Mobile (`[onnx] ort_format`), each .ort checked against its .onnx; None for other profiles."""
    if not target.onnx.ort_format or "onnx" not in meta["files"]:
        return None
    names = [meta["files"]["onnx"]] + (
        [step_entry["files"]["onnx"]] if step_entry and "onnx" in step_entry["files"] else []
    )
    folded = (meta.get("onnx_session_config") or {}).get(names[0])
    entry = write_ort(folder, names, target.onnx.ort_format, folded)
    if folded:
        entry["weights"] = (
            "float: folded from the int8 ONNX file's DequantizeLinear nodes before conversion "
            "(ORT-format sessions cannot fold at load)"
        )
    entry["check"] = ort_format_check(folder, entry["files"], meta, target, histories)
    return entry


APP_ITEM_FIELDS = ("id", "title")  # what an app needs to map model indices and show items
IMPLIED = ("index",)  # an item's index is its line + 1: stored by neither file


def write_item_files(folder: Path, items: list[dict]) -> None:
    """The bundle's item list, sized for an app: `items.json` holds only the id and title of each
    item (line j + 1 of the model's scores), without indentation; anything else the data had
    (genres, ...) goes to `items-extra.json` in the same order. MovieLens-100K: 214 KB
    pretty-printed with genres before, bigger than the int8 model it describes."""
    compact = [{k: entry[k] for k in APP_ITEM_FIELDS if k in entry} for entry in items]
    (folder / "items.json").write_text(json.dumps(compact, ensure_ascii=False, separators=(",", ":")) + "\n")
    extras = [{k: v for k, v in entry.items() if k not in APP_ITEM_FIELDS + IMPLIED} for entry in items]
    if any(extras):
        (folder / "items-extra.json").write_text(json.dumps(extras, ensure_ascii=False, separators=(",", ":")) + "\n")
