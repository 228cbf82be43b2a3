"""Artifact directories: every stage reads some and writes one.

An artifact is a directory of files plus `manifest.json` saying which stage made it, from which
inputs (by content hash), with which config and library versions, and what it measured. Writes are
atomic: the stage fills a hidden temporary sibling directory and renames it into place at the end,
so a crash or Ctrl-C never leaves a half-written artifact behind.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import functools
import hashlib
import inspect
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, is_dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from edgerec.core.errors import EdgerecError
from edgerec.core.files import read_json, sha256_file, verify
from edgerec.core.version import __version__

MANIFEST = "manifest.json"
# Libraries whose version decides what an artifact contains; recorded in every manifest.
_TRACKED_LIBRARIES = ("torch", "transformers", "numpy", "onnx", "onnxruntime", "litert-torch")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "edgerec": __version__}
    for name in _TRACKED_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return value.item()
    return value


def write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(jsonable(payload), indent=2, sort_keys=False) + "\n")


def read_manifest(directory: Path, stage: str | tuple[str, ...] | None = None) -> dict:
    """Read an artifact's manifest, checking (optionally) which stage made it."""
    directory = Path(directory)
    path = directory / MANIFEST
    if directory.is_file():
        raise EdgerecError(f"{directory}: is a file, expected an artifact directory")
    if not directory.is_dir():
        raise EdgerecError(f"{directory}: no such artifact directory")
    if not path.is_file():
        raise EdgerecError(f"{directory}: not an edgerec artifact (no {MANIFEST})")
    manifest = read_json(path, "a manifest")
    if not isinstance(manifest, dict) or "stage" not in manifest:
        raise EdgerecError(f"{path}: not an edgerec manifest (no 'stage')")
    stages = (stage,) if isinstance(stage, str) else stage
    if stages and manifest.get("stage") not in stages:
        raise EdgerecError(f"{directory}: is a '{manifest.get('stage')}' artifact, expected {' or '.join(stages)}")
    return manifest


def verify_artifact(directory: Path, manifest: dict | None = None, under: str | None = None) -> dict:
    """Check an artifact's files (those in the sub-folder `under`, when given) against the hashes
    its manifest recorded; a changed, truncated or missing file is refused with one line.
    Returns the manifest."""
    manifest = manifest if manifest is not None else read_manifest(directory)
    files = manifest.get("files", {})
    names = [n for n in files if under is None or n.startswith(under.rstrip("/") + "/")]
    verify(directory, files, names=names, fix=f"re-run the {manifest.get('stage')} stage that made it")
    return manifest


def read_artifact(directory: Path, stage: str | tuple[str, ...]) -> dict:
    """`read_manifest` of a `stage` artifact with every file it lists checked (`verify_artifact`):
    what a stage calls on an input it will use later, so a bad one fails before any work."""
    return verify_artifact(directory, read_manifest(directory, stage))


def artifact_hash(directory: Path) -> str:
    """Content hash of an artifact: the hash of its files' hashes (the manifest lists them).
    A plain file input (e.g. a user's calibration set) hashes as its content."""
    if Path(directory).is_file():
        return sha256_file(Path(directory))
    manifest = read_manifest(directory)
    files = manifest.get("files", {})
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


# Write failures that mean "this disk or folder cannot take the artifact", not a bug.
_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}
BUNDLE_STAGES = ("export", "quantize")  # both make bundles; one may replace the other


# Outputs this process holds the lock of: {resolved path: [file handle, depth]}. A stage claims
# its output for the whole run; `atomic_artifact` inside it then finds the lock already held.
_HELD: dict[str, list] = {}


def _holder(lock: Path) -> str:
    try:
        text = lock.read_text().split()
    except OSError:
        text = []
    return f" (pid {text[0]})" if text and text[0].isdigit() else ""


def _writable_folder(folder: Path, what: str) -> list[Path]:
    """Create `folder` (and missing parents) for `what`; returns the folders it created. An
    unwritable place is one line naming it."""
    created = [p for p in (folder, *folder.parents) if not p.exists()][::-1]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgerecError(f"{folder}: cannot create the folder for {what} ({exc.strerror})") from None
    return created


@contextlib.contextmanager
def output_lock(out_dir: Path) -> Iterator[None]:
    """Hold `.<name>.lock` beside `out_dir` while a command makes it: a second command writing the
    same output is refused at once, naming the holder's pid. The lock is the kernel's (flock): it
    goes with the process however that ends, so a lock file a killed run left behind is stale and
    is simply taken over. Re-entrant within a process; under torchrun only rank 0 (the writer)
    takes it, since every rank of one run names the same output. Taking it is also the check
    that the output's folder is writable, before any expensive work."""
    out_dir = Path(out_dir)
    key = str(out_dir.resolve())
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield
        finally:
            _HELD[key][1] -= 1
        return
    if os.environ.get("RANK", "0") != "0":
        yield
        return
    created = _writable_folder(out_dir.parent, f"{out_dir.name}")
    lock = out_dir.parent / f".{out_dir.name}.lock"
    handle = None
    try:
        for _ in range(3):
            try:
                handle = open(lock, "a+")
            except OSError as exc:
                raise EdgerecError(
                    f"{out_dir.parent}: cannot write there ({exc.strerror}); choose another output"
                ) from None
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                raise EdgerecError(
                    f"{out_dir}: another edgerec command{_holder(lock)} is writing it "
                    "now; wait for it to finish or choose another output"
                ) from None
            if lock.exists() and os.stat(lock).st_ino == os.fstat(handle.fileno()).st_ino:
                break
            handle.close()  # the holder before us removed the file after we opened it: open it again
        else:
            raise EdgerecError(f"{out_dir}: could not take the output lock {lock}")
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()} {platform.node()}\n")
        handle.flush()
        _HELD[key] = [handle, 1]
        yield
    finally:
        if _HELD.get(key, [None])[0] is handle and handle is not None:
            del _HELD[key]
            lock.unlink(missing_ok=True)
            handle.close()
        for folder in reversed(created):  # the folders made for an output that never came
            with contextlib.suppress(OSError):
                folder.rmdir()


def writes_output(function):
    """Decorator for a stage function with an `out_dir` parameter: the output's lock is held for
    the whole run (`output_lock`), so two identical commands never train into one work folder."""
    signature = inspect.signature(function)

    @functools.wraps(function)
    def claimed(*args, **kwargs):
        out_dir = signature.bind(*args, **kwargs).arguments["out_dir"]
        check_folder(Path(out_dir).parent, "the output")
        with output_lock(Path(out_dir)):
            return function(*args, **kwargs)

    return claimed


def check_folder(path: Path, what: str) -> Path:
    """`path` can be (or become) a folder for `what`: not a file, nor below one."""
    path = Path(path)
    for place in (path, *path.parents):
        if place.exists():
            if not place.is_dir():
                raise EdgerecError(f"{path}: {place} is a file, expected a folder for {what}")
            break
    return path


def check_writable(folder: Path, what: str) -> Path:
    """`folder` can take files for `what` now: tried with a probe file, since permission bits do
    not say what a read-only mount will (and root ignores them). A folder that does not exist
    yet is judged by the nearest one above it, and nothing is created; one line on failure,
    before the work."""
    folder = check_folder(Path(folder), what)
    place = next(p for p in (folder, *folder.absolute().parents) if p.exists())
    try:
        with tempfile.NamedTemporaryFile(dir=place, prefix=".edgerec-probe-"):
            pass
    except OSError as exc:
        raise EdgerecError(f"{place}: cannot write {what} there ({exc.strerror})") from None
    return folder


def check_file_output(path: Path, what: str) -> Path:
    """`path` can be written as a file for `what`: not a folder, and its folder can exist."""
    path = Path(path)
    if path.is_dir():
        raise EdgerecError(f"{path}: is a folder, expected a file name for {what}")
    check_folder(path.parent, what)
    return path


def check_output(out_dir: Path, stage: str, overwrite: bool) -> None:
    """Can a `stage` artifact be written to `out_dir`? Stages call it before any work, so a bad
    output fails in a second, not after training; `atomic_artifact` checks again at the end."""
    out_dir = Path(out_dir)
    check_folder(out_dir.parent, f"the {stage} artifact")
    if not out_dir.exists():
        return
    if not overwrite:
        raise EdgerecError(f"{out_dir}: already exists (pass --overwrite to replace it)")
    if not out_dir.is_dir() or not (out_dir / MANIFEST).is_file():
        raise EdgerecError(f"{out_dir}: exists and is not an edgerec artifact; refusing to replace it")
    try:
        old = json.loads((out_dir / MANIFEST).read_text()).get("stage")
    except (OSError, ValueError, AttributeError):
        old = None
    if old != stage and not (old in BUNDLE_STAGES and stage in BUNDLE_STAGES):
        raise EdgerecError(
            f"{out_dir}: holds a {old!r} artifact; refusing to replace it with a {stage!r} one (choose another output)"
        )


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
    left exactly as it was: a full disk or a read-only folder becomes one line naming the file,
    and a second command writing the same output at the same time is refused (`output_lock`).
    """
    out_dir = Path(out_dir)
    check_output(out_dir, stage, overwrite)
    with output_lock(out_dir):
        check_output(out_dir, stage, overwrite)  # again: another command may have finished meanwhile
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
        try:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700; an artifact is an ordinary folder
            manifest: dict[str, Any] = {
                "stage": stage,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "versions": library_versions(),
                "config": jsonable(config) if config is not None else {},
                "inputs": {
                    name: {"path": str(path), "hash": artifact_hash(path)} for name, path in (inputs or {}).items()
                },
            }
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
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if exc.errno not in _WRITE_ERRORS:
                raise
            where = exc.filename or out_dir
            raise EdgerecError(
                f"{out_dir}: writing the artifact failed ({exc.strerror}: {where}); nothing was changed"
            ) from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
