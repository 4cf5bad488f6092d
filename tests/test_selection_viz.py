"""Sample selection (the thesis's protocol), plots and the eps slider."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from matplotlib import pyplot as plt
from torch import nn

from advkit import viz
from advkit.attacks import fgsm
from advkit.data import one_per_class


class Threshold(nn.Module):
    """Predicts class = round(9 * mean pixel): easy to reason about."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        k = (x.flatten(1).mean(1) * 9).round().long().clamp(0, 9)
        return torch.nn.functional.one_hot(k, 10).float() + self.dummy


def test_one_per_class_picks_correct_images_in_class_order():
    levels = torch.arange(10).repeat(3).float() / 9  # 30 images, 3 per class, constant value
    x = levels.view(-1, 1, 1, 1).expand(-1, 1, 4, 4).clone()
    y = torch.arange(10).repeat(3)
    y[0] = 5  # image 0 (value 0) is labelled 5: misclassified, must be skipped
    model = Threshold().eval()
    idx = one_per_class(model, x, y)
    assert y[idx].tolist() == list(range(10))
    assert 0 not in idx.tolist()
    assert idx.tolist()[:2] == [10, 1]  # first correct image of class 0 is #10, of class 1 is #1
    two = one_per_class(model, x, y, per_class=2)
    assert y[two].tolist() == [c for c in range(10) for _ in range(2)]
    assert torch.equal(one_per_class(model, x, y, seed=3), one_per_class(model, x, y, seed=3))
    with pytest.raises(ValueError, match="class 0 has only 2 correctly classified"):
        one_per_class(model, x, y, per_class=3)
    with pytest.raises(ValueError, match="training mode"):
        one_per_class(model.train(), x, y)


def test_show_images_titles_misclassified_in_red():
    x = torch.rand(4, 1, 8, 8)
    fig = viz.show_images(x, torch.tensor([1, 2, 3, 4]), torch.tensor([1, 0, 3, 0]), ncols=2)
    colors = [ax.title.get_color() for ax in fig.axes]
    texts = [ax.title.get_text() for ax in fig.axes]
    assert colors == ["green", "red", "green", "red"]
    assert texts[1] == "2→0"
    plt.close(fig)


def test_show_perturbations_and_curves_draw():
    x = torch.rand(3, 1, 8, 8)
    fig = viz.show_perturbations(x, (x + 0.1).clamp(0, 1), torch.tensor([0, 1, 2]), torch.tensor([0, 2, 2]))
    assert len(fig.axes) >= 9
    plt.close(fig)
    ax = viz.plot_curves([0, 0.1], {"a": [1.0, 0.5]})
    assert ax.lines[0].get_ydata().tolist() == [100.0, 50.0]
    plt.close("all")


@pytest.mark.parametrize("p", [0.25, 0.5, 1, 2, 4, math.inf])
def test_unit_ball_points_have_unit_norm(p):
    a, b = viz.unit_ball(p)
    if math.isinf(p):
        norms = np.maximum(np.abs(a), np.abs(b))
    else:
        norms = (np.abs(a) ** p + np.abs(b) ** p) ** (1 / p)
    assert np.allclose(norms, 1)
    for tip in ((1, 0), (0, 1), (-1, 0), (0, -1)):  # the spiky p < 1 balls must reach their tips
        assert np.min(np.hypot(a - tip[0], b - tip[1])) < 1e-2


def test_attack_slider_redraws_on_change(small_cnn):
    from advkit.widgets import attack_slider

    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    w = attack_slider(small_cnn, x, torch.arange(4), fgsm, eps_max=0.3, eps=0.05)
    slider, out = w.children
    assert len(out.outputs) == 1  # drawn at creation
    first = out.outputs[0]["data"]["image/png"]
    slider.value = 0.2
    assert len(out.outputs) == 1  # replaced, not appended
    assert out.outputs[0]["data"]["image/png"] != first
    plt.close("all")
