"""`mespot-train`: real Hydra configs, a real Lightning trainer, one LOSO fold on a tiny mock."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import TINY
from console import assert_quiet
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mespot.cli.common import compose_train
from mespot.cli.train import where_it_ran
from mespot.intervals import read_intervals
from mespot.metrics import evaluate


def train(tiny_mock, tmp_path, *overrides):
    root, cache_dir = tiny_mock
    command = [str(Path(sys.executable).parent / "mespot-train"), "debug=default",
               f"data.root={root}", f"paths.cache_dir={cache_dir}", f"paths.log_dir={tmp_path}",
               "data.test_subject=s16", "callbacks.progress=null", *TINY, *overrides]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)


def run_dirs(tmp_path):
    return sorted((tmp_path / "train" / "runs").iterdir())


@pytest.mark.parametrize(
    "backbone",
    [
        ["model/backbone=vovnet_small"],
        ["model/backbone=resnet_small"],
        ["model/backbone=densenet_small"],
    ],
)
def test_configs_compose_and_build_every_backbone(backbone):
    cfg = compose_train(["debug=default", "data.root=x", "data.test_subject=s1", *backbone])
    model = instantiate(cfg.model, in_chans=3, _convert_="all")
    logits, offsets, points = model(torch.zeros(1, 32, 3, 32, 32))
    assert logits.shape == (1, points.shape[0], 2) and offsets.shape == (1, points.shape[0], 2)


def test_paper_config_is_the_papers():
    cfg = compose_train(["data.root=x", "data.test_subject=s1"])
    assert cfg.model.backbone.name == "vovnet" and cfg.model.optimizer.lr == 0.005
    assert list(cfg.model.neck.level_dims) == [512, 1024, 1024, 1024, 2048]
    assert cfg.data.batch_size == 32 and cfg.data.window == 128
    assert (cfg.model.loss.focal, cfg.model.loss.l1, cfg.model.loss.iou) == (1.0, 1.0, 1.0)


def test_one_fold_trains_tests_the_held_out_subject_and_writes_its_results(tiny_mock, tmp_path):
    result = train(tiny_mock, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_quiet(result)
    assert "fold s16 done in" in result.stdout + result.stderr  # with its F1 per type
    (run,) = run_dirs(tmp_path)
    predictions = read_intervals(run / "predictions.csv", scored=True)
    assert set(predictions["subject"]) <= {"s16"}
    metrics = json.loads((run / "metrics.json").read_text())
    truth = pd.read_csv(tiny_mock[0] / "ground_truth.csv", dtype={"subject": str})
    truth = truth[truth["subject"] == "s16"]
    expected = evaluate(predictions, truth, videos=[("s16", "16_0101")]).to_dict()
    assert {k: metrics[k] for k in expected} == expected
    assert set(metrics["thresholds"]) == {"mae", "me"}
    assert all(0.0 <= t <= 1.0 + 1e-9 for t in metrics["thresholds"].values())
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / ".hydra" / "config.yaml").is_file()  # the resolved config, for reproduction
    # checkpoints hold plain values: they load without unpickling code
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    thresholds = checkpoint["state_dict"]["thresholds"]  # one per type, as validation chose
    assert thresholds.shape == (2,) and thresholds.dtype == torch.float32


def test_training_resumes_from_a_checkpoint(tiny_mock, tmp_path):
    assert train(tiny_mock, tmp_path).returncode == 0
    (first,) = run_dirs(tmp_path)
    resumed = train(tiny_mock, tmp_path, f"ckpt_path={first}/checkpoints/last.ckpt",
                    "trainer.max_epochs=2")  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Restoring states from the checkpoint" in resumed.stdout + resumed.stderr
    assert run_dirs(tmp_path) == [first]  # it goes on in its run folder (tests/test_resume.py)
    logged = pd.read_csv(first / "csv" / "version_1" / "metrics.csv")
    trained = logged.dropna(subset=["train/loss_epoch"])["epoch"]
    assert set(trained.astype(int)) == {1}  # only the epoch not trained before


def test_last_ckpt_is_the_last_epoch_not_the_best(tiny_mock, tmp_path):
    """Resuming from last.ckpt must not go back to the best epoch (Lightning's own save_last
    copies only the checkpoints it keeps for their score)."""
    result = train(tiny_mock, tmp_path, "trainer.max_epochs=3")
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2
    best = list((run / "checkpoints").glob("epoch_*.ckpt"))
    assert len(best) == 1  # the epoch the test fold uses, chosen on validation


def test_after_a_warm_up_the_epoch_kept_is_one_of_the_whole_models():
    warm = compose_train(["data.root=x", "data.test_subject=s1", "model.backbone_warmup=20"])
    baseline = compose_train(["data.root=x", "data.test_subject=s1", "experiment=baseline"])
    assert warm.callbacks.model_checkpoint.first_epoch == 20  # tests/test_callbacks.py: honoured
    assert baseline.callbacks.model_checkpoint.first_epoch == 0  # a model without the option


def test_a_bad_model_setting_is_one_line_naming_it(tiny_mock, tmp_path):
    result = train(tiny_mock, tmp_path, "model.backbone_warmup=2")  # without model.motion_grid
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "error: model.backbone_warmup needs model.motion_grid (and frame diffs)"
    )


def test_without_flow_the_input_is_frames_only(tiny_mock, tmp_path):
    result = train(tiny_mock, tmp_path, "data.use_flow=false", "test=false")
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["in_chans"] == 1


def test_missing_cache_says_which_command_fills_it(tiny_mock, tmp_path):
    result = train(tiny_mock, tmp_path, "preprocessing.size=48")
    assert result.returncode == 2
    assert "no cache for these settings" in result.stderr and "mespot-preprocess" in result.stderr
    assert result.stderr.count("\n") == 1


def test_fast_dev_run(tiny_mock, tmp_path):
    result = train(tiny_mock, tmp_path, "+trainer.fast_dev_run=true")
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    assert (run / "predictions.csv").is_file() and (run / "metrics.json").is_file()


@pytest.mark.parametrize("backbone", ["vovnet_small", "resnet_small", "densenet_small"])
def test_mock_experiment_composes_with_each_backbone_one_override_apart(backbone):
    cfg = compose_train(["experiment=mock_cpu", "data.test_subject=s15",
                         f"model/backbone={backbone}"])  # fmt: skip
    assert cfg.data.root == "data/mock/casme2" and cfg.trainer.accelerator == "cpu"
    model = instantiate(cfg.model, in_chans=3, _convert_="all")
    assert sum(p.numel() for p in model.parameters()) < 1_000_000


def test_the_fold_line_names_the_gpu_it_ran_on_or_the_cpu_threads():
    n = torch.get_num_threads()
    threads = f"{n} CPU thread" + ("" if n == 1 else "s")

    def where(**trainer):
        return where_it_ran(OmegaConf.create({"trainer": trainer}))

    assert where(accelerator="gpu", devices=[1]) == f"GPU 1 ({threads})"  # a claimed GPU
    assert where(accelerator="cuda", devices=2) == f"2 GPUs ({threads})"
    assert where(accelerator="gpu", devices=1) == f"1 GPU ({threads})"
    assert where(accelerator="cpu", devices=1) == threads
    on_auto = f"1 GPU ({threads})" if torch.cuda.is_available() else threads
    assert where(accelerator="auto", devices=1) == on_auto
    torch.set_num_threads(1)
    try:
        assert where(accelerator="cpu", devices=1) == "1 CPU thread"
    finally:
        torch.set_num_threads(n)
