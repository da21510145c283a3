"""Where a trained sweep's expressions rank among its own candidates, before any threshold.

A probe for experiments/bench/accuracy_log.md ("Twelfth round"), not part of mespot. For every
fold of a LOSO sweep (`mespot-train -m … data.test_subject=all hydra.sweep.dir=SWEEP`) it loads
the kept checkpoint, spots the fold's test subject (or, with `--split train`, its training
subjects, windows as recorded) with every candidate kept (no score threshold), and prints per
type, summed over folds:

  found     expressions with a candidate at IoU >= 0.5 (the most any threshold can find)
  rank      the median rank, within its video, of the best-scored such candidate (0 = first)
  auc       how well scores tell candidates that match an expression from those that do not
  top 10    the 10 best-scored candidates of each video: a match, overlapping an expression of
            the same type but IoU < 0.5, overlapping one of the other type, or elsewhere

    python experiments/bench/probes/candidate_ranks.py data/exp/SWEEP [--split train]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from mespot.cli.train import cache_folder_of
from mespot.data.datamodule import SpottingDataModule
from mespot.data.dataset import WindowDataset
from mespot.intervals import TYPES
from mespot.metrics import interval_iou
from mespot.module import SpotterModule

FRAMES = ["onset", "offset"]


def candidates(fold: Path, split: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(every candidate of the split's videos, their ground truth) for one fold's checkpoint."""
    cfg = OmegaConf.load(fold / "config.yaml")
    data = OmegaConf.to_container(cfg.data, resolve=True)
    datamodule = SpottingDataModule.from_config(cache_folder_of(cfg), data, cfg.seed)
    datamodule.setup()
    if split == "train":  # the training videos, cut and fed like the test subject's
        h = datamodule.hparams
        datamodule.videos["test"] = datamodule.videos["train"]
        datamodule.datasets["test"] = WindowDataset(
            datamodule.videos["train"], h.window, h.stride, datamodule.datasets["test"].inputs
        )
    (checkpoint,) = (fold / "checkpoints").glob("epoch_*.ckpt")
    model = SpotterModule.load_from_checkpoint(checkpoint, map_location="cpu")
    kept = {}
    model.on_test_epoch_end = lambda: kept.update(test=model._predictions("test"))
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False)  # fmt: skip
    trainer.test(model, datamodule, verbose=False)
    predictions, truth, _ = kept["test"]
    return predictions, truth


def auc(positive: np.ndarray, scores: np.ndarray) -> float:
    ranks = pd.Series(scores).rank().to_numpy()  # ties share their mean rank
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def overlaps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per interval of a: does it share a frame with any of b?"""
    return ((a[:, None, 0] <= b[None, :, 1]) & (a[:, None, 1] >= b[None, :, 0])).any(axis=1)


def summarise(pairs: list[tuple[pd.DataFrame, pd.DataFrame]], kind: str) -> str:
    found = total = 0
    first_ranks, matched, scores = [], [], []
    top = dict(match=0, near=0, other_type=0, elsewhere=0)
    for predictions, truth in pairs:
        for (subject, video), shown in predictions[predictions["type"] == kind].groupby(
            ["subject", "video"]
        ):
            shown = shown.sort_values("score", ascending=False)
            here = truth[(truth["subject"] == subject) & (truth["video"] == video)]
            same = here.loc[here["type"] == kind, FRAMES].to_numpy()
            other = here.loc[here["type"] != kind, FRAMES].to_numpy()
            spans = shown[FRAMES].to_numpy()
            hits = interval_iou(same, spans) >= 0.5  # (expressions, candidates)
            total += len(same)
            found += int(hits.any(axis=1).sum())
            first_ranks += [int(np.argmax(row)) for row in hits if row.any()]
            matched.append(hits.any(axis=0))
            scores.append(shown["score"].to_numpy())
            best = slice(0, 10)
            is_match, near = hits.any(axis=0)[best], overlaps(spans[best], same)
            top["match"] += int(is_match.sum())
            top["near"] += int((~is_match & near).sum())
            in_other = ~is_match & ~near & overlaps(spans[best], other)
            top["other_type"] += int(in_other.sum())
            top["elsewhere"] += int((~is_match & ~near & ~in_other).sum())
    area = auc(np.concatenate(matched), np.concatenate(scores))
    return (f"{kind}: found {found}/{total}, rank {np.median(first_ranks):.0f}, auc {area:.2f}, "
            f"top 10 {top}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--split", choices=["test", "train"], default="test")
    args = parser.parse_args()
    folds = sorted(p for p in args.sweep.iterdir() if (p / "config.yaml").is_file())
    pairs = [candidates(fold, args.split) for fold in folds]
    print(f"{args.sweep} ({args.split} subjects, {len(folds)} folds)")
    for kind in TYPES:
        print(" ", summarise(pairs, kind))


if __name__ == "__main__":
    main()
