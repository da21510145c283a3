"""mespot-plot: predictions.csv (+ ground truth) → a timeline figure of one video."""

from __future__ import annotations

import hydra
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mespot.cli.common import CONFIG_PATH, exit_on_user_error
from mespot.data.adapters import ADAPTERS
from mespot.errors import UserError
from mespot.intervals import read_intervals

DEFAULT_FPS = 30.0  # CAS(ME)² and CAS(ME)³; SAMM-LV is 200 (fps=200 or data=sammlv)
MAX_LISTED = 20  # videos named in the "no such video" error


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="plot")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    video = as_typed("video", cfg.video)
    subject = as_typed("subject", cfg.subject)
    fps, fps_source = frame_rate(cfg)
    predictions = read_intervals(cfg.predictions, scored=True)
    ground_truth = read_intervals(cfg.ground_truth) if cfg.ground_truth else None
    subject = find_video(predictions, ground_truth, video, subject, cfg)
    pred = _of(predictions, subject, video)
    gt = None if ground_truth is None else _of(ground_truth, subject, video)
    title = cfg.title or f"{subject} {video}: {cfg.predictions}"
    # matplotlib (~0.4 s) only once there is a figure to draw: --help and a mistake answer sooner
    from mespot.plot import mark_hits, timeline

    path = timeline(
        cfg.out,
        predictions=pred,
        fps=fps,
        ground_truth=gt,
        title=title,
        iou=cfg.iou,
        matching=cfg.matching,
    )
    summary = f"{subject} {video}: {len(pred)} predictions"
    if gt is not None:
        hit, found = mark_hits(pred, gt, iou=cfg.iou, matching=cfg.matching)
        summary += (
            f" ({hit.sum()} TP, {(~hit).sum()} FP), {len(gt)} ground truth ({found.sum()} found)"
        )
    print(f"{summary}; {fps:g} fps ({fps_source})")
    print(f"wrote {path}")


def as_typed(key: str, value: object) -> str | None:
    """A name as the user typed it: Hydra reads video=15_0101 as the integer 150101."""
    if value is None or isinstance(value, str):
        return value
    for override in HydraConfig.get().overrides.task:
        name, _, text = override.lstrip("+~").partition("=")
        if name.strip() == key:
            return text.strip().strip("'\"")
    return str(value)


def frame_rate(cfg: DictConfig) -> tuple[float, str]:
    """fps=…, else the data=… dataset's rate, else 30; and where it came from."""
    if cfg.fps is not None:
        return cfg.fps, "fps="
    data = cfg.get("data")
    if data is not None:
        return ADAPTERS[data.name].FPS, f"data={data.name}"
    return DEFAULT_FPS, "default; SAMM-LV needs fps=200 or data=sammlv"


def find_video(
    predictions: pd.DataFrame,
    ground_truth: pd.DataFrame | None,
    video: str,
    subject: str | None,
    cfg: DictConfig,
) -> str:
    """The subject whose `video` is asked for; a UserError naming the files when there is none."""
    tables = [predictions] if ground_truth is None else [predictions, ground_truth]
    keys = pd.concat([t[["subject", "video"]] for t in tables]).drop_duplicates()
    files = str(cfg.predictions) + ("" if ground_truth is None else f" or {cfg.ground_truth}")
    subjects = sorted(keys.loc[keys["video"] == video, "subject"])
    if not subjects:
        videos = sorted(keys["video"].unique())
        listed = ", ".join(videos[:MAX_LISTED])
        more = f", … ({len(videos)} in all)" if len(videos) > MAX_LISTED else ""
        raise UserError(f"no video {video!r} in {files}; videos there: {listed or 'none'}{more}")
    if subject is None:
        if len(subjects) > 1:
            raise UserError(
                f"video {video!r} is under subjects {', '.join(subjects)} in {files}: "
                "add subject=… to the command"
            )
        return subjects[0]
    if subject not in subjects:
        raise UserError(
            f"no video {video!r} of subject {subject!r} in {files}; "
            f"{video} is under subject(s) {', '.join(subjects)}"
        )
    return subject


def _of(table: pd.DataFrame, subject: str, video: str) -> pd.DataFrame:
    return table[(table["subject"] == subject) & (table["video"] == video)].reset_index(drop=True)


if __name__ == "__main__":
    main()
