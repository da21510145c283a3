"""Interval tables (DESIGN.md §3): expression type names and validated CSV reading.

Ground truth (`intervals.csv`) and predictions (`predictions.csv`) share one shape:
`subject,video,onset,offset,type` with 1-based inclusive frame numbers; predictions add `score`
and ground truth may carry `apex`. Every problem is reported as a `UserError` naming the file,
the line and what is wrong.
"""

from __future__ import annotations

import os
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

    Subject and video, when required, may not be empty.
    """
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        table = pd.read_csv(
            path, dtype=str, keep_default_na=False, skipinitialspace=True, skip_blank_lines=False
        )
    except pd.errors.EmptyDataError:
        raise UserError(f"{path}: empty file, expected a header row {','.join(required)}") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a readable CSV file ({str(e).strip()})") from None
    table.columns = [str(c).strip().lower() for c in table.columns]
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise UserError(
            f"{path}: missing column(s) {', '.join(missing)}; "
            f"found {', '.join(table.columns) or 'none'}"
        )
    table = table.apply(lambda col: col.str.strip())
    lines = np.arange(len(table)) + 2  # the header is line 1
    blank = (table == "").all(axis=1).to_numpy()
    table, lines = table[~blank].reset_index(drop=True), lines[~blank]
    for column in KEY:
        if column in required:
            _fail_on(path, lines, table[column] == "", f"empty {column}")
    return table, lines


def _frame_numbers(path: Path, lines: np.ndarray, text: pd.Series, column: str) -> pd.Series:
    _fail_on(path, lines, text == "", f"empty {column}")
    values = pd.to_numeric(text, errors="coerce")
    _fail_on(
        path, lines, values.isna(), lambda i: f"{column} {text.iat[i]!r} is not a frame number"
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
    _fail_on(path, lines, values.isna(), lambda i: f"score {text.iat[i]!r} is not a number")
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
