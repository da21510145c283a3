"""SpotterModule: per-frame backbone → temporal FPN → anchor-free head → focal + L1 + IoU loss.

Validation decodes every window, post-processes each validation video and picks one score
threshold per type that maximises the validation subjects' overall F1; the thresholds are a
buffer, so the checkpoint of the best epoch carries them and the test subject is scored with
them, frozen.
`test` writes predictions.csv and metrics.json into the trainer's root folder.

Under DDP every rank first gathers the window outputs of all ranks (`gather_outputs`), so every
rank post-processes and scores every video and picks the same thresholds; only global rank zero
writes the files.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import lightning.pytorch as pl
import pandas as pd
import torch
import torch.distributed as dist
from torch import Tensor, nn

import mespot
from mespot.data.inputs import InputSpec
from mespot.errors import UserError
from mespot.intervals import TYPES
from mespot.metrics import evaluate
from mespot.models.backbones import FrameEncoder, build_backbone, frame_keys
from mespot.models.fpn import TemporalFPN
from mespot.models.head import SpottingHead, assign_targets, decode, default_ranges, make_points
from mespot.models.losses import SpottingLoss
from mespot.models.motion import MotionEnergy
from mespot.postprocess import apply_threshold, best_thresholds, postprocess_video
from mespot.runs import write_results

# Bump when a checkpoint of the previous format can no longer be loaded. 2: a threshold per type;
# 3: the backbone's gate (model.backbone_warmup) is a linear map, not one number.
CHECKPOINT_FORMAT = 3
WindowOutput = tuple[int, int, Tensor, Tensor, Tensor]  # video, start, segments, scores, labels


def batch_frame_keys(batch: dict) -> Tensor:
    """FrameEncoder keys of a batch of windows (its video, start and valid frames)."""
    return frame_keys(batch["video"], batch["start"], batch["valid"], batch["x"].shape[1])


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


class SpotterModule(IntervalSpotter):
    def __init__(
        self,
        in_chans: int,
        backbone: Mapping,  # name + options of mespot.models.backbones.build_backbone
        neck: Mapping,  # level_dims, out_dim of TemporalFPN
        head: Mapping | None = None,  # num_convs, prior_prob, ranges, center_sample, radius
        loss: Mapping | None = None,  # weights focal, l1, iou (+ SpottingLoss options)
        decoding: Mapping | None = None,  # score_threshold, top_k per window
        postprocess: Mapping | None = None,  # iou_threshold, max_per_video, limits (seconds)
        optimizer: Callable | None = None,  # partial(torch.optim.X, lr=…): gets the parameters
        scheduler: Callable | None = None,  # partial(torch.optim.lr_scheduler.Y, …)
        chunk: int | None = None,  # frames per backbone pass, to bound memory
        motion_grid: int = 0,  # blocks per side of the motion-energy features; 0: none
        backbone_warmup: int = 0,  # epochs on the motion features alone (needs motion_grid)
        freeze_after_warmup: bool = False,  # then train only the backbone and its gate
        mirror_eval: bool = False,  # evaluation averages each window with its mirror image
        preprocessing: Mapping | None = None,  # the cache Settings it trains on (mespot-spot)
        inputs: Mapping | None = None,  # window, stride, use_flow, frame_diffs, rest_span: how fed
    ):
        super().__init__(postprocess)
        # plain values only, so checkpoints load with torch.load(weights_only=True)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"], logger=False)
        self.make_optimizer, self.make_scheduler = optimizer, scheduler
        lr = getattr(optimizer, "keywords", {}).get("lr")
        if lr is not None and not lr > 0:
            raise UserError(f"model.optimizer.lr={lr}: a learning rate must be above 0")
        options = dict(backbone)
        self.encoder = FrameEncoder(build_backbone(options.pop("name"), in_chans, **options), chunk)
        colours = 3 if (preprocessing or {}).get("colour") == "rgb" else 1
        self.spec = InputSpec.of(inputs or {}, colours)  # the channels it is fed
        self.motion = None
        if motion_grid:
            self.motion = MotionEnergy(self.spec.change_channels(), motion_grid)
        motion_dim = self.motion.out_dim if self.motion else 0
        self.gate = None
        if backbone_warmup:
            if self.motion is None:
                raise UserError("model.backbone_warmup needs model.motion_grid (and frame diffs)")
            features = self.encoder.out_dim
            self.gate = nn.Parameter(torch.zeros(features, features))  # no random draw spent
        elif freeze_after_warmup:
            raise UserError("model.freeze_after_warmup needs model.backbone_warmup")
        self.neck = TemporalFPN(self.encoder.out_dim + motion_dim, **neck)
        head = dict(head or {})
        self.assign = {k: head.pop(k) for k in ("center_sample", "radius") if k in head}
        ranges = head.pop("ranges", None)
        self.ranges = (
            [tuple(r) for r in ranges] if ranges else default_ranges(len(neck["level_dims"]))
        )
        self.head = SpottingHead(self.neck.out_dim, strides=self.neck.strides, **head)
        self.loss = SpottingLoss(**(loss or {}))
        self.decoding = dict(decoding or {})
        if mirror_eval and "use_flow" not in (inputs or {}):
            raise UserError("model.mirror_eval needs inputs.use_flow: whether the flow is fed")

    def forward(self, x: Tensor, keys: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(B, L, C, H, W) → class logits (B, P, 2), distances (B, P, 2), points (P, 4).
        `keys` (B, L): each frame's key (`frame_keys`), so that an evaluation pass encodes
        every frame once (FrameEncoder).

        With `mirror_eval`, outside training the window's logits and distances are averaged
        with those of its mirror image (the flip training draws half the time): a second look
        at the same face, so that validation, test and mespot-spot rank candidates by what
        both agree on (accuracy_log.md, thirteenth round).
        """
        logits, offsets, points = self._spot(x, keys)
        if self.hparams.mirror_eval and not self.training:
            flipped = self.spec.mirror(x)
            mirrored, mirrored_offsets, _ = self._spot(flipped, keys, view="mirror")
            logits, offsets = (logits + mirrored) / 2, (offsets + mirrored_offsets) / 2
        return logits, offsets, points

    def _spot(
        self, x: Tensor, keys: Tensor | None, view: str = ""
    ) -> tuple[Tensor, Tensor, Tensor]:
        frames = self._backbone_features(x, keys, view)
        # mixed precision pays off in the per-frame backbone; the temporal part is cheap, and
        # scores in full precision keep candidates from tying
        with torch.autocast(x.device.type, enabled=False):
            if self.motion is not None:
                frames = torch.cat([frames, self.motion(x.float())], dim=1)
            features = self.neck(frames)
            logits, offsets = self.head(features)
        lengths = [f.shape[-1] for f in features]
        points = make_points(lengths, self.neck.strides, self.ranges, device=x.device)
        return logits, offsets, points

    def _backbone_features(self, x: Tensor, keys: Tensor | None, view: str) -> Tensor:
        """(B, L, C, H, W) → (B, D, L): the backbone's per-frame features, through the gate.

        With `backbone_warmup`, the gate is a linear map of the features that starts at 0 and
        stays there for the warm-up epochs, in which the backbone is not even run: the FPN and
        head first learn to spot from the cheap motion scores (a few seconds per epoch where the
        backbone takes ten), then the gate opens as the backbone learns what they miss.
        Skipping it while the gate is 0 changes no output, in training or after
        (accuracy_log.md, sixth round). A map, not one number: each of its weights moves on its
        own gradient (how one feature goes with the loss's gradient on one channel), so the
        features reach the head, and the backbone learns, as soon as any weight moves. One
        number scaling every feature moved only on their summed effect, which for features
        still random averages out: it stayed under 0.01 (accuracy_log.md, ninth round).
        """
        if self.gate is None:
            return self.encoder(x, keys, view).float()
        warming = self.training and self.current_epoch < self.hparams.backbone_warmup
        if warming or (not self.training and not self.gate.any()):
            return x.new_zeros(x.shape[0], self.encoder.out_dim, x.shape[1], dtype=torch.float32)
        return self.gate @ self.encoder(x, keys, view).float()

    def on_train_epoch_start(self) -> None:
        """With `freeze_after_warmup`, the backbone's epochs train the backbone and its gate
        alone: the FPN and head keep what the warm-up taught them, so the backbone can add to
        that spotter but not unlearn it (a fresh learning rate over every weight did:
        accuracy_log.md, eighth round)."""
        if not self.hparams.freeze_after_warmup:
            return
        backbone_phase = self.current_epoch >= self.hparams.backbone_warmup
        for name, parameter in self.named_parameters():
            if not (name == "gate" or name.startswith("encoder.")):
                parameter.requires_grad_(not backbone_phase)

    def _losses(self, batch: dict) -> tuple[dict, Tensor, Tensor, Tensor]:
        keys = None if self.training else batch_frame_keys(batch)
        logits, offsets, points = self(batch["x"], keys)
        targets = [
            assign_targets(
                points, s.to(points), lab.to(points.device), num_classes=2, **self.assign
            )
            for s, lab in zip(batch["segments"], batch["labels"], strict=True)
        ]
        cls_t, reg_t, pos = (torch.stack(t) for t in zip(*targets, strict=True))
        losses = self.loss(logits, offsets, cls_t, reg_t, pos, points[:, 1])
        return losses, logits, offsets, points

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        losses, *_ = self._losses(batch)
        if not torch.isfinite(losses["loss"]):  # a diverged model's epochs must not be kept
            raise UserError(
                f"training diverged: the loss is {float(losses['loss'])} at epoch "
                f"{self.current_epoch}, step {self.global_step}; no results are written (lower "
                "model.optimizer.lr, or check the inputs)"
            )
        self._log_losses("train", losses, len(batch["x"]))
        return losses["loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluation_step("val", batch)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluation_step("test", batch)

    # each evaluation pass encodes every frame once, with the weights of that pass
    def on_validation_epoch_start(self) -> None:
        self.encoder.remember()

    def on_validation_epoch_end(self) -> None:
        self.encoder.forget()
        super().on_validation_epoch_end()

    def on_test_epoch_start(self) -> None:
        self.encoder.remember()

    def on_test_epoch_end(self) -> None:
        self.encoder.forget()
        super().on_test_epoch_end()

    def _evaluation_step(self, split: str, batch: dict) -> None:
        losses, logits, offsets, points = self._losses(batch)
        self._log_losses(split, losses, len(batch["x"]))
        self._collect(batch, [decode(points, lg, off, **self.decoding)
                              for lg, off in zip(logits, offsets, strict=True)])  # fmt: skip

    def _log_losses(self, split: str, losses: dict, batch_size: int) -> None:
        values = {f"{split}/{k}": v for k, v in losses.items() if k != "num_pos"}
        self.log_dict(
            values, prog_bar=split == "train", batch_size=batch_size, on_epoch=True, sync_dist=True
        )

    def configure_optimizers(self):
        make_optimizer = self.make_optimizer or (lambda p: torch.optim.Adam(p, lr=0.005))
        optimizer = make_optimizer(self.parameters())
        if self.make_scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.make_scheduler(optimizer)}
