"""The self-checking evaluation: each of audit()'s checks fires on a model built to show its symptom,
none fires on honest models, and the gradient-masking demo behaves as the lecture says (white-box
PGD sees robustness; Square and BPDA show there is none)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advkit.attacks import pgd
from advkit.blackbox import square
from advkit.defenses.masking import InputStaircase, Staircase, StaircaseModel, staircase_activations
from advkit.evaluation import CHECKS, AuditReport, GradientMaskingError, audit

pytestmark = pytest.mark.usefixtures("one_thread")

EPS = 0.3


@pytest.fixture(scope="module")
def digits(mnist_test):
    x, y = mnist_test
    return x[:30], y[:30]


# ---------------------------------------------------------------------------- models with a symptom


class Saturated(nn.Module):
    """Logits times 100 (the effect of defensive distillation's temperature): the softmax
    saturates and the cross-entropy gradient underflows to exactly 0 on confident inputs."""

    def __init__(self, inner: nn.Module, scale: float = 100.0):
        super().__init__()
        self.inner, self.scale = inner, scale

    def forward(self, x):
        return self.scale * self.inner(x)


class Rugged(nn.Module):
    """A loss surface with ridges: each pixel goes through a triangle wave of period 0.03 (amplitude
    0.03, so decisions barely change) whose falling edge is steep and 0.009 wide. Small steps
    (PGD-100: eps/40 = 0.0075) cannot cross a falling edge and stop at the first ridge; large steps
    (PGD-20: eps/8 = 0.0375) jump across them and mostly land on rising edges. Deterministic."""

    def __init__(self, inner: nn.Module, period: float = 0.03, drop: float = 0.3):
        super().__init__()
        self.inner, self.period, self.drop = inner, period, drop

    def forward(self, x):
        u = torch.frac(x / self.period)
        tri = torch.where(u < 1 - self.drop, u / (1 - self.drop), (1 - u) / self.drop)
        return self.inner(x + self.period * tri)


class Noisy(nn.Module):
    """Gaussian input noise (sigma 0.3) drawn afresh at every call: a randomised defense."""

    def __init__(self, inner: nn.Module, sigma: float = 0.3):
        super().__init__()
        self.inner, self.sigma = inner, sigma
        self.gen = torch.Generator().manual_seed(0)

    def forward(self, x):
        return self.inner((x + self.sigma * torch.randn(x.shape, generator=self.gen).to(x)).clamp(0, 1))


class Detached(nn.Module):
    """Outputs without autograd history: there is no gradient at all."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        with torch.no_grad():
            return self.inner(x)


def run(model, digits, **kw) -> AuditReport:
    x, y = digits
    kw.setdefault("eps", EPS)
    with pytest.warns(RuntimeWarning, match="audit:") if kw.pop("flagged", True) else _nothing():
        return audit(model.eval(), x, y, progress=False, **kw)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.fixture(scope="module")
def staircase_report(lenet, digits):
    return run(StaircaseModel(lenet, levels=16), digits)


# ---------------------------------------------------------------------------- the gradient-masking demo


@pytest.mark.parametrize("kind", ["input", "activations"])
def test_staircase_masks_the_gradient_and_black_box_and_bpda_break_it(lenet, digits, kind):
    """Measured on these 30 digits at eps 0.3 (both kinds): PGD-20 100%, Square-500 0%, BPDA-PGD-20 0%;
    on 100 digits: 100%, 1%, 0%."""
    x, y = digits
    if kind == "input":
        masked, adaptive = StaircaseModel(lenet, levels=16), StaircaseModel(lenet, levels=16, bpda=True)
    else:
        masked, adaptive = staircase_activations(lenet, 0.1), staircase_activations(lenet, 0.1, bpda=True)
    with torch.no_grad():
        assert torch.equal(masked(x), adaptive(x)), "BPDA changes the backward pass only"
        agree = (masked(x).argmax(1) == lenet(x).argmax(1)).float().mean().item()
    assert agree >= 0.95, "the staircase keeps the network's decisions"
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(nn.functional.cross_entropy(masked(xr), y), xr)
    assert g.abs().max() == 0, "zero gradient almost everywhere: exactly zero at the digits"

    with pytest.warns(RuntimeWarning, match="zero input gradient"):
        white = pgd(masked, x, y, eps=EPS, eps_step=EPS / 8, max_iter=20)
    black = square(masked, x, y, eps=EPS, max_queries=500, progress=False)
    bpda = pgd(adaptive, x, y, eps=EPS, eps_step=EPS / 8, max_iter=20)
    assert white.robust_accuracy >= 0.9, "white-box PGD reports (false) robustness"
    assert black.robust_accuracy <= 0.15, "a score-based black-box attack is not fooled"
    assert bpda.robust_accuracy <= 0.05, "BPDA restores the gradient"
    assert (masked.training, staircase_activations(lenet).training) == (False, False)


def test_staircase_pieces():
    x = torch.tensor([0.0, 0.06, 0.0625, 0.5, 0.99, 1.0]).view(1, 1, 1, 6)
    torch.testing.assert_close(InputStaircase(16)(x), torch.tensor([0, 0, 1, 8, 15, 15.0]).view(1, 1, 1, 6) / 15)
    z = torch.tensor([-1.0, 0.05, 0.15, 0.31]).requires_grad_(True)
    out = Staircase(0.1, bpda=True)(z)
    torch.testing.assert_close(out, torch.tensor([0, 0, 0.1, 0.3]))
    (g,) = torch.autograd.grad(out.sum(), z)
    assert torch.equal(g, torch.tensor([0.0, 1, 1, 1])), "BPDA: the ReLU's gradient"
    with pytest.raises(ValueError, match="levels"):
        InputStaircase(1)
    with pytest.raises(ValueError, match="no nn.ReLU"):
        staircase_activations(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))


# ---------------------------------------------------------------------------- honest models: no flag


@pytest.mark.parametrize("eps, norm", [(0.1, "inf"), (0.2, "inf"), (1.5, 2)])
def test_an_honest_standard_model_triggers_no_check(lenet, digits, eps, norm):
    """Also measured on 100 other test digits for LeNet-5, FC500-150-10 and the CNN at Linf 0.05,
    0.1, 0.15, 0.2, 0.3 and L2 1 and 2: no flag in any of the 21 audits."""
    rep = run(lenet, digits, eps=eps, norm=norm, flagged=False)
    assert rep.flags == [] and rep.ok
    assert all(not c.flagged for c in rep.checks.values())
    acc = rep.accuracy
    assert acc["clean"] == 1.0
    assert rep.robust_accuracy <= min(v for k, v in acc.items() if "@" not in k) + 1e-9
    assert acc[f"pgd-20@{rep.settings['large_eps']:g}"] == 0.0


def test_bpda_clears_the_staircase_and_a_margin_loss_clears_the_saturated_softmax(lenet, digits):
    """The flags point at the fix: with the gradient restored the audit is clean, and robustness
    is gone (0% at eps 0.3 for both)."""
    fixed = run(StaircaseModel(lenet, levels=16, bpda=True), digits, flagged=False)
    assert fixed.flags == [] and fixed.robust_accuracy == 0.0
    margin = run(Saturated(lenet), digits, loss="margin", flagged=False)
    assert margin.flags == [] and margin.robust_accuracy == 0.0


# ---------------------------------------------------------------------------- each check fires


def test_zero_gradients_fires_on_the_staircase_model(staircase_report):
    c = staircase_report.checks["zero_gradients"]
    assert c.flagged and c.evidence["inputs_with_zero_gradient"] == "30/30"
    assert "zero_gradients" in staircase_report.flags


def test_blackbox_beats_whitebox_fires_on_the_staircase_model(staircase_report):
    """Measured: Square-500 0%, both PGDs 100% (all 30 digits fooled only by Square)."""
    c = staircase_report.checks["blackbox_beats_whitebox"]
    assert c.flagged
    assert c.evidence["acc_square"] <= 0.15 and c.evidence["acc_best_pgd"] >= 0.9
    assert c.evidence["fooled_only_by_square"] >= 20
    assert staircase_report.robust_accuracy <= 0.15, "the worst case takes the black-box result"


def test_zero_gradients_fires_when_there_is_no_gradient_at_all(lenet, digits):
    rep = run(Detached(lenet), digits)
    assert {"zero_gradients", "blackbox_beats_whitebox"} <= set(rep.flags)
    assert "no gradient" in rep.checks["zero_gradients"].evidence["note"]


def test_no_zero_at_large_eps_fires_on_a_saturated_softmax(lenet, digits):
    """Measured: PGD-20 at eps 0.5 leaves 100% (every CE gradient is exactly 0), the threshold is 10%."""
    rep = run(Saturated(lenet), digits)
    c = rep.checks["no_zero_at_large_eps"]
    assert c.flagged and c.evidence["large_eps"] == 0.5 and c.evidence["acc_at_large_eps"] >= 0.9
    assert "zero_gradients" in rep.flags  # the cause, reported too


def test_more_steps_worse_fires_on_a_rugged_loss_surface(lenet, digits):
    """Measured: PGD-20 63%, PGD-100 from x and one random start 97% (10 digits fooled only by the
    short run); no zero gradient, deterministic."""
    rep = run(Rugged(lenet), digits)
    c = rep.checks["more_steps_worse"]
    assert c.flagged and c.evidence["acc_long"] - c.evidence["acc_short"] >= 0.2
    assert c.evidence["fooled_only_by_short"] >= 6
    assert "zero_gradients" not in rep.flags and "randomised_model" not in rep.flags


def test_randomised_model_fires_on_input_noise_and_so_does_more_steps_worse(lenet, digits):
    """Measured: the normalised logits move by 0.54 and 2 of 30 predictions change over 5 calls.
    The noise also makes more steps look worse (PGD-20 20%, PGD-100 + restart 47%): with early
    stopping, a long run of small steps stops at the first lucky draw that calls a point near the
    boundary adversarial, and a fresh draw then classifies it correctly."""
    rep = run(Noisy(lenet), digits)
    c = rep.checks["randomised_model"]
    assert c.flagged and c.evidence["max_logit_change"] > 0.1
    assert "zero_gradients" not in rep.flags
    m = rep.checks["more_steps_worse"]
    assert m.flagged and m.evidence["acc_long"] - m.evidence["acc_short"] >= 0.1


# ---------------------------------------------------------------------------- the report and the API


def test_the_report_reads_as_text_and_as_tables(staircase_report):
    rep = staircase_report
    text = repr(rep)
    assert text.startswith("AuditReport(eps=0.3, norm=inf, n=30")
    for name in CHECKS:
        assert name in text
    assert "[FLAG] zero_gradients" in text and "-> zero_gradients:" in text
    checks = rep.to_frame()
    assert list(checks.index) == list(CHECKS) and list(checks.columns) == ["flagged", "rule", "evidence"]
    assert checks.loc["zero_gradients", "flagged"]
    acc = rep.to_frame("accuracy")
    assert list(acc.index[:2]) == ["clean", "pgd-20"] and acc.index[-1].startswith("worst case")
    assert set(rep.results) == set(rep.accuracy) - {"clean"}
    with pytest.raises(ValueError, match="checks"):
        rep.to_frame("plots")


def test_raise_on_flag_raises_with_the_report_and_only_then(lenet, digits):
    x, y = digits
    with pytest.raises(GradientMaskingError) as err:
        audit(StaircaseModel(lenet), x[:10], y[:10], eps=EPS, raise_on_flag=True, progress=False,
              square_queries=100)
    assert "zero_gradients" in err.value.report.flags and "zero_gradients" in str(err.value)
    rep = audit(lenet, x[:10], y[:10], eps=EPS, raise_on_flag=True, progress=False, square_queries=100)
    assert rep.ok
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rep = audit(StaircaseModel(lenet), x[:10], y[:10], eps=EPS, warn=False, progress=False, square_queries=100)
    assert rep.flags


def test_bad_arguments_say_what_to_fix(lenet, digits):
    x, y = digits
    with pytest.raises(ValueError, match="eps must be > 0"):
        audit(lenet, x, y, eps=0.0)
    with pytest.raises(ValueError, match="norm"):
        audit(lenet, x, y, eps=0.3, norm=1)
    with pytest.raises(ValueError, match="repeats"):
        audit(lenet, x, y, eps=0.3, repeats=1)
    with pytest.raises(ValueError, match="n must be"):
        audit(lenet, x, y, eps=0.3, n=0)
    with pytest.raises(ValueError, match="loss"):
        audit(lenet, x, y, eps=0.3, loss="hinge")
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))  # training mode
    with pytest.raises(ValueError, match="training mode"):
        audit(net, x, y, eps=0.3)
