"""Shared by the tests that run `mespot-train` on a tiny mock (test_loso.py, test_ddp.py)."""

import pytest

from mespot.data.adapters import load_annotations
from mespot.data.preprocess import Settings, preprocess
from mespot.data.synth import MockSpec, write_mock

TINY = [
    "preprocessing.size=32",
    "preprocessing.flow.method=dis",
    "preprocessing.face.detector=none",
]


@pytest.fixture(scope="session")
def tiny_mock(tmp_path_factory):
    """(root, cache dir) of a 3-subject mock CAS(ME)² (s15, s16, s19), preprocessed as TINY says."""
    root = write_mock(
        MockSpec("casme2", subjects=3, videos_per_subject=1, frames=200, size=(96, 72), seed=4),
        tmp_path_factory.mktemp("mock"),
    )
    cache_dir = tmp_path_factory.mktemp("cache")
    settings = Settings(
        size=32, flow_method="dis", flow_params={"preset": "medium"}, detector="none"
    )
    preprocess(load_annotations("casme2", root), root, cache_dir, settings, workers=1,
               progress=False)  # fmt: skip
    return root, cache_dir
