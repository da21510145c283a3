"""SpotterModule: trains the spotter network (mespot/models/spotter.py) with the focal + L1 + IoU
loss, and evaluates it window by window (mespot/evaluation.py: thresholds, predictions,
metrics)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

from mespot.checkpoint import read_checkpoint, weights_mismatch
from mespot.data.inputs import InputSpec
from mespot.errors import UserError
from mespot.evaluation import IntervalSpotter
from mespot.models.backbones import frame_keys
from mespot.models.head import assign_targets, decode
from mespot.models.losses import SpottingLoss
from mespot.models.spotter import Spotter
from mespot.warmup import warming


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
        backbone_warmup: int = 0,  # epochs on the motion features alone (mespot/warmup.py)
        test_time: Sequence[str] = (),  # views averaged with each window outside training
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
        if test_time and "use_flow" not in (inputs or {}):
            raise UserError("model.test_time needs inputs.use_flow: whether the flow is fed")
        colours = 3 if (preprocessing or {}).get("colour") == "rgb" else 1
        self.spec = InputSpec.of(inputs or {}, colours)  # the channels it is fed
        head = dict(head or {})
        self.assign = {k: head.pop(k) for k in ("center_sample", "radius") if k in head}
        self.spotter = Spotter(in_chans, self.spec, backbone, neck, head, chunk, motion_grid,
                               gated=bool(backbone_warmup), test_time=test_time)  # fmt: skip
        self.loss = SpottingLoss(**(loss or {}))
        self.decoding = dict(decoding or {})

    def forward(self, x: Tensor, keys: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(B, L, C, H, W) → class logits (B, P, 2), distances (B, P, 2), points (P, 4)."""
        return self.spotter(x, keys, skip_backbone=warming(self, self.hparams.backbone_warmup))

    def spot_windows(self, batch: dict) -> tuple[Tensor, Tensor, Tensor, list]:
        """An evaluation batch of windows (`x`, `video`, `start`, `valid`) → logits, distances,
        points, and each window's decoded candidates (segments, scores, labels): what
        validation, test and mespot-spot make of windows."""
        x = batch["x"]
        keys = frame_keys(batch["video"], batch["start"], batch["valid"], x.shape[1])
        logits, offsets, points = self(x, keys)
        decoded = [decode(points, lg, off, **self.decoding)
                   for lg, off in zip(logits, offsets, strict=True)]  # fmt: skip
        return logits, offsets, points, decoded

    def _losses(self, batch: dict, logits: Tensor, offsets: Tensor, points: Tensor) -> dict:
        targets = [
            assign_targets(
                points, s.to(points), lab.to(points.device), num_classes=2, **self.assign
            )
            for s, lab in zip(batch["segments"], batch["labels"], strict=True)
        ]
        cls_t, reg_t, pos = (torch.stack(t) for t in zip(*targets, strict=True))
        return self.loss(logits, offsets, cls_t, reg_t, pos, points[:, 1])

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        losses = self._losses(batch, *self(batch["x"]))
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
        self.spotter.encoder.remember()

    def on_validation_epoch_end(self) -> None:
        self.spotter.encoder.forget()
        super().on_validation_epoch_end()

    def on_test_epoch_start(self) -> None:
        self.spotter.encoder.remember()

    def on_test_epoch_end(self) -> None:
        self.spotter.encoder.forget()
        super().on_test_epoch_end()

    def _evaluation_step(self, split: str, batch: dict) -> None:
        logits, offsets, points, decoded = self.spot_windows(batch)
        self._log_losses(split, self._losses(batch, logits, offsets, points), len(batch["x"]))
        self._collect(batch, decoded)

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


def load_spotter(path: str | Path) -> SpotterModule:
    """The SpotterModule of a mespot-train checkpoint, in eval mode on the CPU."""
    checkpoint = read_checkpoint(path)
    options = checkpoint.get("hyper_parameters") or {}
    needed = ("preprocessing", "inputs")
    if not isinstance(options, dict) or not all(options.get(k) for k in needed):
        raise UserError(f"{path}: holds no preprocessing settings to repeat on a recording")
    try:
        model = SpotterModule(**options)
    except (UserError, TypeError, ValueError, KeyError) as e:  # settings of another version
        raise UserError(f"{path}: describes a model this mespot cannot build ({e})") from None
    mismatch = weights_mismatch(model.state_dict(), checkpoint["state_dict"])
    if mismatch:
        backbone = options.get("backbone", {}).get("name")
        raise UserError(f"{path}: its weights do not fit the model its settings describe "
                        f"(backbone {backbone}, {options.get('in_chans')} input channels): "
                        f"{mismatch}")  # fmt: skip
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()
