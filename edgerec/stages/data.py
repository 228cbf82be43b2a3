"""`edgerec data`: interactions -> per-user sequences, leave-one-out split, item vocab, calibration set.

Model indices: 0 is padding, 1..N are the items (most popular first, which keeps the head of the
item table contiguous for later compression), N+1 is the mask token BERT4Rec-style models use.
Split (leave-one-out, as in BERT4Rec and SASRec papers): for a user with sequence s,
train = s[:-2], validation = predict s[-2] from s[:-2], test = predict s[-1] from s[:-1].
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgerec.core import datasets
from edgerec.core import synthetic as synth
from edgerec.core.artifacts import (
    atomic_artifact,
    check_output,
    write_json,
    writes_output,
)
from edgerec.core.errors import EdgerecError
from edgerec.core.files import sha256_file
from edgerec.core.interactions import PAD, pack
from edgerec.core.synthetic import SyntheticConfig
from edgerec.core.tables import numeric_times, read_table, require_columns

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_RECIPE = Path(__file__).resolve().parents[2] / "calibration" / "default.toml"


@dataclass(frozen=True)
class CalibrationRecipe:
    """How many calibration sequences to sample, and how. Mirrors calibration/default.toml."""

    version: int = 1
    num_sequences: int = 256
    # Equal numbers from each history-length quantile, so the ranges the quantizer sees cover
    # short (cold-start) and long histories alike instead of following the length distribution.
    strata: int = 4
    seed: int = 0

    @classmethod
    def load(cls, path: Path | None) -> CalibrationRecipe:
        if path is None:
            if not DEFAULT_RECIPE.is_file():
                return cls()
            path = DEFAULT_RECIPE
        try:
            raw = tomllib.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise EdgerecError(f"{path}: cannot read calibration recipe ({exc})") from None
        allowed = {f.name: f for f in fields(cls)}
        for key, value in raw.items():
            if key not in allowed:
                raise EdgerecError(f"{path}: unknown key '{key}' (allowed: {', '.join(allowed)})")
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise EdgerecError(f"{path}: '{key}' must be a non-negative integer, got {value!r}")
        recipe = cls(**raw)
        if recipe.num_sequences < 1 or recipe.strata < 1:
            raise EdgerecError(f"{path}: num_sequences and strata must be >= 1")
        return recipe


@dataclass(frozen=True)
class DataConfig:
    user_col: str = "user"
    item_col: str = "item"
    time_col: str = "timestamp"
    title_col: str | None = None
    genres_col: str | None = None
    min_interactions: int = 3  # users with fewer cannot give a train, a validation and a test item
    drop_duplicates: bool = False
    calibration: CalibrationRecipe = field(default_factory=CalibrationRecipe)


# --------------------------------------------------------------------------- building


@dataclass
class Interactions:
    users: list[str]
    sequences: list[np.ndarray]  # model indices per user, chronological
    items: list[dict[str, Any]]  # index-1 ordered: {"index", "id", "title"?, "genres"?}
    counts: dict[str, int]


def build(frame, path: Path, config: DataConfig, item_meta=None) -> Interactions:
    cols = {"--user-col": config.user_col, "--item-col": config.item_col, "--time-col": config.time_col}
    require_columns(frame, path, cols)
    table = frame[[config.user_col, config.item_col]].astype(str).copy()
    table.columns = ["user", "item"]
    for name in ("user", "item"):
        column = config.user_col if name == "user" else config.item_col
        empty = (table[name].str.strip() == "") | frame[column].isna().to_numpy()
        if empty.any():
            row = int(np.flatnonzero(empty.to_numpy())[0])
            raise EdgerecError(f"{path}: empty {name} id at data row {row + 1}")
    table["time"] = numeric_times(frame[config.time_col], path)
    table["row"] = np.arange(len(table))
    counts = {"rows": len(table)}

    dup = table.duplicated(subset=["user", "item", "time"])
    counts["duplicates_dropped"] = int(dup.sum()) if config.drop_duplicates else 0
    if dup.any():
        if not config.drop_duplicates:
            row = int(np.flatnonzero(dup.to_numpy())[0])
            raise EdgerecError(
                f"{path}: {int(dup.sum())} duplicate (user, item, timestamp) rows, first at data "
                f"row {row + 1}; pass --drop-duplicates to drop them"
            )
        table = table[~dup]

    sizes = table.groupby("user").size()
    keep = sizes[sizes >= config.min_interactions].index
    counts["users_dropped"] = int(len(sizes) - len(keep))
    table = table[table["user"].isin(keep)]
    if table.empty:
        raise EdgerecError(
            f"{path}: no user has >= {config.min_interactions} interactions (each user needs "
            "a training, a validation and a test item)"
        )

    # Vocabulary: most popular first, ties by id, so index order is stable and meaningful.
    popularity = table.groupby("item").size()
    order = sorted(popularity.index, key=lambda item: (-int(popularity[item]), item))
    index_of = {item: i + 1 for i, item in enumerate(order)}
    meta = _item_metadata(frame, config, item_meta)
    items = []
    for item in order:
        entry: dict[str, Any] = {"index": index_of[item], "id": item}
        entry.update(meta.get(item, {}))
        items.append(entry)

    # Chronological per user; a stable sort keeps file order for equal timestamps (MovieLens-1M:
    # 774,028 ratings share a user and a second with another).
    counts["tied_timestamps"] = int(table.duplicated(subset=["user", "time"], keep=False).sum())
    table = table.sort_values(["user", "time", "row"], kind="stable")
    table["index"] = table["item"].map(index_of).astype(np.int32)
    users, sequences = [], []
    for user, group in table.groupby("user", sort=True):
        users.append(str(user))
        sequences.append(group["index"].to_numpy(dtype=np.int32))
    counts.update(users=len(users), items=len(items), interactions=int(len(table)))
    return Interactions(users=users, sequences=sequences, items=items, counts=counts)


def _item_metadata(frame, config: DataConfig, item_meta) -> dict[str, dict[str, Any]]:
    """Titles and genres by item id, from the interactions file or a separate items table."""
    source = item_meta if item_meta is not None else frame
    item_col = config.item_col
    if item_meta is not None and item_col not in item_meta.columns:
        raise EdgerecError(f"items file: missing column '{item_col}' (--item-col)")
    out: dict[str, dict[str, Any]] = {}
    for flag, col in (("--title-col", config.title_col), ("--genres-col", config.genres_col)):
        if col is not None and col not in source.columns:  # a typo would silently drop every title
            raise EdgerecError(
                f"{'items file' if item_meta is not None else 'interactions file'}: no "
                f"column {col!r} ({flag}); columns: {', '.join(map(str, source.columns))}"
            )
    wanted = [
        (key, col) for key, col in (("title", config.title_col), ("genres", config.genres_col)) if col is not None
    ]
    if not wanted:
        return {}
    subset = source.drop_duplicates(subset=[item_col])
    for row in subset[[item_col] + [col for _, col in wanted]].itertuples(index=False):
        info = {}
        for (key, _), value in zip(wanted, row[1:]):
            if value is None or (isinstance(value, float) and np.isnan(value)):
                continue
            text = str(value).strip()
            if key == "genres":
                info[key] = [g for g in text.replace("|", " ").split() if g]
            elif text:
                info[key] = text
        out[str(row[0])] = info
    return out


def sample_calibration(sequences: list[np.ndarray], recipe: CalibrationRecipe) -> list[np.ndarray]:
    """Histories as an app would send them: a random-length prefix of each user's training part.

    Only training items are used, so the calibration set never contains a validation or test target.
    """
    rng = np.random.default_rng(recipe.seed)
    candidates = []
    for seq in sequences:
        train = seq[:-2]
        if len(train) >= 1:
            candidates.append(train[: int(rng.integers(1, len(train) + 1))])
    if not candidates:
        return []
    lengths = np.array([len(c) for c in candidates])
    order = np.argsort(lengths, kind="stable")
    strata = np.array_split(order, min(recipe.strata, len(order)))
    per = int(np.ceil(recipe.num_sequences / len(strata)))
    chosen: list[int] = []
    for stratum in strata:
        take = min(per, len(stratum))
        chosen.extend(rng.choice(stratum, size=take, replace=False).tolist())
    chosen = sorted(chosen[: recipe.num_sequences])
    return [candidates[i] for i in chosen]


# --------------------------------------------------------------------------- artifact I/O


@writes_output
def make_data(
    out_dir: Path,
    *,
    interactions: Path | None = None,
    dataset: str | None = None,
    items_file: Path | None = None,
    config: DataConfig = DataConfig(),
    overwrite: bool = False,
    synthetic: SyntheticConfig | None = None,
) -> dict:
    """Build a data artifact from a file of interactions, a built-in dataset or a synthetic log
    (`edgerec.core.synthetic`); returns its manifest."""
    if config.min_interactions < 3:
        raise EdgerecError("--min-interactions must be >= 3 (train, validation and test need one each)")
    check_output(out_dir, "data", overwrite)
    if synthetic is not None:
        if interactions is not None or dataset is not None:
            raise EdgerecError("give one of an interactions file, --dataset or --synthetic")
        return _make_synthetic(out_dir, synthetic, config, overwrite)
    sources: dict[str, Path] = {}
    separator = None
    if (
        interactions is not None
        and dataset is None
        and not Path(interactions).exists()
        and str(interactions) in datasets.BUILTIN
    ):  # `edgerec data movielens-100k`: the dataset
        interactions, dataset = None, str(interactions)
    if interactions is None:
        spec = datasets.get_builtin("movielens-100k" if dataset is None else dataset)
        folder = datasets.fetch(spec.name)
        interactions, items_file = folder / spec.interactions, folder / spec.items
        c = spec.columns
        config = DataConfig(
            user_col=c["user"],
            item_col=c["item"],
            time_col=c["time"],
            title_col=c["title"],
            genres_col=c["genres"],
            min_interactions=config.min_interactions,
            drop_duplicates=config.drop_duplicates,
            calibration=config.calibration,
        )
        separator = spec.separator
    elif dataset is not None:
        raise EdgerecError("give either an interactions file or --dataset, not both")
    frame = read_table(Path(interactions), separator)
    sources["interactions"] = Path(interactions)
    item_meta = None
    if items_file is not None:
        item_meta = read_table(Path(items_file), separator)
        sources["items"] = Path(items_file)
        if config.title_col is None and config.genres_col is None:
            raise EdgerecError("--items needs --title-col and/or --genres-col")
    data = build(frame, Path(interactions), config, item_meta)
    with _write_data(out_dir, data, config, overwrite, Path(interactions)) as manifest:
        manifest["dataset"] = dataset if dataset or interactions is None else None
        manifest["sources"] = {k: {"path": str(p), "sha256": sha256_file(p)} for k, p in sources.items()}
    return manifest


def _make_synthetic(out_dir: Path, synthetic: SyntheticConfig, config: DataConfig, overwrite: bool) -> dict:
    config = replace(config, user_col="user", item_col="item", time_col="timestamp", title_col=None, genres_col=None)
    log = synth.generate(synthetic)
    oracle = synth.oracle_metrics(log)
    label = Path(f"synthetic:{synthetic.items}x{synthetic.users}")
    data = build(log.frame(), label, config)
    with _write_data(out_dir, data, config, overwrite, label) as manifest:
        manifest["dataset"] = None
        manifest["sources"] = {}
        manifest["synthetic"] = {**synth.describe(synthetic), "oracle_test": oracle}
    return manifest


@contextlib.contextmanager
def _write_data(out_dir: Path, data: Interactions, config: DataConfig, overwrite: bool, source: Path):
    """The artifact's files and common manifest keys; the caller adds where the data came from."""
    calibration = sample_calibration(data.sequences, config.calibration)
    if not calibration:
        raise EdgerecError(f"{source}: no training history long enough for calibration")
    with atomic_artifact(out_dir, "data", config=config, overwrite=overwrite) as (tmp, manifest):
        yield manifest
        np.savez(tmp / "sequences.npz", **pack(data.sequences))
        np.savez(tmp / "calibration.npz", **pack(calibration))
        write_json(tmp / "users.json", data.users)
        write_json(tmp / "items.json", data.items)
        manifest["counts"] = {**data.counts, "calibration_sequences": len(calibration)}
        manifest["vocab"] = {"pad": PAD, "mask": len(data.items) + 1, "size": len(data.items) + 2}
        manifest["split"] = "leave-one-out: test = last item, validation = second-last"
        manifest["ties"] = (
            "interactions with equal timestamps keep their order in the file "
            f"(stable sort; {data.counts['tied_timestamps']} share a user and a time)"
        )
