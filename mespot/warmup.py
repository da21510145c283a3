"""The two-phase warm-up (`model.backbone_warmup=N`), in one place.

For its first N epochs the spotter learns from the cheap motion-energy branch alone: the backbone
is not even run (a few seconds per epoch where the backbone takes ten), and its features enter
through a gate that is 0. From epoch N the backbone runs and the gate opens as it learns what the
motion scores miss. The pieces that make that work:

- `Gate`: the backbone's way in, a linear map of its features that starts at 0;
- `warming`: whether an epoch is a warm-up epoch (the backbone skipped);
- `cosine_phases`: one cosine of the learning rate per phase;
- the first epoch that can be kept, and validated, is N: conf/callbacks/default.yaml gives it
  to the checkpoint callback and ValidateFrom (mespot/callbacks.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from mespot.errors import UserError


class Gate(nn.Module):
    """A linear map of the backbone's (B, D, L) features that starts at 0.

    Skipping the backbone while the gate is 0 changes no output, in training or after. A map,
    not one number: each of its weights moves on its own gradient (how one feature goes with the
    loss's gradient on one channel), so the features reach the head, and the backbone learns, as
    soon as any weight moves; one number scaling every feature would move only on their summed
    effect, which for features still random averages out.
    """

    def __init__(self, features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(features, features))  # no random draw spent

    def is_closed(self) -> bool:
        return not bool(self.weight.any())

    def forward(self, features: Tensor) -> Tensor:
        return self.weight @ features


def warming(module, epochs: int) -> bool:
    """Whether a LightningModule trains in a warm-up epoch (of `epochs`)."""
    return module.training and module.current_epoch < epochs


def cosine_phases(optimizer: Optimizer, boundaries: Sequence[int]) -> LambdaLR:
    """A cosine from the base learning rate to 0 within each phase of training, restarting at
    every boundary (epochs; the last one is the run's length).

    With `model.backbone_warmup=N`, one cosine over the whole run would leave the backbone's
    epochs a learning rate near 0, and the backbone and its gate would hardly move;
    `boundaries=[N, max_epochs]` gives the warm-up and the backbone a full cosine each.
    """
    ends = sorted({int(b) for b in boundaries if int(b) > 0})
    if not ends:
        raise UserError(
            f"model.scheduler.boundaries needs a positive epoch, got {list(boundaries)}"
        )

    def factor(epoch: int) -> float:
        start = 0
        for end in ends:
            if epoch < end:
                return 0.5 * (1 + math.cos(math.pi * (epoch - start) / (end - start)))
            start = end
        return 0.0  # past the last boundary

    return LambdaLR(optimizer, factor)
