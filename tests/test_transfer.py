"""Transferability matrices: the diagonal is the white-box success rate, cells are rates on the right
subset, ensembles average logits, PGD with one full step is FGSM, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from advkit.attacks.fgsm import fgsm
from advkit.blackbox.transfer import Ensemble, transfer_matrix

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def batch(mnist_test):
    x, y = mnist_test
    return x[:200], y[:200]


@pytest.fixture(scope="module")
def nets(zoo_models):
    return {"lenet5": zoo_models["lenet5"], "fc500_150_10": zoo_models["fc500_150_10"]}


@pytest.fixture(scope="module")
def fgsm_matrix(nets, batch):
    x, y = batch
    return transfer_matrix(nets, nets, x, y, attack="fgsm", eps=0.2, ensembles=True, progress=False)


def correct(model, x, y):
    with torch.no_grad():
        return model(x).argmax(1) == y


def test_diagonal_is_the_white_box_success_rate_on_the_correctly_classified(fgsm_matrix, nets, batch):
    x, y = batch
    for name, model in nets.items():
        ok = correct(model, x, y)
        white = fgsm(model, x[ok], y[ok], eps=0.2).success.float().mean().item()
        assert fgsm_matrix.loc[name, name] == pytest.approx(white, abs=1e-7)
        assert fgsm_matrix.attrs["white_box"][name] == pytest.approx(white, abs=1e-7)


def test_cells_are_rates_on_the_images_both_models_classify_correctly(fgsm_matrix, nets, batch):
    x, y = batch
    assert list(fgsm_matrix.index) == ["lenet5", "fc500_150_10", "lenet5+fc500_150_10"]
    assert list(fgsm_matrix.columns) == ["lenet5", "fc500_150_10"]
    values = fgsm_matrix.to_numpy(dtype=float)
    assert ((values >= 0) & (values <= 1)).all()
    # an off-diagonal cell recomputed by hand
    src, tgt = nets["lenet5"], nets["fc500_150_10"]
    both = correct(src, x, y) & correct(tgt, x, y)
    ok_s = correct(src, x, y)
    x_adv = fgsm(src, x[ok_s], y[ok_s], eps=0.2).x_adv
    full = x.clone()
    full[ok_s] = x_adv
    expected = (~correct(tgt, full[both], y[both])).float().mean().item()
    assert fgsm_matrix.loc["lenet5", "fc500_150_10"] == pytest.approx(expected, abs=1e-7)
    assert int(fgsm_matrix.attrs["n"].loc["lenet5", "fc500_150_10"]) == int(both.sum())


def test_ensemble_averages_logits_and_is_a_source_row(nets, batch, fgsm_matrix):
    x, _ = batch
    a, b = nets["lenet5"], nets["fc500_150_10"]
    ens = Ensemble([a, b])
    assert not ens.training
    with torch.no_grad():
        torch.testing.assert_close(ens(x[:8]), (a(x[:8]) + b(x[:8])) / 2)
        torch.testing.assert_close(Ensemble([a, b], weights=[3, 1])(x[:8]), 0.75 * a(x[:8]) + 0.25 * b(x[:8]))
    row = fgsm_matrix.loc["lenet5+fc500_150_10"]
    assert row.notna().all()
    # named ensembles; three sources give the full ensemble and the leave-one-out ones
    three = {**nets, "lenet5_copy": a}
    df = transfer_matrix(three, {"fc500_150_10": b}, x[:40], batch[1][:40], eps=0.1, ensembles=True, progress=False)
    assert "lenet5+fc500_150_10+lenet5_copy" in df.index and "lenet5+lenet5_copy" in df.index
    df = transfer_matrix(nets, {"fc500_150_10": b}, x[:40], batch[1][:40], eps=0.1,
                         ensembles=[("fc500_150_10", "lenet5")], progress=False)
    assert list(df.index) == ["lenet5", "fc500_150_10", "fc500_150_10+lenet5"]


def test_pgd_with_one_full_step_is_fgsm_and_a_callable_attack_is_used_as_given(nets, batch, fgsm_matrix):
    x, y = batch
    one_step = transfer_matrix(nets, nets, x, y, attack="pgd", eps=0.2, eps_step=0.2, max_iter=1, ensembles=True,
                               progress=False)
    assert one_step.equals(fgsm_matrix)
    calls = []

    def my_fgsm(model, xs, ys, **kw):
        calls.append(len(xs))
        return fgsm(model, xs, ys, eps=0.2)

    df = transfer_matrix(nets, nets, x, y, attack=my_fgsm, ensembles=True, progress=False)
    assert df.equals(fgsm_matrix) and len(calls) == 3


def test_pgd_white_box_diagonal_is_at_least_the_one_step_attack(nets, batch, fgsm_matrix):
    """PGD keeps the last iterate, so it need not dominate FGSM per image; on the white-box diagonal with
    40 small steps it does on these models (measured 1.00 vs FGSM's rates)."""
    x, y = batch
    df = transfer_matrix(nets, nets, x, y, attack="pgd", eps=0.2, eps_step=0.01, max_iter=40, progress=False)
    for name in nets:
        assert df.loc[name, name] >= fgsm_matrix.loc[name, name]


def test_cw_with_confidence(nets, batch):
    x, y = batch
    df = transfer_matrix(nets, nets, x[:20], y[:20], attack="cw", kappa=5.0, learning_rate=0.1, max_iterations=100,
                         binary_search_steps=3, initial_const=1.0, progress=False)
    assert df.attrs["eps"] is None
    for name in nets:
        assert df.loc[name, name] >= 0.9  # C&W with a margin nearly always succeeds white-box
    values = df.to_numpy(dtype=float)
    assert ((values >= 0) & (values <= 1)).all()


def test_bad_input_says_what_to_fix(nets, batch):
    x, y = batch
    with pytest.raises(ValueError, match="attack must be one of"):
        transfer_matrix(nets, nets, x, y, attack="jsma")
    with pytest.raises(ValueError, match="non-empty dict"):
        transfer_matrix({}, nets, x, y)
    with pytest.raises(ValueError, match="two or more of the sources"):
        transfer_matrix(nets, nets, x, y, ensembles=[("lenet5", "resnet")])
    with pytest.raises(ValueError, match="at least two sources"):
        transfer_matrix({"lenet5": nets["lenet5"]}, nets, x, y, ensembles=True)
    with pytest.raises(ValueError, match="eps"):
        transfer_matrix(nets, nets, x, y, eps=-1)
    assert math.isnan(transfer_matrix(nets, nets, x[:1], (y[:1] + 1) % 10, progress=False).iloc[0, 0])
