"""`hparams_search=optuna`: Optuna tunes on validation subjects and never scores the test one."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import TINY
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra_plugins.hydra_optuna_sweeper._impl import create_optuna_distribution_from_override
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution

from mespot.cli.common import compose_train

SEARCH = ["hparams_search=optuna", "experiment=mock_cpu", "data.test_subject=s15"]
ABSENT = object()


def composed(*overrides: str):
    return compose_train(overrides, return_hydra_config=True)


def search_space(cfg) -> dict:
    """hydra.sweeper.params as Optuna distributions, parsed as the sweeper parses them."""
    parser = OverridesParser.create()
    return {key: create_optuna_distribution_from_override(parser.parse_override(f"{key}={v}"))
            for key, v in cfg.hydra.sweeper.params.items()}  # fmt: skip


def test_the_sweeper_is_optuna_and_maximises_the_best_validation_f1():
    cfg = composed(*SEARCH)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    assert sweeper.direction == "maximize" and sweeper.n_trials >= 1
    assert sweeper.storage is None  # optuna 2.10's RDB storage breaks on SQLAlchemy 2
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    assert sweeper.sampler.seed is not None
    assert cfg.optimized_metric == "val/overall_f1"
    # the fold keeps the epoch that maximises the same metric: the trial's score is that epoch's
    checkpoint = cfg.callbacks.model_checkpoint
    assert checkpoint.monitor == cfg.optimized_metric and checkpoint.mode == "max"


def test_tuning_never_scores_the_held_out_subject():
    assert composed(*SEARCH).test is False
    assert composed("experiment=mock_cpu", "data.test_subject=s15").test is True  # the default


def test_every_searched_parameter_is_a_real_model_or_data_key():
    cfg = composed(*SEARCH)
    space = search_space(cfg)
    assert {"model.optimizer.lr", "model.loss.l1", "model.loss.iou"} <= space.keys()
    for key in space:
        assert key.split(".")[0] in ("model", "data"), key
        value = OmegaConf.select(cfg, key, default=ABSENT)
        assert value is not ABSENT and not OmegaConf.is_config(value), f"{key} is not a setting"
    # the learning rate is searched on a log scale, around the paper's and the mock's
    lr = space["model.optimizer.lr"]
    assert lr.low <= 0.001 < 0.005 <= lr.high and type(lr).__name__ == "LogUniformDistribution"
    # the loss weights: focal is the reference, the paper's 1:1:1 lies inside the space
    assert cfg.model.loss.focal == 1.0
    assert all(space[f"model.loss.{k}"].low <= 1.0 <= space[f"model.loss.{k}"].high
               for k in ("l1", "iou"))  # fmt: skip


def test_the_ends_of_the_search_space_compose():
    """Each end of every range (each choice) is an override the config accepts."""
    cfg = composed(*SEARCH)
    ends = [[f"{key}={v}" for v in (d.choices if isinstance(d, CategoricalDistribution)
                                    else (d.low, d.high))]
            for key, d in search_space(cfg).items()]  # fmt: skip
    for i in range(max(map(len, ends))):
        trial = [values[min(i, len(values) - 1)] for values in ends]
        cfg = composed(*SEARCH, *trial)
        for override in trial:
            key, value = override.split("=")
            assert str(OmegaConf.select(cfg, key)) == value


@pytest.mark.slow
def test_two_trials_run_and_the_best_is_the_best_validation_f1(tiny_mock, tmp_path):
    root, cache_dir = tiny_mock
    command = [str(Path(sys.executable).parent / "mespot-train"), "-m", "hparams_search=optuna",
               "debug=default", "hydra.sweeper.n_trials=2", "trainer.max_epochs=2",
               f"data.root={root}", f"paths.cache_dir={cache_dir}", f"paths.log_dir={tmp_path}",
               "data.test_subject=s16", "callbacks.progress=null", *TINY]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    trials = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in trials] == ["0", "1"]
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(results["best_params"]) == set(composed(*SEARCH).hydra.sweeper.params)
    # each trial's score is its best validation epoch (not its last); the sweep keeps the best
    scores = []
    for trial in trials:
        assert not (trial / "metrics.json").exists() and not (trial / "predictions.csv").exists()
        logged = pd.read_csv(trial / "csv" / "version_0" / "metrics.csv")
        scores.append(logged["val/overall_f1"].max())
    assert 0.0 <= results["best_value"] <= 1.0
    assert results["best_value"] == pytest.approx(max(scores))
