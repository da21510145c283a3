"""mespot-spot: a recording + a checkpoint → intervals.csv, intervals.json, timeline.png."""

from __future__ import annotations

from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from mespot.cli.common import CONFIG_PATH, exit_on_interrupt, exit_on_user_error
from mespot.files import atomic_write_json, atomic_write_text
from mespot.intervals import format_thresholds, read_intervals
from mespot.spot import spot


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="spot")
@exit_on_user_error
@exit_on_interrupt(
    "no intervals written; the recording's preprocessing is kept if it had finished, and the "
    "same command reuses it"
)
def main(cfg: DictConfig) -> None:
    video = Path(cfg.video)
    out = Path(cfg.out) if cfg.out else Path("spots") / video.stem
    ground_truth = read_intervals(cfg.ground_truth, keyed=False) if cfg.ground_truth else None
    result = spot(video, cfg.ckpt, out, fps=cfg.fps, batch_size=cfg.batch_size,
                  progress=cfg.progress, device=cfg.device,
                  face_check_every=cfg.face_check_every)  # fmt: skip
    table = result.intervals
    atomic_write_text(out / "intervals.csv", table.to_csv(index=False))
    atomic_write_json(out / "intervals.json", {
        "video": str(video), "checkpoint": str(cfg.ckpt), "fps": result.recording.fps,
        "frames": len(result.recording.numbers), "thresholds": result.thresholds,
        "intervals": table.to_dict(orient="records"),
        "face_check_every_frames": result.face_every,  # null: no face check
        "face_missing": result.face_missing.tolist(),
        "face_missing_frames": result.face_missing_frames,
        "dropped_for_face_missing": result.dropped,
    })  # fmt: skip
    written = ["intervals.csv", "intervals.json"]
    if cfg.plot:
        from mespot.plot import timeline

        timeline(out / "timeline.png", predictions=table, fps=result.recording.fps,
                 scores=result.frame_scores, frames=np.asarray(result.info.source_frames),
                 ground_truth=ground_truth, thresholds=result.thresholds,
                 face_missing=result.face_missing,
                 title=f"{video.name} — {Path(cfg.ckpt).name}")  # fmt: skip
        written.append("timeline.png")
    seconds = len(result.recording.numbers) / result.recording.fps
    print(f"{video}: {len(table)} expression(s) spotted in {seconds:.1f} s "
          f"(thresholds {format_thresholds(result.thresholds)})")  # fmt: skip
    if len(table):
        print(table.to_string(index=False))
    print(f"wrote {', '.join(written)} in {out}")


if __name__ == "__main__":
    main()
