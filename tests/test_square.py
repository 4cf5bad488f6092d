"""Square attack: the threat model (scores only, counted queries), the feasible set, the schedule
and patterns of the official code, closed forms on a linear model, and ART on the same LeNet-5."""

from __future__ import annotations

import math
import random
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from advkit.attacks.core import random_targets
from advkit.blackbox import Oracle, square
from advkit.blackbox.square import l2_side, linf_side, meta_pseudo_gaussian, p_selection
from conftest import linear_model

pytestmark = pytest.mark.usefixtures("one_thread")

EPS = {"inf": 0.3, 2: 2.0}
P = {"inf": math.inf, 2: 2}


class Counting(nn.Module):
    """Counts the rows the wrapped model receives (the ground truth for ``result.queries``)."""

    def __init__(self, model: nn.Module, one_hot: bool = False):
        super().__init__()
        self.model, self.one_hot, self.rows = model, one_hot, 0

    def forward(self, x):
        self.rows += len(x)
        z = self.model(x)
        if self.one_hot:  # flat scores: only the top-1 label survives; no gradient, no slope
            z = 10.0 * nn.functional.one_hot(z.argmax(1), z.shape[1]).to(z)
        return z


@pytest.fixture(scope="module")
def batch(mnist_test):
    x, y = mnist_test
    return x[:20].clone(), y[:20].clone()


def norms(delta, p):
    return delta.flatten(1).norm(p=P[p], dim=1)


# ---------------------------------------------------------------------------- invariants


@pytest.mark.parametrize("norm", ["inf", 2])
def test_stays_in_the_ball_and_box_and_counts_every_query(lenet, batch, norm):
    x, y = batch
    x_before = x.clone()
    counting = Counting(lenet).eval()
    res = square(counting, x, y, eps=EPS[norm], norm=norm, max_queries=100, progress=False)
    assert torch.equal(x, x_before)
    assert (norms(res.x_adv - x, norm) <= EPS[norm] + 1e-6).all()
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert (res.queries <= 100).all()
    assert int(res.queries.sum()) == counting.rows          # every row the model saw, counted
    with torch.no_grad():
        pred = lenet(res.x_adv).argmax(1)
    torch.testing.assert_close(res.pred, pred, rtol=0, atol=0)
    assert torch.equal(res.success, pred != y)
    # a sample stops when it succeeds: clean-misclassified ones at 1 query, failures spend it all
    clean_wrong = lenet(x).argmax(1) != y
    assert (res.queries[clean_wrong] == 1).all()
    assert (res.queries[~res.success] == 100).all()
    assert (res.iterations[~res.success] == 100 - 2).all()
    assert res.extra["out_of_queries"] == int((~res.success).sum())
    assert res.success.any()


def test_already_misclassified_samples_take_one_query(lenet, batch):
    x, y = batch
    wrong = (lenet(x).argmax(1) + 1) % 10                   # every label wrong: all adversarial at once
    res = square(lenet, x, wrong, eps=0.3, max_queries=50, progress=False)
    assert res.success.all() and (res.queries == 1).all() and torch.equal(res.x_adv, x)


def test_reproducible_per_seed_and_seeds_differ(lenet, batch):
    x, y = batch
    a = square(lenet, x, y, eps=0.2, max_queries=30, seed=3, progress=False)
    b = square(lenet, x, y, eps=0.2, max_queries=30, seed=3, progress=False)
    c = square(lenet, x, y, eps=0.2, max_queries=30, seed=4, progress=False)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries, b.queries)
    assert not torch.equal(a.x_adv, c.x_adv)


def test_rounded_scores_still_work(lenet, batch):
    """Scores rounded to 2 decimals make the margin flat (log 1.00 - log 0.00) until a rival class
    reaches 0.005; the attack must cope (ties accepted) and still succeed, within budget."""
    x, y = batch
    oracle = Oracle(lenet, "scores", n=len(x), max_queries=200, decimals=2)
    res = square(oracle, x, y, eps=0.3, max_queries=200, progress=False)
    assert (norms(res.x_adv - x, "inf") <= 0.3 + 1e-6).all()
    assert (res.queries <= 200).all() and torch.equal(res.queries, oracle.queries)
    assert res.success_rate >= 0.5
    assert torch.equal(res.success, res.pred != y)


def test_flat_one_hot_scores_and_logit_oracle(lenet, batch):
    """Only the top-1 label in the scores: random search on ties still finds adversarials, and
    the oracle's count is the model's; a logits oracle is accepted too."""
    x, y = batch
    counting = Counting(lenet, one_hot=True).eval()
    res = square(counting, x, y, eps=0.3, max_queries=300, progress=False)
    assert res.success_rate >= 0.3 and int(res.queries.sum()) == counting.rows
    logits = square(Oracle(lenet, "logits", n=len(x), max_queries=100), x, y, eps=0.3, max_queries=100,
                    progress=False)
    assert logits.success_rate >= 0.9 and logits.params["output"] == "logits"


def test_targeted_uses_cross_entropy_and_reaches_targets(lenet, batch):
    x, y = batch
    t = random_targets(y, 10, seed=1)
    res = square(lenet, x, y, eps=0.3, max_queries=300, target=t, progress=False)
    assert res.params["loss"] == "ce"
    assert torch.equal(res.success, res.pred == t) and res.success_rate >= 0.5
    with torch.no_grad():
        assert torch.equal(lenet(res.x_adv).argmax(1), res.pred)


def test_exhausted_budget_ends_cleanly(lenet, batch):
    x, y = batch
    for q in (1, 2, 3):
        res = square(lenet, x, y, eps=0.1, max_queries=q, progress=False)
        assert (res.queries <= q).all()
        assert res.extra["out_of_queries"] == int((~res.success).sum()) > 0
    # eps = 0: the ball is {x}; one clean query each
    res = square(lenet, x, y, eps=0.0, max_queries=10, progress=False)
    assert torch.equal(res.x_adv, x) and (res.queries == 1).all()


def test_bad_input(lenet, batch):
    x, y = batch
    with pytest.raises(ValueError, match="eps"):
        square(lenet, x, y, eps=-0.1)
    with pytest.raises(ValueError, match="norm"):
        square(lenet, x, y, eps=0.1, norm=1)
    with pytest.raises(ValueError, match="max_queries"):
        square(lenet, x, y, eps=0.1, max_queries=0)
    with pytest.raises(ValueError, match="scores"):
        square(Oracle(lenet, "labels", n=len(x)), x, y, eps=0.1)
    with pytest.raises(ValueError, match="p_init"):
        square(lenet, x, y, eps=0.1, p_init=0.0)
    with pytest.raises(ValueError, match="loss"):
        square(lenet, x, y, eps=0.1, loss="hinge")
    with pytest.raises(ValueError, match="N x C x H x W"):
        square(linear_model(64, 5), x.flatten(1)[:, :64], y, eps=0.1)


# ---------------------------------------------------------------------------- the official pieces


def test_p_selection_is_the_official_schedule():
    # halvings after 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of 10 000 (rescaled)
    expect = {0: 1, 10: 1, 11: 2, 50: 2, 51: 4, 200: 4, 201: 8, 500: 8, 501: 16, 1000: 16, 1001: 32,
              2000: 32, 2001: 64, 4000: 64, 4001: 128, 6000: 128, 6001: 256, 8000: 256, 8001: 512, 9999: 512}
    for it, div in expect.items():
        assert p_selection(0.8, it, 10000) == pytest.approx(0.8 / div)
    assert p_selection(0.8, 2, 1000) == pytest.approx(0.4)        # 2 / 1000 * 10000 = 20
    assert linf_side(0.8, 1, 28, 28) == 25 and linf_side(1.0, 1, 28, 28) == 27 and linf_side(1e-4, 1, 28, 28) == 1
    assert l2_side(0.1, 1, 28, 28) == 9 and l2_side(1e-4, 1, 28, 28) == 3 and l2_side(0.8, 1, 28, 28) == 25


def _official_bump(x, y):
    """Reference transcription (numpy) of the official ``pseudo_gaussian_pert_rectangles``."""
    delta = np.zeros([x, y])
    x_c, y_c = x // 2 + 1, y // 2 + 1
    counter2 = [x_c - 1, y_c - 1]
    for counter in range(0, max(x_c, y_c)):
        delta[max(counter2[0], 0):min(counter2[0] + (2 * counter + 1), x),
              max(0, counter2[1]):min(counter2[1] + (2 * counter + 1), y)] += 1.0 / (counter + 1) ** 2
        counter2[0] -= 1
        counter2[1] -= 1
    return delta / np.sqrt(np.sum(delta ** 2))


@pytest.mark.parametrize("s", [2, 3, 5, 9, 25])
def test_meta_pseudo_gaussian(s):
    """The official ``meta_pseudo_gaussian_pert`` (before its random transpose): a bump of nested
    rectangles weighted 1/(k+1)^2 on the top half, its negative below, unit L2 norm."""
    m = meta_pseudo_gaussian(s)
    ref = np.zeros([s, s])
    ref[: s // 2] = _official_bump(s // 2, s)
    ref[s // 2:] = -_official_bump(s - s // 2, s)
    ref /= np.sqrt(np.sum(ref ** 2))
    torch.testing.assert_close(m, torch.from_numpy(ref))
    assert m.norm().item() == pytest.approx(1.0)
    top, bottom = m[: s // 2], m[s // 2:]
    assert (top > 0).all() and (bottom < 0).all()
    if s % 2:  # odd windows (every L2 update): each half is symmetric left-right, peaked at the centre
        torch.testing.assert_close(top, top.flip(1))
        assert top[(s // 2) // 2, s // 2] == top.max()


# ---------------------------------------------------------------------------- closed forms


def interior(n=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return 0.3 + 0.4 * torch.rand(n, 1, 8, 8, generator=g)   # at least 0.3 from the box edges


def test_linf_iterates_sit_on_vertices_of_the_box():
    """Every Linf candidate sets each pixel to clip(x +- eps): with the box far away, |delta| = eps
    exactly on every pixel, whatever was accepted; on MNIST, |delta| = eps or the pixel is at 0/1."""
    model = linear_model(64, 5, seed=0)
    x = interior()
    y = model(x).argmax(1)
    for q in (3, 40):      # one update (clean, init, 1 candidate), then many
        res = square(model, x, y, eps=0.1, max_queries=q, progress=False)
        torch.testing.assert_close(res.delta.abs(), torch.full_like(x, 0.1), rtol=0, atol=1e-6)
        assert (res.iterations == q - 2)[~res.success].all()


def test_linf_vertices_on_mnist(lenet, batch):
    x, y = batch
    res = square(lenet, x, y, eps=0.3, max_queries=60, progress=False)
    d = res.delta.abs()
    attacked = res.queries > 1
    on_vertex = ((d - 0.3).abs() < 1e-6) | (res.x_adv == 0) | (res.x_adv == 1)
    assert on_vertex[attacked].all()


def test_l2_iterates_stay_on_the_sphere_when_the_box_does_not_bind():
    """The L2 init and every update rescale delta to ||delta||_2 = eps; far from the box the clip
    does nothing, so each kept point is on the sphere (the update only moves mass between windows)."""
    model = linear_model(64, 5, seed=2)
    x = interior(seed=3)
    y = model(x).argmax(1)
    res = square(model, x, y, eps=0.25, norm=2, max_queries=50, progress=False)
    torch.testing.assert_close(norms(res.delta, 2), torch.full((len(x),), 0.25), rtol=0, atol=1e-6)
    assert (res.extra["accepted"] > 0).any()


def test_accepts_only_non_increasing_loss(lenet, batch):
    """The kept loss never increases (record_loss), and it is the loss of the returned point."""
    x, y = batch
    res = square(lenet, x, y, eps=0.2, max_queries=40, progress=False, record_loss=True)
    h = res.extra["loss_history"]
    steps = h[1:] - h[:-1]
    assert (steps[~steps.isnan()] <= 0).all()
    with torch.no_grad():
        logp = lenet(res.x_adv).log_softmax(1)
    own = logp.gather(1, y[:, None]).squeeze(1)
    other = logp.scatter(1, y[:, None], -math.inf).amax(1)
    attacked = res.queries > 1
    torch.testing.assert_close(res.extra["loss"][attacked], (own - other)[attacked], rtol=0, atol=1e-4)


# ---------------------------------------------------------------------------- peer: ART


def _art_square(model, x, y, *, norm, eps, max_queries, seed=0):
    """ART's SquareAttack with the same candidate budget: ART evaluates the init and then one
    candidate per iteration (its other model calls re-query points it already saw), so
    ``max_iter = max_queries - 2`` matches our clean query + init + ``max_queries - 2`` updates."""
    from art.attacks.evasion import SquareAttack
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10,
                            clip_values=(0.0, 1.0))
    np.random.seed(seed)
    random.seed(seed)
    attack = SquareAttack(clf, norm=np.inf if norm == "inf" else 2, max_iter=max_queries - 2, eps=eps,
                          p_init=0.8 if norm == "inf" else 0.1, nb_restarts=1, batch_size=128, verbose=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ART's L2 step divides by a zero norm on some windows
        x_adv = torch.from_numpy(attack.generate(x.numpy(), y.numpy()))
    with torch.no_grad():
        return x_adv, (model(x_adv).argmax(1) != y).float().mean().item()


@pytest.mark.parametrize("norm,eps,max_queries,n", [("inf", 0.3, 300, 20), ("inf", 0.2, 300, 50), (2, 2.0, 600, 20)])
def test_peer_art_square_attack(lenet, mnist_test, norm, eps, max_queries, n):
    """Same LeNet-5, images, candidate budget, p_init and margin loss: advkit's success rate is at
    least ART's (measured, seed 0: Linf 0.3: 1.00 vs 1.00; Linf 0.2 on 50 images: 0.76 vs 0.68;
    L2 2.0, 600 queries: 0.25 vs 0.15)."""
    pytest.importorskip("art")
    x, y = mnist_test[0][:n], mnist_test[1][:n]
    x_art, art_rate = _art_square(lenet, x, y, norm=norm, eps=eps, max_queries=max_queries)
    res = square(lenet, x, y, eps=eps, norm=norm, max_queries=max_queries, progress=False)
    assert (norms(x_art - x, norm) <= eps + 1e-5).all()     # ART ran the same threat model
    assert res.success_rate >= art_rate, (res.success_rate, art_rate)
