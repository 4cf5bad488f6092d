"""Adversarial training and defensive distillation, each claim against a closed form, a manual
reference computation or the issue's measured target (the zoo's "cnn_adv" and "cnn_distilled")."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from advkit import models, zoo
from advkit.attacks import cw_l2, fgsm, pgd
from advkit.defenses import (
    Tempered, adversarial_train, capacity_sweep, catastrophic_overfitting, defensive_distillation, resolve_method,
    softmax_saturation, training_perturbation, weight_decay_curve, weight_decay_summary, weight_decay_sweep,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _linear(d: int = 16, k: int = 4, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    lin = nn.Linear(d, k)
    with torch.no_grad():
        lin.weight.normal_(0, 1)
        lin.bias.normal_(0, 1)
    return nn.Sequential(nn.Flatten(), lin)


def _batch(n: int = 8, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 4, 4, generator=g), torch.randint(0, 4, (n,), generator=g)


def _one_step(model, x, y, **kw):
    """Parameters after one SGD step of :func:`adversarial_train` on the single batch ``(x, y)``.

    The first step of SGD with momentum is ``theta - lr * grad`` (PyTorch starts the momentum
    buffer at the gradient), so with ``lr=1`` the returned difference is minus the gradient."""
    before = [p.detach().clone() for p in model.parameters()]
    adversarial_train(model, x, y, epochs=1, batch_size=len(x), lr=1.0, optimizer="sgd",
                      lr_schedule="constant", progress=False, **kw)
    return [b - p.detach() for b, p in zip(before, model.parameters())]


def _closed_form_grad(lin: nn.Linear, x_clean, x_adv, y, alpha):
    """d/d(W, b) of alpha * CE(Wx + b) + (1 - alpha) * CE(W x_adv + b), batch mean: (p - e_y) x^T."""
    def g(xf):
        p = F.softmax(xf @ lin.weight.T + lin.bias, dim=1) - F.one_hot(y, lin.out_features)
        return p.T @ xf / len(y), p.mean(0)
    gw_c, gb_c = g(x_clean.flatten(1))
    gw_a, gb_a = g(x_adv.flatten(1))
    return alpha * gw_c + (1 - alpha) * gw_a, alpha * gb_c + (1 - alpha) * gb_a


# ---------------------------------------------------------------------------- the training step


@pytest.mark.parametrize("alpha", [1.0, 0.5, 0.0])
def test_mixed_loss_matches_the_closed_form_on_a_linear_model(alpha):
    """FGSM training on softmax regression: x_adv = clip(x + eps sign(W^T (p - e_y))), and the
    update is alpha * (p(x) - e_y) x^T + (1 - alpha) * (p(x_adv) - e_y) x_adv^T (Goodfellow et al.)."""
    x, y = _batch()
    model = _linear()
    lin = model[1]
    eps = 0.1
    with torch.no_grad():
        w0, b0 = lin.weight.clone(), lin.bias.clone()
        p = F.softmax(x.flatten(1) @ w0.T + b0, dim=1) - F.one_hot(y, 4)
        x_adv = (x + eps * (p @ w0).sign().view_as(x)).clamp(0, 1)
        ref = nn.Linear(16, 4)
        ref.weight.copy_(w0), ref.bias.copy_(b0)
        gw, gb = _closed_form_grad(ref, x, x_adv, y, alpha)
    dw, db = _one_step(model, x, y, method="fgsm", eps=eps, alpha=alpha)
    torch.testing.assert_close(dw, gw, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(db, gb, rtol=1e-5, atol=1e-6)


def test_alpha_one_is_standard_training():
    """alpha = 1 puts all the weight on the clean loss: the step is the plain cross-entropy step."""
    x, y = _batch()
    m1, m2 = _linear(), _linear()
    for a, b in zip(_one_step(m1, x, y, method="fgsm", eps=0.2, alpha=1.0), _one_step(m2, x, y, method="none")):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    m3 = _linear()
    x_req = x.clone()
    loss = F.cross_entropy(m3(x_req), y)
    grads = torch.autograd.grad(loss, list(m3.parameters()))
    for a, g in zip(_one_step(_linear(), x, y, method="fgsm", eps=0.2, alpha=1.0), grads):
        torch.testing.assert_close(a, g, rtol=1e-5, atol=1e-7)


def test_pgd_training_step_is_the_manual_min_max_step():
    """Madry et al.: the inner max is advkit.attacks.pgd (no random start), the outer step the CE
    gradient at the attacked points; with the random start, delta_0 comes from the seeded generator."""
    torch.manual_seed(0)
    net = models.cnn(width=0.25)
    x, y = _batch(6)
    x = F.interpolate(x, size=28)
    eps, step, steps = 0.1, 0.04, 3
    for random_start in (False, True):
        ref = models.cnn(width=0.25)
        ref.load_state_dict(net.state_dict())
        ref.eval()
        if random_start:
            # adversarial_train shuffles with seed 0 and draws the starts with seed + 1, batch by batch
            xs = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))]
            ys = y[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))]
            delta = torch.rand(x.shape, generator=torch.Generator().manual_seed(1)).mul_(2 * eps).sub_(eps)
            x_adv = (xs + delta).clamp(0, 1)
            for _ in range(steps):
                x_adv = x_adv.detach().requires_grad_(True)
                (gx,) = torch.autograd.grad(F.cross_entropy(ref(x_adv), ys), x_adv)
                x_adv = torch.min(torch.max(x_adv.detach() + step * gx.sign(), xs - eps), xs + eps).clamp(0, 1)
        else:
            ys = y
            x_adv = pgd(ref, x, y, eps=eps, eps_step=step, max_iter=steps, random_start=False).x_adv
            # training_perturbation is the same inner maximisation
            torch.testing.assert_close(training_perturbation(ref, x, y, eps=eps, step_size=step, steps=steps,
                                                             random_start=False), x_adv)
        grads = torch.autograd.grad(F.cross_entropy(ref(x_adv), ys), list(ref.parameters()))
        model = models.cnn(width=0.25)
        model.load_state_dict(net.state_dict())
        diffs = _one_step(model, x, y, method="pgd", eps=eps, step_size=step, steps=steps, random_start=random_start)
        for d, g in zip(diffs, grads):
            torch.testing.assert_close(d, g, rtol=1e-4, atol=1e-6)


def test_training_perturbation_stays_in_the_ball_and_the_box():
    torch.manual_seed(0)
    net = models.cnn(width=0.25).eval()
    x = torch.rand(5, 1, 28, 28)
    y = torch.arange(5)
    for rs in (False, True):
        xa = training_perturbation(net, x, y, eps=0.2, step_size=0.5, steps=2, random_start=rs)
        assert (xa - x).abs().max() <= 0.2 + 1e-6 and xa.min() >= 0 and xa.max() <= 1
    assert torch.equal(training_perturbation(net, x, y, eps=0.0, step_size=0.1, steps=1, random_start=True), x)


def test_method_defaults_are_the_papers():
    assert resolve_method("fgsm", eps=0.3) == dict(method="fgsm", eps=0.3, alpha=0.5, step_size=0.3, steps=1,
                                                   random_start=False)
    fast = resolve_method("fast_fgsm", eps=0.3)
    assert fast["random_start"] and fast["alpha"] == 0 and fast["step_size"] == pytest.approx(0.375)  # Wong et al.
    p = resolve_method("pgd", eps=0.3, steps=40)
    assert p["step_size"] == pytest.approx(2.5 * 0.3 / 40) and p["random_start"]  # Madry et al.'s rule


def test_bad_input_raises_clear_errors():
    x, y = _batch()
    m = _linear()
    with pytest.raises(ValueError, match="method must be one of"):
        adversarial_train(m, x, y, method="trades", progress=False)
    with pytest.raises(ValueError, match=r"alpha .* must be in \[0, 1\]"):
        adversarial_train(m, x, y, method="fgsm", alpha=1.5, progress=False)
    with pytest.raises(ValueError, match="takes one step"):
        adversarial_train(m, x, y, method="fast_fgsm", steps=3, progress=False)
    with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
        adversarial_train(m, x, y, eps=-0.1, progress=False)
    with pytest.raises(ValueError, match="step_size must be"):
        adversarial_train(m, x, y, method="pgd", step_size=-1.0, progress=False)
    with pytest.raises(ValueError, match="epochs must be an int >= 1"):
        adversarial_train(m, x, y, epochs=0, progress=False)
    with pytest.raises(ValueError, match="lr must be"):
        adversarial_train(m, x, y, lr=0.0, progress=False)
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        adversarial_train(m, x, y, lr_schedule="step", progress=False)
    with pytest.raises(ValueError, match="optimizer must be"):
        adversarial_train(m, x, y, optimizer="rmsprop", progress=False)
    with pytest.raises(ValueError, match="standard training"):
        adversarial_train(m, x, y, method="none", steps=1, progress=False)
    with pytest.raises(ValueError, match="values in"):
        adversarial_train(m, x * 255, y, progress=False)
    with pytest.raises(TypeError, match="integer class labels"):
        adversarial_train(m, x, y.float(), progress=False)
    with pytest.raises(TypeError, match="unknown training_kwargs"):
        zoo.recipe("cnn_adv", training_kwargs={"temperature": 10})
    with pytest.raises(ValueError, match="temperature must be"):
        defensive_distillation(_linear(), _linear(), x, y, temperature=0.0, progress=False)
    with pytest.raises(ValueError, match="temperature must be"):
        Tempered(m, -1)
    with pytest.raises(ValueError, match="training mode"):
        softmax_saturation(m.train(), x, y)


def test_cnn_is_the_kolter_madry_architecture(staged, monkeypatch):
    """The tutorial's checkpoints load strictly into models.cnn(normalize=False); models.cnn() is the
    same layer list behind a parameter-free Normalize layer (so pixels in [0, 1] go in)."""
    monkeypatch.setenv("ADVKIT_DATA", str(staged))
    ref = zoo.reference("model_cnn_robust", device="cpu")
    ours = models.cnn()
    assert isinstance(ours[0], models.Normalize) and not list(ours[0].parameters())
    assert [(k, v.shape) for k, v in models.cnn(normalize=False).state_dict().items()] == \
        [(k, v.shape) for k, v in ref.state_dict().items()]
    assert [type(m) for m in ours[1:]] == [type(m) for m in ref]
    assert [m.stride for m in ours if isinstance(m, nn.Conv2d)] == [(1, 1), (2, 2), (1, 1), (2, 2)]


# ---------------------------------------------------------------------------- the zoo's defended models


@pytest.fixture(scope="module")
def first_1000(mnist_test):
    xt, yt = mnist_test
    return xt[:1000], yt[:1000]


@pytest.fixture(scope="module")
def cnn_adv(staged):
    """zoo.load("cnn_adv") with its default CPU recipe (CI trains it once, cold cache)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ADVKIT_DATA", str(staged))
        return zoo.load("cnn_adv", device="cpu", progress=False)


def test_cnn_adv_meets_the_issue_targets(cnn_adv, first_1000):
    """Issue 8: PGD-20 at Linf eps 0.1, step 0.01, no random start, first 1000 MNIST test images:
    robust error <= 10% and clean error <= 2% (the Kolter-Madry tutorial reports 2.8% under PGD-40)."""
    x, y = first_1000
    rec = cnn_adv.zoo_record
    assert rec["recipe"]["arch"] == "cnn" and rec["recipe"]["model_kwargs"] == {}
    assert rec["attack_config"]["eps"] == 0.1 and rec["training_method"] == "fast_fgsm"
    with torch.no_grad():
        clean_err = (cnn_adv(x).argmax(1) != y).float().mean().item()
    res = pgd(cnn_adv, x, y, eps=0.1, eps_step=0.01, max_iter=20, random_start=False)
    robust_err = 1 - res.robust_accuracy
    assert clean_err <= 0.02, clean_err                  # measured 0.011 (all 10,000: 0.9883 accuracy)
    assert robust_err <= 0.10, robust_err                # measured 0.037
    assert res.norms("inf").max() <= 0.1 + 1e-6
    assert rec["robust_accuracy"] == pytest.approx(res.robust_accuracy)  # the zoo records the same protocol
    # the standard CNN under the same attack (first 200 images) is clearly less robust: the
    # robustness comes from the training (PGD is per sample, so res's first 200 are comparable)
    std = zoo.load("cnn", device="cpu", progress=False)
    std_acc = pgd(std, x[:200], y[:200], eps=0.1, eps_step=0.01, max_iter=20).robust_accuracy
    adv_acc = 1 - res.success[:200].float().mean().item()
    assert std_acc <= adv_acc - 0.1, (std_acc, adv_acc)     # measured 0.805 for the standard CNN


@pytest.fixture(scope="module")
def cnn_distilled(staged):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ADVKIT_DATA", str(staged))
        return zoo.load("cnn_distilled", device="cpu", progress=False)


def test_distillation_masks_gradients_and_cw_on_the_logits_breaks_it(cnn_distilled, first_1000):
    """Papernot et al. 2016 at T = 100: the deployed softmax saturates, so FGSM and PGD on the
    cross-entropy find nothing even at eps 0.3; Carlini & Wagner's L2 attack on the logits
    fools >= 95% of the images with a moderate budget (100 Adam steps x 6 binary-search steps).
    50 images keep it fast (C&W's search is per sample, so they are the first 50 of the 100 measured)."""
    m = cnn_distilled
    x, y = first_1000[0][:50], first_1000[1][:50]
    assert m.zoo_record["test_accuracy"] >= 0.97                        # measured 0.9854
    assert m.zoo_record["saturation"]["zero_gradient"] >= 0.9           # measured 0.978
    with torch.no_grad():
        ok = m(x).argmax(1) == y
    x, y = x[ok], y[ok]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the attacks warn about the zero gradients: that is the point
        f = fgsm(m, x, y, eps=0.3)
        p = pgd(m, x, y, eps=0.3, eps_step=0.03, max_iter=40)
    assert f.success_rate <= 0.05 and p.success_rate <= 0.05             # measured 0.0 and 0.0
    assert f.extra["zero_gradient"] >= 0.9 * len(x)                     # measured: all of them
    cw = cw_l2(m, x, y, learning_rate=0.1, max_iterations=100, binary_search_steps=6, initial_const=1e-2)
    assert cw.success_rate >= 0.95, cw.success_rate   # measured 1.00 on the first 100 (median L2 1.46)
    # the decision is unchanged at temperature T, but the softmax is no longer flat: PGD works again
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert pgd(Tempered(m, 100.0), x, y, eps=0.3, eps_step=0.03, max_iter=40).success_rate >= 0.8  # measured 1.0


# ---------------------------------------------------------------------------- experiments for the lab


def test_catastrophic_overfitting_shape(staged, mnist_test, monkeypatch):
    """Single-step training at eps 0.3 from the CNN robust at 0.1 (the lab's curriculum): both
    recipes defeat FGSM, but zero-start FGSM learns no PGD robustness at all (catastrophic
    overfitting, Wong, Rice & Kolter 2020) while fast FGSM (random start, 1.25 eps) does. The
    history starts with the starting model at epoch 0."""
    from advkit.data import mnist
    from advkit.defenses.training import evaluate_robustness

    monkeypatch.setenv("ADVKIT_DATA", str(staged))
    x, y = mnist("train").tensors
    xt, yt = mnist_test
    recipes = {"zero": dict(method="fgsm", alpha=0.0), "fast": dict(method="fast_fgsm")}
    init = zoo.load("cnn_adv", device="cpu", progress=False)
    pgd_kw = dict(eps_step=0.075, max_iter=10)
    ev = (xt[-200:], yt[-200:])
    h = catastrophic_overfitting(x[:5000], y[:5000], ev, eps=0.3, recipes=recipes, init=init, epochs=3,
                                 eval_every=25, lr=5e-3, eval_pgd=pgd_kw, progress=False)
    assert list(h.recipe.unique()) == ["zero", "fast"] and len(h) == 14
    zero, fast = h[h.recipe == "zero"], h[h.recipe == "fast"]
    start = evaluate_robustness(init, *ev, eps=0.3, **pgd_kw)
    for r in (zero, fast):
        assert r.epoch.iloc[0] == 0 and r.pgd_acc.iloc[0] == start["pgd_acc"] and r.fgsm_acc.iloc[0] == start["fgsm_acc"]
    last_zero, last_fast = zero.iloc[-1], fast.iloc[-1]
    # measured with 2 threads (1 thread): zero start PGD 0.00-0.01 (0.00-0.095) throughout, ending
    # at FGSM 0.97 (0.815); fast FGSM from PGD 0.00 to 0.50 (0.51), FGSM 0.97 (0.975)
    assert zero.pgd_acc.max() <= 0.2 and last_zero.pgd_acc <= 0.05
    assert last_zero.fgsm_acc - last_zero.pgd_acc >= 0.5          # FGSM is fooled: catastrophic overfitting
    assert last_fast.fgsm_acc >= 0.85
    assert last_fast.pgd_acc >= 0.3 and last_fast.pgd_acc >= last_zero.pgd_acc + 0.25
    assert (fast.clean_acc.iloc[-1] >= 0.9) and (zero.clean_acc.iloc[-1] >= 0.9)


def test_capacity_and_weight_decay_sweeps(staged, mnist_test, monkeypatch):
    """Tiny scale (2000 training images, one epoch): adversarial training needs capacity (Madry et
    al. Sec. 4): at width 0.25 fast FGSM does not learn at all, at width 1 it beats standard
    training under PGD; a huge weight decay stops learning. The models go through the zoo's cache
    (``ADVKIT_CACHE``), so a warm run only evaluates them."""
    monkeypatch.setenv("ADVKIT_DATA", str(staged))
    xt, yt = mnist_test
    ev = (xt[:200], yt[:200])
    cap = capacity_sweep((0.25, 1.0), eps=0.1, n_train=2000, epochs=1, eval_data=ev, progress=False)
    assert list(cap.columns[:3]) == ["width", "method", "params"] and len(cap) == 4
    assert cap.params.tolist() == [24037, 24037, 379702, 379702]
    r = {(row.width, row.method): row for row in cap.itertuples()}
    assert r[(1.0, "fast_fgsm")].pgd_acc >= r[(0.25, "fast_fgsm")].pgd_acc + 0.2   # measured 0.55 vs 0.14
    assert r[(1.0, "fast_fgsm")].pgd_acc > r[(1.0, "none")].pgd_acc                # measured 0.55 vs 0.505
    assert all(row.pgd_acc <= row.fgsm_acc + 1e-9 <= row.clean_acc + 2e-9 for row in cap.itertuples())
    wd = weight_decay_sweep((1.0,), eps=0.1, n_train=2000, epochs=1, eval_data=ev, progress=False)
    assert wd.weight_decay.tolist() == [1.0]
    # without decay the same training is the capacity sweep's width-1 fast FGSM model
    assert r[(1.0, "fast_fgsm")].clean_acc >= wd.clean_acc[0] + 0.3                 # measured 0.725 vs 0.105 (chance)
    # trained once: the zoo's cache answers the second call without training
    monkeypatch.setattr(zoo, "train", lambda *a, **k: pytest.fail("a cached model must not be retrained"))
    again = weight_decay_sweep((1.0,), eps=0.1, n_train=2000, epochs=1, eval_data=ev, progress=False)
    assert again.pgd_acc[0] == wd.pgd_acc[0] and again.path[0] == wd.path[0]


def test_weight_decay_curve(staged, mnist_test, monkeypatch):
    """The lecture's regularisation curve at tiny scale (1000 digits, 4 epochs of softmax
    regression): the history is the training loop's own, the boundary distance is DeepFool's and
    never shorter than the closed-form distance of the affine model, and weight decay buys
    distance (and a smaller weight norm)."""
    from advkit.attacks import deepfool
    from advkit.data import mnist

    monkeypatch.setenv("ADVKIT_DATA", str(staged))
    xt, yt = mnist_test
    ev = (xt[:200], yt[:200])
    curve = weight_decay_curve((0.0, 0.1), n_train=1000, epochs=4, eval_data=ev, progress=False)
    assert list(curve.columns) == ["weight_decay", "epoch", "loss", "train_acc", "clean_acc", "boundary_l2",
                                   "boundary_l2_median", "weight_norm", "seconds"]
    assert curve.weight_decay.tolist() == [0.0] * 4 + [0.1] * 4 and curve.epoch.tolist() == [1.0, 2.0, 3.0, 4.0] * 2
    x, y = mnist("train").tensors
    for d in (0.0, 0.1):
        torch.manual_seed(0)          # the curve's initial weights
        m = models.softmax_regression()
        _, hist = adversarial_train(m, x[:1000], y[:1000], method="none", epochs=4, lr=0.01, optimizer="sgd",
                                    lr_schedule="constant", weight_decay=d, progress=False)
        last = curve[curve.weight_decay == d].iloc[-1]
        assert last.loss == pytest.approx(hist.loss.iloc[-1], rel=1e-5)
        ok = m(ev[0]).argmax(1) == ev[1]
        assert last.clean_acc == pytest.approx(ok.float().mean().item())
        r = deepfool(m, ev[0][ok], ev[1][ok])
        assert bool(r.success.all())
        norms = r.norms(2)
        assert last.boundary_l2 == pytest.approx(norms.mean().item(), rel=1e-4)
        assert last.boundary_l2_median == pytest.approx(norms.median().item(), rel=1e-4)
        # closed form of the affine model without the box: min_j (z_y - z_j) / ||w_y - w_j||
        w, b = m.logits.weight.detach(), m.logits.bias.detach()
        z = ev[0][ok].flatten(1) @ w.T + b
        yy = ev[1][ok]
        gap = z.gather(1, yy[:, None]) - z
        dist = gap / (w[yy][:, None, :] - w[None]).norm(dim=2).clamp_min(1e-12)
        dist[torch.arange(len(yy)), yy] = float("inf")
        closed = dist.min(1).values
        assert bool((norms >= closed * (1 - 1e-4)).all())     # DeepFool crosses the boundary: never shorter
        assert norms.mean() <= 1.5 * closed.mean()             # measured 1.18 and 1.16 times longer (the box)
        assert last.weight_norm == pytest.approx(torch.cat([p.detach().flatten() for p in m.parameters()]).norm().item(),
                                                 rel=1e-5)
    by = {d: g.iloc[-1] for d, g in curve.groupby("weight_decay")}
    assert by[0.1].boundary_l2 > by[0.0].boundary_l2 * 1.03        # measured 1.350 vs 1.254
    assert by[0.1].weight_norm < by[0.0].weight_norm * 0.9         # measured 2.41 vs 2.88
    # the same call gives the same numbers (seeded initialisation and shuffling)
    again = weight_decay_curve((0.1,), n_train=1000, epochs=4, eval_data=ev, progress=False)
    assert again.boundary_l2.tolist() == curve[curve.weight_decay == 0.1].boundary_l2.tolist()
    with pytest.raises(ValueError, match="decays"):
        weight_decay_curve((0.0, -1e-3), n_train=100, epochs=1, eval_data=ev, progress=False)
    with pytest.raises(ValueError, match="epochs"):
        weight_decay_curve((0.0,), n_train=100, epochs=0, eval_data=ev, progress=False)


def test_weight_decay_summary_reads_the_curve():
    """First, final and late change on a hand-made curve: the late change is relative to the
    final value and taken from the epoch at ``since`` of the run."""
    import pandas as pd

    curve = pd.DataFrame({"weight_decay": [0.0] * 4 + [0.5] * 4, "epoch": [4, 1, 2, 3] + [1, 2, 3, 4],
                          "clean_acc": [0.9, 0.5, 0.8, 0.9, 0.4, 0.4, 0.4, 0.4],
                          "boundary_l2": [1.0, 2.0, 1.6, 1.2, 3.0, 3.0, 3.0, 3.3]})
    s = weight_decay_summary(curve)
    assert s.weight_decay.tolist() == [0.0, 0.5]
    r0, r1 = s.iloc[0], s.iloc[1]
    assert (r0.clean_acc_first, r0.clean_acc_final, r0.clean_acc_late_change) == (0.5, 0.9, pytest.approx(0.1 / 0.9))
    assert r0.boundary_l2_late_change == pytest.approx((1.0 - 1.6) / 1.0)     # epoch 2 = half of 4
    assert r1.boundary_l2_late_change == pytest.approx(0.3 / 3.3) and r1.clean_acc_late_change == 0.0
    assert weight_decay_summary(curve, since=0.75).iloc[0].boundary_l2_late_change == pytest.approx(-0.2)
    with pytest.raises(ValueError, match="boundary_l2"):
        weight_decay_summary(curve.drop(columns="boundary_l2"))
    with pytest.raises(ValueError, match="since"):
        weight_decay_summary(curve, since=1.0)
