"""mespot-synth: write a mock dataset in the official layout of CAS(ME)², SAMM-LV or CAS(ME)³."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from mespot.cli.common import CONFIG_PATH, exit_on_user_error
from mespot.data.synth import MockSpec, write_mock


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="synth")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    spec = MockSpec(
        dataset=cfg.data.name,
        subjects=cfg.subjects,
        videos_per_subject=cfg.videos_per_subject,
        frames=cfg.frames,
        fps=cfg.fps,
        size=tuple(cfg.size),
        grey=cfg.grey,
        mae_per_video=cfg.mae_per_video,
        me_per_video=cfg.me_per_video,
        blinks_per_minute=cfg.blinks_per_minute,
        distractors=cfg.distractors,
        jpeg_quality=cfg.jpeg_quality,
        seed=cfg.seed,
        write_frames=cfg.write_frames,
    )
    out = write_mock(spec, cfg.out, workers=cfg.workers, overwrite=cfg.overwrite)
    print(f"wrote a mock {spec.dataset} dataset to {out}")
    print(f"read it with: mespot-annotations data={spec.dataset} data.root={out}")


if __name__ == "__main__":
    main()
