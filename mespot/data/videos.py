"""The cached videos of a dataset: what the model and the post-processing know of each, read
from a cache folder that mespot-preprocess filled (mespot/data/cache.py holds its format)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mespot.data import cache
from mespot.data.windows import to_cached_indices
from mespot.errors import UserError
from mespot.intervals import TYPES


@dataclass
class VideoInfo:
    """What the model and the post-processing need to know of one cached video."""

    subject: str
    video: str
    folder: Path
    n_frames: int
    source_fps: float  # of the dataset's frame numbers (duration limits are in seconds)
    source_frames: list[int]
    segments: np.ndarray  # (M, 2) ground truth in cached indices
    labels: np.ndarray  # (M,) 0 = MaE, 1 = ME
    ground_truth: pd.DataFrame  # the same intervals in the dataset's frame numbers


def scan_cache(folder: str | Path) -> tuple[list[VideoInfo], list[VideoInfo]]:
    """(finished, unfinished) videos of a cache folder, with their ground truth.

    Unfinished videos are those its videos.csv lists without a finished cache (their
    preprocessing failed, or has not reached them yet): they hold no frames (`n_frames` 0), only
    their ground truth, so that a fold can count it as missed rather than lose it.
    """
    folder = Path(folder)
    if not (folder / "intervals.csv").is_file():
        raise UserError(f"{folder}: not a mespot cache folder (run mespot-preprocess first)")
    intervals = pd.read_csv(folder / "intervals.csv", dtype={"subject": str, "video": str})
    videos = pd.read_csv(folder / "videos.csv", dtype={"subject": str, "video": str})
    finished, unfinished = [], []
    for row in videos.itertuples(index=False):
        where = cache.video_folder(folder, row.subject, row.video)
        gt = intervals[(intervals["subject"] == row.subject) & (intervals["video"] == row.video)]
        gt = gt.reset_index(drop=True)
        if not cache.is_done(where):
            nothing = np.zeros((0, 2), np.int64), np.zeros(0, np.int64)
            unfinished.append(VideoInfo(row.subject, row.video, where, 0, float(row.fps), [],
                                        *nothing, gt))  # fmt: skip
            continue
        meta = json.loads((where / "meta.json").read_text())
        segments = to_cached_indices(gt[["onset", "offset"]].to_numpy(), meta["source_frames"])
        labels = gt["type"].map(TYPES.index).to_numpy(dtype=np.int64)  # also when empty
        n = len(meta["source_frames"])
        finished.append(
            VideoInfo(row.subject, row.video, where, n, meta["source_fps"], meta["source_frames"],
                      segments, labels, gt)
        )  # fmt: skip
    return finished, unfinished


def read_cache(folder: str | Path) -> list[VideoInfo]:
    """Every finished video of a cache folder, with its ground truth."""
    finished, _ = scan_cache(folder)
    if not finished:
        raise UserError(f"{folder}: no finished videos in the cache")
    return finished


def refuse_unfinished(folder: str | Path, unfinished: list[VideoInfo], total: int) -> None:
    """A fold on part of the data would score a subset as if it were the whole: it stops,
    naming the videos, unless the user has chosen to go on (`data.allow_uncached`)."""
    if not unfinished:
        return
    names = ", ".join(f"{v.subject}/{v.video}" for v in unfinished[:8])
    more = f" and {len(unfinished) - 8} more" if len(unfinished) > 8 else ""
    raise UserError(
        f"{folder}: {len(unfinished)} of {total} videos are not cached ({names}{more}): "
        "preprocessing failed on them or has not finished; run the same mespot-preprocess "
        "command again (it resumes and names why a video fails), or set "
        "data.allow_uncached=true to go on with their expressions counted as missed"
    )
