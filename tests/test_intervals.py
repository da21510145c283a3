"""Reading interval CSVs: accepted spellings, and one clear error per kind of bad input."""

import pytest

from mespot.errors import UserError
from mespot.intervals import normalise_type, read_intervals, read_video_keys


def write(tmp_path, text, name="intervals.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ("mae", "mae"),
        ("ME", "me"),
        ("macro", "mae"),
        ("Macro", "mae"),
        ("macro-expression", "mae"),
        ("Macro-expression", "mae"),
        ("micro-expression", "me"),
        ("Micro - 1/2", "me"),
        ("micro", "me"),
        (" micro  -  1/2 ", "me"),
        ("blink", None),
        ("", None),
    ],
)
def test_type_spellings_of_the_official_files(spelling, expected):
    assert normalise_type(spelling) == expected


def test_reads_ground_truth_keeping_subject_text_and_frame_numbers(tmp_path):
    path = write(
        tmp_path,
        "subject,video,onset,apex,offset,type\n"
        "006,006_1,566,647,743,Macro\n"
        "\n"
        "006,006_1,100.0,-1,130,Micro - 1/2\n",
    )
    gt = read_intervals(path)
    assert list(gt.columns) == ["subject", "video", "onset", "offset", "type"]
    assert gt["subject"].tolist() == ["006", "006"]
    assert gt["onset"].tolist() == [566, 100] and gt["offset"].tolist() == [743, 130]
    assert gt["type"].tolist() == ["mae", "me"]


def test_predictions_score_defaults_to_one_when_absent(tmp_path):
    path = write(tmp_path, "subject,video,onset,offset,type\ns1,v1,1,10,me\n")
    assert read_intervals(path, scored=True)["score"].tolist() == [1.0]


def test_headers_are_trimmed_and_case_insensitive(tmp_path):
    path = write(tmp_path, "Subject, Video ,ONSET,offset,Type,score\ns1,v1,1,10,me,0.25\n")
    assert read_intervals(path, scored=True)["score"].tolist() == [0.25]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("subject,video,onset,type\ns1,v1,1,me\n", r"intervals\.csv: missing column\(s\) offset"),
        ("s1,v1,1,10,me\n", r"missing column\(s\) subject, video, onset, offset, type"),
        ("", "empty file"),
        ("subject,video,onset,offset,type\ns1,v1,1,10,me\ns1,v1,a,10,me\n", "line 3: onset 'a'"),
        (
            "subject,video,onset,offset,type\ns1,v1,1,10.5,me\n",
            "line 2: offset '10.5' is not a whole",
        ),
        ("subject,video,onset,offset,type\ns1,v1,,10,me\n", "line 2: empty onset"),
        ("subject,video,onset,offset,type\ns1,v1,-3,10,me\n", "line 2: onset -3 is negative"),
        (
            "subject,video,onset,offset,type\ns1,v1,20,10,me\n",
            "line 2: onset 20 is after offset 10",
        ),
        ("subject,video,onset,offset,type\ns1,v1,1,10,blink\n", "line 2: unknown type 'blink'"),
        ("subject,video,onset,offset,type\ns1,,1,10,me\n", "line 2: empty video"),
        ("subject,video,onset,offset,offset,type\ns1,v1,1,10,12,me\n", "line 1: column 'offset'"),
        ("subject,video,ONSET,onset,offset,type\ns1,v1,1,1,2,me\n", r"more than once \(ONSET, "),
        ("subject,video,onset,offset,type\ns1,v1,1,10,me,x\n", "line 2: 6 fields where the hea"),
        ("subject,video,onset,offset,type\ns1,v1,1,10\n", "line 2: 4 fields where the header"),
        ("subject,video,onset,offset,type\ns1,v1,inf,10,me\n", "line 2: onset 'inf' is not a"),
        (
            "subject,video,onset,offset,type\ns1,v1,1,10,me\n\ns1,v1,x,1,me\ns1,v1,y,1,me\n",
            r"line 4: onset 'x' is not a frame number \(and 1 more row\(s\)\)",
        ),
    ],
)
def test_bad_input_names_file_line_and_problem(tmp_path, text, message):
    with pytest.raises(UserError, match=message):
        read_intervals(write(tmp_path, text))


@pytest.mark.parametrize("score", ["high", "nan", "inf", "-inf"])
def test_bad_score_names_the_line(tmp_path, score):
    path = write(tmp_path, f"subject,video,onset,offset,type,score\ns1,v1,1,10,me,{score}\n")
    with pytest.raises(UserError, match=f"line 2: score '{score}' is not a number"):
        read_intervals(path, scored=True)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(UserError, match="nope.csv: file not found"):
        read_intervals(tmp_path / "nope.csv")


def test_video_keys(tmp_path):
    path = write(
        tmp_path, "subject,video,n_frames,fps,frames_dir\n006,006_1,10,200,x\ns15,15_0101,,30,y\n"
    )
    assert read_video_keys(path) == {("006", "006_1"), ("s15", "15_0101")}
