"""The three-part spotting loss (paper §3.5, Eq. 6-11): focal + smooth L1 + IoU.

All terms are sums over the batch divided by an exponential moving average of the number of
positive points (ActionFormer), so the loss scale does not jump with the number of expressions
that happen to fall in a batch. The terms have separate weights: the paper adds them with weight
1 and lists weighting them as future work.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sigmoid_focal_loss(
    logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> Tensor:
    """Summed focal loss -w (1 - p_t)^gamma log(p_t) (Eq. 6-8), w = alpha on positives.

    log(p_t) comes from binary_cross_entropy_with_logits, which stays finite for any logit.
    """
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    w = alpha * targets + (1 - alpha) * (1 - targets)
    return (w * (1 - p_t) ** gamma * ce).sum()


def iou_loss(pred: Tensor, target: Tensor, eps: float = 1e-6) -> Tensor:
    """Per row 1 - IoU of two 1D extents given as (left, right) distances from one point.

    The paper's Eq. 10 writes inter / union, the IoU itself; minimising that would push boxes
    apart, so the loss is 1 - IoU (as in UnitBox / FCOS / ActionFormer). The intersection is
    clamped at 0 and the union at eps so that degenerate rows (e.g. zero-length targets of
    negative points) give finite values and gradients.
    """
    inter = (
        torch.minimum(pred[:, 0], target[:, 0]) + torch.minimum(pred[:, 1], target[:, 1])
    ).clamp(min=0)
    union = pred.sum(dim=1) + target.sum(dim=1) - inter
    return 1 - inter / union.clamp(min=eps)


class SpottingLoss(nn.Module):
    """focal · L_focal + l1 · L_smoothL1 + iou · L_IoU, each normalised by EMA(#positives).

    Smooth L1 compares distances divided by the point's stride, so an error of one stride weighs
    the same on every level (raw frames would let the coarse levels' long MaEs dominate) and
    `l1_beta` is in strides. The IoU term is scale-free and needs no such care. The EMA lives in
    a buffer (saved in checkpoints) and moves only in training mode; until the first training
    step (e.g. Lightning's validation sanity check) the batch's own count is used.
    """

    def __init__(
        self,
        focal: float = 1.0,
        l1: float = 1.0,
        iou: float = 1.0,
        ema_momentum: float = 0.9,
        alpha: float = 0.25,
        gamma: float = 2.0,
        l1_beta: float = 1.0,
    ) -> None:
        super().__init__()
        self.weights = {"focal": focal, "l1": l1, "iou": iou}
        self.ema_momentum = ema_momentum
        self.alpha = alpha
        self.gamma = gamma
        self.l1_beta = l1_beta
        self.register_buffer("num_pos_ema", torch.tensor(0.0))

    def _normaliser(self, num_pos: Tensor) -> Tensor:
        """EMA of max(#positives, 1); ≥ 1, so zero-positive batches cannot divide by zero.

        0 in the buffer means "not started"; torch.where keeps this free of host syncs on CUDA.
        """
        count = num_pos.clamp(min=1)
        started = self.num_pos_ema > 0
        if not self.training:
            return torch.where(started, self.num_pos_ema, count)
        m = self.ema_momentum
        ema = torch.where(started, m * self.num_pos_ema + (1 - m) * count, count)
        self.num_pos_ema.copy_(ema)
        return ema

    def forward(
        self,
        cls_logits: Tensor,
        offsets: Tensor,
        cls_targets: Tensor,
        reg_targets: Tensor,
        pos_mask: Tensor,
        strides: Tensor,
    ) -> dict[str, Tensor]:
        """Shapes (B, P, C), (B, P, 2), (B, P, C), (B, P, 2), (B, P), (P,); returns the total as
        `loss` plus the unweighted terms `focal`, `l1`, `iou` and `num_pos` (for logging).

        Regression terms are computed on every point and masked, which avoids boolean indexing
        (a host sync) and gives exact zeros, not NaN, when there are no positives.
        """
        logits, offsets = cls_logits.float(), offsets.float()
        pos = pos_mask.float()
        num_pos = pos.sum()
        with torch.no_grad():
            normaliser = self._normaliser(num_pos)
        scale = strides.to(offsets)[None, :, None]
        l1 = F.smooth_l1_loss(
            offsets / scale, reg_targets.float() / scale, beta=self.l1_beta, reduction="none"
        ).sum(dim=-1)
        iou = iou_loss(offsets.flatten(0, 1), reg_targets.float().flatten(0, 1)).view_as(pos)
        terms = {
            "focal": sigmoid_focal_loss(logits, cls_targets.float(), self.alpha, self.gamma),
            "l1": (l1 * pos).sum(),
            "iou": (iou * pos).sum(),
        }
        terms = {name: value / normaliser for name, value in terms.items()}
        total = sum(self.weights[name] * value for name, value in terms.items())
        return {"loss": total, **terms, "num_pos": num_pos}
