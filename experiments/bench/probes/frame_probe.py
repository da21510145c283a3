"""Can a per-frame classifier learn from a cache where expressions are, on videos it never saw?

A probe for experiments/bench/accuracy_log.md ("Fourth round"), not part of mespot. It trains a
small model to label every frame of the training videos as inside an MaE, inside an ME or
neither (focal loss, each class normalised by its positive frames), on random clips twice as
long as the temporal layer's context, then ranks the frames of the held-out videos: AUC of the
frames inside each type against the frames outside every expression (0.5 = chance). If the
inputs held a pattern that carries over, the held-out AUC would follow the training AUC up.

Features per frame (`--features`):
  blocks   the flow's mean in G × G blocks, one hidden layer per frame, then a linear map over
           `--context` frames (fast: no convolutions over pixels)
  zmag     per block, |flow| after removing the frame's median block, as a robust z-score over
           its own video (motion relative to what that face usually does)
  vovnet   mespot's vovnet_small on the two flow channels (slow: ~2 s a step on 2 cores)

Splits (`--split`): `subject` holds out each subject in turn (leave-one-subject-out), `video`
holds out the second video of every subject, then the first.

    python experiments/bench/probes/frame_probe.py data/bench/cache/casme2-<hash> --features blocks
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mespot.data import cache
from mespot.data.inputs import FLOW_CLIP
from mespot.data.videos import read_cache
from mespot.models.backbones import FrameEncoder, build_backbone
from mespot.models.losses import sigmoid_focal_loss

CLIPS_PER_STEP = 32


def frame_labels(info, length: int) -> np.ndarray:
    """(length, 2) 0/1: is the frame inside an MaE / an ME?"""
    labels = np.zeros((length, 2), np.float32)
    for (onset, offset), kind in zip(info.segments, info.labels, strict=True):
        labels[int(onset) : int(offset) + 1, int(kind)] = 1
    return labels


def video_features(info, features: str, grid: int, border: float) -> torch.Tensor:
    """(L, C, H, W) network input of one cached video (H = W = 1 for the block features),
    `border` (a fraction of the side) cut off each edge of the crop first."""
    flow = np.asarray(cache.load_video(info.folder).flow, np.float32)
    cut = round(border * flow.shape[1])
    flow = np.clip(
        flow[:, cut : flow.shape[1] - cut, cut : flow.shape[2] - cut], -FLOW_CLIP, FLOW_CLIP
    )
    flow = torch.from_numpy(flow).permute(0, 3, 1, 2)
    if features == "vovnet":
        return flow
    blocks = F.adaptive_avg_pool2d(flow, grid)  # (L, 2, G, G)
    if features == "blocks":
        return 10 * blocks.flatten(1)[:, :, None, None]
    residual = blocks - blocks.flatten(2).median(dim=2).values[:, :, None, None]
    magnitude = residual.norm(dim=1).flatten(1)  # (L, G·G)
    centre = magnitude.median(dim=0).values
    spread = (magnitude - centre).abs().median(dim=0).values + 1e-4
    return ((magnitude - centre) / spread).clamp(-10, 50)[:, :, None, None]


class BlockEncoder(nn.Module):
    """(B, L, C, 1, 1) → (B, hidden, L): one hidden layer per frame, so that motion in opposite
    directions cannot cancel as it would in a linear map of signed flow."""

    def __init__(self, channels: int, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU())
        self.out_dim = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(2)).transpose(1, 2)


class Transpose(nn.Module):
    """(B, C, L) → (B, L, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counted half (Mann-Whitney)."""
    values = np.concatenate([positive, negative])
    order = values.argsort()
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):  # average ranks of ties
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    n = len(positive)
    return float((ranks[:n].sum() - n * (n + 1) / 2) / (n * len(negative)))


def scores(model: nn.Module, videos) -> tuple[float, float]:
    """AUC per type (MaE, ME) of the model's frame scores over these videos."""
    model.eval()
    with torch.no_grad():
        probs = np.concatenate([model(x[None]).sigmoid()[0].numpy() for x, _ in videos])
    model.train()
    labels = np.concatenate([y for _, y in videos])
    outside = labels.sum(1) == 0
    return tuple(auc(probs[labels[:, c] > 0, c], probs[outside, c]) for c in (0, 1))


def train_and_score(train, test, features: str, steps: int, context: int, seed: int) -> dict:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    channels = train[0][0].shape[1]
    encoder = (
        FrameEncoder(build_backbone("vovnet", channels, width=0.25))
        if features == "vovnet"
        else BlockEncoder(channels)
    )
    temporal = nn.Conv1d(encoder.out_dim, 2, context, padding=context // 2)
    clip = 2 * context  # the clips' middle frames see their whole context
    model = nn.Sequential(encoder, temporal, Transpose())
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(steps):
        clips, targets = [], []
        for _ in range(CLIPS_PER_STEP):
            x, y = train[rng.integers(len(train))]
            start = rng.integers(0, len(x) - clip)
            clips.append(x[start : start + clip])
            targets.append(torch.from_numpy(y[start : start + clip]))
        logits, y = model(torch.stack(clips)).flatten(0, 1), torch.stack(targets).flatten(0, 1)
        positives = y.sum(0).clamp(min=1)
        loss = sum(sigmoid_focal_loss(logits[:, c], y[:, c]) / positives[c] for c in (0, 1))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    (train_mae, train_me), (test_mae, test_me) = scores(model, train), scores(model, test)
    return {"train_mae": train_mae, "train_me": train_me, "test_mae": test_mae, "test_me": test_me}


def splits(infos, split: str):
    """(name, train infos, test infos) for every held-out unit."""
    if split == "subject":
        for subject in sorted({i.subject for i in infos}):
            yield (
                subject,
                [i for i in infos if i.subject != subject],
                [i for i in infos if i.subject == subject],
            )
        return
    per_subject: dict[str, list] = {}
    for info in sorted(infos, key=lambda i: i.video):
        per_subject.setdefault(info.subject, []).append(info)
    for held in (1, 0):  # the second video of every subject, then the first
        test = [videos[held] for videos in per_subject.values() if len(videos) > held]
        held_out = {id(i) for i in test}
        yield f"video {held + 1}", [i for i in infos if id(i) not in held_out], test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("cache", help="a mespot cache folder (data/bench/cache/casme2-<hash>)")
    parser.add_argument("--features", choices=("blocks", "zmag", "vovnet"), default="blocks")
    parser.add_argument("--split", choices=("subject", "video"), default="subject")
    parser.add_argument("--grid", type=int, default=8, help="blocks per side")
    parser.add_argument("--border", type=float, default=0.0, help="cut off each edge (fraction)")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--context", type=int, default=9, help="frames the temporal layer sees")
    parser.add_argument("--only", help="hold out only this unit (e.g. s15)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    infos = read_cache(args.cache)
    data = {
        id(i): (
            video_features(i, args.features, args.grid, args.border),
            frame_labels(i, i.n_frames),
        )
        for i in infos
    }
    print(
        f"{args.features}, {args.split} split, {args.steps} steps, {args.context} frames seen: "
        "AUC on the training videos → on the held-out ones"
    )
    print("| held out | MaE train | MaE held out | ME train | ME held out |\n|---|--:|--:|--:|--:|")
    results = []
    for name, train, test in splits(infos, args.split):
        if args.only and name != args.only:
            continue
        r = train_and_score(
            [data[id(i)] for i in train], [data[id(i)] for i in test], args.features,
            args.steps, args.context, args.seed,
        )  # fmt: skip
        results.append(r)
        print(f"| {name} | {r['train_mae']:.2f} | {r['test_mae']:.2f} | "
              f"{r['train_me']:.2f} | {r['test_me']:.2f} |", flush=True)  # fmt: skip
    mean = {k: np.mean([r[k] for r in results]) for k in results[0]}
    print(f"| mean | {mean['train_mae']:.2f} | {mean['test_mae']:.2f} | "
          f"{mean['train_me']:.2f} | {mean['test_me']:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
