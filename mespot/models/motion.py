"""Motion energy: per frame, how much each block of the face changed, against the window's usual.

The per-frame backbone learns from a handful of subjects what their faces look like; what
carries over to a new subject is where, and how much more than usual, the face changes. So
beside the backbone's features, each frame gets, for every block of a `grid` × `grid` split of
the crop and every frame difference the data feeds (`data.frame_diffs`: frame t − frame t−k),
the mean absolute difference, as a robust z-score over the window's frames (median and median
absolute deviation per block): large where a block moves more than it usually does in these
few seconds, whatever the subject's skin, contrast or sensor noise. On a stabilised face
(`face.align=stabilise`) those scores separate expressions from the rest on subjects never
seen (experiments/bench/accuracy_log.md, fifth round).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mespot.errors import UserError

FLOOR = 0.25 / 255  # a block that never changes by more than this is noise, not a face moving
CLAMP = (-5.0, 20.0)


class MotionEnergy(nn.Module):
    """(B, L, C, H, W) windows → (B, out_dim, L) block scores, from the difference channels.

    `channels` lists, per frame difference, the input channels that hold it (one for grey, three
    for colour crops: their absolute differences are averaged).
    """

    def __init__(self, channels: Sequence[Sequence[int]], grid: int) -> None:
        super().__init__()
        if not channels:
            raise UserError("model.motion_grid needs frame differences: set data.frame_diffs")
        if grid < 1:
            raise UserError(f"model.motion_grid={grid} must be at least 1 (0 turns it off)")
        self.channels = [list(c) for c in channels]
        self.grid = grid
        self.out_dim = len(self.channels) * grid * grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length = x.shape[:2]
        change = torch.stack([x[:, :, c].abs().mean(dim=2) for c in self.channels], dim=2)
        blocks = F.adaptive_avg_pool2d(change.flatten(0, 1), self.grid).view(batch, length, -1)
        usual = blocks.median(dim=1, keepdim=True).values
        spread = (blocks - usual).abs().median(dim=1, keepdim=True).values * 1.4826
        score = (blocks - usual) / (spread + FLOOR)
        return score.clamp(*CLAMP).transpose(1, 2)
