"""Per-frame 2D backbones: one D-vector per image, then per window (B, D, L).

Every backbone is a timm model built from plain data (no weights are ever downloaded), with
global average pooling and no classifier, so forward maps (N, C, H, W) → (N, D) and the module
carries `out_dim` = D. `width` options give CPU-sized variants of the same architectures.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import timm
import torch
from timm.models.densenet import DenseNet
from timm.models.vovnet import VovNet
from torch import nn

from mespot.errors import UserError

# The paper's Table 1. The paper lists the "Inception" stem as 3×3/64/s2, 3×3/128/s2 while its
# text says "three convolution layers"; timm's VoVNet stem is exactly that with the middle layer
# made explicit: 3×3/stem_chs[0]/s2 → 3×3/stem_chs[1]/s1 → 3×3/stem_chs[2]/s2 (stem stride 4),
# so [64, 64, 128] gives 64/s2, (64/s1), 128/s2. The first OSA stage then has no max-pool and
# stages 2-4 each start with a stride-2 max-pool (total stride 32), as in the VoVNet paper.
VOVNET_PAPER = dict(
    stem_chs=[64, 64, 128],
    stage_conv_chs=[64, 80, 96, 112],
    stage_out_chs=[128, 256, 384, 512],
    layer_per_block=5,
    block_per_stage=[1, 1, 1, 1],
    residual=False,
    depthwise=False,
    attn="",
)

# The standard ResNet widths (stem, then the four stages' base channels) that `width` scales.
_RESNET_STEM = 64
_RESNET_CHANNELS = (64, 128, 256, 512)


def scale_channels(channels: int, width: float) -> int:
    """`channels * width` rounded to a multiple of 8 (at least 8): keeps narrow variants valid."""
    return max(8, round(channels * width / 8) * 8)


def _vovnet(in_chans: int, *, width: float = 1.0) -> nn.Module:
    """The paper's VoVNet (Table 1); `width` multiplies every channel count."""
    cfg = dict(VOVNET_PAPER)
    for key in ("stem_chs", "stage_conv_chs", "stage_out_chs"):
        cfg[key] = [scale_channels(c, width) for c in VOVNET_PAPER[key]]
    return VovNet(cfg, in_chans=in_chans, num_classes=0, global_pool="avg")


def _resnet(
    in_chans: int,
    *,
    model: str = "resnet18",
    width: float = 1.0,
    layers: Sequence[int] | None = None,
) -> nn.Module:
    """Any timm ResNet by name; `width` scales the stem and stage widths, `layers` the depth.

    timm's ResNet entry points let keyword arguments override their own config, so a narrow or
    shallow variant keeps the block type (basic/bottleneck) of the named model.
    """
    known = timm.list_models(module="resnet")
    if model not in known:
        raise UserError(f"unknown ResNet model {model!r}; timm's ResNets include {known[:8]}, …")
    overrides: dict = {}
    if width != 1.0:
        overrides["stem_width"] = scale_channels(_RESNET_STEM, width)
        overrides["channels"] = tuple(scale_channels(c, width) for c in _RESNET_CHANNELS)
    if layers is not None:
        overrides["layers"] = tuple(int(n) for n in layers)
    return timm.create_model(
        model, pretrained=False, in_chans=in_chans, num_classes=0, global_pool="avg", **overrides
    )


def _densenet(
    in_chans: int,
    *,
    growth_rate: int = 32,
    block_config: Sequence[int] = (6, 12, 24, 16),
    bn_size: int = 4,
) -> nn.Module:
    """timm DenseNet (default: densenet121). The stem width is timm's 2 × growth_rate."""
    return DenseNet(
        growth_rate=growth_rate,
        block_config=tuple(int(n) for n in block_config),
        bn_size=bn_size,
        in_chans=in_chans,
        num_classes=0,
        global_pool="avg",
    )


BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "vovnet": _vovnet,
    "resnet": _resnet,
    "densenet": _densenet,
}


def _check_options(name: str, builder: Callable[..., nn.Module], options: dict) -> None:
    """Name every unknown option at once (a plain TypeError would name only the first)."""
    accepted = [p for p in inspect.signature(builder).parameters if p != "in_chans"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise UserError(f"unknown option(s) {unknown} for backbone {name!r}; accepted: {accepted}")


def build_backbone(name: str, in_chans: int, **options) -> nn.Module:
    """Build a per-frame backbone: forward (N, in_chans, H, W) → (N, out_dim)."""
    if name not in BACKBONES:
        raise UserError(f"unknown backbone {name!r}; known: {sorted(BACKBONES)}")
    builder = BACKBONES[name]
    _check_options(name, builder, options)
    model = builder(in_chans, **options)
    model.out_dim = int(model.num_features)
    return model


class FrameEncoder(nn.Module):
    """Apply a per-frame backbone to every frame of a window: (B, L, C, H, W) → (B, D, L).

    The output is channels-first over time so 1D temporal convolutions follow directly. Images
    run channels-last, the layout oneDNN and cuDNN convolve fastest (1.4× on a 2-core CPU in
    fp32, 2.7× with bf16 autocast).
    `chunk` bounds memory by running at most that many frames through the backbone at once; in
    training mode BatchNorm then sees per-chunk statistics, so results match unchunked runs
    exactly only in eval mode.

    Evaluation windows overlap (by half at the default stride), so most frames sit in two of
    them. Between `remember()` and `forget()` an evaluating encoder given each frame's key
    (`frame_keys`: video and position; the same key, the same input) encodes a frame once and
    reuses its features for every window of this and the next call that holds it. In eval mode
    a frame's features do not depend on the other frames beside it, so the outputs are the
    same; a new `remember()` starts empty, so features of older weights are never reused.
    """

    def __init__(self, backbone: nn.Module, chunk: int | None = None) -> None:
        super().__init__()
        if chunk is not None and chunk < 1:
            raise UserError(f"chunk must be a positive number of frames, got {chunk}")
        self.backbone = backbone.to(memory_format=torch.channels_last)
        self.chunk = chunk
        self.out_dim = int(backbone.out_dim)
        self._memory: dict[str, dict[int, torch.Tensor]] | None = None

    def remember(self) -> None:
        """Start reusing frames' features (one evaluation pass, these weights)."""
        self._memory = {}

    def forget(self) -> None:
        self._memory = None

    def forward(
        self, frames: torch.Tensor, keys: torch.Tensor | None = None, view: str = ""
    ) -> torch.Tensor:
        """`keys` (B, L): each frame's key, negative where it must not be reused; `view` names
        what the frames went through (e.g. "mirror"), which the keys do not say."""
        batch, length = frames.shape[:2]
        images = frames.flatten(0, 1)
        if self._memory is None or keys is None or self.training:
            return self._encode(images).view(batch, length, -1).transpose(1, 2)
        return (
            self._reuse(images, keys.flatten().tolist(), view)
            .view(batch, length, -1)
            .transpose(1, 2)
        )

    def _reuse(self, images: torch.Tensor, keys: list[int], view: str) -> torch.Tensor:
        """Features of `images`, each key's frame encoded at most once over this call and the
        last one of the same view (which is all that consecutive windows share)."""
        known = self._memory.get(view, {})
        fresh: dict[int, int] = {}  # key → its first image in this call
        todo = []
        for i, key in enumerate(keys):
            if key < 0 or (key not in known and key not in fresh):
                todo.append(i)
                if key >= 0:
                    fresh[key] = len(todo) - 1
        encoded = self._encode(images[todo]) if todo else None
        rows, next_known = [], {}
        unkeyed = iter(j for j, i in enumerate(todo) if keys[i] < 0)
        for key in keys:
            if key < 0:
                rows.append(encoded[next(unkeyed)])
                continue
            feature = encoded[fresh[key]] if key in fresh else known[key]
            next_known[key] = feature
            rows.append(feature)
        self._memory[view] = next_known
        return torch.stack(rows)

    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        images = images.contiguous(memory_format=torch.channels_last)
        if self.chunk is None:
            return self.backbone(images)
        return torch.cat([self.backbone(part) for part in images.split(self.chunk)])


def frame_keys(videos: torch.Tensor, starts: torch.Tensor, valid: torch.Tensor, length: int):
    """(B, L) keys of a batch's window frames for FrameEncoder: video × 2³² + position, and −1
    for the frames past a short video's end (held copies, not frames of the video)."""
    steps = torch.arange(length)
    positions = starts.cpu()[:, None] + steps
    keys = videos.cpu()[:, None].long() * 2**32 + positions
    return torch.where(steps < valid.cpu()[:, None], keys, -1)
