"""Frames of a dataset → the cache the DataModule reads: face crop, resize, resample, optical flow.

Videos are processed in parallel (one process each, OpenCV single-threaded inside) and streamed:
one frame in memory at a time plus the `flow_step` previous ones. A finished video is skipped on
the next run; a failed one is reported with the file that broke it while the others go on, and
leaves nothing in the cache. A full disk stops the run, and so does Ctrl-C: every worker stops at
its next frame and removes its unfinished video.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import multiprocessing
import os
import shutil
import signal
import threading
import time
from collections import deque
from concurrent.futures import as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

import mespot
from mespot.data import cache
from mespot.data.face import ALIGNMENTS, DETECTORS, FaceStabiliser, crop, crop_box, detect_face
from mespot.data.flow import make_flow
from mespot.data.frames import FrameList
from mespot.data.tables import Annotations
from mespot.errors import UserError
from mespot.files import atomic_write_json, atomic_write_text
from mespot.parallel import available_cores, one_thread, video_pool

log = logging.getLogger(__name__)

COLOURS = ("grey", "rgb")
NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # disk full, quota spent, file-size limit
JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"
JPEG_TAIL = 1024  # bytes read at a JPEG's end to find its end marker


RUN_ONLY = ("flow_device", "flow_threads")  # Settings that say where and how fast, not what


@dataclass(frozen=True)
class Settings:
    """Everything that changes the cached arrays (all of it goes into the cache folder's hash),
    and where and on how many threads the flow runs (RUN_ONLY: not hashed)."""

    size: int = 128  # crops are size × size
    colour: str = "grey"  # grey | rgb
    detector: str = "haar"  # haar | none
    margin: float = 0.2  # of the face box, added on each side
    face_frames: int = 10  # first frames searched for the face
    align: str = "none"  # none | stabilise: hold face and light still (data.face.FaceStabiliser)
    fps: float | None = None  # resample to this rate (SAMM-LV 200 → 30); None keeps every frame
    flow_method: str = "tvl1"
    flow_params: dict = field(default_factory=dict)
    flow_step: int = 1  # flow of frame t is computed from frame t - flow_step to t
    flow_device: str = "auto"  # where tvl1_torch runs; not in the key: it changes no array
    flow_threads: int = 1  # threads for OpenCV's flow in one video; not in the key either

    def __post_init__(self):
        checks = [
            (self.size >= 16, f"size={self.size} must be at least 16"),
            (self.colour in COLOURS, f"colour={self.colour!r}: use {' or '.join(COLOURS)}"),
            (
                self.detector in DETECTORS,
                f"face.detector={self.detector!r}: use one of {DETECTORS}",
            ),
            (self.margin >= 0, f"face.margin={self.margin} must not be negative"),
            (self.face_frames >= 1, f"face.frames={self.face_frames} must be at least 1"),
            (self.align in ALIGNMENTS, f"face.align={self.align!r}: use one of {ALIGNMENTS}"),
            (self.fps is None or self.fps > 0, f"fps={self.fps} must be positive"),
            (self.flow_step >= 1, f"flow.step={self.flow_step} must be at least 1"),
            (self.flow_threads >= 1, f"flow threads={self.flow_threads} must be at least 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        # fails early on unknown flow settings
        make_flow(self.flow_method, self.flow_params, self.flow_device)

    def key(self, dataset: str, root: Path) -> dict:
        """What the cache folder's name hashes: these settings, the data, OpenCV's version."""
        return {
            "format": cache.FORMAT_VERSION,
            "dataset": dataset,
            "root": str(root.resolve()),
            "opencv": cv2.__version__,
            **{k: v for k, v in asdict(self).items() if k not in RUN_ONLY},
        }


@dataclass(frozen=True)
class Job:
    subject: str
    video: str
    frames: FrameList
    source_fps: float
    out: Path


@dataclass
class Result:
    subject: str
    video: str
    status: str  # done | skipped | failed | interrupted
    frames: int = 0
    seconds: float = 0.0
    error: str = ""
    face_found: bool = True
    disk_full: bool = False


@dataclass
class Report:
    folder: Path
    results: list[Result]
    seconds: float

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def failed(self) -> list[Result]:
        return [r for r in self.results if r.status == "failed"]

    def summary(self) -> str:
        done = [r for r in self.results if r.status == "done"]
        frames = sum(r.frames for r in done)
        rate = frames / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"cache: {self.folder}",
            f"videos: {self.count('done')} done, {self.count('skipped')} skipped (already "
            f"cached), {len(self.failed)} failed; {frames} frames in {self.seconds:.1f} s "
            f"({rate:.1f} frames/s)",
        ]
        no_face = [f"{r.subject}/{r.video}" for r in done if not r.face_found]
        if no_face:
            lines.append(
                f"no face found (centre crop used) in {len(no_face)}: {', '.join(no_face)}"
            )
        lines += [f"failed {r.subject}/{r.video}: {r.error}" for r in self.failed]
        return "\n".join(lines)


def preprocess(
    annotations: Annotations,
    root: str | os.PathLike,
    cache_dir: str | os.PathLike,
    settings: Settings,
    *,
    workers: int | None = None,
    force: bool = False,
    progress: bool = True,
) -> Report:
    """Fill the cache for every video of `annotations` that has frames on disk."""
    root = Path(root)
    if not annotations.frames:
        raise UserError(f"no frames under {root}: preprocessing needs the dataset's frames")
    folder = cache.cache_folder(
        cache_dir, annotations.dataset, settings.key(annotations.dataset, root)
    )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(folder / "settings.json", settings.key(annotations.dataset, root))
        atomic_write_text(folder / "intervals.csv", annotations.intervals.to_csv(index=False))
        atomic_write_text(folder / "videos.csv", annotations.videos.to_csv(index=False))
    except OSError as e:
        if e.errno in NO_SPACE:
            raise disk_full(folder, e) from None
        raise UserError(
            f"paths.cache_dir={cache_dir}: cannot write the cache folder {folder} ({e.strerror})"
        ) from None

    results, jobs = [], []
    for row in annotations.videos.itertuples(index=False):
        out = cache.video_folder(folder, row.subject, row.video)
        frame_list = annotations.frames.get((row.subject, row.video))
        if frame_list is None:
            results.append(
                Result(row.subject, row.video, "failed", error="frames folder not found")
            )
        elif cache.is_done(out) and not force:
            results.append(Result(row.subject, row.video, "skipped"))
        else:
            jobs.append(Job(row.subject, row.video, frame_list, float(row.fps), out))

    start = time.perf_counter()
    results += _run(jobs, settings, folder, workers or os.cpu_count() or 1, progress)
    return Report(folder, results, time.perf_counter() - start)


def disk_full(where: Path, error: OSError | str) -> UserError:
    """The one line for a disk (or quota, or file-size limit) that takes no more."""
    return UserError(
        f"disk full writing {where} ({error}): free space, then run the same command to resume "
        "(finished videos are kept)"
    )


def progress_columns() -> tuple:
    """A rich progress bar's columns: what, bar, percent, count (of the task's `unit` field)
    and the time left."""
    return (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.completed}/{task.total} {task.fields[unit]}"),
        TimeRemainingColumn(),
    )


def _run(
    jobs: list[Job], settings: Settings, folder: Path, workers: int, progress: bool
) -> list[Result]:
    total = sum(len(kept_frames(j.frames, j.source_fps, settings.fps)) for j in jobs)
    results = []
    stop = multiprocessing.get_context("spawn").Event()
    with Progress(*progress_columns(), disable=not progress) as bar:
        task = bar.add_task("preprocessing", total=total, unit="frames")
        n = min(workers, max(len(jobs), 1))
        # fewer videos than workers: the cores left over compute each video's flow
        settings = replace(settings, flow_threads=max(1, min(workers, available_cores()) // n))
        with video_pool(n, _start_worker, (stop,)) as pool:
            with _deaf_to_ctrl_c():  # the workers start here, and inherit it
                futures = [pool.submit(process_video, job, settings) for job in jobs]
            try:
                for future in as_completed(futures):
                    result = _result(future, jobs, settings, folder)
                    results.append(result)
                    bar.advance(task, result.frames)
                    if result.disk_full:
                        raise disk_full(cache.video_folder(folder, result.subject, result.video),
                                        result.error)  # fmt: skip
                    if result.status == "failed":
                        log.warning("%s/%s failed: %s", result.subject, result.video, result.error)
            except BaseException:  # Ctrl-C, a full disk: no worker goes on, none leaves a half
                _stop_workers(pool, stop)
                raise
    return results


def _result(future, jobs: list[Job], settings: Settings, folder: Path) -> Result:
    """A video's Result. A worker that died while the disk is (nearly) full was killed writing
    through a memory map that found no space (file systems that cannot reserve it up front)."""
    try:
        return future.result()
    except BrokenProcessPool:
        channels = 3 if settings.colour == "rgb" else 1
        needed = max(len(j.frames.numbers) for j in jobs) * settings.size**2 * (channels + 4)
        if shutil.disk_usage(folder).free < needed:
            raise disk_full(folder, "a worker died writing its arrays") from None
        raise


_stop = None  # in a worker: the main process's request to stop (see _start_worker)


def _start_worker(stop) -> None:
    """A worker process: one thread, deaf to Ctrl-C from its start (see _run). The main process
    hears it and sets `stop`, which every worker checks after each frame, so each removes its
    own unfinished video."""
    global _stop
    one_thread()
    _stop = stop


class Interrupted(Exception):
    """The main process asked this worker to stop (Ctrl-C)."""


def _check_stop() -> None:
    if _stop is not None and _stop.is_set():
        raise Interrupted


def _stop_workers(pool, stop) -> None:
    """Stop every worker at its next frame and wait for them (a frame's time); a second Ctrl-C
    meanwhile is ignored, so the wait ends as cleanly as the first one asked."""
    stop.set()
    with _deaf_to_ctrl_c():
        pool.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def _deaf_to_ctrl_c():
    """SIGINT ignored inside; processes started meanwhile keep ignoring it (Python leaves an
    ignored SIGINT alone), so a Ctrl-C at the terminal, which reaches every process of the
    group, interrupts the main process alone. Only the main thread may set signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def kept_frames(frames: FrameList, source_fps: float, fps: float | None) -> list[int]:
    """The source frame numbers kept: every frame from the first to the last number (gaps
    included), or, when resampling to a lower rate, the frame nearest to each new time step."""
    numbers = list(range(frames.first, frames.last + 1)) if frames.numbers else []
    if fps is None or fps >= source_fps or not numbers:
        return numbers
    count = int((len(numbers) - 1) * fps / source_fps) + 1
    return [numbers[round(k * source_fps / fps)] for k in range(count)]


def process_video(job: Job, settings: Settings) -> Result:
    """One video into the cache; any problem becomes a failed Result naming it."""
    start = time.perf_counter()
    try:
        meta = _process(job, settings)
    except Interrupted:
        return Result(job.subject, job.video, "interrupted")
    except Exception as e:  # the run goes on with the other videos
        full = isinstance(e, OSError) and e.errno in NO_SPACE
        return Result(job.subject, job.video, "failed", error=str(e), disk_full=full)
    seconds = time.perf_counter() - start
    frames = len(meta["source_frames"])
    return Result(job.subject, job.video, "done", frames, seconds, face_found=meta["face"]["found"])


def _process(job: Job, settings: Settings) -> dict:
    if not job.frames.numbers:
        raise UserError(f"no frames in the video's folder ({job.out.name})")
    kept = kept_frames(job.frames, job.source_fps, settings.fps)
    meta = {
        "subject": job.subject,
        "video": job.video,
        "source_frames": kept,
        "filled_frames": len(set(kept) - set(job.frames.numbers)),
        "source_fps": job.source_fps,
        "fps": settings.fps if settings.fps and settings.fps < job.source_fps else job.source_fps,
    }
    return encode_video(FolderFrames(job.frames, kept), settings, job.out, meta, _check_stop)


class FolderFrames:
    """The kept frames of a dataset video folder, by position (a missing number repeats the
    previous file)."""

    def __init__(self, frames: FrameList, kept: list[int]):
        self.paths = _path_for_each(frames, kept)

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, positions, grey: bool):
        for position in positions:
            yield _read(self.paths[position], grey)

    def where(self, position: int) -> str:
        return str(self.paths[position])


def encode_video(source, settings: Settings, out: Path, meta: dict, on_frame=None) -> dict:
    """Face crop, resize and flow of every frame of `source` into a cache video folder at `out`.

    `source` has len() and `read(positions, grey)` yielding images in position order (dataset
    folders here, recordings in mespot.spot); `meta` (subject, video, source_frames, …) goes into
    meta.json with the face box and timings. `on_frame()` is called after each frame (progress,
    or raising to stop). Whatever stops it leaves no array of the video behind.
    """
    n = len(source)
    t0 = time.perf_counter()
    probe = list(source.read(face_probe(n, settings.face_frames), grey=True))
    height, width = probe[0].shape
    face = detect_face(probe, settings.detector)
    box = crop_box(face, width, height, settings.margin)
    if face is None:
        log.warning("%s/%s: no face found, using the centre crop", meta["subject"], meta["video"])
    t_face = time.perf_counter() - t0

    flow = make_flow(settings.flow_method, settings.flow_params, settings.flow_device,
                     settings.flow_threads)  # fmt: skip
    shape = (settings.size, settings.size) + ((3,) if settings.colour == "rgb" else ())
    previous: deque[np.ndarray] = deque(maxlen=settings.flow_step)
    pairs: list[tuple[np.ndarray, np.ndarray]] = []  # (frame t - flow_step, frame t) to flow
    aligner = None
    pending = None  # the flow started last: (wait for it, its first frame, its end)
    t_flow = 0.0

    def start_flow(end: int) -> float:
        """Starts the flow of the pairs gathered so far (frames up to `end`) and writes the
        flow started before, which ran meanwhile; the seconds spent here."""
        nonlocal pending
        t1 = time.perf_counter()
        references, frames = (np.stack(side) for side in zip(*pairs, strict=True))
        started = (flow.submit(references, frames), end - len(pairs), end)
        pairs.clear()
        finish_flow()
        pending = started
        return time.perf_counter() - t1

    def finish_flow() -> float:
        """Waits for the flow started last and writes it; the seconds spent waiting."""
        nonlocal pending
        t1 = time.perf_counter()
        if pending is not None:
            result, first, end = pending
            written = writer.flow[first:end]
            written[:] = result()
            _check_finite(written, source, first)
            pending = None
        return time.perf_counter() - t1

    versions = {"mespot": mespot.__version__, "opencv": cv2.__version__, "numpy": np.__version__}
    with flow, cache.VideoWriter(out, n, shape) as writer:  # whatever stops it: no array stays
        for t, image in enumerate(source.read(range(n), grey=settings.colour == "grey")):
            if image.shape[:2] != (height, width):
                raise UserError(
                    f"{source.where(t)}: frame size {image.shape[1]}×{image.shape[0]} differs "
                    f"from the video's {width}×{height}"
                )
            if settings.align == "stabilise":
                full_grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
                aligner = aligner or FaceStabiliser(full_grey, face or box)
                image = aligner(image, full_grey)
            face_crop = crop(image, box, settings.size)
            grey = face_crop if face_crop.ndim == 2 else cv2.cvtColor(face_crop, cv2.COLOR_RGB2GRAY)
            # frame t - flow_step; the first frames, which have none, take frame 0 (zero flow)
            pairs.append((previous[0] if previous else grey, grey))
            if len(pairs) == flow.batch:
                t_flow += start_flow(t + 1)
            writer.frames[t] = face_crop
            previous.append(grey)
            if on_frame is not None:
                on_frame()
        if pairs:
            t_flow += start_flow(n)
        t_flow += finish_flow()
        meta = {
            **meta,
            "frame_size": [width, height],
            "face": {"found": face is not None, "detected": face, "crop": list(box)},
            "seconds": {"face": t_face, "flow": t_flow, "total": time.perf_counter() - t0},
            "flow_threads": flow.threads,
            "versions": versions,
        }
        writer.commit(meta)
    return meta


def _check_finite(flow: np.ndarray, source, first: int) -> None:
    """NaN or inf in the flow would reach every loss and score that reads it: the video fails,
    naming the first frame whose flow holds one."""
    finite = np.isfinite(flow).reshape(len(flow), -1).all(axis=1)
    if not finite.all():
        where = source.where(first + int(np.argmin(finite)))
        raise UserError(f"the optical flow of {where} holds NaN or inf; the video is not cached")


def face_probe(n_frames: int, count: int) -> list[int]:
    """Frames searched for the face: spread over the first two hundred, so a bad first frame or
    two cannot decide the box."""
    return sorted(set(np.linspace(0, min(n_frames, 200) - 1, min(count, n_frames)).astype(int)))


def _path_for_each(frames: FrameList, kept: list[int]) -> list[Path]:
    """The file of each kept frame number; a missing number takes the previous frame's file."""
    by_number = dict(zip(frames.numbers, frames.paths, strict=True))
    paths, last = [], None
    for number in range(frames.first, frames.last + 1):
        last = by_number.get(number, last)
        paths.append(last)
    return [paths[n - frames.first] for n in kept]


def _read(path: Path, grey: bool) -> np.ndarray:
    if _truncated_jpeg(path):
        raise UserError(f"frame {path} is truncated (a JPEG without its end marker FF D9)")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise UserError(f"cannot read frame {path} (missing, unreadable or corrupt image)")
    return from_bgr(image, grey)


def _truncated_jpeg(path: Path) -> bool:
    """A JPEG file that stops before its end-of-image marker. libjpeg decodes one with a mere
    warning ("Premature end of JPEG file"), the missing rows grey, and it would be cached as a
    good frame; PNG and BMP decoders fail on a short file instead. Two small reads, so every frame
    is checked: the marker must be in the file's last KiB (entropy-coded data cannot hold it,
    as it stuffs every FF byte), so padding or other data a writer appends after it is left
    alone."""
    try:
        with open(path, "rb") as f:
            if f.read(2) != JPEG_START:
                return False
            size = f.seek(0, os.SEEK_END)
            f.seek(max(size - JPEG_TAIL, 0))
            return JPEG_END not in f.read()
    except OSError:
        return False  # unreadable: cv2.imread says so


def from_bgr(image: np.ndarray, grey: bool) -> np.ndarray:
    """A decoded BGR frame as grey or RGB. Every source (image files, video files) converts the
    same way, so a recording's frames meet the model as the dataset's frames did."""
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY if grey else cv2.COLOR_BGR2RGB)
