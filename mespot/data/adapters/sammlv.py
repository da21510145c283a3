"""SAMM Long Videos: `SAMM_LongVideos_V<n>_Release.xlsx` and `SAMM_longvideos/`.

One sheet, `FACS_Movement_Only`: nine rows of notes, the header on row 10. Subject is text with
leading zeros ('006'; a number in some copies), Filename `006_1_1` is subject_video_index,
Onset/Apex/Offset are floats (566.4000000000001; apex -1 = not annotated), Type is `Macro` or
`Micro - 1/2`. Identifiers: subject `006`, video `006_1`; frames
`SAMM_longvideos/006_1/006_1_0001.jpg`, numbered from 1, four digits or more.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from mespot.data.adapters.common import RAW_COLUMNS, rows_under_header, text, unknown_folder
from mespot.data.frames import list_frames

NAME = "SAMM-LV"
FPS = 200.0
FRAMES_DIR = "SAMM_longvideos"
ANNOTATION_FILES = (r"SAMM_LongVideos_V\d+_Release\.xlsx?",)
SHEET = "FACS_Movement_Only"
COLUMNS = ("Subject", "Filename", "Onset", "Apex", "Offset", "Type")


def frame_name(video: str, number: int) -> str:
    return f"{video}_{number:04d}.jpg"


def read_rows(path: Path) -> pd.DataFrame:
    raw = []
    for where, cell in rows_under_header(path, SHEET, COLUMNS):
        subject, filename = text(cell["Subject"]).zfill(3), text(cell["Filename"])
        video = "_".join(filename.split("_")[:2])
        problem = ""
        if not re.fullmatch(r"\d+_\d+_\d+", filename) or not video.startswith(subject + "_"):
            problem = f"Filename {filename!r} is not <subject>_<video>_<index> of subject {subject}"
        frames = (cell["Onset"], cell["Apex"], cell["Offset"])
        raw.append((subject, video, *frames, cell["Type"], where, problem))
    return pd.DataFrame(raw, columns=RAW_COLUMNS)


def find_videos(frames_root: Path) -> dict:
    """SAMM_longvideos/<subject>_<video>/<subject>_<video>_<frame>.jpg."""
    found = {}
    for folder in sorted(p for p in frames_root.iterdir() if p.is_dir()):
        m = re.fullmatch(r"(\d+)_\d+", folder.name)
        if m is None:
            unknown_folder(folder, "expected <subject>_<video>, e.g. 006_1")
            continue
        frames = list_frames(folder, re.escape(folder.name) + r"_(\d+)\.jpg")
        found[(m.group(1), folder.name)] = (folder, frames)
    return found
