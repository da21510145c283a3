"""mespot-train: one leave-one-subject-out fold (train, pick epoch and threshold on validation
subjects, test the held-out subject) — or, with `-m data.test_subject=all`, every fold.

Inside a multirun a fold that fails writes failed.txt and lets the other folds run; the
aggregation at the end names it and the command exits non-zero.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
import warnings
from dataclasses import asdict
from pathlib import Path

import hydra
import lightning.pytorch as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from mespot import resume, tracking
from mespot.cli.common import (
    CONFIG_PATH,
    compose_train,
    exit_on_interrupt,
    exit_on_user_error,
    user_message,
)
from mespot.cli.preprocess import preprocessing_settings
from mespot.data import cache
from mespot.data.datamodule import SpottingDataModule, input_settings
from mespot.data.videos import refuse_unfinished, scan_cache
from mespot.errors import UserError
from mespot.files import atomic_write_text
from mespot.loso import ALL_FOLDS, FOLD_KEY
from mespot.parallel import claim_gpu, fold_threads, folds_at_once
from mespot.runs import FAILED_FILE, kept_in, set_aside_previous, write_failed

log = logging.getLogger(__name__)

# Lines Lightning prints in every run that say nothing about this one: adverts for its cloud
# services, and which accelerators exist (the fold's own log line says which devices it uses).
LIGHTNING_ADVERTS = ("💡 Tip:", "GPU available:", "TPU available:", "HPU available:")
# Warnings that are no fault of the user's setting: a torch deprecation inside Lightning, a hint
# to add loader workers (data.num_workers is a setting of its own, 0 on purpose on a CPU), and a
# short epoch (the baseline trains one batch) logging less often than log_every_n_steps.
HARMLESS_WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"The '\w+' does not have many workers",
    r"The number of training batches \(\d+\) is smaller than the logging interval",
)


def cache_folder_of(cfg: DictConfig):
    """The cache that `mespot-preprocess` filled for this dataset and these settings."""
    settings = preprocessing_settings(cfg.preprocessing)
    key = settings.key(cfg.data.name, Path(cfg.data.root))
    folder = cache.cache_folder(cfg.paths.cache_dir, cfg.data.name, key)
    if not (folder / "intervals.csv").is_file():
        raise UserError(
            f"no cache for these settings at {folder}: run mespot-preprocess "
            f"data={cfg.data.name} data.root={cfg.data.root} (with the same preprocessing "
            "settings) first"
        )
    return folder


def expand_all_folds(argv: list[str]) -> list[str]:
    """`data.test_subject=all` → every cached subject, so `-m` runs one job per fold and the
    sweep's multirun.yaml records the fold list (aggregation reads it to name missing folds)."""
    target = f"{FOLD_KEY}={ALL_FOLDS}"
    if target not in argv:
        return argv
    if not {"-m", "--multirun"} & set(argv):
        raise UserError(f"{target} runs one job per subject: add -m (a multirun)")
    overrides = OverridesParser.create().parse_overrides(
        [a for a in argv[1:] if "=" in a and not a.startswith("-") and a != target]
    )
    if any(o.is_sweep_override() and o.key_or_group.startswith("data") for o in overrides):
        raise UserError(f"{target} needs one dataset: sweep data=… in separate multiruns")
    fixed = [o.input_line for o in overrides
             if not o.is_sweep_override() and not o.key_or_group.startswith("hydra")]  # fmt: skip
    cfg = compose_train(fixed)
    folder = cache_folder_of(cfg)
    finished, unfinished = scan_cache(folder)
    if not cfg.data.allow_uncached:  # once for the sweep, rather than in every fold
        refuse_unfinished(folder, unfinished, len(finished) + len(unfinished))
    subjects = sorted({info.subject for info in finished + unfinished})
    # the settings every fold shares, built once for the first fold: a mistake there (say
    # data.batch_size=0) is one line before any fold starts, not one per fold or cluster job
    build_data_and_model(compose_train([*fixed, f"{FOLD_KEY}={subjects[0]}"]), folder)
    return [f"{FOLD_KEY}={','.join(subjects)}" if a == target else a for a in argv]


def _instantiate_all(group: DictConfig | None) -> list:
    """Every entry of a callbacks/logger group; an entry set to null is switched off."""
    return [hydra.utils.instantiate(c) for c in (group or {}).values() if c is not None]


def build_data_and_model(
    cfg: DictConfig, folder: Path
) -> tuple[SpottingDataModule, pl.LightningModule]:
    """The fold's data module, set up on the cache `folder`, and the model built for the inputs
    it feeds (tests/test_configs.py builds every experiment through here)."""
    data = OmegaConf.to_container(cfg.data, resolve=True)  # plain values: checkpoints hold them
    datamodule = SpottingDataModule.from_config(folder, data, cfg.seed)
    datamodule.setup()
    model = hydra.utils.instantiate(
        cfg.model,
        in_chans=datamodule.in_channels,
        preprocessing=asdict(preprocessing_settings(cfg.preprocessing)),
        inputs=input_settings(cfg.data),
        _convert_="all",
    )
    return datamodule, model


def build_trainer(cfg: DictConfig) -> pl.Trainer:
    """The trainer with every callback and logger the config lists; nothing runs yet."""
    callbacks, loggers = _instantiate_all(cfg.get("callbacks")), _instantiate_all(cfg.get("logger"))
    return hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)


def run_fold(cfg: DictConfig) -> dict | float:
    """Train and test one fold; the metrics, or `optimized_metric` alone for a sweeper."""
    checkpoint = resume.read(cfg)  # to resume from: fails before any work
    folder = cache_folder_of(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)  # the seed is in config.yaml
    datamodule, model = build_data_and_model(cfg, folder)
    resume.check(cfg, checkpoint, model, datamodule, list(HydraConfig.get().overrides.task))
    # after the check: a resume that cannot go on leaves its run folder as it was
    config = OmegaConf.to_yaml(cfg, resolve=True)
    atomic_write_text(Path(cfg.paths.output_dir) / "config.yaml", config)
    trainer = build_trainer(cfg)
    for logger in trainer.loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    trainer.fit(model, datamodule, ckpt_path=cfg.ckpt_path)
    checkpoint = trainer.checkpoint_callback
    if cfg.test:
        best = checkpoint.best_model_path if checkpoint else ""
        trainer.test(model, datamodule, ckpt_path=best or None, verbose=_shows_tables(cfg))
    if cfg.optimized_metric:  # the best validation epoch's score, never the test subject's
        kept = checkpoint and checkpoint.monitor == cfg.optimized_metric
        if kept and checkpoint.best_model_score is not None:
            return float(checkpoint.best_model_score)
        return float(trainer.callback_metrics[cfg.optimized_metric])
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


class _DropAdverts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(LIGHTNING_ADVERTS)


def quiet_console(cfg: DictConfig, parallel: bool) -> None:
    """Lightning without its adverts and harmless warnings; with folds running side by side,
    without its progress bars, tables and notes too, whose lines would interleave: each fold
    then says one line when it ends (`report_fold`). Warnings about the data stay."""
    for pattern in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    notes = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropAdverts) for f in notes.filters):
        notes.addFilter(_DropAdverts())
    if parallel:
        logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
        with open_dict(cfg):
            cfg.callbacks.progress = None
            cfg.trainer.enable_progress_bar = False
            cfg.trainer.enable_model_summary = False


def _shows_tables(cfg: DictConfig) -> bool:
    return cfg.trainer.get("enable_model_summary", True) is not False


def report_fold(cfg: DictConfig, metrics: dict, seconds: float) -> None:
    """One line per finished fold: how long it took where, its test F1 per type."""
    scores = [f"{name} F1 {metrics[f'test/{key}_f1']:.4f}"
              for name, key in (("MaE", "mae"), ("ME", "me"), ("overall", "overall"))
              if f"test/{key}_f1" in metrics]  # fmt: skip
    log.info("fold %s done in %.1f min on %s%s", cfg.data.test_subject, seconds / 60,
             where_it_ran(cfg), ": " + ", ".join(scores) if scores else "")  # fmt: skip


def where_it_ran(cfg: DictConfig) -> str:
    """`GPU 1 (4 CPU threads)` or `1 CPU thread`: the devices the trainer had, and the threads
    the loader and any CPU work had beside them."""
    n = torch.get_num_threads()
    threads = f"{n} CPU thread" + ("" if n == 1 else "s")
    accelerator, devices = cfg.trainer.accelerator, cfg.trainer.devices
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        if isinstance(devices, int | str):
            gpus = f"{devices} GPU" + ("" if str(devices) == "1" else "s")
        else:
            gpus = "GPU " + ",".join(map(str, devices))
        return f"{gpus} ({threads})"
    return threads


def _prepare(cfg: DictConfig, multirun: bool) -> None:
    """Settings that depend on where the fold runs: threads, GPU, W&B group, console."""
    strategy = cfg.trainer.get("strategy", "auto")
    strategy = strategy.get("_target_", "") if isinstance(strategy, DictConfig) else str(strategy)
    if multirun and "ddp" in strategy.lower():
        raise UserError(
            f"trainer.strategy {strategy} inside a multirun relaunches the whole sweep on every "
            "rank: run folds one per GPU with hydra/launcher=joblib, and trainer=ddp for a "
            "single fold without -m"
        )
    launcher = HydraConfig.get().launcher
    parallel = multirun and folds_at_once(launcher) > 1
    quiet_console(cfg, parallel)
    torch.set_num_threads(cfg.threads or fold_threads(launcher))
    with open_dict(cfg):
        if multirun and cfg.trainer.accelerator in ("gpu", "cuda") and cfg.trainer.devices == 1:
            sweep = Path(HydraConfig.get().sweep.dir)
            gpus = torch.cuda.device_count()
            cfg.trainer.devices = [claim_gpu(sweep, gpus, cfg.folds_per_gpu)]
        wandb = (cfg.get("logger") or {}).get("wandb")
        if wandb is not None and wandb.group is None:
            wandb.group = tracking.default_group(cfg.name)
    log.log(logging.DEBUG if parallel else logging.INFO, "fold %s: %d CPU threads, devices %s",
            cfg.data.test_subject, torch.get_num_threads(), cfg.trainer.devices)  # fmt: skip


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
@exit_on_user_error
def task(cfg: DictConfig) -> dict | float | None:
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    out = Path(cfg.paths.output_dir)
    failed = True
    try:
        # first: nothing an earlier run left here can pass for this one's results (once: the
        # other ranks of a DDP run start in the folder that rank zero is already filling)
        if rank_zero_only.rank == 0:
            set_aside_previous(out, keep=kept_in(out, cfg.ckpt_path))
        _prepare(cfg, multirun)
        start = time.perf_counter()
        result = run_fold(cfg)
        failed = False
        if isinstance(result, dict):
            report_fold(cfg, result, time.perf_counter() - start)
        return result
    except Exception as e:
        user = isinstance(e, UserError)
        write_failed(out, f"error: {user_message(e)}" if user else traceback.format_exc())
        if not multirun or cfg.optimized_metric:  # a sweeper must see the trial fail
            raise
        log.error("fold %s failed: %s (%s)", cfg.data.test_subject, e, out / FAILED_FILE)
        return None
    except BaseException:  # Ctrl-C: Lightning cleans up, then exits
        write_failed(out, "interrupted before it finished")
        raise
    finally:
        tracking.finish_run(failed)


@exit_on_interrupt(
    "finished folds keep their results (metrics.json); a fold without one did not finish and "
    "resumes with ckpt_path=<its folder>/checkpoints/last.ckpt where it has one (docs/training.md)"
)
def main() -> None:
    sys.argv = exit_on_user_error(expand_all_folds)(sys.argv)
    task()


if __name__ == "__main__":
    main()
