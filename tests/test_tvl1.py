"""TV-L1 in torch (flow.method=tvl1_torch): as accurate as OpenCV's DualTVL1 on the preprocessing
benchmark's known motion and close to it, the same flow for a pair alone or in a stack, any
frame shape, clear errors for what it lacks, and the cache it fills through real preprocessing."""

from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch

from mespot.bench.preprocess import endpoint_error, make_cases
from mespot.cli.common import compose_train
from mespot.cli.preprocess import preprocessing_settings
from mespot.data import cache, preprocess
from mespot.data import flow as flow_module
from mespot.data.adapters import load_annotations
from mespot.data.flow import make_flow
from mespot.data.frames import FrameList
from mespot.data.preprocess import Job, Settings, process_video
from mespot.data.synth import MockSpec, write_mock
from mespot.data.synth.render import Nuisance, render_video, sample_appearance
from mespot.data.tvl1 import tvl1_flow
from mespot.errors import UserError

# conf/preprocessing/default.yaml's flow.tvl1 (flow.tvl1_torch is the same block)
CONF = {"nscales": 4, "warps": 2, "outer_iterations": 3, "inner_iterations": 10, "epsilon": 0.03}


def stack(cases, side):
    return np.stack([getattr(c, side) for c in cases])


@pytest.fixture(scope="module")
def cases():
    return make_cases(3, seed=0)


def face_epe(flows, cases) -> float:
    """Mean end-point error over the face, each case weighing the same (the benchmark's)."""
    return float(
        np.mean(
            [endpoint_error(f, c.truth)[c.face].mean() for f, c in zip(flows, cases, strict=True)]
        )
    )


def test_as_accurate_as_opencv_on_known_motion_and_close_to_it(cases):
    opencv = make_flow("tvl1", CONF)
    torch_tvl1 = make_flow("tvl1_torch", CONF, device="cpu")
    ours = torch_tvl1.pairs(stack(cases, "prev"), stack(cases, "next"))
    assert ours.shape == (3, 128, 128, 2) and ours.dtype == np.float32
    theirs = np.stack([opencv(c.prev, c.next) for c in cases])
    assert face_epe(ours, cases) <= 1.2 * face_epe(theirs, cases)
    motion = np.mean([np.linalg.norm(c.truth, axis=-1)[c.face].mean() for c in cases])
    assert face_epe(ours, cases) < 0.5 * motion  # it measures the motion, not nothing
    assert np.abs(ours - theirs).mean() < 0.03  # px, every pixel of every pair
    assert np.abs(ours - theirs)[:, 16:-16, 16:-16].mean() < 0.02


def test_each_pair_of_a_stack_gets_the_flow_it_gets_alone(cases):
    """A pair that converges at once (identical frames) beside moving pairs: each stops on its
    own, so the stack's flow is each pair's own."""
    flow = make_flow("tvl1_torch", CONF, device="cpu")
    prevs = np.stack([cases[0].prev, *stack(cases, "prev")])
    nexts = np.stack([cases[0].prev, *stack(cases, "next")])
    alone = np.stack([flow(a, b) for a, b in zip(prevs, nexts, strict=True)])
    together = flow.pairs(prevs, nexts)
    assert together.shape == alone.shape == (4, 128, 128, 2)
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-5)
    np.testing.assert_allclose(flow.pairs(prevs[2:], nexts[2:]), alone[2:], rtol=0, atol=1e-5)


def test_identical_frames_give_zero_flow_as_opencv_s_do(cases):
    frame = cases[0].prev
    assert not np.any(make_flow("tvl1", CONF)(frame, frame))
    assert not np.any(make_flow("tvl1_torch", CONF, device="cpu")(frame, frame))


def shifted_pair(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """A still grey face and the same face moved by (+2, -1) px (as in test_preprocess.py)."""
    app = sample_appearance(np.random.default_rng(5))
    still = Nuisance(head_drift=0, head_rotation=0, illumination=0, noise=0)
    scale = max(1, -(-32 // min(width, height)))  # render_video draws at least 32 px a side
    frame = next(render_video(app, [], 1, size=(width * scale, height * scale), grey=True,
                              nuisance=still))  # fmt: skip
    if scale > 1:
        frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
    moved = cv2.warpAffine(frame, np.float32([[1, 0, 2], [0, 1, -1]]), (width, height),
                           borderMode=cv2.BORDER_REFLECT)  # fmt: skip
    return frame, moved


@pytest.mark.parametrize(
    ("width", "height"),
    [(128, 96), (96, 128), (40, 24)],  # landscape, portrait, a pyramid cut short at 16 px
)
def test_any_frame_shape_with_opencv_s_defaults_gives_the_known_shift(width, height):
    frame, moved = shifted_pair(width, height)
    flow = make_flow("tvl1_torch")(frame, moved)  # OpenCV's defaults, device auto
    assert flow.shape == (height, width, 2) and flow.dtype == np.float32
    m = min(16, height // 4)
    dx, dy = np.median(flow[m:-m, m:-m].reshape(-1, 2), axis=0)
    assert dx == pytest.approx(2, abs=0.2) and dy == pytest.approx(-1, abs=0.2)
    assert np.abs(flow - make_flow("tvl1")(frame, moved)).mean() < 0.05


@pytest.mark.parametrize(
    ("method", "params", "device", "message"),
    [
        ("tvl1_torch", {"iterations": 3}, "auto", "flow.tvl1_torch: unknown setting.*iterations"),
        ("tvl1_torch", {"gamma": 0.1}, "auto", r"flow.tvl1_torch.gamma"),
        ("tvl1_torch", {"median_filtering": 4}, "auto", "flow.tvl1_torch.median_filtering=4"),
        ("tvl1_torch", {"scale_step": 1.0}, "cpu", "scale_step"),
        ("tvl1_torch", {}, "gpu", "flow.device='gpu'"),
        ("tvl1", {}, "cuda", r"flow.device=cuda needs flow.method=tvl1_torch \(not tvl1\)"),
        ("dis", {}, "cuda", r"flow.device=cuda needs flow.method=tvl1_torch \(not dis\)"),
    ],
)
def test_bad_settings_name_themselves(method, params, device, message):
    with pytest.raises(UserError, match=message):
        make_flow(method, params, device)
    with pytest.raises(UserError, match=message):  # preprocessing's settings fail as early
        Settings(flow_method=method, flow_params=params, flow_device=device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="torch sees a CUDA GPU here")
def test_cuda_without_a_gpu_is_a_clear_error():
    message = "flow.device=cuda, but torch sees no CUDA GPU"
    with pytest.raises(UserError, match=message):
        make_flow("tvl1_torch", CONF, "cuda")
    with pytest.raises(UserError, match=message):
        Settings(flow_method="tvl1_torch", flow_device="cuda")


def test_the_device_is_not_part_of_the_cache_key_but_the_method_is(tmp_path):
    def folder(settings):
        return cache.cache_folder(tmp_path, "casme2", settings.key("casme2", tmp_path / "data"))

    torch_tvl1 = Settings(flow_method="tvl1_torch", flow_params=CONF)
    on_cpu = replace(torch_tvl1, flow_device="cpu")
    assert torch_tvl1.key("casme2", tmp_path) == on_cpu.key("casme2", tmp_path)
    assert "flow_device" not in on_cpu.key("casme2", tmp_path)
    assert folder(on_cpu) == folder(torch_tvl1)
    assert folder(replace(torch_tvl1, flow_method="tvl1")) != folder(torch_tvl1)


def test_the_config_gives_tvl1_torch_the_tvl1_settings():
    base = ["data.root=x", "data.test_subject=s1", "preprocessing.flow.method=tvl1_torch"]
    cfg = compose_train(base)
    settings = preprocessing_settings(cfg.preprocessing)
    assert settings.flow_method == "tvl1_torch" and settings.flow_device == "auto"
    assert settings.flow_params == dict(cfg.preprocessing.flow.tvl1) == CONF
    on_cpu = compose_train([*base, "preprocessing.flow.device=cpu"])
    assert preprocessing_settings(on_cpu.preprocessing).flow_device == "cpu"


# --- through preprocessing ------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A mock CAS(ME)² of one 60-frame video with one ME."""
    spec = MockSpec("casme2", subjects=1, videos_per_subject=1, frames=60, size=(96, 72),
                    mae_per_video=0, me_per_video=1, seed=3)  # fmt: skip
    return write_mock(spec, tmp_path_factory.mktemp("clip"))


def cached(root, cache_dir, settings):
    report = preprocess.preprocess(load_annotations("casme2", root), root, cache_dir, settings,
                                   workers=1, progress=False)  # fmt: skip
    assert [r.status for r in report.results] == ["done"]
    return cache.load_video(report.folder / "s15" / "15_0101")


def test_a_tvl1_torch_cache_holds_opencv_s_flow(clip, tmp_path):
    opencv = Settings(size=48, detector="none", flow_method="tvl1", flow_params=CONF)
    ours = cached(clip, tmp_path, replace(opencv, flow_method="tvl1_torch", flow_device="cpu"))
    theirs = cached(clip, tmp_path, opencv)
    np.testing.assert_array_equal(ours.frames, theirs.frames)
    a, b = ours.flow.astype(np.float32), theirs.flow.astype(np.float32)
    assert a.shape == b.shape == (60, 48, 48, 2)
    # the mock moves a few hundredths of a pixel per frame: at that scale TV-L1's pixels are
    # mostly noise, so the caches agree in aggregate and in the head's motion
    assert np.abs(a).mean() == pytest.approx(np.abs(b).mean(), rel=0.1)
    assert np.abs(a - b).mean() < 0.05
    head_a, head_b = (np.median(f[1:, 12:-12, 12:-12], axis=(1, 2)) for f in (a, b))
    assert np.corrcoef(head_a.ravel(), head_b.ravel())[0, 1] > 0.9


def test_flow_computed_in_batches_is_the_flow_pair_by_pair(clip, tmp_path, monkeypatch):
    """20 frames, 2 frames apart: a batch of 7 gives chunks of 7, 7 and 6 pairs."""
    frames = load_annotations("casme2", clip).frames[("s15", "15_0101")]
    first = FrameList(frames.numbers[:20], frames.paths[:20])
    settings = Settings(size=32, detector="none", flow_method="tvl1_torch", flow_params=CONF,
                        flow_step=2, flow_device="cpu")  # fmt: skip

    def flow_with_batch(size):
        monkeypatch.setattr(flow_module, "TORCH_BATCH", size)
        out = tmp_path / f"batch{size}"
        assert process_video(Job("s15", "15_0101", first, 30.0, out), settings).status == "done"
        return cache.load_video(out)

    batched, one_by_one = flow_with_batch(7), flow_with_batch(1)
    np.testing.assert_array_equal(batched.frames, one_by_one.frames)
    np.testing.assert_array_equal(batched.flow, one_by_one.flow)
    # frame t's flow is from frame t - 2 (frame 0 for the first two), chunk edges included
    flow = make_flow("tvl1_torch", CONF, "cpu")
    for t in (1, 6, 7, 8, 14, 19):
        reference, frame = (np.array(batched.frames[i]) for i in (max(t - 2, 0), t))
        expected = flow(reference, frame).astype(np.float16)
        np.testing.assert_allclose(batched.flow[t], expected, rtol=0, atol=2e-3)


@pytest.mark.slow
def test_the_compiled_step_gives_the_eager_flow(cases):
    """tvl1_flow(compiled=True) fuses the inner step with torch.compile (timed by the GPU
    check); it must compute the same flow."""
    prev = torch.from_numpy(np.stack([c.prev for c in cases[:2]]))
    nxt = torch.from_numpy(np.stack([c.next for c in cases[:2]]))
    eager = tvl1_flow(prev, nxt, CONF)
    compiled = tvl1_flow(prev, nxt, CONF, compiled=True)
    torch.testing.assert_close(compiled, eager, rtol=0, atol=1e-4)
