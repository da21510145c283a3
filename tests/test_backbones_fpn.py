"""Per-frame backbones and the temporal FPN: shapes, sizes, chunking, gradients, config errors."""

import pytest
import torch

from mespot.errors import UserError
from mespot.models.backbones import FrameEncoder, build_backbone
from mespot.models.fpn import PAPER, SMALL, TemporalFPN

TINY = {
    "vovnet": {"width": 0.25},
    "resnet": {"width": 0.25, "layers": (1, 1, 1, 1)},
    "densenet": {"growth_rate": 8, "block_config": (2, 2, 2, 2)},
}


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_vovnet_matches_paper_size():
    model = build_backbone("vovnet", 3)
    assert model.out_dim == 512
    assert n_params(model) == pytest.approx(3.0e6, rel=0.1)


@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.parametrize("in_chans", [1, 3, 5])
@pytest.mark.parametrize("size", [64, 128])
def test_tiny_backbone_shapes(name, in_chans, size):
    model = build_backbone(name, in_chans, **TINY[name]).eval()
    with torch.no_grad():
        out = model(torch.randn(2, in_chans, size, size))
    assert isinstance(model.out_dim, int)
    assert out.shape == (2, model.out_dim)


def test_width_scales_vovnet_channels():
    assert build_backbone("vovnet", 3, width=0.25).out_dim == 128


def test_resnet_by_timm_name():
    model = build_backbone("resnet", 5, model="resnet50", width=0.125, layers=(1, 1, 1, 1))
    assert model.out_dim == 256  # bottleneck blocks kept: 4 × 64
    assert model(torch.randn(2, 5, 64, 64)).shape == (2, 256)


def test_frame_encoder_shape_and_chunking():
    backbone = build_backbone("vovnet", 5, **TINY["vovnet"])
    frames = torch.randn(2, 7, 5, 64, 64)
    whole = FrameEncoder(backbone).eval()
    chunked = FrameEncoder(backbone, chunk=3).eval()
    with torch.no_grad():
        a, b = whole(frames), chunked(frames)
    assert whole.out_dim == backbone.out_dim
    assert a.shape == (2, backbone.out_dim, 7)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    ("length", "expected"),
    [(128, [64, 32, 16, 8, 4]), (100, [50, 25, 13, 7, 4]), (5, [3, 2, 1, 1, 1])],
)
def test_fpn_levels(length, expected):
    fpn = TemporalFPN(40, **SMALL)
    levels = fpn(torch.randn(2, 40, length))
    assert [x.shape[-1] for x in levels] == expected
    assert all(x.shape[:2] == (2, SMALL["out_dim"]) for x in levels)
    assert fpn.strides == [2, 4, 8, 16, 32]
    assert fpn.out_dim == SMALL["out_dim"]


def test_gradients_reach_input_from_every_level():
    fpn = TemporalFPN(16, **SMALL)
    x = torch.randn(1, 16, 100, requires_grad=True)
    levels = fpn(x)
    for level in levels:
        (grad,) = torch.autograd.grad(level.sum(), x, retain_graph=True)
        assert grad.abs().sum() > 0


def test_paper_preset_has_table2_channels():
    fpn = TemporalFPN(512, **PAPER)
    assert [stage.conv.out_channels for stage in fpn.bottom_up] == [512, 1024, 1024, 1024, 2048]
    assert all(
        stage.conv.kernel_size == (3,) and stage.conv.stride == (2,) for stage in fpn.bottom_up
    )
    assert fpn.out_dim == 256


def test_window_through_backbone_and_fpn():
    encoder = FrameEncoder(build_backbone("vovnet", 5, **TINY["vovnet"]))
    fpn = TemporalFPN(encoder.out_dim, **SMALL)
    levels = fpn(encoder(torch.randn(1, 16, 5, 64, 64)))
    assert [tuple(x.shape) for x in levels] == [(1, 32, n) for n in (8, 4, 2, 1, 1)]


def test_unknown_backbone_name():
    with pytest.raises(ValueError, match="unknown backbone 'vgg'.*densenet.*resnet.*vovnet"):
        build_backbone("vgg", 3)


def test_unknown_backbone_options_are_all_named():
    with pytest.raises(UserError, match=r"\['depth', 'growth_rate'\].*'vovnet'.*width"):
        build_backbone("vovnet", 3, growth_rate=8, depth=2)


def test_unknown_resnet_model():
    with pytest.raises(UserError, match="unknown ResNet model 'vit_tiny'"):
        build_backbone("resnet", 3, model="vit_tiny")


def test_fpn_rejects_even_kernel():
    with pytest.raises(UserError, match="odd"):
        TemporalFPN(8, **SMALL, kernel_size=4)
