"""The non-learned optical-flow baseline (`model=baseline`): synthetic flow, then a real fold."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY
from console import assert_quiet
from hydra.utils import instantiate

from mespot.baseline import BaselineModule
from mespot.cli.common import compose_train
from mespot.data.datamodule import SpottingDataModule
from mespot.intervals import read_intervals
from mespot.metrics import interval_iou
from mespot.models.baseline import face_box, local_maxima

FPS = 30.0
ME_INTERVAL, MAE_INTERVAL = (100, 109), (160, 205)  # frames


def profile(n: int, onset: int, apex: int, offset: int, hold: int = 0) -> torch.Tensor:
    """0 outside [onset, offset], 1 from apex for `hold` frames, raised-cosine rise and fall."""
    p = torch.zeros(n)
    p[apex : apex + hold + 1] = 1.0
    for t in range(onset, apex):
        p[t] = 0.5 - 0.5 * math.cos(math.pi * (t - onset) / (apex - onset))
    for t in range(apex + hold + 1, offset + 1):
        p[t] = 0.5 + 0.5 * math.cos(math.pi * (t - apex - hold) / (offset - apex - hold))
    return p


def synthetic_flow(n=300, size=48, me=0.5, mae=2.0, head=1.0, noise=0.01, seed=0):
    """Per-frame flow (n, 2, size, size) in pixels of a still face: a short, faint burst in one
    block region (an ME of 0.33 s), a long, held one elsewhere (a MaE of 1.5 s), a global head
    translation everywhere and a little flow noise."""
    position = torch.zeros(n, 2, size, size)
    position[:, 1, 32:40, 8:16] = (
        me * profile(n, *ME_INTERVAL[:1], 104, ME_INTERVAL[1])[:, None, None]
    )
    held = profile(n, MAE_INTERVAL[0], 170, MAE_INTERVAL[1], hold=24)
    position[:, 0, 8:16, 30:40] = mae * held[:, None, None]
    flow = torch.diff(position, dim=0, prepend=position[:1])
    t = torch.arange(n, dtype=torch.float32)
    translation = head * torch.stack([torch.cos(t / 7), 0.5 * torch.sin(t / 11)], dim=1)
    generator = torch.Generator().manual_seed(seed)
    return (
        flow + translation[:, :, None, None] + noise * torch.randn(flow.shape, generator=generator)
    )


def best(segments, scores, labels, label):
    """The highest-scored detection of a type: (segment, score)."""
    of_type = torch.nonzero(labels == label).flatten()
    assert len(of_type), f"no detection of label {label}"
    i = of_type[scores[of_type].argmax()]
    return segments[i].tolist(), float(scores[i])


def test_finds_the_short_burst_as_me_and_the_long_one_as_mae():
    segments, scores, labels = BaselineModule().spot(synthetic_flow(), FPS)
    me, me_score = best(segments, scores, labels, 1)
    mae, mae_score = best(segments, scores, labels, 0)
    assert interval_iou(np.array([me]), np.array([ME_INTERVAL]))[0, 0] >= 0.5
    assert interval_iou(np.array([mae]), np.array([MAE_INTERVAL]))[0, 0] >= 0.5
    assert (me[1] - me[0] + 1) / FPS <= 0.5
    assert 0.2 < me_score < 1 and 0.2 < mae_score < 1
    # both stand well above what the flow noise alone gives
    others = scores[[not (s[0] <= 104 <= s[1] or s[0] <= 180 <= s[1]) for s in segments.tolist()]]
    assert float(others.max()) < 0.5 * min(me_score, mae_score)


def test_global_head_translation_alone_scores_nothing():
    flow = synthetic_flow(me=0.0, mae=0.0, head=3.0, noise=0.0)
    _, scores, _ = BaselineModule().spot(flow, FPS)
    assert len(scores) == 0 or float(scores.max()) < 0.05
    # without removing it, the same translation would be a face moving everywhere
    flow = synthetic_flow(me=0.0, mae=0.0, head=0.0, noise=0.0)
    flow[150:160] += 0.5
    _, scores, _ = BaselineModule(global_motion="none").spot(flow, FPS)
    assert float(scores.max()) > 0.5
    _, scores, _ = BaselineModule().spot(flow, FPS)
    assert len(scores) == 0 or float(scores.max()) < 0.05


def test_horizons_follow_the_frame_rate():
    model = BaselineModule()
    me, mae = model.scales(200.0)
    assert (me.k, mae.k) == (80, 260)  # the MEGC 2020 baseline's, for SAMM-LV
    me, mae = model.scales(30.0)
    assert (me.k, mae.k) == (12, 39) and (me.label, mae.label) == (1, 0)


def test_local_maxima_are_positive_and_apart():
    signal = torch.tensor([0.0, 1.0, 0.5, 2.0, 0.1, -1.0, -0.5, -2.0, math.nan, 0.3])
    assert local_maxima(signal, 1) == [1, 3, 9]
    assert local_maxima(signal, 2) == [3, 9]


def test_face_box_comes_from_meta_json():
    meta = {"face": {"found": True, "detected": [60, 60, 100, 100], "crop": [40, 40, 140, 140]}}
    assert face_box(meta) == pytest.approx((20 / 140, 20 / 140, 120 / 140, 120 / 140))
    assert face_box({"face": {"found": False}}) == (0.0, 0.0, 1.0, 1.0)


def test_configs_compose_with_the_shared_debug_config():
    for overrides in (["experiment=baseline"], ["experiment=baseline", "debug=default"],
                      ["model=baseline", "debug=default"]):  # fmt: skip
        cfg = compose_train(["data.root=x", "data.test_subject=s1", *overrides])
        model = instantiate(cfg.model, in_chans=3, _convert_="all")
        assert isinstance(model, BaselineModule)
        assert sum(p.numel() for p in model.parameters()) == 0
    assert cfg.model.me_seconds == 0.4  # the last one: model=baseline without the experiment
    cfg = compose_train(["experiment=baseline", "data.root=x", "data.test_subject=s1"])
    assert cfg.name == "baseline_casme2" and cfg.trainer.max_epochs == 1
    assert cfg.trainer.limit_train_batches == 1


def test_windows_report_the_same_intervals_as_the_whole_video(tiny_mock):
    """Windows overlap; each reports the peaks of its middle part, from features computed with
    video context, so together they give what the whole video gives."""
    _, cache_dir = tiny_mock
    (folder,) = Path(cache_dir).iterdir()
    datamodule = SpottingDataModule(str(folder), "s16", val_subjects=1, window=32, stride=16,
                                    batch_size=4, num_workers=0, augment=False)  # fmt: skip
    datamodule.setup()
    model = BaselineModule(inputs={"window": 32, "stride": 16, "use_flow": True})
    model._trainer = type("Trainer", (), {"datamodule": datamodule})()
    windows = []
    for parts in datamodule.test_dataloader():
        batch = datamodule.on_after_batch_transfer(parts, 0)  # the inputs, as in training
        for b, (segments, _, labels) in enumerate(model._spot_batch("test", batch)):
            segments = (segments + int(batch["start"][b])).tolist()
            windows += [(*s, lab) for s, lab in zip(segments, labels.tolist(), strict=True)]
    info = datamodule.videos["test"][0]
    flow = torch.from_numpy(np.clip(np.load(info.folder / "flow.npy").astype(np.float32), -20, 20))
    meta = json.loads((info.folder / "meta.json").read_text())
    segments, _, labels = model.spot(flow.permute(0, 3, 1, 2), meta["fps"], face_box(meta))
    whole = {(*s, lab) for s, lab in zip(segments.tolist(), labels.tolist(), strict=True)}
    assert whole and set(windows) == whole


def train(tiny_mock, tmp_path, *overrides):
    root, cache_dir = tiny_mock
    command = [str(Path(sys.executable).parent / "mespot-train"), "experiment=baseline",
               "debug=default", f"data.root={root}", f"paths.cache_dir={cache_dir}",
               f"paths.log_dir={tmp_path}", "data.test_subject=s16", "callbacks.progress=null",
               *TINY, *overrides]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)


def test_one_fold_picks_a_threshold_on_validation_and_writes_its_results(tiny_mock, tmp_path):
    result = train(tiny_mock, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_quiet(result)  # its one-batch epochs log less often than log_every_n_steps, harmlessly
    (run,) = sorted((tmp_path / "train" / "runs").iterdir())
    predictions = read_intervals(run / "predictions.csv", scored=True)
    assert set(predictions["subject"]) <= {"s16"}
    assert predictions["score"].between(0, 1).all()
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"mae", "me", "overall", "thresholds"} <= set(metrics)
    assert all(0.0 <= t <= 1.0 for t in metrics["thresholds"].values())
    logged = pd.read_csv(run / "csv" / "version_0" / "metrics.csv")
    assert {"val/threshold_mae", "val/threshold_me", "test/overall_f1"} <= set(logged.columns)
    # plain values only: the checkpoint loads without unpickling code, and carries the threshold
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert set(checkpoint["state_dict"]) == {"thresholds"}
    assert checkpoint["state_dict"]["thresholds"].tolist() == list(metrics["thresholds"].values())
    assert checkpoint["hyper_parameters"]["me_seconds"] == 0.4
    assert checkpoint["hyper_parameters"]["inputs"]["stride"] == 16
    model = BaselineModule.load_from_checkpoint(run / "checkpoints" / "last.ckpt")
    assert model.score_thresholds() == metrics["thresholds"]
