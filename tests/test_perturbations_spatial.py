"""advkit.perturbations.spatial: rotation + translation and the Engstrom et al. (2019) attack.

Pinned against closed forms (integer shifts move pixels exactly, 180 degrees = the double flip,
the order rotate-then-translate of the authors' code), a brute-force search with the paper's
selection rule, and Foolbox 3's ``SpatialAttack`` on the zoo's LeNet-5 (rotation-only grid,
where both use the same transformation: the set of fooled images must be identical).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import advkit.perturbations as P
from conftest import linear_model


def shift(x: torch.Tensor, tx: int, ty: int) -> torch.Tensor:
    """Move the content tx pixels right and ty down, black fill (by slicing)."""
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    out[..., max(ty, 0):h + min(ty, 0), max(tx, 0):w + min(tx, 0)] = x[..., max(-ty, 0):h - max(ty, 0), max(-tx, 0):w - max(tx, 0)]
    return out


@pytest.fixture
def imgs() -> torch.Tensor:
    return torch.rand(3, 2, 10, 10, generator=torch.Generator().manual_seed(0))


def test_identity_and_exact_integer_shifts(imgs):
    torch.testing.assert_close(P.rotate_translate(imgs), imgs, atol=1e-6, rtol=0)
    for tx, ty in [(1, 0), (0, 1), (-2, 3), (3, -3)]:
        torch.testing.assert_close(P.rotate_translate(imgs, 0, tx, ty), shift(imgs, tx, ty), atol=1e-6, rtol=0)


def test_rotation_convention_and_order(imgs):
    torch.testing.assert_close(P.rotate_translate(imgs, 180), imgs.flip(2, 3), atol=1e-6, rtol=0)
    # the same counter-clockwise convention as the thesis's rotate (here with reflection padding)
    torch.testing.assert_close(P.rotate_translate(imgs, 37, padding_mode="reflection"), P.rotate(imgs, 37),
                               atol=1e-5, rtol=0)
    # rotate first, then translate (authors' resnet.py): shift(rot90(x))
    torch.testing.assert_close(P.rotate_translate(imgs, 90, 2, -1), shift(torch.rot90(imgs, 1, (2, 3)), 2, -1),
                               atol=1e-6, rtol=0)
    # per-image parameters equal one image at a time
    out = P.rotate_translate(imgs, torch.tensor([10.0, -20, 30]), torch.tensor([1.0, 0, -1.5]), 0.5)
    for i, (r, t) in enumerate([(10.0, 1.0), (-20.0, 0.0), (30.0, -1.5)]):
        torch.testing.assert_close(out[i:i + 1], P.rotate_translate(imgs[i:i + 1], r, t, 0.5), atol=1e-6, rtol=0)


def test_paper_grid():
    g = P.spatial_grid()
    assert g.shape == (775, 3)
    ref = list(itertools.product(np.linspace(-3, 3, 5), np.linspace(-3, 3, 5), np.linspace(-30, 30, 31)))
    np.testing.assert_allclose(g.numpy(), np.array(ref), atol=1e-12)
    assert (P.spatial.MAX_ROTATION, P.spatial.MAX_TRANSLATION, P.spatial.NUM_ROTATIONS,
            P.spatial.NUM_TRANSLATIONS, P.spatial.WORST_OF_K) == (30, 3, 31, 5, 10)


def brute_force(model, x, y, cands, target=None):
    """The selection rule, one image and one candidate at a time."""
    chosen = []
    for i in range(len(x)):
        best = None
        for t in cands[:, i] if cands.dim() == 3 else cands:
            xt = P.rotate_translate(x[i:i + 1], float(t[2]), float(t[0]), float(t[1]))
            logits = model(xt)
            if target is None:
                loss, ok = F.cross_entropy(logits, y[i:i + 1]).item(), bool(logits.argmax(1) != y[i])
            else:
                loss, ok = -F.cross_entropy(logits, target[i:i + 1]).item(), bool(logits.argmax(1) == target[i])
            if best is None or (ok, loss) > best[0]:
                best = ((ok, loss), t)
        chosen.append(best[1])
    return torch.stack(chosen).float()


@pytest.mark.parametrize("targeted", [False, True])
def test_grid_choice_equals_brute_force(targeted):
    model = linear_model(d=144, k=5, seed=1)
    x = torch.rand(6, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    y = model(x).argmax(1)
    target = (y + 1) % 5 if targeted else None
    kw = dict(max_rotation=40, max_translation=2, num_rotations=5, num_translations=3)
    res = P.spatial_attack(model, x, y, target=target, **kw)
    ref = brute_force(model, x, y, P.spatial_grid(**kw), target)
    torch.testing.assert_close(res.extra["transform"], ref)
    t = res.extra["transform"]
    torch.testing.assert_close(res.x_adv, P.rotate_translate(x, t[:, 2], t[:, 0], t[:, 1]), atol=1e-6, rtol=0)
    assert (res.queries == 45).all() and res.attack == "spatial_grid"
    assert res.success.any()  # the linear model is not spatially robust


class MeanIntensityModel(nn.Module):
    """Logits chosen by the image's mean intensity: a correct but uncertain prediction (loss 1.09)
    at mean 0.8 and a wrong, less uncertain one (loss 0.80) at mean 0.64."""

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3))[:, None]
        a = torch.tensor([5.0, 0.0, 0.0])
        b = torch.tensor([0.01, 0.0, 0.0])
        c = torch.tensor([0.0, 0.02, -1.6])
        return torch.where(m > 0.9, a, torch.where(m > 0.7, b, c))


def test_a_fooling_candidate_beats_a_higher_loss_correct_one():
    model = MeanIntensityModel().eval()
    x = torch.ones(1, 1, 5, 5)   # zero fill: a 1-pixel shift on one axis gives mean 0.8, on both 0.64
    y = torch.tensor([0])
    res = P.spatial_attack(model, x, y, max_rotation=0, num_rotations=1, max_translation=1, num_translations=3)
    assert res.success.item() and res.pred.item() == 1
    assert res.extra["transform"][0, :2].abs().tolist() == [1.0, 1.0]
    assert F.cross_entropy(model(x * 0 + 0.8), y) > F.cross_entropy(model(res.x_adv), y)  # not the max loss


def test_worst_of_k_seeded_within_the_box_and_brute_force():
    model = linear_model(d=144, k=5, seed=2)
    x = torch.rand(5, 1, 12, 12, generator=torch.Generator().manual_seed(2))
    y = model(x).argmax(1)
    a = P.spatial_attack(model, x, y, k=10, seed=3)
    b = P.spatial_attack(model, x, y, k=10, seed=3)
    c = P.spatial_attack(model, x, y, k=10, seed=4)
    assert torch.equal(a.x_adv, b.x_adv) and not torch.equal(a.extra["transform"], c.extra["transform"])
    t = a.extra["transform"]
    assert (t[:, :2].abs() <= 3).all() and (t[:, 2].abs() <= 30).all()
    assert len(set(t[:, 2].tolist())) == 5  # drawn per image, not one draw for the batch
    gen = torch.Generator().manual_seed(3)
    cands = (torch.rand(10, 5, 3, generator=gen, dtype=torch.float64) * 2 - 1) * torch.tensor([3.0, 3.0, 30.0], dtype=torch.float64)
    torch.testing.assert_close(t, brute_force(model, x, y, cands))
    assert a.attack == "worst_of_k" and (a.queries == 10).all()


def test_bad_input():
    model = linear_model(d=144, k=5)
    x = torch.rand(2, 1, 12, 12)
    y = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="k"):
        P.spatial_attack(model, x, y, k=0)
    with pytest.raises(ValueError, match="num_rotations"):
        P.spatial_attack(model, x, y, num_rotations=0)
    with pytest.raises(ValueError, match="max_translation"):
        P.spatial_attack(model, x, y, max_translation=-1)
    with pytest.raises(ValueError, match="padding_mode"):
        P.rotate_translate(x, 10, padding_mode="wrap")
    with pytest.raises(ValueError, match="training mode"):
        P.spatial_attack(nn.Sequential(nn.Flatten(), nn.Linear(144, 5)).train(), x, y)


@pytest.mark.filterwarnings("ignore:torch.meshgrid")  # inside Foolbox's transform
def test_lenet_rotation_grid_matches_foolbox_and_grid_beats_worst_of_10(lenet, mnist_test, one_thread):
    fb = pytest.importorskip("foolbox")
    x, y = mnist_test
    x, y = x[:50], y[:50]
    clean = (lenet(x).argmax(1) == y).float().mean().item()
    # rotation only: our transformation and Foolbox's coincide (no translation, square image)
    ours = P.spatial_attack(lenet, x, y, max_translation=0, num_translations=1, max_rotation=30, num_rotations=31)
    attack = fb.attacks.SpatialAttack(max_translation=0, num_translations=1, max_rotation=30, num_rotations=31)
    _, _, fooled = attack(fb.PyTorchModel(lenet, bounds=(0, 1)), x, fb.criteria.Misclassification(y))
    assert torch.equal(ours.success, fooled.bool())
    grid = P.spatial_attack(lenet, x, y)                      # 775 candidates
    wok = P.spatial_attack(lenet, x, y, k=10, seed=0)         # worst-of-10
    assert grid.robust_accuracy <= wok.robust_accuracy <= clean
    assert grid.robust_accuracy < clean - 0.3                  # a rotation and a translation suffice
