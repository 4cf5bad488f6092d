"""Box-constrained L-BFGS (Szegedy et al.): the exact distance on a linear model, invariants on the
zoo's LeNet-5, comparisons with FGSM and C&W, and input validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import linear_model as shared_linear_model
import torch
from scipy.optimize import minimize
from torch import nn

from advkit import zoo
from advkit.attacks.core import random_targets
from advkit.attacks.cw import cw_l2
from advkit.attacks.fgsm import fgsm
from advkit.attacks.lbfgs import lbfgs


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------- linear model


def linear_model(d: int = 64, k: int = 5, seed: int = 2) -> nn.Module:
    return shared_linear_model(d, k, seed)


def targeted_exact(model: nn.Module, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact minimal L2 distance to the region {f_t >= f_k for all k} (a QP without the box) and
    whether its minimiser lies inside the box (then it is the answer with the box too)."""
    W = model[1].weight.detach().double().numpy()
    b = model[1].bias.detach().double().numpy()
    out, inside = [], []
    for xi, ti in zip(x.flatten(1).double().numpy(), t.tolist()):
        cons = [{"type": "ineq", "fun": (lambda d, k=k: (W[ti] - W[k]) @ (xi + d) + b[ti] - b[k]),
                 "jac": (lambda d, k=k: W[ti] - W[k])} for k in range(len(W)) if k != ti]
        sol = minimize(lambda d: d @ d, np.zeros_like(xi), jac=lambda d: 2 * d, constraints=cons,
                       method="SLSQP", options={"ftol": 1e-12, "maxiter": 500})
        assert sol.success
        out.append(np.linalg.norm(sol.x))
        inside.append(0 <= (xi + sol.x).min() and (xi + sol.x).max() <= 1)
    return torch.tensor(out, dtype=torch.float32), torch.tensor(inside)


def test_targeted_lbfgs_on_a_linear_model_finds_close_to_the_exact_distance():
    """Never below the exact minimum; a few percent above it, because the cross-entropy also
    weighs the third classes, which bends the path off the closest point of the region."""
    model = linear_model()
    g = torch.Generator().manual_seed(3)
    x = 0.3 + 0.4 * torch.rand(24, 1, 8, 8, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    t = random_targets(y, 5, seed=4)
    exact, inside = targeted_exact(model, x, t)
    x, y, t, exact = x[inside][:10], y[inside][:10], t[inside][:10], exact[inside][:10]
    assert len(x) >= 6
    res = lbfgs(model, x, y, target=t, binary_search_steps=14, max_iterations=50)
    assert res.success.all() and torch.equal(res.pred, t)
    ratio = res.norms(2) / exact
    assert (ratio >= 1 - 1e-4).all(), ratio
    assert ratio.median() <= 1.04 and ratio.max() <= 1.08, ratio


# ---------------------------------------------------------------------------- LeNet-5

# A reduced budget (the defaults are 10 x 100): L-BFGS-B is the slowest attack of the course
BUDGET = dict(binary_search_steps=6, max_iterations=50)



@pytest.fixture(scope="module")
def digits(lenet, mnist_test):
    """The first 8 test digits LeNet-5 classifies correctly, and random targets."""
    x, y = mnist_test[0][:20], mnist_test[1][:20]
    with torch.no_grad():
        ok = lenet(x).argmax(1) == y
    x, y = x[ok][:8].clone(), y[ok][:8].clone()
    return x, y, random_targets(y, 10, seed=0)


@pytest.fixture(scope="module")
def targeted_run(lenet, digits):
    x, y, t = digits
    x_before = x.clone()
    return lbfgs(lenet, x, y, target=t, **BUDGET), x_before


def test_targeted_lbfgs_reaches_most_targets_within_the_box_and_honestly(lenet, digits, targeted_run):
    x, y, t = digits
    res, x_before = targeted_run
    assert torch.equal(x, x_before), "the input must never be modified"
    assert res.x_adv.shape == x.shape and res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert res.targeted and res.success_rate >= 0.9
    with torch.no_grad():
        pred = lenet(res.x_adv).argmax(1)  # recomputed independently of the attack's claim
    assert torch.equal(res.success, pred == t) and torch.equal(res.pred, pred)
    assert torch.equal(res.x_adv[~res.success], x[~res.success])
    assert (res.iterations > 0).all() and (res.queries >= res.iterations).all()


def test_a_longer_search_on_c_is_never_worse(lenet, digits, targeted_run):
    """The first three runs of the six-step search are the same computation; the best is kept."""
    x, y, t = digits
    res, _ = targeted_run
    short = lbfgs(lenet, x, y, target=t, **dict(BUDGET, binary_search_steps=3))
    assert (res.success >= short.success).all()
    both = short.success
    assert (res.norms(2)[both] <= short.norms(2)[both] + 1e-6).all()
    assert res.norms(2)[both].median() < short.norms(2)[both].median()


def test_same_order_of_magnitude_as_carlini_wagner(lenet, digits, targeted_run):
    x, y, t = digits
    res, _ = targeted_run
    cw = cw_l2(lenet, x, y, target=t, learning_rate=0.1, max_iterations=100, binary_search_steps=6,
               initial_const=1e-2)
    both = res.success & cw.success
    ratio = res.norms(2)[both].median() / cw.norms(2)[both].median()
    assert 0.5 < ratio < 2.0, ratio


def test_untargeted_aims_at_the_most_likely_wrong_class_and_beats_fgsm(lenet, digits):
    x, y, _ = digits
    res = lbfgs(lenet, x, y, **BUDGET)
    with torch.no_grad():
        logits = lenet(x)
    second = logits.scatter(1, y[:, None], -math.inf).argmax(1)
    assert torch.equal(res.extra["goal"], second) and res.target is None
    with torch.no_grad():
        assert torch.equal(res.success, lenet(res.x_adv).argmax(1) != y)
    assert res.success_rate >= 0.9
    # FGSM's L2 at the smallest eps (on a 0.02 grid) that fools each digit: about eps * sqrt(d)
    fgsm_l2 = torch.full((len(x),), math.inf)
    for eps in torch.arange(0.02, 0.52, 0.02).tolist():
        r = fgsm(lenet, x, y, eps=eps)
        new = r.success & torch.isinf(fgsm_l2)
        fgsm_l2[new] = r.norms(2)[new]
    both = res.success & torch.isfinite(fgsm_l2)
    assert both.sum() >= 5
    assert (res.norms(2)[both] < fgsm_l2[both]).all()
    assert res.norms(2)[both].median() < 0.5 * fgsm_l2[both].median()


def test_same_input_same_result(lenet, digits):
    x, y, t = digits
    kw = dict(target=t[:4], binary_search_steps=2, max_iterations=20)
    a, b = lbfgs(lenet, x[:4], y[:4], **kw), lbfgs(lenet, x[:4], y[:4], **kw)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.extra["const"], b.extra["const"])


def test_integer_constraint_is_judged_after_rounding(lenet, digits):
    x, y, t = digits
    res = lbfgs(lenet, x[:6], y[:6], target=t[:6], levels=255, **dict(BUDGET, binary_search_steps=4))
    scaled = res.x_adv * 255
    assert torch.allclose(scaled, scaled.round(), atol=1e-4)
    with torch.no_grad():
        assert torch.equal(res.success, lenet(res.x_adv).argmax(1) == t[:6])
    assert res.success_rate >= 0.8


# ---------------------------------------------------------------------------- bad input


@pytest.fixture
def xy():
    return torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(8)), torch.tensor([0, 1, 2, 3])


@pytest.mark.parametrize("kwargs, match", [
    (dict(initial_const=0.0), r"initial_const must be > 0"),
    (dict(initial_const=-1.0), r"initial_const must be > 0"),
    (dict(initial_const=float("inf")), r"initial_const must be finite"),
    (dict(binary_search_steps=0), r"binary_search_steps must be an int >= 1"),
    (dict(max_iterations=0), r"max_iterations must be an int >= 1"),
    (dict(max_iterations=10.0), r"max_iterations must be an int >= 1"),
    (dict(levels=-3), r"levels"),
])
def test_bad_hyperparameters_are_refused(small_cnn, xy, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        lbfgs(small_cnn, *xy, **kwargs)


def test_bad_images_targets_and_model_are_refused(small_cnn, xy):
    x, y = xy
    with pytest.raises(ValueError, match=r"pixels in \[0, 1\]"):
        lbfgs(small_cnn, x - 0.5, y)
    with pytest.raises(ValueError, match=r"target != y"):
        lbfgs(small_cnn, x, y, target=y.clone())
    with pytest.raises(ValueError, match=r"labels in \[1, 10\].*10 classes"):
        lbfgs(small_cnn, x, y, target=torch.tensor([1, 2, 3, 10]))
    small_cnn.train()
    with pytest.raises(ValueError, match=r"training mode"):
        lbfgs(small_cnn, x, y)
