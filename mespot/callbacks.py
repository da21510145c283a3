"""Lightning callbacks of mespot-train."""

from __future__ import annotations

import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from mespot.errors import UserError
from mespot.files import atomic_write_json


class BestCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that keeps the best epoch from `first_epoch` on.

    With `model.backbone_warmup=N` (mespot/warmup.py) the first N epochs train the motion-energy
    part alone; the epoch kept must be one of the whole model's, or the backbone a run reports
    on may never have been used.
    """

    def __init__(self, first_epoch: int = 0, **kwargs):
        # At validation's end, as last.ckpt (conf/callbacks/default.yaml, listed after this):
        # Lightning would otherwise keep the epoch at the training epoch's end, after last.ckpt
        # was written, and a run resumed from it would not know the epoch just kept.
        super().__init__(save_on_train_epoch_end=False, **kwargs)
        self.first_epoch = first_epoch

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # otherwise no epoch is kept and the test would silently use the last one
        if 0 <= trainer.max_epochs <= self.first_epoch:
            raise UserError(
                f"callbacks.model_checkpoint.first_epoch={self.first_epoch} (model.backbone_warmup)"
                f" leaves none of trainer.max_epochs={trainer.max_epochs} to keep: train longer, "
                "or set callbacks.model_checkpoint.first_epoch=0 to keep a warm-up epoch"
            )
        super().on_fit_start(trainer, pl_module)

    def load_state_dict(self, state_dict: dict) -> None:
        """The best epoch so far, its score and file, as the interrupted run left them: a
        resumed run that forgot them would keep a worse epoch. A resumed run goes on in its own
        run folder (mespot/resume.py), so a checkpoint folder whose path changed was moved or
        renamed: its files are where they were within it. (Lightning keeps only the best file's
        old path then, and forgets its score.)"""
        old = state_dict.get("dirpath")
        if old and self.dirpath and old != self.dirpath:
            state_dict = _moved(state_dict, old, self.dirpath)
        super().load_state_dict(state_dict)

    def _should_skip_saving_checkpoint(self, trainer: pl.Trainer) -> bool:
        # the one test both of ModelCheckpoint's saving hooks (train epoch / validation end) ask
        early = trainer.current_epoch < self.first_epoch
        return early or super()._should_skip_saving_checkpoint(trainer)


def _moved(state: dict, old: str, new: str) -> dict:
    """A ModelCheckpoint state whose files under `old` are now under `new`."""

    def move(path):
        if not path or not Path(path).is_relative_to(old):
            return path
        return str(Path(new) / Path(path).relative_to(old))

    paths = ("best_model_path", "kth_best_model_path", "last_model_path")
    kept = {move(p): score for p, score in state.get("best_k_models", {}).items()}
    return {**state, **{key: move(state.get(key)) for key in paths}, "dirpath": new,
            "best_k_models": kept}  # fmt: skip


class ValidateFrom(pl.Callback):
    """Validate only from `first_epoch` on: the epochs before it can never be kept (BestCheckpoint),
    and each validation picks its own thresholds, so validating them changes nothing but the
    logged curves, and costs time (a quarter of a benchmark fold). Those epochs write no
    last.ckpt either (it is saved after validation), so a run stopped in them resumes from its
    start.
    """

    def __init__(self, first_epoch: int = 0):
        self.first_epoch = first_epoch
        self.every = 1

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.every = trainer.check_val_every_n_epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every is None:  # validation every N batches, not per epoch: left as it is
            return
        epoch = trainer.current_epoch
        # Lightning validates after epoch e when (e + 1) % check_val_every_n_epoch == 0
        trainer.check_val_every_n_epoch = self.every if epoch >= self.first_epoch else epoch + 2


class Throughput(pl.Callback):
    """How fast a fold trains and evaluates, and whether the device waits for data: written to
    `throughput.json` in the run folder after fitting and again after testing.

    Training time splits into waiting (from the end of one step to the start of the next: the
    loader's batch and its transfer) and stepping (forward, loss, backward, optimiser; on a GPU
    synchronised at the step's end, so queued work counts where it runs). Each epoch's wall
    clock (its validation included) is kept too: the first carries one-off costs (loader
    workers starting, cuDNN trying its algorithms per input shape), so a steady rate comes from
    the later ones. frames = windows × window. Peak memory is this process's CUDA allocator's
    high-water mark (allocated, and reserved: its real footprint). Switch it on with
    `+callbacks.throughput._target_=mespot.callbacks.Throughput`.
    """

    def __init__(self, filename: str = "throughput.json"):
        self.filename = filename
        self.stats = {split: {"frames": 0, "seconds": 0.0, "batches": 0}
                      for split in ("train", "val", "test")}  # fmt: skip
        self.stats["train"]["wait_seconds"] = 0.0
        self.epoch_seconds: list[float] = []
        self.device = torch.device("cpu")
        self._mark = self._epoch_start = 0.0

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _step(self, split: str, batch: dict) -> None:
        """One batch of `split` ends: its frames, and the time since the last mark."""
        now = self._now()
        stats = self.stats[split]
        stats["frames"] += int(batch["x"].shape[0] * batch["x"].shape[1])
        stats["seconds"] += now - self._mark
        stats["batches"] += 1
        self._mark = now

    def _start(self, pl_module) -> None:
        self.device = pl_module.device  # while the model is on it (Lightning moves it off after)
        self._mark = self._now()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start(pl_module)
        self._epoch_start = self._mark

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = self._now()
        self.stats["train"]["wait_seconds"] += now - self._mark
        self._mark = now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._step("train", batch)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.epoch_seconds.append(self._now() - self._epoch_start)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._start(pl_module)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx,
                                dataloader_idx=0) -> None:  # fmt: skip
        if not trainer.sanity_checking:
            self._step("val", batch)

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._start(pl_module)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx,
                          dataloader_idx=0) -> None:  # fmt: skip
        self._step("test", batch)

    def on_fit_end(self, trainer, pl_module) -> None:
        self._write(trainer)

    def on_test_end(self, trainer, pl_module) -> None:
        self._write(trainer)

    def summary(self) -> dict:
        """Frames/s per split, the training's waiting share, each epoch's seconds, the peak
        memory."""
        out: dict = {}
        for split, stats in self.stats.items():
            rate = stats["frames"] / stats["seconds"] if stats["seconds"] > 0 else None
            out[split] = {**stats, "frames_per_s": rate}
        train = self.stats["train"]
        busy = train["seconds"] + train["wait_seconds"]
        out["train"]["wait_share"] = train["wait_seconds"] / busy if busy > 0 else None
        out["epoch_seconds"] = self.epoch_seconds
        out["device"] = str(self.device)
        cuda = self.device.type == "cuda"
        out["peak_gpu_memory_mb"] = (
            torch.cuda.max_memory_allocated(self.device) / 2**20 if cuda else None
        )
        out["peak_gpu_reserved_mb"] = (
            torch.cuda.max_memory_reserved(self.device) / 2**20 if cuda else None
        )
        return out

    def _write(self, trainer) -> None:
        if trainer.is_global_zero:
            atomic_write_json(Path(trainer.default_root_dir) / self.filename, self.summary())
