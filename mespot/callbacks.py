"""Lightning callbacks of mespot-train."""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint

from mespot.errors import UserError


class BestCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that keeps the best epoch from `first_epoch` on.

    Why: with `model.backbone_warmup=N` the first N epochs train the motion-energy part alone;
    the epoch kept must be one of the whole model's, or the backbone a run reports on may never
    have been used (experiments/bench/accuracy_log.md, seventh round).
    """

    def __init__(self, first_epoch: int = 0, **kwargs):
        super().__init__(**kwargs)
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

    def _should_skip_saving_checkpoint(self, trainer: pl.Trainer) -> bool:
        # the one test both of ModelCheckpoint's saving hooks (train epoch / validation end) ask
        early = trainer.current_epoch < self.first_epoch
        return early or super()._should_skip_saving_checkpoint(trainer)


class ValidateFrom(pl.Callback):
    """Validate only from `first_epoch` on: the epochs before it can never be kept (BestCheckpoint),
    and each validation picks its own thresholds, so validating them changes nothing but the
    logged curves, and costs time (a quarter of a benchmark fold: accuracy_log.md, twelfth
    round). Those epochs write no last.ckpt either (it is saved after validation), so a run
    stopped in them resumes from its start.
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
