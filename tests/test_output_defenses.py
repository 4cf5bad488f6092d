"""Output-side defenses: the reverse sigmoid against ART's, the top-1 kept, score attacks slowed,
label-only attacks unaffected (zoo LeNet-5, MNIST test images, measured margins)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advkit.blackbox import Oracle
from advkit.blackbox.decision import hop_skip_jump
from advkit.blackbox.square import square
from advkit.blackbox.zoo_attack import zoo as zoo_attack
from advkit.defenses.output import (
    DEFENSES, ReverseSigmoid, defended_oracle, one_hot_scores, reverse_sigmoid, round_scores,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _probs(n=200, k=10, seed=0, dtype=torch.float64):
    """Random probability rows of every kind a model produces: flat, peaked, saturated (exact 0 and 1)."""
    g = torch.Generator().manual_seed(seed)
    spread = torch.logspace(-1, 2, n, dtype=torch.float64)[:, None]
    logits = torch.randn(n, k, generator=g, dtype=torch.float64) * spread
    p = logits.softmax(1)
    p[0] = 0.0
    p[0, k - 1] = 1.0      # one-hot: exact 0s and an exact 1
    p[1] = 1.0 / k         # uniform
    return p.to(dtype)


@pytest.fixture(scope="module")
def lenet_probs(lenet, mnist_test):
    x, _ = mnist_test
    with torch.no_grad():
        return lenet(x).softmax(1)


# ---------------------------------------------------------------------------- the formula vs ART


@pytest.mark.parametrize("beta,gamma", [(1.0, 0.1), (0.5, 0.5), (2.0, 0.05), (1.0, 1.0)])
def test_reverse_sigmoid_equals_art(beta, gamma):
    from art.defences.postprocessor import ReverseSigmoid as ARTReverseSigmoid

    p = _probs()
    ours = reverse_sigmoid(beta=beta, gamma=gamma)(p)
    theirs = ARTReverseSigmoid(beta=beta, gamma=gamma)(p.numpy())
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=0, atol=1e-12)
    # a binary model's single positive-class column: ART's second branch
    p1 = _probs(k=2)[:, 1:]
    np.testing.assert_allclose(reverse_sigmoid(beta=beta, gamma=gamma)(p1).numpy(),
                               ARTReverseSigmoid(beta=beta, gamma=gamma)(p1.numpy()), rtol=0, atol=1e-12)


def test_reverse_sigmoid_closed_form_values_and_dtype():
    """q_j = normalise(p_j - beta (sigmoid(gamma logit p_j) - 1/2)); float32 in, float32 out (computed in float64)."""
    p = torch.tensor([[0.98, 0.02]])
    r = torch.sigmoid(0.1 * torch.log(p.double() / (1 - p.double()))) - 0.5
    q = (p.double() - r) / (p.double() - r).sum()
    out = reverse_sigmoid()(p)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, q.float())
    torch.testing.assert_close(out.sum(1), torch.ones(1))
    # the deception: q is not monotone in p near 1 (0.99 -> 0.877, 1 - 1e-9 -> 0.612 before renormalising)
    rs = ReverseSigmoid()
    raw = rs._perturb(torch.tensor([0.9, 0.99, 1 - 1e-9], dtype=torch.float64))
    assert raw[1] > raw[2] and raw[1] > raw[0]


def test_reverse_sigmoid_top1_bound_and_its_counterexample():
    """beta=1, gamma=0.1: argmax kept whenever p_top >= 0.3755; below, a class with p <= 1e-9 (q = 0.388) can win."""
    g = torch.Generator().manual_seed(1)
    rows = []
    for top in torch.linspace(0.3755, 1.0, 400, dtype=torch.float64):
        rest = torch.rand(9, generator=g, dtype=torch.float64) ** 30  # mostly tiny, some moderate
        rest[torch.randint(0, 9, (1,), generator=g)] = 0.0           # one exactly 0 (q = 0.388)
        rest = rest / rest.sum() * (1 - top) if rest.sum() > 0 else rest
        rows.append(torch.cat([top.view(1), rest]))
    p = torch.stack(rows)
    p = p[p[:, 1:].max(1).values < p[:, 0]]  # keep the rows whose top class is class 0
    assert len(p) > 300
    assert (reverse_sigmoid()(p).argmax(1) == 0).all()
    flat = torch.tensor([[0.34, 0.33, 0.33 - 7e-10] + [1e-10] * 7], dtype=torch.float64)
    assert reverse_sigmoid()(flat).argmax(1).item() == 3  # honest: the defense can change a 3-way tie's label


# ---------------------------------------------------------------------------- top-1 on MNIST


def test_output_defenses_keep_the_top1_on_mnist(lenet_probs):
    """All 10,000 test images: reverse sigmoid and one-hot keep every top-1; rounding to 2 decimals
    changes it only where it ties the top two (measured: 3 images)."""
    top = lenet_probs.argmax(1)
    assert (reverse_sigmoid()(lenet_probs).argmax(1) == top).all()
    assert (one_hot_scores()(lenet_probs).argmax(1) == top).all()
    rounded = round_scores(2)(lenet_probs)
    changed = rounded.argmax(1) != top
    assert changed.sum() <= 10
    two = rounded[changed].topk(2, dim=1).values
    assert (two[:, 0] == two[:, 1]).all()  # every change is a tie created by rounding


def test_round_scores_is_the_oracles_decimals(lenet, mnist_test):
    x = mnist_test[0][:64]
    a = Oracle(lenet, "scores", n=64, decimals=2)(x)
    b = Oracle(lenet, "scores", n=64, postprocess=round_scores(2))(x)
    c = defended_oracle(lenet, "rounding", n=64, decimals=2)(x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, c, rtol=0, atol=0)


def test_defended_oracle_api(lenet, mnist_test):
    x = mnist_test[0][:8]
    with torch.no_grad():
        p = lenet(x).softmax(1)
    for name in DEFENSES:
        o = defended_oracle(lenet, name, n=8, max_queries=5)
        ans = o(x)
        assert o.queries.tolist() == [1] * 8 and o.max_queries == 5
        assert (o.labels(ans) == p.argmax(1)).all()
    assert defended_oracle(lenet, "labels", n=8).output == "labels"
    torch.testing.assert_close(defended_oracle(lenet, "reverse_sigmoid", n=8, beta=0.5, gamma=0.2)(x),
                               reverse_sigmoid(0.5, 0.2)(p))
    torch.testing.assert_close(defended_oracle(lenet, None, n=8)(x), p)
    torch.testing.assert_close(defended_oracle(lenet, lambda q: q.flip(1), n=8)(x), p.flip(1))
    with pytest.raises(ValueError, match="defense must be one of"):
        defended_oracle(lenet, "blur", n=8)
    with pytest.raises(ValueError, match="beta must be a positive"):
        reverse_sigmoid(beta=0.0)
    with pytest.raises(ValueError, match="decimals"):
        round_scores(-1)
    with pytest.raises(ValueError, match="N x K"):
        reverse_sigmoid()(torch.rand(3))
    with pytest.raises(ValueError, match="scores"):  # a score attack cannot run on a labels oracle
        square(defended_oracle(lenet, "labels", n=8, max_queries=10), x, mnist_test[1][:8], eps=0.1,
               max_queries=10, progress=False)


# ---------------------------------------------------------------------------- what they buy


@pytest.fixture(scope="module")
def batch(mnist_test):
    x, y = mnist_test
    return x[:20], y[:20]


def test_score_attacks_are_slowed(lenet, batch):
    """Square (Linf 0.2, 300 queries, 20 images), measured success: none 0.70, reverse sigmoid 0.05,
    one-hot 0.10 (rounding to 2 decimals: 0.55, a small effect on a search that accepts ties).
    ZOO-ADAM (4,000 queries, 10 images, c=10, lr=0.1): none 0.90, rounding 0.10, reverse sigmoid 0.00
    (finite differences of h = 1e-4 vanish under rounding and point the wrong way under the reverse sigmoid)."""
    x, y = batch

    def sq(defense):
        o = defended_oracle(lenet, defense, n=len(x), max_queries=300)
        return square(o, x, y, eps=0.2, max_queries=300, progress=False).success_rate

    none = sq("none")
    assert none >= 0.6
    for defense in ("reverse_sigmoid", "one_hot"):
        assert sq(defense) <= none - 0.4, defense

    x, y = x[:10], y[:10]

    def zo(defense):
        o = defended_oracle(lenet, defense, n=len(x), max_queries=4000)
        return zoo_attack(o, x, y, max_queries=4000, c=10, lr=0.1, progress=False).success_rate

    none = zo("none")
    assert none >= 0.8
    for defense in ("rounding", "reverse_sigmoid"):
        assert zo(defense) <= none - 0.5, defense


def test_label_only_attack_goes_through(lenet, batch):
    """HopSkipJump (L2, 1,000 queries, 20 images) needs only the top-1, which every output defense keeps:
    measured median L2 3.23 undefended, labels-only and reverse sigmoid (identical runs), 3.16 with rounding
    (its ties change a few labels near the boundary); success 1.00 and 0.35-0.40 within L2 <= 3 for all."""
    x, y = batch
    runs = {}
    for defense in ("none", "labels", "rounding", "reverse_sigmoid"):
        o = defended_oracle(lenet, defense, n=len(x), max_queries=1000)
        runs[defense] = hop_skip_jump(o, x, y, max_queries=1000, progress=False)
    base = runs["none"]
    base_med = base.norms(2).median().item()
    base_at3 = (base.success & (base.norms(2) <= 3.0)).float().mean().item()
    for defense, r in runs.items():
        assert r.success_rate == base.success_rate == 1.0, defense
        assert abs(r.norms(2).median().item() - base_med) <= 0.1 * base_med, defense
        assert abs((r.success & (r.norms(2) <= 3.0)).float().mean().item() - base_at3) <= 0.1, defense
        assert (r.queries <= 1000).all()
    for defense in ("labels", "reverse_sigmoid"):  # the top-1 never changed on the way: the very same run
        torch.testing.assert_close(runs[defense].x_adv, base.x_adv, rtol=0, atol=0)
