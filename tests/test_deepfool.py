"""DeepFool: closed forms on linear models, invariants on trained MNIST models, peers, bad input."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from advkit.attacks.batching import batched
from advkit.attacks.deepfool import deepfool
from advkit.metrics import predict

OVERSHOOT = 0.02
SLACK = 1e-4  # the authors' code adds 1e-4 to every step length


class BinaryLinear(nn.Module):
    """A binary linear classifier f(x) = w.x + b as a 2-class model: logits [0, f(x)]."""

    def __init__(self, d: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(d, generator=g) / d ** 0.5)
        self.b = nn.Parameter(-0.5 * self.w.detach().sum())  # boundary through the middle of the box

    def forward(self, x):
        f = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(f), f], dim=1)


def interior_batch(n=32, shape=(1, 8, 8), seed=1):
    g = torch.Generator().manual_seed(seed)
    return 0.25 + 0.5 * torch.rand(n, *shape, generator=g)


def linear_model(d=64, k=5, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, k)).eval()


def closed_form(model, x, dual_norm):
    """min_k |f_k - f_y| / ||w_k - w_y||_q over k != y = argmax, and the minimising w_k - w_y."""
    W, b = model[1].weight.detach(), model[1].bias.detach()
    f = x.flatten(1) @ W.T + b
    y = f.argmax(1)
    gap = f - f.gather(1, y[:, None])                       # N x K
    w = W[None, :, :] - W[y][:, None, :]                    # N x K x D
    dist = gap.abs() / w.norm(p=dual_norm, dim=2)
    dist[torch.arange(len(x)), y] = float("inf")
    best, l = dist.min(1)
    return y, best, w[torch.arange(len(x)), l]


# ---------------------------------------------------------------------------- closed forms


def test_l2_on_a_linear_multiclass_model_is_the_exact_minimal_perturbation_in_one_step():
    model, x = linear_model(), interior_batch()
    y, dist, w = closed_form(model, x, 2)
    res = deepfool(model, x, y, candidates=None)
    expected = (1 + OVERSHOOT) * dist[:, None] * w / w.norm(dim=1, keepdim=True)
    assert ((x.flatten(1) + expected) - 0.5).abs().max() < 0.5, "test set-up: the box must stay inactive"
    assert torch.equal(res.iterations, torch.ones(len(x), dtype=torch.long))
    torch.testing.assert_close(res.norms(2), (1 + OVERSHOOT) * dist, rtol=0, atol=(1 + OVERSHOOT) * SLACK + 1e-6)
    torch.testing.assert_close(res.delta.flatten(1), expected, rtol=0, atol=2 * SLACK)
    assert res.success.all()


def test_binary_linear_classifier_step_is_minus_f_w_over_norm_w_squared():
    model = BinaryLinear(64).eval()
    x = interior_batch()
    w, b = model.w.detach(), model.b.detach()
    f = x.flatten(1) @ w + b
    y = (f > 0).long()
    assert 0 < y.sum() < len(y), "test set-up: both classes should occur"
    res = deepfool(model, x, y)
    expected = (1 + OVERSHOOT) * (-f[:, None] * w / w.dot(w))
    torch.testing.assert_close(res.delta.flatten(1), expected, rtol=0, atol=2 * SLACK)
    assert torch.equal(res.iterations, torch.ones(len(x), dtype=torch.long)) and res.success.all()


def test_linf_variant_equals_its_closed_form_on_a_linear_model():
    model, x = linear_model(), interior_batch()
    y, dist, w = closed_form(model, x, 1)
    res = deepfool(model, x, y, norm="inf", candidates=None)
    # r = |f'_l| / ||w'_l||_1 * sign(w'_l), then overshoot
    expected = (1 + OVERSHOOT) * (dist + SLACK)[:, None] * w.sign()
    assert ((x.flatten(1) + expected) - 0.5).abs().max() < 0.5, "test set-up: the box must stay inactive"
    torch.testing.assert_close(res.delta.flatten(1), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(res.norms("inf"), (1 + OVERSHOOT) * dist, rtol=0, atol=(1 + OVERSHOOT) * SLACK + 1e-6)
    assert torch.equal(res.iterations, torch.ones(len(x), dtype=torch.long)) and res.success.all()


# ---------------------------------------------------------------------------- trained models



@pytest.fixture(scope="module")
def batch(mnist_test):
    x, y = mnist_test
    return x[:100], y[:100]


@pytest.fixture(scope="module")
def attacked(zoo_models, batch):
    """DeepFool with the defaults on each model, run once per module, with the batch size of every
    forward pass recorded; returns {arch: (result, rows)}."""
    x, y = batch
    out = {}
    for arch, model in zoo_models.items():
        rows = []
        handle = model.register_forward_hook(lambda m, inp, o: rows.append(len(inp[0])))
        try:
            x_before = x.clone()
            res = deepfool(model, x, y)
            assert torch.equal(x, x_before), "the input must never be modified"
        finally:
            handle.remove()
        out[arch] = (res, rows)
    return out


@pytest.mark.parametrize("arch", ["lenet5", "fc500_150_10"])
def test_invariants_on_trained_models(zoo_models, batch, attacked, arch):
    model, (x, y), (res, _) = zoo_models[arch], batch, attacked[arch]
    assert res.x_adv.shape == x.shape and res.x_adv.dtype == x.dtype
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    with torch.no_grad():
        pred = model(res.x_adv).argmax(1)  # recomputed independently of the attack's claim
    assert torch.equal(res.success, pred != y) and torch.equal(res.pred, pred)
    assert res.success_rate >= 0.99
    clean_wrong = predict(model, x) != y
    # misclassified from the start: untouched, zero iterations
    assert torch.equal(res.x_adv[clean_wrong], x[clean_wrong]) and (res.iterations[clean_wrong] == 0).all()
    assert (res.iterations[~clean_wrong] >= 1).all() and (res.iterations <= 50).all()
    a, b = deepfool(model, x[:20], y[:20]), deepfool(model, x[:20], y[:20])
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.iterations, b.iterations)


def test_only_active_samples_are_forwarded(batch, attacked):
    """Per-sample stopping: rows through the model = prepare (1) + initial (N) + 2 per step + judge (N)."""
    (x, _), (res, rows) = batch, attacked["lenet5"]
    assert sum(rows) == 1 + len(x) + 2 * int(res.iterations.sum()) + len(x)
    assert res.iterations.max() > res.iterations.float().mean()  # samples did stop at different times


def test_top_k_candidates_still_succeed_and_cost_little(zoo_models, batch, attacked):
    model, (x, y), (full, _) = zoo_models["lenet5"], batch, attacked["lenet5"]
    top3 = deepfool(model, x, y, candidates=3)
    assert top3.success_rate >= 0.98
    assert top3.params["candidates"] == 3 and full.params["candidates"] == 10
    # the nearest boundary is almost always among the 3 largest logits: norms barely grow
    ratio = top3.norms(2)[top3.success].median() / full.norms(2)[full.success].median()
    assert ratio < 1.05


def test_batched_equals_one_batch(zoo_models, batch):
    model, (x, y) = zoo_models["fc500_150_10"], batch
    x, y = x[:30], y[:30]
    whole = deepfool(model, x, y)
    parts = batched(deepfool, model, x, y, batch_size=7, progress=False)
    torch.testing.assert_close(parts.x_adv, whole.x_adv, rtol=0, atol=1e-5)
    assert torch.equal(parts.iterations, whole.iterations)


def test_integer_constraint_rounds_to_the_grid_and_rejudges(zoo_models, batch):
    model, (x, y) = zoo_models["fc500_150_10"], batch
    res = deepfool(model, x[:30], y[:30], levels=255)
    scaled = res.x_adv * 255
    assert torch.allclose(scaled, scaled.round(), atol=1e-4)
    with torch.no_grad():
        assert torch.equal(res.success, model(res.x_adv).argmax(1) != y[:30])


def test_median_l2_matches_foolbox_l2deepfool(zoo_models, batch, attacked):
    fb = pytest.importorskip("foolbox")
    model, (x, y), (ours, _) = zoo_models["lenet5"], batch, attacked["lenet5"]
    assert ours.params["max_iter"] == 50 and ours.params["overshoot"] == OVERSHOOT
    attack = fb.attacks.L2DeepFoolAttack(steps=50, candidates=10, overshoot=OVERSHOOT)
    x_fb = attack.run(fb.PyTorchModel(model, bounds=(0, 1)), x, y)
    with torch.no_grad():
        ok_fb = model(x_fb).argmax(1) != y
    norms_fb = (x_fb - x).flatten(1).norm(dim=1)
    med_ours, med_fb = ours.norms(2)[ours.success].median(), norms_fb[ok_fb].median()
    print(f"median L2: advkit {med_ours:.4f}, foolbox {med_fb:.4f}; success {ours.success_rate:.2f} vs "
          f"{ok_fb.float().mean():.2f}")
    assert ours.success_rate >= ok_fb.float().mean().item()
    assert med_ours <= 1.05 * med_fb


def test_median_l2_is_close_to_art_deepfool(zoo_models, batch, attacked):
    """ART applies the overshoot once at the end (not to each iterate), so small differences are expected.
    30 images only: ART recomputes all class gradients of the whole batch every iteration."""
    pytest.importorskip("art")
    from art.attacks.evasion import DeepFool
    from art.estimators.classification import PyTorchClassifier

    n = 30
    model, (x, y) = zoo_models["lenet5"], batch
    x, y = x[:n], y[:n]
    clf = PyTorchClassifier(model, loss=nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10,
                            clip_values=(0.0, 1.0), device_type="cpu")
    art = DeepFool(clf, max_iter=50, epsilon=OVERSHOOT, nb_grads=10, batch_size=n, verbose=False)
    x_art = torch.from_numpy(art.generate(x.numpy()))
    with torch.no_grad():
        ok_art = model(x_art).argmax(1) != y
    ours = attacked["lenet5"][0]
    ok, norms = ours.success[:n], ours.norms(2)[:n]
    med_ours = norms[ok].median()
    med_art = (x_art - x).flatten(1).norm(dim=1)[ok_art].median()
    print(f"median L2: advkit {med_ours:.4f}, ART {med_art:.4f}; success {ok.float().mean():.2f} vs "
          f"{ok_art.float().mean():.2f}")
    assert ok.float().mean() >= ok_art.float().mean()
    assert med_ours <= 1.10 * med_art


# ---------------------------------------------------------------------------- bad input


def test_zero_gradient_is_reported_and_such_samples_stop():
    model = linear_model(d=16, k=3)
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.tensor([1.0, 0.0, 0.0]))
    x = interior_batch(4, shape=(1, 4, 4))
    with pytest.warns(RuntimeWarning, match="zero input gradient"):
        res = deepfool(model, x, torch.zeros(4, dtype=torch.long))
    assert res.extra["zero_gradient"] == 4 and not res.success.any() and torch.equal(res.x_adv, x)
    assert (res.iterations == 0).all()


@pytest.fixture
def xy():
    return torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(8)), torch.tensor([0, 1, 2, 3])


@pytest.mark.parametrize("kwargs, match", [
    ({"norm": 1}, r"norm must be one of 2, inf"),
    ({"overshoot": -0.1}, r"overshoot must be a finite number >= 0"),
    ({"max_iter": 0}, r"max_iter must be a positive int"),
    ({"max_iter": 2.5}, r"max_iter must be a positive int"),
    ({"candidates": 1}, r"candidates must be an int >= 2"),
    ({"levels": 0}, r"levels"),
])
def test_bad_hyperparameters_are_refused(small_cnn, xy, kwargs, match):
    with pytest.raises(ValueError, match=match):
        deepfool(small_cnn, *xy, **kwargs)


def test_bad_model_and_inputs_are_refused(small_cnn, xy):
    x, y = xy
    with pytest.raises(ValueError, match=r"pixels in \[0, 1\]"):
        deepfool(small_cnn, x * 255, y)
    with pytest.raises(ValueError, match=r"labels in \[0, 12\].*10 classes"):
        deepfool(small_cnn, x, torch.tensor([0, 1, 2, 12]))
    with pytest.raises(TypeError, match=r"target"):
        deepfool(small_cnn, x, y, target=y)  # DeepFool is untargeted
    small_cnn.train()
    with pytest.raises(ValueError, match=r"training mode"):
        deepfool(small_cnn, x, y)
