"""Artifact directories: every stage reads some and writes one.

An artifact is a directory of files plus `manifest.json` saying which stage made it, from which
inputs (by content hash), with which config and library versions, and what it measured. Writes are
atomic: the stage fills a hidden temporary sibling directory and renames it into place at the end,
so a crash or Ctrl-C never leaves a half-written artifact behind.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
import tempfile
from dataclasses import asdict, is_dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from edgerec import __version__
from edgerec.errors import EdgerecError

MANIFEST = "manifest.json"
# Libraries whose version decides what an artifact contains; recorded in every manifest.
_TRACKED_LIBRARIES = ("torch", "transformers", "numpy", "onnx", "onnxruntime", "litert-torch")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "edgerec": __version__}
    for name in _TRACKED_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return _jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return value.item()
    return value


def write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(_jsonable(payload), indent=2, sort_keys=False) + "\n")


def read_manifest(directory: Path, stage: str | tuple[str, ...] | None = None) -> dict:
    """Read an artifact's manifest, checking (optionally) which stage made it."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not directory.is_dir():
        raise EdgerecError(f"{directory}: no such artifact directory")
    if not path.is_file():
        raise EdgerecError(f"{directory}: not an edgerec artifact (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise EdgerecError(f"{path}: unreadable manifest ({exc.msg} at line {exc.lineno})") from None
    stages = (stage,) if isinstance(stage, str) else stage
    if stages and manifest.get("stage") not in stages:
        raise EdgerecError(
            f"{directory}: is a '{manifest.get('stage')}' artifact, expected {' or '.join(stages)}"
        )
    return manifest


def artifact_hash(directory: Path) -> str:
    """Content hash of an artifact: the hash of its files' hashes (the manifest lists them).
    A plain file input (e.g. a user's calibration set) hashes as its content."""
    if Path(directory).is_file():
        return sha256_file(Path(directory))
    manifest = read_manifest(directory)
    files = manifest.get("files", {})
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


@contextlib.contextmanager
def atomic_artifact(
    out_dir: Path,
    stage: str,
    *,
    config: Any = None,
    inputs: dict[str, Path] | None = None,
    overwrite: bool = False,
) -> Iterator[tuple[Path, dict]]:
    """Yield (temporary directory, manifest dict); on success write the manifest and rename.

    The caller writes its files into the temporary directory and may add keys (metrics, counts)
    to the manifest dict. On any exception the temporary directory is removed and `out_dir` is
    left exactly as it was.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise EdgerecError(f"{out_dir}: already exists (pass --overwrite to replace it)")
    if out_dir.exists() and not (out_dir / MANIFEST).is_file():
        raise EdgerecError(f"{out_dir}: exists and is not an edgerec artifact; refusing to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700; an artifact is an ordinary folder
    manifest: dict[str, Any] = {
        "stage": stage,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": library_versions(),
        "config": _jsonable(config) if config is not None else {},
        "inputs": {
            name: {"path": str(path), "hash": artifact_hash(path)}
            for name, path in (inputs or {}).items()
        },
    }
    try:
        yield tmp, manifest
        manifest["files"] = {
            str(p.relative_to(tmp)): sha256_file(p)
            for p in sorted(tmp.rglob("*"))
            if p.is_file() and p.name != MANIFEST
        }
        write_json(tmp / MANIFEST, manifest)
        if out_dir.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.replace(out_dir, trash / "old")
            os.replace(tmp, out_dir)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
