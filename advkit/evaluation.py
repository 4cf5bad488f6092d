"""Robustness evaluations built from attacks: accuracy-vs-budget curves."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .attacks.batching import batched
from .attacks.result import AttackResult


def robustness_curve(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: Callable[..., AttackResult],
    epsilons: Sequence[float],
    *,
    batch_size: int = 1000,
    progress: bool = True,
    **attack_kwargs,
) -> list[float]:
    """Robust accuracy of ``model`` under ``attack`` at each budget in ``epsilons``.

    ``eps = 0`` gives the clean accuracy. Returns one accuracy (a float in [0, 1]) per eps.

    Example
    -------
    >>> robustness_curve(model, x, y, fgsm, [0, 0.1, 0.2])   # doctest: +SKIP
    [0.99, 0.71, 0.12]
    """
    accs = []
    for eps in tqdm(list(epsilons), desc=getattr(attack, "__name__", "attack") + " curve",
                    disable=not progress):
        res = batched(attack, model, x, y, eps=eps, batch_size=batch_size, progress=False, **attack_kwargs)
        accs.append(res.robust_accuracy)
    return accs
