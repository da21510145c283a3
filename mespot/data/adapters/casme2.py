"""CAS(ME)²: `CAS(ME)^2code_final.xlsx` (or a renamed copy, or the `(Updated)` CSV) and `rawpic/`.

The workbook has no header rows. Sheet 1 gives subject number, expression name (`anger1_1` =
video name + index), onset, apex, offset, AUs, emotion, type; `naming rule1` maps subject
numbers to folders (1 → '15', 's15'); `naming rule2` maps video names to four-digit codes
(`anger1` → 0401; some copies store the code as the number 401). The CSV variant has no naming
sheets: the dataset's fixed naming rules below stand in for them.
Identifiers: subject `s15`, video `15_0401`; frames `rawpic/s15/15_0401girlcrashing/img001.jpg`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from mespot.data.adapters.common import (
    RAW_COLUMNS,
    get_sheet,
    read_sheets,
    text,
    unknown_folder,
)
from mespot.data.frames import list_frames
from mespot.errors import UserError

NAME = "CAS(ME)²"
FPS = 30.0
FRAMES_DIR = "rawpic"
FRAME_PATTERN = r"img_?(\d+)\.jpg"  # img001.jpg (rawpic), img_1.jpg (longVideoFaceCropped)
ANNOTATION_FILES = (
    r"CAS\(ME\)\^?2code_final\.xlsx?",
    r"code_final\.xlsx?",
    r"CAS\(ME\)\^?2code_final\(Updated\)\.csv",
)
SHEETS = ("CASFEcode_final", "naming rule1", "naming rule2")

# The dataset's naming rules, as its `naming rule1` and `naming rule2` sheets state them.
SUBJECT_FOLDERS = {
    n: f"s{f}"
    for n, f in enumerate(
        (15, 16, 19, 20, 21, 22, 23, 24, 25, 26, 27, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 40),
        start=1,
    )
}
VIDEO_CODES = {
    "disgust1": "0101",
    "disgust2": "0102",
    "anger1": "0401",
    "anger2": "0402",
    "happy1": "0502",
    "happy2": "0503",
    "happy3": "0505",
    "happy4": "0507",
    "happy5": "0508",
}
VIDEO_DESCRIPTIONS = {
    "0101": "disgustingteeth",
    "0102": "eatingworms",
    "0401": "girlcrashing",
    "0402": "beatingpregnantwoman",
    "0502": "funnyerrors",
    "0503": "unnyfarting",  # sic, as the dataset spells the folder
    "0505": "funnyinnovations",
    "0507": "climbingthewall",
    "0508": "funnydunkey",
}


def frame_name(number: int) -> str:
    return f"img{number:03d}.jpg"


def video_id(subject_folder: str, code: str) -> str:
    return f"{subject_folder.removeprefix('s')}_{code}"


def read_rows(path: Path) -> pd.DataFrame:
    """Sheet-1 rows (or the CSV's), with subjects and videos named through the naming rules."""
    if path.suffix.lower() == ".csv":
        rows, subjects, codes = _located(_read_csv(path), f"{path}"), SUBJECT_FOLDERS, VIDEO_CODES
    else:
        sheets = read_sheets(path)
        main = get_sheet(sheets, SHEETS[0], path)
        rows = _located(main, f"{path} sheet {SHEETS[0]}")
        subjects, codes = _subject_folders(sheets, path), _video_codes(sheets, path)
    return _raw_rows(rows, subjects, codes)


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, header=None, dtype=object, keep_default_na=False)
    except Exception as e:
        raise UserError(f"{path}: cannot read the CSV file ({e})") from None
    if len(table) and not text(table.iat[0, 2]).replace(".", "", 1).isdigit():
        table = table.iloc[1:]  # a header row some copies carry
    return table


def _located(table: pd.DataFrame, where: str) -> list[tuple[str, list]]:
    """Non-empty rows with their place in the file (row 1 is the first line of the sheet)."""
    if table.shape[1] < 8:
        raise UserError(f"{where}: expected at least 8 columns, found {table.shape[1]}")
    return [
        (f"{where} row {index + 1}", list(values))
        for index, *values in table.itertuples()
        if any(text(v) for v in values)
    ]


def _subject_folders(sheets: dict, path: Path) -> dict[int, str]:
    """`naming rule1`: folder number ('15'), subject folder ('s15'), subject number (1)."""
    table = get_sheet(sheets, SHEETS[1], path)
    folders = {}
    for i, row in enumerate(table.itertuples(index=False), start=1):
        number, folder = text(row[2]), text(row[1])
        if not number.isdigit() or not folder:
            raise UserError(f"{path} sheet {SHEETS[1]} row {i}: expected folder and subject number")
        folders[int(number)] = folder
    return folders


def _video_codes(sheets: dict, path: Path) -> dict[str, str]:
    """`naming rule2`: code (text '0101' or the number 101) → video name ('disgust1')."""
    table = get_sheet(sheets, SHEETS[2], path)
    codes = {}
    for i, row in enumerate(table.itertuples(index=False), start=1):
        code, name = text(row[0]), text(row[1]).lower()
        if not code.isdigit() or not name:
            raise UserError(f"{path} sheet {SHEETS[2]} row {i}: expected a video code and name")
        codes[name] = code.zfill(4)
    return codes


def _raw_rows(rows, subjects: dict[int, str], codes: dict[str, str]) -> pd.DataFrame:
    raw = []
    for where, values in rows:
        number, expression = text(values[0]), text(values[1]).lower()
        name = re.sub(r"_\d+$", "", expression)
        folder = subjects.get(int(number)) if number.isdigit() else None
        problem = ""
        if folder is None:
            problem = f"unknown subject number {number!r}"
        elif name not in codes:
            problem = f"unknown video name {expression!r} (not in naming rule2)"
        video = video_id(folder, codes[name]) if not problem else ""
        raw.append((folder, video, values[2], values[3], values[4], values[7], where, problem))
    return pd.DataFrame(raw, columns=RAW_COLUMNS)


def find_videos(frames_root: Path) -> dict:
    """rawpic/s<N>/<N>_<code><description>/img<frame>.jpg; a folder is matched to its video by
    the four digits after the underscore."""
    found = {}
    for subject_dir in sorted(p for p in frames_root.iterdir() if p.is_dir()):
        if not re.fullmatch(r"s\d+", subject_dir.name):
            unknown_folder(subject_dir, "expected a subject folder such as s15")
            continue
        number = subject_dir.name.removeprefix("s")
        for folder in sorted(p for p in subject_dir.iterdir() if p.is_dir()):
            m = re.match(r"(\d+)_(\d{4})", folder.name)
            if not m or m.group(1) != number:
                unknown_folder(folder, f"expected {number}_<code><description>")
                continue
            video = video_id(subject_dir.name, m.group(2))
            found[(subject_dir.name, video)] = (folder, list_frames(folder, FRAME_PATTERN))
    return found
