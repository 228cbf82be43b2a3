"""`edgerec keygen`, `edgerec sign`, `edgerec verify`: bundles an app can trust over the air
(edgerec.core.signing: OpenSSF model signing with an ECDSA P-256 key, and a version that only grows)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgerec.cli.common import JsonOut, Overwrite, emit_json, table, user_errors

Bundle = Annotated[Path, typer.Argument(help="Bundle directory (e.g. dist/arm64).")]


def keygen(
    key: Annotated[
        Path, typer.Argument(help="Private key file to write (PEM, mode 0600); the public key goes to KEY.pub.")
    ],
    overwrite: Overwrite = False,
) -> None:
    """Make an ECDSA P-256 key pair for signing bundles: keep the private key with your build
    secrets, embed the public key (KEY.pub) in the app."""
    with user_errors():
        from edgerec.core.signing import generate_key

        public = generate_key(key, overwrite=overwrite)
    typer.echo(f"wrote {key} (private: keep it secret) and {public} (public: ship it in the app)")


def sign(
    bundle: Bundle,
    key: Annotated[Path, typer.Option("--key", "-k", help="Private key (PEM) from edgerec keygen.")],
    version: Annotated[
        Optional[int],
        typer.Option(
            min=1,
            max=2**31 - 1,
            help="Release version (default: the parent's + 1 with --parent, else the bundle's current one, else 1).",
        ),
    ] = None,
    parent: Annotated[
        Optional[Path],
        typer.Option(help="The signed bundle this one replaces (its version becomes the parent version)."),
    ] = None,
    json_out: JsonOut = False,
) -> None:
    """Sign a bundle: write release.json (version, parent version) and bundle.sig (every file's
    SHA-256 in a DSSE envelope signed with KEY, the OpenSSF model-signing format). Sign after
    validate: the bundle's files are checked first and must be the ones it was built with."""
    with user_errors():
        from edgerec.core.signing import sign_bundle

        release = sign_bundle(bundle, key, version=version, parent=parent)
    if json_out:
        emit_json(release)
        return
    table(
        f"signed {bundle}",
        [("version", str(release["version"])), ("parent version", str(release["parent_version"] or "-"))],
    )


def verify(
    bundle: Bundle,
    public_key: Annotated[
        Path, typer.Option("--public-key", "-p", help="Public key (PEM) the bundle must be signed with.")
    ],
    installed: Annotated[
        Optional[Path],
        typer.Option(help="The bundle installed now: an older version than it is refused (a downgrade)."),
    ] = None,
    json_out: JsonOut = False,
) -> None:
    """Check a bundle as an app should before loading it: the signature against the public key,
    every file against the signed digests, no unsigned file, and no downgrade. Exit 0 when it
    passes; one line and exit 2 when it does not."""
    with user_errors():
        from edgerec.core.signing import verify_bundle

        release = verify_bundle(bundle, public_key, installed=installed)
    if json_out:
        emit_json({"verified": True, **release})
        return
    typer.echo(f"verified {bundle}: version {release['version']}, signed {release['signed_at']}")
