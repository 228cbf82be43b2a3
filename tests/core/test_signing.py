"""Signed bundles (edgerec.core.signing, `edgerec keygen / sign / verify`) and the update example
(examples/update.py): a genuine bundle passes everywhere; a tampered, added-to, foreign-signed or
downgraded one is refused by every loader with one line."""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgerec.cli import app
from edgerec.core.errors import EdgerecError
from edgerec.core.signing import generate_key, release_of, sign_bundle, verify_bundle
from edgerec.stages.recommend import Recommender

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NO_EDGEREC = (
    "import runpy, sys; sys.modules['edgerec'] = None; sys.argv = sys.argv[1:]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    root = tmp_path_factory.mktemp("keys")
    return {
        "private": root / "key",
        "public": generate_key(root / "key"),
        "other_private": root / "other",
        "other_public": generate_key(root / "other"),
    }


@pytest.fixture
def bundle(tmp_path, arm64_onnx):
    copy = tmp_path / "bundle"
    shutil.copytree(arm64_onnx, copy)
    return copy


def _history(bundle):
    items = json.loads((bundle / "items.json").read_text())
    return [items[i]["id"] for i in (3, 1, 5)]


def _forge(bundle: Path, name: str, blob: bytes) -> None:
    """What an attacker who can write the bundle does: replace a file and rewrite the hashes that
    vouch for it (metadata.json's integrity, manifest.json's entry for metadata.json)."""
    (bundle / name).write_bytes(blob)
    meta = json.loads((bundle / "metadata.json").read_text())
    meta["integrity"][name] = {"sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
    (bundle / "metadata.json").write_text(json.dumps(meta))
    if (bundle / "manifest.json").is_file():
        manifest = json.loads((bundle / "manifest.json").read_text())
        manifest["files"]["metadata.json"] = hashlib.sha256((bundle / "metadata.json").read_bytes()).hexdigest()
        (bundle / "manifest.json").write_text(json.dumps(manifest))


def test_a_signed_bundle_verifies_anywhere_it_is_copied(bundle, keys, tmp_path):
    release = sign_bundle(bundle, keys["private"])
    assert release["version"] == 1 and release["parent_version"] is None
    assert (bundle / "bundle.sig").is_file() and release_of(bundle) == release
    moved = tmp_path / "elsewhere" / "b"
    shutil.copytree(bundle, moved)
    assert verify_bundle(moved, keys["public"])["version"] == 1
    (moved / "report.json").write_text("{}")  # validate rewrites its report: not signed, not refused
    assert verify_bundle(moved, keys["public"])["version"] == 1
    rec = Recommender(moved, public_key=keys["public"])
    assert rec.release["version"] == 1 and len(rec.recommend(_history(moved), k=3)) == 3


def test_tampered_added_and_foreign_signed_bundles_are_refused(bundle, keys):
    sign_bundle(bundle, keys["private"])
    forged = bundle.parent / "forged"
    shutil.copytree(bundle, forged)
    blob = bytearray((forged / "model.onnx").read_bytes())
    blob[len(blob) // 2] ^= 1
    _forge(forged, "model.onnx", bytes(blob))
    Recommender(forged)  # the hashes alone are fooled: that is what the signature is for
    with pytest.raises(EdgerecError, match="signature check failed"):
        verify_bundle(forged, keys["public"])
    with pytest.raises(EdgerecError, match="signature check failed"):
        Recommender(forged, public_key=keys["public"])
    added = bundle.parent / "added"
    shutil.copytree(bundle, added)
    (added / "extra.onnx").write_bytes(b"\0" * 8)
    with pytest.raises(EdgerecError, match="signature check failed"):
        verify_bundle(added, keys["public"])
    with pytest.raises(EdgerecError, match="not signed by this key"):
        verify_bundle(bundle, keys["other_public"])
    resigned = bundle.parent / "resigned"  # someone else's valid signature over a forged bundle
    shutil.copytree(forged, resigned)
    sign_bundle(resigned, keys["other_private"])
    with pytest.raises(EdgerecError, match="not signed by this key"):
        verify_bundle(resigned, keys["public"])


def test_versions_only_grow_and_a_downgrade_is_refused(bundle, keys):
    sign_bundle(bundle, keys["private"])
    newer = bundle.parent / "newer"
    shutil.copytree(bundle, newer)
    assert sign_bundle(newer, keys["private"], parent=bundle) == {**release_of(newer)}
    assert release_of(newer)["version"] == 2 and release_of(newer)["parent_version"] == 1
    with pytest.raises(EdgerecError, match="must exceed the parent's version 2"):
        sign_bundle(bundle.parent / "newer", keys["private"], version=2, parent=newer)
    assert verify_bundle(newer, keys["public"], installed=bundle)["version"] == 2
    with pytest.raises(EdgerecError, match="older than the installed version 2"):
        verify_bundle(bundle, keys["public"], installed=newer)
    with pytest.raises(EdgerecError, match="downgrade"):
        Recommender(bundle, public_key=keys["public"], installed=2)


def test_only_an_intact_bundle_is_signed_and_a_failed_signing_changes_nothing(bundle, keys, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(bundle, damaged)
    (damaged / "items.json").write_text("[]")
    with pytest.raises(EdgerecError, match="items.json"):
        sign_bundle(damaged, keys["private"])
    assert not (damaged / "bundle.sig").exists() and not (damaged / "release.json").exists()
    bad_key = tmp_path / "bad.pem"
    bad_key.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(EdgerecError, match="cannot sign with this key"):
        sign_bundle(bundle, bad_key)
    assert not (bundle / "release.json").exists() and not (bundle / "bundle.sig").exists()


def test_cli_keygen_sign_verify(tmp_path, bundle):
    runner = CliRunner()
    key = tmp_path / "publisher"
    done = runner.invoke(app, ["keygen", str(key)])
    assert done.exit_code == 0, done.output
    assert (key.stat().st_mode & 0o777) == 0o600 and Path(f"{key}.pub").is_file()
    again = runner.invoke(app, ["keygen", str(key)])
    assert again.exit_code == 2 and "exists" in again.stderr
    signed = runner.invoke(app, ["sign", str(bundle), "--key", str(key), "--json"])
    assert signed.exit_code == 0, signed.output
    assert json.loads(signed.stdout)["version"] == 1
    ok = runner.invoke(app, ["verify", str(bundle), "--public-key", f"{key}.pub"])
    assert ok.exit_code == 0 and "verified" in ok.stdout
    other = tmp_path / "other"
    generate_key(other)
    refused = runner.invoke(app, ["verify", str(bundle), "--public-key", f"{other}.pub"])
    assert refused.exit_code == 2
    assert refused.stderr.strip().count("\n") == 0 and "not signed by this key" in refused.stderr
    rec = runner.invoke(
        app, ["recommend", "--bundle", str(bundle), "--history", _history(bundle)[0], "--public-key", f"{other}.pub"]
    )
    assert rec.exit_code == 2 and "not signed by this key" in rec.stderr


def _update(*args):
    return subprocess.run(
        [sys.executable, "-c", NO_EDGEREC, str(EXAMPLES / "update.py"), *map(str, args)], capture_output=True, text=True
    )


def test_the_update_example_swaps_atomically_and_keeps_the_old_bundle_on_failure(bundle, keys, tmp_path):
    app_dir = tmp_path / "app"
    v1, v3 = tmp_path / "v1", tmp_path / "v3"
    shutil.copytree(bundle, v1)
    sign_bundle(v1, keys["private"])
    first = _update("install", v1, "--app", app_dir, "--public-key", keys["public"])
    assert first.returncode == 0, first.stderr
    assert _update("current", "--app", app_dir).stdout.strip() == "1"
    assert (app_dir / "current").is_symlink()

    foreign = tmp_path / "foreign"  # a genuine bundle signed by someone else
    shutil.copytree(bundle, foreign)
    sign_bundle(foreign, keys["other_private"], version=9)
    refused = _update("install", foreign, "--app", app_dir, "--public-key", keys["public"])
    assert refused.returncode == 1 and "signature check failed" in refused.stderr
    broken = tmp_path / "broken"  # signed by the publisher, but the model does not open
    shutil.copytree(bundle, broken)
    _forge(broken, "model.onnx", b"not an onnx model")
    sign_bundle(broken, keys["private"], parent=v1)
    failed = _update("install", broken, "--app", app_dir, "--public-key", keys["public"])
    assert failed.returncode == 1 and "kept version 1" in failed.stderr
    assert _update("current", "--app", app_dir).stdout.strip() == "1"
    assert not (app_dir / "bundles" / "v2").exists()

    shutil.copytree(bundle, v3)
    sign_bundle(v3, keys["private"], version=3, parent=v1)
    assert _update("install", v3, "--app", app_dir, "--public-key", keys["public"]).returncode == 0
    assert _update("current", "--app", app_dir).stdout.strip() == "3"
    app = subprocess.run(
        [sys.executable, "-c", NO_EDGEREC, str(EXAMPLES / "app.py"), str(app_dir / "current"), "--history"]
        + [",".join(_history(bundle)), "--public-key", str(keys["public"])],
        capture_output=True,
        text=True,
    )
    assert app.returncode == 0 and app.stdout.count("\n") == 10, app.stderr
    downgrade = _update("install", v1, "--app", app_dir, "--public-key", keys["public"])
    assert downgrade.returncode == 1 and "downgrade refused" in downgrade.stderr
    assert _update("rollback", "--app", app_dir).returncode == 0
    assert _update("current", "--app", app_dir).stdout.strip() == "1"
