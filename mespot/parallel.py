"""Worker processes for per-video work (preprocessing, rendering mock datasets)."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import cv2

# Fresh interpreters: a child forked while the parent's OpenCV thread pool runs can deadlock.
_SPAWN = multiprocessing.get_context("spawn")


def _single_threaded_opencv() -> None:
    cv2.setNumThreads(1)


def video_pool(workers: int) -> ProcessPoolExecutor:
    """Parallel over videos: one process each, OpenCV single-threaded inside."""
    return ProcessPoolExecutor(workers, mp_context=_SPAWN, initializer=_single_threaded_opencv)
