"""Shared by the tests that run `mespot-train` on a tiny mock (test_loso.py, test_ddp.py) or
read what its folds leave (test_startup.py)."""

import json
import socket

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp
from omegaconf import OmegaConf

from mespot.data.adapters import load_annotations
from mespot.data.preprocess import Settings, preprocess
from mespot.data.synth import MockSpec, write_mock
from mespot.intervals import TYPES

TINY = [
    "preprocessing.size=32",
    "preprocessing.flow.method=dis",
    "preprocessing.face.detector=none",
]


def preprocessed_mock(spec: MockSpec, tmp_path_factory) -> tuple:
    """(root, cache dir) of the mock `spec` describes, preprocessed as TINY says."""
    root = write_mock(spec, tmp_path_factory.mktemp("mock"))
    cache_dir = tmp_path_factory.mktemp("cache")
    settings = Settings(
        size=32, flow_method="dis", flow_params={"preset": "medium"}, detector="none"
    )
    preprocess(load_annotations("casme2", root), root, cache_dir, settings, workers=1,
               progress=False)  # fmt: skip
    return root, cache_dir


@pytest.fixture(scope="session")
def tiny_mock(tmp_path_factory):
    """(root, cache dir) of a 3-subject mock CAS(ME)² (s15, s16, s19), preprocessed as TINY says."""
    spec = MockSpec("casme2", subjects=3, videos_per_subject=1, frames=200, size=(96, 72), seed=4)
    return preprocessed_mock(spec, tmp_path_factory)


def write_job(sweep, job, subject, settings=(), counts=(1, 1, 1), rule=("strict", 0.5)):
    """A job folder as mespot-train leaves it; counts = (n_pred, n_gt, tp) for each type."""
    folder = sweep / job
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save({"name": "grid", "data": {"test_subject": subject}},
                   folder / ".hydra" / "config.yaml")  # fmt: skip
    OmegaConf.save([*settings, f"data.test_subject={subject}"], folder / ".hydra/overrides.yaml")
    if counts is not None:
        n_pred, n_gt, tp = counts
        metrics = {t: {"n_pred": n_pred, "n_gt": n_gt, "tp": tp} for t in TYPES}
        (folder / "metrics.json").write_text(
            json.dumps(
                {
                    **metrics,
                    "matching": rule[0],
                    "iou": rule[1],
                    "thresholds": {"mae": 0.3, "me": 0.2},
                }
            )
        )
    return folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gloo_rank(rank, world, port, queue, work, args):
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        queue.put((rank, work(rank, world, *args)))
    finally:
        dist.destroy_process_group()


def on_two_gloo_ranks(work, *args) -> dict:
    """rank → work(rank, world, *args), each rank a spawned process in one real gloo group
    (`work` must be a module-level function, so the processes can import it)."""
    context = mp.get_context("spawn")
    queue, port = context.Queue(), _free_port()
    procs = [context.Process(target=_gloo_rank, args=(r, 2, port, queue, work, args))
             for r in range(2)]  # fmt: skip
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return results
