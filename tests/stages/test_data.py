import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tomllib
from conftest import synthetic_rows

from edgerec.core.errors import EdgerecError
from edgerec.core.interactions import load_data
from edgerec.stages.data import DEFAULT_RECIPE, CalibrationRecipe, DataConfig, make_data


def _frame(rows):
    return pd.DataFrame(rows, columns=["user", "item", "timestamp"])


def test_split_vocab_and_order(tmp_path):
    rows = [
        ("a", "x", 3),
        ("a", "y", 1),
        ("a", "z", 2),
        ("a", "w", 4),  # a: y z x w
        ("b", "x", 1),
        ("b", "y", 2),
        ("b", "x2", 3),
        ("c", "x", 1),
        ("c", "y", 2),
    ]  # c has 2 interactions: dropped
    src = tmp_path / "i.csv"
    _frame(rows).to_csv(src, index=False)
    manifest = make_data(tmp_path / "d", interactions=src)
    assert manifest["counts"]["users_dropped"] == 1
    data = load_data(tmp_path / "d")
    assert data.users == ["a", "b"]
    ids = data.item_ids()
    assert ids[:2] == ["x", "y"]  # most popular first (x: 2 kept users, y: 2)
    seq_a = [ids[i - 1] for i in data.sequences[0]]
    assert seq_a == ["y", "z", "x", "w"]
    histories, targets = data.examples("test")
    assert ids[targets[0] - 1] == "w" and [ids[i - 1] for i in histories[0]] == ["y", "z", "x"]
    histories, targets = data.examples("valid")
    assert ids[targets[0] - 1] == "x" and [ids[i - 1] for i in histories[0]] == ["y", "z"]
    assert data.vocab_size == data.num_items + 2 and data.mask_token == data.num_items + 1
    assert [s.tolist() for s in data.train_sequences()][1] == [data.sequences[1][0]]


def test_equal_timestamps_keep_file_order(tmp_path):
    src = tmp_path / "i.csv"
    _frame([("a", "p", 5), ("a", "q", 5), ("a", "r", 5)]).to_csv(src, index=False)
    data = load_data(Path(make_data(tmp_path / "d", interactions=src) and tmp_path / "d"))
    assert [data.item_ids()[i - 1] for i in data.sequences[0]] == ["p", "q", "r"]


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_formats_give_the_same_artifact(tmp_path, fmt):
    frame = pd.DataFrame(synthetic_rows(12))
    src = tmp_path / f"i.{fmt}"
    if fmt == "csv":
        frame.to_csv(src, index=False)
    elif fmt == "parquet":
        frame.to_parquet(src)
    else:
        frame.to_json(src, orient="records", lines=True)
    make_data(tmp_path / "d", interactions=src, config=DataConfig(title_col="title"))
    data = load_data(tmp_path / "d")
    assert len(data.users) == 12 and data.items[0]["title"].startswith("Movie")
    reference = tmp_path / "ref.csv"
    frame.to_csv(reference, index=False)
    make_data(tmp_path / "r", interactions=reference)
    ref = load_data(tmp_path / "r")
    assert [s.tolist() for s in data.sequences] == [s.tolist() for s in ref.sequences]


def test_parquet_datetime_timestamps(tmp_path):
    frame = pd.DataFrame(synthetic_rows(5))
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], unit="s")
    frame.to_parquet(tmp_path / "i.parquet")
    make_data(tmp_path / "d", interactions=tmp_path / "i.parquet")
    assert len(load_data(tmp_path / "d").users) == 5


def test_separate_items_file_and_genres(tmp_path):
    src = tmp_path / "i.csv"
    _frame([("a", "1", 1), ("a", "2", 2), ("a", "3", 3)]).to_csv(src, index=False)
    meta = tmp_path / "items.csv"
    pd.DataFrame({"item": ["1", "2", "3"], "name": ["One", "Two", "Three"], "tags": ["A|B", "B", ""]}).to_csv(
        meta, index=False
    )
    make_data(tmp_path / "d", interactions=src, items_file=meta, config=DataConfig(title_col="name", genres_col="tags"))
    items = {e["id"]: e for e in load_data(tmp_path / "d").items}
    assert items["1"]["title"] == "One" and items["1"]["genres"] == ["A", "B"]


def test_calibration_comes_from_training_histories(data_dir):
    data = load_data(data_dir)
    calib = data.calibration()
    assert 0 < len(calib) <= CalibrationRecipe().num_sequences
    trains = [tuple(s.tolist()) for s in data.train_sequences()]
    for seq in calib:
        assert any(t[: len(seq)] == tuple(seq.tolist()) for t in trains)


def test_calibration_is_stratified_by_length():
    from edgerec.stages.data import sample_calibration

    rng = np.random.default_rng(0)
    seqs = [np.arange(1, n + 1) for n in rng.integers(4, 400, size=500)]
    calib = sample_calibration(seqs, CalibrationRecipe(num_sequences=40, strata=4, seed=0))
    lengths = sorted(len(c) for c in calib)
    assert len(calib) == 40
    assert lengths[0] < 60 and lengths[-1] > 150  # both ends of the distribution are covered


def test_default_recipe_file_matches_dataclass():
    raw = tomllib.loads(DEFAULT_RECIPE.read_text())
    assert raw == asdict(CalibrationRecipe())
    assert CalibrationRecipe.load(None) == CalibrationRecipe()


def test_recipe_unknown_key(tmp_path):
    bad = tmp_path / "r.toml"
    bad.write_text("num_sequence = 10\n")
    with pytest.raises(EdgerecError, match="unknown key 'num_sequence'"):
        CalibrationRecipe.load(bad)


def test_manifest_records_sources_and_counts(data_dir, interactions_csv):
    manifest = json.loads((data_dir / "manifest.json").read_text())
    assert manifest["stage"] == "data"
    assert manifest["sources"]["interactions"]["path"] == str(interactions_csv)
    assert set(manifest["files"]) == {"sequences.npz", "calibration.npz", "users.json", "items.json"}
    assert manifest["counts"]["interactions"] == len(synthetic_rows())


BAD_INPUTS = {
    "missing.csv": (None, "no such file"),
    "empty.csv": ("", "empty"),
    "header_only.csv": ("user,item,timestamp\n", "no rows"),
    "nocol.csv": ("user,item,when\na,b,1\n", "missing column 'timestamp'"),
    "text_time.csv": ("user,item,timestamp\na,b,yesterday\n", "non-numeric timestamp 'yesterday'"),
    "dups.csv": ("user,item,timestamp\na,b,1\na,b,1\na,c,2\na,d,3\n", "duplicate"),
    "notes.txt": ("user,item,timestamp\n", "not a CSV, Parquet or JSONL"),
    "broken.parquet": ("not parquet at all", "cannot parse as parquet"),
    "broken.jsonl": ("{not json\n", "cannot parse as jsonl"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_is_one_clear_error_and_no_output(tmp_path, name):
    content, message = BAD_INPUTS[name]
    src = tmp_path / name
    if content is not None:
        src.write_text(content)
    with pytest.raises(EdgerecError, match=message) as err:
        make_data(tmp_path / "out", interactions=src)
    assert name in str(err.value)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_duplicates_can_be_dropped(tmp_path):
    src = tmp_path / "dups.csv"
    src.write_text("user,item,timestamp\na,b,1\na,b,1\na,c,2\na,d,3\n")
    manifest = make_data(tmp_path / "d", interactions=src, config=DataConfig(drop_duplicates=True))
    assert manifest["counts"]["duplicates_dropped"] == 1


def test_unknown_dataset_suggests(tmp_path):
    with pytest.raises(EdgerecError, match="did you mean movielens-100k"):
        make_data(tmp_path / "d", dataset="movielens-10k")


def test_existing_output_needs_overwrite(tmp_path, interactions_csv):
    make_data(tmp_path / "d", interactions=interactions_csv)
    with pytest.raises(EdgerecError, match="already exists"):
        make_data(tmp_path / "d", interactions=interactions_csv)
    make_data(tmp_path / "d", interactions=interactions_csv, overwrite=True)


def test_a_builtin_dataset_name_where_a_file_is_expected_is_that_dataset(tmp_path, monkeypatch):
    """`edgerec data movielens-100k` means the built-in dataset, not a missing file."""
    from typer.testing import CliRunner

    from edgerec.cli import app
    from edgerec.core import datasets

    asked = []

    def fetch(name):  # stand-in for the download, so the test never fetches anything
        asked.append(name)
        raise datasets.EdgerecError(f"fetch {name}: not in this test")

    monkeypatch.setattr(datasets, "fetch", fetch)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["data", "movielens-100k", "--out", str(tmp_path / "d")])
    assert asked == ["movielens-100k"] and result.exit_code == 2
    result = CliRunner().invoke(app, ["data", "movielens-1ook", "--out", str(tmp_path / "d")])
    assert result.exit_code == 2
    assert "movielens-1ook: no such file (the built-in dataset is --dataset movielens-100k)" in result.stderr
