"""MotionEnergy: where, and how much more than usual, a face changes in a window."""

import numpy as np
import pytest
import torch

from mespot.data.inputs import InputSpec
from mespot.data.rest import RestFace
from mespot.errors import UserError
from mespot.models.motion import MotionEnergy


def window(colours=1, steps=2, length=40, size=32, seed=0):
    """Frame differences of a still face with sensor noise, and one block (rows 8-15, columns
    16-23 of a 4 × 4 grid: block 6) that changes strongly in frames 20-24."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(1, length, colours * (1 + steps), size, size)
    x[:, :, :colours] = 0.5
    x[:, :, colours:] = torch.randn(1, length, colours * steps, size, size, generator=g) * 0.004
    x[:, 20:25, colours:, 8:16, 16:24] += 0.05
    return x


def test_a_block_that_moves_more_than_usual_stands_out():
    energy = MotionEnergy(
        InputSpec(
            1,
            (
                2,
                8,
            ),
        ).change_channels(),
        grid=4,
    )
    score = energy(window())  # (1, 2 × 16, 40)
    assert score.shape == (1, 32, 40) and energy.out_dim == 32
    for step in (0, 1):
        block = score[0, step * 16 + 6]
        assert block[20:25].min() > 10  # far above its usual
        assert block[:20].abs().max() < 5 and block[25:].abs().max() < 5
        others = torch.cat([score[0, step * 16 : step * 16 + 6], score[0, step * 16 + 7 : 16]])
        assert others.abs().max() < 5


def test_scores_do_not_depend_on_the_face_s_contrast():
    """A face with twice the contrast (or under a brighter light) changes twice as much
    everywhere: the same scores."""
    energy = MotionEnergy(InputSpec(1, (2,)).change_channels(), grid=4)
    x = window(steps=1)
    brighter = x.clone()
    brighter[:, :, 1:] *= 2
    torch.testing.assert_close(energy(brighter), energy(x), atol=0.5, rtol=0.05)


def test_colour_differences_are_averaged():
    energy = MotionEnergy(InputSpec(3, (2,)).change_channels(), grid=4)
    assert energy.channels == [[3, 4, 5]]
    assert energy(window(colours=3, steps=1))[0, 6, 20:25].min() > 10


def held_expression(length, size=32, seed=0):
    """Grey frames of a noisy still face whose block 6 (of a 4 × 4 grid) brightens over frames
    20-23, holds until 39 and is back by 44, with the light of the whole face rising by 0.2 over
    the window, fed as the data feed them: the frame, its difference to t − 2 and its distance
    from the face at rest (data.rest_span=length: the median of the 24 expressive frames and
    the rest around them, rest by far)."""
    g = torch.Generator().manual_seed(seed)
    frames = 0.4 + torch.randn(length, size, size, generator=g) * 0.004
    level = torch.zeros(length)
    level[20:24] = torch.linspace(0.25, 1, 4)
    level[24:40] = 1
    level[40:44] = torch.linspace(0.75, 0, 4)
    frames[:, 8:16, 16:24] += 0.1 * level[:, None, None]
    frames += torch.linspace(0, 0.2, length)[:, None, None]  # the light changes, slowly
    frames = (frames * 255).round() / 255  # as cached: uint8
    diffs = frames.clone()
    diffs[2:] -= frames[:-2]
    diffs[:2] = 0
    cached = (frames * 255).round().to(torch.uint8).numpy()
    rest = RestFace(cached, span=length).distance(cached, np.arange(length))
    return torch.stack([frames, diffs, torch.from_numpy(rest)], dim=1)[None]  # (1, L, 3, H, W)


def test_the_distance_from_the_face_at_rest_holds_through_an_expression_differences_see_move():
    energy = MotionEnergy(InputSpec(1, (2,), rest_span=120).change_channels(), grid=4)
    score = energy(held_expression(length=120))
    assert energy.out_dim == 2 * 16 and score.shape == (1, 32, 120)
    moving, held = score[0, 6], score[0, 16 + 6]
    assert held[24:40].min() > 10  # the face is away from its usual all through the hold
    assert moving[28:38].abs().max() < 5  # while it holds still, nothing changes
    assert held[:18].abs().max() < 5 and held[46:].abs().max() < 5
    others = torch.cat([score[0, 16:22], score[0, 23:]])
    assert others.abs().max() < 5  # the light's rise is taken out with each frame's mean


def test_settings_that_cannot_work_are_refused():
    with pytest.raises(UserError, match="data.frame_diffs"):
        MotionEnergy([], grid=4)
    with pytest.raises(UserError, match="motion_grid=0"):
        MotionEnergy(InputSpec(1, (2,)).change_channels(), grid=0)


def spotter(backbone_warmup=0, motion_grid=4, in_chans=3, inputs=None, **options):
    """A tiny spotter on grey frames with differences t−2 and t−8, no flow."""
    from mespot.module import SpotterModule

    torch.manual_seed(0)
    return SpotterModule(
        in_chans=in_chans, backbone={"name": "vovnet", "width": 0.25},
        neck={"level_dims": [16, 16, 16], "out_dim": 16}, motion_grid=motion_grid,
        backbone_warmup=backbone_warmup, inputs=inputs or {"frame_diffs": [2, 8]}, **options,
    )  # fmt: skip


def outputs(model, x):
    logits, offsets, _ = model(x)
    return logits, offsets


def test_warm_up_epochs_train_on_the_motion_scores_without_running_the_backbone(monkeypatch):
    model = spotter(backbone_warmup=2).train()
    x = window(steps=2, length=32)

    def refuse(*_):
        raise AssertionError("the backbone ran during the warm-up")

    monkeypatch.setattr(model.spotter.encoder, "forward", refuse)
    logits, offsets = outputs(model, x)
    (logits.sum() + offsets.sum()).backward()
    assert model.spotter.gate.weight.grad is None and model.spotter.gate.is_closed()
    assert all(p.grad is None for p in model.spotter.encoder.parameters())
    neck = model.spotter.neck.parameters()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in neck)
    # evaluated with the gate still shut, the model is the one the warm-up trained
    torch.testing.assert_close(outputs(model.eval(), x), (logits, offsets))


def test_after_the_warm_up_the_gate_opens_to_the_backbone(monkeypatch):
    model = spotter(backbone_warmup=2).train()
    monkeypatch.setattr(type(model), "current_epoch", property(lambda self: 2))
    x = window(steps=2, length=32)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    shut = outputs(model, x)
    (shut[0].sum() + shut[1].sum()).backward()
    # the backbone ran; the gate learns which of its (still random) features to let through,
    # the backbone nothing yet: nothing of it reaches the loss
    assert model.spotter.gate.weight.grad.abs().sum() > 0
    assert all(not p.grad.any() for p in model.spotter.encoder.parameters() if p.grad is not None)
    optimizer.step()
    optimizer.zero_grad()
    opened = outputs(model, x)
    assert not torch.allclose(opened[0], shut[0])  # its features now reach the head
    (opened[0].sum() + opened[1].sum()).backward()
    assert any(p.grad.abs().sum() > 0 for p in model.spotter.encoder.parameters())  # and it learns


def test_a_warm_up_without_motion_scores_is_refused():
    with pytest.raises(UserError, match="backbone_warmup needs model.motion_grid"):
        spotter(backbone_warmup=2, motion_grid=0)


def test_the_spotter_scores_the_distance_from_the_face_at_rest_beside_the_differences():
    model = spotter(in_chans=4, inputs={"frame_diffs": [2, 8], "rest_span": 300})
    motion = model.spotter.motion
    assert motion.channels == [[1], [2], [3]] and motion.out_dim == 3 * 16
    logits, offsets = outputs(model, window(steps=3, length=32))
    assert logits.isfinite().all() and offsets.isfinite().all()
