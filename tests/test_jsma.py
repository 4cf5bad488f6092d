"""JSMA: the pair saliency rule against brute force, targeted success on LeNet-5, invariants, bad input."""

from __future__ import annotations

import itertools
import os

import pytest
import torch
from torch import nn

from advkit.attacks.core import random_targets
from advkit.attacks.jsma import best_pairs, jsma


def tiny_model(d=6, k=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 8), nn.Tanh(), nn.Linear(8, k)).eval()


def brute_force_pair(model, x, t, increase, softmax=False):
    """The paper's rule, pair by pair: argmax -alpha*beta s.t. alpha > 0, beta < 0 (reversed to decrease)."""
    out = (lambda v: model(v).softmax(1)) if softmax else model
    jac = torch.autograd.functional.jacobian(lambda v: out(v[None])[0], x)   # K x d
    dz_t, dz_other = jac[t], jac.sum(0) - jac[t]
    best, best_pair = 0.0, None
    bound = 1.0 if increase else 0.0
    for p, q in itertools.combinations(range(len(x)), 2):
        if x[p] == bound or x[q] == bound:
            continue
        a, b = (dz_t[p] + dz_t[q]).item(), (dz_other[p] + dz_other[q]).item()
        admissible = a > 0 and b < 0 if increase else a < 0 and b > 0
        if admissible and -a * b > best:
            best, best_pair = -a * b, {p, q}
    return best_pair


@pytest.mark.parametrize("theta", [1.0, -1.0])
@pytest.mark.parametrize("saliency", ["logits", "softmax"])
def test_first_pair_is_the_brute_force_saliency_maximiser(theta, saliency):
    model = tiny_model()
    g = torch.Generator().manual_seed(0)
    x = 0.1 + 0.8 * torch.rand(40, 6, generator=g)
    x[:5, 0] = 1.0 if theta > 0 else 0.0            # some pixels start at the bound: outside the domain
    with torch.no_grad():
        pred = model(x).argmax(1)
    t = random_targets(pred, 3, seed=1)
    res = jsma(model, x, pred, target=t, theta=theta, gamma=0.34, saliency=saliency)   # floor(6 * 0.34 / 2) = 1 step
    found = 0
    for i in range(len(x)):
        expected = brute_force_pair(model, x[i], t[i].item(), theta > 0, softmax=saliency == "softmax")
        changed = set((res.x_adv[i] != x[i]).nonzero().flatten().tolist())
        if expected is None:
            assert changed == set() and res.iterations[i] == 0
        else:
            found += 1
            assert changed == expected, f"sample {i}"
            assert torch.equal(res.x_adv[i, list(expected)], torch.full((2,), 1.0 if theta > 0 else 0.0))
    assert found >= 20, "test set-up: most samples should have an admissible pair"
    assert res.extra["no_pair"] == len(x) - found


def test_best_pairs_is_independent_of_the_chunk_size():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(10, 50, generator=g), torch.randn(10, 50, generator=g)
    dom = torch.rand(10, 50, generator=g) > 0.3
    one = best_pairs(a, b, dom, chunk_size=1)
    many = best_pairs(a, b, dom, chunk_size=16)
    for u, v in zip(one, many):
        assert torch.equal(u, v)
    p, q, found = one
    assert found.all() and (p != q).all() and dom[torch.arange(10), p].all() and dom[torch.arange(10), q].all()


# ---------------------------------------------------------------------------- LeNet-5



def test_defaults_are_the_papers_algorithm(lenet, mnist_test):
    """The defaults are the paper's (softmax F, gamma = 0.145): Papernot et al. report 97.05% success
    changing 4.02% of the pixels. Required here: >= 90% success with <= 6% of the pixels changed
    (mean over successes) on a zoo model, the first 40 test images and random targets."""
    import inspect

    defaults = {k: v.default for k, v in inspect.signature(jsma).parameters.items()}
    assert defaults["saliency"] == "softmax" and defaults["gamma"] == 0.145
    x, y = mnist_test[0][:40], mnist_test[1][:40]
    t = random_targets(y, 10, seed=0)
    res = jsma(lenet, x, y, target=t)
    changed = res.extra["pixels_changed"][res.success].mean().item()
    print(f"defaults: success {res.success_rate:.3f}, pixels changed {changed:.4f}")
    assert res.success_rate >= 0.90
    assert changed <= 0.06
    assert (res.extra["pixels_changed"] <= 0.145 + 1e-9).all()


@pytest.mark.parametrize("saliency, min_success", [("softmax", 0.8), ("logits", 0.5)])
def test_targeted_success_on_lenet_within_the_pixel_budget(lenet, mnist_test, saliency, min_success):
    """Paper: 97% success changing 4% of the pixels (softmax F). Measured on these 20 images and
    targets: softmax 100%, logits 65%; the bands leave room for other trainings."""
    x, y = mnist_test[0][:20], mnist_test[1][:20]
    t = random_targets(y, 10, seed=0)
    x_before = x.clone()
    res = jsma(lenet, x, y, target=t, gamma=0.1, saliency=saliency)
    assert torch.equal(x, x_before), "the input must never be modified"
    with torch.no_grad():
        pred = lenet(res.x_adv).argmax(1)
    assert torch.equal(res.success, pred == t) and torch.equal(res.pred, pred)
    print(f"{saliency}: success {res.success_rate:.2f}, pixels changed "
          f"{res.extra['pixels_changed'][res.success].mean():.4f} (successes)")
    assert res.success_rate >= min_success
    d = x[0].numel()
    l0 = (res.x_adv != x).flatten(1).sum(1)
    assert (l0 <= 0.1 * d).all() and torch.equal(res.extra["pixels_changed"], l0 / d)
    assert (res.x_adv >= x).all(), "theta > 0 only increases pixels"
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert (res.iterations <= int(0.1 * d // 2)).all()


def test_decreasing_pixels_and_determinism(lenet, mnist_test):
    x, y = mnist_test[0][20:26], mnist_test[1][20:26]
    t = random_targets(y, 10, seed=1)
    a = jsma(lenet, x, y, target=t, theta=-1.0, gamma=0.05)
    b = jsma(lenet, x, y, target=t, theta=-1.0, gamma=0.05)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.iterations, b.iterations)
    assert (a.x_adv <= x).all(), "theta < 0 only decreases pixels"
    changed = a.x_adv != x
    assert changed.any() and (a.x_adv[changed] == 0).all()


def test_partial_theta_steps_are_multiples_of_theta(small_cnn):
    """With |theta| < 1 a pixel stays in the search domain until it reaches the bound."""
    x = 0.2 + 0.1 * torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = small_cnn(x).argmax(1)
    t = (y + 1) % 10
    res = jsma(small_cnn, x, y, target=t, theta=0.3, gamma=0.02)
    delta = res.delta[res.delta != 0]
    steps = delta / 0.3
    at_bound = res.x_adv[res.delta != 0] == 1
    assert len(delta) and (at_bound | ((steps - steps.round()).abs() < 1e-4)).all()
    assert ((res.delta != 0).flatten(1).sum(1) <= 2 * res.iterations).all()


def test_integer_constraint_rounds_to_the_grid_and_rejudges(small_cnn):
    x = 0.2 + 0.1 * torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = small_cnn(x).argmax(1)
    t = (y + 1) % 10
    res = jsma(small_cnn, x, y, target=t, theta=0.3, gamma=0.02, levels=255)
    scaled = res.x_adv * 255
    assert torch.allclose(scaled, scaled.round(), atol=1e-4)
    with torch.no_grad():
        assert torch.equal(res.success, small_cnn(res.x_adv).argmax(1) == t)


# ---------------------------------------------------------------------------- bad input


@pytest.fixture
def xyt():
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(8))
    y = torch.tensor([0, 1, 2, 3])
    return x, y, (y + 1) % 10


@pytest.mark.parametrize("kwargs, match", [
    ({"theta": 0.0}, r"theta must be in \[-1, 1\] and non-zero"),
    ({"theta": 2.0}, r"theta must be in \[-1, 1\]"),
    ({"gamma": 0.0}, r"gamma .* must be in \(0, 1\]"),
    ({"gamma": 1.5}, r"gamma .* must be in \(0, 1\]"),
    ({"saliency": "probs"}, r"saliency must be 'logits'"),
    ({"chunk_size": 0}, r"chunk_size must be a positive int"),
    ({"levels": -1}, r"levels"),
])
def test_bad_hyperparameters_are_refused(small_cnn, xyt, kwargs, match):
    x, y, t = xyt
    with pytest.raises(ValueError, match=match):
        jsma(small_cnn, x, y, target=t, **kwargs)


def test_missing_or_bad_target_is_refused(small_cnn, xyt):
    x, y, t = xyt
    with pytest.raises(ValueError, match=r"targeted attack.*random_targets"):
        jsma(small_cnn, x, y)
    with pytest.raises(ValueError, match=r"target != y"):
        jsma(small_cnn, x, y, target=y.clone())
    with pytest.raises(ValueError, match=r"target holds labels in \[10, 13\].*10 classes"):
        jsma(small_cnn, x, y, target=t + 9)
    with pytest.raises(ValueError, match=r"pixels in \[0, 1\]"):
        jsma(small_cnn, x + 1, y, target=t)
