"""What a window feeds the model for each frame, and where those channels are built.

The channels, in order: the frame (`colours` of them, in [0, 1]); one difference to an earlier
frame per step of `frame_diffs` (frame t minus frame t − step, frame 0 standing in before the
video's start); with `rest_span`, the frame's distance from the face at rest
(mespot/data/rest.py); with `use_flow`, the optical flow (x, then y; pixels per frame shown,
clipped at FLOW_CLIP).

Loader workers read a window's parts as the cache holds them — uint8 frames, float16 flow —
and `assemble` builds the float32 channels where the model runs: on a GPU, a batch crosses
the bus at 5 bytes a pixel instead of 12 (the paper's frame and flow) and the arithmetic costs
the CPU nothing. The training augmentation (a mirror image, a change of light) is drawn in the
worker and applied here. On a CPU the result is the same, value for value, as building each
window in the worker.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from mespot.errors import UserError

FLOW_CLIP = 20.0  # px; larger values are flow failures, not faces
PARTS = ("frames", "earlier", "rest", "flow", "mirror", "gain")  # of a window


@dataclass(frozen=True)
class InputSpec:
    """The channel layout of one window frame."""

    colours: int = 1  # 1 grey, 3 RGB
    frame_diffs: tuple[int, ...] = ()
    rest_span: int = 0
    use_flow: bool = True

    def __post_init__(self):
        if any(int(step) < 1 for step in self.frame_diffs):
            raise UserError(f"data.frame_diffs={list(self.frame_diffs)}: steps must be at least 1")
        if int(self.rest_span) < 0:
            raise UserError(f"data.rest_span={self.rest_span}: give a number of frames, or 0 for "
                            "none")  # fmt: skip
        object.__setattr__(self, "frame_diffs", tuple(int(step) for step in self.frame_diffs))
        object.__setattr__(self, "rest_span", int(self.rest_span))
        object.__setattr__(self, "use_flow", bool(self.use_flow))

    @classmethod
    def of(cls, inputs: Mapping, colours: int = 1) -> InputSpec:
        """The layout a `data` config, or a checkpoint's `inputs` (its `record()`), describes."""
        return cls(colours, tuple(inputs.get("frame_diffs", ())), inputs.get("rest_span", 0),
                   inputs.get("use_flow", True))  # fmt: skip

    def record(self) -> dict:
        """What a checkpoint records of the layout (the colours come with its preprocessing)."""
        return {"use_flow": self.use_flow, "frame_diffs": list(self.frame_diffs),
                "rest_span": self.rest_span}  # fmt: skip

    def frames_needed(self, flow_step: int) -> int:
        """The fewest frames a video can be spotted on: one more than the longest step back the
        channels take (the flow's, each difference's); a single frame never shows a change."""
        steps = [flow_step] if self.use_flow else []
        return max([1, *steps, *self.frame_diffs]) + 1

    @property
    def channels(self) -> int:
        return self.colours * (1 + len(self.change_channels())) + 2 * self.use_flow

    def change_channels(self) -> list[list[int]]:
        """The channels of each frame difference, then of the distance from the face at rest:
        what changes with the face."""
        groups = len(self.frame_diffs) + bool(self.rest_span)
        c = self.colours
        return [list(range(c * (1 + j), c * (2 + j))) for j in range(groups)]

    def still_channels(self) -> list[int]:
        """The channels that stay as they are while the face holds still: the frame's and its
        distance from the face at rest (differences and flow fall to 0)."""
        rest = self.change_channels()[len(self.frame_diffs) :]
        return [*range(self.colours), *(c for group in rest for c in group)]

    def mirror(self, x: Tensor) -> Tensor:
        """(…, C, H, W) inputs of the face seen in a mirror: every channel flipped left to right
        and, with flow, its horizontal component negated."""
        x = x.flip(-1)
        if self.use_flow:
            x[..., -2, :, :] *= -1
        return x

    def assemble(self, batch: Mapping) -> Tensor:
        """A collated batch of window parts (WindowDataset) → (B, L, C, H, W) float32 inputs,
        on the parts' device.

        Parts: `frames` (B, L, H, W[, 3]) uint8; `earlier` (B, K, L, …) uint8, the frames each
        difference subtracts; `rest` (B, L, …) float32; `flow` (B, L, H, W, 2) float16;
        `mirror` (B,) bool and `gain` (B,) float32, the augmentation drawn;
        `valid` (B,): frames of the video in the window, the rest holding its last one still.
        """
        frames = _channels_first(batch["frames"].float() / 255.0)
        channels = [frames]
        for k in range(len(self.frame_diffs)):
            channels.append(frames - _channels_first(batch["earlier"][:, k].float() / 255.0))
        if self.rest_span:
            channels.append(_channels_first(batch["rest"]))
        if self.use_flow:
            flow = batch["flow"].float().clamp(-FLOW_CLIP, FLOW_CLIP)
            channels.append(flow.permute(0, 1, 4, 2, 3))
        x = torch.cat(channels, dim=2)
        x = self._augment(x, batch["mirror"], batch["gain"])
        return self._hold_still(x, batch["valid"])

    def _augment(self, x: Tensor, mirror: Tensor, gain: Tensor) -> Tensor:
        """A mirrored face for the windows drawn so, and each window's light scaled by its gain:
        the frame's channels (kept in [0, 1]) and what changes with them."""
        mirror = mirror.to(x.device)
        if bool(mirror.any()):
            x = torch.where(mirror.view(-1, 1, 1, 1, 1), self.mirror(x), x)
        gain = gain.to(device=x.device, dtype=x.dtype)
        lit = gain != 1
        if bool(lit.any()):
            g = gain.view(-1, 1, 1, 1, 1)
            c = self.colours
            changes = c * (1 + len(self.change_channels()))
            x[:, :, :c] = torch.where(lit.view(-1, 1, 1, 1, 1), (x[:, :, :c] * g).clamp(0, 1),
                                      x[:, :, :c])  # fmt: skip
            x[:, :, c:changes] = x[:, :, c:changes] * g
        return x

    def _hold_still(self, x: Tensor, valid: Tensor) -> Tensor:
        """Past a short video's end (frame `valid` on), its last face held still: the still
        channels repeat the last frame's, differences and flow are 0."""
        length = x.shape[1]
        valid = valid.to(x.device)
        if bool((valid >= length).all()):
            return x
        last = x[torch.arange(len(x), device=x.device), (valid - 1).clamp(min=0)]
        held = torch.zeros_like(x)
        still = self.still_channels()
        held[:, :, still] = last[:, None, still]
        past = torch.arange(length, device=x.device)[None, :] >= valid[:, None]
        return torch.where(past.view(*past.shape, 1, 1, 1), held, x)


def _channels_first(frames: Tensor) -> Tensor:
    """(B, L, H, W[, C]) → (B, L, C, H, W)."""
    return frames[:, :, None] if frames.dim() == 4 else frames.permute(0, 1, 4, 2, 3)


def stack_parts(items: Sequence[Mapping]) -> dict:
    """The parts of several windows as batch tensors (WindowDataset items of equal length)."""
    arrays = [key for key in ("frames", "earlier", "rest", "flow") if key in items[0]]
    out = {key: torch.stack([i[key] for i in items]) for key in arrays}
    out["mirror"] = torch.tensor([bool(i["mirror"]) for i in items])
    out["gain"] = torch.tensor([float(i["gain"]) for i in items], dtype=torch.float32)
    return out
