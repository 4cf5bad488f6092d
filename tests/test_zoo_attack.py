"""ZOO: the finite-difference gradient against autograd (closed forms), success and honesty on
the zoo's MNIST CNN, the peer comparison with ART's ZooAttack at an equal query budget, the
flat-score fallback, budgets and bad input."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import linear_model
from torch import nn

from advkit.blackbox import Oracle
from advkit.blackbox.zoo_attack import fd_gradient, zoo

pytestmark = pytest.mark.usefixtures("one_thread")

H = 1e-4
# The measured budget on the zoo's "cnn" (first 20 MNIST test digits): with ADAM steps of 0.1 on a
# 14 x 14 attack space (196 coordinates, 2 x 2 blocks), every digit falls within 5 iterations of
# 2 * 128 + 1 queries (1286 queries); the paper's lr = 0.01 needs about 20x more.
BUDGET = 1500
CNN_RUN = dict(max_queries=BUDGET, lr=0.1, c=10.0, attack_size=14, progress=False)


def zoo_loss_gradient(model, x, x0, y, *, c, kappa=0.0, target=None):
    """Autograd of ZOO's loss ||x - x0||^2 + c * max(log F_y - max_{j!=y} log F_j, -kappa)."""
    x = x.detach().clone().requires_grad_(True)
    logp = model(x).log_softmax(1)
    lab = y if target is None else target
    own = logp.gather(1, lab[:, None]).squeeze(1)
    other = logp.scatter(1, lab[:, None], -math.inf).amax(1)
    margin = own - other if target is None else other - own
    loss = (x - x0).flatten(1).square().sum(1) + c * margin.clamp_min(-kappa)
    (g,) = torch.autograd.grad(loss.sum(), x)
    return g.flatten(1)


def interior(n=8, shape=(1, 8, 8), seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x0 = (0.25 + 0.5 * torch.rand(n, *shape, generator=g)).to(dtype)
    x = x0 + (0.05 * torch.randn(n, *shape, generator=g)).to(dtype)
    return x0, x


class Counting(nn.Module):
    """Counts the rows it is asked about (the attack may only reach the model through the oracle)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.rows = model, 0

    def forward(self, x):
        self.rows += len(x)
        return self.model(x)


class CountingOracle(Oracle):
    """An oracle that also counts how often it is called (one call may hold many rows)."""

    calls = 0

    def __call__(self, x, idx=None):
        self.calls += 1
        return super().__call__(x, idx)


class Staircase(nn.Module):
    """A non-differentiable input transform: the model sees x rounded to `levels` steps."""

    def __init__(self, model: nn.Module, levels: int):
        super().__init__()
        self.model, self.levels, self.rows = model, levels, 0

    def forward(self, x):
        self.rows += len(x)
        return self.model(torch.round(x * self.levels) / self.levels)


# ---------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize("output", ["scores", "logits"])
@pytest.mark.parametrize("targeted", [False, True])
def test_fd_gradient_equals_autograd_on_a_linear_model(output, targeted):
    """The margin is linear (log F_a - log F_b = z_a - z_b) and the distance quadratic, so the symmetric
    difference is exact wherever the runner-up class does not change within +-h: only rounding is left."""
    model = linear_model(64, 5, seed=0).double()
    x0, x = interior()
    with torch.no_grad():
        z = model(x)
    y = z.argmax(1)
    target = (y + 1) % 5 if targeted else None
    top2 = z.topk(3, dim=1).values
    w = model[1].weight.detach()
    assert ((top2[:, 1] - top2[:, 2]) > 4 * H * w.abs().max()).all(), "test set-up: no runner-up change within h"
    oracle = CountingOracle(model, output, n=len(x))
    coords = torch.arange(64)
    est = fd_gradient(oracle, x, y, coords, x0=x0, c=2.5, h=H, target=target)
    ref = zoo_loss_gradient(model, x, x0, y, c=2.5, target=target)
    torch.testing.assert_close(est, ref, rtol=0, atol=1e-8)
    assert oracle.calls == 1 and torch.equal(oracle.queries, torch.full((len(x),), 2 * 64))  # 2B rows per image


def test_fd_gradient_equals_autograd_on_a_smooth_cnn():
    """Smooth model (tanh). Truncation error of the symmetric difference: h^2 / 6 times the third
    derivative; rounding error: each of the two losses carries ~eps * c * |log p|, i.e. up to
    c * eps * max|log p| / h on their quotient. In float64 at h = 1e-4 both are tiny (< 1e-6
    relative); in float32 rounding dominates (~1e-2 relative at h = 1e-4) and stays within its
    bound, and h = 1e-2 brings it below 1e-3."""
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(8 * 64, 10)).eval()
    x0, x = interior()
    coords = torch.randperm(64, generator=torch.Generator().manual_seed(0))[:40]
    c = 3.0

    def errors(dtype, h):
        model, xd, x0d = cnn.to(dtype), x.to(dtype), x0.to(dtype)
        with torch.no_grad():
            y = model(x0d).argmax(1)
            logp = model(xd).log_softmax(1).abs().amax()
        est = fd_gradient(model, xd, y, coords, x0=x0d, c=c, h=h)
        ref = zoo_loss_gradient(model, xd, x0d, y, c=c)[:, coords]
        rel = ((est - ref).norm(dim=1) / ref.norm(dim=1)).max().item()
        return (est - ref).abs().max().item(), rel, c * torch.finfo(dtype).eps * logp.item() / h

    _, rel64, _ = errors(torch.float64, H)
    assert rel64 < 1e-6
    err32, rel32, bound32 = errors(torch.float32, H)
    assert err32 <= bound32, (err32, bound32)
    _, rel32_wide, _ = errors(torch.float32, 1e-2)
    assert rel32_wide < 1e-3


def test_fd_gradient_is_one_sided_at_the_box_and_zero_for_f_beyond_kappa():
    model = linear_model(64, 5, seed=0).double()
    x0, x = interior()
    with torch.no_grad():
        y = model(x0).argmax(1)
    # saturated pixels: x = x0 = 0 on the first 8 coordinates; the difference is one-sided there
    x0s, xs = x0.clone().flatten(1), x.clone().flatten(1)
    x0s[:, :8], xs[:, :8] = 0.0, 0.0
    x0s, xs = x0s.view_as(x0), xs.view_as(x)
    est = fd_gradient(model, xs, y, torch.arange(64), x0=x0s, c=2.0, h=H)
    ref = zoo_loss_gradient(model, xs, x0s, y, c=2.0)
    # the linear part is exact; the distance part's forward difference ((h)^2 - 0) / h errs by h
    torch.testing.assert_close(est[:, :8], ref[:, :8], rtol=0, atol=H + 1e-8)
    torch.testing.assert_close(est[:, 8:], ref[:, 8:], rtol=0, atol=1e-8)
    # once the (untargeted) margin is below -kappa, f is flat: only the distance term is left, 2 (x - x0)
    z = model(x).detach()
    wrong = z.argsort(1)[:, -2]                    # pretend the runner-up is the true class
    top = z.topk(2, dim=1).values
    assert ((top[:, 0] - top[:, 1]) > 4 * H * model[1].weight.abs().max()).all(), "test set-up: margin < -2h|w|"
    est = fd_gradient(model, x, wrong, torch.arange(64), x0=x0, c=2.0, kappa=0.0, h=H)
    torch.testing.assert_close(est, 2 * (x - x0).flatten(1), rtol=0, atol=1e-8)


def test_fd_gradient_validates_its_arguments():
    model = linear_model(64, 5).double()
    x0, x = interior()
    y = torch.zeros(len(x), dtype=torch.long)
    with pytest.raises(ValueError, match="coords must index"):
        fd_gradient(model, x, y, torch.tensor([64]))
    with pytest.raises(TypeError, match="integer"):
        fd_gradient(model, x, y, torch.tensor([0.5]))
    with pytest.raises(ValueError, match="N x B"):
        fd_gradient(model, x, y, torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="h must be"):
        fd_gradient(model, x, y, torch.arange(3), h=0.0)
    with pytest.raises(ValueError, match="this attack needs an oracle answering"):
        fd_gradient(Oracle(model, "labels", n=len(x)), x, y, torch.arange(3))


def test_on_a_linear_model_zoo_never_beats_the_minimal_distance_and_gets_close_to_it():
    """Binary linear model, all coordinates every iteration: ZOO-ADAM is then ADAM on the exact gradient.
    No adversarial can be closer than |f| / ||w|| (a check that success is honest); with the binary
    search on c the found distance approaches that optimum (median within 5%; samples whose boundary is
    closer than a few ADAM steps overshoot it, the resolution limit cw.py describes)."""
    g = torch.Generator().manual_seed(3)
    w = torch.randn(64, generator=g, dtype=torch.float64) / 8
    lin = nn.Linear(64, 2).double()
    with torch.no_grad():
        lin.weight.copy_(torch.stack([torch.zeros(64, dtype=torch.float64), w]))
        lin.bias.copy_(torch.tensor([0.0, -0.5 * w.sum().item()]))
    model = nn.Sequential(nn.Flatten(), lin).eval()
    x = (0.3 + 0.4 * torch.rand(16, 1, 8, 8, generator=g)).double()
    with torch.no_grad():
        f = model(x)
    y = f.argmax(1)
    dist = (f[:, 1] - f[:, 0]).abs() / w.norm()
    res = zoo(model, x, y, max_queries=20_000, c=1.0, lr=0.003, coords_per_step=64, binary_search_steps=6,
              abort_early=False, progress=False)
    assert res.success.all()
    l2 = res.norms(2)
    assert (l2 >= dist - 1e-9).all()
    ratio = (l2 / dist).median().item()
    print(f"linear model: median L2 / optimal = {ratio:.3f}, queries {res.queries.float().mean():.0f}")
    assert ratio < 1.05


# ---------------------------------------------------------------------------- the zoo's MNIST CNN


@pytest.fixture(scope="module")
def cnn(staged):
    from advkit import zoo as model_zoo

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ADVKIT_DATA", str(staged))
        return model_zoo.load("cnn", device="cpu", progress=False)


@pytest.fixture(scope="module")
def digits(mnist_test):
    x, y = mnist_test
    return x[:20], y[:20]


@pytest.fixture(scope="module")
def cnn_run(cnn, digits):
    """advkit's ZOO on the first 20 digits at BUDGET queries each, the model behind a row counter."""
    x, y = digits
    counted = Counting(cnn).eval()
    x_before = x.clone()
    res = zoo(counted, x, y, **CNN_RUN)
    assert torch.equal(x, x_before), "the input must never be modified"
    return res, counted.rows


def test_zoo_fools_the_cnn_within_the_measured_budget(cnn, digits, cnn_run):
    (x, y), (res, rows) = digits, cnn_run
    with torch.no_grad():
        pred = cnn(res.x_adv).argmax(1)                       # rechecked, outside the attack
    assert torch.equal(res.pred, pred) and torch.equal(res.success, pred != y)
    l2, q = res.norms(2)[res.success], res.queries.float()
    print(f"ZOO on cnn, {len(x)} digits, budget {BUDGET}: success {res.success_rate:.2f}, median L2 "
          f"{l2.median():.3f}, mean queries {q.mean():.0f}, median queries to success "
          f"{res.extra['queries_to_success'][res.success].float().median():.0f}")
    assert res.success_rate >= 0.9
    assert (res.queries <= BUDGET).all() and int(res.queries.sum()) == rows
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert (res.extra["queries_to_success"][res.success] <= res.queries[res.success]).all()
    assert res.params["max_queries"] == BUDGET and res.params["output"] == "scores"


def test_zoo_beats_art_zooattack_at_the_same_query_budget(cnn, digits, cnn_run):
    """Same weights, the same 10 digits, the same per-image budget, lr, c, B = nb_parallel and h.
    ART spends bss * max_iter * (2 * nb_parallel + 1) queries per image plus one final prediction
    (counted here by a row-counting module); its max_iter is the largest that fits the budget. ART's
    use_resize would work on a 32 x 32 space (larger than the 28 x 28 digit), so it runs at full size."""
    pytest.importorskip("art")
    from art.attacks.evasion import ZooAttack
    from art.estimators.classification import PyTorchClassifier
    import numpy as np

    (x, y), (ours, _) = digits, cnn_run
    n, B = 10, 128
    x, y = x[:n], y[:n]
    counted = Counting(cnn).eval()
    clf = PyTorchClassifier(model=counted, loss=nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10,
                            clip_values=(0.0, 1.0))
    max_iter = (BUDGET - 1) // (2 * B + 1)
    np.random.seed(0)
    attack = ZooAttack(clf, confidence=0.0, learning_rate=CNN_RUN["lr"], max_iter=max_iter, binary_search_steps=1,
                       initial_const=CNN_RUN["c"], nb_parallel=B, variable_h=H, use_resize=False,
                       use_importance=False, batch_size=1, verbose=False)
    x_art = torch.from_numpy(attack.generate(x.numpy(), y.numpy()))
    art_queries = counted.rows / n
    with torch.no_grad():
        ok_art = cnn(x_art).argmax(1) != y
    ok_ours = ours.success[:n]
    print(f"success at {BUDGET} queries/image: advkit {ok_ours.float().mean():.2f} (mean queries "
          f"{ours.queries[:n].float().mean():.0f}), ART {ok_art.float().mean():.2f} ({art_queries:.0f})")
    assert art_queries <= BUDGET and (ours.queries[:n] <= BUDGET).all()
    assert ok_ours.float().mean() >= ok_art.float().mean()


# ---------------------------------------------------------------------------- behaviour on small models


@pytest.fixture
def small():
    model = linear_model(64, 5, seed=2)
    g = torch.Generator().manual_seed(4)
    x = 0.2 + 0.6 * torch.rand(6, 1, 8, 8, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def test_one_oracle_call_per_iteration_for_all_images(small):
    model, x, y = small
    oracle = CountingOracle(model, "scores", n=len(x), max_queries=600)
    res = zoo(oracle, x, y, lr=0.05, c=5.0, coords_per_step=16, progress=False)
    # the clean query, one call per iteration for all active images, and one "last look" call at the
    # final points of the images that stop together (after the same number of iterations)
    stops = len(torch.unique(res.iterations[res.iterations > 0]))
    assert oracle.calls == 1 + int(res.iterations.max()) + stops


def test_same_seed_same_result_other_seed_other_path(small):
    model, x, y = small
    kw = dict(max_queries=600, lr=0.05, c=5.0, coords_per_step=16, progress=False)
    a, b, c = zoo(model, x, y, **kw), zoo(model, x, y, **kw), zoo(model, x, y, seed=1, **kw)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries, b.queries)
    assert not torch.equal(a.x_adv, c.x_adv)


def test_misclassified_samples_stop_after_the_clean_query(small):
    model, x, y = small
    y = y.clone()
    y[:2] = (y[:2] + 1) % 5                                   # the model "misclassifies" these two
    counted = Counting(model).eval()
    res = zoo(counted, x, y, max_queries=600, lr=0.05, c=5.0, coords_per_step=16, progress=False)
    assert torch.equal(res.queries[:2], torch.ones(2, dtype=torch.long))
    assert torch.equal(res.x_adv[:2], x[:2]) and res.success[:2].all()
    assert int(res.queries.sum()) == counted.rows


def test_budget_exhaustion_stops_cleanly_and_is_reported(small):
    model, x, y = small
    res = zoo(model, x, y, max_queries=40, lr=0.001, c=0.1, coords_per_step=16, progress=False)
    assert torch.equal(res.queries, torch.full((len(x),), 40))   # the last step runs until the budget ends
    assert res.extra["out_of_queries"] == int((~res.success).sum()) > 0
    # a budget too small for one iteration (centre + one pair): only the clean query is asked
    for budget in (1, 2, 3, 4):   # no room for an iteration (centre + one pair) and the check of its update
        tiny = zoo(model, x, y, max_queries=budget, coords_per_step=16, progress=False)
        assert torch.equal(tiny.queries, torch.ones(len(x), dtype=torch.long)) and torch.equal(tiny.x_adv, x)
    # 5: the clean query, one iteration with a single pair (3 rows), and the check of the updated point
    five = zoo(model, x, y, max_queries=5, coords_per_step=16, progress=False)
    assert torch.equal(five.queries, torch.full((len(x),), 5)) and five.extra["out_of_queries"] == len(x)
    assert torch.equal(five.iterations, torch.ones(len(x), dtype=torch.long))


def test_a_shared_oracle_brings_its_budget_and_counts_every_query(small):
    model, x, y = small
    oracle = Oracle(model, "logits", n=len(x), max_queries=500)
    res = zoo(oracle, x, y, max_queries=None, lr=0.05, c=5.0, coords_per_step=16, progress=False)
    assert torch.equal(res.queries, oracle.queries) and (res.queries <= 500).all()
    assert res.params["output"] == "logits" and res.params["max_queries"] == 500


def test_targeted_zoo_reaches_the_targets(small):
    model, x, y = small
    target = (y + 2) % 5
    res = zoo(model, x, y, max_queries=3000, lr=0.05, c=10.0, coords_per_step=32, target=target, progress=False)
    with torch.no_grad():
        pred = model(res.x_adv).argmax(1)
    assert torch.equal(res.success, pred == target) and res.success.all()


def test_flat_differences_widen_h_and_a_staircase_input_is_still_fooled():
    """The model sees x rounded to 1/8 steps: at h = 1e-4 almost every difference is exactly zero,
    so ZOO widens h; it still succeeds, and every row the model saw was counted."""
    model = Staircase(linear_model(64, 5, seed=2), levels=8).eval()
    g = torch.Generator().manual_seed(4)
    x = 0.2 + 0.6 * torch.rand(6, 1, 8, 8, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    model.rows = 0
    res = zoo(model, x, y, max_queries=2000, lr=0.05, c=10.0, coords_per_step=16, progress=False)
    with torch.no_grad():
        assert torch.equal(res.success, model(res.x_adv).argmax(1) != y)
    model.rows -= len(x)
    assert res.success.all() and int(res.queries.sum()) == model.rows
    assert (res.extra["h"] >= 1e-2).all()


def test_attack_space_reduction_moves_whole_blocks(small):
    """attack_size=4 on 8 x 8 images: x_adv = clip(x0 + U(delta)), U the 2 x 2 nearest upsampling, so
    within a block every pixel not clipped at 0 or 1 moved by the same amount."""
    model, x, y = small
    res = zoo(model, x, y, max_queries=400, lr=0.05, c=5.0, coords_per_step=8, attack_size=4, progress=False)
    blocks = lambda t: t[:, 0].unfold(1, 2, 2).unfold(2, 2, 2).reshape(len(t), 16, 4)  # noqa: E731
    delta, xa = blocks(res.delta), blocks(res.x_adv)
    inside = (xa > 0) & (xa < 1)
    hi = torch.where(inside, delta, -math.inf).amax(2)
    lo = torch.where(inside, delta, math.inf).amin(2)
    some = inside.any(2)
    assert (hi - lo)[some].max() < 1e-6 and res.params["attack_size"] == (4, 4)
    assert (res.delta.abs() > 1e-3).any(), "test set-up: the attack should have moved"


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(c=0.0), ValueError, "c must be > 0"),
    (dict(lr=-1.0), ValueError, "lr must be > 0"),
    (dict(kappa=-1.0), ValueError, "kappa must be >= 0"),
    (dict(h=1.0), ValueError, "h must be <="),
    (dict(betas=(0.9, 1.0)), ValueError, "beta2"),
    (dict(betas=0.9), TypeError, "betas"),
    (dict(coords_per_step=0), ValueError, "coords_per_step"),
    (dict(binary_search_steps=0), ValueError, "binary_search_steps"),
    (dict(max_queries=0), ValueError, "max_queries"),
    (dict(max_queries=None), ValueError, "give max_queries or max_iter"),
    (dict(attack_size=30), ValueError, "attack_size"),
    (dict(attack_size="big"), TypeError, "attack_size"),
    (dict(c="x"), TypeError, "c must be a number"),
])
def test_bad_arguments_are_refused(small, kwargs, error, match):
    model, x, y = small
    with pytest.raises(error, match=match):
        zoo(model, x, y, **{"progress": False, **kwargs})


def test_bad_model_images_labels_and_targets_are_refused(small):
    model, x, y = small
    with pytest.raises(ValueError, match="\\[0, 1\\]"):
        zoo(model, x * 3, y, progress=False)
    with pytest.raises(ValueError, match="target != y"):
        zoo(model, x, y, target=y, progress=False)
    with pytest.raises(ValueError, match="classes"):
        zoo(model, x, y + 10, max_queries=10, progress=False)
    with pytest.raises(ValueError, match="oracle answering"):
        zoo(Oracle(model, "labels", n=len(x)), x, y, progress=False)
    with pytest.raises(ValueError, match="training mode"):
        zoo(model.train(), x, y, progress=False)
    model.eval()
