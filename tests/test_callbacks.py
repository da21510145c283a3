"""BestCheckpoint: the best epoch from `first_epoch` on, in a real Lightning fit."""

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel

from mespot.callbacks import BestCheckpoint, ValidateFrom
from mespot.errors import UserError


class WorseEveryEpoch(BoringModel):
    """Validation scores fall epoch by epoch: a plain ModelCheckpoint keeps epoch 0."""

    def validation_step(self, batch, batch_idx):
        self.log("val/score", -float(self.current_epoch))


def fit(tmp_path, first_epoch: int, max_epochs: int = 4) -> BestCheckpoint:
    callback = BestCheckpoint(first_epoch=first_epoch, dirpath=tmp_path, monitor="val/score",
                              mode="max", filename="epoch_{epoch:03d}",
                              auto_insert_metric_name=False)  # fmt: skip
    trainer = pl.Trainer(max_epochs=max_epochs, limit_train_batches=2, limit_val_batches=1,
                         logger=False, callbacks=[callback], enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(WorseEveryEpoch())
    return callback


def kept_epoch(tmp_path, first_epoch: int) -> int:
    callback = fit(tmp_path, first_epoch)
    (kept,) = tmp_path.glob("epoch_*.ckpt")
    assert callback.best_model_path == str(kept)
    return torch.load(kept, weights_only=True)["epoch"]


def test_the_epochs_before_first_epoch_are_never_kept(tmp_path):
    assert kept_epoch(tmp_path / "plain", first_epoch=0) == 0
    assert kept_epoch(tmp_path / "warm", first_epoch=2) == 2


def test_a_first_epoch_past_the_run_is_refused_by_name(tmp_path):
    with pytest.raises(UserError, match="first_epoch=4 .* trainer.max_epochs=4"):
        fit(tmp_path, first_epoch=4, max_epochs=4)


class CountsValidations(WorseEveryEpoch):
    def __init__(self):
        super().__init__()
        self.validated = []

    def on_validation_epoch_end(self):
        if not self.trainer.sanity_checking:
            self.validated.append(self.current_epoch)


@pytest.mark.parametrize(("every", "validated"), [(1, [2, 3, 4]), (2, [3])])
def test_validation_starts_at_the_first_epoch_that_can_be_kept(tmp_path, every, validated):
    model = CountsValidations()
    callbacks = [
        ValidateFrom(first_epoch=2),
        BestCheckpoint(first_epoch=2, dirpath=tmp_path, monitor="val/score", mode="max"),
    ]
    trainer = pl.Trainer(max_epochs=5, limit_train_batches=2, limit_val_batches=1, logger=False,
                         callbacks=callbacks, enable_progress_bar=False, enable_model_summary=False,
                         check_val_every_n_epoch=every, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(model)
    assert model.validated == validated
    assert torch.load(callbacks[1].best_model_path, weights_only=True)["epoch"] == validated[0]
