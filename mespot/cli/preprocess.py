"""mespot-preprocess: a dataset's frames → face crops and optical flow in the cache."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from mespot.cli.common import CONFIG_PATH, exit_on_interrupt, exit_on_user_error, read_dataset
from mespot.data.preprocess import Settings, preprocess


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="preprocess")
@exit_on_user_error
@exit_on_interrupt(
    "preprocessing stopped (finished videos are kept; run the same command to resume)"
)
def main(cfg: DictConfig) -> None:
    annotations = read_dataset(cfg.data)
    settings = preprocessing_settings(cfg)
    report = preprocess(
        annotations,
        cfg.data.root,
        cfg.paths.cache_dir,
        settings,
        workers=cfg.workers,
        force=cfg.force,
        progress=cfg.progress,
    )
    print(report.summary())
    if report.failed:
        raise SystemExit(1)


def preprocessing_settings(node) -> Settings:
    """The cache settings of a `preprocessing` config (conf/preprocessing/default.yaml)."""
    return Settings(
        size=node.size,
        colour=node.colour,
        detector=node.face.detector,
        margin=node.face.margin,
        face_frames=node.face.frames,
        align=node.face.align,
        fps=node.fps,
        flow_method=node.flow.method,
        flow_params=OmegaConf.to_container(node.flow.params),
        flow_step=node.flow.step,
        flow_device=node.flow.device,
    )


if __name__ == "__main__":
    main()
