"""The commands that need no network model start without torch, torchvision, torchmetrics or
Lightning (issue 25: they start in < 2 s; importing torch alone takes longer): each runs once on
tiny files, as its console script, in a fresh Python that then names the heavy libraries loaded.
"""

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_job

BIN = Path(sys.executable).parent
HEAVY = ("torch", "torchvision", "torchmetrics", "lightning", "pytorch_lightning")
# Runs a console script as its own process would (same __main__, same sys.argv), then prints
# which of HEAVY it imported, whether it succeeded or not.
PROBE = f"""
import runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    print("heavy:", [m for m in {HEAVY!r} if m in sys.modules], file=sys.stderr)
"""

PREDICTIONS = "subject,video,onset,offset,type,score\ns1,v1,10,30,mae,0.9\ns1,v1,50,55,me,0.4\n"
GROUND_TRUTH = "subject,video,onset,apex,offset,type\ns1,v1,12,20,30,macro-expression\n"


@pytest.fixture
def work(tmp_path, tiny_mock):
    """A folder with predictions, ground truth and a two-fold sweep; and the mock's root."""
    (tmp_path / "pred.csv").write_text(PREDICTIONS)
    (tmp_path / "gt.csv").write_text(GROUND_TRUTH)
    for job, subject in enumerate(("a", "b")):
        write_job(tmp_path / "sweep", str(job), subject)
    return tmp_path, tiny_mock[0]


# (console script, its arguments ({root}: the mock dataset), the file it writes)
COMMANDS = [
    ("mespot-evaluate", ["predictions=pred.csv", "ground_truth=gt.csv"], "metrics.json"),
    ("mespot-annotations", ["data=casme2", "data.root={root}", "out=ann"], "ann/intervals.csv"),
    ("mespot-export", ["predictions=pred.csv", "format=megc", "out=sub.csv"], "sub.csv"),
    ("mespot-aggregate", ["sweep", "--no-wandb"], "sweep/summary.md"),
    ("mespot-plot", ["predictions=pred.csv", "ground_truth=gt.csv", "video=v1"], "timeline.png"),
]


@pytest.mark.parametrize(("command", "args", "written"), COMMANDS, ids=[c[0] for c in COMMANDS])
def test_runs_without_importing_torch_or_lightning(work, command, args, written):
    folder, root = work
    args = [a.format(root=root) for a in args]
    done = subprocess.run([sys.executable, "-c", PROBE, str(BIN / command), *args], cwd=folder,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert (folder / written).is_file()
    assert done.stderr.splitlines()[-1] == "heavy: []", done.stderr[-3000:]
