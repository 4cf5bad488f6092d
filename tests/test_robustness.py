"""Robustness measures: rho_adv, minimal-norm statistics, smallest fooling eps; DeepFool's Table 1 order."""

from __future__ import annotations

import math
import os

import pytest
import torch
from torch import nn

from advkit import robustness
from advkit.attacks.deepfool import deepfool
from advkit.attacks.fgsm import fgsm
from advkit.attacks.result import AttackResult
from advkit.evaluation import robustness_curve
from advkit.metrics import predict
from advkit.robustness import empirical_robustness, min_norm_stats, smallest_eps_fooling


def hand_made_result():
    """Four 1x2x2 images of L2 norm 1, perturbations of L2 norm 0.1, 0.2, 0.3, 0.4; sample 2 failed."""
    x = torch.full((4, 1, 2, 2), 0.5)
    direction = torch.tensor([1.0, 0, 0, 0]).view(1, 2, 2)
    x_adv = x + torch.tensor([0.1, 0.2, 0.3, 0.4]).view(4, 1, 1, 1) * direction
    success = torch.tensor([True, True, False, True])
    y = torch.zeros(4, dtype=torch.long)
    return AttackResult(x_adv=x_adv, success=success, x=x, y=y, pred=y.clone())


def test_empirical_robustness_counts_failures_as_documented():
    res = hand_made_result()
    assert empirical_robustness(res) == pytest.approx((0.1 + 0.2 + 0.4) / 3)
    assert empirical_robustness(res, count_failures="include") == pytest.approx(0.25)
    assert empirical_robustness(res, count_failures="inf") == math.inf
    assert empirical_robustness(res, p="inf") == pytest.approx((0.1 + 0.2 + 0.4) / 3 / 0.5)
    res.success[:] = False
    assert math.isnan(empirical_robustness(res))
    with pytest.raises(ValueError, match=r"count_failures must be one of 'exclude', 'inf', 'include'"):
        empirical_robustness(res, count_failures="zero")


def test_min_norm_stats_over_successes():
    res = hand_made_result()
    stats = min_norm_stats(res, 2)
    ok = torch.tensor([0.1, 0.2, 0.4], dtype=torch.double)
    assert stats["n_success"] == 3 and stats["n"] == 4
    assert stats["mean"] == pytest.approx(ok.mean().item(), abs=1e-6)
    assert stats["median"] == pytest.approx(0.2, abs=1e-6)
    assert stats["q10"] == pytest.approx(torch.quantile(ok, 0.1).item(), abs=1e-6)
    assert stats["q90"] == pytest.approx(torch.quantile(ok, 0.9).item(), abs=1e-6)
    assert stats["q10"] <= stats["median"] <= stats["q90"]
    res.success[:] = False
    empty = min_norm_stats(res, "inf")
    assert empty["n_success"] == 0 and math.isnan(empty["median"])


def test_smallest_eps_fooling_picks_the_first_eps_reaching_the_fraction(monkeypatch):
    """The selection logic on a fixed curve (robust accuracies), and that the curve is robustness_curve's."""
    calls = []

    def fake_curve(model, x, y, attack, epsilons, **kw):
        calls.append(list(epsilons))
        return [1.0, 0.5, 0.15, 0.1, 0.02][: len(epsilons)]

    monkeypatch.setattr(robustness, "robustness_curve", fake_curve)
    eps, curve = smallest_eps_fooling(None, None, None, fgsm, [0.0, 0.1, 0.2, 0.3, 0.4])
    assert eps == 0.3 and curve == [1.0, 0.5, 0.15, 0.1, 0.02] and calls == [[0.0, 0.1, 0.2, 0.3, 0.4]]
    assert smallest_eps_fooling(None, None, None, fgsm, [0.0, 0.1, 0.2], fraction=0.9)[0] is None
    assert smallest_eps_fooling(None, None, None, fgsm, [0.0, 0.1], fraction=0.5)[0] == 0.1


def test_smallest_eps_fooling_with_fgsm_on_a_linear_model(mnist_test):
    x, y = mnist_test[0][:300], mnist_test[1][:300]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(50):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    epsilons = [0.0, 0.05, 0.1, 0.15, 0.2, 0.3]
    eps, curve = smallest_eps_fooling(model, x, y, fgsm, epsilons, fraction=0.9, progress=False)
    assert curve == robustness_curve(model, x, y, fgsm, epsilons, progress=False)
    assert eps is not None and 1 - curve[epsilons.index(eps)] >= 0.9
    assert all(1 - acc < 0.9 for e, acc in zip(epsilons, curve) if e < eps)


@pytest.mark.parametrize("kwargs, match", [
    ({"epsilons": [0.1, 0.1]}, r"strictly increasing"),
    ({"epsilons": []}, r"epsilons is empty"),
    ({"epsilons": [0.1], "fraction": 0.0}, r"fraction must be in \(0, 1\]"),
])
def test_smallest_eps_fooling_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        smallest_eps_fooling(None, None, None, fgsm, **kwargs)


# ---------------------------------------------------------------------------- DeepFool's Table 1



@pytest.mark.parametrize("arch, paper", [("lenet5", 0.20), ("fc500_150_10", 0.11)])
def test_rho_adv_is_of_the_papers_order(zoo_models, mnist_test, arch, paper):
    """DeepFool Table 1 (MNIST): rho_adv = 0.20 (LeNet), 0.11 (FC500-150-10), attacking the model's
    own prediction. Our models, training and box constraint differ, so only a loose band is asserted."""
    model = zoo_models[arch]
    x = mnist_test[0][:200]
    res = deepfool(model, x, predict(model, x))
    rho = empirical_robustness(res)
    stats = min_norm_stats(res, 2)
    print(f"{arch}: rho_adv = {rho:.3f} (paper {paper}), success {res.success_rate:.3f}, "
          f"median L2 {stats['median']:.3f}, mean iterations {res.iterations.float().mean():.2f}")
    assert res.success_rate >= 0.99
    assert 0.05 <= rho <= 0.4
    assert empirical_robustness(res, count_failures="inf") >= rho


def test_summary_and_min_norm_stats_report_one_median():
    """Even count of successes (norms 0.1, 0.2, 0.4 plus 0.6): both say 0.3, numpy's median, not
    torch's lower median 0.2."""
    x = torch.full((5, 1, 2, 2), 0.2)
    direction = torch.tensor([1.0, 0, 0, 0]).view(1, 2, 2)
    x_adv = x + torch.tensor([0.1, 0.2, 0.3, 0.4, 0.6]).view(5, 1, 1, 1) * direction
    success = torch.tensor([True, True, False, True, True])
    y = torch.zeros(5, dtype=torch.long)
    res = AttackResult(x_adv=x_adv, success=success, x=x, y=y, pred=y.clone())
    stats = min_norm_stats(res, p=2)
    assert stats["median"] == pytest.approx(0.3, abs=1e-6)
    assert res.summary()["median_l2"] == pytest.approx(0.3, abs=1e-4)
    assert res.summary()["median_linf"] == pytest.approx(stats["median"], abs=1e-4)
