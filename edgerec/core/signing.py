"""Signed bundles an app can trust over the air: OpenSSF model signing (the `model-signing`
package) with an ECDSA key the user holds, plus a release record that orders updates.

- `release.json` (written by `sign_bundle`, signed with the rest): the bundle's `version`, an
  integer that only grows, its `parent_version` (the bundle it replaces) and when it was signed.
- `bundle.sig`: a Sigstore bundle whose DSSE envelope holds an in-toto statement listing every
  file's SHA-256, signed with the private key (`model_signing.signing.Config()
  .use_elliptic_key_signer`). Nothing goes online: key signing needs no Sigstore instance.

`verify_bundle` checks, in this order: the signature against the public key (a bundle signed by
anyone else is refused), every file against the signed digests, no file the signature does not
cover (`ignore_unsigned_files=False`), and the version against the bundle already installed (a
downgrade, even a genuinely signed old bundle, is refused). validate's report files are left out
of the signature: they are rewritten at every validation and an app never loads them.

The format is the library's own, so `model_signing verify key --signature bundle.sig
--public_key key.pub dist/arm64` checks an edgerec bundle too; examples/web/app.js verifies the
same envelope with WebCrypto.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from pathlib import Path

from edgerec.core.errors import EdgerecError
from edgerec.core.files import read_bundle, read_json

SIGNATURE = "bundle.sig"
RELEASE = "release.json"
UNSIGNED = (SIGNATURE, "report.json", "report.html")  # validate rewrites the reports
EXTRA_HINT = "signing needs the `sign` extra: pip install 'edgerec[sign]'"


def _model_signing():
    try:
        import model_signing.signing  # noqa: F401
        import model_signing.verifying  # noqa: F401
    except ImportError:
        raise EdgerecError(EXTRA_HINT) from None
    import model_signing

    return model_signing


def generate_key(private_path: Path, public_path: Path | None = None, *, overwrite: bool = False) -> Path:
    """A new ECDSA P-256 key pair as PEM files: the private key (mode 0600, unencrypted: keep it
    where your build machine's secrets live) and the public key an app embeds. Returns the public
    key's path (default: the private key's with `.pub`)."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec
    except ImportError:
        raise EdgerecError(EXTRA_HINT) from None

    private_path = Path(private_path)
    public_path = Path(public_path) if public_path else private_path.with_name(private_path.name + ".pub")
    for path in (private_path, public_path):
        if path.exists() and not overwrite:
            raise EdgerecError(f"{path}: exists (pass --overwrite to replace the key)")
        if not path.parent.is_dir():
            raise EdgerecError(f"{path.parent}: no such folder")
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public_path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return public_path


def release_of(bundle: Path) -> dict | None:
    """The bundle's release record, or None for an unsigned bundle."""
    path = Path(bundle) / RELEASE
    if not path.is_file():
        return None
    release = read_json(path, "a bundle's release record")
    if not isinstance(release, dict) or not isinstance(release.get("version"), int) or release["version"] < 1:
        raise EdgerecError(f"{path}: not a release record (needs an integer version >= 1)")
    return release


def _offline_signing_config(model_signing):
    """model-signing 1.0's `signing.Config()` first sets up a Sigstore signer, which fetches
    Sigstore's trust root over the network; key signing replaces that signer at once, so the
    subclass skips it (1.1 does the same lazily)."""

    class Offline(model_signing.signing.Config):
        def use_sigstore_signer(self, **_):
            return self

    return Offline()


def _hashing(model_signing, bundle: Path):
    # full paths: model-signing 1.0 matches ignored paths against the paths it walks
    return model_signing.hashing.Config().set_ignored_paths(
        paths=[Path(bundle) / name for name in UNSIGNED], ignore_git_paths=False
    )


def sign_bundle(bundle: Path, private_key: Path, *, version: int | None = None, parent: Path | None = None) -> dict:
    """Write release.json and bundle.sig into `bundle`; returns the release record.

    `version` defaults to the parent's + 1 when `parent` (the bundle this one replaces) is
    given, else to the bundle's current version (re-signing), else 1. A version that does not
    exceed the parent's is refused: apps would take the update for a downgrade."""
    model_signing = _model_signing()
    bundle = Path(bundle)
    read_bundle(bundle)  # only a bundle whose files are the ones it was built with gets signed
    private_key = _key_file(private_key, "private")
    parent_release = release_of(parent) if parent is not None else None
    if parent is not None and parent_release is None:
        raise EdgerecError(f"{parent}: the parent bundle is not signed (no {RELEASE})")
    current = release_of(bundle)
    if version is None:
        version = parent_release["version"] + 1 if parent_release else (current["version"] if current else 1)
    if version < 1:
        raise EdgerecError(f"--version {version}: versions start at 1")
    if parent_release and version <= parent_release["version"]:
        raise EdgerecError(
            f"--version {version}: must exceed the parent's version {parent_release['version']} "
            "(an app would refuse it as a downgrade)"
        )
    release = {
        "version": version,
        "parent_version": parent_release["version"] if parent_release else None,
        "signed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "signature": SIGNATURE,
        "unsigned_files": list(UNSIGNED),
    }
    before = (bundle / RELEASE).read_bytes() if (bundle / RELEASE).is_file() else None
    tmp = bundle / f".{SIGNATURE}.tmp"
    tmp.unlink(missing_ok=True)  # left by a signing that was killed: it would be signed too
    (bundle / RELEASE).write_text(json.dumps(release, indent=2) + "\n")
    try:
        with _quiet():
            _offline_signing_config(model_signing).use_elliptic_key_signer(private_key=private_key).set_hashing_config(
                _hashing(model_signing, bundle)
            ).sign(bundle, tmp)
    except BaseException as exc:  # leave the bundle as it was: its old release record, no new signature
        tmp.unlink(missing_ok=True)
        if before is None:
            (bundle / RELEASE).unlink(missing_ok=True)
        else:
            (bundle / RELEASE).write_bytes(before)
        if isinstance(exc, ValueError):  # an unsupported or unreadable key
            raise EdgerecError(f"{private_key}: cannot sign with this key ({exc})") from None
        raise
    os.replace(tmp, bundle / SIGNATURE)
    return release


def verify_bundle(bundle: Path, public_key: Path, *, installed: Path | int | None = None) -> dict:
    """Check `bundle`'s signature with `public_key` and its version against `installed` (the
    bundle it would replace, or that bundle's version). Returns the release record; raises an
    EdgerecError with one line otherwise."""
    model_signing = _model_signing()
    bundle = Path(bundle).resolve()  # a symlinked bundle folder: model-signing walks no links
    public_key = _key_file(public_key, "public")
    if not (bundle / SIGNATURE).is_file():
        raise EdgerecError(f"{bundle}: not signed (no {SIGNATURE}); sign it with edgerec sign")
    try:
        config = model_signing.verifying.Config().use_elliptic_key_verifier(public_key=public_key)
        config.set_hashing_config(_hashing(model_signing, bundle))
        if hasattr(config, "set_ignore_unsigned_files"):  # model-signing >= 1.1; 1.0 refuses added files anyway
            config.set_ignore_unsigned_files(False)
        with _quiet():
            config.verify(bundle, bundle / SIGNATURE)
    except Exception as exc:  # the library raises ValueError and cryptography's InvalidSignature
        raise EdgerecError(f"{bundle}: signature check failed: {_reason(exc)}") from None
    release = release_of(bundle)
    if release is None:
        raise EdgerecError(f"{bundle}: signed but has no {RELEASE}")
    floor = installed
    if installed is not None and not isinstance(installed, int):
        floor = (release_of(installed) or {}).get("version")
    if floor is not None and release["version"] < floor:
        raise EdgerecError(
            f"{bundle}: version {release['version']} is older than the installed version {floor} (a downgrade; refused)"
        )
    return release


def _reason(exc: Exception) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if type(exc).__name__ == "InvalidSignature" or "Key mismatch" in text:
        return "not signed by this key"
    return text[:300]


def _key_file(path: Path, kind: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise EdgerecError(f"{path}: no such {kind} key file")
    head = path.read_bytes()[:64]
    if b"-----BEGIN" not in head:
        raise EdgerecError(f"{path}: not a PEM {kind} key (make one with edgerec sign keygen)")
    return path


@contextlib.contextmanager
def _quiet():
    """model-signing prints warnings to stdout; edgerec's console shows its own lines only."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield
