"""Resuming a mespot-train run: `ckpt_path=<run>/checkpoints/last.ckpt` after an interruption
ends as the uninterrupted run would have — the same epoch kept, thresholds, predictions.csv and
metrics.json.

What last.ckpt carries for that: the weights with the thresholds chosen on validation (a
buffer), the optimiser and learning-rate schedule and the loops' epoch (Lightning), the best
epoch so far with its score (BestCheckpoint), and the random state of the coming epochs: the
balanced sampler's and the augmentation's generators, and the process's own
(SpottingDataModule.state_dict).

Where a resumed run writes: on in the run folder that holds the checkpoint (`hydra.run.dir`,
conf/train.yaml), so that the best epoch's file stays where the run's state says it is, a better
epoch replaces it as it would have, and the results are not split over two folders. The folder's
`.hydra/` stays the record of the command that started the run; each resume adds its own
command, its epoch and whether it is exact to `resumed.json`.

Not exact: with `data.num_workers` > 0 and augmentation, each loader worker draws the
augmentation from a generator of its own, which the training process cannot read to save; a
resumed run's workers start with new seeds. Such a resume says so in a
warning and in resumed.json (`"exact": false`); `data.num_workers=0` resumes exactly.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from mespot.checkpoint import read_checkpoint
from mespot.errors import UserError
from mespot.files import atomic_write_json
from mespot.runs import CHECKPOINTS, RECORD

log = logging.getLogger(__name__)


def read(cfg: DictConfig) -> dict | None:
    """The checkpoint `cfg.ckpt_path` names, if any: a mespot checkpoint in the checkpoints/
    folder of the run folder this run writes to (conf/train.yaml puts it there)."""
    if not cfg.ckpt_path:
        return None
    path = Path(cfg.ckpt_path)
    checkpoint = read_checkpoint(path, "ckpt_path", upgrade=False)
    if path.resolve().parent != (Path(cfg.paths.output_dir) / CHECKPOINTS).resolve():
        raise UserError(
            f"ckpt_path={path}: a run resumes in its own run folder, from its "
            f"<run>/{CHECKPOINTS}/last.ckpt, one run at a time (not in a multirun); this file "
            f"is not in the {CHECKPOINTS}/ folder of a mespot-train run folder"
        )
    return checkpoint


def check(cfg: DictConfig, checkpoint: dict | None, model: pl.LightningModule,
          datamodule: pl.LightningDataModule, overrides: list[str]) -> None:  # fmt: skip
    """Before training from `checkpoint` (`read`): that this config builds the model and data of
    the run that wrote it, and the resume recorded in resumed.json."""
    if checkpoint is None:
        return
    differences = _differences(checkpoint.get("hyper_parameters", {}), model.hparams, "model")
    data = {k: v for k, v in datamodule.hparams.items() if k != "cache_folder"}  # may move
    saved = checkpoint.get("datamodule_hyper_parameters", {})
    differences += _differences({k: saved.get(k) for k in data}, data, "data")
    if differences:
        raise UserError(
            f"{cfg.ckpt_path}: this config is not the run's that wrote it, so it cannot resume "
            "it: " + "; ".join(differences)
        )
    inexact = _inexact_reason(datamodule.hparams)
    if rank_zero_only.rank == 0:  # one record of a DDP run's resume
        _record(Path(cfg.paths.output_dir), cfg.ckpt_path, checkpoint, overrides, inexact)


def _differences(saved: dict, current: dict, group: str, prefix: str = "") -> list[str]:
    """`key (checkpoint A, config B)` for every setting that differs, nested keys dotted."""
    out = []
    for key in sorted(set(saved) | set(current), key=str):
        a, b = _plain(saved.get(key)), _plain(current.get(key))
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, group, f"{name}.")
        elif a != b:
            out.append(f"{_setting(group, name)} (checkpoint {a}, config {b})")
    return out


def _plain(value):
    """Lists for tuples, dicts for mappings: a checkpoint and a config spell them apart."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _setting(group: str, name: str) -> str:
    """The setting a user changes for a model or data hyperparameter."""
    if group == "data":
        return "seed" if name == "seed" else f"data.{name}"
    if name == "in_chans":
        return "in_chans (the input channels: data.use_flow, frame_diffs, rest_span)"
    if name.startswith(("preprocessing.", "inputs.")):
        return name.replace("inputs.", "data.", 1)
    return f"model.{name}"


def _inexact_reason(data) -> str | None:
    """Why this resume cannot draw what the uninterrupted run would, or None."""
    if data["num_workers"] > 0 and data["augment"]:
        return (
            f"data.num_workers={data['num_workers']}: the loader workers' augmentation "
            "generators cannot be saved, so they start again with new seeds and the resumed "
            "epochs draw other augmentations than the uninterrupted run would "
            "(data.num_workers=0 resumes exactly)"
        )
    return None


def _record(out: Path, path: str, checkpoint: dict, overrides: list[str],
            inexact: str | None) -> None:  # fmt: skip
    """Add this resume to the run folder's resumed.json (and warn when it is not exact)."""
    if inexact:
        log.warning("resume from %s is not exact: %s", path, inexact)
    record = out / RECORD
    earlier = json.loads(record.read_text()) if record.is_file() else []
    entry = {"ckpt_path": str(path), "epoch": checkpoint.get("epoch"),
             "global_step": checkpoint.get("global_step"), "overrides": overrides,
             "exact": inexact is None, "why_not_exact": inexact}  # fmt: skip
    atomic_write_json(record, [*earlier, entry])
