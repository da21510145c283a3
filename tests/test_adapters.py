"""Dataset adapters on mock datasets in the official layouts: round trips and every quirk."""

import logging
import shutil
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from openpyxl import Workbook, load_workbook

from mespot.data.adapters import Policies, load_annotations
from mespot.data.adapters.common import read_sheets
from mespot.data.frames import list_frames
from mespot.data.synth import LAYOUTS, MockSpec, write_mock
from mespot.data.synth.plan import MockVideo
from mespot.data.synth.render import Appearance, Event
from mespot.errors import UserError

SMALL = {
    "casme2": dict(frames=240),
    "sammlv": dict(frames=600, mae_per_video=1, me_per_video=1),
    "casme3": dict(frames=240),
}


def spec(dataset, **changes):
    settings = dict(subjects=2, videos_per_subject=2, size=(96, 72), seed=7) | SMALL[dataset]
    return MockSpec(dataset, **(settings | changes))


@pytest.fixture(scope="module")
def mocks(tmp_path_factory):
    """One small mock of each dataset with frames, written once for this module."""
    root = tmp_path_factory.mktemp("mocks")
    return {d: write_mock(spec(d, grey=d == "sammlv"), root / d) for d in SMALL}


@pytest.fixture
def mock_copy(mocks, tmp_path):
    """A private copy of a mock, for tests that damage it."""

    def copy(dataset):
        return shutil.copytree(mocks[dataset], tmp_path / dataset)

    return copy


def ground_truth(root):
    return pd.read_csv(root / "ground_truth.csv", dtype={"subject": str, "video": str})


def assert_same_intervals(read, expected):
    order = ["subject", "video", "onset", "offset"]
    expected = expected.sort_values(order, kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(read.reset_index(drop=True), expected, check_dtype=False)


# --- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", list(SMALL))
def test_adapter_reads_the_generators_ground_truth(mocks, dataset):
    annotations = load_annotations(dataset, mocks[dataset])
    assert_same_intervals(annotations.intervals, ground_truth(mocks[dataset]))
    videos = annotations.videos
    assert len(videos) == 4 and videos["subject"].nunique() == 2
    assert (videos["n_frames"] == SMALL[dataset]["frames"]).all()
    assert all((mocks[dataset] / d).is_dir() for d in videos["frames_dir"])


@pytest.mark.parametrize("dataset", list(SMALL))
def test_workbook_alone_gives_the_same_intervals_and_warns_once(tmp_path, dataset, caplog):
    root = write_mock(spec(dataset, write_frames=False), tmp_path / dataset)
    with caplog.at_level(logging.WARNING):
        annotations = load_annotations(dataset, root)
    assert_same_intervals(annotations.intervals, ground_truth(root))
    assert annotations.videos["n_frames"].isna().all()
    assert len(annotations.videos) == 4
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "frames" in caplog.records[0].message and len(caplog.records) == 1


def test_written_files_round_trip_through_csv(mocks, tmp_path):
    annotations = load_annotations("sammlv", mocks["sammlv"])
    intervals_csv, videos_csv = annotations.write(tmp_path / "out")
    again = pd.read_csv(intervals_csv, dtype={"subject": str})
    assert again["subject"].tolist()[0] == "006"  # leading zeros survive
    assert list(again.columns) == ["subject", "video", "onset", "apex", "offset", "type"]
    videos = pd.read_csv(videos_csv, dtype={"subject": str})
    assert list(videos.columns) == ["subject", "video", "n_frames", "fps", "frames_dir"]
    assert (videos["fps"] == 200).all()


# --- CAS(ME)² ------------------------------------------------------------------------------------


def test_casme2_identifiers_and_offset_zero_rows(mocks):
    root = mocks["casme2"]
    annotations = load_annotations("casme2", root)
    assert set(annotations.videos["video"]) == {"15_0101", "15_0102", "16_0101", "16_0102"}
    assert set(annotations.intervals["subject"]) == {"s15", "s16"}
    sheet = load_workbook(root / "CAS(ME)^2code_final.xlsx")["CASFEcode_final"]
    zero_rows = sum(1 for row in sheet.iter_rows(values_only=True) if row[4] == 0)
    assert zero_rows >= 1
    assert annotations.applied["offset 0, not annotated (offset_zero=apex)"] == zero_rows


@pytest.mark.parametrize(
    ("policy", "offset_of"), [("apex", lambda a, o: a), ("apex+20", lambda a, o: a + 20),
                              ("2*apex-onset", lambda a, o: 2 * a - o)]
)  # fmt: skip
def test_casme2_offset_zero_policies(mocks, policy, offset_of):
    root = mocks["casme2"]
    sheet = load_workbook(root / "CAS(ME)^2code_final.xlsx")["CASFEcode_final"]
    zero = [(r[2], r[3]) for r in sheet.iter_rows(values_only=True) if r[4] == 0]
    read = load_annotations("casme2", root, policies=Policies(offset_zero=policy)).intervals
    for onset, apex in zero:
        row = read[(read["onset"] == onset) & (read["apex"] == apex)]
        assert row["offset"].tolist() == [offset_of(apex, onset)]


def test_casme2_offset_zero_drop(mocks):
    root = mocks["casme2"]
    dropped = load_annotations("casme2", root, policies=Policies(offset_zero="drop"))
    count = dropped.applied["offset 0, not annotated (offset_zero=drop)"]
    assert count >= 1 and len(dropped.intervals) == len(ground_truth(root)) - count


def test_casme2_video_codes_as_text_or_number(mock_copy):
    root = mock_copy("casme2")
    path = root / "CAS(ME)^2code_final.xlsx"
    book = load_workbook(path)
    rule2 = book["naming rule2"]
    assert isinstance(rule2["A1"].value, int)  # the mock stores 101 for 0101
    for (cell,) in rule2.iter_rows(max_col=1):
        cell.value = f"{cell.value:04d}"
    book.save(path)
    assert_same_intervals(load_annotations("casme2", root).intervals, ground_truth(root))


def test_casme2_renamed_workbook_and_updated_csv(mock_copy):
    root = mock_copy("casme2")
    original = root / "CAS(ME)^2code_final.xlsx"
    rows = pd.read_excel(original, sheet_name="CASFEcode_final", header=None)
    original.rename(root / "code_final.xlsx")
    assert_same_intervals(load_annotations("casme2", root).intervals, ground_truth(root))

    (root / "code_final.xlsx").unlink()
    rows[9] = rows[4] - rows[2]  # the tenth column of the (Updated) CSV
    rows.to_csv(root / "CAS(ME)^2code_final(Updated).csv", header=False, index=False)
    annotations = load_annotations("casme2", root)
    assert annotations.source.name == "CAS(ME)^2code_final(Updated).csv"
    assert_same_intervals(annotations.intervals, ground_truth(root))


def test_casme2_bad_rows_are_skipped_with_a_warning_naming_the_row(mock_copy, caplog):
    root = mock_copy("casme2")
    path = root / "CAS(ME)^2code_final.xlsx"
    book = load_workbook(path)
    sheet = book["CASFEcode_final"]
    sheet["C2"], sheet["E2"] = 500, 400  # onset after offset on row 2
    sheet["B3"] = "sadness9_1"  # a video that naming rule2 does not know
    book.save(path)
    with caplog.at_level(logging.WARNING):
        annotations = load_annotations("casme2", root)
    assert "sheet CASFEcode_final row 2: onset 500 is after offset 400; row skipped" in caplog.text
    assert "sheet CASFEcode_final row 3: unknown video name 'sadness9_1'" in caplog.text
    assert annotations.applied["malformed rows skipped (malformed=skip)"] == 2
    assert len(annotations.intervals) == len(ground_truth(root)) - 2

    with pytest.raises(UserError, match=r"code_final\.xlsx sheet CASFEcode_final row 2: onset 500"):
        load_annotations("casme2", root, policies=Policies(malformed="error"))


def test_casme2_unknown_video_folder_is_named(mock_copy, caplog):
    root = mock_copy("casme2")
    (root / "rawpic/s15/15_9x_holiday").mkdir()
    (root / "rawpic/notes").mkdir()
    with caplog.at_level(logging.WARNING):
        annotations = load_annotations("casme2", root)
    assert "rawpic/s15/15_9x_holiday" in caplog.text and "rawpic/notes" in caplog.text
    assert len(annotations.videos) == 4


def test_casme2_face_cropped_copy_uses_img_underscore_names(mock_copy):
    root = mock_copy("casme2")
    cropped = root / "longVideoFaceCropped"
    shutil.copytree(root / "rawpic", cropped)
    for frame in cropped.rglob("img*.jpg"):
        frame.rename(frame.with_name(f"img_{int(frame.stem[3:])}.jpg"))
    annotations = load_annotations("casme2", root, frames_dir="longVideoFaceCropped")
    assert (annotations.videos["n_frames"] == 240).all()
    assert annotations.videos["frames_dir"].str.startswith("longVideoFaceCropped/").all()


# --- SAMM-LV -------------------------------------------------------------------------------------


def test_sammlv_quirks_fractional_frames_apex_and_header_row(mocks):
    root = mocks["sammlv"]
    path = root / "SAMM_LongVideos_V1_Release.xlsx"
    sheet = load_workbook(path)["FACS_Movement_Only"]
    assert sheet["A10"].value == "Subject" and sheet["A11"].value == "006"
    written = [r[3:6] for r in sheet.iter_rows(min_row=11, values_only=True)]
    fractional = sum(1 for r in written for v in r if v != -1 and v != int(v))
    annotations = load_annotations("sammlv", root)
    assert annotations.applied["fractional frame numbers (round_half_up)"] == fractional > 0
    apex_missing = sum(1 for r in written if r[1] == -1)
    assert (annotations.intervals["apex"] == -1).sum() == apex_missing > 0
    for (onset, _, offset), row in zip(written, annotations.intervals.itertuples(), strict=True):
        assert row.onset == int(onset + 0.5 + 1e-9) and row.offset == int(offset + 0.5 + 1e-9)


def test_sammlv_midpoint_and_floor_policies(mocks):
    read = load_annotations(
        "sammlv", mocks["sammlv"], policies=Policies(missing_apex="midpoint", fractional="floor")
    ).intervals
    assert (read["apex"] >= read["onset"]).all() and (read["apex"] <= read["offset"]).all()
    default = ground_truth(mocks["sammlv"])
    assert (read["onset"].to_numpy() <= default["onset"].to_numpy()).all()


def test_sammlv_subject_stored_as_number_and_newest_release_preferred(mock_copy):
    root = mock_copy("sammlv")
    book = load_workbook(root / "SAMM_LongVideos_V1_Release.xlsx")
    sheet = book["FACS_Movement_Only"]
    for row in sheet.iter_rows(min_row=11, max_col=1):
        row[0].value = int(row[0].value)  # 6 instead of '006'
    book.save(root / "SAMM_LongVideos_V3_Release.xlsx")
    annotations = load_annotations("sammlv", root)
    assert annotations.source.name == "SAMM_LongVideos_V3_Release.xlsx"
    assert_same_intervals(annotations.intervals, ground_truth(root))


def test_sammlv_frame_numbers_beyond_four_digits_sort_numerically(tmp_path):
    folder = tmp_path / "006_1"
    folder.mkdir()
    for n in (9999, 10000, 2, 10, 1):
        (folder / f"006_1_{n:04d}.jpg").write_bytes(b"")
    (folder / "Thumbs.db").write_bytes(b"")
    frames = list_frames(folder, r"006_1_(\d+)\.jpg")
    assert frames.numbers == (1, 2, 10, 9999, 10000)
    assert frames.paths[-1].name == "006_1_10000.jpg" and frames.span == 10000


# --- CAS(ME)³ ------------------------------------------------------------------------------------


def test_casme3_letters_any_case_zero_based_frames_with_gaps(mocks):
    root = mocks["casme3"]
    sheet = read_sheets(root / "CAS(ME)3_part_A_v2.xls")["AU+Emotion"]
    assert sheet[1].str.isupper().any()  # the capital-letter quirk is in the file
    assert all(isinstance(v, str) for v in sheet.to_numpy().ravel())  # every cell text
    annotations = load_annotations("casme3", root)
    assert set(annotations.videos["video"]) == {"spNO.1_a", "spNO.1_b", "spNO.2_a", "spNO.2_b"}
    frames = list_frames(root / annotations.videos["frames_dir"][0], r"(\d+)\.jpg")
    assert frames.first == 0 and frames.gaps > 0 and frames.span == 240
    assert any("missing inside" in note for note in annotations.notes)


# --- bad input -----------------------------------------------------------------------------------


def test_missing_workbook_names_what_was_looked_for(tmp_path):
    with pytest.raises(UserError, match=r"no CAS\(ME\)² annotation file in .*code_final"):
        load_annotations("casme2", tmp_path)
    with pytest.raises(UserError, match="data.root=.*nowhere: folder not found"):
        load_annotations("sammlv", tmp_path / "nowhere")
    with pytest.raises(UserError, match="data.annotations=.*x.xlsx: file not found"):
        load_annotations("casme3", tmp_path, annotations=tmp_path / "x.xlsx")


def test_wrong_sheet_lists_the_sheets_found(mock_copy):
    root = mock_copy("sammlv")
    path = root / "SAMM_LongVideos_V1_Release.xlsx"
    book = load_workbook(path)
    book["FACS_Movement_Only"].title = "Sheet1"
    book.save(path)
    with pytest.raises(UserError, match="no sheet 'FACS_Movement_Only' \\(sheets: 'Sheet1'\\)"):
        load_annotations("sammlv", root)


def test_corrupt_workbook_is_named(mock_copy):
    root = mock_copy("casme3")
    (root / "CAS(ME)3_part_A_v2.xls").write_bytes(b"not a workbook")
    with pytest.raises(UserError, match=r"CAS\(ME\)3_part_A_v2\.xls: cannot read the workbook"):
        load_annotations("casme3", root)


def test_unknown_policy_names_the_setting():
    with pytest.raises(UserError, match="data.policies.offset_zero='later'"):
        Policies(offset_zero="later")


# --- full-size annotation files --------------------------------------------------------------


def full_size_videos(layout, videos_per_subject, n_mae, n_me):
    """Videos holding the real datasets' interval counts, spread over their subjects."""
    videos = []
    for s, subject in enumerate(layout.subject_ids(len(videos_per_subject))):
        for v, video in enumerate(layout.video_ids(subject, videos_per_subject[s])):
            videos.append(MockVideo(subject, video, v, 0, Appearance(), (), seed=0))
    kinds = ["mae"] * n_mae + ["me"] * n_me
    events = {i: [] for i in range(len(videos))}
    for k, kind in enumerate(kinds):
        onset = 10 + 100 * len(events[k % len(videos)])
        length = 40 if kind == "mae" else 12
        events[k % len(videos)].append(
            Event(kind, onset, onset + 5, onset + length, ("brows",), 1.0)
        )
    return [replace(video, events=tuple(events[i])) for i, video in enumerate(videos)]


@pytest.mark.parametrize(
    ("dataset", "videos_per_subject", "mae", "me"),
    [("casme2", [5] * 10 + [4] * 12, 300, 57), ("sammlv", [5] * 27 + [4] * 3, 343, 159)],
)
def test_full_size_workbook_alone_reads_every_row(tmp_path, dataset, videos_per_subject, mae, me):
    """DATASETS.md: CAS(ME)² 357 intervals (300/57), 22 subjects; SAMM-LV 502 (343/159), 30."""
    layout = LAYOUTS[dataset]
    videos = full_size_videos(layout, videos_per_subject, mae, me)
    truth = layout.write_annotations(tmp_path, videos, np.random.default_rng(0))
    annotations = load_annotations(dataset, tmp_path)
    intervals = annotations.intervals
    assert len(intervals) == mae + me == len(truth)
    assert ((intervals["type"] == "mae").sum(), (intervals["type"] == "me").sum()) == (mae, me)
    assert intervals["subject"].nunique() == len(videos_per_subject)
    assert len(annotations.videos) == sum(videos_per_subject)
    assert annotations.applied["malformed rows skipped (malformed=skip)"] == 0
    expected = pd.DataFrame(truth, columns=intervals.columns)
    assert_same_intervals(intervals, expected)


def test_the_first_rows_of_the_real_files(tmp_path):
    """The rows DATASETS.md quotes, written the way the real workbooks store them."""
    casme2 = tmp_path / "casme2"
    casme2.mkdir()
    book = Workbook()
    main = book.active
    main.title = "CASFEcode_final"
    main.append([1, "anger1_1", 557, 572, 608, "4+10+14", "negative", "macro-expression", "anger"])
    main.append([1, "disgust2_3", 699, 703, 707, 43, "others", "micro-expression", "disgust"])
    rule1 = book.create_sheet("naming rule1")
    rule1.append(["15", "s15", 1])
    rule1.append(["15", "s15", 1])
    rule2 = book.create_sheet("naming rule2")
    for code, name in (("0101", "disgust1"), ("0102", "disgust2"), ("0401", "anger1")):
        rule2.append([code, name])
    book.save(casme2 / "CAS(ME)^2code_final.xlsx")
    rows = load_annotations("casme2", casme2).intervals
    assert rows.values.tolist() == [
        ["s15", "15_0102", 699, 703, 707, "me"],
        ["s15", "15_0401", 557, 572, 608, "mae"],
    ]

    samm = tmp_path / "samm"
    samm.mkdir()
    book = Workbook()
    sheet = book.active
    sheet.title = "FACS_Movement_Only"
    for _ in range(9):
        sheet.append(["note"])
    sheet.append(["Subject", "Filename", "Inducement Code", "Onset", "Apex", "Offset",
                  "Duration", "Type", "Action Units", "Notes"])  # fmt: skip
    sheet.append(["006", "006_1_1", 1, 566.4000000000001, 647.6, 743.2, 177.8, "Macro",
                  "4(B/C)+7B", None])  # fmt: skip
    sheet.append(["006", "006_1_2", 1, 1034.0, -1, 1061.0, 28, "Micro - 1/2", 4, "While blinking"])
    book.save(samm / "SAMM_LongVideos_V2_Release.xlsx")
    rows = load_annotations("sammlv", samm).intervals
    assert rows.values.tolist() == [
        ["006", "006_1", 566, 648, 743, "mae"],
        ["006", "006_1", 1034, -1, 1061, "me"],
    ]
