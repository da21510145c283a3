"""Resuming `mespot-train` after a kill -9 ends exactly as the uninterrupted fold: the same epoch
kept, thresholds, weights, predictions.csv and metrics.json; a checkpoint that cannot resume the
run is one line naming the file, or what differs."""

import io
import json
import os
import signal
import subprocess
import time
from types import SimpleNamespace

import pytest
import torch
from conftest import TINY
from console import BIN, assert_user_error, run
from omegaconf import OmegaConf

import mespot.runs
from mespot import resume
from mespot.callbacks import BestCheckpoint
from mespot.checkpoint import CHECKPOINT_FORMAT
from mespot.errors import UserError

EPOCHS = 5
# deterministic, one thread each (the two runs go side by side), a learning-rate schedule to
# restore, and augmentation (shifts, mirror, light) drawn every epoch
EXACT = ["trainer.deterministic=true", "threads=1", f"trainer.max_epochs={EPOCHS}",
         "trainer.limit_train_batches=3",
         "+model.scheduler={_target_:mespot.warmup.cosine_phases,_partial_:true,"
         f"boundaries:[{EPOCHS}]}}"]  # fmt: skip


MESPOT = {"state_dict": {}, "mespot": {"format": CHECKPOINT_FORMAT}}


def arguments(tiny_mock, log_dir, *overrides) -> list[str]:
    root, cache_dir = tiny_mock
    return ["debug=default", f"data.root={root}", f"paths.cache_dir={cache_dir}",
            f"paths.log_dir={log_dir}", "data.test_subject=s16", "callbacks.progress=null",
            *TINY, *overrides]  # fmt: skip


def run_folder(log_dir):
    (folder,) = (log_dir / "train" / "runs").iterdir()
    return folder


def saved_epoch(checkpoint) -> int | None:
    """The epoch a checkpoint holds; None while there is none."""
    try:
        return torch.load(checkpoint, map_location="cpu", weights_only=True)["epoch"]
    except FileNotFoundError:
        return None


def start(tiny_mock, log_dir) -> subprocess.Popen:
    """A fold of EXACT's settings, its messages in log_dir/stderr.txt (a pipe could fill)."""
    with open(log_dir / "stderr.txt", "w") as stderr:
        return subprocess.Popen([str(BIN / "mespot-train"), *arguments(tiny_mock, log_dir, *EXACT)],
                                cwd=log_dir, stdout=subprocess.DEVNULL, stderr=stderr)  # fmt: skip


def messages(log_dir) -> str:
    return (log_dir / "stderr.txt").read_text()[-3000:]


def killed_after_epoch(tiny_mock, log_dir, epoch: int):
    """Start a fold, kill -9 it as soon as its last.ckpt holds `epoch` or later: its run folder."""
    process, deadline = start(tiny_mock, log_dir), time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        last = [*log_dir.glob("train/runs/*/checkpoints/last.ckpt")]
        saved = saved_epoch(last[0]) if last else None
        if saved is not None and saved >= epoch:
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    assert process.wait() == -signal.SIGKILL, messages(log_dir)
    return run_folder(log_dir)


def weights(checkpoint) -> dict:
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def runs(tiny_mock, tmp_path_factory):
    """(uninterrupted run folder, killed-and-resumed run folder, the epoch it resumed from)."""
    whole_logs, killed_logs = tmp_path_factory.mktemp("whole"), tmp_path_factory.mktemp("killed")
    whole = start(tiny_mock, whole_logs)  # side by side
    folder = killed_after_epoch(tiny_mock, killed_logs, epoch=1)
    assert whole.wait(timeout=600) == 0, messages(whole_logs)
    # killed in the middle: after epoch 1, before the last epoch and the test
    resumed_from = saved_epoch(folder / "checkpoints" / "last.ckpt")
    assert 1 <= resumed_from < EPOCHS - 1 and not (folder / "metrics.json").exists()
    resumed = run("mespot-train", *arguments(tiny_mock, killed_logs, *EXACT,
                  f"ckpt_path={folder}/checkpoints/last.ckpt"), cwd=killed_logs)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert run_folder(killed_logs) == folder  # went on in its own run folder
    return run_folder(whole_logs), folder, resumed_from


def test_a_fold_killed_and_resumed_from_last_ckpt_ends_as_the_uninterrupted_one(runs):
    reference, folder, resumed_from = runs
    (record,) = json.loads((folder / "resumed.json").read_text())
    assert record["epoch"] == resumed_from and record["exact"]
    kept = sorted(p.name for p in (folder / "checkpoints").glob("epoch_*.ckpt"))
    assert kept == sorted(p.name for p in (reference / "checkpoints").glob("epoch_*.ckpt"))
    (best,) = kept  # one kept epoch: the interrupted run's best was not forgotten
    for name in (best, "last.ckpt"):  # weights and thresholds, bit for bit
        a, b = weights(folder / "checkpoints" / name), weights(reference / "checkpoints" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    for name in ("predictions.csv", "metrics.json"):
        assert (folder / name).read_bytes() == (reference / name).read_bytes(), name


def test_a_checkpoint_of_another_model_names_what_differs(tiny_mock, runs):
    _, folder, _ = runs
    log_dir, last = folder.parent.parent.parent, folder / "checkpoints" / "last.ckpt"
    config = (folder / "config.yaml").read_bytes()
    result = run("mespot-train", *arguments(tiny_mock, log_dir, *EXACT, f"ckpt_path={last}",
                 "model/backbone=resnet_small", "data.use_flow=false"), cwd=log_dir)  # fmt: skip
    line = assert_user_error(
        result,
        str(last),
        "model.backbone.name (checkpoint vovnet, config resnet)",
        "in_chans",
        "data.use_flow (checkpoint True, config False)",
    )
    assert "data.window" not in line  # only what differs
    assert (folder / "config.yaml").read_bytes() == config  # the run folder is left as it was


def test_a_truncated_checkpoint_is_one_line_naming_it(tiny_mock, tmp_path):
    truncated = fake_run(tmp_path) / "checkpoints" / "last.ckpt"
    buffer = io.BytesIO()
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, buffer)
    truncated.write_bytes(buffer.getvalue()[:1000])
    result = run("mespot-train", *arguments(tiny_mock, tmp_path, f"ckpt_path={truncated}"),
                 cwd=tmp_path)  # fmt: skip
    assert_user_error(result, str(truncated), "not a readable checkpoint")


def fake_run(tmp_path):
    """A run folder as mespot-train leaves it, as far as resuming looks."""
    folder = tmp_path / "train" / "runs" / "2020-01-01_00-00-00"
    (folder / ".hydra").mkdir(parents=True), (folder / "checkpoints").mkdir()
    return folder


@pytest.mark.parametrize(
    ("where", "contents", "message"),
    [
        ("checkpoints/nope.ckpt", None, "no such file"),
        ("checkpoints/notes.ckpt", b"not a checkpoint", "not a readable checkpoint"),
        ("checkpoints/other.ckpt", {"state_dict": {}}, "not written by mespot-train"),
        ("checkpoints/old.ckpt", {"state_dict": {}, "mespot": {"format": 1}}, "format 1"),
        ("elsewhere/last.ckpt", MESPOT, "resumes in its own run folder"),
    ],
)
def test_a_checkpoint_that_cannot_resume_the_run_says_why(tmp_path, where, contents, message):
    folder = fake_run(tmp_path)
    path = folder / where
    path.parent.mkdir(exist_ok=True)
    if isinstance(contents, bytes):
        path.write_bytes(contents)
    elif contents is not None:
        torch.save(contents, path)
    cfg = OmegaConf.create({"ckpt_path": str(path), "paths": {"output_dir": str(folder)}})
    with pytest.raises(UserError, match=message) as error:
        resume.read(cfg)
    assert str(path) in str(error.value)
    cfg.paths.output_dir = mespot.runs.run_folder(str(path), "new")  # where the run would write
    assert cfg.paths.output_dir == (str(folder) if where.startswith("checkpoints") else "new")


def test_a_resume_with_loader_workers_says_it_is_not_exact(tmp_path, caplog):
    """Their augmentation generators live in the worker processes: not in the checkpoint."""
    data = {"cache_folder": "c", "num_workers": 2, "augment": True, "seed": 0}
    checkpoint = {**MESPOT, "epoch": 3, "hyper_parameters": {"in_chans": 3},
                  "datamodule_hyper_parameters": {**data, "cache_folder": "moved"}}  # fmt: skip
    cfg = OmegaConf.create({"ckpt_path": "last.ckpt", "paths": {"output_dir": str(tmp_path)}})
    model, datamodule = SimpleNamespace(hparams={"in_chans": 3}), SimpleNamespace(hparams=data)
    resume.check(cfg, checkpoint, model, datamodule, ["ckpt_path=last.ckpt"])
    (record,) = json.loads((tmp_path / "resumed.json").read_text())
    assert record["epoch"] == 3 and not record["exact"]
    assert "data.num_workers=2" in record["why_not_exact"]
    assert "not exact" in caplog.text and "data.num_workers=0 resumes exactly" in caplog.text


def test_a_moved_run_folder_keeps_its_best_epoch(tmp_path):
    """Lightning forgets the best score when the checkpoint folder's path changed."""
    old, new = "/old/run/checkpoints", str(tmp_path / "run" / "checkpoints")
    best = BestCheckpoint(dirpath=new, monitor="val/overall_f1", mode="max")
    score = torch.tensor(0.4)
    best.load_state_dict({"monitor": "val/overall_f1", "best_model_score": score,
                          "best_model_path": f"{old}/epoch_003.ckpt", "current_score": score,
                          "dirpath": old, "best_k_models": {f"{old}/epoch_003.ckpt": score},
                          "kth_best_model_path": f"{old}/epoch_003.ckpt", "kth_value": score,
                          "last_model_path": ""})  # fmt: skip
    assert best.best_model_score == score and best.kth_value == score
    assert best.best_model_path == best.kth_best_model_path == f"{new}/epoch_003.ckpt"
    assert best.best_k_models == {f"{new}/epoch_003.ckpt": score}
