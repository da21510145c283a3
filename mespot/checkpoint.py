"""Loading a trained spotter safely: tensors and plain values only, never pickled code.

`torch.load(weights_only=True)` refuses any object that would run code while unpickling, so a
checkpoint from a stranger cannot execute anything. What it can hold is checked before use:
that mespot wrote it, in a format this version reads, with the preprocessing settings that
`mespot-spot` must repeat on a new recording.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from mespot.errors import UserError

# Bump when a checkpoint of the previous format can no longer be loaded as it is. 2: a threshold
# per type; 3: the backbone's gate is a linear map, not one number; 4: the network is the
# module's `spotter`, and test-time views are a list (`upgrade` reads format 3).
CHECKPOINT_FORMAT = 4
NETWORK = ("encoder.", "neck.", "head.", "motion.")  # format 3's keys of the network


def read_checkpoint(path: str | Path, setting: str = "ckpt", upgrade: bool = True) -> dict:
    """A mespot-train checkpoint's contents, in a format this version reads; `setting` names the
    option that gave the path, for the error a user sees. With `upgrade`, a checkpoint of the
    format before is read as this one (to spot or export with; not to resume training from:
    Lightning reads that file as it is)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{setting}={path} is a folder; give a checkpoint file (e.g. last.ckpt)")
    if not path.is_file():
        raise UserError(f"{setting}={path}: no such file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        OSError,
        zipfile.BadZipFile,
        ValueError,
    ) as e:  # a truncated file: OSError from the zip reader
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: not a readable checkpoint (corrupt, truncated, or holding "
                        f"code that is not loaded for safety): {first_line}") from e  # fmt: skip
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise UserError(f"{path}: not a Lightning checkpoint (no state_dict)")
    stamp = checkpoint.get("mespot")
    if not isinstance(stamp, dict):
        raise UserError(f"{path}: not written by mespot-train (or by a version before 0.1)")
    if upgrade and stamp.get("format") == CHECKPOINT_FORMAT - 1:
        checkpoint = _upgrade(checkpoint, path)
        stamp = checkpoint["mespot"]
    if stamp.get("format") != CHECKPOINT_FORMAT:
        raise UserError(
            f"{path}: checkpoint format {stamp.get('format')} (mespot {stamp.get('version')}); "
            f"this mespot reads format {CHECKPOINT_FORMAT}: use the mespot version that trained it"
        )
    return checkpoint


def _upgrade(checkpoint: dict, path: Path) -> dict:
    """A format-3 checkpoint as format 4: the network's weights under `spotter.` (the gate's as
    `spotter.gate.weight`), `mirror_eval` as `test_time`, and no `freeze_after_warmup` (a
    format-3 option that format 4 no longer has: its checkpoints are refused)."""
    options = dict(checkpoint.get("hyper_parameters") or {})
    if options.pop("freeze_after_warmup", False):
        raise UserError(f"{path}: trained with model.freeze_after_warmup, which this mespot no "
                        "longer has: use the mespot version that trained it")  # fmt: skip
    if "mirror_eval" in options:
        options["test_time"] = ["mirror"] if options.pop("mirror_eval") else []
    state = {}
    for key, value in checkpoint["state_dict"].items():
        if key == "gate":
            key = "spotter.gate.weight"
        elif key.startswith(NETWORK):
            key = "spotter." + key
        state[key] = value
    stamp = {**checkpoint["mespot"], "format": CHECKPOINT_FORMAT}
    return {**checkpoint, "hyper_parameters": options, "state_dict": state, "mespot": stamp}


def weights_mismatch(expected: dict, found: dict) -> str:
    """The first difference between the model's weights and a checkpoint's, in a few words
    (empty when they fit): torch's own message lists every key, over many lines."""
    shape = {k: tuple(getattr(v, "shape", ())) for k, v in found.items()}
    for key, weight in expected.items():
        if key in shape and shape[key] != tuple(weight.shape):
            return (f"{key} is {_size(shape[key])} in the checkpoint, "
                    f"{_size(weight.shape)} in the model")  # fmt: skip
    missing = [k for k in expected if k not in found]
    extra = [k for k in found if k not in expected]
    parts = [f"{len(missing)} weight(s) missing (first {missing[0]})"] if missing else []
    parts += [f"{len(extra)} weight(s) the model has not (first {extra[0]})"] if extra else []
    return "; ".join(parts)


def _size(shape) -> str:
    return "×".join(map(str, shape)) or "a scalar"
