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
from mespot.module import CHECKPOINT_FORMAT, SpotterModule


def read_checkpoint(path: str | Path, setting: str = "ckpt") -> dict:
    """A mespot-train checkpoint's contents, in a format this version reads; `setting` names the
    option that gave the path, for the error a user sees."""
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
    if stamp.get("format") != CHECKPOINT_FORMAT:
        raise UserError(
            f"{path}: checkpoint format {stamp.get('format')} (mespot {stamp.get('version')}); "
            f"this mespot reads format {CHECKPOINT_FORMAT}: use the mespot version that trained it"
        )
    return checkpoint


def load_spotter(path: str | Path) -> SpotterModule:
    """The SpotterModule of a mespot-train checkpoint, in eval mode on the CPU."""
    checkpoint = read_checkpoint(path)
    options = checkpoint.get("hyper_parameters") or {}
    needed = ("preprocessing", "inputs")
    if not isinstance(options, dict) or not all(options.get(k) for k in needed):
        raise UserError(f"{path}: holds no preprocessing settings to repeat on a recording")
    try:
        model = SpotterModule(**options)
    except (UserError, TypeError, ValueError, KeyError) as e:  # settings of another version
        raise UserError(f"{path}: describes a model this mespot cannot build ({e})") from None
    mismatch = _mismatch(model.state_dict(), checkpoint["state_dict"])
    if mismatch:
        backbone = options.get("backbone", {}).get("name")
        raise UserError(f"{path}: its weights do not fit the model its settings describe "
                        f"(backbone {backbone}, {options.get('in_chans')} input channels): "
                        f"{mismatch}")  # fmt: skip
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()


def _mismatch(expected: dict, found: dict) -> str:
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
