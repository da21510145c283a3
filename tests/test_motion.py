"""MotionEnergy: where, and how much more than usual, a face changes in a window."""

import pytest
import torch

from mespot.data.datamodule import diff_channels
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
    energy = MotionEnergy(diff_channels(1, [2, 8]), grid=4)
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
    energy = MotionEnergy(diff_channels(1, [2]), grid=4)
    x = window(steps=1)
    brighter = x.clone()
    brighter[:, :, 1:] *= 2
    torch.testing.assert_close(energy(brighter), energy(x), atol=0.5, rtol=0.05)


def test_colour_differences_are_averaged():
    energy = MotionEnergy(diff_channels(3, [2]), grid=4)
    assert energy.channels == [[3, 4, 5]]
    assert energy(window(colours=3, steps=1))[0, 6, 20:25].min() > 10


def test_settings_that_cannot_work_are_refused():
    with pytest.raises(UserError, match="data.frame_diffs"):
        MotionEnergy([], grid=4)
    with pytest.raises(UserError, match="motion_grid=0"):
        MotionEnergy(diff_channels(1, [2]), grid=0)
