"""Predictions in the MEGC submission layouts: the spotting task's and spot-then-recognise's.

mespot's `predictions.csv` (`subject,video,onset,offset,type,score`) becomes one of two CSV
files, rows ordered by video, then onset (then offset, type, subject, so the order is total):

`megc` — the spotting tasks (MEGC 2022 unseen set; 2023/2024 cross-cultural spotting):
    vid,onset,offset,type
    15_0101,557,608,mae
- `vid` is mespot's video id: `15_0101` (CAS(ME)²), `006_1` (SAMM-LV), `spNO.1_a` (CAS(ME)³);
  on an unseen MEGC test set, predictions must name each video by its folder name, which is
  what the organisers' ground truth uses. `type` is `mae` or `me`. Both types are exported.
- Sources: the submission scripts teams wrote for the unseen test sets write
  `vid,onset,offset,type` with `mae`/`me` and the video folder name as `vid` (2023); a 2022
  script writes `vid,pred_onset,pred_offset,type` with the same values. We use the 2023 header,
  which our issue names too. The score is not part of the layout.

`str` — spot-then-recognise (MEGC 2023–2025 STR):
    subject,video,onset,offset,emotion
    s15,15_0101,699,707,unknown
- The header and the evaluation follow the STR metric's reference code (Liong, See, Chan,
  "Spot-then-recognize", Signal Processing: Image Communication 2023; github.com/genbing99/
  STRS-Metric), whose example files and a MEGC 2024 entry's output use exactly these columns.
  That code matches a prediction to a ground truth of the same (subject, video) by IoU ≥ 0.5 on
  inclusive frame ranges, ignoring the emotion; the emotion is then compared by string equality.
- The task is *micro*-expression spot-then-recognise and the spotting step ignores type, so
  only `me` rows are exported by default (MaE rows would be spotting false positives).
- mespot does not recognise emotions, so every row carries an explicit placeholder,
  `unknown` by default: not a class of any dataset, so it never matches a ground-truth emotion —
  the spotting part is scored as it is, the recognition part gets no credit. A real class name
  (`negative`, `happiness`, `others`, …) is refused as placeholder: that would invent a class.

Frames (both layouts): the numbers in predictions.csv, unchanged — the dataset's own frame
numbers (as its annotations and frame files number them: 1-based for CAS(ME)² and SAMM-LV,
0-based file names for CAS(ME)³), inclusive at both ends, which is how the MEGC metric and the
STR metric compare intervals. Nothing is shifted.

Inputs are read with `mespot.intervals.read_intervals`, so a bad file stops with one line
naming the file, the line and the problem. Several files are concatenated (one LOSO fold each);
a video found in two of them is an error (the same fold twice would count its predictions
twice). `sweep_predictions` finds the predictions.csv of every finished fold of a mespot-train
multirun through `mespot.loso.aggregate`, so a re-run fold counts once (its newest run).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from mespot.errors import UserError
from mespot.intervals import KEY, REQUIRED_COLUMNS, TYPES, normalise_type, read_intervals
from mespot.runs import METRICS_FILE, PREDICTIONS_FILE, check_results

FORMATS = ("megc", "str")
MEGC_COLUMNS = ("vid", "onset", "offset", "type")
STR_COLUMNS = ("subject", "video", "onset", "offset", "emotion")
DEFAULT_TYPES = {"megc": TYPES, "str": ("me",)}
EMOTION_PLACEHOLDER = "unknown"
_ORDER = ["video", "onset", "offset", "type", "subject"]

# Emotion classes of the datasets and of MEGC recognition tasks: never a placeholder.
EMOTION_CLASSES = frozenset((
    "negative", "positive", "surprise", "others", "other", "happiness", "happy", "disgust",
    "repression", "fear", "sadness", "sad", "anger", "angry", "contempt", "neutral",
))  # fmt: skip


def to_megc(predictions: pd.DataFrame, *, types: Iterable[str] = TYPES) -> pd.DataFrame:
    """The spotting layout: vid,onset,offset,type (`type` mae|me), ordered by video, onset."""
    table = _select(predictions, types)
    return table[["video", "onset", "offset", "type"]].rename(columns={"video": "vid"})


def to_str(
    predictions: pd.DataFrame,
    *,
    emotion: str = EMOTION_PLACEHOLDER,
    types: Iterable[str] = DEFAULT_TYPES["str"],
) -> pd.DataFrame:
    """The spot-then-recognise layout: subject,video,onset,offset,emotion, ME rows by default.

    `emotion` fills the column: a placeholder, never a class mespot did not recognise.
    """
    emotion = check_placeholder(emotion)
    table = _select(predictions, types)
    out = table[["subject", "video", "onset", "offset"]].copy()
    out["emotion"] = emotion
    return out


def export_table(
    predictions: pd.DataFrame,
    format: str,
    *,
    types: Iterable[str] | None = None,
    emotion: str = EMOTION_PLACEHOLDER,
) -> pd.DataFrame:
    """`to_megc` or `to_str` by name; `types` None means the format's default."""
    if format not in FORMATS:
        raise UserError(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
    types = DEFAULT_TYPES[format] if types is None else types
    if format == "megc":
        return to_megc(predictions, types=types)
    return to_str(predictions, emotion=emotion, types=types)


def to_csv_text(table: pd.DataFrame) -> str:
    """The file's text: a header row, comma-separated, '\\n' line ends, no index."""
    return table.to_csv(index=False, lineterminator="\n")


def check_placeholder(emotion: object) -> str:
    text = str(emotion).strip() if emotion is not None else ""
    if not text or any(c in text for c in ',"\n\r'):
        raise UserError(
            f"emotion placeholder {emotion!r} must be a non-empty word without commas or quotes"
        )
    if text.lower() in EMOTION_CLASSES:
        raise UserError(
            f"emotion placeholder {text!r} is an emotion class; mespot does not recognise "
            f"emotions, so use a placeholder such as {EMOTION_PLACEHOLDER!r}"
        )
    return text


def parse_types(types: object) -> tuple[str, ...] | None:
    """'me', ['mae', 'me'], 'Micro', … → ('me',), ('mae', 'me'); None stays None."""
    if types is None:
        return None
    values = [types] if isinstance(types, str) else list(types)
    out = []
    for value in values:
        t = normalise_type(value)
        if t is None:
            raise UserError(f"unknown type {value!r} in types; expected mae and/or me")
        if t not in out:
            out.append(t)
    if not out:
        raise UserError("types is empty; expected mae and/or me")
    return tuple(t for t in TYPES if t in out)


def read_predictions(paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """Validated predictions.csv files, concatenated; a video in two files is an error, and so
    is a run's predictions.csv that is not the file its metrics.json scored."""
    tables, owner = [], {}
    for path in paths:
        beside = Path(path).parent
        if Path(path).name == PREDICTIONS_FILE and (beside / METRICS_FILE).is_file():
            problem = check_results(beside)  # a run's file: is it the one its run scored?
            if problem is not None:
                raise UserError(problem)
        table = read_intervals(path, scored=True)
        for key in dict.fromkeys(zip(table["subject"], table["video"], strict=True)):
            if key in owner:
                raise UserError(
                    f"{path}: video {key[1]} (subject {key[0]}) is also in {owner[key]}; "
                    "the same fold twice would count its predictions twice"
                )
            owner[key] = path
        tables.append(table)
    if not tables:
        raise UserError("no predictions given: add predictions=FILE or sweep=DIR")
    return pd.concat(tables, ignore_index=True)


def sweep_predictions(
    sweep: str | os.PathLike, experiment: str | None = None
) -> tuple[list[Path], list[str]]:
    """The predictions.csv of every finished fold of a mespot-train multirun folder.

    Returns the files (in subject order) and warnings naming the folds left out (missing,
    failed, unfinished; a superseded older run of a fold is left out silently, as in the
    summary). A sweep of several experiments (a grid) needs `experiment`, one of their labels.
    """
    from mespot.loso import aggregate  # pulls in torch and Hydra: only when a sweep is read

    summary = aggregate(sweep)
    labels = [e.label for e in summary.experiments]
    if experiment is None:
        if len(labels) > 1:
            raise UserError(
                f"{sweep}: holds {len(labels)} experiments; choose one with experiment=LABEL: "
                + "; ".join(repr(label) for label in labels)
            )
        chosen = summary.experiments[0]
    else:
        matches = [e for e in summary.experiments if e.label == str(experiment)]
        if not matches:
            raise UserError(
                f"{sweep}: no experiment {experiment!r}; found "
                + "; ".join(repr(label) for label in labels)
            )
        chosen = matches[0]
    corrupt = [f for f in chosen.failed if f.corrupt]
    if corrupt:  # a damaged fold is an error here, not a fold to leave out with a warning
        raise UserError(f"fold {corrupt[0].subject}: {corrupt[0].error}")
    files = []
    for fold in sorted(chosen.done, key=lambda f: f.subject):
        path = Path(sweep) / fold.job / PREDICTIONS_FILE
        if not path.is_file():
            raise UserError(f"{path}: file not found (fold {fold.subject} has metrics.json)")
        files.append(path)
    warnings = [f"fold {s} is missing from {sweep}; not exported" for s in chosen.missing]
    warnings += [
        f"fold {f.subject} ({Path(sweep) / f.job}) did not finish ({f.error}); not exported"
        for f in sorted(chosen.failed, key=lambda f: f.subject)
    ]
    if not files:
        raise UserError(f"{sweep}: no finished fold with {PREDICTIONS_FILE}")
    return files, warnings


def _select(predictions: pd.DataFrame, types: Iterable[str]) -> pd.DataFrame:
    """Checked rows of the chosen types, in the export order."""
    table = _checked(predictions)
    wanted = parse_types(list(types))
    table = table[table["type"].isin(wanted)]
    return table.sort_values(_ORDER, kind="mergesort").reset_index(drop=True)


def _checked(predictions: pd.DataFrame) -> pd.DataFrame:
    """A predictions DataFrame made by anyone: columns present, types known, frames whole.

    Files go through read_intervals, which names the line; here a row is named by its index.
    """
    if not isinstance(predictions, pd.DataFrame):
        raise UserError(f"predictions must be a DataFrame, not {type(predictions).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in predictions.columns]
    if missing:
        raise UserError(
            f"predictions: missing column(s) {', '.join(missing)}; "
            f"found {', '.join(map(str, predictions.columns)) or 'none'}"
        )
    out = pd.DataFrame({c: predictions[c].astype(str) for c in KEY})
    types = predictions["type"].map(normalise_type)
    _fail(types.isna(), predictions["type"], "unknown type {!r} (expected mae or me)")
    out["type"] = types
    for column in ("onset", "offset"):
        values = pd.to_numeric(predictions[column], errors="coerce")
        bad = values.isna() | (values != values.round()) | (values < 0)
        _fail(bad, predictions[column], column + " {!r} is not a whole frame number")
        out[column] = values.astype("int64")
    _fail(out["onset"] > out["offset"], out["onset"], "onset {} is after its offset")
    return out


def _fail(bad: pd.Series, values: pd.Series, problem: str) -> None:
    """Raise for the first bad row, named by its index label."""
    rows = bad.to_numpy().nonzero()[0]
    if len(rows):
        first = rows[0]
        extra = f" (and {len(rows) - 1} more row(s))" if len(rows) > 1 else ""
        value = values.iat[first]
        message = problem.format(value.item() if hasattr(value, "item") else value)
        raise UserError(f"predictions row {bad.index[first]}: {message}{extra}")
