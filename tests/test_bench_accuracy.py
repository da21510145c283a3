"""The accuracy benchmark on a tiny budget (`--quick`: 3 subjects, 2 epochs of 2 batches, DIS flow
at 32 px), for the baseline and one learned method (about a minute on 2 cores; the other learned
methods differ only in their overrides, checked without running): every fold of each method's
LOSO sweep lands where the runner looks, the report holds each method's counts, F1 that follow
from them and the commands, and --resume reuses the finished sweeps."""

import json
from pathlib import Path

import pytest

from mespot.bench import accuracy as bench

ROWS = ("mae", "me", "overall")
RUN = ["baseline", "vovnet_flow"]


def f1(counts: dict) -> float:
    """The MEGC F1 from the counts alone."""
    tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[int, dict, str]:
    """(exit status, accuracy.json, accuracy.md) of a quick run into a temporary folder."""
    out = tmp_path_factory.mktemp("bench")
    status = bench.main(["--quick", "--out", str(out), "--methods", *RUN])
    saved = json.loads((out / "accuracy.json").read_text())
    return status, saved, (out / "accuracy.md").read_text()


@pytest.mark.slow
def test_every_method_runs_every_fold(report):
    status, saved, _ = report
    assert status == 0 and saved["complete"]
    assert [r["method"] for r in saved["rows"]] == RUN
    subjects = bench.QUICK.synth["subjects"]
    for row in saved["rows"]:
        assert row["complete"] and row["folds_done"] == row["folds_expected"] == subjects
        assert len(row["per_subject"]) == subjects
        assert row["seconds"] > 0 and row["load_average_start"] is not None


@pytest.mark.slow
def test_counts_add_up_and_f1_follows_from_them(report):
    _, saved, _ = report
    for row in saved["rows"]:
        for key in ROWS:
            c = row[key]
            assert c["fp"] == c["n_pred"] - c["tp"] >= 0 and c["fn"] == c["n_gt"] - c["tp"] >= 0
            assert c["f1"] == pytest.approx(f1(c), abs=1e-12)
        assert row["overall"]["n_gt"] == row["mae"]["n_gt"] + row["me"]["n_gt"] > 0
        assert row["overall"]["tp"] == row["mae"]["tp"] + row["me"]["tp"]
        per_subject_tp = sum(s["overall"]["tp"] for s in row["per_subject"].values())
        assert per_subject_tp == row["overall"]["tp"]  # summed over folds, then F1


@pytest.mark.slow
def test_report_records_commands_machine_and_table(report):
    _, saved, md = report
    assert saved["command"].startswith("python -m mespot.bench.accuracy --quick")
    env = saved["environment"]
    assert env["commit"] and env["cpu_count"] and env["load_average_at_end"] is not None
    assert saved["data"]["preprocess"]["command"].startswith("mespot-preprocess")
    for row in saved["rows"]:
        assert row["command"].startswith("mespot-train -m ")
        assert "data.test_subject=all" in row["command"] and "hydra.sweep.dir=" in row["command"]
        assert row["command"] in md
        assert f"| {row['label']} | {row['mae']['f1']:.4f} | {row['me']['f1']:.4f} | " in md
    assert "experiment=baseline" in saved["rows"][0]["command"]


def test_the_chance_floor_is_scored_on_the_same_folds(report):
    _, saved, md = report
    chance = saved["chance"]
    assert chance["folds_done"] == len(saved["rows"][0]["per_subject"]) == len(chance["grids"])
    assert chance["overall"]["n_gt"] == saved["rows"][0]["overall"]["n_gt"]
    assert f"| {bench.CHANCE_LABEL} | {chance['mae']['f1']:.4f} | {chance['me']['f1']:.4f} | " in md


def test_a_learned_method_command_overrides_the_bench_experiment(tmp_path):
    command = bench.method_command("resnet_flow", bench.FULL, tmp_path, tmp_path / "sweep")
    assert command[1:4] == ["-m", "experiment=bench_accuracy", "model/backbone=resnet_small"]
    assert f"hydra.sweep.dir={tmp_path / 'sweep'}" in command
    assert "preprocessing.size=64" in command and "preprocessing.flow.method=tvl1" in command
    noflow = bench.method_command("vovnet_noflow", bench.QUICK, tmp_path, tmp_path / "s")
    assert "data.use_flow=false" in noflow and "trainer.max_epochs=2" in noflow
    baseline = bench.method_command("baseline", bench.QUICK, tmp_path, tmp_path / "s")
    assert "trainer.max_epochs=2" not in baseline  # the baseline sets its own one-batch epoch
    sweep = tmp_path / "s"
    plain = bench.method_command("vovnet_flow", bench.FULL, tmp_path, sweep)
    for seed in (1, 2):  # the repeats of the paper's model differ from it in the seed alone
        seeded = bench.method_command(f"vovnet_flow_seed{seed}", bench.FULL, tmp_path, sweep)
        assert [o for o in seeded if o != f"seed={seed}"] == plain
        assert f"seed={seed}" in seeded


@pytest.mark.slow
def test_resume_reads_the_finished_sweeps_instead_of_running_them(report, tmp_path):
    _, first, _ = report
    out = tmp_path / "again"
    data = Path(first["data"]["root"]).parent  # the first run's mock, cache and sweeps
    status = bench.main(["--quick", "--out", str(out), "--data", str(data), "--resume",
                         "--methods", *RUN])  # fmt: skip
    again = json.loads((out / "accuracy.json").read_text())
    assert status == 0 and all(row["reused"] for row in again["rows"])
    for old, new in zip(first["rows"], again["rows"], strict=True):
        assert {k: new[k] for k in ROWS} == {k: old[k] for k in ROWS}
    assert "(reused)" in (out / "accuracy.md").read_text()


@pytest.mark.slow
def test_resume_runs_again_a_sweep_whose_recipe_changed_since(report, tmp_path):
    """The same command over an edited conf/ composes other settings: such a sweep is not
    reused (here the edit is simulated on a copy of a finished fold's configuration)."""
    from omegaconf import OmegaConf

    _, first, _ = report
    sweep = Path(next(r["sweep"] for r in first["rows"] if r["method"] == "vovnet_flow"))
    fold = tmp_path / "copy" / "0" / ".hydra"
    fold.mkdir(parents=True)
    for name in ("config.yaml", "overrides.yaml"):
        (fold / name).write_text((sweep / "0" / ".hydra" / name).read_text())
    assert bench.composes_as_before(tmp_path / "copy")
    config = OmegaConf.load(fold / "config.yaml")
    config.model.optimizer.lr = config.model.optimizer.lr * 2
    OmegaConf.save(config, fold / "config.yaml")
    assert not bench.composes_as_before(tmp_path / "copy")
    assert not bench.composes_as_before(tmp_path / "missing")
