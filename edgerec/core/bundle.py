"""What a bundle holds besides the model files, written by `export` and `quantize` alike: the
item list sized for an app (a format's own side files, such as ORT Mobile's, are the format's:
`ModelFormat.app_files`; every file's hash goes into metadata.json through
`files.bundle_integrity`)."""

from __future__ import annotations

import json
from pathlib import Path

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
