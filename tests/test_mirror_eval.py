"""model.test_time=[mirror]: evaluation looks at each window and at its mirror image, and
averages."""

import pytest
import torch

from mespot.data.inputs import InputSpec
from mespot.errors import UserError
from mespot.module import SpotterModule


def spotter(mirror_eval, use_flow=True, inputs=None):
    torch.manual_seed(0)
    return SpotterModule(
        in_chans=3, backbone={"name": "vovnet", "width": 0.25},
        neck={"level_dims": (16, 16, 16), "out_dim": 16},
        test_time=["mirror"] if mirror_eval else [],
        inputs={"use_flow": use_flow} if inputs is None else inputs,
    )  # fmt: skip


def window():
    """Two windows of 16 frames: a grey frame and two more channels (the flow's x and y)."""
    return torch.rand(2, 16, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_a_mirror_image_negates_the_horizontal_flow_and_mirrored_again_is_the_window():
    x = window()
    m = InputSpec(use_flow=True).mirror(x)
    assert torch.equal(m[..., 0, :, :], x[..., 0, :, :].flip(-1))
    assert torch.equal(m[..., 1, :, :], -x[..., 1, :, :].flip(-1))
    assert torch.equal(m[..., 2, :, :], x[..., 2, :, :].flip(-1))
    assert torch.equal(InputSpec(use_flow=True).mirror(m), x)
    assert torch.equal(
        InputSpec(use_flow=False).mirror(x), x.flip(-1)
    )  # no flow: nothing to negate


@pytest.mark.parametrize("use_flow", [True, False])
def test_evaluation_averages_a_window_with_its_mirror_image(use_flow):
    plain, both = spotter(False, use_flow).eval(), spotter(True, use_flow).eval()
    x = window()
    with torch.no_grad():
        seen, mirrored = plain(x), plain(InputSpec(use_flow=use_flow).mirror(x))
        averaged = both(x)
        again = both(InputSpec(use_flow=use_flow).mirror(x))
    for i in (0, 1):  # logits, distances
        assert not torch.allclose(seen[i], mirrored[i])  # the mirror image is a second look
        torch.testing.assert_close(averaged[i], (seen[i] + mirrored[i]) / 2)
        torch.testing.assert_close(again[i], averaged[i])  # so both score alike


def test_training_sees_each_window_once():
    plain, both = spotter(False).train(), spotter(True).train()
    x = window()
    torch.testing.assert_close(both(x)[0], plain(x)[0])


def test_a_mirror_view_needs_to_know_whether_flow_is_fed():
    with pytest.raises(UserError, match="test_time needs inputs.use_flow"):
        spotter(True, inputs={})


def test_an_unknown_view_is_named():
    with pytest.raises(UserError, match=r"model.test_time=\['upside_down'\]: unknown view"):
        SpotterModule(in_chans=3, backbone={"name": "vovnet", "width": 0.25},
                      neck={"level_dims": (16,), "out_dim": 16}, test_time=["upside_down"],
                      inputs={"use_flow": True})  # fmt: skip
