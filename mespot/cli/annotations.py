"""mespot-annotations: read a dataset's official files, write intervals.csv and videos.csv."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from mespot.cli.common import CONFIG_PATH, exit_on_user_error, read_dataset


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="annotations")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    annotations = read_dataset(cfg.data)
    print(annotations.summary())
    for path in annotations.write(cfg.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
