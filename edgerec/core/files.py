"""Every weight, data and bundle file edgerec reads goes through here: one checked loader per kind
(JSON, NPZ, safetensors, ONNX, TFLite) that turns the library's parse error into one line naming
the file, and the integrity check that compares files with the hashes recorded when they were
written.

Integrity: an artifact's `manifest.json` lists the sha256 of every file in it, and a bundle's
`metadata.json` (what ships inside an app, where no manifest travels) records `integrity`:
{file: {"sha256", "bytes"}} for every other file of the bundle. A reader checks the files it
loads against those records and refuses a changed or truncated one, so a flipped byte is never
measured, quantized or shipped as if it were the model that was validated. `allow_modified`
is the escape hatch for a file edited on purpose; the caller records what it let through.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from edgerec.core.console import third_party
from edgerec.core.errors import EdgerecError


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _exists(path: Path, what: str) -> Path:
    path = Path(path)
    if path.is_dir():
        raise EdgerecError(f"{path}: is a directory, expected {what}")
    if not path.is_file():
        raise EdgerecError(f"{path}: no such file ({what})")
    return path


def read_json(path: Path, what: str = "a JSON file") -> Any:
    path = _exists(path, what)
    noun = what.split(" ", 1)[1] if what.split(" ", 1)[0] in ("a", "an", "the") else what
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise EdgerecError(f"{path}: unreadable {noun}, damaged JSON ({exc.msg} at line {exc.lineno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgerecError(f"{path}: unreadable ({_first_line(exc)})") from None


def load_npz(path: Path, what: str = "an .npz file") -> dict[str, np.ndarray]:
    """All arrays of an .npz, never unpickling (object arrays are refused)."""
    path = _exists(path, what)
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except Exception as exc:  # zipfile, NumPy's format parser and pickle refusals raise many types
        raise EdgerecError(f"{path}: not a readable .npz ({_first_line(exc)})") from None


def load_safetensors(path: Path) -> dict:
    """A safetensors file as torch tensors (never pickle)."""
    from safetensors.torch import load_file

    path = _exists(path, "a .safetensors weight file")
    try:
        return load_file(path)
    except Exception as exc:  # SafetensorError, OSError, header JSON errors
        raise EdgerecError(f"{path}: damaged safetensors file ({_first_line(exc)})") from None


def check_safetensors(path: Path) -> None:
    """Parse a safetensors header and check every tensor lies inside the file (cheap; no load)."""
    path = _exists(path, "a .safetensors weight file")
    size = path.stat().st_size
    try:
        with open(path, "rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            if not 0 < length <= size - 8:
                raise ValueError("header length outside the file")
            header = json.loads(handle.read(length))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if 8 + length + end != size:
            raise ValueError(f"tensors need {8 + length + end} bytes, the file has {size}")
    except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as exc:
        raise EdgerecError(f"{path}: damaged safetensors file ({_first_line(exc)})") from None


def load_onnx(path: Path, load_external_data: bool = True):
    import onnx

    path = _exists(path, "an .onnx model")
    try:
        return onnx.load(str(path), load_external_data=load_external_data)
    except Exception as exc:  # protobuf DecodeError and friends
        raise EdgerecError(f"{path}: not a readable ONNX model ({_first_line(exc)})") from None


def litert_interpreter(path: Path, threads: int = 1):
    from ai_edge_litert.interpreter import Interpreter

    path = _exists(path, "a .tflite model")
    try:
        with third_party("LiteRT"):  # it announces its XNNPACK delegate on stderr
            interpreter = Interpreter(model_path=str(path), num_threads=threads)
            interpreter.allocate_tensors()
        return interpreter
    except Exception as exc:  # ValueError from the flatbuffer verifier, RuntimeError from ops
        raise EdgerecError(f"{path}: LiteRT cannot load it ({_first_line(exc)})") from None


# ------------------------------------------------------------------------------ integrity


def record(path: Path) -> dict:
    """What metadata.json records of a bundle file."""
    return {"sha256": sha256_file(path), "bytes": Path(path).stat().st_size}


def bundle_integrity(folder: Path, skip: tuple[str, ...] = ("metadata.json", "manifest.json")) -> dict:
    """{relative name: record} for every file in a bundle being written, except `skip`."""
    folder = Path(folder)
    return {
        str(p.relative_to(folder)): record(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in skip and not p.name.startswith(".")
    }


def verify(
    folder: Path,
    expected: dict,
    *,
    names=None,
    allow_modified: bool = False,
    fix: str = "re-run the stage that made it",
) -> list[str]:
    """Check files of `folder` against `expected` {name: sha256 or {"sha256", "bytes"}} (only
    `names`, when given). Returns the names that differ when `allow_modified`; raises otherwise,
    with one line naming the first file and how it differs."""
    folder = Path(folder)
    changed = []
    for name in expected if names is None else names:
        want = expected.get(name)
        if want is None:
            continue
        want = {"sha256": want} if isinstance(want, str) else want
        path = folder / name
        if not path.is_file():
            problem = "is missing"
        elif "bytes" in want and path.stat().st_size != want["bytes"]:
            problem = (
                f"has {path.stat().st_size} bytes, {want['bytes']} were written "
                f"({'truncated' if path.stat().st_size < want['bytes'] else 'grown'})"
            )
        elif sha256_file(path) != want["sha256"]:
            problem = "has changed since it was written (sha256 differs)"
        else:
            continue
        if not allow_modified:
            raise EdgerecError(f"{path}: {problem}; {fix}")
        changed.append(name)
    return changed


BUNDLE_FIX = "export or quantize it again, or pass --allow-modified if you changed it on purpose"


def read_bundle(
    bundle: Path, *, names=None, allow_modified: bool = False, fix: str = BUNDLE_FIX
) -> tuple[dict, list[str]]:
    """A bundle's metadata.json, with its files (only `names`, when given) checked against the
    hashes it records, and metadata.json itself against the manifest where one is beside it.
    Returns (metadata, the names let through as modified)."""
    bundle = Path(bundle)
    if bundle.is_file():
        raise EdgerecError(f"{bundle}: is a file, expected a bundle directory (e.g. dist/arm64)")
    if not bundle.is_dir():
        raise EdgerecError(f"{bundle}: no such bundle directory (run edgerec export)")
    if not (bundle / "metadata.json").is_file():
        raise EdgerecError(f"{bundle}: not a bundle (no metadata.json; run edgerec export)")
    changed = []
    if (bundle / "manifest.json").is_file():
        manifest = read_json(bundle / "manifest.json", "an artifact manifest")
        files = manifest.get("files", {}) if isinstance(manifest, dict) else {}
        changed += verify(bundle, files, names=["metadata.json"], allow_modified=allow_modified, fix=fix)
    meta = read_json(bundle / "metadata.json", "a bundle's metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("integrity"), dict):
        raise EdgerecError(
            f"{bundle / 'metadata.json'}: records no file hashes (not written by this edgerec); export the bundle again"
        )
    if meta.get("reference_only"):
        raise EdgerecError(
            f"{bundle}: the text teacher's ONNX export, kept for comparison, not a device "
            "bundle: distil it (edgerec distill), export the student, and measure the teacher "
            "with validate --teacher"
        )
    changed += verify(bundle, meta["integrity"], names=names, allow_modified=allow_modified, fix=fix)
    return meta, changed
