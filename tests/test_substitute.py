"""Papernot et al.'s substitute attack: the seed set, the augmentation step in closed form, query
accounting through the oracle (labels only), the transfer to a model advkit did not train, bad input."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from advkit.blackbox.substitute import jacobian_augmentation, seed_set, small_cnn, substitute, transfer_rates

pytestmark = pytest.mark.usefixtures("one_thread")


class CountingModel(nn.Module):
    """Counts the rows it answers and checks that nobody asks it for a gradient."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.rows = 0

    def forward(self, x):
        assert not x.requires_grad and not torch.is_grad_enabled()
        self.rows += len(x)
        return self.model(x)


def tiny_mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))


@pytest.fixture(scope="module")
def split(mnist_test):
    x, y = mnist_test
    x_seed, _ = seed_set(x[-1000:], y[-1000:], n=150, seed=0)
    return x[:500], y[:500], x_seed


def test_seed_set_is_class_balanced_reproducible_and_checked(mnist_test):
    x, y = mnist_test
    xs, idx = seed_set(x[-1000:], y[-1000:], n=150, seed=0)
    assert xs.shape == (150, 1, 28, 28) and torch.equal(xs, x[-1000:][idx])
    assert torch.bincount(y[-1000:][idx], minlength=10).tolist() == [15] * 10
    assert torch.equal(idx, seed_set(x[-1000:], y[-1000:], n=150, seed=0)[1])
    assert not torch.equal(idx, seed_set(x[-1000:], y[-1000:], n=150, seed=1)[1])
    _, idx = seed_set(x[:500], y[:500], n=23)
    assert torch.bincount(y[idx], minlength=10).tolist() == [3, 3, 3] + [2] * 7
    with pytest.raises(ValueError, match="number of classes"):
        seed_set(x[:500], y[:500], n=5)


def test_jacobian_augmentation_on_a_linear_substitute_is_x_plus_lam_sign_w_label():
    torch.manual_seed(0)
    lin = nn.Linear(16, 3)
    net = nn.Sequential(nn.Flatten(), lin).eval()
    x = 0.2 + 0.6 * torch.rand(5, 1, 4, 4)
    labels = torch.tensor([0, 1, 2, 1, 0])
    out = jacobian_augmentation(net, x, labels, 0.1)
    expected = (x + 0.1 * lin.weight.detach()[labels].sign().view(5, 1, 4, 4)).clamp(0, 1)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(jacobian_augmentation(net, x, labels, -0.1),
                               (x - 0.1 * lin.weight.detach()[labels].sign().view(5, 1, 4, 4)).clamp(0, 1))
    assert jacobian_augmentation(net, torch.ones(2, 1, 4, 4), labels[:2], 0.5).max() <= 1  # clipped to the box


@pytest.mark.parametrize("reservoir", [None, (2, 40)])
def test_queries_go_through_label_oracles_and_are_all_counted(lenet, split, reservoir):
    x, y, x_seed = split
    target = CountingModel(lenet).eval()
    x_seed = x_seed[::5]  # 30 seeds: a fast run
    res = substitute(target, x[:50], y[:50], x_seed=x_seed, arch=tiny_mlp, rho=3, epochs=2, reservoir=reservoir,
                     progress=False)
    sizes = [30, 60, 120, 240] if reservoir is None else [30, 60, 120, 160]  # 30 * 2**2 + 40 * (3 - 2)
    assert res.extra["training_set_sizes"] == sizes
    assert res.extra["training_queries"] == sizes[-1] == len(res.extra["training_set"][0])
    clean_ok = torch.tensor([bool(lenet(x[i:i + 1]).argmax() == y[i]) for i in range(50)])
    assert res.queries.tolist() == [2 if ok else 1 for ok in clean_ok.tolist()]  # misclassified: one query, done
    assert target.rows == res.queries.sum().item() + res.extra["training_queries"]
    assert len(res.extra["agreement_history"]) == 4
    sub = res.extra["substitute"]
    assert not sub.training
    assert (res.x_adv - x[:50]).abs().max() <= 0.3 + 1e-6
    assert torch.equal(res.success, res.pred != y[:50])
    # the labels of the training set are the target's labels
    xs, ys = res.extra["training_set"]
    with torch.no_grad():
        assert torch.equal(ys, lenet(xs).argmax(1))


def test_a_spent_budget_ends_the_attack_cleanly(lenet, split):
    x, y, x_seed = split
    res = substitute(lenet, x[:20], y[:20], x_seed=x_seed[::10], arch=tiny_mlp, rho=1, epochs=1, max_queries=1,
                     progress=False)
    assert res.queries.max() == 1
    assert torch.equal(res.x_adv, x[:20])
    assert res.extra["out_of_queries"] == int((res.pred == y[:20]).sum())


def test_substitute_with_its_defaults_transfers_to_a_model_advkit_did_not_train(split, record_property):
    """Papernot et al. report 84.24% at eps 0.3 against MetaMind's MNIST model; issue 7 asks for 70% on a model
    advkit did not train. The call is the issue's, with every default: 150 seeds, rho=6 (9600 labels), a small
    strided CNN substitute, tau=3, PGD on the substitute. Target: the Kolter-Madry tutorial CNN (an outside
    checkpoint). Measured (seed_set and substitute seeds 0-2): transfer 0.81-0.88 at eps 0.3, 0.40-0.43 at 0.2
    (this call, seed 0: 0.883 and 0.417)."""
    from advkit import zoo

    x, y, x_seed = split
    ref = zoo.reference("model_cnn", device="cpu")
    start = time.process_time()
    res = substitute(ref, x, y, x_seed=x_seed, eps=0.3, progress=False)
    elapsed = time.process_time() - start  # CPU seconds (42-51 measured at a load of 5-14); wall time depends on the load
    assert res.params["arch"] == "small_cnn" and res.params["tau"] == 3 and res.params["substitute_attack"] == "pgd"
    agreement = res.extra["agreement_history"]
    assert res.extra["training_queries"] == 9600
    assert agreement[-1] > agreement[0] + 0.2 and agreement[-1] >= 0.8, agreement  # measured: 0.87 on these images
    rate = res.extra["transfer_rate"][0.3]
    assert rate >= 0.70, res.extra["transfer_rate"]
    assert elapsed < 90, elapsed
    # the helper, with the same defaults, measures the same thing (fresh queries, same substitute, same PGD)
    rates = transfer_rates(res.extra["substitute"], ref, x, y, eps=(0.2, 0.3))
    record_property("transfer_rate", rates)
    print(f"substitute defaults: agreement {agreement[-1]:.3f}, transfer eps 0.2: {rates[0.2]:.3f}, eps 0.3: "
          f"{rates[0.3]:.3f}, {elapsed:.0f} CPU-s")
    assert abs(rates[0.3] - rate) <= 0.01, (rates, rate)
    assert 0.25 <= rates[0.2] < rates[0.3], rates  # measured 0.40-0.43: the budget matters


def test_lenet5_and_fgsm_remain_available(lenet, split):
    """The earlier defaults, by name: a LeNet-5 substitute attacked with FGSM (one step of exactly eps)."""
    from advkit.models import lenet5

    x, y, x_seed = split
    res = substitute(lenet, x[:20], y[:20], x_seed=x_seed[::5], arch="lenet5", attack="fgsm", tau=None, rho=1,
                     epochs=1, progress=False)
    shapes = [tuple(p.shape) for p in res.extra["substitute"].parameters()]
    assert shapes == [tuple(p.shape) for p in lenet5().parameters()] != [tuple(p.shape) for p in small_cnn().parameters()]
    assert res.params["arch"] == "lenet5" and res.params["substitute_attack"] == "fgsm"
    moved = (res.x_adv - x[:20]).abs().flatten(1).amax(1)
    ok = res.queries == 2  # the attacked ones (correct on the clean query)
    assert ok.any() and torch.all((moved[ok] - 0.3).abs() < 1e-6)  # FGSM: every attacked image moves by eps


def test_jacobian_augmentation_is_exported():
    import advkit.blackbox

    assert advkit.blackbox.jacobian_augmentation is jacobian_augmentation
    assert "jacobian_augmentation" in advkit.blackbox.__all__


def test_missing_classes_in_the_seed_set_are_warned_about(lenet, split):
    x, y, _ = split
    only = x[(y == 0) | (y == 1)][:20]
    with pytest.warns(RuntimeWarning, match="miss class"):
        substitute(lenet, x[:10], y[:10], x_seed=only, arch=tiny_mlp, rho=0, epochs=1, progress=False)


def test_target_keyword_is_accepted_as_none_and_refused_otherwise_before_any_query(lenet, split):
    x, y, x_seed = split
    kw = dict(x_seed=x_seed[::10], arch=tiny_mlp, rho=0, epochs=1, progress=False)
    a = substitute(lenet, x[:10], y[:10], **kw)
    b = substitute(lenet, x[:10], y[:10], target=None, **kw)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.pred, b.pred)
    counted = CountingModel(lenet).eval()
    target = (y[:10] + 1) % 10
    with pytest.raises(NotImplementedError, match=r"untargeted only.*advkit\.attacks\.pgd\(res\.extra\['substitute'\]"):
        substitute(counted, x[:10], y[:10], target=target, **kw)
    with pytest.raises(NotImplementedError, match="untargeted only"):
        substitute(counted, x[:10], y[:10], attack_kwargs={"target": target}, **kw)
    assert counted.rows == 0  # refused before the oracle was asked anything


def test_bad_input_says_what_to_fix(lenet, split):
    x, y, x_seed = split
    kw = dict(x_seed=x_seed, progress=False)
    with pytest.raises(ValueError, match="attack must be one of"):
        substitute(lenet, x[:5], y[:5], attack="cw", **kw)
    with pytest.raises(ValueError, match="unknown substitute architecture"):
        substitute(lenet, x[:5], y[:5], arch="vgg", **kw)
    with pytest.raises(ValueError, match="reservoir"):
        substitute(lenet, x[:5], y[:5], reservoir=(1,), **kw)
    with pytest.raises(ValueError, match="tau"):
        substitute(lenet, x[:5], y[:5], tau=0, **kw)
    with pytest.raises(ValueError, match="x_seed has images of shape"):
        substitute(lenet, x[:5], y[:5], x_seed=x_seed[:, :, :14], progress=False)
    with pytest.raises(ValueError, match="max_queries"):
        substitute(lenet, x[:5], y[:5], max_queries=0, **kw)
