"""The thesis's perturbation protocol as one call: accuracy and Lp distance per perturbation level.

For every perturbation and level of :data:`~advkit.perturbations.THESIS_LEVELS` (the thesis's
Figures 20-21), :func:`sweep` reports the accuracy, the mean probability of the true class
(the quantity the thesis's 99.99% / 89.98% figures suggest it averaged; see issue 9) and the
mean per-image L1, L2 and Linf distance between the perturbed and the clean image.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..attacks.checks import check_labels, check_model
from ..metrics import lp_norm
from .common import THESIS_LEVELS, _check_batch, perturb


@torch.no_grad()
def sweep(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    levels: Mapping[str, Sequence[float]] = THESIS_LEVELS,
    seed: int = 0,
    before_model: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 256,
    progress: bool = True,
    per_image: bool = False,
) -> list[dict]:
    """Evaluate ``model`` on every perturbation level; one row (a dict) per (perturbation, level).

    Parameters
    ----------
    model : nn.Module
        Classifier in eval mode on pixels in [0, 1].
    x : Tensor
        ``N x C x H x W`` clean images in [0, 1], in the space the perturbations act on. For the
        thesis's grey data sets that is RGB: pass ``to_rgb(x)`` (its pipeline expanded grey
        images before perturbing them).
    y : Tensor
        ``N`` true labels.
    levels : mapping
        ``{perturbation name: levels}``; default the thesis's :data:`THESIS_LEVELS`.
    seed : int
        Seed of the random perturbations (jitter, RGB randomise); the same for every level, so
        the levels differ only in their magnitude.
    before_model : callable, optional
        Applied to the perturbed images before the model (e.g. :func:`to_grey` for a
        one-channel model fed RGB-perturbed digits). Distances are measured before it.
    batch_size : int
        Images per forward pass. The random perturbations are seeded per batch, so their
        draws (not their distribution) change with ``batch_size``.
    progress : bool
        A ``tqdm`` bar over the levels.
    per_image : bool
        Also return, per row, ``correct``: a bool tensor of length ``N`` (which images the model
        still classifies correctly), for per-image statistics such as a bootstrap interval.

    Returns
    -------
    list of dict
        Keys ``perturbation``, ``level``, ``n``, ``accuracy``, ``mean_true_prob``, ``l1``,
        ``l2``, ``linf`` (means over images); ready for ``pandas.DataFrame`` or
        :func:`advkit.lab.table`.
    """
    check_model(model)
    _check_batch(x)
    check_labels(y, x)
    rows = []
    jobs = [(name, lvl) for name, lvls in levels.items() for lvl in lvls]
    for name, lvl in tqdm(jobs, desc="perturbations", disable=not progress, leave=False):
        correct, prob, norms = 0, 0.0, {1: 0.0, 2: 0.0, float("inf"): 0.0}
        hits = []
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            # one seed per batch (seed + index of its first image): the random draws depend on
            # (seed, batch_size), so keep batch_size fixed to compare runs
            xp = perturb(name, xb, lvl, seed=seed + i)
            for p in norms:
                norms[p] += lp_norm(xp - xb, p).sum().item()
            logits = model(before_model(xp) if before_model is not None else xp)
            hit = logits.argmax(1) == yb
            hits.append(hit.cpu())
            correct += hit.sum().item()
            prob += logits.softmax(1).gather(1, yb[:, None]).sum().item()
        n = len(x)
        rows.append({"perturbation": name, "level": float(lvl), "n": n, "accuracy": correct / n,
                     "mean_true_prob": prob / n, "l1": norms[1] / n, "l2": norms[2] / n,
                     "linf": norms[float("inf")] / n})
        if per_image:
            rows[-1]["correct"] = torch.cat(hits)
    return rows
