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
