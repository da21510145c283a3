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

Frame differences see an expression while it moves: at its rise and its fall, hardly at its
apex. With `model.motion_neutral`, each block also scores how far the frame lies from the
window's median frame (most frames of a few seconds show the face at rest), which stays high
from onset to offset, so the head can read where an expression starts and ends, and how long
it lasts, from the frames rather than from the lengths it was trained on (accuracy_log.md, tenth
round).
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
    for colour crops: their absolute differences are averaged). With `neutral` (the frame's own
    channels), each block also gets how far the frame lies from the window's median frame, its
    overall brightness taken out: through a whole expression, not only while it moves.
    """

    def __init__(
        self, channels: Sequence[Sequence[int]], grid: int, neutral: Sequence[int] = ()
    ) -> None:
        super().__init__()
        if not channels:
            raise UserError("model.motion_grid needs frame differences: set data.frame_diffs")
        if grid < 1:
            raise UserError(f"model.motion_grid={grid} must be at least 1 (0 turns it off)")
        self.channels = [list(c) for c in channels]
        self.grid = grid
        self.neutral = list(neutral)
        self.out_dim = (len(self.channels) + bool(self.neutral)) * grid * grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length = x.shape[:2]
        changes = [x[:, :, c].abs().mean(dim=2) for c in self.channels]
        if self.neutral:
            frames = x[:, :, self.neutral]
            frames = frames - frames.mean(dim=(2, 3, 4), keepdim=True)
            changes.append((frames - frames.median(dim=1, keepdim=True).values).abs().mean(dim=2))
        change = torch.stack(changes, dim=2)
        blocks = F.adaptive_avg_pool2d(change.flatten(0, 1), self.grid).view(batch, length, -1)
        usual = blocks.median(dim=1, keepdim=True).values
        spread = (blocks - usual).abs().median(dim=1, keepdim=True).values * 1.4826
        score = (blocks - usual) / (spread + FLOOR)
        return score.clamp(*CLAMP).transpose(1, 2)
