"""Spot expressions in one recording — a video file or a folder of frames — with a checkpoint.

The recording goes through the preprocessing the checkpoint was trained with (face crop, size,
frame rate, flow method and step, all stored in the checkpoint) into a cache folder inside the
output folder, then through the spotter window by window, and the same post-processing and
frozen validation threshold as the test folds. Frame numbers are the recording's own: 0-based
for a video file, the file numbers for a folder of frames.

Spotting is only as good as the face in the crop, so the face is watched all along (with the
checkpoint's face detector; `data.face.FaceWatch`): a recording without a face in its first
frames is refused, and frames where the face is gone (turned away, covered, out of the frame or
the crop) are reported as face-missing spans, where nothing is spotted. An interval that touches
such a span is dropped rather than clipped: its scores come from windows that saw the face go or
come back, the largest motion in the recording, so what is left of it after clipping is most
likely that motion, not an expression. A checkpoint trained with `face.detector=none` (faces
cropped beforehand) has no detector to watch with: every frame is taken to show the face.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from rich.progress import Progress
from torch.utils.data import DataLoader

from mespot.data import cache
from mespot.data.dataset import WindowDataset, collate
from mespot.data.face import FaceCheck, FaceWatch, crop_box, detect_face
from mespot.data.frames import FrameList, list_frames
from mespot.data.preprocess import (
    FolderFrames,
    Settings,
    encode_video,
    face_probe,
    from_bgr,
    kept_frames,
    progress_columns,
)
from mespot.data.videos import VideoInfo
from mespot.errors import UserError
from mespot.files import atomic_write_json
from mespot.module import SpotterModule, load_spotter
from mespot.parallel import available_cores
from mespot.postprocess import apply_threshold, postprocess_video, to_source_frames

log = logging.getLogger(__name__)

FRAME_PATTERN = r"\D*?(\d+)\.\w+"  # the last run of digits before the suffix: img0042.jpg → 42
COLUMNS = ["onset", "offset", "onset_s", "offset_s", "duration_s", "type", "score"]


class VideoFileFrames:
    """The kept frames of a video file, decoded in order (seeking is unreliable in many codecs)."""

    def __init__(self, path: Path, kept: list[int]):
        self.path, self.kept = path, kept

    def __len__(self) -> int:
        return len(self.kept)

    def read(self, positions, grey: bool):
        wanted = [self.kept[p] for p in positions]
        capture = cv2.VideoCapture(str(self.path))
        try:
            index, i = 0, 0
            while i < len(wanted):
                ok, frame = capture.read()
                if not ok:
                    raise UserError(f"{self.path}: cannot decode frame {index}")
                while i < len(wanted) and wanted[i] == index:
                    yield from_bgr(frame, grey)
                    i += 1
                index += 1
        finally:
            capture.release()

    def where(self, position: int) -> str:
        return f"{self.path} frame {self.kept[position]}"


@dataclass
class Recording:
    """What is known of a recording before any frame is processed."""

    path: Path
    numbers: list[int]  # its frame numbers, in order
    fps: float
    folder_frames: FrameList | None  # None for a video file

    def source(self, kept: list[int]):
        if self.folder_frames is not None:
            return FolderFrames(self.folder_frames, kept)
        return VideoFileFrames(self.path, kept)


def open_recording(path: str | Path, fps: float | None = None) -> Recording:
    """A video file (its own frame rate unless `fps` is given) or a folder of numbered frames
    (`fps` required: image files carry none)."""
    path = Path(path)
    if path.is_dir():
        frames = list_frames(path, FRAME_PATTERN)
        if not frames.numbers:
            raise UserError(f"video={path}: no numbered image files (e.g. img0001.jpg) inside")
        if not fps:
            raise UserError(f"video={path}: a folder of frames has no frame rate; add fps=…")
        return Recording(path, list(range(frames.first, frames.last + 1)), float(fps), frames)
    if not path.is_file():
        raise UserError(f"video={path}: no such file or folder")
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise UserError(f"video={path}: cannot open it as a video (unknown format or corrupt)")
        rate = fps or capture.get(cv2.CAP_PROP_FPS)
        count = 0
        while capture.grab():  # the header's frame count is often wrong: count what decodes
            count += 1
    finally:
        capture.release()
    if count == 0:
        raise UserError(f"video={path}: no frame could be decoded (corrupt or unsupported codec)")
    if not rate or rate <= 0:
        raise UserError(f"video={path}: the file states no frame rate; add fps=…")
    return Recording(path, list(range(count)), float(rate), None)


def kept_of(recording: Recording, settings: Settings) -> list[int]:
    """The recording's frame numbers that preprocessing keeps (all, or those of a lower rate)."""
    numbers = FrameList(tuple(recording.numbers), ())
    return kept_frames(numbers, recording.fps, settings.fps)


def cached_rate(recording: Recording, settings: Settings) -> float:
    """The frame rate of the cached frames: the checkpoint's when it resamples to a lower one."""
    return settings.fps if settings.fps and settings.fps < recording.fps else recording.fps


def check_length(recording: Recording, kept: list[int], needed: int) -> None:
    """Refuses a recording with fewer kept frames than `needed`, before anything is computed."""
    if len(kept) >= needed:
        return
    frames = f"{len(recording.numbers)} frame(s)"
    if len(kept) < len(recording.numbers):
        frames += f", {len(kept)} kept at the checkpoint's frame rate"
    raise UserError(f"video={recording.path}: {frames}, too short to spot: this checkpoint "
                    f"needs at least {needed} frames")  # fmt: skip


def face_every(seconds, fps: float) -> int:
    """Frames between two face checks: `seconds` at the cached frame rate, at least one."""
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        value = math.nan
    if not 0 <= value < math.inf:
        raise UserError(f"face_check_every={seconds}: give seconds (0: check every frame)")
    return max(1, round(value * fps))


def _fingerprint(recording: Recording, settings: Settings, every: int) -> str:
    """What decides the cached arrays and face spans: the recording (path, size, mtime), its
    rate, the settings (not the flow's thread count: it changes no array) and how often the face
    is checked."""
    stat = recording.path.stat()
    arrays = repr(replace(settings, flow_threads=1))
    text = json.dumps([str(recording.path.resolve()), stat.st_size, stat.st_mtime_ns,
                       recording.fps, arrays, every, cv2.__version__])  # fmt: skip
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class WatchedFrames:
    """A recording's frames, passed to preprocessing unchanged, shown to a FaceWatch on the way:
    the face is checked as the frames are decoded anyway, not in a second pass."""

    def __init__(self, source, watch: FaceWatch):
        self.source, self.watch = source, watch

    def __len__(self) -> int:
        return len(self.source)

    def read(self, positions, grey: bool):
        positions = list(positions)
        for position, image in zip(positions, self.source.read(positions, grey), strict=True):
            self.watch.see(position, image)
            yield image

    def where(self, position: int) -> str:
        return self.source.where(position)


def face_watch(
    recording: Recording, kept: list[int], source, settings: Settings, every: int
) -> FaceWatch | None:
    """A watch over the face that preprocessing will crop (the same probe frames, the same
    detector, so the same box); None when the checkpoint has no detector. No face in the
    probe frames: refused, since the crop would show no face."""
    if settings.detector == "none":
        return None
    probe = face_probe(len(source), settings.face_frames)
    frames = list(source.read(probe, grey=True))
    face = detect_face(frames, settings.detector)
    if face is None:
        raise UserError(f"video={recording.path}: no face found in frames {kept[0]}-"
                        f"{kept[probe[-1]]} (face.detector={settings.detector}, as the checkpoint "
                        "was trained), where mespot-spot finds the face to crop: start the "
                        "recording with the face in view")  # fmt: skip
    height, width = frames[0].shape
    box = crop_box(face, width, height, settings.margin)
    return FaceWatch(FaceCheck(face, box, (width, height)), every)


def preprocess_recording(
    recording: Recording,
    kept: list[int],
    settings: Settings,
    folder: Path,
    progress: Progress,
    every: int,
) -> tuple[VideoInfo, list[list[int]] | None]:
    """The recording's cache video in `folder`, made with the checkpoint's settings, and the
    [first, last] positions of each span without the face (None: no face check); both reused
    when the recording and the settings are unchanged."""
    key = _fingerprint(recording, settings, every)
    meta_path, faces_path = folder / "meta.json", folder / "faces.json"
    if not (cache.is_done(folder) and faces_path.is_file()
            and json.loads(meta_path.read_text()).get("key") == key
            and json.loads(faces_path.read_text()).get("key") == key):  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)
        meta = {
            "subject": "recording",
            "video": recording.path.stem,
            "source_frames": kept,
            "source_fps": recording.fps,
            "key": key,
            "fps": cached_rate(recording, settings),
        }
        source = recording.source(kept)
        watch = face_watch(recording, kept, source, settings, every)
        if watch is not None:
            source = WatchedFrames(source, watch)
        task = progress.add_task("preprocessing", total=len(kept), unit="frames")
        encode_video(source, settings, folder, meta, on_frame=lambda: progress.advance(task))
        missing = None if watch is None else [list(span) for span in watch.missing()]
        atomic_write_json(faces_path, {"key": key, "every": every, "missing": missing})
    info = VideoInfo("recording", recording.path.stem, folder, len(kept), recording.fps, kept,
                     np.zeros((0, 2)), np.zeros(0, dtype=int), pd.DataFrame())  # fmt: skip
    return info, json.loads(faces_path.read_text())["missing"]


@torch.no_grad()
def run_windows(
    model: SpotterModule, info: VideoInfo, batch_size: int, progress: Progress
) -> tuple[list, np.ndarray]:
    """Every window's decoded outputs, and the per-frame MaE/ME scores (the best of the points
    of every pyramid level covering the frame), over the cached frames."""
    inputs = model.hparams.inputs
    dataset = WindowDataset([info], inputs["window"], inputs["stride"], model.spec)
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate)
    device = next(model.parameters()).device
    task = progress.add_task("spotting", total=len(dataset), unit="windows")
    outputs, frame_scores = [], np.zeros((info.n_frames, 2), dtype=np.float32)
    model.spotter.encoder.remember()  # each frame encoded once, not once per window holding it
    try:
        for batch in loader:
            _spot_batch(model, batch, device, outputs, frame_scores)
            progress.advance(task, len(batch["start"]))
    finally:
        model.spotter.encoder.forget()
    return outputs, frame_scores


def _spot_batch(model, batch: dict, device, outputs: list, frame_scores: np.ndarray) -> None:
    """One batch of windows: their decoded outputs appended, their per-frame scores spread."""
    parts = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    x = model.spec.assemble(parts)
    logits, offsets, points, decoded = model.spot_windows({**batch, "x": x})
    probs = logits.sigmoid().cpu().numpy()
    first = ((points[:, 0] + 0.5) - points[:, 1] / 2).round().long().cpu().numpy()
    strides = points[:, 1].long().cpu().numpy()
    for b, start in enumerate(batch["start"].tolist()):
        segments, scores, labels = decoded[b]
        outputs.append((start, segments.cpu(), scores.cpu(), labels.cpu()))
        _spread(frame_scores, start, int(batch["valid"][b]), first, strides, probs[b])


def _spread(frame_scores, start, valid, first, strides, probs) -> None:
    """Per-frame maximum of the point scores over the frames each point summarises."""
    for offset in np.unique(strides):
        level = strides == offset
        for k in range(offset):
            frames = first[level] + k
            inside = frames < valid
            target = start + frames[inside]
            np.maximum.at(frame_scores, target, probs[level][inside])


def spot(
    video: str | Path,
    ckpt: str | Path,
    out: str | Path,
    *,
    fps: float | None = None,
    batch_size: int = 4,
    progress: bool = True,
    device: str = "auto",
    face_check_every: float = 0.25,
) -> SpotResult:
    """Spot every expression in a recording; writes nothing but the cache folder in `out`.
    The model runs on `device` (auto: a CUDA GPU when torch sees one, else the CPU); the face
    is checked every `face_check_every` seconds (and to the frame where it goes or comes back).
    """
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise UserError(f"batch_size={batch_size}: give a whole number of windows, at least 1")
    if fps is not None and not fps > 0:
        raise UserError(f"fps={fps}: give a positive frame rate, or none for the file's own")
    where = _device(device)
    model = load_spotter(ckpt).to(where)
    # the recording's flow runs where the model does (tvl1_torch), wherever training ran it,
    # or on every core (OpenCV's methods)
    settings = replace(Settings(**model.hparams.preprocessing), flow_device=where.type,
                       flow_threads=available_cores())  # fmt: skip
    recording = open_recording(video, fps)
    kept = kept_of(recording, settings)
    check_length(recording, kept, model.spec.frames_needed(settings.flow_step))
    every = face_every(face_check_every, cached_rate(recording, settings))
    if settings.detector == "none":
        log.info(
            "%s: no face check: the checkpoint was trained with face.detector=none (faces "
            "cropped beforehand), so every frame is taken to show the face",
            recording.path,
        )
    with Progress(*progress_columns(), disable=not progress) as bar:
        info, missing = preprocess_recording(recording, kept, settings, Path(out) / "cache", bar,
                                             every)  # fmt: skip
        outputs, frame_scores = run_windows(model, info, batch_size, bar)
    thresholds = model.score_thresholds()
    predictions = postprocess_video("recording", info.video, outputs, info.source_frames,
                                    info.source_fps, **model.postprocess)  # fmt: skip
    predictions = apply_threshold(predictions, thresholds)
    face_missing = to_source_frames(np.array(missing or [], dtype=float).reshape(-1, 2), kept)
    predictions, dropped = drop_faceless(predictions, face_missing)
    checked = None if missing is None else every
    result = SpotResult(recording, info, intervals_table(predictions, recording), frame_scores,
                        thresholds, checked, face_missing, dropped)  # fmt: skip
    if len(face_missing):
        log.warning("%s: %s", recording.path, result.face_summary())
    return result


def drop_faceless(predictions: pd.DataFrame, spans: np.ndarray) -> tuple[pd.DataFrame, int]:
    """The predictions that touch no span without the face, and how many were dropped."""
    onset = predictions["onset"].to_numpy()[:, None]
    offset = predictions["offset"].to_numpy()[:, None]
    touches = ((onset <= spans[:, 1]) & (offset >= spans[:, 0])).any(axis=1)
    return predictions[~touches].reset_index(drop=True), int(touches.sum())


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise UserError(f"device={name!r}; use auto, cpu or cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda, but torch sees no CUDA GPU; use device=auto or cpu")
    return torch.device(name)


def intervals_table(predictions: pd.DataFrame, recording: Recording) -> pd.DataFrame:
    """onset/offset in the recording's frame numbers and in seconds from its first frame."""
    table = pd.DataFrame({"onset": predictions["onset"].astype(int),
                          "offset": predictions["offset"].astype(int)})  # fmt: skip
    first = recording.numbers[0]
    table["onset_s"] = ((table["onset"] - first) / recording.fps).round(3)
    table["offset_s"] = ((table["offset"] - first) / recording.fps).round(3)
    table["duration_s"] = ((table["offset"] - table["onset"] + 1) / recording.fps).round(3)
    table["type"] = predictions["type"].to_numpy()
    table["score"] = predictions["score"].round(4).to_numpy()
    return table.sort_values(["onset", "type"], ignore_index=True)[COLUMNS]


@dataclass
class SpotResult:
    recording: Recording
    info: VideoInfo
    intervals: pd.DataFrame  # COLUMNS
    frame_scores: np.ndarray  # (cached frames, 2): MaE, ME
    thresholds: dict[str, float]  # per type, chosen on the checkpoint's validation subjects
    face_every: int | None  # cached frames between two face checks; None: no face check
    face_missing: np.ndarray  # (spans, 2): first and last frame numbers without the face
    dropped: int  # intervals dropped for touching a face-missing span

    @property
    def face_missing_frames(self) -> int:
        return int((self.face_missing[:, 1] - self.face_missing[:, 0] + 1).sum())

    def face_summary(self) -> str:
        """One line on the frames without the face and what was dropped for them."""
        spans = ", ".join(f"{a}-{b}" for a, b in self.face_missing[:3].tolist())
        more = f" and {len(self.face_missing) - 3} more" if len(self.face_missing) > 3 else ""
        return (f"no face in {self.face_missing_frames} frame(s), {len(self.face_missing)} "
                f"span(s) (frames {spans}{more}): nothing spotted there, {self.dropped} "
                "interval(s) touching them dropped (face_missing in intervals.json)")  # fmt: skip
