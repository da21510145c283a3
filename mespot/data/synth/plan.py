"""The random choices of a mock dataset: who the subjects are and what happens when in each video.

Each subject and each video draws from its own seeded stream, so adding subjects or videos
leaves the existing ones unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mespot.data.synth.render import Appearance, Event, expression_event, sample_appearance
from mespot.errors import UserError

ME_SECONDS = (0.2, 0.5)  # micro-expressions last at most half a second
MAE_SECONDS = (0.6, 4.0)
BLINK_SECONDS = (0.12, 0.25)
MARGIN_SECONDS = 0.5  # nothing starts or ends this close to a video's ends
GAP_SECONDS = 0.3  # quiet time between two events


@dataclass(frozen=True)
class MockVideo:
    subject: str
    video: str
    index: int  # the video's position within its subject (0, 1, …)
    n_frames: int
    appearance: Appearance
    events: tuple[Event, ...]  # expressions and blinks, frame indices from 0
    seed: int
    dropped: frozenset[int] = frozenset()  # frame indices not written (CAS(ME)³ gaps)

    @property
    def expressions(self) -> tuple[Event, ...]:
        return tuple(e for e in self.events if e.kind in ("mae", "me"))


def plan_videos(spec, layout) -> list[MockVideo]:
    subjects = layout.subject_ids(spec.subjects)
    videos = []
    for s, subject in enumerate(subjects):
        appearance = sample_appearance(np.random.default_rng([spec.seed, 100, s]))
        for v, video in enumerate(layout.video_ids(subject, spec.videos_per_subject)):
            rng = np.random.default_rng([spec.seed, 200, s, v])
            events = _schedule(spec, rng)
            dropped = layout.dropped_frames(spec.frames, rng)
            seed = int(rng.integers(2**31))
            videos.append(
                MockVideo(subject, video, v, spec.frames, appearance, events, seed, dropped)
            )
    return videos


def _schedule(spec, rng: np.random.Generator) -> tuple[Event, ...]:
    """Expressions and blinks in random order at random, non-overlapping places.

    The free time is cut at random points, so any arrangement that fits can come out and one
    always does when the events fit at all (blinks are dropped first when they do not).
    """
    fps, n = spec.frame_rate, spec.frames
    longest_mae = max(MAE_SECONDS[0], min(MAE_SECONDS[1], n / fps / 4))
    kinds = ["mae"] * spec.mae_per_video + ["me"] * spec.me_per_video
    kinds += ["blink"] * int(rng.poisson(spec.blinks_per_minute * n / fps / 60))
    ranges = {"mae": (MAE_SECONDS[0], longest_mae), "me": ME_SECONDS, "blink": BLINK_SECONDS}
    lengths = [max(3, round(rng.uniform(*ranges[k]) * fps)) for k in kinds]
    lengths = [
        min(n_, round(ME_SECONDS[1] * fps)) if k == "me" else n_
        for k, n_ in zip(kinds, lengths, strict=True)
    ]
    margin, gap = round(MARGIN_SECONDS * fps), round(GAP_SECONDS * fps)

    def free_frames() -> int:
        return n - 2 * margin - sum(lengths) - gap * (len(lengths) - 1)

    while free_frames() < 0 and kinds and kinds[-1] == "blink":
        kinds.pop()
        lengths.pop()
    if free_frames() < 0:
        raise UserError(
            f"frames={n} at {fps:g} fps is too short for {spec.mae_per_video} MaE and "
            f"{spec.me_per_video} ME per video; raise frames or lower the counts"
        )
    order = rng.permutation(len(kinds))
    slack = np.diff(np.sort(rng.integers(0, free_frames() + 1, len(kinds))), prepend=0)
    events, start = [], margin
    for extra, i in zip(slack, order, strict=True):
        start += int(extra)
        events.append(expression_event(kinds[i], start, start + lengths[i] - 1, rng))
        start += lengths[i] + gap
    return tuple(events)
