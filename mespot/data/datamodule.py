"""The LightningDataModule of one LOSO fold: windows of cached frames ⊕ flow, with ground truth.

`test_subject` is held out; validation subjects are drawn (seeded) from the others, so epochs
and thresholds are chosen without ever looking at the test subject. Videos are memory-mapped:
RAM does not grow with the dataset.
"""

from __future__ import annotations

import inspect
import logging
import multiprocessing
import random
from collections.abc import Mapping, Sequence

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from torch import Tensor
from torch.utils.data import DataLoader, WeightedRandomSampler

from mespot.data.augment import WindowAugment
from mespot.data.dataset import WindowDataset, collate
from mespot.data.inputs import PARTS, InputSpec
from mespot.data.videos import VideoInfo, refuse_unfinished, scan_cache
from mespot.errors import UserError

log = logging.getLogger(__name__)


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


def input_settings(data) -> dict:
    """How a `data` config cuts and feeds windows. Checkpoints store it, so that mespot-spot
    feeds a recording to the model exactly as training fed the dataset."""
    return {"window": int(data.window), "stride": int(data.stride),
            **InputSpec.of(data).record(), "trained_on": str(data.name)}  # fmt: skip


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

    @classmethod
    def from_config(cls, cache_folder, data: Mapping, seed: int = 0) -> SpottingDataModule:
        """The fold that a `data` config (plain values) describes on `cache_folder`: the settings
        this constructor takes; the rest (name, root, the dataset's files) is for its reader."""
        taken = set(inspect.signature(cls).parameters) - {"cache_folder", "seed"}
        return cls(str(cache_folder), **{k: v for k, v in data.items() if k in taken}, seed=seed)

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
        inputs = InputSpec(1, hp.frame_diffs, hp.rest_span, hp.use_flow)
        augment = WindowAugment(hp.stride, hp.seed) if hp.augment else None
        self.datasets = {
            split: WindowDataset(videos, hp.window, hp.stride, inputs,
                                 augment if split == "train" else None)
            for split, videos in self.videos.items()
        }  # fmt: skip
        colours = self.datasets["train"].colours()
        self.spec = InputSpec(colours, inputs.frame_diffs, inputs.rest_span, inputs.use_flow)
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
        augment = self.datasets["train"].augment
        return {
            "sampler": None if sampler is None else sampler.get_state(),
            "augment": None if augment is None else augment.rng.bit_generator.state,
            "torch": torch.get_rng_state(),
            "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
            "python": random.getstate(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict`'s generators (Lightning calls this before it asks for the
        training loader; the sampler's state waits for it)."""
        self._restored_sampler = state["sampler"]
        if state["augment"] is not None:
            self.datasets["train"].augment.rng.bit_generator.state = state["augment"]
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
    if info.dataset.augment is not None:
        info.dataset.augment.rng = np.random.default_rng(info.seed)
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
