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
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
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
    options = checkpoint.get("hyper_parameters", {})
    if not options.get("preprocessing") or not options.get("inputs"):
        raise UserError(f"{path}: holds no preprocessing settings to repeat on a recording")
    model = SpotterModule(**options)
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as e:
        raise UserError(f"{path}: weights do not fit the model it describes: {e}") from e
    return model.eval()
