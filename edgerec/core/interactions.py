"""A data artifact as the stages read it (`edgerec data` writes it): the users' item sequences
in time order, the item list and the leave-one-out splits, with `pack`/`unpack` for the npz
files that hold the sequences."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgerec.core.artifacts import (
    read_manifest,
    verify_artifact,
)
from edgerec.core.errors import EdgerecError
from edgerec.core.files import load_npz, read_json

PAD = 0


def pack(sequences: list[np.ndarray]) -> dict[str, np.ndarray]:
    offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(s) for s in sequences])
    flat = np.concatenate(sequences).astype(np.int32) if sequences else np.zeros(0, np.int32)
    return {"items": flat, "offsets": offsets}


def unpack(path: Path) -> list[np.ndarray]:
    archive = load_npz(path, "packed sequences")
    flat, offsets = archive["items"], archive["offsets"]
    return [flat[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


@dataclass
class Data:
    """A loaded data artifact."""

    path: Path
    users: list[str]
    sequences: list[np.ndarray]
    items: list[dict[str, Any]]
    manifest: dict

    @property
    def num_items(self) -> int:
        return len(self.items)

    @property
    def mask_token(self) -> int:
        return self.num_items + 1

    @property
    def vocab_size(self) -> int:
        return self.num_items + 2

    def train_sequences(self) -> list[np.ndarray]:
        """Everything before the validation item (what training may see)."""
        return [s[:-2] for s in self.sequences]

    def examples(self, split: str) -> tuple[list[np.ndarray], np.ndarray]:
        """(histories, targets) for 'valid' or 'test', one per user, same user order."""
        if split == "valid":
            return [s[:-2] for s in self.sequences], np.array([s[-2] for s in self.sequences])
        if split == "test":
            return [s[:-1] for s in self.sequences], np.array([s[-1] for s in self.sequences])
        raise EdgerecError(f"unknown split '{split}' (valid or test)")

    def calibration(self) -> list[np.ndarray]:
        return unpack(self.path / "calibration.npz")

    def item_ids(self) -> list[str]:
        return [entry["id"] for entry in self.items]


def load_data(path: Path) -> Data:
    path = Path(path)
    manifest = verify_artifact(path, read_manifest(path, "data"))
    try:
        sequences = unpack(path / "sequences.npz")
    except KeyError as exc:
        raise EdgerecError(f"{path / 'sequences.npz'}: damaged data artifact (no array {exc})") from None
    users = read_json(path / "users.json", "the data artifact's users")
    items = read_json(path / "items.json", "the data artifact's items")
    return Data(path=path, users=users, sequences=sequences, items=items, manifest=manifest)
