"""BaselineModule: the non-learned optical-flow spotter of mespot/models/baseline.py as a
Lightning module (`model=baseline`), scored and thresholded as every spotter is
(mespot/evaluation.py).

The DataModule cuts videos into overlapping windows. With a DataModule attached, each window's
features are computed on the window plus `CONTEXT` horizons of its video on each side, read from
the cache, so they do not depend on where the windows fall, and each window reports only the
peaks of its own middle part (the outer (window − stride) / 2 frames on each side belong to its
neighbours, except at the video's ends). Without one, `spot` works on whatever flow it is given.

No trainable parameters: `fit` runs one short epoch (conf/experiment/baseline.yaml) only so that
the validation loop picks the thresholds and the checkpoint stores them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mespot.data import cache
from mespot.data.inputs import FLOW_CLIP
from mespot.errors import UserError
from mespot.evaluation import IntervalSpotter
from mespot.models.baseline import MAE, ME, WHOLE, Scale, centred, face_box, spot_flow

log = logging.getLogger(__name__)

CONTEXT = 3  # horizons of video read on each side of a window (contrast 2k + peak search k/2)


class BaselineModule(IntervalSpotter):
    """MDMD-style optical-flow spotter without trainable parameters (see the module docstring);
    the knobs are documented in conf/model/baseline.yaml."""

    def __init__(
        self,
        me_seconds: float = 0.4,  # horizon k of the ME scale
        mae_seconds: float = 1.3,  # horizon k of the MaE scale
        me_extent: float = 0.5,  # intervals: peak ± extent · k
        mae_extent: float = 0.75,
        grid: int = 6,  # blocks per side of the face
        top_pixels: float = 1 / 3,  # per block: the top fraction of its main-direction pixels
        top_blocks: float = 1 / 3,  # per frame: the top fraction of the blocks
        me_scale: float = 0.25,  # score = tanh(contrast / scale), px at a 128-px face
        mae_scale: float = 1.0,
        global_motion: str = "median",  # median | none
        face: float | None = None,  # None: each video's detected face box; else centred fraction
        fps: float | None = None,  # None: each video's cached frame rate; else forced
        postprocess: Mapping | None = None,  # iou_threshold, max_per_video, limits (seconds)
        in_chans: int | None = None,  # what mespot-train passes every model: recorded, unused
        preprocessing: Mapping | None = None,
        inputs: Mapping | None = None,  # window, stride, use_flow: the windows' middle parts
        backbone: Mapping | None = None,  # the spotter's, set by shared configs (debug/): unused
        neck: Mapping | None = None,
    ):
        super().__init__(postprocess)
        self.save_hyperparameters(logger=False)  # plain values: loads with weights_only=True
        self.automatic_optimization = False  # nothing to optimise
        if inputs is not None and not inputs.get("use_flow", True):
            raise UserError("model=baseline reads optical flow: set data.use_flow=true")
        if global_motion not in ("median", "none"):
            raise UserError(f"model.global_motion={global_motion!r}: use median or none")
        self._videos: dict[tuple[str, int], tuple] = {}  # (fps, face box, flow) per video

    def scales(self, fps: float) -> list[Scale]:
        """The two horizons at a frame rate."""
        hp = self.hparams
        me, mae = max(1, round(hp.me_seconds * fps)), max(1, round(hp.mae_seconds * fps))
        return [
            Scale(me, ME, hp.me_extent * me, hp.me_scale),
            Scale(mae, MAE, hp.mae_extent * mae, hp.mae_scale),
        ]

    def spot(self, flow: Tensor, fps: float, face: Sequence[float] | None = None,
             keep: tuple[int, int] | None = None) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
        """Flow (T, 2, H, W) of consecutive frames in pixels, at `fps` → (segments, scores,
        labels) in its frame indices. `face`: the face box in the crop (fractions); by default
        model.face's centred square, or the whole crop."""
        hp = self.hparams
        if face is None:
            face = centred(hp.face) if hp.face is not None else WHOLE
        return spot_flow(flow, self.scales(fps), hp.grid, hp.top_pixels, hp.top_blocks,
                         hp.global_motion, face, keep)  # fmt: skip

    def training_step(self, batch: dict, batch_idx: int) -> None:
        return None  # nothing to learn

    def configure_optimizers(self):
        return None

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._collect(batch, self._spot_batch("val", batch))

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._collect(batch, self._spot_batch("test", batch))

    def _spot_batch(self, split: str, batch: dict) -> list[tuple[Tensor, Tensor, Tensor]]:
        x = batch["x"]
        if x.shape[2] < 3:
            raise UserError("model=baseline reads optical flow: set data.use_flow=true")
        return [
            self._spot_window(split, int(batch["video"][b]), int(batch["start"][b]),
                              int(batch["valid"][b]), x[b, :, -2:])  # the flow x, y channels
            for b in range(len(x))
        ]  # fmt: skip

    def _spot_window(self, split: str, video: int, start: int, valid: int, flow: Tensor):
        """One window's detections, in window frame indices."""
        info = self._info(split, video)
        if info is None:  # no DataModule: the window alone
            return self.spot(flow[:valid], float(self.hparams.fps or 30.0))
        fps, face, video_flow = self._video(split, video, info)
        pad = CONTEXT * max(scale.k for scale in self.scales(fps))
        first, last = max(0, start - pad), min(info.n_frames, start + valid + pad)
        context = np.clip(np.asarray(video_flow[first:last], dtype=np.float32), -FLOW_CLIP,
                          FLOW_CLIP)  # as the DataModule reads it  # fmt: skip
        lo, hi = self._keep(start, flow.shape[0], valid, info.n_frames)
        shift = start - first
        segments, scores, labels = self.spot(torch.from_numpy(context).permute(0, 3, 1, 2), fps,
                                             face, (lo + shift, hi + shift))  # fmt: skip
        return segments - shift, scores, labels

    def _keep(self, start: int, window: int, valid: int, n_frames: int) -> tuple[int, int]:
        """The frames of a window whose peaks it reports: all but the outer (window − stride) / 2
        on each side, which its neighbours report, except at the video's ends. With the
        default stride of half a window the windows tile the video; the last one (flush with the
        video's end) repeats some of its neighbour's peaks, identically, and NMS keeps one."""
        stride = (self.hparams.inputs or {}).get("stride", window)
        margin = max(0, (window - stride) // 2)
        lo = 0 if start == 0 else margin
        hi = valid if start + window >= n_frames else window - margin
        return lo, hi

    def _info(self, split: str, video: int):
        """The DataModule's VideoInfo of a window's video; None without a DataModule."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer else None
        infos = (getattr(datamodule, "videos", None) or {}).get(split) or []
        return infos[video] if video < len(infos) else None

    def _video(self, split: str, video: int, info) -> tuple:
        """(frame rate, face box, memory-mapped flow) of a cached video. The rate is meta.json's
        "fps" (the cached rate: frames may have been resampled) unless model.fps forces one, 30
        when neither is known; the face box is the detected one unless model.face is set."""
        if (split, video) not in self._videos:
            cached = cache.load_video(Path(info.folder))
            fps = self.hparams.fps or cached.meta.get("fps")
            if fps is None:
                log.warning("%s: no frame rate in the cache; assuming 30 fps (set model.fps)",
                            info.video)  # fmt: skip
                fps = 30.0
            face = self.hparams.face
            face = centred(face) if face is not None else face_box(cached.meta)
            self._videos[split, video] = (float(fps), face, cached.flow)
        return self._videos[split, video]
