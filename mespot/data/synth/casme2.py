"""CAS(ME)² mock layout: `CAS(ME)^2code_final.xlsx` (three header-less sheets) and `rawpic/`.

Quirks written as in the real files: video codes stored as numbers in `naming rule2` (101 for
0101), and some macro-expression rows with offset 0 (not annotated) — their ground truth is
what the default policy reads (offset = apex).
"""

from __future__ import annotations

from pathlib import Path

from openpyxl import Workbook

from mespot.data.adapters import casme2 as official
from mespot.errors import UserError

FPS = official.FPS
FIRST_FRAME = 1
WORKBOOK = "CAS(ME)^2code_final.xlsx"
EMOTIONS = {"disgust": "negative", "anger": "negative", "happy": "positive"}
AUS = ("4", "4+10+14", "12", "6+12", "1+2", "43", "L10", "R12+R14")
OFFSET_ZERO_SHARE = 0.2


def subject_ids(n: int) -> list[str]:
    folders = list(official.SUBJECT_FOLDERS.values())
    return (folders + [f"s{41 + i}" for i in range(max(0, n - len(folders)))])[:n]


def video_ids(subject: str, n: int) -> list[str]:
    codes = list(official.VIDEO_CODES.values())
    if n > len(codes):
        raise UserError(f"videos_per_subject={n}: CAS(ME)² has {len(codes)} videos per subject")
    return [official.video_id(subject, code) for code in codes[:n]]


def dropped_frames(n_frames: int, rng) -> frozenset[int]:
    return frozenset()


def frame_path(root: Path, video, number: int) -> Path:
    code = video.video.split("_")[1]
    folder = f"{video.video}{official.VIDEO_DESCRIPTIONS[code]}"
    return root / official.FRAMES_DIR / video.subject / folder / official.frame_name(number)


def write_annotations(root: Path, videos, rng) -> list[tuple]:
    names = {code: name for name, code in official.VIDEO_CODES.items()}
    numbers = {s: i + 1 for i, s in enumerate(dict.fromkeys(v.subject for v in videos))}
    expressions, rule1, truth = [], [], []
    first_mae = True
    for video in videos:
        name = names[video.video.split("_")[1]]
        for k, e in enumerate(video.expressions, start=1):
            onset, apex, offset = e.onset + 1, e.apex + 1, e.offset + 1
            written = offset
            if e.kind == "mae" and (first_mae or rng.random() < OFFSET_ZERO_SHARE):
                written, offset = 0, apex  # offset not annotated; the default policy reads apex
            first_mae = first_mae and e.kind != "mae"
            kind = "macro-expression" if e.kind == "mae" else "micro-expression"
            emotion = EMOTIONS[name.rstrip("0123456789")]
            au = AUS[int(rng.integers(len(AUS)))]
            expressions.append(
                [numbers[video.subject], f"{name}_{k}", onset, apex, written, au, emotion, kind,
                 name.rstrip("0123456789")]
            )  # fmt: skip
            rule1.append([video.subject.removeprefix("s"), video.subject, numbers[video.subject]])
            truth.append((video.subject, video.video, onset, apex, offset, e.kind))
    rule2 = [[int(code), name] for name, code in official.VIDEO_CODES.items()]  # codes as numbers
    book = Workbook()
    for sheet, rows in zip(official.SHEETS, (expressions, rule1, rule2), strict=True):
        ws = book.create_sheet(sheet)
        for row in rows:
            ws.append(row)
    book.remove(book.worksheets[0])  # the empty default sheet
    book.save(root / WORKBOOK)
    return truth
