"""Lightning callbacks of mespot-train."""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint


class BestCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that keeps the best epoch from `first_epoch` on.

    Why: with `model.backbone_warmup=N` the first N epochs train the motion-energy part alone;
    the epoch kept must be one of the whole model's, or the backbone a run reports on may never
    have been used (experiments/bench/accuracy_log.md, seventh round).
    """

    def __init__(self, first_epoch: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.first_epoch = first_epoch

    def _should_skip_saving_checkpoint(self, trainer: pl.Trainer) -> bool:
        # the one test both of ModelCheckpoint's saving hooks (train epoch / validation end) ask
        early = trainer.current_epoch < self.first_epoch
        return early or super()._should_skip_saving_checkpoint(trainer)
