"""The spotter network: per-frame features → temporal FPN → anchor-free head.

Each frame's features come from branches built from the input layout (mespot/data/inputs.py):
the backbone over all of a frame's channels, and with `motion_grid` the motion energy of the
channels that change with the face (mespot/models/motion.py). With `gated`, the backbone's
features enter through the warm-up's gate (mespot/warmup.py). Outside training, `test_time`
lists the views of each window whose outputs are averaged with its own (test-time augmentation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import reduce

import torch
from torch import Tensor, nn

from mespot.data.inputs import InputSpec
from mespot.errors import UserError
from mespot.models.backbones import FrameEncoder, build_backbone
from mespot.models.fpn import TemporalFPN
from mespot.models.head import SpottingHead, default_ranges, make_points
from mespot.models.motion import MotionEnergy
from mespot.warmup import Gate

# Test-time views: (inputs, windows) → the windows as the view shows them. A mirror image is a
# second look at the same face (training draws it half the time), so averaging the two ranks
# candidates by what both agree on.
VIEWS = {"mirror": InputSpec.mirror}


class Spotter(nn.Module):
    """(B, L, C, H, W) windows → class logits (B, P, 2), distances (B, P, 2), points (P, 4)."""

    def __init__(
        self,
        in_chans: int,
        inputs: InputSpec,
        backbone: Mapping,  # name + options of mespot.models.backbones.build_backbone
        neck: Mapping,  # level_dims, out_dim of TemporalFPN
        head: Mapping | None = None,  # num_convs, prior_prob, ranges
        chunk: int | None = None,  # frames per backbone pass, to bound memory
        motion_grid: int = 0,  # blocks per side of the motion-energy features; 0: none
        gated: bool = False,  # the backbone's features enter through the warm-up's gate
        test_time: Sequence[str] = (),  # views averaged with each window outside training
    ):
        super().__init__()
        unknown = [view for view in test_time if view not in VIEWS]
        if unknown:
            raise UserError(f"model.test_time={list(test_time)}: unknown view(s) {unknown}; "
                            f"known: {', '.join(VIEWS)}")  # fmt: skip
        self.inputs, self.test_time = inputs, tuple(test_time)
        options = dict(backbone)
        self.encoder = FrameEncoder(build_backbone(options.pop("name"), in_chans, **options), chunk)
        self.motion = MotionEnergy(inputs.change_channels(), motion_grid) if motion_grid else None
        if gated and self.motion is None:
            raise UserError("model.backbone_warmup needs model.motion_grid (and frame diffs)")
        self.gate = Gate(self.encoder.out_dim) if gated else None
        motion_dim = self.motion.out_dim if self.motion else 0
        self.neck = TemporalFPN(self.encoder.out_dim + motion_dim, **neck)
        head = dict(head or {})
        ranges = head.pop("ranges", None)
        self.ranges = (
            [tuple(r) for r in ranges] if ranges else default_ranges(len(neck["level_dims"]))
        )
        self.head = SpottingHead(self.neck.out_dim, strides=self.neck.strides, **head)

    def forward(
        self, x: Tensor, keys: Tensor | None = None, skip_backbone: bool = False
    ) -> tuple[Tensor, Tensor, Tensor]:
        """`keys` (B, L): each frame's key (`frame_keys`), so that an evaluation pass encodes
        every frame once (FrameEncoder); `skip_backbone`: a warm-up epoch."""
        outputs = [self._spot(x, keys, skip_backbone)]
        if not self.training:
            for view in self.test_time:
                outputs.append(self._spot(VIEWS[view](self.inputs, x), keys, view=view))
        if len(outputs) == 1:
            return outputs[0]
        logits = reduce(torch.add, [o[0] for o in outputs]) / len(outputs)
        offsets = reduce(torch.add, [o[1] for o in outputs]) / len(outputs)
        return logits, offsets, outputs[0][2]

    def _spot(
        self, x: Tensor, keys: Tensor | None, skip_backbone: bool = False, view: str = ""
    ) -> tuple[Tensor, Tensor, Tensor]:
        frames = self._backbone_features(x, keys, view, skip_backbone)
        # mixed precision pays off in the per-frame backbone; the temporal part is cheap, and
        # scores in full precision keep candidates from tying
        with torch.autocast(x.device.type, enabled=False):
            if self.motion is not None:
                frames = torch.cat([frames, self.motion(x.float())], dim=1)
            features = self.neck(frames)
            logits, offsets = self.head(features)
        lengths = [f.shape[-1] for f in features]
        points = make_points(lengths, self.neck.strides, self.ranges, device=x.device)
        return logits, offsets, points

    def _backbone_features(self, x: Tensor, keys: Tensor | None, view: str, skip: bool) -> Tensor:
        """(B, L, C, H, W) → (B, D, L): the backbone's per-frame features, through the gate.
        While the gate is closed (its warm-up), the backbone is not run: its features would be
        multiplied by 0."""
        if self.gate is None:
            return self.encoder(x, keys, view).float()
        if skip or (not self.training and self.gate.is_closed()):
            return x.new_zeros(x.shape[0], self.encoder.out_dim, x.shape[1], dtype=torch.float32)
        return self.gate(self.encoder(x, keys, view).float())
