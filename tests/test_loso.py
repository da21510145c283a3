"""LOSO sweeps: real `mespot-train -m` multiruns (basic and joblib launchers) on a tiny mock,
aggregation of what they leave in the sweep folder, W&B runs per fold, and fold bookkeeping."""

import json
import multiprocessing
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY, write_job
from console import assert_quiet
from omegaconf import OmegaConf

from mespot.cli.common import CONFIG_PATH, compose_train
from mespot.intervals import TYPES
from mespot.loso import aggregate, write_summary
from mespot.parallel import claim_gpu, fold_threads

BIN = Path(sys.executable).parent
SUBJECTS = ["s15", "s16", "s19"]


def run(*command, cwd):
    return subprocess.run([str(BIN / command[0]), *command[1:]], capture_output=True, text=True,
                          timeout=900, cwd=cwd)  # fmt: skip


def base(tiny_mock, log_dir):
    root, cache_dir = tiny_mock
    return ["debug=default", f"data.root={root}", f"paths.cache_dir={cache_dir}",
            f"paths.log_dir={log_dir}", "callbacks.progress=null", *TINY]  # fmt: skip


def multirun(tiny_mock, tmp_path, *overrides):
    result = run("mespot-train", "-m", *base(tiny_mock, tmp_path), *overrides, cwd=tmp_path)
    sweeps = list((tmp_path / "train" / "multiruns").iterdir())
    assert len(sweeps) == 1, result.stderr[-3000:]
    return result, sweeps[0]


def fold_metrics(sweep):
    """subject → metrics.json of every job folder."""
    out = {}
    for metrics in sweep.glob("*/metrics.json"):
        config = OmegaConf.load(metrics.parent / ".hydra" / "config.yaml")
        out[config.data.test_subject] = json.loads(metrics.read_text())
    return out


def assert_summary_is_the_sum_of_the_folds(sweep):
    folds = fold_metrics(sweep)
    summary = json.loads((sweep / "summary.json").read_text())
    (experiment,) = summary["experiments"]
    assert experiment["complete"] and experiment["folds_done"] == len(SUBJECTS)
    assert sorted(experiment["per_subject"]) == SUBJECTS == sorted(folds)
    for t in (*TYPES, "overall"):
        for k in ("n_pred", "n_gt", "tp"):
            assert experiment[t][k] == sum(f[t][k] for f in folds.values()), (t, k)
    n_gt = experiment["overall"]["n_gt"]
    assert n_gt == 12  # every ground-truth interval of the 3 subjects, each in exactly one fold
    return summary


@pytest.fixture(scope="module")
def wandb_sweep(tiny_mock, tmp_path_factory):
    """All folds with the basic launcher, CSV + offline W&B logging."""
    tmp_path = tmp_path_factory.mktemp("sweep")
    env_free_of_wandb_settings = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    result = subprocess.run(
        [str(BIN / "mespot-train"), "-m", *base(tiny_mock, tmp_path), "data.test_subject=all",
         "logger=wandb", "name=tiny"],
        capture_output=True, text=True, timeout=900, cwd=tmp_path, env=env_free_of_wandb_settings,
    )  # fmt: skip
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    return result, sweep


def test_all_folds_run_and_the_summary_sums_their_counts(wandb_sweep):
    result, sweep = wandb_sweep
    assert result.returncode == 0, result.stderr[-3000:]
    summary = assert_summary_is_the_sum_of_the_folds(sweep)
    assert summary["name"] == "tiny"
    for job in sweep.glob("[0-9]*"):
        assert {"predictions.csv", "metrics.json", "config.yaml"} <= {p.name for p in job.iterdir()}
        assert OmegaConf.load(job / "config.yaml").data.test_subject in SUBJECTS  # resolved
    assert "Overall F1" in result.stdout and "summary.md" in result.stdout
    markdown = (sweep / "summary.md").read_text()
    assert "| Experiment | folds | MaE F1 | ME F1 | Overall F1 |" in markdown
    assert all(f"| {s} |" in markdown for s in SUBJECTS)


def test_wandb_writes_one_offline_run_per_fold_in_the_sweeps_group_and_one_aggregate(wandb_sweep):
    pytest.importorskip("wandb")
    _, sweep = wandb_sweep
    group = f"tiny@{sweep.name}"
    for job in sweep.glob("[0-9]*"):
        (run_dir,) = (job / "wandb").glob("offline-run-*")
        record = next(run_dir.glob("*.wandb")).read_bytes()
        assert group.encode() in record and b"fold" in record
        assert OmegaConf.load(job / "config.yaml").logger.wandb.group == group
    (aggregate_run,) = (sweep / "wandb").glob("offline-run-*")
    record = next(aggregate_run.glob("*.wandb")).read_bytes()
    assert group.encode() in record and b"aggregate" in record


def test_joblib_launcher_runs_folds_in_parallel_sharing_the_cores(tiny_mock, tmp_path):
    # with data loading workers too: they start inside joblib's own worker processes
    result, sweep = multirun(tiny_mock, tmp_path, "data.test_subject=all", "data.num_workers=1",
                             "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert_summary_is_the_sum_of_the_folds(sweep)
    # folds side by side: one line each when it ends, no tables or notes whose lines interleave
    assert_quiet(result)
    console = result.stdout + result.stderr
    assert sorted(re.findall(r"fold (\w+) done in", console)) == SUBJECTS
    assert "┃" not in console and "Restoring states" not in console
    threads = max(1, len(os.sched_getaffinity(0)) // 2)
    on = f"on {threads} CPU thread" + ("" if threads == 1 else "s") + ":"
    for job in sweep.glob("[0-9]*"):
        assert on in (job / "train.log").read_text()


def test_a_missing_or_failed_fold_is_reported_and_a_rerun_changes_only_that_fold(
    wandb_sweep, tmp_path
):
    _, original = wandb_sweep
    sweep = tmp_path / "sweep"
    subprocess.run(["cp", "-r", str(original), str(sweep)], check=True)
    before = json.loads((sweep / "summary.json").read_text())["experiments"][0]["per_subject"]
    jobs = {OmegaConf.load(j / ".hydra/config.yaml").data.test_subject: j
            for j in sweep.glob("[0-9]*")}  # fmt: skip

    # s16's folder gone: reported as missing, with the command that re-runs it; exit status 1
    subprocess.run(["mv", str(jobs["s16"]), str(tmp_path / "s16-elsewhere")], check=True)
    (jobs["s19"] / "metrics.json").unlink()  # s19 killed before it finished
    result = run("mespot-aggregate", str(sweep), "--no-wandb", cwd=tmp_path)
    assert result.returncode == 1
    assert "MISSING fold s16" in result.stdout and "FAILED fold s19" in result.stdout
    summary = json.loads((sweep / "summary.json").read_text())["experiments"][0]
    assert summary["missing"] == ["s16"] and list(summary["failed"]) == ["s19"]
    assert summary["folds_done"] == 1 and not summary["complete"]
    assert "data.test_subject=s16" in (sweep / "summary.md").read_text()

    # the finished fold comes back (copied from another machine); s19 is re-run in its folder
    subprocess.run(["mv", str(tmp_path / "s16-elsewhere"), str(sweep / "s16-copied")], check=True)
    overrides = OmegaConf.load(jobs["s19"] / ".hydra" / "overrides.yaml")
    rerun = run("mespot-train", *overrides, f"hydra.run.dir={jobs['s19']}", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    result = run("mespot-aggregate", str(sweep), "--no-wandb", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    after = json.loads((sweep / "summary.json").read_text())["experiments"]
    assert len(after) == 1, "a re-run fold with the same settings belongs to the same experiment"
    assert after[0]["per_subject"]["s15"] == before["s15"]
    assert after[0]["per_subject"]["s16"] == {**before["s16"], "job": "s16-copied"}
    assert set(after[0]["per_subject"]) == set(SUBJECTS)


def test_a_paper_table_is_one_multirun_with_one_row_per_setting(tiny_mock, tmp_path):
    result, sweep = multirun(tiny_mock, tmp_path, "experiment=table5", "data.test_subject=s15")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["name"] == "table5_casme2"
    labels = sorted(e["label"] for e in summary["experiments"])
    assert labels == ["data.use_flow=False", "data.use_flow=True"]  # as Hydra writes them
    assert all(e["complete"] and e["folds_done"] == 1 for e in summary["experiments"])


def test_every_experiment_and_launcher_config_composes():
    for experiment in sorted(p.stem for p in Path(CONFIG_PATH, "experiment").glob("*.yaml")):
        overrides = [f"experiment={experiment}", "data.test_subject=s1", "hydra/launcher=slurm"]
        cfg = compose_train(overrides, return_hydra_config=True)
        for key, values in (cfg.hydra.sweeper.params or {}).items():
            for value in values.split(","):  # every cell of a grid composes too
                compose_train([f"experiment={experiment}", f"{key}={value}",
                               "data.test_subject=s1"])  # fmt: skip
    assert cfg.hydra.launcher.gpus_per_node == 1 and cfg.hydra.launcher.tasks_per_node == 1


def test_all_needs_a_multirun_and_one_dataset(tiny_mock, tmp_path):
    result = run("mespot-train", *base(tiny_mock, tmp_path), "data.test_subject=all", cwd=tmp_path)
    assert result.returncode == 2 and "add -m" in result.stderr
    result = run("mespot-train", "-m", *base(tiny_mock, tmp_path), "data.test_subject=all",
                 "data=casme2,sammlv", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2 and "one dataset" in result.stderr


def test_a_mistake_every_fold_shares_stops_the_sweep_before_any_fold(tiny_mock, tmp_path):
    result = run("mespot-train", "-m", *base(tiny_mock, tmp_path), "data.test_subject=all",
                 "data.batch_size=0", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.endswith("data.batch_size=0: give a whole number of at least 1")
    assert not (tmp_path / "train" / "multiruns").exists()  # no fold was launched


def test_ddp_inside_a_multirun_fails_the_fold_with_the_alternative(tiny_mock, tmp_path):
    result, sweep = multirun(tiny_mock, tmp_path, "data.test_subject=s15", "trainer=ddp")
    assert result.returncode == 1
    failure = (sweep / "0" / "failed.txt").read_text()
    assert "hydra/launcher=joblib" in failure and "FAILED fold s15" in result.stdout


# --- aggregation on hand-made sweep folders -----------------------------------------------


def test_grid_cells_are_separate_experiments_labelled_by_what_differs(tmp_path):
    OmegaConf.save({"hydra": {"overrides": {"task": ["model.loss.iou=1,2", "data.test_subject=a,b",
                                                      "data.root=/d"]}}},
                   tmp_path / "multirun.yaml")  # fmt: skip
    for i, (w, s) in enumerate([(1, "a"), (1, "b"), (2, "a"), (2, "b")]):
        write_job(tmp_path, str(i), s, ("data.root=/d", f"model.loss.iou={w}"), (4, 2, w))
    summary = aggregate(tmp_path)
    assert [e.label for e in summary.experiments] == ["model.loss.iou=1", "model.loss.iou=2"]
    assert [e.total()["overall"].tp for e in summary.experiments] == [4, 8]
    assert summary.complete
    write_summary(summary)
    assert "| model.loss.iou=2 | 2/2 |" in (tmp_path / "summary.md").read_text()


def test_the_newest_run_of_a_fold_counts_and_the_older_is_named(tmp_path):
    write_job(tmp_path, "0", "a", counts=(5, 2, 0))
    newer = write_job(tmp_path, "rerun-a", "a", counts=(2, 2, 2))
    os.utime(newer / "metrics.json", (2e9, 2e9))
    (experiment,) = aggregate(tmp_path).experiments
    assert experiment.total()["overall"].tp == 4 and experiment.duplicates == ["0"]


def test_folds_scored_with_different_rules_are_refused(tmp_path):
    write_job(tmp_path, "0", "a")
    write_job(tmp_path, "1", "b", rule=("megc2020", 0.5))
    with pytest.raises(Exception, match="different rules"):
        aggregate(tmp_path)


def test_a_sweep_whose_every_fold_failed_shows_no_f1(tmp_path):
    """0 of 2 folds done: a dash for each F1 in both tables, not an F1 of 0."""
    for job, subject in (("0", "a"), ("1", "b")):
        folder = write_job(tmp_path, job, subject, counts=None)
        (folder / "failed.txt").write_text("UserError: data.batch_size=0\n")
    summary = aggregate(tmp_path)
    (experiment,) = summary.experiments
    assert experiment.f1("overall") is None and not summary.complete
    header, row, *problems = summary.table().splitlines()
    assert row.split()[-4:] == ["0/2", "–", "–", "–"]
    assert any("data.batch_size=0" in line for line in problems)
    assert "| grid | 0/2 ⚠ | – | – | – |" in summary.markdown()


def test_a_folder_without_folds_is_a_clear_error(tmp_path):
    result = run("mespot-aggregate", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2 and "no mespot-train job folders" in result.stderr


# --- cores and GPUs per fold --------------------------------------------------------------


def test_parallel_folds_share_the_cores():
    cores = len(os.sched_getaffinity(0))
    assert fold_threads({"_target_": "hydra._internal.core_plugins.basic_launcher"}) == cores
    joblib = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    assert fold_threads({"_target_": joblib, "n_jobs": 2}) == max(1, cores // 2)
    assert fold_threads({"_target_": joblib, "n_jobs": -1}) == 1
    assert fold_threads({"_target_": joblib, "n_jobs": 4 * cores}) == 1


def _claim(folder, claims, release):
    claims.put(claim_gpu(Path(folder), 2))
    release.wait(60)  # hold the GPU until the test has seen both claims


def test_concurrent_folds_claim_different_gpus(tmp_path):
    context = multiprocessing.get_context("spawn")
    claims, release = context.Queue(), context.Event()
    workers = [context.Process(target=_claim, args=(str(tmp_path), claims, release))
               for _ in range(2)]  # fmt: skip
    for w in workers:
        w.start()
    claimed = sorted(claims.get(timeout=60) for _ in workers)
    release.set()
    for w in workers:
        w.join(timeout=60)
    assert claimed == [0, 1]
    assert claim_gpu(tmp_path, 1) == 0  # one GPU: nothing to choose
