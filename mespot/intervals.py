"""Interval tables: expression type names and validated CSV reading.

Ground truth (`intervals.csv`) and predictions (`predictions.csv`) share one shape:
`subject,video,onset,offset,type` with 1-based inclusive frame numbers; predictions add `score`
and ground truth may carry `apex`. Every problem is reported as a `UserError` naming the file,
the line and what is wrong.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from mespot.errors import UserError

TYPES = ("mae", "me")
TYPE_NAMES = {"mae": "MaE", "me": "ME"}


def format_thresholds(thresholds: dict[str, float] | None) -> str:
    """{'mae': 0.31, 'me': 0.12} → 'MaE 0.310 / ME 0.120' (score thresholds per type)."""
    if not thresholds:
        return "–"
    return " / ".join(f"{TYPE_NAMES[t]} {thresholds[t]:.3f}" for t in TYPES if t in thresholds)


# Spellings found in the official files (CAS(ME)², SAMM-LV, CAS(ME)³) and in other methods' outputs.
_TYPE_ALIASES = {
    "mae": "mae",
    "macro": "mae",
    "macro-expression": "mae",
    "macro expression": "mae",
    "me": "me",
    "micro": "me",
    "micro-expression": "me",
    "micro expression": "me",
    "micro - 1/2": "me",
}

KEY = ["subject", "video"]
REQUIRED_COLUMNS = ("subject", "video", "onset", "offset", "type")


def normalise_type(value: object) -> str | None:
    """'Macro', 'micro-expression', 'Micro - 1/2', … → 'mae' / 'me'; None when unknown."""
    text = " ".join(str(value).strip().lower().split())
    return _TYPE_ALIASES.get(text)


def read_intervals(
    path: str | os.PathLike, *, scored: bool = False, keyed: bool = True
) -> pd.DataFrame:
    """Read and validate an interval CSV.

    Returns columns subject, video (text, as written: '006' stays '006'), onset, offset (int),
    type ('mae'|'me'), and with `scored=True` also score (float; 1.0 when the column is absent,
    so outputs of methods without confidences can still be scored). `keyed=False` reads the
    intervals of one recording: subject and video are then not required.
    """
    path = Path(path)
    table, lines = _read_table(path, REQUIRED_COLUMNS if keyed else REQUIRED_COLUMNS[2:])
    out = pd.DataFrame({c: table[c] for c in KEY if c in table}, index=table.index)
    for column in ("onset", "offset"):
        out[column] = _frame_numbers(path, lines, table[column], column)
    _fail_on(
        path,
        lines,
        out["onset"] > out["offset"],
        lambda i: f"onset {out['onset'].iat[i]} is after offset {out['offset'].iat[i]}",
    )
    types = table["type"].map(normalise_type)
    _fail_on(
        path,
        lines,
        types.isna(),
        lambda i: (
            f"unknown type {table['type'].iat[i]!r} (expected mae or me; accepted aliases: "
            "macro, micro, macro-expression, micro-expression, Macro, Micro - 1/2)"
        ),
    )
    out["type"] = types
    if scored:
        out["score"] = _scores(path, lines, table["score"]) if "score" in table else 1.0
    return out


def read_video_keys(path: str | os.PathLike) -> set[tuple[str, str]]:
    """The (subject, video) pairs listed in a videos.csv."""
    path = Path(path)
    table, lines = _read_table(path, KEY)
    return set(zip(table["subject"], table["video"], strict=True))


def _read_table(
    path: Path, required: tuple[str, ...] | list[str]
) -> tuple[pd.DataFrame, np.ndarray]:
    """All cells as stripped text, blank lines dropped, with each row's line number in the file.

    Column names are matched in any case, so two that differ only in case are as ambiguous as
    two spelled alike: an error, like a row with more or fewer fields than the header names.
    Subject and video, when required, may not be empty.
    """
    header, rows, lines = _csv_rows(path, required)
    names = [name.lower() for name in header]
    twice = sorted(n for n, k in Counter(names).items() if n and k > 1)
    if twice:
        spellings = ", ".join(h for h in header if h.lower() == twice[0])
        raise UserError(f"{path} line 1: column {twice[0]!r} appears more than once ({spellings})")
    missing = [c for c in required if c not in names]
    if missing:
        raise UserError(
            f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(names) or 'none'}"
        )
    for cells, line in zip(rows, lines, strict=True):
        if len(cells) != len(names):
            raise UserError(
                f"{path} line {line}: {len(cells)} fields where the header names {len(names)}"
            )
    table = pd.DataFrame(rows, columns=names, dtype=str)
    for column in KEY:
        if column in required:
            _fail_on(path, lines, table[column] == "", f"empty {column}")
    return table, lines


def _csv_rows(path: Path, required) -> tuple[list[str], list[list[str]], np.ndarray]:
    """The header's names and the non-blank rows below it, every cell stripped, and the line
    number of each row."""
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            rows = [([cell.strip() for cell in row], reader.line_num) for row in reader]
    except (csv.Error, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a readable CSV file ({e})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read it ({e.strerror})") from None
    rows = [(cells, line) for cells, line in rows if any(cells)]
    if not rows:
        raise UserError(f"{path}: empty file, expected a header row {','.join(required)}")
    (header, _), body = rows[0], rows[1:]
    return header, [cells for cells, _ in body], np.array([line for _, line in body], dtype=int)


def _frame_numbers(path: Path, lines: np.ndarray, text: pd.Series, column: str) -> pd.Series:
    _fail_on(path, lines, text == "", f"empty {column}")
    values = pd.to_numeric(text, errors="coerce")
    _fail_on(
        path,
        lines,
        ~np.isfinite(values),
        lambda i: f"{column} {text.iat[i]!r} is not a frame number",
    )
    _fail_on(
        path,
        lines,
        values != values.round(),
        lambda i: f"{column} {text.iat[i]!r} is not a whole frame number",
    )
    _fail_on(path, lines, values < 0, lambda i: f"{column} {text.iat[i]} is negative")
    return values.astype(np.int64)


def _scores(path: Path, lines: np.ndarray, text: pd.Series) -> pd.Series:
    values = pd.to_numeric(text, errors="coerce")
    _fail_on(path, lines, ~np.isfinite(values), lambda i: f"score {text.iat[i]!r} is not a number")
    return values.astype(float)


def _fail_on(path: Path, lines: np.ndarray, bad: pd.Series, problem) -> None:
    """Raise for the first bad row, saying how many more rows share the problem."""
    rows = np.flatnonzero(bad.to_numpy())
    if len(rows) == 0:
        return
    first = rows[0]
    message = problem(first) if callable(problem) else problem
    more = f" (and {len(rows) - 1} more row(s))" if len(rows) > 1 else ""
    raise UserError(f"{path} line {lines[first]}: {message}{more}")
