"""Faults around `mespot-train`, `mespot-aggregate` and `mespot-export`, met as a user meets them:
a cache with videos that failed preprocessing or hold NaN, a subject without any expression, a
model that diverges, impossible settings, a fold re-run into a folder that holds a finished
run, results that do not belong together. Each either stops with one line naming the file or
setting, or is counted and shown, and nothing wrong is written."""

import json
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pandas as pd
import pytest
from conftest import TINY, preprocessed_mock
from console import BIN, assert_user_error, run

from mespot.data.synth import MockSpec

SUBJECTS = ["s15", "s16", "s19"]  # with val_subjects=1, s16 trains for s15 and validates for s19


@pytest.fixture(scope="module")
def mock(tmp_path_factory):
    """(root, cache folder) of a mock CAS(ME)²: 3 subjects × 2 videos, preprocessed as TINY."""
    spec = MockSpec("casme2", subjects=3, videos_per_subject=2, frames=160, size=(96, 72), seed=7)
    root, cache_dir = preprocessed_mock(spec, tmp_path_factory)
    (folder,) = cache_dir.iterdir()
    return root, folder


def copy_cache(mock, tmp_path):
    """A cache of the mock to damage, in the layout mespot-train looks for."""
    root, folder = mock
    shutil.copytree(folder, tmp_path / "cache" / folder.name)
    return tmp_path / "cache" / folder.name


def train(mock, tmp_path, *overrides, multirun=False):
    root, _ = mock
    args = ["-m"] if multirun else []
    return run("mespot-train", *args, "debug=default", f"data.root={root}",
               f"paths.cache_dir={tmp_path / 'cache'}", f"paths.log_dir={tmp_path / 'logs'}",
               "callbacks.progress=null", *TINY, *overrides, cwd=tmp_path)  # fmt: skip


def only_run(tmp_path):
    (folder,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    return folder


def intervals_of(cache, subject, video=None):
    table = pd.read_csv(cache / "intervals.csv", dtype={"subject": str, "video": str})
    keep = table["subject"] == subject
    return table[keep & (table["video"] == video)] if video else table[keep]


@pytest.fixture(scope="module")
def expression_free_sweep(mock, tmp_path_factory):
    """Every fold of a cache in which s16 has no expression at all: (cache, sweep folder)."""
    tmp_path = tmp_path_factory.mktemp("free")
    cache = copy_cache(mock, tmp_path)
    table = pd.read_csv(cache / "intervals.csv", dtype={"subject": str})
    table[table["subject"] != "s16"].to_csv(cache / "intervals.csv", index=False)
    result = train(mock, tmp_path, "data.test_subject=all", multirun=True)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    return cache, sweep


def fold_folder(sweep, subject):
    for job in sweep.iterdir():
        if (job / ".hydra").is_dir() and f"data.test_subject={subject}" in (
            job / ".hydra" / "overrides.yaml"
        ).read_text():
            return job
    raise AssertionError(subject)


def copy_sweep(sweep, tmp_path):
    shutil.copytree(sweep, tmp_path / "sweep")
    return tmp_path / "sweep"


def test_a_subject_without_expressions_trains_validates_and_is_tested(expression_free_sweep):
    cache, sweep = expression_free_sweep
    summary = json.loads((sweep / "summary.json").read_text())
    (experiment,) = summary["experiments"]
    assert experiment["complete"] and experiment["folds_done"] == 3
    free = json.loads((fold_folder(sweep, "s16") / "metrics.json").read_text())
    for kind in ("mae", "me"):  # every prediction on it is a false positive
        assert free[kind]["n_gt"] == 0 and free[kind]["fp"] == free[kind]["n_pred"]
    for subject in ("s15", "s19"):  # s16 trained one of them and validated the other
        metrics = json.loads((fold_folder(sweep, subject) / "metrics.json").read_text())
        assert metrics["overall"]["n_gt"] == len(intervals_of(cache, subject))


def test_a_fold_refuses_a_cache_with_uncached_videos_and_names_them(mock, tmp_path):
    cache = copy_cache(mock, tmp_path)
    (cache / "s15" / "15_0102" / "meta.json").unlink()  # its preprocessing did not finish
    single = train(mock, tmp_path, "data.test_subject=s16")
    assert_user_error(single, "1 of 6 videos are not cached", "s15/15_0102",
                      "data.allow_uncached=true")  # fmt: skip
    run_folder = only_run(tmp_path)
    assert not (run_folder / "metrics.json").exists()
    assert (run_folder / "failed.txt").read_text().startswith("error: ")
    sweep = train(mock, tmp_path, "data.test_subject=all", multirun=True)
    assert_user_error(sweep, "s15/15_0102")  # once, before any fold starts
    assert not (tmp_path / "logs" / "train" / "multiruns").exists()


def test_allowed_uncached_videos_count_as_missed_and_the_summary_says_so(mock, tmp_path):
    cache = copy_cache(mock, tmp_path)
    (cache / "s15" / "15_0102" / "meta.json").unlink()
    result = train(mock, tmp_path, "data.test_subject=s15", "data.allow_uncached=true",
                   multirun=True)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "uncached video(s) left out" in result.stdout + result.stderr
    (sweep,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    metrics = json.loads((sweep / "0" / "metrics.json").read_text())
    uncached = len(intervals_of(cache, "s15", "15_0102"))
    assert uncached > 0
    assert metrics["uncached_videos"] == {"test": ["s15/15_0102"]}
    assert metrics["uncached_expressions_missed"] == uncached
    assert metrics["overall"]["n_gt"] == len(intervals_of(cache, "s15"))  # none lost
    assert f"{uncached} expression(s) of uncached videos count as missed" in result.stdout
    assert "count as missed" in (sweep / "summary.md").read_text()


def test_nan_in_the_cache_stops_the_fold_naming_the_video(mock, tmp_path):
    cache = copy_cache(mock, tmp_path)
    flow = np.load(cache / "s19" / "19_0101" / "flow.npy", mmap_mode="r+")
    flow[5:9] = np.nan
    flow.flush()
    del flow
    result = train(mock, tmp_path, "data.test_subject=s19", "data.num_workers=1")
    # found in a loader worker, and still one line
    assert_user_error(result, "s19/19_0101/flow.npy", "NaN or inf", "mespot-preprocess")
    assert not (only_run(tmp_path) / "metrics.json").exists()


def test_a_diverging_loss_stops_with_its_epoch_and_step_and_writes_no_metrics(mock, tmp_path):
    copy_cache(mock, tmp_path)
    result = train(mock, tmp_path, "data.test_subject=s16", "model.optimizer.lr=1e30")
    assert_user_error(result, "training diverged", "at epoch 0, step ")
    run_folder = only_run(tmp_path)
    assert not (run_folder / "metrics.json").exists()
    assert not (run_folder / "predictions.csv").exists()
    assert "training diverged" in (run_folder / "failed.txt").read_text()


@pytest.mark.parametrize(
    "setting, named",
    [
        ("data.batch_size=0", "data.batch_size=0"),
        ("data.stride=-4", "data.stride=-4"),
        ("data.positive_fraction=2", "data.positive_fraction=2"),
        ("model.optimizer.lr=-0.1", "model.optimizer.lr=-0.1"),
        ("data.allow_uncached=flase", "data.allow_uncached=flase"),
    ],
)
def test_impossible_settings_are_named_before_any_work(mock, tmp_path, setting, named):
    copy_cache(mock, tmp_path)
    result = train(mock, tmp_path, "data.test_subject=s16", setting)
    assert_user_error(result, named)
    assert not (only_run(tmp_path) / "checkpoints").exists()


def test_a_failed_rerun_leaves_no_earlier_result_to_credit(expression_free_sweep, mock, tmp_path):
    _, finished = expression_free_sweep
    sweep = copy_sweep(finished, tmp_path)
    copy_cache(mock, tmp_path)
    job = fold_folder(sweep, "s15")
    before = (job / "metrics.json").read_text()
    rerun = train(mock, tmp_path, "data.test_subject=s15", f"hydra.run.dir={job}",
                  "data.batch_size=0")  # fmt: skip
    assert_user_error(rerun, "data.batch_size=0")
    assert not (job / "metrics.json").exists()
    assert (job / "previous" / "1" / "metrics.json").read_text() == before
    summary = run("mespot-aggregate", sweep, "--no-wandb", cwd=tmp_path)
    assert summary.returncode == 1
    assert f"FAILED fold s15 (job {job.name}): error: data.batch_size=0" in summary.stdout
    assert f"hydra.run.dir={job}`" in summary.stdout  # the real folder, not a placeholder
    assert "2/3" in summary.stdout


def test_predictions_that_are_not_the_scored_ones_are_an_error(expression_free_sweep, tmp_path):
    _, finished = expression_free_sweep
    sweep = copy_sweep(finished, tmp_path)
    predictions = fold_folder(sweep, "s19") / "predictions.csv"
    lines = predictions.read_text().splitlines(keepends=True)
    predictions.write_text("".join(lines[:-1]))  # one prediction fewer than was scored
    summary = run("mespot-aggregate", sweep, "--no-wandb", cwd=tmp_path)
    assert summary.returncode == 1  # that fold fails; the others are still summed
    assert "FAILED fold s19" in summary.stdout and "not the file its metrics.json scored" in (
        summary.stdout
    )
    assert json.loads((sweep / "summary.json").read_text())["experiments"][0]["folds_done"] == 2
    for source in (f"sweep={sweep}", f"predictions={predictions}"):
        exported = run("mespot-export", source, "format=megc", "out=sub.csv", cwd=tmp_path)
        assert_user_error(exported, str(predictions), "not the file its metrics.json scored")
        assert not (tmp_path / "sub.csv").exists()


def test_one_unreadable_fold_fails_that_fold_not_the_summary(expression_free_sweep, tmp_path):
    _, finished = expression_free_sweep
    sweep = copy_sweep(finished, tmp_path)
    (fold_folder(sweep, "s16") / "metrics.json").write_text('{"mae": ')
    summary = run("mespot-aggregate", sweep, "--no-wandb", cwd=tmp_path)
    assert summary.returncode == 1
    assert "FAILED fold s16" in summary.stdout and "metrics.json is unreadable" in summary.stdout
    assert (sweep / "summary.md").is_file()


def test_ctrl_c_in_a_parallel_sweep_is_one_line_exit_130_and_no_fold_passes_as_finished(
    mock, tmp_path
):
    """As a terminal's Ctrl-C: every process of the group, while folds train side by side."""
    root, folder = mock
    shutil.copytree(folder, tmp_path / "cache" / folder.name)
    command = [str(BIN / "mespot-train"), "-m", "debug=default", f"data.root={root}",
               f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={tmp_path / 'sweep'}",
               "callbacks.progress=null", "trainer.max_epochs=50",
               "data.test_subject=all", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
               *TINY]  # fmt: skip
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True, cwd=tmp_path)  # fmt: skip
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("sweep/*/config.yaml"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(job.pid, signal.SIGINT)
    _, stderr = job.communicate(timeout=120)
    assert job.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("interrupted: finished folds keep their")
    assert not list(tmp_path.glob("sweep/*/metrics.json"))  # 50 epochs: none had finished
    assert not (tmp_path / "sweep" / "summary.md").exists()
