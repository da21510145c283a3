"""Windows over the cache and the LOSO DataModule: splits, shapes, targets, balancing."""

import numpy as np
import pytest
import torch

from mespot.data.adapters import load_annotations
from mespot.data.augment import WindowAugment
from mespot.data.datamodule import SpottingDataModule, split_subjects
from mespot.data.dataset import WindowDataset, collate
from mespot.data.inputs import InputSpec
from mespot.data.preprocess import Settings, preprocess
from mespot.data.rest import RestFace
from mespot.data.synth import MockSpec, write_mock
from mespot.data.videos import read_cache
from mespot.data.windows import clip_to_window, to_cached_indices, window_starts
from mespot.errors import UserError


def windows(videos, window, stride, seed=None, **inputs) -> WindowDataset:
    """The windows of `videos` fed as `inputs` (InputSpec's fields); augmented when given a
    `seed`."""
    augment = None if seed is None else WindowAugment(stride, seed)
    return WindowDataset(videos, window, stride, InputSpec(**inputs), augment)


def assembled(dataset: WindowDataset, item, augmented: bool = True) -> torch.Tensor:
    """A window's (L, C, H, W) inputs as the data module builds them from its parts (`item`,
    or the window at that index); without the mirror and light drawn for it when not
    `augmented`."""
    item = dataset[item] if isinstance(item, int) else item
    if not augmented:
        item = {**item, "mirror": False, "gain": 1.0}
    return dataset.inputs.assemble(collate([item]))[0]


def test_window_starts_cover_every_frame():
    assert window_starts(300, 128, 64) == [0, 64, 128, 172]
    assert window_starts(256, 128, 64) == [0, 64, 128]
    assert window_starts(100, 128, 64) == [0]


def test_source_frames_to_cached_indices():
    identity = list(range(1, 101))
    assert to_cached_indices([[10, 20]], identity).tolist() == [[9, 19]]
    resampled = [1, 8, 14, 21, 28]
    assert to_cached_indices([[8, 20]], resampled).tolist() == [[1, 2]]
    assert to_cached_indices([[2, 16]], resampled).tolist() == [[1, 2]]
    assert to_cached_indices([[9, 13]], resampled).tolist() == [[1, 1]]  # between kept frames
    assert to_cached_indices([[25, 99]], resampled).tolist() == [[4, 4]]


def test_intervals_cut_by_a_window_edge():
    segments, labels = np.array([[10, 30], [10, 40], [100, 110], [30, 40]]), np.array([0, 1, 0, 1])
    inside, kept = clip_to_window(segments, labels, start=20, window=64)
    # [10,30]: 11 of 21 frames inside, kept; [10,40]: 21 of 31, kept; [100,110] outside
    assert inside.tolist() == [[0, 10], [0, 20], [10, 20]] and kept.tolist() == [0, 1, 1]
    inside, _ = clip_to_window(np.array([[10, 40]]), np.array([0]), start=35, window=64)
    assert len(inside) == 0  # 6 of 31 frames visible: left to the previous window


@pytest.fixture(scope="module")
def cache_folder(tmp_path_factory):
    root = write_mock(
        MockSpec("casme2", subjects=4, videos_per_subject=1, frames=200, size=(128, 96), seed=2),
        tmp_path_factory.mktemp("mock"),
    )
    settings = Settings(size=32, flow_method="dis", detector="none")
    report = preprocess(load_annotations("casme2", root), root, tmp_path_factory.mktemp("cache"),
                        settings, workers=2, progress=False)  # fmt: skip
    return report.folder


def test_fold_never_trains_or_validates_on_the_test_subject(cache_folder):
    subjects = sorted({v.subject for v in read_cache(cache_folder)})
    assert subjects == ["s15", "s16", "s19", "s20"]
    for test in subjects:
        train, val = split_subjects(subjects, test, 1, seed=0)
        assert test not in train + val and len(val) == 1 and len(train) == 2
    assert split_subjects(subjects, "s15", 1, seed=0) == split_subjects(subjects, "s15", 1, seed=0)
    with pytest.raises(UserError, match="test_subject='s99' is not cached; subjects: s15"):
        split_subjects(subjects, "s99", 1, seed=0)
    with pytest.raises(UserError, match="val_subjects=3"):
        split_subjects(subjects, "s15", 3, seed=0)


@pytest.mark.parametrize(("use_flow", "channels"), [(True, 3), (False, 1)])
def test_batches_hold_frames_and_flow_as_channels(cache_folder, use_flow, channels):
    dm = SpottingDataModule(str(cache_folder), "s16", val_subjects=1, window=64, stride=32,
                            use_flow=use_flow, batch_size=3)  # fmt: skip
    dm.setup()
    assert {v.subject for v in dm.videos["test"]} == {"s16"}
    batch = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert batch["x"].shape == (3, 64, channels, 32, 32) and batch["x"].dtype == torch.float32
    assert len(batch["segments"]) == 3 and all(s.shape[-1] == 2 for s in batch["segments"])
    assert dm.in_channels == channels


def test_each_loader_worker_draws_its_own_augmentation(cache_folder):
    dm = SpottingDataModule(str(cache_folder), "s16", val_subjects=1, window=32, stride=16,
                            batch_size=4, num_workers=2, positive_fraction=None)  # fmt: skip
    dm.setup()
    batches = iter(dm.train_dataloader())
    first, second = next(batches), next(batches)  # from worker 0, then worker 1
    assert not torch.equal(first["gain"], second["gain"])


def test_window_targets_match_the_ground_truth(cache_folder):
    videos = read_cache(cache_folder)
    dataset = WindowDataset(videos, window=64, stride=32)
    for index in range(len(dataset)):
        item = dataset[index]
        info = videos[item["video"]]
        for (on, off), label in zip(
            item["segments"].tolist(), item["labels"].tolist(), strict=True
        ):
            start = item["start"]
            match = (
                (info.labels == label)
                & (info.segments[:, 0] <= on + start + 1e-6)
                & (info.segments[:, 1] >= off + start - 1e-6)
            )
            assert match.any()
    # ground truth of a whole video, in the dataset's own frame numbers → cached indices
    info = videos[0]
    assert (info.segments[:, 0] == info.ground_truth["onset"].to_numpy() - 1).all()


def test_balancing_sets_the_share_of_windows_with_expressions(cache_folder):
    for fraction in (0.25, 0.5):
        dm = SpottingDataModule(str(cache_folder), "s16", val_subjects=1, window=32, stride=16,
                                positive_fraction=fraction, batch_size=4)  # fmt: skip
        dm.setup()
        positive = dm.datasets["train"].has_expression()
        assert 0.6 < positive.mean() < 0.9  # this mock is dense with expressions
        sampler = dm.train_dataloader().sampler
        drawn = [i for _ in range(40) for i in sampler]
        assert abs(positive[drawn].mean() - fraction) < 0.08


def test_augmentation_mirrors_the_flow_too(cache_folder):
    videos = read_cache(cache_folder)
    whole = videos[0].n_frames  # a window as long as the video cannot shift
    plain = assembled(WindowDataset(videos, window=whole, stride=whole), 0)
    augmented = windows(videos, window=whole, stride=whole, seed=1)
    flipped = [assembled(augmented, 0) for _ in range(8)]
    mirrored = [x for x in flipped if not torch.allclose(x[:, 1:], plain[:, 1:])]
    assert mirrored, "some draws mirror the window"
    x = mirrored[0]
    assert torch.allclose(x[:, 1], -plain[:, 1].flip(-1)) and torch.allclose(
        x[:, 2], plain[:, 2].flip(-1)
    )


@pytest.mark.parametrize(
    ("n_frames", "window", "stride"), [(300, 128, 64), (97, 32, 16), (20, 32, 16)]
)
def test_evaluation_windows_cover_every_frame(n_frames, window, stride):
    covered = np.zeros(n_frames, dtype=int)
    for start in window_starts(n_frames, window, stride):
        covered[start : start + window] += 1
    assert (covered >= 1).all()  # every frame is seen; overlaps are merged by NMS afterwards
    assert covered.max() <= window // stride + 1  # the last window sits flush with the end


def test_training_windows_shift_by_up_to_half_a_stride(cache_folder):
    videos = read_cache(cache_folder)
    dataset = windows(videos, window=64, stride=32, seed=3)
    for index in (0, 3, len(dataset) - 1):  # a video's first, an inner and the very last window
        v, grid = dataset.items[index]
        starts = set()
        for _ in range(30):
            item = dataset[index]
            start = item["start"]
            assert abs(start - grid) <= 16 and 0 <= start <= videos[v].n_frames - 64
            expected = clip_to_window(videos[v].segments, videos[v].labels, start, 64)
            assert item["segments"].tolist() == expected[0].tolist()
            assert item["labels"].tolist() == expected[1].tolist()
            starts.add(start)
        assert len(starts) > 5  # the draws differ
    fixed = WindowDataset(videos, window=64, stride=32)
    assert [fixed[i]["start"] for i in range(len(fixed))] == [s for _, s in fixed.items]


def test_frame_differences_follow_the_frame(cache_folder):
    """With frame_diffs=[2, 8] every frame carries frame t − frame t−2 and frame t − frame t−8
    (frame 0 standing in before the video's start) between the frame and its flow."""
    videos = read_cache(cache_folder)
    frames = torch.from_numpy(np.load(videos[0].folder / "frames.npy") / 255.0).float()
    dataset = windows(videos, window=64, stride=32, frame_diffs=[2, 8])
    plain = WindowDataset(videos, window=64, stride=32)
    for index in (0, 1):  # the first window reaches back before frame 0, the second does not
        x, start = assembled(dataset, index), dataset[index]["start"]
        assert x.shape == (64, 5, 32, 32)
        t = torch.arange(start, start + 64)
        torch.testing.assert_close(x[:, 1], frames[t] - frames[(t - 2).clamp(min=0)])
        torch.testing.assert_close(x[:, 2], frames[t] - frames[(t - 8).clamp(min=0)])
        torch.testing.assert_close(x[:, [0, 3, 4]], assembled(plain, index))  # frame and flow
    with pytest.raises(UserError, match="frame_diffs=\\[0\\]"):
        windows(videos, window=64, stride=32, frame_diffs=[0])


def test_the_distance_from_the_face_at_rest_comes_between_the_differences_and_the_flow(
    cache_folder,
):
    videos = read_cache(cache_folder)
    frames = np.load(videos[0].folder / "frames.npy")
    dataset = windows(videos, window=64, stride=32, frame_diffs=[2], rest_span=100)
    plain = windows(videos, window=64, stride=32, frame_diffs=[2])
    rest = RestFace(frames, span=100)
    for index in (0, 2):
        x, start = assembled(dataset, index), dataset[index]["start"]
        t = np.arange(start, start + 64)
        assert x.shape == (64, 5, 32, 32)
        torch.testing.assert_close(x[:, 2], torch.from_numpy(rest.distance(frames[t], t)))
        torch.testing.assert_close(x[:, [0, 1, 3, 4]], assembled(plain, index))
    spec = InputSpec.of({"frame_diffs": [2], "rest_span": 100, "use_flow": True}, colours=1)
    assert spec == dataset.inputs and spec.channels == 5
    assert spec.change_channels() == [[1], [2]] and spec.still_channels() == [0, 2]
    with pytest.raises(UserError, match="rest_span=-1"):
        windows(videos, window=64, stride=32, rest_span=-1)


def test_a_video_shorter_than_the_window_ends_on_its_last_face_held_still(cache_folder):
    """Past the end, the frame channels repeat the last frame and the differences and flow are
    0: a face at rest, not a black one (which the distance to the median frame would take
    for an expression)."""
    videos = read_cache(cache_folder)
    n = videos[0].n_frames
    dataset = windows(videos[:1], window=n + 40, stride=n + 40, frame_diffs=[2],
                            rest_span=50)  # fmt: skip
    item = dataset[0]
    x = assembled(dataset, item)
    last = x[n - 1]
    assert item["valid"] == n and x.shape[0] == n + 40
    for still in (0, 2):  # the frame, and its distance from the face at rest
        assert torch.equal(x[n:, still], last[still].expand(40, -1, -1))
    assert not x[n:, [1, 3, 4]].any() and x[n - 1, [1, 3, 4]].any()


def test_augmentation_lights_a_difference_like_its_frames(cache_folder):
    """Channels: frame, difference, distance from the face at rest, flow (2)."""
    videos = read_cache(cache_folder)
    whole = videos[0].n_frames
    options = dict(window=whole, stride=whole, frame_diffs=[3], rest_span=50)
    plain = assembled(windows(videos, **options), 0)
    augmented = windows(videos, **options, seed=4)
    for _ in range(6):
        x = assembled(augmented, 0)
        if not torch.allclose(x[:, 4], plain[:, 4]):  # mirrored: flip back
            x = x.flip(-1)
            x[:, 3] *= -1
        gain = (x[:, 1].abs().sum() / plain[:, 1].abs().sum()).item()
        assert 0.9 <= gain <= 1.1 and gain != pytest.approx(1.0, abs=1e-4)
        torch.testing.assert_close(x[:, 1:3], plain[:, 1:3] * gain, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(x[:, 3:], plain[:, 3:])  # flow: no lighting
