"""SAMM-LV mock layout: `SAMM_LongVideos_V1_Release.xlsx` and `SAMM_longvideos/`.

Quirks written as in the real file: nine rows of notes above the header, subjects as text with
leading zeros, fractional frame numbers with float noise (566.4000000000001), apex -1, AU cells
that are numbers. The ground truth is what the default policies read (round half up, apex -1
kept).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from openpyxl import Workbook

from mespot.data.adapters import sammlv as official

FPS = official.FPS
FIRST_FRAME = 1
WORKBOOK = "SAMM_LongVideos_V1_Release.xlsx"
NOTES = (
    ["SAMM Long Videos Dataset - FACS Codes"],
    [],
    ["Symbols: B/C/D/E intensity, L/R left/right"],
    ["Subjects with Apex Frame not annotated were labelled as -1."],
    [],
    ["Mock data written by mespot: the layout of the official file, not its content."],
    [],
    [],
    [],
)  # rows 1-9; the header is row 10
HEADER = ["Subject", "Filename", "Inducement Code", "Onset", "Apex", "Offset", "Duration",
          "Type", "Action Units", "Notes"]  # fmt: skip
FRACTIONS = (-0.5, -0.4, -0.2, 0.2, 0.4)  # all round half up to the true frame
AUS = ("4(B/C)+7B", "12B", "1+2", "R14A", "6B+12C")


def subject_ids(n: int) -> list[str]:
    return [f"{6 + i:03d}" for i in range(n)]


def video_ids(subject: str, n: int) -> list[str]:
    return [f"{subject}_{j + 1}" for j in range(n)]


def dropped_frames(n_frames: int, rng) -> frozenset[int]:
    return frozenset()


def frame_path(root: Path, video, number: int) -> Path:
    return root / official.FRAMES_DIR / video.video / official.frame_name(video.video, number)


def write_annotations(root: Path, videos, rng) -> list[tuple]:
    rows, truth = [], []
    first = True
    for video in videos:
        for k, e in enumerate(video.expressions, start=1):
            onset, apex, offset = e.onset + 1, e.apex + 1, e.offset + 1
            if first or rng.random() < 0.1:
                apex = -1  # not annotated
            written = [
                _noisy(f, rng, force=first) if f != -1 else -1 for f in (onset, apex, offset)
            ]
            au = 4 if rng.random() < 0.3 else AUS[int(rng.integers(len(AUS)))]  # a number, at times
            kind = "Macro" if e.kind == "mae" else "Micro - 1/2"
            rows.append(
                [video.subject, f"{video.video}_{k}", int(rng.integers(1, 8)), *written,
                 written[2] - written[0] + 1, kind, au, "While blinking" if k == 2 else None]
            )  # fmt: skip
            truth.append((video.subject, video.video, onset, apex, offset, e.kind))
            first = False
    book = Workbook()
    ws = book.active
    ws.title = official.SHEET
    for row in (*NOTES, HEADER, *rows):
        ws.append(row)
    book.save(root / WORKBOOK)
    return truth


def _noisy(frame: int, rng, force: bool) -> float:
    """A third of the frame numbers made fractional, stored with float noise as in the real file."""
    if not force and rng.random() > 0.35:
        return float(frame)
    value = frame + FRACTIONS[int(rng.integers(len(FRACTIONS)))]
    return float(np.nextafter(value, np.inf))  # 566.4 → 566.4000000000001
