"""Each frame is encoded once per evaluation pass: the same outputs, fewer backbone images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mespot.data.dataset import WindowDataset, collate
from mespot.data.inputs import InputSpec
from mespot.data.videos import VideoInfo
from mespot.models.backbones import frame_keys
from mespot.models.fpn import SMALL
from mespot.module import SpotterModule

INPUTS = {"window": 16, "stride": 8, "use_flow": True, "frame_diffs": [2], "rest_span": 0}


@pytest.fixture
def videos(tmp_path):
    """Two cached videos: one of 40 frames (windows overlapping by half) and one shorter than a
    window (held frames past its end)."""
    from mespot.data import cache

    rng = np.random.default_rng(0)
    infos = []
    for name, n in (("long", 40), ("short", 11)):
        writer = cache.VideoWriter(tmp_path / name, n, (32, 32))
        writer.frames[:] = rng.integers(0, 256, (n, 32, 32), dtype=np.uint8)
        writer.flow[:] = rng.normal(0, 1, (n, 32, 32, 2)).astype(np.float16)
        writer.commit({"source_frames": list(range(n))})
        infos.append(VideoInfo("s1", name, tmp_path / name, n, 30.0, list(range(n)),
                               np.zeros((0, 2)), np.zeros(0, dtype=int), None))  # fmt: skip
    return infos


def model(in_chans: int, mirror_eval: bool) -> SpotterModule:
    torch.manual_seed(0)
    backbone = {"name": "vovnet", "width": 0.25}
    views = ["mirror"] if mirror_eval else []
    return SpotterModule(in_chans, backbone, SMALL, test_time=views, inputs=INPUTS).eval()


class CountingBackbone(torch.nn.Module):
    """The backbone, counting the images it is given."""

    def __init__(self, backbone):
        super().__init__()
        self.inner, self.images = backbone, 0
        self.out_dim = backbone.out_dim

    def forward(self, images):
        self.images += images.shape[0]
        return self.inner(images)


def keys(batch: dict) -> torch.Tensor:
    return frame_keys(batch["video"], batch["start"], batch["valid"], INPUTS["window"])


def evaluate(spotter, dataset, batch_size: int, reuse: bool):
    counting = spotter.spotter.encoder.backbone = CountingBackbone(spotter.spotter.encoder.backbone)
    if reuse:
        spotter.spotter.encoder.remember()
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate)
    with torch.no_grad():
        logits = [spotter(dataset.inputs.assemble(b), keys(b))[0] for b in loader]
    spotter.spotter.encoder.forget()
    spotter.spotter.encoder.backbone = counting.inner
    return torch.cat(logits), counting.images


@pytest.mark.parametrize("batch_size", [1, 3, 4])
@pytest.mark.parametrize("mirror_eval", [False, True])
def test_reusing_frames_changes_no_output_and_encodes_each_frame_once(
    videos, batch_size, mirror_eval
):
    dataset = WindowDataset(videos, 16, 8, InputSpec(frame_diffs=(2,)))
    spotter = model(dataset.inputs.channels, mirror_eval)
    plain, encoded = evaluate(spotter, dataset, batch_size, reuse=False)
    reused, encoded_once = evaluate(spotter, dataset, batch_size, reuse=True)
    assert torch.equal(plain, reused)
    views = 2 if mirror_eval else 1
    assert encoded == views * len(dataset) * 16
    # every frame of the long video once; the short one's 11 frames and its 5 held copies
    assert encoded_once == views * (40 + 16)


def test_a_new_pass_never_reuses_features_of_older_weights(videos):
    dataset = WindowDataset(videos, 16, 8, InputSpec(frame_diffs=(2,)))
    spotter = model(dataset.inputs.channels, mirror_eval=False)
    before, _ = evaluate(spotter, dataset, 4, reuse=True)
    with torch.no_grad():
        for p in spotter.spotter.encoder.parameters():
            p.add_(0.05)
    after, _ = evaluate(spotter, dataset, 4, reuse=True)
    fresh = model(dataset.inputs.channels, mirror_eval=False)
    fresh.load_state_dict(spotter.state_dict())
    expected, _ = evaluate(fresh, dataset, 4, reuse=False)
    assert not torch.equal(before, after) and torch.equal(after, expected)


def test_training_and_calls_without_keys_encode_every_frame(videos):
    dataset = WindowDataset(videos, 16, 8, InputSpec(frame_diffs=(2,)))
    spotter = model(dataset.inputs.channels, mirror_eval=False)
    batch = collate([dataset[i] for i in range(3)])
    x = dataset.inputs.assemble(batch)
    spotter.spotter.encoder.remember()
    counting = spotter.spotter.encoder.backbone = CountingBackbone(spotter.spotter.encoder.backbone)
    with torch.no_grad():
        spotter(x)  # no keys
        spotter.train()
        spotter(x, keys(batch))  # training: weights change every step
    assert counting.images == 2 * 3 * 16


def test_frame_keys_mark_the_held_frames_past_a_video_s_end():
    keys = frame_keys(torch.tensor([0, 1]), torch.tensor([8, 0]), torch.tensor([16, 11]), 16)
    assert keys[0].tolist() == list(range(8, 24))
    assert keys[1, :11].tolist() == [2**32 + p for p in range(11)]
    assert (keys[1, 11:] == -1).all()
