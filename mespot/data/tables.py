"""The two tables every adapter produces, one schema for every dataset: intervals.csv and
videos.csv."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mespot.data.frames import FrameList
from mespot.files import atomic_write_text
from mespot.intervals import TYPE_NAMES, TYPES

INTERVAL_COLUMNS = ["subject", "video", "onset", "apex", "offset", "type"]
VIDEO_COLUMNS = ["subject", "video", "n_frames", "fps", "frames_dir"]


@dataclass
class Annotations:
    """What an adapter read from a dataset folder, and what it had to decide on the way."""

    dataset: str
    source: Path  # the annotation file read
    intervals: pd.DataFrame  # INTERVAL_COLUMNS, frame numbers as the dataset numbers them
    videos: pd.DataFrame  # VIDEO_COLUMNS; n_frames empty when the frames are not there
    applied: Counter = field(default_factory=Counter)  # policy applied → rows
    notes: list[str] = field(default_factory=list)  # other things a user should know
    frames: dict[tuple[str, str], FrameList] = field(default_factory=dict)  # found on disk

    def write(self, out_dir: str | os.PathLike) -> tuple[Path, Path]:
        out_dir = Path(out_dir)
        intervals = atomic_write_text(out_dir / "intervals.csv", self.intervals.to_csv(index=False))
        videos = atomic_write_text(out_dir / "videos.csv", self.videos.to_csv(index=False))
        return intervals, videos

    def summary(self) -> str:
        iv, vids = self.intervals, self.videos
        lines = [
            f"{self.dataset}: {self.source}",
            f"  subjects {vids['subject'].nunique()}, videos {len(vids)}, "
            f"intervals {len(iv)}: "
            + ", ".join(f"{TYPE_NAMES[t]} {int((iv['type'] == t).sum())}" for t in TYPES),
        ]
        for t in TYPES:
            length = (iv["offset"] - iv["onset"] + 1)[iv["type"] == t]
            if len(length):
                lines.append(
                    f"  {TYPE_NAMES[t]} duration (frames): min {length.min()}, "
                    f"median {length.median():g}, max {length.max()}"
                )
        missing = vids[vids["n_frames"].isna()]
        if len(missing) == len(vids):
            lines.append("  frames: not found (annotations only; n_frames left empty)")
        elif len(missing):
            names = ", ".join(missing["video"].head(10))
            more = " …" if len(missing) > 10 else ""
            lines.append(f"  videos with frames missing: {len(missing)} ({names}{more})")
        for policy, count in sorted(self.applied.items()):
            lines.append(f"  policy: {policy}: {count}")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)
