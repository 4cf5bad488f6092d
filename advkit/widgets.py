"""Interactive widgets for the labs (ipywidgets)."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .attacks.result import AttackResult


def attack_slider(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: Callable[..., AttackResult],
    *,
    eps_max: float = 0.5,
    eps_step: float = 0.01,
    eps: float = 0.1,
    class_names: Sequence[str] | None = None,
    **attack_kwargs,
):
    """A slider over eps that re-runs ``attack`` on ``x`` and redraws the images at every move.

    Returns the widget (display it as the last expression of a cell). The figure is drawn
    once at creation into the widget's output area. A notebook executed headless (papermill,
    nbval) keeps that picture in the widget state only, so a saved notebook needs a live
    kernel (or a static figure in a separate cell) to show it.

    Example
    -------
    >>> attack_slider(model, x[:8], y[:8], fgsm, eps_max=0.3)   # doctest: +SKIP
    """
    import ipywidgets as widgets
    from IPython.display import Image
    from matplotlib import pyplot as plt

    from .viz import show_images

    slider = widgets.FloatSlider(value=eps, min=0.0, max=eps_max, step=eps_step,
                                 description="ε", readout_format=".3f", continuous_update=False)
    out = widgets.Output()

    def redraw(change=None) -> None:
        res = attack(model, x, y, eps=slider.value, **attack_kwargs)
        fig = show_images(res.x_adv, y, res.pred, class_names=class_names,
                          suptitle=f"ε = {slider.value:.3f}: {int(res.success.sum())}/{len(x)} fooled")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80)
        plt.close(fig)
        out.outputs = ()  # replace the picture: a PNG, so it works in a kernel and headless alike
        out.append_display_data(Image(data=buf.getvalue(), format="png"))

    slider.observe(redraw, names="value")
    redraw()
    return widgets.VBox([slider, out])
