"""What every spotter's Lightning module shares: window outputs → per-video predictions, the score
thresholds (one per type) chosen on validation subjects, and the test fold's predictions.csv +
metrics.json.

Validation post-processes each validation video and picks one score threshold per type that
maximises the validation subjects' overall F1; the thresholds are a buffer, so the checkpoint of
the best epoch carries them and the test subject is scored with them, frozen.

Under DDP every rank first gathers the window outputs of all ranks (`gather_outputs`), so every
rank post-processes and scores every video and picks the same thresholds; only global rank zero
writes the files.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import lightning.pytorch as pl
import pandas as pd
import torch
import torch.distributed as dist
from torch import Tensor

import mespot
from mespot.checkpoint import CHECKPOINT_FORMAT
from mespot.intervals import TYPES
from mespot.metrics import evaluate
from mespot.postprocess import apply_threshold, best_thresholds, postprocess_video
from mespot.runs import write_results

WindowOutput = tuple[int, int, Tensor, Tensor, Tensor]  # video, start, segments, scores, labels


def gather_outputs(outputs: list[WindowOutput]) -> list[WindowOutput]:
    """Every rank's window outputs, on every rank, one per (video, start), sorted by it.

    Under DDP each rank evaluates only its shard of the windows, but a video's predictions need
    all of its (overlapping) windows, and every rank must choose the same threshold. The
    DistributedSampler pads the shards with repeated windows: they are kept once, so that
    duplicates cannot survive NMS (with iou_threshold=1 it suppresses nothing). Without a process
    group of several ranks, the outputs are returned as they are.
    """
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return outputs
    shards: list = [None] * dist.get_world_size()
    dist.all_gather_object(shards, outputs)
    unique = {(video, start): output for shard in shards for video, start, *output in shard}
    return [(video, start, *unique[video, start]) for video, start in sorted(unique)]


class IntervalSpotter(pl.LightningModule):
    """What every spotter shares: window outputs → per-video predictions, the score thresholds
    (one per type) chosen on validation subjects (a buffer, so the best epoch's checkpoint
    carries them), and the test fold's predictions.csv + metrics.json. Subclasses call
    `_collect` from their validation and test steps with each window's decoded
    (segments, scores, labels)."""

    def __init__(self, postprocess: Mapping | None = None):
        super().__init__()
        self.postprocess = dict(postprocess or {})
        # one score threshold per type, in TYPES order, chosen on validation subjects (float32
        # values: best_thresholds picks among those, so the buffer holds them exactly)
        self.register_buffer("thresholds", torch.zeros(len(TYPES)))
        self._outputs: list[WindowOutput] = []

    def _collect(self, batch: dict, decoded: list[tuple[Tensor, Tensor, Tensor]]) -> None:
        for b, (segments, scores, labels) in enumerate(decoded):
            video, start = int(batch["video"][b]), int(batch["start"][b])
            self._outputs.append((video, start, segments.cpu(), scores.cpu(), labels.cpu()))

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self._outputs.clear()
            return
        predictions, ground_truth, videos = self._predictions("val")
        thresholds, _ = best_thresholds(predictions, ground_truth, videos=videos)
        self.thresholds.copy_(torch.tensor([thresholds[kind] for kind in TYPES]))
        self._log_scores("val", apply_threshold(predictions, thresholds), ground_truth, videos)
        self.log_dict({f"val/threshold_{k}": v for k, v in thresholds.items()}, sync_dist=True)

    def score_thresholds(self) -> dict[str, float]:
        """{type: threshold} as chosen on the validation subjects."""
        return {kind: float(t) for kind, t in zip(TYPES, self.thresholds.tolist(), strict=True)}

    def on_test_epoch_end(self) -> None:
        predictions, ground_truth, videos = self._predictions("test")
        thresholds = self.score_thresholds()
        predictions = apply_threshold(predictions, thresholds)
        result = self._log_scores("test", predictions, ground_truth, videos)
        if not self.trainer.is_global_zero:
            return
        out = Path(self.trainer.default_root_dir)
        metrics = {**result.to_dict(), "thresholds": thresholds,
                   **self.trainer.datamodule.skipped()}  # fmt: skip
        write_results(out, predictions, metrics)

    def _predictions(self, split: str) -> tuple[pd.DataFrame, pd.DataFrame, list]:
        """Every video of the split: post-processed predictions (unthresholded), ground truth."""
        infos = self.trainer.datamodule.videos[split]
        # the test subject's uncached videos (data.allow_uncached): their expressions are missed
        missed = self.trainer.datamodule.uncached[split] if split == "test" else []
        windows: dict[int, list] = {v: [] for v in range(len(infos))}
        for video, start, segments, scores, labels in gather_outputs(self._outputs):
            windows[video].append((start, segments, scores, labels))
        self._outputs.clear()
        tables = [
            postprocess_video(info.subject, info.video, windows[v], info.source_frames,
                              info.source_fps, **self.postprocess)
            for v, info in enumerate(infos)
        ]  # fmt: skip
        predictions = pd.concat(tables, ignore_index=True)
        ground_truth = pd.concat([v.ground_truth for v in infos + missed], ignore_index=True)
        return predictions, ground_truth, [(v.subject, v.video) for v in infos + missed]

    def _log_scores(self, split: str, predictions, ground_truth, videos):
        """Scores of the predictions, logged as e.g. `val/overall_f1`.

        Every rank holds every video's predictions (gather_outputs), so it scores them all
        itself with `evaluate`; SpottingMetric would sum the ranks' equal counts. The values are
        equal on every rank: sync_dist only averages equal values (and keeps Lightning from
        warning), and they stay logged on every rank, as each rank's checkpoint callback
        monitors `val/overall_f1` (rank_zero_only would hide it from the others).
        """
        result = evaluate(predictions, ground_truth, videos=videos)
        by_name = dict(result.counts, overall=result.overall)
        scores = {
            f"{split}/{name}_{stat}": float(getattr(counts, stat))
            for name, counts in by_name.items()
            for stat in ("precision", "recall", "f1")
        }
        self.log_dict(scores, sync_dist=True)
        return result

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["mespot"] = {"format": CHECKPOINT_FORMAT, "version": mespot.__version__}
