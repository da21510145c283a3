"""The warm-up's learning rate: a full cosine per training phase, restarting at each boundary."""

import pytest
import torch

from mespot.errors import UserError
from mespot.warmup import cosine_phases


def learning_rates(boundaries, epochs, lr=1.0):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = cosine_phases(optimizer, boundaries)
    rates = []
    for _ in range(epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_each_phase_decays_from_the_base_rate_and_the_next_restarts_it():
    rates = learning_rates([4, 8], 8, lr=0.01)
    assert rates[0] == pytest.approx(0.01) and rates[4] == pytest.approx(0.01)
    assert rates[2] == pytest.approx(0.005) and rates[6] == pytest.approx(0.005)
    assert rates[:4] == sorted(rates[:4], reverse=True) and rates[3] < 0.002
    assert rates[4:] == sorted(rates[4:], reverse=True) and rates[7] < 0.002


def test_one_boundary_is_a_plain_cosine_to_zero():
    plain = torch.optim.lr_scheduler.CosineAnnealingLR
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    reference, expected = plain(optimizer, T_max=6), []
    for _ in range(6):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        reference.step()
    # a 0 boundary (no warm-up) is skipped
    assert learning_rates([0, 6], 6) == pytest.approx(expected)


def test_no_positive_boundary_is_refused():
    with pytest.raises(UserError, match="model.scheduler.boundaries"):
        learning_rates([0], 1)
