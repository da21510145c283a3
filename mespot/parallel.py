"""Parallel work: processes per video (preprocessing, mock datasets) and cores or GPUs per fold."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2

from mespot.errors import UserError

# Fresh interpreters: a child forked while the parent's OpenCV thread pool runs can deadlock.
_SPAWN = multiprocessing.get_context("spawn")


def one_thread() -> None:
    """This process computes on one thread (OpenCV, and torch when it is imported later, as
    tvl1_torch on a CPU does): the parallelism comes from processes, one per core."""
    os.environ["OMP_NUM_THREADS"] = "1"
    cv2.setNumThreads(1)


def video_pool(workers: int, initializer=one_thread, initargs=()) -> ProcessPoolExecutor:
    """Parallel over videos: one process each, single-threaded inside (an `initializer` of
    its own calls one_thread)."""
    return ProcessPoolExecutor(workers, mp_context=_SPAWN, initializer=initializer,
                               initargs=initargs)  # fmt: skip


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def folds_at_once(launcher) -> int:
    """How many folds a launcher runs side by side: a joblib launcher's n_jobs (-1 meaning one per
    core); one for any other (one fold per process, or per SLURM job)."""
    if "joblib" not in str(launcher.get("_target_", "")).lower():
        return 1
    n_jobs = int(launcher.get("n_jobs") or 1)
    return n_jobs if n_jobs > 0 else max(1, available_cores() + 1 + n_jobs)


def fold_threads(launcher) -> int:
    """CPU threads for one fold: the cores shared out among the folds a launcher runs at once;
    every core when folds run one at a time."""
    return max(1, available_cores() // folds_at_once(launcher))


_claimed: tuple[int, object] | None = None  # (GPU, its open lock file) of this process


def claim_gpu(folder: Path, count: int, per_gpu: int = 1) -> int:
    """A GPU with a free fold slot: `per_gpu` slots on each of `count` GPUs, one lock file each
    in `folder`, filled one per GPU before any GPU takes a second fold.

    A launcher's worker process keeps its slot for every fold it runs, so N workers on N GPUs
    never share one at per_gpu=1; a fold too small to keep a GPU busy can share it with others
    (folds_per_gpu). The lock dies with the process, whatever kills it."""
    global _claimed
    if per_gpu < 1:
        raise UserError(f"folds_per_gpu={per_gpu}: give at least 1")
    if count < 2:
        return 0
    if _claimed is None:
        folder.mkdir(parents=True, exist_ok=True)
        slots = [(index, slot) for slot in range(per_gpu) for index in range(count)]
        while _claimed is None:
            for index, slot in slots:
                name = f".gpu{index}.lock" if slot == 0 else f".gpu{index}.{slot}.lock"
                handle = open(folder / name, "w")  # noqa: SIM115 (held open)
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    handle.close()
                    continue
                _claimed = (index, handle)
                break
            else:
                time.sleep(1.0)  # more folds than slots: wait for one to finish
    return _claimed[0]
