"""Norms and accuracies against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from advkit import metrics
from advkit.noise import random_noise


def test_lp_norms_by_hand():
    d = torch.tensor([[3.0, -4.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.5]])
    assert metrics.lp_norm(d, 0).tolist() == [2, 1]
    assert metrics.lp_norm(d, 1).tolist() == [7, 0.5]
    assert metrics.lp_norm(d, 2).tolist() == [5, 0.5]
    assert metrics.lp_norm(d, "inf").tolist() == [4, 0.5]
    assert metrics.lp_norm(d, "linf").tolist() == [4, 0.5]
    assert metrics.lp_norm(d, 0, tol=3.5).tolist() == [1, 0]
    assert metrics.lp_norm(d.view(2, 1, 2, 2), 2).tolist() == [5, 0.5]


def test_bad_norm():
    with pytest.raises(ValueError, match="0, 1, 2 or"):
        metrics.lp_norm(torch.zeros(1, 2), 3)


def test_accuracy_and_success_rate():
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 2, bias=False)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.eye(2))
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.2, 0.1]])
    y = torch.tensor([0, 1, 1, 0])
    assert metrics.predict(model, x).tolist() == [0, 1, 0, 0]
    assert metrics.accuracy(model, x, y) == 0.75
    assert metrics.success_rate(torch.tensor([True, False, True, True])) == 0.75
    assert metrics.success_rate(torch.tensor([True, False, True, True]), among=torch.tensor([0, 1, 1, 0])) == 0.5


@pytest.mark.parametrize("norm", ["inf", 2])
def test_random_noise_has_the_requested_norm_and_is_seeded(norm):
    x = torch.full((6, 1, 8, 8), 0.5)
    a = random_noise(x, 0.1, norm=norm, seed=3)
    assert torch.allclose(metrics.lp_norm(a - x, norm), torch.full((6,), 0.1), atol=1e-6)
    assert torch.equal(a, random_noise(x, 0.1, norm=norm, seed=3))
    assert not torch.equal(a, random_noise(x, 0.1, norm=norm, seed=4))
    if norm == "inf":  # a random sign: about half the pixels go up
        assert 0.3 < ((a - x) > 0).float().mean() < 0.7


def test_median_is_numpys_median():
    import numpy as np

    v = torch.tensor([4.0, 1.0, 3.0, 2.0])
    assert metrics.median(v) == pytest.approx(float(np.median(v.numpy()))) == pytest.approx(2.5)
    assert metrics.median(torch.tensor([3.0, 1.0, 2.0])) == 2.0
    assert math.isnan(metrics.median(torch.tensor([])))
