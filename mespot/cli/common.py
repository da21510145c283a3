"""What every entry point shares: where the configs live and how user mistakes are reported."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue

from mespot import runs
from mespot.data.adapters import Policies, load_annotations
from mespot.data.tables import Annotations
from mespot.errors import UserError

# The repository's conf/ (mespot is installed editable from a clone); absolute, because Hydra
# reads a relative path as a Python package when the caller is an installed console script.
REPO_DIR = Path(__file__).resolve().parents[2]
CONFIG_PATH = str(REPO_DIR / "conf")


def compose_train(overrides=(), return_hydra_config: bool = False):
    """conf/train.yaml with these overrides, composed outside a Hydra app (with its `hydra`
    node when asked: the sweeper's and launcher's settings)."""
    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=return_hydra_config)


# `${repo_dir:}` in configs: default locations (e.g. data/cache) inside the clone, whatever the cwd.
OmegaConf.register_new_resolver("repo_dir", lambda: str(REPO_DIR), replace=True)
# conf/train.yaml: a resumed run goes on in its checkpoint's run folder (mespot/runs.py)
OmegaConf.register_new_resolver("run_folder", runs.run_folder, replace=True)
OmegaConf.register_new_resolver("hydra_subdir", runs.hydra_subdir, replace=True)


def full_errors() -> bool:
    """`HYDRA_FULL_ERROR=1` in the environment: every error keeps its traceback, a user's
    mistake and Ctrl-C too (for debugging mespot itself), as Hydra's own errors do."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def exit_on_user_error(task: Callable) -> Callable:
    """Turn a UserError or a missing `???` setting into one line on stderr and exit status 2
    (with `HYDRA_FULL_ERROR=1`, a traceback instead)."""

    @functools.wraps(task)
    def wrapper(*args, **kwargs):
        try:
            return task(*args, **kwargs)
        except UserError as e:
            if full_errors():
                raise
            message = user_message(e)
        except InstantiationException as e:  # a UserError raised while building from a config
            if not isinstance(e.__cause__, UserError) or full_errors():
                raise
            message = str(e.__cause__)
        except MissingMandatoryValue as e:
            if full_errors():
                raise
            message = f"{e.full_key} is required: add {e.full_key}=… to the command"
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)

    return wrapper


def user_message(error: UserError) -> str:
    """A UserError's own message, also when a DataLoader worker raised it: torch re-raises it
    in the main process with the worker's traceback in front (`Caught UserError in DataLoader
    worker process 0. Original Traceback … mespot.errors.UserError: <message>`)."""
    message, marker = str(error), f"{UserError.__module__}.{UserError.__name__}: "
    if "Original Traceback" in message and marker in message:
        return message.rsplit(marker, 1)[1].strip()
    return message


def exit_on_interrupt(message: str) -> Callable:
    """Ctrl-C as one line, `interrupted: <message>`, and the shell's status for it, 130: for a
    task that leaves nothing half-written when interrupted (the message says what is kept)."""

    def decorate(task: Callable) -> Callable:
        @functools.wraps(task)
        def wrapper(*args, **kwargs):
            try:
                return task(*args, **kwargs)
            except KeyboardInterrupt:
                if full_errors():
                    raise
                print(f"interrupted: {message}", file=sys.stderr)
                raise SystemExit(130) from None

        return wrapper

    return decorate


def output_file(setting: str, value, example: str) -> Path:
    """The file a setting such as `out=` names, refused before any work when it cannot be one:
    an existing folder (the message suggests the `example` file name in it), or a path below a
    file."""
    path = Path(value)
    if path.is_dir():
        raise UserError(f"{setting}={value} is a folder; give a file: {setting}={path / example}")
    below = next((p for p in path.parents if p.exists()), None)
    if below is not None and not below.is_dir():
        raise UserError(f"{setting}={value}: {below} is a file, not a folder")
    return path


def read_dataset(data) -> Annotations:
    """The dataset that a `data` config group names, read through its adapter."""
    return load_annotations(
        data.name,
        data.root,
        annotations=data.annotations,
        frames_dir=data.frames_dir,
        policies=Policies(**data.policies),
    )
