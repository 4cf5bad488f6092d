"""PGD / BIM: closed forms on linear models, the norm pieces, invariants on LeNet-5, peers, bad input."""

from __future__ import annotations

import math
import os
import time

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from advkit.attacks.core import random_targets
from advkit.attacks.pgd import (
    bim, l1_direction, l2_direction, linf_direction, pgd, project_l1, project_l2, project_linf,
    uniform_l1, uniform_l2, uniform_linf,
)

PROJECT = {"inf": project_linf, 2: project_l2, 1: project_l1}
SAMPLE = {"inf": uniform_linf, 2: uniform_l2, 1: uniform_l1}
P = {"inf": math.inf, 2: 2, 1: 1}


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
    return 0.25 + 0.5 * torch.rand(n, *shape, generator=g)  # far from the box edges


def norms(delta, p):
    return delta.flatten(1).norm(p=P[p], dim=1)



@pytest.fixture(scope="module")
def batch(mnist_test):
    x, y = mnist_test
    return x[:32], y[:32]


# ---------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize("loss", ["ce", "margin"])
@pytest.mark.parametrize("targeted", [False, True])
@pytest.mark.parametrize("norm", ["inf", 2, 1])
def test_linear_model_reaches_the_analytic_optimum_of_the_ball(norm, loss, targeted):
    """On logits [0, w.x + b] every loss pushes along -(2y-1) w; the best point of the ball is:
    Linf x - eps sign(w)(2y-1); L2 x - eps w/||w|| (2y-1); L1 all of eps on argmax |w_i|."""
    x = interior_batch()
    model = BinaryLogistic(16).eval()
    y = torch.randint(0, 2, (16,), generator=torch.Generator().manual_seed(2))
    w = model.w.detach()
    s = (1 - 2 * y).float().view(-1, 1, 1, 1)  # +1: increase w.x (y = 0), -1: decrease it
    eps = {"inf": 0.1, 2: 0.2, 1: 0.2}[norm]
    if norm == "inf":
        opt = eps * w.sign()
    elif norm == 2:
        opt = eps * w / w.norm()
    else:
        i = w.abs().argmax()
        opt = torch.zeros(16).index_fill_(0, i, 1.0) * eps * w[i].sign()
    res = pgd(model, x, y, eps=eps, eps_step=eps / 4, max_iter=10, norm=norm, loss=loss,
              target=1 - y if targeted else None)
    torch.testing.assert_close(res.x_adv, x + s * opt.view(1, 1, 4, 4), rtol=0, atol=1e-6)
    torch.testing.assert_close(norms(res.delta, norm), torch.full((16,), eps), rtol=1e-5, atol=1e-6)


def test_bim_is_pgd_from_x_with_kurakins_iteration_count():
    x = interior_batch()
    model = BinaryLogistic(16).eval()
    y = torch.zeros(16, dtype=torch.long)
    res = bim(model, x, y, eps=8 / 255)
    assert res.attack == "bim" and res.params["max_iter"] == 10  # ceil(min(8 + 4, 1.25 * 8))
    ref = pgd(model, x, y, eps=8 / 255, eps_step=1 / 255, max_iter=10)
    assert torch.equal(res.x_adv, ref.x_adv)
    torch.testing.assert_close(res.x_adv, x + 8 / 255 * model.w.detach().sign().view(1, 1, 4, 4), rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------- the norm pieces


@pytest.mark.parametrize("norm", ["inf", 2, 1])
def test_projection_lands_in_the_ball_is_idempotent_and_keeps_interior_points(norm):
    g = torch.Generator().manual_seed(0)
    eps = 0.5
    v = torch.randn(40, 3, 5, generator=g) * torch.logspace(-2, 1, 40).view(-1, 1, 1)  # inside and outside
    proj = PROJECT[norm]
    pv = proj(v, eps)
    assert (norms(pv, norm) <= eps * (1 + 1e-6)).all()
    outside = norms(v, norm) > eps
    assert outside.any() and (~outside).any()
    torch.testing.assert_close(norms(pv[outside], norm), torch.full((int(outside.sum()),), eps), rtol=1e-5, atol=0)
    torch.testing.assert_close(proj(pv, eps), pv, rtol=0, atol=1e-6)
    assert torch.equal(pv[~outside], v[~outside])
    assert torch.equal(proj(torch.zeros(2, 4), eps), torch.zeros(2, 4))
    assert torch.equal(proj(v, 0.0), torch.zeros_like(v))


def test_l1_projection_matches_duchi_by_hand_and_a_qp_solver():
    from scipy.optimize import minimize

    # Duchi et al.: u = (3, 1, .5), cumsums (3, 4, 4.5); rho = 1, theta = 3 - 2 = 1 -> (2, 0, 0)
    torch.testing.assert_close(project_l1(torch.tensor([[3.0, 1.0, -0.5]]), 2.0), torch.tensor([[2.0, 0.0, 0.0]]))
    # two equal large coordinates share the budget: theta = (2 + 2 - 1) / 2
    torch.testing.assert_close(project_l1(torch.tensor([[2.0, -2.0, 0.1]]), 1.0), torch.tensor([[0.5, -0.5, 0.0]]))
    rng = np.random.default_rng(0)
    for _ in range(10):
        d = int(rng.integers(3, 9))
        v = rng.normal(size=d) * 2
        eps = float(rng.uniform(0.1, 0.9)) * np.abs(v).sum()
        # min ||a - b - v||^2 over a, b >= 0 with sum(a + b) <= eps: a smooth QP equivalent to the projection
        res = minimize(lambda ab: ((ab[:d] - ab[d:] - v) ** 2).sum(), np.zeros(2 * d),
                       jac=lambda ab: np.concatenate([2 * (ab[:d] - ab[d:] - v), -2 * (ab[:d] - ab[d:] - v)]),
                       bounds=[(0, None)] * (2 * d), method="SLSQP",
                       constraints=[{"type": "ineq", "fun": lambda ab: eps - ab.sum(),
                                     "jac": lambda ab: -np.ones(2 * d)}],
                       options={"ftol": 1e-12, "maxiter": 500})
        ours = project_l1(torch.tensor(v[None], dtype=torch.float64), eps)[0].numpy()
        np.testing.assert_allclose(ours, res.x[:d] - res.x[d:], atol=1e-5)


def test_directions_have_unit_norm_and_the_l1_step_is_sparse_and_box_aware():
    g = torch.Generator().manual_seed(0)
    grad = torch.randn(6, 1, 10, 10, generator=g)
    assert set(linf_direction(grad).unique().tolist()) <= {-1.0, 0.0, 1.0}
    torch.testing.assert_close(l2_direction(grad).flatten(1).norm(dim=1), torch.ones(6))
    e = l1_direction(grad)
    torch.testing.assert_close(e.flatten(1).abs().sum(1), torch.ones(6))
    assert ((e.flatten(1) != 0).sum(1) == 1).all()  # 0.99-quantile of 100 values: the top coordinate
    top = grad.flatten(1).abs().argmax(1)
    assert torch.equal(e.flatten(1).abs().argmax(1), top)
    e10 = l1_direction(grad, quantile=0.9)  # 99 - floor(89.1) = 10 coordinates
    assert ((e10.flatten(1) != 0).sum(1) == 10).all()
    assert torch.equal(e10.sign(), torch.where(e10 != 0, grad.sign(), 0.0))
    # a pixel at 0 whose gradient points down cannot move: the step goes to the next coordinate
    x_adv = torch.full_like(grad, 0.5).flatten(1)
    x_adv[torch.arange(6), top] = torch.where(grad.flatten(1)[torch.arange(6), top] < 0, 0.0, 1.0)
    e_box = l1_direction(grad, x_adv.view_as(grad))
    assert (e_box.flatten(1)[torch.arange(6), top] == 0).all()
    torch.testing.assert_close(e_box.flatten(1).abs().sum(1), torch.ones(6))
    assert torch.equal(l1_direction(torch.zeros(2, 5)), torch.zeros(2, 5))


@pytest.mark.parametrize("norm", ["inf", 2, 1])
def test_random_starts_are_uniform_in_the_ball(norm):
    """For a uniform sample of a d-dim ball, P(||s|| <= r eps) = r^d, so E||s|| = d/(d+1) eps;
    in the Linf box each |s_i| is uniform on [0, eps] (mean eps/2)."""
    eps, d = 0.3, 10
    s = SAMPLE[norm](torch.Size((4000, d)), eps, torch.Generator().manual_seed(0))
    assert (norms(s, norm) <= eps * (1 + 1e-6)).all()
    if norm == "inf":
        assert abs(s.abs().mean().item() - eps / 2) < 0.003
    else:
        assert abs(norms(s, norm).mean().item() / eps - d / (d + 1)) < 0.01
    assert abs(s.mean().item()) < 0.01  # symmetric


# ---------------------------------------------------------------------------- invariants on LeNet-5


@pytest.mark.parametrize("norm, eps", [("inf", 0.1), (2, 1.5), (1, 10.0)])
def test_invariants_box_budget_untouched_input_and_honest_success(lenet, batch, norm, eps):
    x, y = batch
    x_before = x.clone()
    res = pgd(lenet, x, y, eps=eps, eps_step=eps / 4, max_iter=10, norm=norm, random_start=True, seed=3)
    assert torch.equal(x, x_before), "the input must never be modified"
    assert res.x_adv.shape == x.shape and res.x_adv.dtype == x.dtype
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert (res.norms(norm) <= eps + 1e-5).all()
    with torch.no_grad():
        pred = lenet(res.x_adv).argmax(1)  # recomputed independently of the attack's claim
    assert torch.equal(res.success, pred != y) and torch.equal(res.pred, pred)
    # a mid-range budget: the attack does something (LeNet-5 retrained in a fresh clone is not bit-identical
    # from run to run: one fresh clone's fell on 9 of these 32 digits at Linf 0.1, so no tighter bound)
    assert res.success.float().mean() > 0.2
    assert (res.iterations == 10).all() and (res.queries == 10).all()
    assert res.extra["zero_gradient"] == 0 and res.attack == "pgd"


def test_same_seed_same_result_other_seed_other_start(lenet, batch):
    x, y = batch
    kw = dict(eps=1.5, eps_step=0.5, max_iter=3, norm=2, random_start=True)
    a, b, c = pgd(lenet, x, y, seed=7, **kw), pgd(lenet, x, y, seed=7, **kw), pgd(lenet, x, y, seed=8, **kw)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.success, b.success)
    assert not torch.equal(a.x_adv, c.x_adv)


def test_restarts_keep_the_worst_case_per_sample(lenet, batch):
    """Run 0 of restarts=3 is the run of restarts=1 (same seed): per sample, success can only
    be gained, and at equal success the loss (recomputed here) can only grow."""
    x, y = batch
    kw = dict(eps=0.08, eps_step=0.02, max_iter=5, random_start=True, seed=1)
    one, three = pgd(lenet, x, y, **kw), pgd(lenet, x, y, restarts=3, **kw)
    with torch.no_grad():
        l1 = F.cross_entropy(lenet(one.x_adv), y, reduction="none")
        l3 = F.cross_entropy(lenet(three.x_adv), y, reduction="none")
    assert (three.success | ~one.success).all()
    same = three.success == one.success
    assert (l3[same] >= l1[same] - 1e-5).all()
    assert (l3 > l1 + 1e-3).any(), "later restarts should win somewhere"
    assert set(three.extra["restart"].tolist()) <= {0, 1, 2} and (three.extra["restart"] > 0).any()
    assert (three.iterations == 15).all()


def test_early_stop_with_restarts_skips_samples_already_fooled(lenet, batch):
    x, y = batch
    kw = dict(eps=0.08, eps_step=0.02, max_iter=5, random_start=True, seed=1, early_stop=True)
    one, three = pgd(lenet, x, y, **kw), pgd(lenet, x, y, restarts=3, **kw)
    assert (three.success | ~one.success).all()
    assert (three.extra["restart"][one.success] == 0).all()  # fooled in run 0: never attacked again
    assert (three.queries[one.success] == one.queries[one.success]).all()
    assert (three.queries[~one.success] > 5).all() and (three.iterations <= 15).all()


def test_batched_equals_one_batch(lenet, batch):
    """reduction="sum" keeps each sample's gradient independent of the batch it is in."""
    from advkit.attacks import batched

    x, y = batch
    whole = pgd(lenet, x, y, eps=0.1, eps_step=0.025, max_iter=5)
    parts = batched(pgd, lenet, x, y, batch_size=7, progress=False, eps=0.1, eps_step=0.025, max_iter=5)
    torch.testing.assert_close(parts.x_adv, whole.x_adv, rtol=0, atol=1e-6)
    assert torch.equal(parts.success, whole.success)


def test_zero_budget_returns_x(lenet, batch):
    x, y = batch
    res = pgd(lenet, x, y, eps=0.0, eps_step=0.1, max_iter=200, restarts=3, random_start=True, levels=255)
    assert torch.equal(res.x_adv, x)
    with torch.no_grad():
        assert torch.equal(res.success, lenet(x).argmax(1) != y)
    # at once: no iteration, no gradient query was spent
    assert int(res.iterations.sum()) == 0 and int(res.queries.sum()) == 0


def test_targeted_pgd_reaches_the_targets(lenet, batch):
    x, y = batch
    t = random_targets(y, 10, seed=0)
    res = pgd(lenet, x, y, eps=0.3, eps_step=0.05, max_iter=20, target=t)
    with torch.no_grad():
        pred = lenet(res.x_adv).argmax(1)
    assert torch.equal(res.success, pred == t) and res.targeted
    assert res.success.float().mean() > 0.9
    assert (res.norms("inf") <= 0.3 + 1e-6).all()


def test_early_stop_gives_the_same_success_set_for_fewer_passes(lenet, batch):
    x, y = batch
    kw = dict(eps=0.1, eps_step=0.01, max_iter=30, record_loss=True)
    full, early = pgd(lenet, x, y, **kw), pgd(lenet, x, y, early_stop=True, **kw)
    assert torch.equal(early.success, full.success)
    assert early.queries.sum() < full.queries.sum() and (early.iterations <= early.queries).all()
    assert (early.iterations[early.success] < 30).all() and (early.iterations[~early.success] == 30).all()
    # samples never fooled took the same steps as without early stopping
    torch.testing.assert_close(early.x_adv[~early.success], full.x_adv[~full.success], rtol=0, atol=1e-6)
    # the loss history stops (NaN) after the first adversarial iterate
    h = early.extra["loss_history"]
    assert h.shape == (30, 32)
    recorded = (~h.isnan()).sum(0)
    assert torch.equal(recorded[~early.success], torch.full_like(recorded[~early.success], 30))
    assert torch.equal(recorded[early.success], early.iterations[early.success] + 1)


def test_loss_history_starts_at_the_clean_loss_and_rises(lenet, batch):
    x, y = batch
    res = pgd(lenet, x, y, eps=0.1, eps_step=0.01, max_iter=10, record_loss=True)
    h = res.extra["loss_history"]
    assert h.shape == (10, 32) and not h.isnan().any()
    with torch.no_grad():
        torch.testing.assert_close(h[0], F.cross_entropy(lenet(x), y, reduction="none"), rtol=1e-4, atol=1e-5)
    assert ((h[-1] > h[0]).float().mean() > 0.9)


@pytest.mark.parametrize("norm, eps", [("inf", 0.1), (2, 1.5)])
def test_levels_round_to_the_grid_within_the_budget(lenet, batch, norm, eps):
    x, y = batch
    res = pgd(lenet, x, y, eps=eps, eps_step=eps / 4, max_iter=10, norm=norm, levels=255)
    scaled = res.x_adv * 255
    assert torch.allclose(scaled, scaled.round(), atol=1e-4)
    assert (res.norms(norm) <= eps + 1e-5).all()
    with torch.no_grad():
        assert torch.equal(res.success, lenet(res.x_adv).argmax(1) != y)


# ---------------------------------------------------------------------------- peers


def _foolbox_x_adv(model, x, y, norm, eps, eps_step, steps):
    fb = pytest.importorskip("foolbox")
    attack = (fb.attacks.LinfPGD if norm == "inf" else fb.attacks.L2PGD)(
        abs_stepsize=eps_step, steps=steps, random_start=False)
    return attack(fb.PyTorchModel(model, bounds=(0, 1)), x, y, epsilons=eps)[1]


def _art_x_adv(model, x, y, norm, eps, eps_step, steps):
    pytest.importorskip("art")
    from art.attacks.evasion import ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(model, loss=nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10,
                            clip_values=(0.0, 1.0), device_type="cpu")
    attack = ProjectedGradientDescent(clf, norm=np.inf if norm == "inf" else norm, eps=eps, eps_step=eps_step,
                                      max_iter=steps, num_random_init=0, batch_size=len(x), verbose=False)
    return torch.from_numpy(attack.generate(x.numpy(), y.numpy()))


def _acc(model, x_adv, y):
    with torch.no_grad():
        return (model(x_adv).argmax(1) == y).float().mean().item()


@pytest.mark.parametrize("norm, eps", [("inf", 0.1), ("inf", 0.15), (2, 1.5)])
def test_robust_accuracy_no_higher_than_foolbox_and_art(lenet, mnist_test, norm, eps):
    """Same LeNet-5, same 200 MNIST test images, 10 steps of eps/4 from x (no random start):
    advkit's robust accuracy is at most the peers' + 0.5 pp (one image). The budgets leave
    accuracy mid-range (about 65%, 20% and 45%), so the comparison has something to compare."""
    x, y = mnist_test[0][:200], mnist_test[1][:200]
    kw = dict(eps=eps, eps_step=eps / 4, steps=10)
    ours = _acc(lenet, pgd(lenet, x, y, eps=eps, eps_step=eps / 4, max_iter=10, norm=norm).x_adv, y)
    fool = _acc(lenet, _foolbox_x_adv(lenet, x, y, norm, **kw), y)
    art = _acc(lenet, _art_x_adv(lenet, x, y, norm, **kw), y)
    print(f"norm={norm} eps={eps}: robust accuracy advkit {ours:.3f}, foolbox {fool:.3f}, ART {art:.3f}")
    assert 0.1 < ours < 0.9, f"eps={eps} does not leave accuracy mid-range ({ours:.3f})"
    assert ours <= fool + 0.005, f"advkit {ours:.3f} vs foolbox {fool:.3f}"
    assert ours <= art + 0.005, f"advkit {ours:.3f} vs ART {art:.3f}"


def test_defaults_reproduce_arts_projected_gradient_descent(lenet, mnist_test):
    """ART's defaults (eps 0.3, eps_step 0.1, 100 iterations, no random init) on 100 images:
    the same robust accuracy within 0.5 pp, and (same algorithm) nearly the same images."""
    x, y = mnist_test[0][:100], mnist_test[1][:100]
    t0 = time.perf_counter()
    res = pgd(lenet, x, y)
    t_ours = time.perf_counter() - t0
    assert res.params["eps"] == 0.3 and res.params["eps_step"] == 0.1 and res.params["max_iter"] == 100
    t0 = time.perf_counter()
    art = _art_x_adv(lenet, x, y, "inf", eps=0.3, eps_step=0.1, steps=100)
    t_art = time.perf_counter() - t0
    ours, theirs = res.robust_accuracy, _acc(lenet, art, y)
    print(f"robust accuracy advkit {ours:.3f} ({t_ours:.1f} s), ART {theirs:.3f} ({t_art:.1f} s)")
    assert abs(ours - theirs) <= 0.005
    assert (res.x_adv - art).abs().flatten(1).amax(1).median() < 1e-5


# ---------------------------------------------------------------------------- bad input


@pytest.fixture
def xy():
    return torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(8)), torch.tensor([0, 1, 2, 3])


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(eps=-0.1), ValueError, r"eps must be a finite number >= 0"),
    (dict(eps=float("nan")), ValueError, r"eps must be a finite number >= 0"),
    (dict(eps_step=0.0), ValueError, r"eps_step must be a finite number > 0"),
    (dict(eps_step=-0.01), ValueError, r"eps_step must be a finite number > 0"),
    (dict(eps_step="big"), TypeError, r"eps_step must be a number"),
    (dict(max_iter=0), ValueError, r"max_iter must be an int >= 1"),
    (dict(max_iter=2.5), ValueError, r"max_iter must be an int >= 1"),
    (dict(norm=0), ValueError, r"norm must be one of inf, 2, 1"),
    (dict(norm="l3"), ValueError, r"unknown norm"),
    (dict(loss="hinge"), ValueError, r"loss must be 'ce'.*'margin'"),
    (dict(restarts=0), ValueError, r"restarts must be an int >= 1"),
    (dict(restarts=3), ValueError, r"restarts=3 without random_start.*random_start=True"),
    (dict(levels=0), ValueError, r"levels"),
    (dict(norm=1, l1_quantile=1.5), ValueError, r"l1_quantile must be in \[0, 1\]"),
])
def test_bad_arguments_are_refused(small_cnn, xy, kwargs, error, match):
    with pytest.raises(error, match=match):
        pgd(small_cnn, *xy, **{"eps": 0.1, "eps_step": 0.05, "max_iter": 2, **kwargs})


def test_bad_model_images_and_targets_are_refused(small_cnn, xy):
    x, y = xy
    with pytest.raises(ValueError, match=r"target != y"):
        pgd(small_cnn, x, y, max_iter=1, eps_step=0.3, target=y.clone())
    with pytest.raises(ValueError, match=r"pixels in \[0, 1\]"):
        pgd(small_cnn, x * 255, y, max_iter=1, eps_step=0.3)
    small_cnn.train()
    with pytest.raises(ValueError, match=r"training mode"):
        pgd(small_cnn, x, y, max_iter=1, eps_step=0.3)


def test_steps_too_short_to_reach_the_budget_warn(small_cnn, xy):
    with pytest.warns(RuntimeWarning, match=r"never reach the edge of the eps-ball"):
        pgd(small_cnn, *xy, eps=0.3, eps_step=0.01, max_iter=10)


def test_zero_gradient_is_reported():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    with torch.no_grad():
        model[1].weight.zero_()
    with pytest.warns(RuntimeWarning, match="zero input gradient"):
        res = pgd(model, interior_batch(4), torch.zeros(4, dtype=torch.long), eps=0.1, eps_step=0.05, max_iter=3)
    assert res.extra["zero_gradient"] == 4 and torch.equal(res.x_adv, interior_batch(4))


def test_batched_keeps_loss_history_per_sample(lenet, batch):
    """`batched` joins T x N histories along the sample axis, also with a short last batch."""
    from advkit.attacks import batched

    x, y = batch[0][:23], batch[1][:23]
    kw = dict(eps=0.1, eps_step=0.025, max_iter=5, record_loss=True)
    whole = pgd(lenet, x, y, **kw)
    parts = batched(pgd, lenet, x, y, batch_size=10, progress=False, **kw)
    assert parts.extra["loss_history"].shape == whole.extra["loss_history"].shape == (5, 23)
    torch.testing.assert_close(parts.extra["loss_history"], whole.extra["loss_history"], rtol=1e-4, atol=1e-4)
