"""Over-the-air updates as an app should take them: verify, install beside, smoke-test, swap
atomically, keep the previous bundle to roll back to. NumPy + the runtime + model-signing; no edgerec.

    python examples/update.py install DOWNLOADED_BUNDLE --app APP_DIR --public-key key.pub
    python examples/update.py rollback --app APP_DIR
    python examples/update.py current --app APP_DIR

The app's folder holds `bundles/v<version>/` and `current`, a symlink the app loads through
(`examples/app.py APP_DIR/current ...`). `install`:
1. verifies the download (`app.verify_signature`: signed with this key, every file as signed, no
   file added) and refuses a version older than the one installed: an old bundle signed with
   the right key is still a downgrade an attacker could replay;
2. copies it into `bundles/.incoming-<version>` and renames it to `bundles/v<version>`;
3. loads it and scores one history (a smoke test: the model opens, returns one finite score
   per item);
4. points `current` at it with a rename (`os.replace` of a new symlink: an app that starts at any
   moment sees the old bundle or the new one, never a mix).

When 1 or 3 fails, `current` is untouched, the copy is removed, and the command says why
(exit 1). `rollback` points `current` back at the newest installed version below it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from app import encode, load, verify_signature  # noqa: E402


def installed_version(app_dir: Path) -> int | None:
    current = app_dir / "current"
    if not current.exists():
        return None
    return json.loads((current / "release.json").read_text())["version"]


def versions(app_dir: Path) -> list[int]:
    folder = app_dir / "bundles"
    found = (
        [int(p.name[1:]) for p in folder.glob("v*") if p.is_dir() and p.name[1:].isdigit()] if folder.is_dir() else []
    )
    return sorted(found)


def point_current(app_dir: Path, version: int) -> None:
    """`current` -> bundles/v<version>, replaced in one rename."""
    tmp = app_dir / ".current.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(Path("bundles") / f"v{version}", target_is_directory=True)
    os.replace(tmp, app_dir / "current")


def smoke_test(bundle: Path, public_key: Path) -> None:
    meta, items, run = load(bundle, public_key=public_key)
    scores = run(encode([[1]], meta["max_len"]))
    if scores.shape != (1, len(items)) or not np.isfinite(scores).all():
        raise SystemExit(f"error: {bundle}: smoke test failed (scores of shape {scores.shape}, or not finite)")


def install(download: Path, app_dir: Path, public_key: Path) -> int:
    release = verify_signature(download, public_key)
    version, before = release["version"], installed_version(app_dir)
    if before is not None and version < before:
        raise SystemExit(
            f"error: {download}: version {version} is older than the installed {before} (downgrade refused)"
        )
    if before == version:
        print(f"version {version} is already installed")
        return version
    (app_dir / "bundles").mkdir(parents=True, exist_ok=True)
    incoming, final = app_dir / "bundles" / f".incoming-{version}", app_dir / "bundles" / f"v{version}"
    shutil.rmtree(incoming, ignore_errors=True)
    shutil.rmtree(final, ignore_errors=True)  # a copy left by an install that failed its smoke test
    shutil.copytree(download, incoming)
    try:
        verify_signature(incoming, public_key)  # the copy, not only the download
        os.replace(incoming, final)
        smoke_test(final, public_key)
    except BaseException:
        shutil.rmtree(incoming, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)
        print(f"kept version {before}" if before is not None else "nothing installed", file=sys.stderr)
        raise
    point_current(app_dir, version)
    print(f"installed version {version}" + (f" (was {before})" if before is not None else ""))
    return version


def rollback(app_dir: Path) -> int:
    now = installed_version(app_dir)
    older = [v for v in versions(app_dir) if now is None or v < now]
    if not older:
        raise SystemExit("error: no earlier version to roll back to")
    point_current(app_dir, older[-1])
    print(f"rolled back to version {older[-1]} (was {now})")
    return older[-1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("install", "rollback", "current"))
    parser.add_argument("bundle", type=Path, nargs="?", help="the downloaded bundle (install)")
    parser.add_argument("--app", type=Path, required=True, help="the app's bundle folder")
    parser.add_argument("--public-key", type=Path, help="the key the app trusts (install)")
    args = parser.parse_args()
    if args.action == "install":
        if args.bundle is None or args.public_key is None:
            raise SystemExit("error: install needs the downloaded bundle and --public-key")
        install(args.bundle, args.app, args.public_key)
    elif args.action == "rollback":
        rollback(args.app)
    else:
        print(installed_version(args.app))


if __name__ == "__main__":
    main()
