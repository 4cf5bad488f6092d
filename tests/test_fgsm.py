"""FGSM: closed forms on linear models, invariants on a CNN, and input validation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from advkit.attacks import AttackResult, batched, fgsm, quantize, random_targets


class BinaryLogistic(nn.Module):
    """Logistic regression as a 2-class model: logits [0, w.x + b]."""

    def __init__(self, d: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(d, generator=g))
        self.b = nn.Parameter(torch.randn((), generator=g))

    def forward(self, x):
        z = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(z), z], dim=1)


def interior_batch(n=16, shape=(1, 4, 4), seed=1):
    g = torch.Generator().manual_seed(seed)
    return 0.25 + 0.5 * torch.rand(n, *shape, generator=g)  # far from the box: no clipping at eps<=0.25


def test_fgsm_on_logistic_regression_is_the_analytic_sign_w_step():
    x = interior_batch()
    model = BinaryLogistic(16).eval()
    y = torch.randint(0, 2, (16,), generator=torch.Generator().manual_seed(2))
    eps = 0.1
    res = fgsm(model, x, y, eps=eps)
    # d CE / dx = (sigmoid(z) - y) w, so the step is +eps sign(w) for y = 0 and -eps sign(w) for y = 1
    sign_w = model.w.detach().sign().view(1, 1, 4, 4)
    direction = torch.where(y == 1, -1.0, 1.0).view(-1, 1, 1, 1)
    torch.testing.assert_close(res.x_adv, x + direction * eps * sign_w, rtol=0, atol=1e-7)


def test_l2_fast_gradient_on_logistic_regression_is_eps_w_over_norm():
    x = interior_batch()
    model = BinaryLogistic(16).eval()
    y = torch.zeros(16, dtype=torch.long)
    w = model.w.detach()
    res = fgsm(model, x, y, eps=0.2, norm=2)
    torch.testing.assert_close(res.x_adv, x + 0.2 * (w / w.norm()).view(1, 1, 4, 4), rtol=0, atol=1e-6)
    torch.testing.assert_close(res.norms(2), torch.full((16,), 0.2), rtol=1e-5, atol=1e-6)


def test_targeted_fgsm_matches_the_closed_form_gradient_of_a_linear_softmax():
    torch.manual_seed(0)
    lin = nn.Linear(16, 5)
    model = nn.Sequential(nn.Flatten(), lin).eval()
    x = interior_batch()
    y = torch.randint(0, 5, (16,), generator=torch.Generator().manual_seed(3))
    t = random_targets(y, 5, seed=4)
    assert (t != y).all()
    with torch.no_grad():
        p = F.softmax(lin(x.flatten(1)), dim=1)
        grad = (p - F.one_hot(t, 5).float()) @ lin.weight  # d CE(t) / dx, written by hand
    expected = (x - 0.05 * grad.sign().view_as(x)).clamp(0, 1)
    res = fgsm(model, x, y, eps=0.05, target=t)
    torch.testing.assert_close(res.x_adv, expected, rtol=0, atol=1e-7)
    assert res.targeted


@pytest.mark.parametrize("eps", [0.0, 0.01, 0.1, 0.3, 1.0])
@pytest.mark.parametrize("norm", ["inf", 2])
def test_invariants_box_budget_untouched_input_and_honest_success(small_cnn, eps, norm):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(32, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (32,), generator=g)
    x_before = x.clone()
    res = fgsm(small_cnn, x, y, eps=eps, norm=norm)
    assert torch.equal(x, x_before), "the input must never be modified"
    assert res.x_adv.shape == x.shape and res.x_adv.dtype == x.dtype
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert (res.norms(norm) <= eps + 1e-5).all()
    with torch.no_grad():
        pred = small_cnn(res.x_adv).argmax(1)  # recomputed independently of the attack's claim
    assert torch.equal(res.success, pred != y)
    assert torch.equal(res.pred, pred)


def test_fgsm_lowers_accuracy_of_a_trained_model(mnist_test):
    """On a quickly trained linear model the attack must hurt: accuracy drops with eps."""
    x, y = mnist_test
    x, y = x[:2000], y[:2000]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    accs = [fgsm(model, x, y, eps=e).robust_accuracy for e in (0.0, 0.05, 0.1, 0.2)]
    assert accs[0] > 0.85
    assert accs[0] > accs[1] > accs[2] > accs[3]
    assert accs[3] < 0.2


def test_integer_constraint_rounds_to_the_grid_within_the_budget(mnist_test, small_cnn):
    x, y = mnist_test
    x, y = x[:64], y[:64]
    for eps in (0.5 / 255, 0.1, 0.3):
        res = fgsm(small_cnn, x, y, eps=eps, levels=255)
        scaled = res.x_adv * 255
        assert torch.allclose(scaled, scaled.round(), atol=1e-4)
        assert (res.norms("inf") <= eps + 1e-6).all()
        with torch.no_grad():
            assert torch.equal(res.success, small_cnn(res.x_adv).argmax(1) != y)
    # eps below half a grid step rounds back to x itself
    assert torch.equal(fgsm(small_cnn, x, y, eps=0.4 / 255, levels=255).x_adv, x)


def test_quantize_l2_never_leaves_the_ball():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (20, 1, 8, 8), generator=g).float() / 255
    d = torch.randn(20, 1, 8, 8, generator=g)
    d = 0.05 * d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    x_adv = (x + d).clamp(0, 1)
    q = quantize(x_adv, x, 255, eps=0.05, norm=2.0)
    assert ((q - x).flatten(1).norm(dim=1) <= 0.05 + 1e-6).all()
    assert torch.allclose(q * 255, (q * 255).round(), atol=1e-4)


def test_same_input_same_result(small_cnn):
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    y = torch.arange(8)
    a, b = fgsm(small_cnn, x, y, eps=0.1), fgsm(small_cnn, x, y, eps=0.1)
    assert torch.equal(a.x_adv, b.x_adv)


def test_batched_equals_one_batch(small_cnn):
    x = torch.rand(50, 1, 28, 28, generator=torch.Generator().manual_seed(6))
    y = torch.arange(50) % 10
    whole = fgsm(small_cnn, x, y, eps=0.1)
    parts = batched(fgsm, small_cnn, x, y, eps=0.1, batch_size=7, progress=False)
    assert torch.allclose(whole.x_adv, parts.x_adv, atol=1e-6)
    assert torch.equal(whole.success, parts.success)
    assert isinstance(parts, AttackResult) and len(parts) == 50


def test_zero_gradient_is_reported():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    with torch.no_grad():
        model[1].weight.zero_()
    x = interior_batch(4)
    with pytest.warns(RuntimeWarning, match="zero input gradient"):
        res = fgsm(model, x, torch.zeros(4, dtype=torch.long), eps=0.1)
    assert res.extra["zero_gradient"] == 4


def test_summary_and_repr(small_cnn):
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(7))
    res = fgsm(small_cnn, x, torch.arange(8), eps=0.2)
    s = res.summary()
    assert s["n"] == 8 and 0 <= s["success_rate"] <= 1
    assert math.isnan(s["median_linf"]) or s["median_linf"] <= 0.2 + 1e-6
    assert "fgsm" in repr(res)


# ---------------------------------------------------------------------------- bad input


@pytest.fixture
def xy():
    return torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(8)), torch.tensor([0, 1, 2, 3])


def test_model_in_training_mode_is_refused(small_cnn, xy):
    small_cnn.train()
    with pytest.raises(ValueError, match=r"training mode.*model\.eval\(\)"):
        fgsm(small_cnn, *xy, eps=0.1)


@pytest.mark.parametrize("bad, match", [
    (lambda x: x * 255, r"pixels in \[0, 1\].*255"),
    (lambda x: x - 0.5, r"pixels in \[0, 1\]"),
    (lambda x: x[0], r"batch.*unsqueeze\(0\)"),
    (lambda x: (x * 255).to(torch.uint8), r"float tensor.*255"),
    (lambda x: x.flatten()[:0], r"batch|empty"),
])
def test_bad_images_are_refused(small_cnn, xy, bad, match):
    x, y = xy
    with pytest.raises((ValueError, TypeError), match=match):
        fgsm(small_cnn, bad(x), y, eps=0.1)


def test_bad_labels_are_refused(small_cnn, xy):
    x, y = xy
    with pytest.raises(ValueError, match=r"labels in \[0, 12\].*10 classes"):
        fgsm(small_cnn, x, torch.tensor([0, 1, 2, 12]), eps=0.1)
    with pytest.raises(TypeError, match=r"integer class labels"):
        fgsm(small_cnn, x, y.float(), eps=0.1)
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        fgsm(small_cnn, x, y[:3], eps=0.1)
    with pytest.raises(ValueError, match=r"target != y"):
        fgsm(small_cnn, x, y, eps=0.1, target=y.clone())


@pytest.mark.parametrize("eps", [-0.1, float("nan"), float("inf")])
def test_bad_eps_is_refused(small_cnn, xy, eps):
    with pytest.raises(ValueError, match=r"eps must be a finite number >= 0"):
        fgsm(small_cnn, *xy, eps=eps)


def test_bad_norm_and_levels_are_refused(small_cnn, xy):
    with pytest.raises(ValueError, match=r"norm must be one of inf, 2"):
        fgsm(small_cnn, *xy, eps=0.1, norm=1)
    with pytest.raises(ValueError, match=r"levels"):
        fgsm(small_cnn, *xy, eps=0.1, levels=0)
