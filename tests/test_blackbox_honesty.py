"""The threat model is honest: black-box attacks work on models whose gradient is useless, and the
queries they report are the queries the model actually received.

Three wrappers make the gradient useless while keeping (some of) the decisions:

* ``OneHot``: the logits are ``10 * one_hot(argmax)``. The gradient is zero everywhere, and the
  scores say nothing beyond the label. Decision-based attacks (labels only) must work as before.
* ``Staircase``: the input is quantised to 16 grey levels before the model sees it, so the
  gradient with respect to the input is zero almost everywhere, but the scores still move when
  a pixel crosses a step. Score attacks with large moves (Square, the pixel attack) must work.
* ``Detached``: the model is evaluated without autograd, so there is no gradient at all. ZOO's
  finite differences need scores that change under a small ``h``; this is where they must work.

Each wrapper counts the rows it is asked to classify. A white-box attack, or any uncounted
call, would either fail or make the counts disagree.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from advkit import blackbox
from advkit.attacks import fgsm

pytestmark = pytest.mark.usefixtures("one_thread")


class Counting(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.rows = 0

    def forward(self, x):
        self.rows += len(x)
        return self.inner(x)


class OneHot(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return 10.0 * F.one_hot(self.inner(x).argmax(1), 10).float()


class Staircase(nn.Module):
    def __init__(self, inner: nn.Module, levels: int = 16):
        super().__init__()
        self.inner, self.levels = inner, levels

    def forward(self, x):
        return self.inner(torch.floor(x * self.levels).clamp(max=self.levels - 1) / (self.levels - 1))


class Detached(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        with torch.no_grad():
            return self.inner(x.detach())


@pytest.fixture(scope="module")
def images(mnist_test, lenet):
    """Ten test digits that LeNet-5 (and its staircase version) classifies correctly."""
    x, y = mnist_test[0][:200], mnist_test[1][:200]
    with torch.no_grad():
        ok = (lenet(x).argmax(1) == y) & (Staircase(lenet)(x).argmax(1) == y)
    return x[ok][:10], y[ok][:10]


def test_the_wrappers_really_have_useless_gradients(lenet, images):
    x, y = images
    for wrap in (OneHot, Staircase):
        xr = x.clone().requires_grad_(True)
        out = wrap(lenet)(xr)
        loss = F.cross_entropy(out, y)
        grad = torch.autograd.grad(loss, xr, allow_unused=True)[0] if out.requires_grad else None
        assert grad is None or grad.abs().max() == 0, wrap.__name__
    # so white-box FGSM cannot move a single digit of the staircase model
    with pytest.warns(RuntimeWarning, match="zero input gradient"):
        assert fgsm(Staircase(lenet).eval(), x, y, eps=0.3).success_rate == 0.0
    with pytest.raises(RuntimeError):
        fgsm(Detached(lenet).eval(), x, y, eps=0.3)


CASES = {
    "square": (Staircase, lambda m, x, y: blackbox.square(m, x, y, eps=0.3, max_queries=500, progress=False), 0.8),
    "zoo": (Detached, lambda m, x, y: blackbox.zoo(m, x, y, max_queries=4000, lr=0.1, c=10, attack_size=14,
                                                   progress=False), 0.7),
    # through the staircase's quantised scores the pixel attack fooled 1 and 2 of the 5 digits on two retrained LeNet-5s
    "pixel": (Staircase, lambda m, x, y: blackbox.pixel(m, x, y, pixels=3, max_queries=4000, progress=False), 0.2),
    "hop_skip_jump": (OneHot, lambda m, x, y: blackbox.hop_skip_jump(m, x, y, max_queries=800, progress=False), 1.0),
    "boundary": (OneHot, lambda m, x, y: blackbox.boundary(m, x, y, max_queries=800, progress=False), 1.0),
}


# Few-pixel attacks need digits where a few pixels can matter (white-box JSMA needs 8 to 26 pixels
# on the first ten), so the pixel attack gets digits on which 3 pixels fool this LeNet-5
# (conftest.few_pixel_digits).


@pytest.mark.parametrize("name", list(CASES))
def test_query_attacks_work_without_gradients_and_count_every_query(name, lenet, images, mnist_test, request):
    wrap, run, min_success = CASES[name]
    if name == "pixel":
        idx = request.getfixturevalue("few_pixel_digits")
        x, y = mnist_test[0][idx], mnist_test[1][idx]
    else:
        x, y = images
    model = Counting(wrap(lenet)).eval()
    res = run(model, x, y)
    assert model.rows == int(res.queries.sum()), f"{name}: the model saw {model.rows} rows, the attack reports {int(res.queries.sum())}"
    with torch.no_grad():
        pred = wrap(lenet)(res.x_adv).argmax(1)
    assert torch.equal(res.success, pred != y), f"{name}: success must be what the model says on x_adv"
    assert res.success_rate >= min_success, f"{name}: success {res.success_rate:.0%} < {min_success:.0%}"


def test_substitute_works_on_a_one_hot_model_and_counts_training_queries(lenet, images, mnist_test):
    x, y = images
    x_seed, _ = blackbox.seed_set(mnist_test[0][-1000:], mnist_test[1][-1000:], n=100)
    model = Counting(OneHot(lenet)).eval()
    res = blackbox.substitute(model, x, y, x_seed=x_seed, rho=2, epochs=5, eps=0.3, progress=False)
    assert model.rows == int(res.queries.sum()) + res.extra["training_queries"]
    assert res.extra["training_queries"] == 100 * 2 ** 2
    assert res.success_rate >= 0.2, f"transfer from a 400-point substitute: {res.success_rate:.0%}"
