"""claim_gpu with several folds per GPU (folds_per_gpu): real processes holding real lock files,
one slot on every GPU taken before any GPU takes a second fold, and a fold past the last slot
waiting for one to free."""

import multiprocessing
import queue
from pathlib import Path

import pytest

from mespot.cli.common import compose_train
from mespot.errors import UserError
from mespot.parallel import claim_gpu


def _hold(folder, per_gpu, trying, claims, release):
    trying.set()
    claims.put(claim_gpu(Path(folder), 2, per_gpu))
    release.wait(60)  # hold the slot until the test lets go


def test_two_folds_per_gpu_fill_each_gpu_once_before_either_takes_a_second(tmp_path):
    context = multiprocessing.get_context("spawn")
    claims = context.Queue()
    releases = [context.Event() for _ in range(5)]
    workers = []

    def start(i):
        trying = context.Event()
        worker = context.Process(target=_hold,
                                 args=(str(tmp_path), 2, trying, claims, releases[i]))  # fmt: skip
        worker.start()
        workers.append(worker)
        assert trying.wait(60)

    try:
        order = []
        for i in range(4):  # one after another: the order of the claims is the order of slots
            start(i)
            order.append(claims.get(timeout=60))
        assert order == [0, 1, 0, 1]
        locks = sorted(p.name for p in tmp_path.glob(".gpu*.lock"))
        assert locks == [".gpu0.1.lock", ".gpu0.lock", ".gpu1.1.lock", ".gpu1.lock"]

        start(4)  # every slot is held: the fifth fold waits…
        with pytest.raises(queue.Empty):
            claims.get(timeout=2.5)  # (it looks again every second)
        releases[1].set()  # …until the second fold, on GPU 1, ends
        workers[1].join(timeout=60)
        assert claims.get(timeout=60) == 1
    finally:
        for release in releases:
            release.set()
        for worker in workers:
            worker.join(timeout=60)
    assert [w.exitcode for w in workers] == [0] * 5


@pytest.mark.parametrize("per_gpu", [0, -1])
def test_fewer_than_one_fold_per_gpu_is_refused_by_name(tmp_path, per_gpu):
    with pytest.raises(UserError, match=f"folds_per_gpu={per_gpu}: give at least 1"):
        claim_gpu(tmp_path, 2, per_gpu)
    assert not list(tmp_path.glob(".gpu*.lock"))  # refused before claiming anything


def test_one_fold_per_gpu_by_default():
    assert compose_train(["data.root=x", "data.test_subject=s1"]).folds_per_gpu == 1
