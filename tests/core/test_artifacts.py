import pytest

from edgerec.core.artifacts import artifact_hash, atomic_artifact, read_manifest
from edgerec.core.errors import EdgerecError


def test_crash_leaves_no_partial_artifact(tmp_path):
    out = tmp_path / "a"
    with pytest.raises(RuntimeError):
        with atomic_artifact(out, "test") as (tmp, _):
            (tmp / "half.bin").write_bytes(b"x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_crash_during_overwrite_keeps_the_old_artifact(tmp_path):
    out = tmp_path / "a"
    with atomic_artifact(out, "test") as (tmp, manifest):
        (tmp / "f.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_artifact(out, "test", overwrite=True) as (tmp, _):
            (tmp / "f.txt").write_text("new")
            raise KeyboardInterrupt
    assert (out / "f.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a"]


def test_manifest_hashes_and_inputs(tmp_path):
    with atomic_artifact(tmp_path / "a", "first") as (tmp, manifest):
        (tmp / "f.txt").write_text("hello")
        manifest["metrics"] = {"x": 1}
    with atomic_artifact(tmp_path / "b", "second", inputs={"parent": tmp_path / "a"}) as (tmp, _):
        (tmp / "g.txt").write_text("bye")
    b = read_manifest(tmp_path / "b", "second")
    assert b["inputs"]["parent"]["hash"] == artifact_hash(tmp_path / "a")
    assert set(b["files"]) == {"g.txt"} and "torch" in b["versions"]
    with pytest.raises(EdgerecError, match="is a 'second' artifact, expected first"):
        read_manifest(tmp_path / "b", "first")


def test_refuses_to_replace_a_foreign_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(EdgerecError, match="not an edgerec artifact"):
        with atomic_artifact(tmp_path / "mine", "x", overwrite=True):
            pass
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_not_an_artifact(tmp_path):
    with pytest.raises(EdgerecError, match="no manifest.json"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{oops")
    with pytest.raises(EdgerecError, match="unreadable manifest"):
        read_manifest(tmp_path)
