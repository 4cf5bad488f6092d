"""Run any attack over a dataset too large for one batch."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from .result import AttackResult


def batched(
    attack: Callable[..., AttackResult],
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int = 500,
    target: torch.Tensor | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    **kwargs,
) -> AttackResult:
    """Apply ``attack(model, xb, yb, **kwargs)`` batch by batch and concatenate the results.

    Batches are moved to ``device`` (default: the model's) and results come back on ``x``'s
    device, so a CPU-held dataset can be attacked on a GPU.

    Example
    -------
    >>> res = batched(fgsm, model, x_test, y_test, eps=0.1, batch_size=1000)  # doctest: +SKIP
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    parts = []
    name = getattr(attack, "__name__", "attack")
    for i in tqdm(range(0, len(x), batch_size), desc=name, disable=not progress, leave=False):
        sl = slice(i, i + batch_size)
        tb = None if target is None else target[sl].to(device)
        r = attack(model, x[sl].to(device), y[sl].to(device), target=tb, **kwargs) if tb is not None \
            else attack(model, x[sl].to(device), y[sl].to(device), **kwargs)
        parts.append(_to(r, x.device))
    return AttackResult.cat(parts)


def _to(r: AttackResult, device: torch.device) -> AttackResult:
    for name in ("x_adv", "success", "x", "y", "pred", "target", "iterations", "queries"):
        v = getattr(r, name)
        if v is not None:
            setattr(r, name, v.to(device))
    return r
