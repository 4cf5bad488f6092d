"""Pictures: image grids with predictions, perturbation maps, curves and unit balls."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib import pyplot as plt


def _to_hwc(img: torch.Tensor) -> np.ndarray:
    img = img.detach().cpu().float()
    if img.dim() == 3 and img.shape[0] in (1, 3):
        img = img.permute(1, 2, 0)
    arr = img.numpy()
    return arr[..., 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr


def _name(label: int, class_names: Sequence[str] | None) -> str:
    return class_names[label] if class_names is not None else str(label)


def show_images(
    x: torch.Tensor,
    labels: torch.Tensor | Sequence[int] | None = None,
    preds: torch.Tensor | Sequence[int] | None = None,
    *,
    class_names: Sequence[str] | None = None,
    ncols: int = 10,
    titles: Sequence[str] | None = None,
    size: float = 1.4,
    suptitle: str | None = None,
):
    """A grid of images, titled ``true -> predicted``; misclassified ones in red.

    Parameters
    ----------
    x : Tensor
        ``N x C x H x W`` in [0, 1] (C = 1 or 3).
    labels, preds : optional
        True and predicted labels. A title is red where they differ.
    class_names : optional
        Names to show instead of numbers.
    titles : optional
        Custom titles (override labels/preds text; colours still follow labels/preds).

    Returns
    -------
    matplotlib.figure.Figure
    """
    n = len(x)
    if n == 0:
        raise ValueError("show_images needs at least one image")
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows * 1.15), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(_to_hwc(x[i]), cmap="gray", vmin=0, vmax=1)
        color = "black"
        text = ""
        if labels is not None:
            t = int(labels[i])
            text = _name(t, class_names)
            if preds is not None:
                p = int(preds[i])
                text += f"→{_name(p, class_names)}"
                color = "red" if p != t else "green"
        elif preds is not None:
            text = _name(int(preds[i]), class_names)
        if titles is not None:
            text = titles[i]
        ax.set_title(text, color=color, fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def show_perturbations(
    x: torch.Tensor,
    x_adv: torch.Tensor,
    labels: torch.Tensor | None = None,
    preds_adv: torch.Tensor | None = None,
    *,
    class_names: Sequence[str] | None = None,
    size: float = 1.6,
):
    """Three rows: originals, the perturbation ``x_adv - x`` as a heat map, adversarial images.

    The heat map uses a diverging colour map centred on 0 with a shared scale, so the
    colour bar reads in pixel units.
    """
    n = len(x)
    delta = (x_adv - x).detach().cpu()
    if delta.dim() == 4:
        delta = delta.mean(1)  # average the channels for the heat map
    lim = max(delta.abs().max().item(), 1e-8)
    fig, axes = plt.subplots(3, n, figsize=(size * n, size * 3.3), squeeze=False)
    for i in range(n):
        axes[0, i].imshow(_to_hwc(x[i]), cmap="gray", vmin=0, vmax=1)
        im = axes[1, i].imshow(delta[i].numpy(), cmap="seismic", vmin=-lim, vmax=lim)
        axes[2, i].imshow(_to_hwc(x_adv[i]), cmap="gray", vmin=0, vmax=1)
        if labels is not None:
            axes[0, i].set_title(_name(int(labels[i]), class_names), fontsize=9)
        if preds_adv is not None:
            wrong = labels is not None and int(preds_adv[i]) != int(labels[i])
            axes[2, i].set_title(_name(int(preds_adv[i]), class_names), fontsize=9,
                                 color="red" if wrong else "green")
        for r in range(3):
            axes[r, i].axis("off")
    axes[0, 0].text(-0.3, 0.5, "x", transform=axes[0, 0].transAxes, ha="right", va="center")
    axes[1, 0].text(-0.3, 0.5, "δ", transform=axes[1, 0].transAxes, ha="right", va="center")
    axes[2, 0].text(-0.3, 0.5, "x+δ", transform=axes[2, 0].transAxes, ha="right", va="center")
    fig.colorbar(im, ax=axes[1, :].tolist(), shrink=0.8, label="δ (pixel units)")
    return fig


def plot_curves(
    xs: Sequence[float],
    curves: Mapping[str, Sequence[float]],
    *,
    xlabel: str = "ε",
    ylabel: str = "accuracy",
    title: str | None = None,
    ax=None,
    percent: bool = True,
    styles: Mapping[str, str] | None = None,
):
    """Several named curves over the same x values (e.g. accuracy vs eps per model/attack)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, ys in curves.items():
        ys = np.asarray([float(v) for v in ys]) * (100 if percent else 1)
        ax.plot(xs, ys, (styles or {}).get(name, "o-"), label=name, markersize=4)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel + (" (%)" if percent else ""))
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return ax


def unit_ball(p: float, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Points on the boundary of the 2-D unit ball ``{|a|^p + |b|^p = 1}`` (p > 0 or inf)."""
    if not (p > 0):
        raise ValueError(f"p must be > 0 (or inf), got {p}")
    n = 4 * math.ceil((n - 1) / 4) + 1  # include the four axis directions exactly
    t = np.linspace(0, 2 * np.pi, n)
    c, s = np.cos(t), np.sin(t)
    if math.isinf(p):
        r = 1 / np.maximum(np.abs(c), np.abs(s))
        return r * c, r * s
    # (sign(c)|c|^(2/p), sign(s)|s|^(2/p)) lies exactly on the ball and reaches its tips on the
    # axes, which equally spaced angles miss for the spiky p < 1 balls
    return np.sign(c) * np.abs(c) ** (2 / p), np.sign(s) * np.abs(s) ** (2 / p)


def plot_unit_balls(ps: Sequence[float] = (0.25, 0.5, 1, 2, 4, math.inf), *, ax=None):
    """Draw the 2-D unit balls of several Lp (quasi-)norms on one set of axes."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4.5))
    for p in ps:
        a, b = unit_ball(p)
        ax.plot(a, b, label="p = ∞" if math.isinf(p) else f"p = {p:g}")
    ax.set_aspect("equal")
    ax.axhline(0, color="gray", lw=0.5)
    ax.axvline(0, color="gray", lw=0.5)
    ax.set_title("unit balls ‖δ‖ₚ = 1")
    ax.legend(fontsize=8, loc="upper right")
    return ax


def show_grid(
    images: Sequence[torch.Tensor],
    *,
    row_titles: Sequence[str] | None = None,
    col_titles: Sequence[Sequence[str]] | Sequence[str] | None = None,
    red: Sequence[Sequence[bool]] | None = None,
    size: float = 1.3,
    suptitle: str | None = None,
):
    """Rows of images of varying length, e.g. one row per perturbation and one column per level.

    Parameters
    ----------
    images : sequence of Tensor
        One ``K x C x H x W`` batch in [0, 1] per row (C = 1 or 3); rows may differ in ``K``
        and in image size.
    row_titles : optional
        One label per row, written left of it.
    col_titles : optional
        Titles of the columns: one list per row, or one list shared by all rows.
    red : optional
        ``red[r][k]`` true draws that title in red (e.g. a misclassified image).

    Returns
    -------
    matplotlib.figure.Figure
    """
    if len(images) == 0:
        raise ValueError("show_grid needs at least one row of images")
    ncols = max(len(r) for r in images)
    nrows = len(images)
    if row_titles is not None and len(row_titles) != nrows:
        raise ValueError(f"row_titles has {len(row_titles)} entries for {nrows} rows")
    shared = col_titles is not None and len(col_titles) > 0 and isinstance(col_titles[0], str)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols + (1.2 if row_titles else 0), size * nrows * 1.2),
                             squeeze=False)
    for r, row in enumerate(images):
        for k in range(ncols):
            ax = axes[r, k]
            ax.set_xticks([])
            ax.set_yticks([])
            if k >= len(row):
                ax.axis("off")
                continue
            ax.imshow(_to_hwc(row[k]), cmap="gray", vmin=0, vmax=1)
            for spine in ax.spines.values():
                spine.set_visible(False)
            if col_titles is not None:
                titles = col_titles if shared else col_titles[r]
                if k < len(titles):
                    color = "red" if red is not None and red[r][k] else "black"
                    ax.set_title(titles[k], fontsize=8, color=color)
        if row_titles is not None:
            axes[r, 0].set_ylabel(row_titles[r], fontsize=9, rotation=0, ha="right", va="center")
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def plot_sweep(
    rows: Sequence[Mapping],
    *,
    metric: str = "accuracy",
    group: str = "model",
    level: str = "level",
    facet: str = "perturbation",
    percent: bool | None = None,
    size: tuple[float, float] = (3.0, 2.6),
    ylim: tuple[float, float] | None = None,
    ncols: int | None = None,
):
    """One panel per perturbation, ``metric`` against its level, one line per ``group`` value.

    ``rows`` are the dicts of :func:`advkit.perturbations.sweep` (add a ``model`` key to each
    to compare models). ``percent`` (default: for ``accuracy`` and ``mean_true_prob``) shows
    the metric in percent. ``ncols`` wraps the panels into rows of that many (default: one row).

    Returns
    -------
    matplotlib.figure.Figure
    """
    if not rows:
        raise ValueError("plot_sweep needs rows, e.g. from advkit.perturbations.sweep")
    if percent is None:
        percent = metric in ("accuracy", "mean_true_prob", "error")
    facets = list(dict.fromkeys(r[facet] for r in rows))
    groups = list(dict.fromkeys(r.get(group) for r in rows))
    if ncols is not None and (isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1):
        raise ValueError(f"ncols must be a positive int, got {ncols!r}")
    ncols = min(ncols or len(facets), len(facets))
    nrows = math.ceil(len(facets) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    for ax in axes.flat[len(facets):]:
        ax.axis("off")
    for ax, f in zip(axes.flat, facets):
        for gi, g in enumerate(groups):
            sel = [r for r in rows if r[facet] == f and r.get(group) == g]
            if not sel:
                continue
            xs = [float(r[level]) for r in sel]
            ys = np.asarray([float(r[metric]) for r in sel]) * (100 if percent else 1)
            ax.plot(xs, ys, "o-", color=f"C{gi}", markersize=4, label=str(g) if g is not None else metric)
        ax.set_title(str(f), fontsize=10)
        ax.set_xlabel(level, fontsize=9)
        ax.grid(alpha=0.3)
        if ylim is not None:
            ax.set_ylim(*ylim)
    for r in range(nrows):
        axes[r, 0].set_ylabel(metric + (" (%)" if percent else ""))
    axes.flat[len(facets) - 1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_distance_vs_metric(
    rows: Sequence[Mapping],
    *,
    distance: str = "l2",
    metric: str = "accuracy",
    hue: str = "perturbation",
    highlight: Sequence[Mapping] | None = None,
    percent: bool | None = None,
    ax=None,
    title: str | None = None,
):
    """Scatter of ``metric`` against ``distance``, one colour per ``hue`` value.

    ``highlight`` rows (e.g. the two levels of a discordant pair) are circled and joined by a
    line. If distance tracked the metric, the points would fall on one decreasing curve.

    Returns
    -------
    matplotlib.axes.Axes
    """
    if not rows:
        raise ValueError("plot_distance_vs_metric needs rows (sweep or corruption_sweep dicts)")
    if percent is None:
        percent = metric in ("accuracy", "mean_true_prob", "error")
    scale = 100 if percent else 1
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 4.2))
    hues = list(dict.fromkeys(r.get(hue) for r in rows))
    markers = "osD^v<>pPX*h"
    for i, h in enumerate(hues):
        sel = [r for r in rows if r.get(hue) == h]
        ax.scatter([float(r[distance]) for r in sel], [float(r[metric]) * scale for r in sel], s=22,
                   color=f"C{i % 10}", marker=markers[(i // 10) % len(markers)], label=str(h), alpha=0.85)
    if highlight:
        hx = [float(r[distance]) for r in highlight]
        hy = [float(r[metric]) * scale for r in highlight]
        ax.plot(hx, hy, "k--", lw=1)
        ax.scatter(hx, hy, s=160, facecolors="none", edgecolors="black", linewidths=1.5)
    names = {"l0": "L0", "l1": "L1", "l2": "L2", "linf": "L∞"}
    ax.set_xlabel(f"mean {names[distance]} distance" if distance in names else distance)
    ax.set_ylabel(metric + (" (%)" if percent else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(hues) > 8 else 1, loc="best")
    if title:
        ax.set_title(title)
    return ax
