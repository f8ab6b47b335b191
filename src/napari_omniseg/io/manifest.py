"""Reading the CSV manifests of fine-tuning and evaluation as people write them.

Spreadsheets save CSV with a byte-order mark (Excel), with semicolons (Excel in many
languages), with blank lines at the end and with spaces around values. All of that is read;
what cannot be read is told in one sentence naming the line.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import OmnisegInputError


def read_rows(path: str | os.PathLike, required: set[str]) -> list[tuple[int, dict[str, str]]]:
    """The rows of a manifest as ``(line number, {column: value})``, blank lines skipped.

    Parameters
    ----------
    path : path-like
        The CSV file; comma-, semicolon- or tab-separated, with or without a byte-order mark.
    required : set of str
        Columns every manifest of this kind has.

    Raises
    ------
    OmnisegInputError
        A missing file, missing columns, no rows, or a row with fewer values than columns.
    """
    path = Path(path)
    if not path.is_file():
        raise OmnisegInputError(f"{path} does not exist" if not path.exists() else
                                f"{path} is a folder, not a CSV manifest")
    header, rows = _table(path)
    missing = required - set(header)
    if missing:
        raise OmnisegInputError(
            f"{path.name} needs the columns {', '.join(sorted(required))}; it has "
            f"{', '.join(header) or 'none'} (missing {', '.join(sorted(missing))})")
    out = []
    for line, values in rows:
        if len(values) < len(header):
            raise OmnisegInputError(f"{path.name} line {line} has {len(values)} values for "
                                    f"{len(header)} columns")
        out.append((line, dict(zip(header, values))))
    if not out:
        raise OmnisegInputError(f"{path.name} lists no rows")
    return out


def read_grouped(path: str | os.PathLike, required: set[str], split_column: str | None,
                 make: Callable[[dict[str, str], str], Any]) -> dict[str, list]:
    """``make(row, where)`` of every row (``where`` names the line for messages), grouped by
    the row's ``split_column`` (all under ``"train"`` when the column is absent or None)."""
    path = Path(path)
    out: dict[str, list] = {}
    for line, row in read_rows(path, required):
        item = make(row, f"{path.name} line {line}")
        split = row.get(split_column, "train") if split_column else "train"
        out.setdefault(split or "train", []).append(item)
    return out


def columns(path: str | os.PathLike) -> list[str]:
    """The column names of a manifest (empty when it cannot be read)."""
    try:
        return _table(Path(path))[0]
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def _table(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    text = path.read_text(encoding="utf-8-sig")
    first = text.splitlines()[0] if text.strip() else ""
    delimiter = max(",;\t", key=first.count)
    rows = []
    for line, values in enumerate(csv.reader(text.splitlines(), delimiter=delimiter), start=1):
        values = [v.strip() for v in values]
        if any(values):
            rows.append((line, values))
    if not rows:
        return [], []
    return rows[0][1], rows[1:]


def number(value: str, what: str, where: str) -> float:
    """A positive number from a manifest cell; ``40x`` reads as 40 (a magnification)."""
    text = value.strip().lower().removesuffix("x").strip()
    try:
        v = float(text)
    except ValueError:
        raise OmnisegInputError(f"{where}: {what} {value!r} is not a number") from None
    if not v > 0 or v != v or v == float("inf"):
        raise OmnisegInputError(f"{where}: {what} must be a positive number, not {value!r}")
    return v
