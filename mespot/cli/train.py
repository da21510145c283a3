"""mespot-train: one leave-one-subject-out fold (train, pick epoch and threshold on validation
subjects, test the held-out subject)."""

from __future__ import annotations

from pathlib import Path

import hydra
import lightning.pytorch as pl
from omegaconf import DictConfig

from mespot.cli.common import CONFIG_PATH, exit_on_user_error, preprocessing_settings
from mespot.data import cache
from mespot.data.datamodule import SpottingDataModule
from mespot.errors import UserError

FOLD_KEYS = ("test_subject", "val_subjects", "window", "stride", "use_flow", "batch_size",
             "num_workers", "positive_fraction", "augment")  # fmt: skip


def cache_folder_of(cfg: DictConfig):
    """The cache that `mespot-preprocess` filled for this dataset and these settings."""
    settings = preprocessing_settings(cfg.preprocessing)
    key = settings.key(cfg.data.name, Path(cfg.data.root))
    folder = cache.cache_folder(cfg.paths.cache_dir, cfg.data.name, key)
    if not (folder / "intervals.csv").is_file():
        raise UserError(
            f"no cache for these settings at {folder}: run mespot-preprocess "
            f"data={cfg.data.name} data.root={cfg.data.root} (with the same preprocessing "
            "settings) first"
        )
    return folder


def _instantiate_all(group: DictConfig | None) -> list:
    """Every entry of a callbacks/logger group; an entry set to null is switched off."""
    return [hydra.utils.instantiate(c) for c in (group or {}).values() if c is not None]


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> dict:
    folder = cache_folder_of(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = SpottingDataModule(
        str(folder), **{k: cfg.data[k] for k in FOLD_KEYS}, seed=cfg.seed
    )
    datamodule.setup()
    model = hydra.utils.instantiate(cfg.model, in_chans=datamodule.in_channels, _convert_="all")
    callbacks, loggers = _instantiate_all(cfg.get("callbacks")), _instantiate_all(cfg.get("logger"))
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    trainer.fit(model, datamodule, ckpt_path=cfg.ckpt_path)
    if cfg.test:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        trainer.test(model, datamodule, ckpt_path=best or None)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


if __name__ == "__main__":
    main()
