"""The GPU check (`make gpu-check`) in its CPU profile, end to end, as a user runs it: TV-L1 in
torch against OpenCV's error, the mock, preprocessing, one fold alone, every LOSO fold of the
paper's experiment and of the accuracy recipe, mespot-spot; the report where --out says and the
work where --work says (about 2-3 minutes on 2 cores)."""

import json
import subprocess
import sys

import pytest

from mespot.bench import gpu as bench
from mespot.bench.common import REPO

pytestmark = pytest.mark.slow

SECTIONS = (
    "## Optical flow: TV-L1 in torch",
    "## Mock and cache",
    "## One fold alone",
    "## Every LOSO fold",
    "## A CAS(ME)²-sized LOSO",
    "## mespot-spot",
)


def snapshot(folder) -> dict:
    """Every file under `folder` with its size and modification time."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def check(tmp_path_factory):
    """(the process, gpu.json, gpu.md, the work folder, experiments/bench unchanged)."""
    out, work = tmp_path_factory.mktemp("out"), tmp_path_factory.mktemp("work")
    before = snapshot(bench.DEFAULT_OUT)
    done = subprocess.run(
        [sys.executable, "-m", "mespot.bench.gpu", "--profile", "cpu", "--out", str(out),
         "--work", str(work)],
        cwd=REPO, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    saved = json.loads((out / "gpu.json").read_text()) if (out / "gpu.json").is_file() else {}
    report = (out / "gpu.md").read_text() if (out / "gpu.md").is_file() else ""
    return done, saved, report, work, snapshot(bench.DEFAULT_OUT) == before


def test_the_check_finishes(check):
    done, saved, _, _, _ = check
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert saved["finished"] is True and "error" not in saved
    assert saved["environment"]["profile"] == "cpu"


def test_torch_tv_l1_is_within_the_goal_of_opencv_s_error(check):
    _, saved, _, _, _ = check
    flow = saved["flow"]
    assert "epe_ratio" in flow, "no OpenCV row to compare with (experiments/bench/preprocess.json)"
    assert 0 < flow["epe_ratio"] <= bench.EPE_GOAL
    assert flow["epe_face"] > 0 and flow["best_pairs_per_s"] > 0


def test_every_fold_of_both_sweeps_ran(check):
    _, saved, _, work, _ = check
    sweeps = {row["name"]: row for row in saved["sweeps"]}
    assert list(sweeps) == ["paper", "recipe"]
    subjects = bench.CPU.synth["subjects"]
    for row in sweeps.values():
        assert row["complete"] and not row["failed"]
        assert row["folds_done"] == row["folds_expected"] == subjects
        assert len(row["folds"]) == subjects  # a throughput.json from every fold
        assert all(f["train"]["frames"] > 0 and f["test"]["frames"] > 0 for f in row["folds"])
        assert row["throughput"]["sweep_frames_per_s"] > 0
        assert (work / "runs" / row["name"] / "summary.json").is_file()
    assert saved["probe"]["throughput"]["train"]["frames"] > 0
    assert saved["casme2_estimate"]["hours"] > 0


def test_mespot_spot_runs_on_a_kept_checkpoint(check):
    _, saved, _, work, _ = check
    spot = saved["spot"]
    assert spot["realtime"] > 0 and spot["frames"] > 0
    assert spot["checkpoint"].startswith(str(work))


def test_the_report_names_each_section_and_goes_only_where_told(check):
    _, _, report, _, unchanged = check
    for section in SECTIONS:
        assert section in report, section
    assert "python -m mespot.bench.gpu --profile cpu" in report
    assert unchanged, "the check wrote into experiments/bench despite --out"
