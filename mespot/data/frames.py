"""Frame files of one video: found by the dataset's naming rule and ordered by frame number.

Names are sorted numerically (`img2.jpg` before `img10.jpg`; SAMM-LV numbers can exceed four
digits), and the frame number is the dataset's own, so annotations index them directly.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from mespot.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass(frozen=True)
class FrameList:
    """The frames of one video folder, in frame-number order."""

    numbers: tuple[int, ...]
    paths: tuple[Path, ...]

    @property
    def first(self) -> int:
        return self.numbers[0]

    @property
    def last(self) -> int:
        return self.numbers[-1]

    @property
    def span(self) -> int:
        """Frames from the first to the last number: the video's length with gaps filled."""
        return self.last - self.first + 1 if self.numbers else 0

    @property
    def gaps(self) -> int:
        """Frame numbers missing inside the span (CAS(ME)³ has such gaps)."""
        return self.span - len(self.numbers)


def list_frames(folder: str | os.PathLike, pattern: str) -> FrameList:
    """Frames in `folder` whose names match `pattern`, a regex whose group 1 is the number.

    Other files (thumbnails, .DS_Store, …) are ignored; two files with the same number are an
    error, since the frame order would be ambiguous.
    """
    regex = re.compile(pattern, re.IGNORECASE)
    found: dict[int, Path] = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            m = regex.fullmatch(entry.name)
            if m is None or not entry.name.lower().endswith(IMAGE_SUFFIXES):
                continue
            number = int(m.group(1))
            if number in found:
                raise UserError(
                    f"{folder}: frames {found[number].name} and {entry.name} share number {number}"
                )
            found[number] = Path(entry.path)
    numbers = tuple(sorted(found))
    return FrameList(numbers, tuple(found[n] for n in numbers))
