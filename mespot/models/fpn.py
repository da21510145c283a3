"""1D temporal feature pyramid (the paper's Table 2).

Bottom-up: n stride-2 3×1 convs turn the per-frame features (B, in_dim, L) into levels of length
ceil(L/2), ceil(L/4), …, ceil(L/2^n). Top-down: 1×1 laterals bring every level to one width,
each coarser level is upsampled (nearest) to the next finer length and added, and a 3×1 conv
smooths each sum, so the shared head sees the same width on every level.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mespot.errors import UserError

# Table 2: 512×64, 1024×32, 1024×16, 1024×8, 2048×4 for a 128-frame window.
PAPER = dict(level_dims=(512, 1024, 1024, 1024, 2048), out_dim=256)
# Same shape, CPU-sized (tests, demos, smoke runs).
SMALL = dict(level_dims=(32, 64, 64, 64, 128), out_dim=32)


def norm_groups(channels: int, max_groups: int = 32, min_group_size: int = 4) -> int:
    """Most groups (≤ max_groups) dividing `channels` with ≥ min_group_size channels each.

    A floor on the group size keeps the statistics meaningful on short coarse levels (length 4
    at the top of the paper's pyramid), where one channel per group would average 4 values.
    """
    start = max(1, min(max_groups, channels // min_group_size))
    return next(g for g in range(start, 0, -1) if channels % g == 0)


def _down_stage(in_dim: int, out_dim: int, kernel_size: int) -> nn.Sequential:
    """Stride-2 conv + GroupNorm + ReLU; with odd k and padding k//2 it gives length ceil(L/2).

    GroupNorm, not BatchNorm: SAMM-LV trains with batch 2, so at the coarsest level BatchNorm
    would estimate each channel's statistics from 2 × 4 values and train/eval would disagree;
    GroupNorm normalises each sample on its own, independent of the batch size.
    """
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv1d(in_dim, out_dim, kernel_size, 2, kernel_size // 2, bias=False),
            norm=nn.GroupNorm(norm_groups(out_dim), out_dim),
            act=nn.ReLU(inplace=True),
        )
    )


class TemporalFPN(nn.Module):
    """(B, in_dim, L) → list of len(level_dims) tensors (B, out_dim, ceil(L / stride)), finest
    first; `strides[i]` = 2^(i+1) is level i's step in input frames."""

    def __init__(
        self,
        in_dim: int,
        level_dims: Sequence[int],
        out_dim: int,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise UserError(f"FPN kernel_size must be odd (got {kernel_size}) to halve lengths")
        if not level_dims:
            raise UserError("the FPN needs at least one level")
        level_dims = [int(d) for d in level_dims]
        ins = [in_dim, *level_dims[:-1]]
        self.bottom_up = nn.ModuleList(
            _down_stage(i, o, kernel_size) for i, o in zip(ins, level_dims, strict=True)
        )
        self.lateral = nn.ModuleList(nn.Conv1d(d, out_dim, 1) for d in level_dims)
        self.smooth = nn.ModuleList(
            nn.Conv1d(out_dim, out_dim, kernel_size, padding=kernel_size // 2) for _ in level_dims
        )
        self.strides = [2 ** (i + 1) for i in range(len(level_dims))]
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.bottom_up:
            x = stage(x)
            features.append(x)
        merged = self.lateral[-1](features[-1])
        outputs = [self.smooth[-1](merged)]
        for i in range(len(features) - 2, -1, -1):
            finer = features[i]
            up = F.interpolate(merged, size=finer.shape[-1], mode="nearest")
            merged = self.lateral[i](finer) + up
            outputs.append(self.smooth[i](merged))
        return outputs[::-1]
