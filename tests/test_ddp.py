"""SpotterModule under multi-process DDP: window outputs gathered from every rank, and a real
`mespot-train trainer=ddp` run with two CPU processes (gloo)."""

import json
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pandas as pd
import pytest
import torch
import torch.distributed as dist
from conftest import TINY, on_two_gloo_ranks
from omegaconf import OmegaConf

from mespot.cli.train import cache_folder_of
from mespot.data.datamodule import SpottingDataModule
from mespot.evaluation import gather_outputs
from mespot.intervals import read_intervals
from mespot.module import SpotterModule

# 7 windows of 2 videos; as DistributedSampler does, padded to 8 with the first one again
WINDOWS = [(0, 0), (0, 16), (0, 32), (0, 48), (1, 0), (1, 16), (1, 32)]
PADDED = WINDOWS + WINDOWS[:1]


def window_output(video, start):
    segments = torch.tensor([[start + 1.0, start + 5.0]])
    return video, start, segments, torch.tensor([0.1 * video + start / 100]), torch.tensor([video])


def plain(outputs):
    return [(v, s, seg.tolist(), sc.tolist(), lab.tolist()) for v, s, seg, sc, lab in outputs]


def _gather_on_rank(rank, world):
    mine = [window_output(*w) for w in PADDED[rank::world]]  # this rank's shard
    return plain(gather_outputs(mine))


def test_gather_outputs_gives_every_rank_all_windows_once_in_order():
    results = on_two_gloo_ranks(_gather_on_rank)
    expected = plain(window_output(*w) for w in sorted(WINDOWS))
    assert results[0] == results[1] == expected


def test_gather_outputs_without_a_process_group_returns_the_outputs_as_they_are():
    outputs = [window_output(*w) for w in reversed(PADDED)]
    assert not dist.is_initialized()
    assert gather_outputs(outputs) is outputs


@pytest.mark.slow
def test_ddp_run_on_two_cpu_processes_scores_every_window_of_the_test_subject(tiny_mock, tmp_path):
    root, cache_dir = tiny_mock
    # data.stride=28: 7 windows per video, so the DistributedSampler pads one rank's shard;
    # SyncBatchNorm needs GPUs
    command = [str(Path(sys.executable).parent / "mespot-train"), "debug=default",
               f"data.root={root}", f"paths.cache_dir={cache_dir}", f"paths.log_dir={tmp_path}",
               "data.test_subject=s16", "data.stride=28", "callbacks.progress=null", *TINY,
               "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
               "trainer.sync_batchnorm=false"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MEMBER: 2/2" in result.stderr  # the second rank did run

    (metrics_file,) = tmp_path.rglob("metrics.json")  # written once, by rank zero
    run = metrics_file.parent
    metrics = json.loads(metrics_file.read_text())
    truth = pd.read_csv(root / "ground_truth.csv", dtype={"subject": str})
    truth = truth[truth["subject"] == "s16"]
    assert metrics["overall"]["n_gt"] == len(truth) > 0
    predictions = read_intervals(run / "predictions.csv", scored=True)
    assert set(predictions["subject"]) <= {"s16"}
    assert set(predictions["video"]) <= set(truth["video"])
    assert metrics["overall"]["n_pred"] == len(predictions)

    # no window lost or counted twice: one process testing the same checkpoint agrees
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    datamodule = SpottingDataModule.from_config(
        cache_folder_of(cfg), OmegaConf.to_container(cfg.data, resolve=True), cfg.seed
    )
    (best,) = (run / "checkpoints").glob("epoch_*.ckpt")
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         default_root_dir=tmp_path / "one_process")  # fmt: skip
    trainer.test(SpotterModule.load_from_checkpoint(best), datamodule, verbose=False)
    alone = read_intervals(tmp_path / "one_process" / "predictions.csv", scored=True)
    pd.testing.assert_frame_equal(predictions, alone)
