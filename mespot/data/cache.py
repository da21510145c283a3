"""The preprocessed cache: one folder per configuration, so two configurations never mix.

    <cache_dir>/<dataset>-<hash>/settings.json   everything that changes the arrays (hashed)
                                 intervals.csv, videos.csv   the annotations they belong to
                                 <subject>/<video>/frames.npy   (T, S, S[, 3]) uint8
                                                   flow.npy     (T, S, S, 2) float16
                                                   meta.json    written last: the video is done

Arrays are filled through memory maps under temporary names and renamed when complete; a video
counts as done only once its meta.json exists, so a run killed at any moment leaves nothing that
a later run or the DataModule would read as finished.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mespot.files import atomic_write_json

FORMAT_VERSION = 1
PARTIAL = ".partial"


def cache_folder(cache_dir: str | os.PathLike, dataset: str, settings: dict) -> Path:
    """The folder for one configuration: its name hashes every setting that changes the arrays."""
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return Path(cache_dir) / f"{dataset}-{digest}"


def video_folder(folder: Path, subject: str, video: str) -> Path:
    return folder / subject / video


def is_done(video_dir: Path) -> bool:
    return (video_dir / "meta.json").is_file()


@dataclass
class CachedVideo:
    """A finished video, memory-mapped: reading a window does not load the whole video."""

    frames: np.ndarray
    flow: np.ndarray
    meta: dict


def load_video(video_dir: Path) -> CachedVideo:
    meta = json.loads((video_dir / "meta.json").read_text())
    frames = np.load(video_dir / "frames.npy", mmap_mode="r")
    flow = np.load(video_dir / "flow.npy", mmap_mode="r")
    return CachedVideo(frames, flow, meta)


class VideoWriter:
    """Fills frames.npy and flow.npy frame by frame; `commit` makes the video count as done,
    `abandon` (or any error inside `with VideoWriter(…)`) leaves nothing of it behind."""

    def __init__(self, video_dir: Path, n_frames: int, frame_shape: tuple[int, ...]):
        video_dir.mkdir(parents=True, exist_ok=True)
        (video_dir / "meta.json").unlink(missing_ok=True)  # redoing: not done until committed
        for stale in video_dir.glob(f"*{PARTIAL}"):
            stale.unlink()
        self.dir = video_dir
        self._committed: list[Path] = []  # arrays renamed by a commit that has not finished
        size = frame_shape[:2]
        try:
            self.frames = self._open("frames.npy", np.uint8, (n_frames, *frame_shape))
            self.flow = self._open("flow.npy", np.float16, (n_frames, *size, 2))
        except BaseException:
            self.abandon()
            raise

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, error_type, error, traceback) -> None:
        if error_type is not None:
            self.abandon()

    def _open(self, name: str, dtype, shape) -> np.ndarray:
        path = self.dir / (name + PARTIAL)
        array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        _reserve(path)
        return array

    def commit(self, meta: dict) -> None:
        for name, array in (("frames.npy", self.frames), ("flow.npy", self.flow)):
            array.flush()
            os.replace(self.dir / (name + PARTIAL), self.dir / name)
            self._committed.append(self.dir / name)
        del self.frames, self.flow
        atomic_write_json(self.dir / "meta.json", {"format": FORMAT_VERSION, **meta})
        self._committed = []  # done: the video counts from here on

    def abandon(self) -> None:
        """Remove the unfinished arrays (a failed or interrupted video): no half video stays."""
        for name in ("frames", "flow"):
            vars(self).pop(name, None)  # the memory maps
        for partial in [*self.dir.glob(f"*{PARTIAL}"), *self._committed]:
            partial.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # kept when it holds more (an earlier, whole video)
            self.dir.rmdir()


def _reserve(path: Path) -> None:
    """Claim the whole file's disk space now. A full disk then fails here as ENOSPC, an error
    the run reports by name, where a write through the memory map into a sparse file would kill
    the process with SIGBUS."""
    if not hasattr(os, "posix_fallocate"):  # macOS: no such call
        return
    with open(path, "r+b") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # else: cannot reserve, so
                raise  # the writes find out
