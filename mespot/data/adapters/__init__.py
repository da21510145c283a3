"""Dataset adapters: the official files of each dataset → intervals.csv + videos.csv tables.

Each adapter module states its dataset's layout and provides NAME, FPS, FRAMES_DIR,
ANNOTATION_FILES (name patterns, preferred first), `read_rows(path)` (rows as found, see
common.RAW_COLUMNS) and `find_videos(frames_root)`; `load_annotations` does the rest the
same way for all of them.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from pathlib import Path

from mespot.data.adapters import casme2, casme3, sammlv
from mespot.data.adapters.common import (
    Policies,
    clean_rows,
    find_annotation_file,
    video_table,
    warn_frames_absent,
)
from mespot.data.tables import Annotations
from mespot.errors import UserError

ADAPTERS = {"casme2": casme2, "sammlv": sammlv, "casme3": casme3}


def load_annotations(
    dataset: str,
    root: str | os.PathLike,
    *,
    annotations: str | os.PathLike | None = None,
    frames_dir: str | None = None,
    policies: Policies | None = None,
) -> Annotations:
    """Read a dataset folder as its owners distribute it.

    Works from the annotation file alone: without frames (a warning), videos.csv lists the
    annotated videos with n_frames empty.
    """
    if dataset not in ADAPTERS:
        raise UserError(f"data.name={dataset!r} has no adapter; use one of {', '.join(ADAPTERS)}")
    adapter = ADAPTERS[dataset]
    root = Path(root)
    with _folders_read(root):
        source = find_annotation_file(root, adapter.ANNOTATION_FILES, adapter.NAME, annotations)
    applied: Counter = Counter()
    intervals = clean_rows(adapter.read_rows(source), policies or Policies(), applied)
    notes: list[str] = []
    frames_root = root / (frames_dir or adapter.FRAMES_DIR)
    if frames_root.is_dir():
        with _folders_read(frames_root):
            found = adapter.find_videos(frames_root)
    else:
        warn_frames_absent(frames_root, adapter.NAME)
        found = {}
    videos = video_table(intervals, found, root, adapter.FPS, notes)
    frames = {key: frame_list for key, (_, frame_list) in found.items()}
    return Annotations(dataset, source, intervals, videos, applied, notes, frames)


@contextlib.contextmanager
def _folders_read(top: Path):
    """A folder under `top` that cannot be listed (no read permission, gone meanwhile) is one
    line naming it: its videos would otherwise be missing without a word."""
    try:
        yield
    except OSError as e:
        raise UserError(f"cannot read the folder {e.filename or top} ({e.strerror})") from None
