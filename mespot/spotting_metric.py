"""The MEGC metric as a torchmetrics Metric, for code that sums counts across DDP processes.

Apart from mespot/metrics.py so that the commands that only score files (mespot-evaluate,
mespot-aggregate, mespot-plot) never import torch: the counting itself lives there.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
import torch
from torchmetrics import Metric

from mespot.intervals import TYPES
from mespot.metrics import Counts, Evaluation, check_matching, evaluate


class SpottingMetric(Metric):
    """The MEGC metric as a torchmetrics Metric.

    Its states are summed counts (n_pred, n_gt, TP per type), so DDP reduction is a plain sum
    and the result equals `evaluate` on everything seen. `update` takes the same tables as
    `evaluate`; feed each video's ground truth together with its predictions.
    """

    full_state_update = False

    def __init__(self, iou: float = 0.5, matching: str = "strict", **kwargs):
        super().__init__(**kwargs)
        check_matching(matching)
        self.iou, self.matching = iou, matching
        for name in ("n_pred", "n_gt", "tp"):
            self.add_state(
                name, default=torch.zeros(len(TYPES), dtype=torch.long), dist_reduce_fx="sum"
            )

    def update(
        self,
        predictions: pd.DataFrame,
        ground_truth: pd.DataFrame,
        videos: Iterable[tuple[str, str]] | None = None,
    ) -> None:
        result = evaluate(
            predictions, ground_truth, iou=self.iou, matching=self.matching, videos=videos
        )
        for k, t in enumerate(TYPES):
            c = result.counts[t]
            self.n_pred[k] += c.n_pred
            self.n_gt[k] += c.n_gt
            self.tp[k] += c.tp

    def evaluation(self) -> Evaluation:
        """The counts summed over all processes, as an `Evaluation` (tables, metrics.json)."""
        with self.sync_context():
            return self._evaluation()

    def compute(self) -> dict[str, torch.Tensor]:
        """precision / recall / f1 for mae, me and overall, e.g. `{"me_f1": tensor(0.25), …}`."""
        result = self._evaluation()  # torchmetrics has synced the states already
        by_name = dict(result.counts, overall=result.overall)
        return {
            f"{name}_{stat}": torch.tensor(getattr(c, stat), dtype=torch.float32)
            for name, c in by_name.items()
            for stat in ("precision", "recall", "f1")
        }

    def _evaluation(self) -> Evaluation:
        counts = {
            t: Counts(int(self.n_pred[k]), int(self.n_gt[k]), int(self.tp[k]))
            for k, t in enumerate(TYPES)
        }
        return Evaluation(self.matching, self.iou, counts)
