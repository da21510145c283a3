"""mespot.callbacks.Throughput: frames counted exactly (windows × window length), rates, the
share of training spent waiting for data, in real Lightning fits: a tiny model fed dict batches
in this process, and a `mespot-train` fold with the callback switched on from the command line."""

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from conftest import TINY
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset

from mespot.callbacks import Throughput
from mespot.cli.common import compose_train
from mespot.cli.train import cache_folder_of
from mespot.data.datamodule import SpottingDataModule

WINDOW = 8  # frames per window


class Windows(Dataset):
    """`n` windows of WINDOW frames, each taking `delay` seconds to load."""

    def __init__(self, n: int, delay: float = 0.0):
        self.n, self.delay = n, delay

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        time.sleep(self.delay)
        return {"x": torch.randn(WINDOW, 1, 4, 4)}


class Tiny(pl.LightningModule):
    """A linear layer over each frame; each training step takes at least `step_delay` s."""

    def __init__(self, load_delay: float = 0.0, step_delay: float = 0.0):
        super().__init__()
        self.layer = torch.nn.Linear(16, 1)
        self.load_delay, self.step_delay = load_delay, step_delay

    def _loss(self, batch):
        return self.layer(batch["x"].flatten(2)).square().mean()

    def training_step(self, batch, batch_idx):
        time.sleep(self.step_delay)
        return self._loss(batch)

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self._loss(batch))

    def test_step(self, batch, batch_idx):
        self.log("test/loss", self._loss(batch))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        return DataLoader(Windows(6, self.load_delay), batch_size=2)

    def val_dataloader(self):
        return DataLoader(Windows(5), batch_size=2)  # 2 + 2 + 1 windows

    def test_dataloader(self):
        return DataLoader(Windows(3), batch_size=2)


def fit_and_test(root: Path, model: Tiny) -> tuple[dict, dict]:
    """throughput.json after fitting (2 epochs) and after testing."""
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[Throughput()], default_root_dir=root)  # fmt: skip
    trainer.fit(model)
    after_fit = json.loads((root / "throughput.json").read_text())
    trainer.test(model, verbose=False)
    return after_fit, json.loads((root / "throughput.json").read_text())


def test_frames_are_the_windows_seen_times_their_length(tmp_path):
    after_fit, after_test = fit_and_test(tmp_path, Tiny())
    # 2 epochs of 6 training windows and 5 validation windows; the sanity check does not count
    assert after_fit["train"]["frames"] == 2 * 6 * WINDOW and after_fit["train"]["batches"] == 6
    assert after_fit["val"]["frames"] == 2 * 5 * WINDOW and after_fit["val"]["batches"] == 6
    assert after_fit["test"]["frames"] == 0 and after_fit["test"]["frames_per_s"] is None
    assert after_test["test"]["frames"] == 3 * WINDOW and after_test["test"]["batches"] == 2
    assert after_test["train"] == after_fit["train"]  # testing adds to its own split only
    for split in ("train", "val", "test"):
        stats = after_test[split]
        assert stats["seconds"] > 0
        assert stats["frames_per_s"] == pytest.approx(stats["frames"] / stats["seconds"])
    assert 0 <= after_test["train"]["wait_share"] <= 1
    assert after_test["device"] == "cpu"
    assert after_test["peak_gpu_memory_mb"] is None and after_test["peak_gpu_reserved_mb"] is None


def test_the_wait_share_tells_a_slow_loader_from_a_slow_step(tmp_path):
    starved, _ = fit_and_test(tmp_path / "loader", Tiny(load_delay=0.02))  # 40 ms per batch
    busy, _ = fit_and_test(tmp_path / "step", Tiny(step_delay=0.04))
    assert starved["train"]["wait_share"] > 0.5 > busy["train"]["wait_share"]
    assert starved["train"]["wait_seconds"] >= 6 * 0.04
    assert busy["train"]["seconds"] >= 6 * 0.04


def test_a_mespot_train_fold_writes_it_in_its_run_folder(tiny_mock, tmp_path):
    root, cache_dir = tiny_mock
    overrides = ["debug=default", f"data.root={root}", f"paths.cache_dir={cache_dir}",
                 "data.test_subject=s16", *TINY]  # fmt: skip
    command = [str(Path(sys.executable).parent / "mespot-train"), *overrides,
               f"paths.log_dir={tmp_path}", "callbacks.progress=null",
               "+callbacks.throughput._target_=mespot.callbacks.Throughput"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (tmp_path / "train" / "runs").iterdir()
    stats = json.loads((run / "throughput.json").read_text())

    cfg = compose_train(overrides)
    data = OmegaConf.to_container(cfg.data, resolve=True)
    fold = SpottingDataModule.from_config(cache_folder_of(cfg), data)
    fold.setup()
    window, batch = cfg.data.window, cfg.data.batch_size
    batches = cfg.trainer.limit_train_batches  # one epoch of them (debug=default)
    assert cfg.trainer.max_epochs == 1 and len(fold.datasets["train"]) >= batches * batch
    assert stats["train"]["frames"] == batches * batch * window
    assert stats["train"]["batches"] == batches
    for split in ("val", "test"):  # every window once
        windows = len(fold.datasets[split])
        assert stats[split]["frames"] == windows * window
        assert stats[split]["batches"] == math.ceil(windows / batch)
        assert stats[split]["frames_per_s"] > 0
    assert stats["train"]["frames_per_s"] > 0 and 0 <= stats["train"]["wait_share"] <= 1
    assert stats["device"] == "cpu" and stats["peak_gpu_memory_mb"] is None
