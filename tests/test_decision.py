"""Decision-based attacks (HopSkipJump, Boundary): closed forms on linear models, the threat
model's accounting, invariants on LeNet-5, peers (ART, Foolbox) at equal query budgets, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import linear_model
from torch import nn

from advkit.blackbox import Oracle
from advkit.blackbox.decision import binary_search, boundary, hop_skip_jump

pytestmark = pytest.mark.usefixtures("one_thread")


class Counting(nn.Module):
    """Counts the rows the wrapped model receives (ART and Foolbox do not count queries)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.rows = model, 0

    def forward(self, x):
        self.rows += len(x)
        return self.model(x.float())  # ART's binary search hands float64 interpolations


def interior(n=32, d=64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return 0.25 + 0.5 * torch.rand(n, d, generator=g)


def linear_minimal_distance(model, x, q):
    """min_k (f_y - f_k) / ||w_y - w_k||_q over k != y = argmax: the exact minimal adversarial
    perturbation of a linear multiclass model (L2: q = 2; Linf: the dual q = 1)."""
    W, b = model[1].weight.detach(), model[1].bias.detach()
    f = x @ W.T + b
    y = f.argmax(1)
    gap = f.gather(1, y[:, None]) - f
    dist = gap / (W[None] - W[y][:, None]).norm(p=q, dim=2)
    dist[torch.arange(len(x)), y] = math.inf
    return y, dist.min(1).values


def uniform_adversarial(model, x, y, seed=0):
    """A uniform-noise point per sample that the model does not classify as y (test set-up)."""
    g = torch.Generator().manual_seed(seed)
    out = torch.empty_like(x)
    todo = torch.ones(len(x), dtype=torch.bool)
    while todo.any():
        cand = torch.rand(x.shape, generator=g)
        ok = todo & (model(cand).argmax(1) != y)
        out[ok], todo = cand[ok], todo & ~ok
    return out


@pytest.fixture(scope="module")
def digits(mnist_test):
    x, y = mnist_test
    return x[:10], y[:10]


# ---------------------------------------------------------------------------- closed forms


def test_l2_binary_search_finds_the_analytic_boundary_point_on_the_segment():
    model = linear_model(64, 5, seed=0)
    x = interior()
    with torch.no_grad():
        y = model(x).argmax(1)
        x_a = uniform_adversarial(model, x, y)
        # along x + t (x_a - x) the logit gaps g_k(t) = f_y - f_k are linear; adversarial from
        # the first t where a decreasing one reaches 0
        W, b = model[1].weight, model[1].bias
        g0 = (x @ W.T + b).gather(1, y[:, None]) - (x @ W.T + b)
        g1 = (x_a @ W.T + b).gather(1, y[:, None]) - (x_a @ W.T + b)
        t_k = torch.where(g1 < g0, g0 / (g0 - g1), torch.full_like(g0, math.inf))
        t_k[torch.arange(len(x)), y] = math.inf
        t_star = t_k.min(1).values
    tol = 1e-5
    oracle = Oracle(model, "labels", n=len(x))
    x_b, lab = binary_search(oracle, x, y, x_a, norm=2, tol=tol)
    seg = x_a - x
    t_hat = ((x_b - x) * seg).sum(1) / (seg * seg).sum(1)
    assert torch.allclose(x_b, x + t_hat[:, None] * seg, atol=1e-5), "the result lies on the segment"
    assert (t_hat >= t_star - 1e-5).all() and (t_hat <= t_star + tol + 1e-5).all()
    assert (lab != y).all() and torch.equal(lab, model(x_b).argmax(1)), "the adversarial end, as queried"
    assert (oracle.queries == 1 + math.ceil(math.log2(1 / tol))).all(), "one query a bisection step"


def test_linf_binary_search_brackets_the_boundary_on_the_clipping_path():
    model = linear_model(64, 5, seed=0)
    x = interior()
    with torch.no_grad():
        y = model(x).argmax(1)
        x_a = uniform_adversarial(model, x, y)
    tol = 1e-4
    x_b, lab = binary_search(Oracle(model, "labels", n=len(x)), x, y, x_a, norm="inf", tol=tol)
    alpha = (x_b - x).abs().amax(1)
    assert torch.allclose(x_b, torch.clamp(x_a, min=x - alpha[:, None], max=x + alpha[:, None]), atol=1e-6)
    h0 = (x_a - x).abs().amax(1)
    below = alpha - torch.minimum(h0 * tol, torch.full_like(h0, tol))
    x_low = torch.clamp(x_a, min=x - below[:, None], max=x + below[:, None])
    with torch.no_grad():
        assert (model(x_b).argmax(1) != y).all() and (lab != y).all()
        assert (model(x_low).argmax(1) == y).all(), "one tolerance closer to x is not adversarial"


@pytest.mark.parametrize("norm, q, budget, slack", [(2, 2, 1000, 1.10), ("inf", 1, 1000, 1.20)])
def test_hop_skip_jump_approaches_the_linear_minimal_perturbation(norm, q, budget, slack):
    model = linear_model(64, 5, seed=0)
    x = interior()
    y, d_star = linear_minimal_distance(model, x, q)
    res = hop_skip_jump(model, x, y, norm=norm, max_queries=budget, progress=False)
    assert res.success.all()
    ratio = res.norms(norm) / d_star
    # nothing adversarial is closer than the minimum; a few samples settle on another class's
    # (farther) facet, a local minimum, so the median is the measure (1.07 L2, 1.15 Linf measured)
    assert (ratio >= 1 - 1e-4).all()
    assert ratio.median() <= slack, f"median ratio to the minimal perturbation {ratio.median():.3f}"


def test_boundary_attack_converges_on_a_linear_model():
    model = linear_model(64, 5, seed=0)
    x = interior()
    y, d_star = linear_minimal_distance(model, x, 2)
    res = boundary(model, x, y, max_queries=1500, progress=False)
    ratio = res.norms(2) / d_star
    assert res.success.all() and (ratio >= 1 - 1e-4).all()
    assert (res.extra["init_l2"] / d_star).median() > 4, "test set-up: the start is far"
    assert ratio.median() <= 1.1, f"median ratio {ratio.median():.3f} (measured 1.02, from 8.1 at the start)"


# ------------------------------------------------------------------------ threat model and budget


@pytest.mark.parametrize("attack, kwargs", [(hop_skip_jump, {"norm": 2}), (hop_skip_jump, {"norm": "inf"}),
                                            (boundary, {})])
def test_budget_box_success_and_query_count_on_lenet(lenet, digits, attack, kwargs):
    x, y = digits
    counted = Counting(lenet).eval()
    res = attack(counted, x, y, max_queries=300, progress=False, **kwargs)
    assert (res.queries <= 300).all()
    assert int(res.queries.sum()) == counted.rows, "every row the model saw was counted, and only those"
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1 and torch.equal(x, digits[0])
    with torch.no_grad():
        pred = lenet(res.x_adv).argmax(1)
    assert torch.equal(pred, res.pred), "pred is the model's label of the returned x_adv"
    assert res.success.all() and (pred != y).all()
    hist = res.extra["l2_history" if kwargs.get("norm", 2) == 2 else "linf_history"]
    assert hist.shape[1] == len(x) and (hist[-1] <= hist[0] + 1e-6).all()


@pytest.mark.parametrize("attack", [hop_skip_jump, boundary])
def test_seeded_reproducibility(lenet, digits, attack):
    x, y = digits[0][:4], digits[1][:4]
    a = attack(lenet, x, y, max_queries=200, seed=3, progress=False)
    b = attack(lenet, x, y, max_queries=200, seed=3, progress=False)
    c = attack(lenet, x, y, max_queries=200, seed=4, progress=False)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries, b.queries)
    assert not torch.equal(a.x_adv, c.x_adv)


@pytest.mark.parametrize("attack", [hop_skip_jump, boundary])
def test_already_misclassified_samples_succeed_at_distance_zero_with_one_query(lenet, digits, attack):
    x, y = digits[0][:4], digits[1][:4].clone()
    y[1] = (y[1] + 1) % 10  # a wrong label: the clean image is already "adversarial"
    res = attack(lenet, x, y, max_queries=150, progress=False)
    assert res.success.all()
    assert res.queries[1] == 1 and torch.equal(res.x_adv[1], x[1])


@pytest.mark.parametrize("attack", [hop_skip_jump, boundary])
def test_tiny_budget_stops_cleanly(lenet, digits, attack):
    x, y = digits
    res = attack(lenet, x, y, max_queries=1, progress=False)
    assert not res.success.any() and torch.equal(res.x_adv, x)
    assert res.extra["out_of_queries"] == len(x) and (res.queries == 1).all()
    res = attack(lenet, x, y, max_queries=12, progress=False)  # a start, then a cut-short search
    assert (res.queries <= 12).all()
    assert res.extra["out_of_queries"] == int((~res.success).sum())
    with torch.no_grad():
        assert (lenet(res.x_adv[res.success]).argmax(1) != y[res.success]).all()


def test_an_oracle_answering_scores_is_accepted_and_shares_its_budget(lenet, digits):
    x, y = digits[0][:3], digits[1][:3]
    oracle = Oracle(lenet, "scores", n=len(x), max_queries=120)
    res = hop_skip_jump(oracle, x, y, progress=False)
    assert torch.equal(res.queries, oracle.queries) and (res.queries <= 120).all() and res.success.all()
    with pytest.raises(ValueError, match="samples"):
        hop_skip_jump(Oracle(lenet, "labels", n=5), x, y, progress=False)


@pytest.mark.parametrize("attack", [hop_skip_jump, boundary])
def test_targeted_from_images_of_the_target_class(lenet, mnist_test, attack):
    xs, ys = mnist_test
    x, y = xs[:6], ys[:6]
    # one image of another class per sample: its class is the target
    pool = torch.arange(6, 200)
    j = torch.stack([pool[ys[pool] == (y[i] + 3) % 10][0] for i in range(6)])
    x_init, target = xs[j], ys[j]
    with torch.no_grad():
        assert (lenet(x_init).argmax(1) == target).all(), "test set-up"
    res = attack(lenet, x, y, target=target, x_init=x_init, max_queries=600, progress=False)
    assert res.success.all() and torch.equal(res.pred, target)
    with torch.no_grad():
        assert torch.equal(lenet(res.x_adv).argmax(1), target)
    start = (x_init - x).flatten(1).norm(dim=1)
    assert (res.norms(2) < 0.8 * start).all(), "the walk moved towards x"


def test_bad_input_errors(lenet, digits):
    x, y = digits[0][:2], digits[1][:2]
    with pytest.raises(ValueError, match="norm"):
        hop_skip_jump(lenet, x, y, norm=1)
    with pytest.raises(ValueError, match="max_queries"):
        hop_skip_jump(lenet, x, y, max_queries=0)
    with pytest.raises(ValueError, match="max_queries or max_iter"):
        hop_skip_jump(lenet, x, y, max_queries=None)
    with pytest.raises(ValueError, match="init_evals"):
        hop_skip_jump(lenet, x, y, init_evals=200, max_evals=100)
    with pytest.raises(ValueError, match="gamma"):
        hop_skip_jump(lenet, x, y, gamma=0)
    for attack in (hop_skip_jump, boundary):
        with pytest.raises(ValueError, match="x_init"):
            attack(lenet, x, y, target=(y + 1) % 10)
        with pytest.raises(ValueError, match="x_init must have the shape"):
            attack(lenet, x, y, x_init=x[:1])
        with pytest.raises(ValueError, match="target != y"):
            attack(lenet, x, y, target=y, x_init=x)
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            attack(lenet, x * 255, y)
    with pytest.raises(ValueError, match="step_adaptation"):
        boundary(lenet, x, y, step_adaptation=0.667)
    with pytest.raises(ValueError, match="candidates"):
        boundary(lenet, x, y, candidates=0)
    with pytest.raises(ValueError, match="spherical_step"):
        boundary(lenet, x, y, spherical_step=-1)


# --------------------------------------------------------------------------------------- peers


@pytest.mark.parametrize("norm", [2, "inf"])
def test_hop_skip_jump_matches_or_beats_art_at_equal_queries(lenet, digits, norm):
    """ART 1.20.1 HopSkipJump, max_iter=5, on the same LeNet-5 and 10 images, one image per
    ``generate`` so that its queries per image are counted; advkit gets the smallest of those
    counts as its budget (ART's final ``compute_success`` query is not charged to it)."""
    from art.attacks.evasion import HopSkipJump
    from art.estimators.classification import PyTorchClassifier

    x, y = digits
    counted = Counting(lenet).eval()
    clf = PyTorchClassifier(counted, loss=nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10,
                            clip_values=(0.0, 1.0))
    np.random.seed(0)  # ART's probes; its noise start draws from an unseeded RandomState
    art_adv, art_queries = [], []
    for i in range(len(x)):
        attack = HopSkipJump(clf, norm=2 if norm == 2 else np.inf, max_iter=5, max_eval=10000, init_eval=100,
                             init_size=100, batch_size=4096, verbose=False)
        counted.rows = 0
        art_adv.append(attack.generate(x[i:i + 1].numpy(), y[i:i + 1].numpy()))
        art_queries.append(counted.rows - 1)
    art_adv = torch.from_numpy(np.concatenate(art_adv))
    art_dist = (art_adv - x).flatten(1).norm(p=2 if norm == 2 else math.inf, dim=1)
    budget = min(art_queries)
    assert 850 <= budget <= 1000, f"test set-up: ART's 5 iterations cost {art_queries}"
    res = hop_skip_jump(lenet, x, y, norm=norm, max_queries=budget, progress=False)
    assert res.success.all() and (res.queries <= budget).all()
    ours, theirs = res.norms(norm).median().item(), art_dist.median().item()
    # measured (ART's start is unseeded; three runs): L2 3.26 vs 3.67-4.06, Linf 0.249 vs 0.348-0.419
    assert ours <= 1.1 * theirs, f"advkit median {ours:.4f} vs ART {theirs:.4f} at {budget} queries"


def test_boundary_attack_against_foolbox_and_hop_skip_jump_at_equal_queries(lenet, digits):
    """Foolbox 3.3.4's reference BoundaryAttack (steps=600, its blended-noise start) on the same
    model and images; advkit's Boundary attack and HopSkipJump get Foolbox's queries per image."""
    import foolbox as fb

    x, y = digits
    counted = Counting(lenet).eval()
    fmodel = fb.PyTorchModel(counted, bounds=(0, 1))
    torch.manual_seed(0)  # Foolbox draws from the global generator
    _, fb_adv, _ = fb.attacks.BoundaryAttack(steps=600)(fmodel, x, fb.criteria.Misclassification(y), epsilons=None)
    budget = counted.rows // len(x)
    fb_med = (fb_adv - x).flatten(1).norm(dim=1).median().item()
    res = boundary(lenet, x, y, max_queries=budget, progress=False)
    hsj = hop_skip_jump(lenet, x, y, max_queries=budget, progress=False)
    assert res.success.all() and (res.queries <= budget).all()
    med, hsj_med = res.norms(2).median().item(), hsj.norms(2).median().item()
    start = res.extra["init_l2"].median().item()
    assert med < 0.7 * start, f"the walk must shorten the start ({start:.3f} -> {med:.3f})"
    # measured at 707 queries: start 10.8, advkit 5.05, Foolbox 10.5 (its step sizes adapt only
    # after 1,000 steps), HopSkipJump 3.80; over seeds 0-2 Boundary / HopSkipJump was 1.28-1.53:
    # the Boundary attack needs more queries for the same distortion, as Chen et al. report
    assert med <= 1.1 * fb_med, f"advkit {med:.3f} vs Foolbox {fb_med:.3f} at {budget} queries"
    assert med <= 1.75 * hsj_med, f"Boundary {med:.3f} vs HopSkipJump {hsj_med:.3f} at {budget} queries"
