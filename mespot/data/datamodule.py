"""The LightningDataModule of one LOSO fold: windows of cached frames ⊕ flow, with ground truth.

`test_subject` is held out; validation subjects are drawn (seeded) from the others, so epochs
and thresholds are chosen without ever looking at the test subject. Videos are memory-mapped:
RAM does not grow with the dataset.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from mespot.data import cache
from mespot.data.inputs import PARTS, InputSpec, stack_parts
from mespot.data.rest import RestFace
from mespot.data.windows import clip_to_window, to_cached_indices, window_starts
from mespot.errors import UserError
from mespot.intervals import TYPES

log = logging.getLogger(__name__)


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


def split_subjects(
    subjects: list[str], test_subject: str, val_subjects: int, seed: int
) -> tuple[list[str], list[str]]:
    """(train, validation) subjects of the fold that tests `test_subject`."""
    if test_subject not in subjects:
        known = ", ".join(subjects)
        raise UserError(f"data.test_subject={test_subject!r} is not cached; subjects: {known}")
    rest = sorted(s for s in subjects if s != test_subject)
    if not 0 <= val_subjects < len(rest):
        raise UserError(
            f"data.val_subjects={val_subjects}: the fold has {len(rest)} training subjects; "
            "leave at least one for training"
        )
    val = sorted(np.random.default_rng(seed).choice(rest, val_subjects, replace=False).tolist())
    return [s for s in rest if s not in val], val


class WindowDataset(Dataset):
    """Windows of `window` frames, `stride` apart, over some videos.

    Each item holds a window's parts; `spec.assemble` makes a batch of them the model's
    channels (mespot/data/inputs.py): the frame, then one difference to an earlier frame per
    step of `frame_diffs`, then, with `rest_span`, the frame's distance from the face at rest
    (mespot/data/rest.py: the median frame of the `rest_span` frames around it, each frame's
    brightness taken out), then the flow when `use_flow`. The per-frame backbone sees one frame
    at a time, so it can tell that something moves only from what a frame carries; over a
    stabilised face (face.align=stabilise) a difference shows a micro-expression that one-frame
    flow does not (experiments/bench/accuracy_log.md, fifth round).

    With `augment` (training), each draw also shifts its window by up to half a stride either
    way: the fixed grid alone would show every expression at the same few positions, epoch
    after epoch, and a small dataset would be learned by heart. With `time_scale` (lo, hi) too,
    each draw plays its window at a random speed: a window of `window` frames spans scale ×
    `window` of the video (log-uniform scale in [lo, hi]; frames picked nearest, flow scaled
    with them), so expressions come in more lengths than the few training subjects show and
    the head learns their boundaries from the motion rather than their lengths by heart.
    """

    def __init__(self, videos: list[VideoInfo], window: int, stride: int, use_flow: bool = True,
                 augment: bool = False, seed: int = 0,
                 frame_diffs: Sequence[int] = (), rest_span: int = 0,
                 time_scale: Sequence[float] | None = None):  # fmt: skip
        if int(rest_span) < 0:
            raise UserError(f"data.rest_span={rest_span}: give a number of frames, or 0 for none")
        if any(int(step) < 1 for step in frame_diffs):
            raise UserError(f"data.frame_diffs={list(frame_diffs)}: steps must be at least 1")
        if time_scale is not None and not (
            len(time_scale) == 2 and 0 < float(time_scale[0]) <= float(time_scale[1])
        ):
            raise UserError(
                f"data.time_scale={list(time_scale)}: give [lo, hi] with 0 < lo <= hi "
                "(e.g. [0.8, 1.25]), or null for none"
            )
        self.videos, self.window, self.use_flow, self.augment = videos, window, use_flow, augment
        self.stride, self.frame_diffs = stride, tuple(int(step) for step in frame_diffs)
        self.time_scale = None if time_scale is None else tuple(map(float, time_scale))
        self.rest_span = int(rest_span)
        self.items = [
            (v, start) for v, info in enumerate(videos)
            for start in window_starts(info.n_frames, window, stride)
        ]  # fmt: skip
        self.rng = np.random.default_rng(seed)
        self._open: dict[int, cache.CachedVideo] = {}
        self._rest: dict[int, RestFace] = {}

    def __len__(self) -> int:
        return len(self.items)

    @property
    def spec(self) -> InputSpec:
        """The channels these windows make: grey or RGB as the cache holds the frames."""
        colours = 3 if self._video(0).frames.ndim == 4 else 1
        return InputSpec(colours, self.frame_diffs, self.rest_span, self.use_flow)

    def has_expression(self) -> np.ndarray:
        """For balancing: does each window hold (part of) an expression?"""
        return np.array([len(self._targets(v, s)[0]) > 0 for v, s in self.items])

    def _targets(self, v: int, start: int, scale: float = 1.0):
        info = self.videos[v]
        return clip_to_window(info.segments, info.labels, start, self.window, scale)

    def _video(self, v: int) -> cache.CachedVideo:
        if v not in self._open:  # one set of memory maps per worker process
            self._open[v] = cache.load_video(self.videos[v].folder)
        return self._open[v]

    def __getitem__(self, index: int) -> dict:
        """One window's parts as the cache holds them (uint8 frames, float16 flow), padded to
        `window` frames past a short video's end, with the augmentation drawn for it:
        InputSpec.assemble builds the channels where the model runs."""
        v, start = self.items[index]
        n_frames = self.videos[v].n_frames
        scale = self._scale(n_frames) if self.augment else 1.0
        if self.augment:
            start = self._shift(start, n_frames, _span(self.window, scale))
        video = self._video(v)
        steps = np.arange(self.window)
        positions = _positions(start, steps, scale)
        steps = steps[positions < n_frames]
        positions = positions[: len(steps)]
        shown = np.asarray(video.frames[positions])  # read once: the frame, and its distance
        parts = {"frames": shown}
        if self.frame_diffs:
            parts["earlier"] = np.stack([
                np.asarray(video.frames[np.maximum(_positions(start, steps - step, scale), 0)])
                for step in self.frame_diffs
            ], axis=0)  # fmt: skip
        if self.rest_span:
            parts["rest"] = self._rest_face(v).distance(shown, positions)
        if self.use_flow:  # pixels per frame shown: a faster play moves further per frame
            parts["flow"] = np.asarray(video.flow[positions])
            if not np.isfinite(parts["flow"]).all():
                raise UserError(
                    f"{self.videos[v].folder / 'flow.npy'}: NaN or inf in the flow of frames "
                    f"{positions[0]}-{positions[-1]}: the cache is damaged; delete "
                    f"{self.videos[v].folder} and run mespot-preprocess again"
                )
        segments, labels = self._targets(v, start, scale)
        return {
            **{
                key: torch.from_numpy(self._padded(a, key == "earlier")) for key, a in parts.items()
            },
            "flow_scale": scale,
            "mirror": self.augment and self.rng.random() < 0.5,  # a face seen in a mirror
            "gain": float(self.rng.uniform(0.9, 1.1)) if self.augment else 1.0,  # the light
            "segments": torch.from_numpy(segments),
            "labels": torch.from_numpy(labels).long(),
            "video": v,
            "start": start,
            "valid": len(steps),
        }

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
            self._rest[v] = RestFace(self._video(v).frames, self.rest_span)
        return self._rest[v]

    def _shift(self, start: int, n_frames: int, span: int) -> int:
        """A start up to half a stride away, the `span` frames the window shows still inside
        the video."""
        half = self.stride // 2
        shifted = start + int(self.rng.integers(-half, half + 1))
        return min(max(shifted, 0), max(n_frames - span, 0))

    def _scale(self, n_frames: int) -> float:
        """A playback speed drawn from `time_scale` (1 without it, or when the video is too
        short to show a window at that speed)."""
        if self.time_scale is None:
            return 1.0
        scale = float(np.exp(self.rng.uniform(*np.log(self.time_scale))))
        return scale if _span(self.window, scale) <= n_frames else 1.0


def _positions(start: int, steps: np.ndarray, scale: float) -> np.ndarray:
    """The video frame shown at each window position (nearest frame at this speed)."""
    return start + np.floor(steps * scale + 0.5).astype(np.int64)


def _span(window: int, scale: float) -> int:
    """How many video frames a window shows at this speed."""
    return int(_positions(0, np.array([window - 1]), scale)[0]) + 1


def input_settings(data) -> dict:
    """How a `data` config cuts and feeds windows. Checkpoints store it, so that mespot-spot
    feeds a recording to the model exactly as training fed the dataset."""
    return {
        "window": int(data.window),
        "stride": int(data.stride),
        "use_flow": bool(data.use_flow),
        "frame_diffs": [int(step) for step in data.frame_diffs],
        "rest_span": int(data.rest_span),
        "trained_on": str(data.name),
    }


def collate(items: list[dict]) -> dict:
    return {
        **stack_parts(items),
        "segments": [i["segments"] for i in items],
        "labels": [i["labels"] for i in items],
        "video": torch.tensor([i["video"] for i in items]),
        "start": torch.tensor([i["start"] for i in items]),
        "valid": torch.tensor([i["valid"] for i in items]),
    }


class SpottingDataModule(pl.LightningDataModule):
    """One LOSO fold over a preprocessed cache folder."""

    def __init__(
        self,
        cache_folder: str,
        test_subject: str,
        val_subjects: int = 2,
        window: int = 128,
        stride: int = 64,
        use_flow: bool = True,
        batch_size: int = 8,
        num_workers: int = 0,
        positive_fraction: float | None = 0.5,
        augment: bool = True,
        frame_diffs: Sequence[int] = (),
        rest_span: int = 0,
        time_scale: Sequence[float] | None = None,
        allow_uncached: bool = False,
        seed: int = 0,
    ):
        super().__init__()
        _check_at_least(1, batch_size=batch_size, window=window, stride=stride)
        _check_at_least(0, num_workers=num_workers, val_subjects=val_subjects)
        if not isinstance(allow_uncached, bool):  # a typo such as `flase` must not allow it
            raise UserError(f"data.allow_uncached={allow_uncached}: give true or false")
        if positive_fraction is not None and not 0 <= positive_fraction <= 1:
            raise UserError(
                f"data.positive_fraction={positive_fraction}: give a share from 0 to 1, or null "
                "to draw windows as they come"
            )
        self.save_hyperparameters()
        self.videos: dict[str, list[VideoInfo]] = {}
        self.uncached: dict[str, list[VideoInfo]] = {}  # per split: left out, not cached
        self.sampler_generator: torch.Generator | None = None
        self._restored_sampler: Tensor | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.videos:
            return
        hp = self.hparams
        finished, unfinished = scan_cache(hp.cache_folder)
        if not hp.allow_uncached:
            refuse_unfinished(hp.cache_folder, unfinished, len(finished) + len(unfinished))
        subjects = sorted({v.subject for v in finished + unfinished})
        train, val = split_subjects(subjects, str(hp.test_subject), hp.val_subjects, hp.seed)
        splits = {"train": train, "val": val, "test": [str(hp.test_subject)]}
        for split, names in splits.items():
            self.videos[split] = [v for v in finished if v.subject in names]
            self.uncached[split] = [v for v in unfinished if v.subject in names]
            if names and not self.videos[split]:  # (no validation subjects: none needed)
                raise UserError(
                    f"{hp.cache_folder}: no cached video of the {split} subject(s) "
                    f"{', '.join(names)}: nothing to {_USE[split]}"
                )
        if unfinished:
            log.warning(
                "data.allow_uncached: %d uncached video(s) left out (%s); the test subject's "
                "%d expression(s) among them count as missed",
                len(unfinished), self.skipped()["uncached_videos"],
                self.skipped()["uncached_expressions_missed"],
            )  # fmt: skip
        self.datasets = {
            split: WindowDataset(videos, hp.window, hp.stride, hp.use_flow,
                                 augment=hp.augment and split == "train", seed=hp.seed,
                                 frame_diffs=hp.frame_diffs, rest_span=hp.rest_span,
                                 time_scale=hp.time_scale if split == "train" else None)
            for split, videos in self.videos.items()
        }  # fmt: skip
        # The first training window, read once: an unreadable cache fails here, before a model
        # is built, and the recorded results' augmentation draws begin after this one.
        self.datasets["train"][0]

    def skipped(self) -> dict:
        """What the fold leaves out, for metrics.json: the uncached videos of each split, and
        how many of the test subject's expressions they hold (counted as missed)."""
        return {
            "uncached_videos": {split: [f"{v.subject}/{v.video}" for v in videos]
                                for split, videos in self.uncached.items() if videos},
            "uncached_expressions_missed": sum(len(v.ground_truth) for v in self.uncached["test"]),
        }  # fmt: skip

    @property
    def spec(self) -> InputSpec:
        return self.datasets["train"].spec

    @property
    def in_channels(self) -> int:
        return self.spec.channels

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """The window parts, now on the model's device, become its inputs `x` there."""
        x = self.spec.assemble(batch)
        return {**{k: v for k, v in batch.items() if k not in PARTS}, "x": x}

    def train_dataloader(self) -> DataLoader:
        dataset = self.datasets["train"]
        sampler = None
        if self.hparams.positive_fraction is not None:
            sampler = _balanced_sampler(dataset.has_expression(), self.hparams.positive_fraction,
                                        self.hparams.seed)  # fmt: skip
            self.sampler_generator = sampler.generator
            if self._restored_sampler is not None:
                self.sampler_generator.set_state(self._restored_sampler)
        return self._loader(dataset, sampler=sampler, shuffle=sampler is None)

    def state_dict(self) -> dict:
        """The random state the coming epochs draw from, which a checkpoint (last.ckpt) holds so
        that a resumed run draws what the uninterrupted one would: the balanced sampler's
        generator and the training windows' augmentation generator (seeded once, both run on
        across epochs), and the process's own generators (torch's shuffles windows when
        `positive_fraction` is null). Plain values and tensors: checkpoints load with
        `weights_only=True`. With `num_workers` > 0 the augmentation is drawn in the loader's
        worker processes, whose generators this process cannot read (mespot/resume.py says so
        when such a run resumes)."""
        numpy_state, sampler = np.random.get_state(), self.sampler_generator
        return {
            "sampler": None if sampler is None else sampler.get_state(),
            "augment": self.datasets["train"].rng.bit_generator.state,
            "torch": torch.get_rng_state(),
            "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
            "python": random.getstate(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict`'s generators (Lightning calls this before it asks for the
        training loader; the sampler's state waits for it)."""
        self._restored_sampler = state["sampler"]
        self.datasets["train"].rng.bit_generator.state = state["augment"]
        torch.set_rng_state(state["torch"])
        name, keys, *rest = state["numpy"]
        np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
        random.setstate(state["python"])

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.datasets["val"])

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.datasets["test"])

    def _loader(self, dataset, sampler=None, shuffle: bool = False) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            sampler=sampler,
            shuffle=shuffle,
            num_workers=self.hparams.num_workers,
            collate_fn=collate,
            pin_memory=torch.cuda.is_available(),  # page-locked batches copy to a GPU faster
            persistent_workers=self.hparams.num_workers > 0,
            multiprocessing_context=_worker_start_method() if self.hparams.num_workers else None,
            worker_init_fn=_own_generator if self.hparams.num_workers else None,
        )


def _own_generator(worker_id: int) -> None:
    """Each loader worker draws its windows' augmentation from a generator of its own, seeded
    with torch's seed for that worker (set by the training process's seeded generator): a copy
    of one generator in every worker would draw the same shifts, mirrors and light for the
    windows of batch 0, batch 1, … one per worker. Then Lightning's per-worker seeding."""
    info = torch.utils.data.get_worker_info()
    info.dataset.rng = np.random.default_rng(info.seed)
    pl_worker_init_function(worker_id)


def _check_at_least(least: int, **settings) -> None:
    """Impossible data settings, named before any work."""
    for name, value in settings.items():
        if int(value) != value or value < least:
            raise UserError(f"data.{name}={value}: give a whole number of at least {least}")


_USE = {"train": "train on", "val": "choose the epoch and thresholds on", "test": "test"}


def _worker_start_method() -> str | None:
    """How to start DataLoader workers: the default, except inside a joblib worker (Hydra's joblib
    launcher), whose default start method is loky's, which torch's workers cannot use ('Process'
    object has no attribute 'env'): there, fork (spawn fails too: its children look for loky)."""
    method = multiprocessing.get_start_method(allow_none=True)
    return None if method in (None, *multiprocessing.get_all_start_methods()) else "fork"


def _balanced_sampler(positive: np.ndarray, fraction: float, seed: int) -> WeightedRandomSampler:
    """Draw windows with an expression `fraction` of the time: they are rare in long videos."""
    n_pos = int(positive.sum())
    if n_pos == 0 or n_pos == len(positive):
        weights = np.ones(len(positive))
    else:
        weights = np.where(positive, fraction / n_pos, (1 - fraction) / (len(positive) - n_pos))
    generator = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(weights.tolist(), len(positive), generator=generator)
