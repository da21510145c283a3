"""Learning-rate schedules beyond torch's own."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from mespot.errors import UserError


def cosine_phases(optimizer: Optimizer, boundaries: Sequence[int]) -> LambdaLR:
    """A cosine from the base learning rate to 0 within each phase of training, restarting at
    every boundary (epochs; the last one is the run's length).

    Why: with `model.backbone_warmup=N`, one cosine over the whole run leaves the backbone's
    epochs a learning rate near 0, so the backbone and its gate hardly move
    (experiments/bench/accuracy_log.md, seventh round); `boundaries=[N, max_epochs]` gives the
    warm-up and the backbone a full cosine each.
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
