"""Every config a user can name builds a fold, as the lightning-hydra-template tests its configs:
each experiment, each cell of the sweeps they define (the cells Hydra's own sweepers launch),
and each option of the main config groups is composed from a user's command line AND
instantiated as `mespot-train` instantiates a fold (mespot/cli/train.py): the data module set up
on a tiny preprocessed cache, the model built for the inputs it feeds, the optimizer and
scheduler that fit builds, every callback and logger, and the trainer. Nothing trains.

A config that composes may still name a class that does not exist, an option the model refuses
or a value the data module refuses: only building it shows that, and here it shows in seconds
rather than after a dataset's preprocessing, on a GPU machine.
"""

import re
from pathlib import Path

import optuna
import pytest
import torch
from conftest import TINY, preprocessed_mock
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides
from omegaconf import OmegaConf, open_dict

from mespot.cli.common import CONFIG_PATH, compose_train
from mespot.cli.train import build_data_and_model, build_trainer, cache_folder_of
from mespot.data.synth import MockSpec
from mespot.module import SpotterModule

FOLD = ["data.test_subject=s16"]  # what every command line adds: the fold (of the mock below)
GROUPS = ("data", "model", "model/backbone", "model/neck", "trainer", "logger", "callbacks",
          "debug")  # fmt: skip
SEARCH = ["hparams_search=optuna", "experiment=mock_cpu", *FOLD]  # as conf/hparams_search/ says


def options(group: str) -> list[str]:
    """The options of a config group: its files (a new one is tested without a change here)."""
    return sorted(p.stem for p in (Path(CONFIG_PATH) / group).glob("*.yaml")
                  if not p.stem.startswith("_"))  # fmt: skip


def sweep_lines(arguments: list[str]) -> tuple:
    """(hydra.sweeper, its params then the command line): what a sweeper parses."""
    sweeper = compose_train(arguments, return_hydra_config=True).hydra.sweeper
    return sweeper, [f"{key}={value}" for key, value in (sweeper.get("params") or {}).items()]


def sweep_cells(arguments: list[str]) -> list[list[str]]:
    """The jobs of `mespot-train -m <arguments>`, crossed by Hydra's BasicSweeper."""
    _, params = sweep_lines(arguments)
    overrides = OverridesParser.create().parse_overrides(params + arguments)
    return BasicSweeper.split_arguments(overrides, None)[0]


def first_trial(arguments: list[str]) -> list[str]:
    """The first job of `mespot-train -m <arguments>` under the Optuna sweeper: the point its
    seeded sampler draws first from the search space, as the sweeper asks for it."""
    sweeper, params = sweep_lines(arguments)
    space, fixed = create_params_from_overrides(params + arguments)
    study = optuna.create_study(sampler=instantiate(sweeper.sampler), direction=sweeper.direction)
    point = study.ask(fixed_distributions=space).params | fixed
    return [f"{key}={value}" for key, value in point.items()]


SWEEPS = {name: sweep_cells([f"experiment={name}", *FOLD]) for name in options("experiment")}
TRIAL = first_trial(SEARCH)
CELLS = [
    *(cell for cells in SWEEPS.values() for cell in cells),
    TRIAL,
    *([f"{group}={option}", *FOLD] for group in GROUPS for option in options(group)),
]


@pytest.fixture(scope="module")
def fold_cache(tmp_path_factory) -> Path:
    """The cache folder of a mock found as mespot-train finds it; 4 subjects, so that the
    paper's 2 validation subjects leave the fold one to train on."""
    spec = MockSpec("casme2", subjects=4, videos_per_subject=1, frames=200, size=(96, 72), seed=4)
    root, cache_dir = preprocessed_mock(spec, tmp_path_factory)
    return cache_folder_of(compose_train([*FOLD, *TINY, f"data.root={root}",
                                          f"paths.cache_dir={cache_dir}"]))  # fmt: skip


@pytest.fixture(autouse=True)
def wandb_off(monkeypatch):
    """logger=wandb is built, but writes and sends nothing."""
    monkeypatch.setenv("WANDB_MODE", "disabled")


def on_this_machine(cfg):
    """The config with a GPU trainer (trainer=gpu, experiment=paper) moved to the CPU when this
    machine has none, every other trainer setting (devices, precision, strategy, …) as it is:
    Lightning refuses a GPU accelerator without a GPU, and on a CPU takes 16-mixed as
    bf16-mixed. With a GPU the trainer is built as configured."""
    if cfg.trainer.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        with open_dict(cfg):
            cfg.trainer.accelerator = "cpu"
    return cfg


def build_fold(overrides: list[str], folder: Path, output_dir: Path) -> tuple:
    """(config, data module, model, trainer) of the fold that these command-line overrides
    describe, built as mespot-train builds it on the cache `folder`; the optimizer and
    scheduler too (fit builds them: a misnamed option of theirs fails only there)."""
    cfg = compose_train([*overrides, f"paths.output_dir={output_dir}"])
    datamodule, model = build_data_and_model(cfg, folder)
    model.configure_optimizers()
    return cfg, datamodule, model, build_trainer(on_this_machine(cfg))


def shown(cell: list[str]) -> str:
    """A cell's test id: its overrides but the fold's."""
    return " ".join(o for o in cell if o not in FOLD)


def switched_on(group) -> list:
    """The entries of a callbacks / logger group that are not null."""
    return [entry for entry in (group or {}).values() if entry is not None]


@pytest.mark.parametrize("overrides", CELLS, ids=shown)
def test_every_experiment_sweep_cell_and_option_builds_a_fold(overrides, fold_cache, tmp_path):
    if "logger=wandb" in overrides:
        pytest.importorskip("wandb", reason="logger=wandb needs the wandb package")
    cfg, datamodule, model, trainer = build_fold(overrides, fold_cache, tmp_path)
    # the model is built for what the data module feeds, and records it for mespot-spot
    assert model.hparams.in_chans == datamodule.in_channels
    if isinstance(model, SpotterModule):
        assert model.spec == datamodule.spec
    # every callback and logger the config switches on is the trainer's
    built = {type(c).__name__ for c in [*trainer.callbacks, *trainer.loggers]}
    configured = switched_on(cfg.get("callbacks")) + switched_on(cfg.get("logger"))
    assert {c._target_.rsplit(".", 1)[1] for c in configured} <= built
    assert len(trainer.loggers) == len(switched_on(cfg.get("logger")))
    assert trainer.max_epochs == cfg.trainer.max_epochs


def test_the_cells_are_the_sweeps_own():
    """One cell per job a multirun launches: Table 5's 2 inputs, Table 6's 3 backbones, the
    ablation grid's 2 backbones × 3 IoU weights, and an Optuna trial sets every searched key."""
    assert [c[0] for c in SWEEPS["table5"]] == ["data.use_flow=True", "data.use_flow=False"]
    assert [c[0] for c in SWEEPS["table6"]] == [
        f"model/backbone={name}" for name in ("vovnet", "resnet", "densenet")
    ]
    assert len({tuple(c) for c in SWEEPS["ablation_grid"]}) == 6
    assert all(len(cells) == 1 for name, cells in SWEEPS.items()
               if name not in ("table5", "table6", "ablation_grid"))  # fmt: skip
    searched = OmegaConf.load(Path(CONFIG_PATH) / "hparams_search/optuna.yaml").hydra.sweeper
    assert {line.split("=")[0] for line in TRIAL} >= set(searched.params)


def test_the_end_of_sweep_callbacks_build():
    for callback in compose_train(FOLD, return_hydra_config=True).hydra.callbacks.values():
        instantiate(callback)


@pytest.mark.parametrize(
    ("mistake", "named"),
    [
        ("model._target_=mespot.module.SpoterModule", "SpoterModule"),  # a misspelled class
        ("+model.backbone.widht=0.5", "widht"),  # an option the backbone does not take
        ("+model.head.kernel=3", "kernel"),  # … the head
        ("+model.optimizer.lrr=0.1", "lrr"),  # … the optimizer
        ("model.scheduler.boundaries=[0]", "boundaries"),  # a value the scheduler refuses
        ("data.val_subjects=3", "data.val_subjects=3"),  # … the data module (3 left to train)
        ("callbacks.progress._target_=lightning.pytorch.callbacks.RichProgresBar", "RichProgres"),
        ("+logger.csv.nme=csv", "nme"),  # an option the logger does not take
        ("+trainer.max_epoch=3", "max_epoch"),  # … the trainer
    ],
)
def test_a_config_mistake_fails_the_build_naming_it(mistake, named, fold_cache, tmp_path):
    """What the tests above catch, one mistake at a time, on the benchmark's CPU recipe (it has
    a scheduler)."""
    with pytest.raises(Exception, match=re.escape(named)):
        build_fold(["experiment=bench_accuracy", mistake, *FOLD], fold_cache, tmp_path)
