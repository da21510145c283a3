"""Checkpoints of the format before (3: the network's weights on the Lightning module itself,
`mirror_eval` a switch) load for spotting as they are; a run is not resumed from one."""

from dataclasses import asdict

import pytest
import torch

from mespot.checkpoint import CHECKPOINT_FORMAT, read_checkpoint
from mespot.data.preprocess import Settings
from mespot.errors import UserError
from mespot.models.fpn import SMALL
from mespot.module import SpotterModule, load_spotter

INPUTS = {"window": 16, "stride": 8, "use_flow": True, "frame_diffs": [2], "rest_span": 0}


def spotter() -> SpotterModule:
    """A small spotter with every part format 3 stored differently: the gate, the motion energy
    and a test-time mirror."""
    torch.manual_seed(0)
    model = SpotterModule(in_chans=4, backbone={"name": "vovnet", "width": 0.25}, neck=SMALL,
                          motion_grid=2, backbone_warmup=1, test_time=["mirror"],
                          preprocessing=asdict(Settings(size=32, detector="none")),
                          inputs=INPUTS)  # fmt: skip
    with torch.no_grad():  # an open gate, so that the backbone counts
        model.spotter.gate.weight.normal_()
    return model.eval()


def as_format_3(model: SpotterModule, **options) -> dict:
    """The checkpoint mespot's format 3 wrote of this model."""
    state = {}
    for key, value in model.state_dict().items():
        key = "gate" if key == "spotter.gate.weight" else key.removeprefix("spotter.")
        state[key] = value
    hparams = {k: v for k, v in model.hparams.items() if k != "test_time"}
    hparams |= {"mirror_eval": True, "freeze_after_warmup": False, **options}
    return {"state_dict": state, "hyper_parameters": hparams,
            "mespot": {"format": CHECKPOINT_FORMAT - 1, "version": "0.1.0"}}  # fmt: skip


def test_a_format_3_checkpoint_spots_as_the_model_that_wrote_it(tmp_path):
    model = spotter()
    path = tmp_path / "old.ckpt"
    torch.save(as_format_3(model), path)
    loaded = load_spotter(path)
    assert loaded.hparams.test_time == ["mirror"]
    x = torch.rand(2, 16, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for theirs, ours in zip(loaded(x), model(x), strict=True):
            assert torch.equal(theirs, ours)


def test_a_format_3_checkpoint_of_a_removed_option_is_refused(tmp_path):
    path = tmp_path / "frozen.ckpt"
    torch.save(as_format_3(spotter(), freeze_after_warmup=True), path)
    with pytest.raises(UserError, match="frozen.ckpt: trained with model.freeze_after_warmup"):
        load_spotter(path)


def test_a_run_does_not_resume_from_a_format_3_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    torch.save(as_format_3(spotter()), path)
    with pytest.raises(UserError, match=f"format {CHECKPOINT_FORMAT - 1} .*reads format 4"):
        read_checkpoint(path, "ckpt_path", upgrade=False)
