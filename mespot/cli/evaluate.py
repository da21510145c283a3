"""mespot-evaluate: predictions.csv + ground truth → a printed table and metrics.json."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from mespot.cli.common import CONFIG_PATH, exit_on_user_error, output_file
from mespot.files import atomic_write_json, atomic_write_text
from mespot.intervals import read_intervals, read_video_keys
from mespot.metrics import evaluate, format_pairs_log


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="evaluate")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    out = output_file("out", cfg.out, "metrics.json")
    log = output_file("log", cfg.log, "pairs.log") if cfg.log is not None else None
    predictions = read_intervals(cfg.predictions, scored=True)
    ground_truth = read_intervals(cfg.ground_truth)
    videos = read_video_keys(cfg.videos) if cfg.videos else None
    result = evaluate(
        predictions,
        ground_truth,
        iou=cfg.iou,
        matching=cfg.matching,
        videos=videos,
        pairs=log is not None,
    )
    print(f"{cfg.predictions} vs {cfg.ground_truth} (matching={cfg.matching}, iou={cfg.iou})")
    print(result.table())
    atomic_write_json(out, result.to_dict())
    print(f"wrote {out}")
    if log is not None:
        atomic_write_text(log, format_pairs_log(result.pairs))
        print(f"wrote {log}")


if __name__ == "__main__":
    main()
