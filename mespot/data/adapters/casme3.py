"""CAS(ME)³ part A: `CAS(ME)3_part_A_v2.xls` and `part_A/data/part_A/`.

Legacy .xls, every cell text. Sheet `AU+Emotion` has a header row: Subject, Filename, Onset,
Apex, Offset, AU, Expression type, Objective class. Filename is a letter a–m (five rows write a
capital J). "ME ≤ 15 frames" does not hold here: the annotated type is used. Identifiers:
subject `spNO.1`, video `spNO.1_a`; frames `part_A/data/part_A/spNO.1/a/color/0.jpg`, numbered
from 0, with gaps.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from mespot.data.adapters.common import RAW_COLUMNS, rows_under_header, text, unknown_folder
from mespot.data.frames import list_frames

NAME = "CAS(ME)³"
FPS = 30.0
FRAMES_DIR = "part_A/data/part_A"
ANNOTATION_FILES = (r"CAS\(ME\)3_part_A_v\d+\.xlsx?", r"CAS\(ME\)3_part_A\.xlsx?")
SHEET = "AU+Emotion"
BLINK_SHEET = "eye blink"
COLUMNS = ("Subject", "Filename", "Onset", "Apex", "Offset", "Expression type")


def frame_name(number: int) -> str:
    return f"{number}.jpg"


def video_id(subject: str, letter: str) -> str:
    return f"{subject}_{letter.lower()}"


def read_rows(path: Path) -> pd.DataFrame:
    raw = []
    for where, cell in rows_under_header(path, SHEET, COLUMNS):
        subject, letter = text(cell["Subject"]), text(cell["Filename"])
        problem = ""
        if not re.fullmatch(r"spNO\.\d+", subject):
            problem = f"Subject {subject!r} is not spNO.<number>"
        elif not re.fullmatch(r"[a-zA-Z]", letter):
            problem = f"Filename {letter!r} is not a video letter"
        frames = (cell["Onset"], cell["Apex"], cell["Offset"])
        video = video_id(subject, letter)
        raw.append((subject, video, *frames, cell["Expression type"], where, problem))
    return pd.DataFrame(raw, columns=RAW_COLUMNS)


def find_videos(frames_root: Path) -> dict:
    """part_A/data/part_A/<subject>/<letter>/color/<n>.jpg."""
    found = {}
    for subject_dir in sorted(p for p in frames_root.iterdir() if p.is_dir()):
        if not re.fullmatch(r"spNO\.\d+", subject_dir.name):
            unknown_folder(subject_dir, "expected spNO.<number>")
            continue
        for video_dir in sorted(p for p in subject_dir.iterdir() if p.is_dir()):
            color = video_dir / "color"
            if not re.fullmatch(r"[a-zA-Z]", video_dir.name) or not color.is_dir():
                unknown_folder(video_dir, "expected a video letter holding color/")
                continue
            key = (subject_dir.name, video_id(subject_dir.name, video_dir.name))
            found[key] = (color, list_frames(color, r"(\d+)\.jpg"))
    return found
