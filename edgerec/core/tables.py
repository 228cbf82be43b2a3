"""Reading the user's interactions and items files (CSV, TSV, Parquet, JSONL): every failure is
one line naming the file and what is wrong with it."""

from __future__ import annotations

import difflib
from pathlib import Path

import numpy as np

from edgerec.core import datasets
from edgerec.core.errors import EdgerecError

SUPPORTED = {
    ".csv": "csv",
    ".tsv": "csv",
    ".inter": "csv",
    ".item": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}


def table_kind(path: Path) -> str:
    """The format of an interactions or items file, checked without reading it (exists, has a
    known suffix, not empty): what `build` checks before its first stage."""
    path = Path(path)
    if path.is_dir():
        raise EdgerecError(f"{path}: is a folder, expected an interactions or items file")
    if not path.is_file():
        close = difflib.get_close_matches(str(path), datasets.BUILTIN, n=1, cutoff=0.6)
        hint = f" (the built-in dataset is --dataset {close[0]})" if close else ""
        raise EdgerecError(f"{path}: no such file{hint}")
    kind = SUPPORTED.get(path.suffix.lower())
    if kind is None:
        raise EdgerecError(
            f"{path}: not a CSV, Parquet or JSONL file (suffix '{path.suffix}'; "
            f"expected one of {', '.join(sorted(SUPPORTED))})"
        )
    if path.stat().st_size == 0:
        raise EdgerecError(f"{path}: the file is empty")
    return kind


def read_table(path: Path, separator: str | None = None):
    """Read CSV / TSV / Parquet / JSONL into a DataFrame; every failure is one clear line."""
    import pandas as pd

    path = Path(path)
    kind = table_kind(path)
    try:
        if kind == "parquet":
            frame = pd.read_parquet(path)
        elif kind == "jsonl":
            # utf-8-sig: a byte-order mark (Windows editors write one) is read past, not parsed
            frame = pd.read_json(path, lines=True, dtype=False, encoding="utf-8-sig")
        else:
            sep = separator or ("\t" if path.suffix.lower() in {".tsv", ".inter", ".item"} else ",")
            frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except Exception as exc:  # pandas / pyarrow raise many types for malformed files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if kind == "jsonl":
            first = _first_bad_json_line(path) or first
        raise EdgerecError(f"{path}: cannot parse as {kind} ({first})") from None
    if len(frame) == 0:
        raise EdgerecError(f"{path}: the file has no rows")
    return frame


def _first_bad_json_line(path: Path) -> str | None:
    """Where a JSONL file stops being one JSON object per line (pandas says only "position 0")."""
    import json

    try:
        with open(path, encoding="utf-8-sig") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    return f"line {number} is not valid JSON: {exc.msg} at column {exc.colno}"
                if not isinstance(row, dict):
                    return f"line {number} is a JSON {type(row).__name__}, expected an object"
    except UnicodeDecodeError as exc:
        return f"not UTF-8 text (byte {exc.start}); save it as UTF-8"
    except OSError:
        return None
    return None


def require_columns(frame, path: Path, wanted: dict[str, str]) -> None:
    """One line naming every wanted column (and the flag that names it) the table lacks."""
    missing = [f"'{col}' ({flag})" for flag, col in wanted.items() if col not in frame.columns]
    if missing:
        found = ", ".join(map(str, frame.columns[:12]))
        raise EdgerecError(f"{path}: missing column {', '.join(missing)}; found: {found}")


def numeric_times(series, path: Path):
    """Timestamps as finite float seconds (Parquet datetimes converted); one line for the first bad row."""
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(series):
        return series.astype("int64").to_numpy() // 10**9
    values = pd.to_numeric(series, errors="coerce")
    bad = values.isna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise EdgerecError(
            f"{path}: non-numeric timestamp {series.iloc[row]!r} at data row {row + 1} "
            "(expected Unix seconds or a Parquet timestamp column)"
        )
    values = values.to_numpy(dtype=np.float64)
    infinite = ~np.isfinite(values)  # "inf", "1e309": they parse, but order nothing
    if infinite.any():
        row = int(np.flatnonzero(infinite)[0])
        raise EdgerecError(
            f"{path}: timestamp {series.iloc[row]!r} at data row {row + 1} is not a finite "
            "number (expected Unix seconds)"
        )
    return values
