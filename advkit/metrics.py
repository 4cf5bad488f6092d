"""Distances and accuracies.

All functions take batches (first dimension = samples) and return per-sample tensors or
plain floats. ``p`` may be ``0``, ``1``, ``2`` or ``inf`` (``float("inf")`` or ``"inf"``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

_P_NAMES = {"0": 0.0, "1": 1.0, "2": 2.0, "inf": math.inf, "linf": math.inf, "l0": 0.0,
            "l1": 1.0, "l2": 2.0}


def parse_p(p: float | int | str) -> float:
    """Normalise a norm name: ``2``, ``"2"``, ``"l2"`` -> 2.0; ``"inf"``, ``"linf"`` -> inf."""
    if isinstance(p, str):
        key = p.lower()
        if key not in _P_NAMES:
            raise ValueError(f"unknown norm {p!r}; use 0, 1, 2 or 'inf'")
        return _P_NAMES[key]
    p = float(p)
    if p not in (0.0, 1.0, 2.0, math.inf):
        raise ValueError(f"norm p must be 0, 1, 2 or inf, got {p}")
    return p


def lp_norm(delta: torch.Tensor, p: float | int | str = 2, *, tol: float = 0.0) -> torch.Tensor:
    """Per-sample Lp norm of a batch of perturbations.

    Parameters
    ----------
    delta : Tensor
        ``N x ...`` perturbations.
    p : {0, 1, 2, inf}
        L0 counts the entries whose magnitude exceeds ``tol`` (each channel of a pixel counts).
    tol : float
        Threshold for L0 (use e.g. ``1/510`` to ignore 8-bit rounding noise).

    Returns
    -------
    Tensor
        Shape ``N``, float.

    Example
    -------
    >>> lp_norm(torch.tensor([[3.0, -4.0]]), 2)
    tensor([5.])
    """
    p = parse_p(p)
    flat = delta.detach().reshape(len(delta), -1).float()
    if p == 0:
        return (flat.abs() > tol).sum(1).float()
    if p == math.inf:
        return flat.abs().amax(1) if flat.shape[1] else torch.zeros(len(flat))
    return flat.norm(p=p, dim=1)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int = 1000) -> torch.Tensor:
    """Predicted labels of ``model`` on ``x``, computed in batches on the model's device."""
    device = next(model.parameters()).device
    out = [model(x[i : i + batch_size].to(device)).argmax(1) for i in range(0, len(x), batch_size)]
    return torch.cat(out).to(x.device) if out else torch.empty(0, dtype=torch.long)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1000) -> float:
    """Fraction of ``x`` that ``model`` classifies as ``y``."""
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} samples but y has {len(y)} labels")
    return int((predict(model, x, batch_size=batch_size) == y.to(x.device)).sum()) / len(y) if len(y) else float("nan")


def robust_accuracy(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1000) -> float:
    """Accuracy on adversarial images: the fraction the attack did *not* fool."""
    return accuracy(model, x_adv, y, batch_size=batch_size)


def success_rate(success: torch.Tensor, *, among: torch.Tensor | None = None) -> float:
    """Fraction of successes, optionally only among a mask (e.g. the clean-correct samples)."""
    success = success.bool()
    if among is not None:
        success = success[among.bool()]
    return int(success.sum()) / len(success) if len(success) else float("nan")


def median(values: torch.Tensor) -> float:
    """The median of ``values`` (``nan`` when empty): the mean of the two middle values for an even
    count, as ``numpy.median`` and ``torch.quantile(v, 0.5)``. ``Tensor.median()`` returns the lower
    of the two instead; advkit reports this one everywhere (``AttackResult.summary``,
    :func:`advkit.robustness.min_norm_stats`) so that the two never disagree."""
    v = values.detach().reshape(-1)
    if len(v) == 0:
        return math.nan
    return torch.quantile(v.double(), 0.5).item()
