"""Mixed precision: the per-frame backbone may run in bf16/fp16, the scores stay float32."""

import torch

from mespot.module import SpotterModule


def test_scores_stay_full_precision_under_bf16_autocast():
    torch.manual_seed(0)
    model = SpotterModule(
        in_chans=3,
        backbone={"name": "vovnet", "width": 0.25},
        neck={"level_dims": (16, 16, 16), "out_dim": 16},
    ).eval()
    x = torch.rand(2, 16, 3, 32, 32)
    with torch.no_grad():
        exact = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(x)
    logits, offsets, points = mixed
    assert logits.dtype == offsets.dtype == torch.float32
    assert logits.shape[:2] == offsets.shape[:2] == (2, points.shape[0])
    # bf16 features: close to the float32 run, but not equal (so autocast really was on)
    assert not torch.equal(logits, exact[0])
    torch.testing.assert_close(logits, exact[0], atol=0.1, rtol=0.1)
