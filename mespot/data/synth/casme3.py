"""CAS(ME)³ mock layout: `CAS(ME)3_part_A_v2.xls` and `part_A/data/part_A/`.

Quirks written as in the real files: a legacy .xls with every cell stored as text, a capital
video letter in some rows, an `eye blink` sheet listing the blinks, and frames numbered from 0
with gaps (about one frame in a hundred is missing).
"""

from __future__ import annotations

import string
from pathlib import Path

import xlwt

from mespot.data.adapters import casme3 as official
from mespot.errors import UserError

FPS = official.FPS
FIRST_FRAME = 0
WORKBOOK = "CAS(ME)3_part_A_v2.xls"
LETTERS = string.ascii_lowercase[:13]  # a-m
HEADER = ["Subject", "Filename", "Onset", "Apex", "Offset", "AU", "Expression type",
          "Objective class"]  # fmt: skip
AUS = ("4+15+R10", "12", "1+2", "L14", "6+12+25")


def subject_ids(n: int) -> list[str]:
    return [f"spNO.{i + 1}" for i in range(n)]


def video_ids(subject: str, n: int) -> list[str]:
    if n > len(LETTERS):
        raise UserError(f"videos_per_subject={n}: CAS(ME)³ has at most {len(LETTERS)} per subject")
    return [official.video_id(subject, letter) for letter in LETTERS[:n]]


def dropped_frames(n_frames: int, rng) -> frozenset[int]:
    """Missing frames inside the video, never its first or last (they fix its length)."""
    if n_frames < 10:
        return frozenset()
    count = max(1, n_frames // 100)
    return frozenset(int(i) for i in rng.choice(range(1, n_frames - 1), count, replace=False))


def frame_path(root: Path, video, number: int) -> Path:
    letter = video.video.rsplit("_", 1)[1]
    return (
        root / official.FRAMES_DIR / video.subject / letter / "color" / official.frame_name(number)
    )


def write_annotations(root: Path, videos, rng) -> list[tuple]:
    rows, blinks, truth = [], [], []
    for video in videos:
        letter = video.video.rsplit("_", 1)[1]
        for e in video.events:
            if e.kind == "blink":
                blinks.append([video.subject, letter, e.onset, e.offset])
                continue
            written = letter.upper() if not rows or rng.random() < 0.1 else letter
            kind = "Macro-expression" if e.kind == "mae" else "Micro-expression"
            au = AUS[int(rng.integers(len(AUS)))]
            rows.append([video.subject, written, e.onset, e.apex, e.offset, au, kind, "VII"])
            truth.append((video.subject, video.video, e.onset, e.apex, e.offset, e.kind))
    book = xlwt.Workbook()
    for name, header, body in (
        (official.SHEET, HEADER, rows),
        (official.BLINK_SHEET, ["Subject", "Filename", "Onset", "Offset"], blinks),
    ):
        sheet = book.add_sheet(name)
        for r, row in enumerate([header, *body]):
            for c, value in enumerate(row):
                sheet.write(r, c, str(value))  # every cell text, as in the real file
    book.save(str(root / WORKBOOK))
    return truth
