"""Learning works: the spotter overfits a tiny mock's training videos (CPU, about a minute)."""

import functools

import lightning.pytorch as pl
import pytest
import torch

from mespot.data.adapters import load_annotations
from mespot.data.datamodule import SpottingDataModule
from mespot.data.dataset import WindowDataset
from mespot.data.preprocess import Settings, preprocess
from mespot.data.synth import MockSpec, write_mock
from mespot.module import SpotterModule


@pytest.mark.slow
def test_the_spotter_overfits_its_training_videos(tmp_path):
    spec = MockSpec("casme2", subjects=2, videos_per_subject=3, frames=300, size=(128, 96), seed=5)
    root = write_mock(spec, tmp_path / "mock")
    settings = Settings(size=32, flow_method="dis", detector="none")
    report = preprocess(load_annotations("casme2", root), root, tmp_path / "cache", settings,
                        workers=1, progress=False)  # fmt: skip
    pl.seed_everything(0)
    dm = SpottingDataModule(str(report.folder), "s16", val_subjects=0, window=64, stride=32,
                            batch_size=4, augment=False)  # fmt: skip
    dm.setup()
    # validate on the training videos themselves: this measures fitting, not generalisation
    dm.videos["val"] = dm.videos["train"]
    dm.datasets["val"] = WindowDataset(dm.videos["train"], window=64, stride=32)
    model = SpotterModule(
        in_chans=dm.in_channels,
        backbone={"name": "vovnet", "width": 0.25},
        neck={"level_dims": (32, 64, 64, 64, 128), "out_dim": 32},
        optimizer=functools.partial(torch.optim.Adam, lr=1e-3),
    )
    quiet = dict(accelerator="cpu", logger=False, enable_checkpointing=False,
                 enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    pl.Trainer(max_epochs=120, limit_val_batches=0, **quiet).fit(model, dm)
    (scores,) = pl.Trainer(**quiet).validate(model, dm, verbose=False)
    n_gt = sum(len(v.ground_truth) for v in dm.videos["train"])
    assert n_gt == 12
    assert scores["val/overall_f1"] >= 0.9, scores
    assert scores["val/me_f1"] >= 0.75 and scores["val/mae_f1"] >= 0.75, scores
