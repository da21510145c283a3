"""Spot expressions in one recording — a video file or a folder of frames — with a checkpoint.

The recording goes through the preprocessing the checkpoint was trained with (face crop, size,
frame rate, flow method and step, all stored in the checkpoint) into a cache folder inside the
output folder, then through the spotter window by window, and the same post-processing and
frozen validation threshold as the test folds. Frame numbers are the recording's own: 0-based
for a video file, the file numbers for a folder of frames.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from rich.progress import Progress
from torch.utils.data import DataLoader

from mespot.checkpoint import load_spotter
from mespot.data import cache
from mespot.data.datamodule import VideoInfo, WindowDataset, collate
from mespot.data.frames import FrameList, list_frames
from mespot.data.preprocess import (
    FolderFrames,
    Settings,
    encode_video,
    from_bgr,
    kept_frames,
    progress_columns,
)
from mespot.errors import UserError
from mespot.models.backbones import frame_keys
from mespot.models.head import decode
from mespot.module import SpotterModule
from mespot.postprocess import apply_threshold, postprocess_video

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


def _fingerprint(recording: Recording, settings: Settings) -> str:
    """What decides the cached arrays: the recording (path, size, mtime), its rate, settings."""
    stat = recording.path.stat()
    text = json.dumps([str(recording.path.resolve()), stat.st_size, stat.st_mtime_ns,
                       recording.fps, repr(settings), cv2.__version__])  # fmt: skip
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def preprocess_recording(
    recording: Recording, settings: Settings, folder: Path, progress: Progress
) -> VideoInfo:
    """The recording's cache video in `folder`, made with the checkpoint's settings; reused when
    the recording and the settings are unchanged."""
    numbers = FrameList(tuple(recording.numbers), ())
    kept = kept_frames(numbers, recording.fps, settings.fps)
    key = _fingerprint(recording, settings)
    meta_path = folder / "meta.json"
    if not (cache.is_done(folder) and json.loads(meta_path.read_text()).get("key") == key):
        shutil.rmtree(folder, ignore_errors=True)
        task = progress.add_task("preprocessing", total=len(kept), unit="frames")
        meta = {"subject": "recording", "video": recording.path.stem, "source_frames": kept,
                "source_fps": recording.fps, "key": key,
                "fps": settings.fps if settings.fps and settings.fps < recording.fps
                else recording.fps}  # fmt: skip
        source = recording.source(kept)
        encode_video(source, settings, folder, meta, on_frame=lambda: progress.advance(task))
    return VideoInfo("recording", recording.path.stem, folder, len(kept), recording.fps, kept,
                     np.zeros((0, 2)), np.zeros(0, dtype=int), pd.DataFrame())  # fmt: skip


@torch.no_grad()
def run_windows(
    model: SpotterModule, info: VideoInfo, batch_size: int, progress: Progress
) -> tuple[list, np.ndarray]:
    """Every window's decoded outputs, and the per-frame MaE/ME scores (the best of the points
    of every pyramid level covering the frame), over the cached frames."""
    inputs = model.hparams.inputs
    dataset = WindowDataset([info], inputs["window"], inputs["stride"], inputs["use_flow"],
                            frame_diffs=inputs.get("frame_diffs", ()),
                            rest_span=inputs.get("rest_span", 0))  # fmt: skip
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate)
    device = next(model.parameters()).device
    task = progress.add_task("spotting", total=len(dataset), unit="windows")
    outputs, frame_scores = [], np.zeros((info.n_frames, 2), dtype=np.float32)
    model.encoder.remember()  # each frame encoded once, not once per window holding it
    try:
        for batch in loader:
            _spot_batch(model, batch, device, outputs, frame_scores)
            progress.advance(task, len(batch["start"]))
    finally:
        model.encoder.forget()
    return outputs, frame_scores


def _spot_batch(model, batch: dict, device, outputs: list, frame_scores: np.ndarray) -> None:
    """One batch of windows: their decoded outputs appended, their per-frame scores spread."""
    parts = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    x = model.spec.assemble(parts)
    logits, offsets, points = model(x, frame_keys(batch["video"], batch["start"], batch["valid"],
                                                  x.shape[1]))  # fmt: skip
    probs = logits.sigmoid().cpu().numpy()
    first = ((points[:, 0] + 0.5) - points[:, 1] / 2).round().long().cpu().numpy()
    strides = points[:, 1].long().cpu().numpy()
    for b, start in enumerate(batch["start"].tolist()):
        segments, scores, labels = decode(points, logits[b], offsets[b], **model.decoding)
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
) -> SpotResult:
    """Spot every expression in a recording; writes nothing but the cache folder in `out`.
    The model runs on `device` (auto: a CUDA GPU when torch sees one, else the CPU)."""
    where = _device(device)
    model = load_spotter(ckpt).to(where)
    # the recording's flow (tvl1_torch) runs where the model does, wherever training ran it
    settings = replace(Settings(**model.hparams.preprocessing), flow_device=where.type)
    recording = open_recording(video, fps)
    with Progress(*progress_columns(), disable=not progress) as bar:
        info = preprocess_recording(recording, settings, Path(out) / "cache", bar)
        outputs, frame_scores = run_windows(model, info, batch_size, bar)
    thresholds = model.score_thresholds()
    predictions = postprocess_video("recording", info.video, outputs, info.source_frames,
                                    info.source_fps, **model.postprocess)  # fmt: skip
    predictions = apply_threshold(predictions, thresholds)
    return SpotResult(recording, info, intervals_table(predictions, recording), frame_scores,
                      thresholds)  # fmt: skip


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
