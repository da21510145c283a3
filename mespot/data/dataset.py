"""Windows of `window` frames, `stride` apart, over cached videos: each item a window's parts as
the cache holds them, with its ground truth in window coordinates."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from mespot.data import cache
from mespot.data.augment import Draw, WindowAugment
from mespot.data.inputs import InputSpec, stack_parts
from mespot.data.rest import RestFace
from mespot.data.videos import VideoInfo
from mespot.data.windows import clip_to_window, window_starts
from mespot.errors import UserError


class WindowDataset(Dataset):
    """The windows of some videos, read for the channels `inputs` lists (mespot/data/inputs.py:
    the frames, the earlier frames each difference subtracts, the distance from the face at rest,
    the flow); `InputSpec.assemble` makes a batch of them the model's channels where the model
    runs. With `augment` (training), each read draws the window's shift, mirror and light."""

    def __init__(self, videos: list[VideoInfo], window: int, stride: int,
                 inputs: InputSpec | None = None,
                 augment: WindowAugment | None = None):  # fmt: skip
        self.videos, self.window, self.stride = videos, window, stride
        self.inputs, self.augment = inputs or InputSpec(), augment
        self.items = [
            (v, start) for v, info in enumerate(videos)
            for start in window_starts(info.n_frames, window, stride)
        ]  # fmt: skip
        self._open: dict[int, cache.CachedVideo] = {}
        self._rest: dict[int, RestFace] = {}

    def __len__(self) -> int:
        return len(self.items)

    def colours(self) -> int:
        """1 for grey frames, 3 for RGB, as the cache holds them."""
        return 3 if self._video(0).frames.ndim == 4 else 1

    def has_expression(self) -> np.ndarray:
        """For balancing: does each window hold (part of) an expression?"""
        return np.array([len(self._targets(v, s)[0]) > 0 for v, s in self.items])

    def _targets(self, v: int, start: int):
        info = self.videos[v]
        return clip_to_window(info.segments, info.labels, start, self.window)

    def _video(self, v: int) -> cache.CachedVideo:
        if v not in self._open:  # one set of memory maps per worker process
            self._open[v] = cache.load_video(self.videos[v].folder)
        return self._open[v]

    def __getitem__(self, index: int) -> dict:
        """One window's parts as the cache holds them (uint8 frames, float16 flow), padded to
        `window` frames past a short video's end, with the augmentation drawn for it."""
        v, start = self.items[index]
        n_frames = self.videos[v].n_frames
        draw = self.augment.draw(start, n_frames, self.window) if self.augment else Draw(start)
        start = draw.start
        positions = np.arange(start, min(start + self.window, n_frames))
        parts = self._parts(v, positions)
        segments, labels = self._targets(v, start)
        return {
            **{k: torch.from_numpy(self._padded(a, k == "earlier")) for k, a in parts.items()},
            "mirror": draw.mirror,
            "gain": draw.gain,
            "segments": torch.from_numpy(segments),
            "labels": torch.from_numpy(labels).long(),
            "video": v,
            "start": start,
            "valid": len(positions),
        }

    def _parts(self, v: int, positions: np.ndarray) -> dict[str, np.ndarray]:
        """The arrays the inputs need for the frames at `positions` of video `v`."""
        video, inputs = self._video(v), self.inputs
        shown = np.asarray(video.frames[positions])  # read once: the frame, and its distance
        parts = {"frames": shown}
        if inputs.frame_diffs:  # frame 0 stands in before the video's start
            parts["earlier"] = np.stack([np.asarray(video.frames[np.maximum(positions - step, 0)])
                                         for step in inputs.frame_diffs])  # fmt: skip
        if inputs.rest_span:
            parts["rest"] = self._rest_face(v).distance(shown, positions)
        if inputs.use_flow:
            parts["flow"] = np.asarray(video.flow[positions])
            if not np.isfinite(parts["flow"]).all():
                folder = self.videos[v].folder
                raise UserError(
                    f"{folder / 'flow.npy'}: NaN or inf in the flow of frames {positions[0]}-"
                    f"{positions[-1]}: the cache is damaged; delete {folder} and run "
                    "mespot-preprocess again"
                )
        return parts

    def _padded(self, frames: np.ndarray, stacked: bool = False) -> np.ndarray:
        """`frames` (on axis 1 when `stacked`) padded with zeros to `window` frames (what stands
        past a video's end is replaced when the window is assembled)."""
        axis = 1 if stacked else 0
        missing = self.window - frames.shape[axis]
        if missing == 0:
            return np.ascontiguousarray(frames)
        pad = [(0, 0)] * frames.ndim
        pad[axis] = (0, missing)
        return np.pad(frames, pad)

    def _rest_face(self, v: int) -> RestFace:
        if v not in self._rest:  # once per video (and worker process)
            self._rest[v] = RestFace(self._video(v).frames, self.inputs.rest_span)
        return self._rest[v]


def collate(items: list[dict]) -> dict:
    return {
        **stack_parts(items),
        "segments": [i["segments"] for i in items],
        "labels": [i["labels"] for i in items],
        "video": torch.tensor([i["video"] for i in items]),
        "start": torch.tensor([i["start"] for i in items]),
        "valid": torch.tensor([i["valid"] for i in items]),
    }
