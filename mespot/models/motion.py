"""Motion energy: per frame, how much each block of the face changed, against the window's usual.

The per-frame backbone learns from a handful of subjects what their faces look like; what
carries over to a new subject is where, and how much more than usual, the face changes. So
beside the backbone's features, each frame gets, for every block of a `grid` × `grid` split of
the crop and every frame difference the data feeds (`data.frame_diffs`: frame t − frame t−k),
the mean absolute difference, as a robust z-score over the window's frames (median and median
absolute deviation per block): large where a block moves more than it usually does in these
few seconds, whatever the subject's skin, contrast or sensor noise. On a stabilised face
(`face.align=stabilise`) those scores separate expressions from the rest on subjects never
seen.

Frame differences see an expression while it moves: at its rise and its fall, hardly at its
apex. With `data.rest_span`, the data also feed each frame's distance from the face at rest
(mespot/data/rest.py), scored here like a difference: it stays high from onset to offset, so the
head can read where an expression starts and ends, and how long it lasts, from the frames rather
than from the lengths it was trained on.
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

    `channels` lists, per frame difference (or distance from the face at rest), the input
    channels that hold it (one for grey, three for colour crops: their absolute values are
    averaged).
    """

    def __init__(self, channels: Sequence[Sequence[int]], grid: int) -> None:
        super().__init__()
        if not channels:
            raise UserError(
                "model.motion_grid needs what changes: set data.frame_diffs or data.rest_span"
            )
        if grid < 1:
            raise UserError(f"model.motion_grid={grid} must be at least 1 (0 turns it off)")
        self.channels = [list(c) for c in channels]
        self.grid = grid
        self.out_dim = len(self.channels) * grid * grid
        # one gather of every difference's channels, not one copy per difference
        self.register_buffer(
            "index", torch.tensor([c for group in self.channels for c in group]), persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length = x.shape[:2]
        changes = x.index_select(2, self.index).abs_()
        if changes.shape[2] > len(self.channels):  # colour: each difference's channels averaged
            changes = changes.unflatten(2, (len(self.channels), -1)).mean(dim=3)
        blocks = _block_means(changes.flatten(0, 1), self.grid).view(batch, length, -1)
        usual = blocks.median(dim=1, keepdim=True).values
        spread = (blocks - usual).abs().median(dim=1, keepdim=True).values * 1.4826
        score = (blocks - usual) / (spread + FLOOR)
        return score.clamp(*CLAMP).transpose(1, 2)


def _block_means(change: torch.Tensor, grid: int) -> torch.Tensor:
    """(N, G, H, W) → (N, G, grid, grid) means; a plain average pool where the blocks tile
    the crop exactly (several times faster on the CPU than the adaptive one, same numbers)."""
    height, width = change.shape[-2:]
    if height % grid or width % grid:
        return F.adaptive_avg_pool2d(change, grid)
    return F.avg_pool2d(change, (height // grid, width // grid))
