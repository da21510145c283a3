"""What the dataset adapters share: finding the workbook, reading sheets, cleaning rows by the
configured policies, and building the video table.

An adapter turns its dataset's rows into a raw table (subject, video, onset, apex, offset, type as
found in the file, plus `where` for messages and `problem` when the row cannot be mapped to a
video); `clean_rows` does the rest the same way for every dataset.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import xlrd

from mespot.data.frames import FrameList
from mespot.data.tables import INTERVAL_COLUMNS, VIDEO_COLUMNS
from mespot.errors import UserError
from mespot.intervals import normalise_type

log = logging.getLogger(__name__)

OFFSET_ZERO = ("apex", "drop", "apex+20", "2*apex-onset")
FRACTIONAL = ("round_half_up", "floor", "ceil")
MISSING_APEX = ("keep", "midpoint")
MALFORMED = ("skip", "error")


@dataclass(frozen=True)
class Policies:
    """How rows that the official files leave ambiguous become intervals: explicit, counted and
    configurable, never silent."""

    offset_zero: str = "apex"  # CAS(ME)² rows whose offset was not annotated (written as 0)
    fractional: str = "round_half_up"  # SAMM-LV frame numbers such as 566.4
    missing_apex: str = "keep"  # apex -1 (not annotated): keep -1, or use the interval's middle
    malformed: str = "skip"  # unusable rows: skip with a warning naming the row, or stop

    def __post_init__(self):
        for name, choices in (
            ("offset_zero", OFFSET_ZERO),
            ("fractional", FRACTIONAL),
            ("missing_apex", MISSING_APEX),
            ("malformed", MALFORMED),
        ):
            value = getattr(self, name)
            if value not in choices:
                raise UserError(
                    f"data.policies.{name}={value!r} is not known; use one of {', '.join(choices)}"
                )


# --- files and sheets ----------------------------------------------------------------------------


def find_annotation_file(
    root: Path, patterns: Iterable[str], dataset: str, explicit: str | os.PathLike | None = None
) -> Path:
    """The annotation file: `explicit` if given, else the first name pattern (regex, any case)
    matched in `root` or one folder below it. Patterns are in order of preference."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise UserError(f"data.annotations={explicit}: file not found")
        return path
    if not root.is_dir():
        raise UserError(f"data.root={root}: folder not found")
    candidates = [p for p in root.iterdir() if p.is_file()]
    candidates += [p for d in root.iterdir() if d.is_dir() for p in d.iterdir() if p.is_file()]
    patterns = list(patterns)
    for pattern in patterns:
        regex = re.compile(pattern, re.IGNORECASE)
        matches = sorted((p for p in candidates if regex.fullmatch(p.name)), reverse=True)
        if matches:
            return matches[0]  # the highest version when several releases lie side by side
    names = ", ".join(p.replace("\\", "") for p in patterns)
    raise UserError(
        f"no {dataset} annotation file in {root} or its sub-folders (looked for {names}); "
        "give its path with data.annotations=PATH"
    )


def read_sheets(path: Path) -> dict[str, pd.DataFrame]:
    """Every sheet of a workbook (.xlsx or legacy .xls), cells as stored, no header row."""
    try:
        if path.suffix.lower() == ".xls":
            return _read_xls(path)
        return pd.read_excel(path, sheet_name=None, header=None, dtype=object)
    except Exception as e:  # openpyxl/xlrd raise many types for a corrupt or foreign file
        raise UserError(f"{path}: cannot read the workbook ({type(e).__name__}: {e})") from None


def _read_xls(path: Path) -> dict[str, pd.DataFrame]:
    """Legacy .xls through xlrd itself (pandas is retiring its xlrd engine)."""
    with xlrd.open_workbook(path, on_demand=True) as book:
        return {
            sheet.name: pd.DataFrame(
                [sheet.row_values(r) for r in range(sheet.nrows)], dtype=object
            ).replace("", None)
            for sheet in book.sheets()
        }


def get_sheet(sheets: dict[str, pd.DataFrame], name: str, path: Path) -> pd.DataFrame:
    for sheet_name, table in sheets.items():
        if sheet_name.strip().lower() == name.lower():
            return table
    found = ", ".join(repr(s) for s in sheets)
    raise UserError(f"{path}: no sheet {name!r} (sheets: {found})")


def find_header(
    table: pd.DataFrame, required: Iterable[str], where: str, search_rows: int = 30
) -> tuple[int, dict[str, int]]:
    """The row holding the column names (SAMM-LV puts notes above it) and name → column index."""
    required = [r.lower() for r in required]
    for i in range(min(search_rows, len(table))):
        names = {str(v).strip().lower(): j for j, v in enumerate(table.iloc[i]) if not _blank(v)}
        if all(r in names for r in required):
            return i, names
    raise UserError(f"{where}: no header row with columns {', '.join(required)}")


def text(value: object) -> str:
    """A cell as text: numbers that are whole lose their '.0' (subject 6.0 → '6')."""
    if _blank(value):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _blank(value: object) -> bool:
    return (
        value is None
        or (isinstance(value, float) and math.isnan(value))
        or str(value).strip() == ""
    )


def rows_under_header(
    path: Path, sheet: str, columns: tuple[str, ...]
) -> Iterator[tuple[str, dict[str, object]]]:
    """(location, {column: cell}) for each non-empty row below the sheet's header row."""
    table = get_sheet(read_sheets(path), sheet, path)
    where = f"{path} sheet {sheet}"
    header, names = find_header(table, columns, where)
    for index, *values in table.iloc[header + 1 :].itertuples():
        if any(text(v) for v in values):
            yield f"{where} row {index + 1}", {c: values[names[c.lower()]] for c in columns}


# --- rows ----------------------------------------------------------------------------------------


RAW_COLUMNS = ["subject", "video", "onset", "apex", "offset", "type", "where", "problem"]


class _Malformed(Exception):
    pass


def clean_rows(raw: pd.DataFrame, policies: Policies, applied: Counter) -> pd.DataFrame:
    """Raw rows → the interval table, applying the policies and counting each application."""
    rows = []
    for row in raw.itertuples(index=False):
        try:
            cleaned = _clean_row(row, policies, applied)
        except _Malformed as e:
            message = f"{row.where}: {e}"
            if policies.malformed == "error":
                raise UserError(message) from None
            log.warning("%s; row skipped", message)
            applied["malformed rows skipped (malformed=skip)"] += 1
            continue
        if cleaned is not None:
            rows.append(cleaned)
    table = pd.DataFrame(rows, columns=INTERVAL_COLUMNS)
    return table.sort_values(["subject", "video", "onset", "offset"], kind="stable").reset_index(
        drop=True
    )


def _clean_row(row, policies: Policies, applied: Counter) -> tuple | None:
    if row.problem:
        raise _Malformed(row.problem)
    type_ = normalise_type(row.type)
    if type_ is None:
        raise _Malformed(f"unknown expression type {text(row.type)!r}")
    onset, offset = (_frame(row, name, policies, applied) for name in ("onset", "offset"))
    apex = _frame(row, "apex", policies, applied)
    if apex == -1:
        if policies.missing_apex == "midpoint":
            apex = _round_half_up((onset + offset) / 2)
        applied[f"apex -1, not annotated (missing_apex={policies.missing_apex})"] += 1
    if offset == 0:
        applied[f"offset 0, not annotated (offset_zero={policies.offset_zero})"] += 1
        if policies.offset_zero == "drop":
            return None
        offset = {"apex": apex, "apex+20": apex + 20, "2*apex-onset": 2 * apex - onset}[
            policies.offset_zero
        ]
    if onset < 0:
        raise _Malformed(f"onset {onset} is negative")
    if onset > offset:
        raise _Malformed(f"onset {onset} is after offset {offset}")
    return (row.subject, row.video, onset, apex, offset, type_)


def _frame(row, name: str, policies: Policies, applied: Counter) -> int:
    value = getattr(row, name)
    try:
        number = round(float(text(value)), 6)  # drops float noise: 566.4000000000001 → 566.4
    except ValueError:
        raise _Malformed(f"{name} {text(value)!r} is not a frame number") from None
    if math.isnan(number):
        raise _Malformed(f"{name} is empty")
    if number.is_integer():
        return int(number)
    applied[f"fractional frame numbers ({policies.fractional})"] += 1
    if policies.fractional == "floor":
        return math.floor(number)
    if policies.fractional == "ceil":
        return math.ceil(number)
    return _round_half_up(number)


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


# --- videos --------------------------------------------------------------------------------------


def video_table(
    intervals: pd.DataFrame,
    found: dict[tuple[str, str], tuple[Path, FrameList]],
    root: Path,
    fps: float,
    notes: list[str],
) -> pd.DataFrame:
    """Every video that is annotated or has a frame folder, with its frame count and folder."""
    keys = set(found) | set(zip(intervals["subject"], intervals["video"], strict=True))
    rows = []
    for subject, video in sorted(keys):
        folder, frames = found.get((subject, video), (None, None))
        rows.append(
            (
                subject,
                video,
                frames.span if frames else None,
                fps,
                folder.relative_to(root).as_posix() if folder else "",
            )
        )
    videos = pd.DataFrame(rows, columns=VIDEO_COLUMNS).astype({"n_frames": "Int64"})
    gaps = {key: fl.gaps for key, (_, fl) in found.items() if fl.gaps}
    if gaps:
        notes.append(
            f"{sum(gaps.values())} frame number(s) missing inside {len(gaps)} video(s); "
            "preprocessing fills each with the previous frame"
        )
    empty = [f"{s}/{v}" for (s, v), (_, fl) in found.items() if not fl.numbers]
    if empty:
        notes.append(f"frame folders without frames: {', '.join(empty)}")
    return videos


def warn_frames_absent(frames_root: Path, dataset: str) -> None:
    log.warning(
        "no %s frames under %s: reading the annotations alone (n_frames left empty); "
        "set data.frames_dir if they lie elsewhere",
        dataset,
        frames_root,
    )


def unknown_folder(folder: Path, why: str) -> None:
    log.warning("unknown video folder %s (%s); ignored", folder, why)
