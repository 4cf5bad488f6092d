"""The box constraint and the integer constraint shared by all attacks."""

from __future__ import annotations

import math

import torch


def quantize(x_adv: torch.Tensor, x: torch.Tensor, levels: int = 255, *, eps: float | None = None,
             norm: float = math.inf) -> torch.Tensor:
    """Round ``x_adv`` onto the grid ``{0, 1/Q, ..., 1}`` (``Q = levels``) without leaving the budget.

    The integer constraint of the attack formulation: a real image file stores
    ``Q * (x + delta)`` as integers. Rounding alone may push a pixel out of the eps-ball, so:

    * Linf: each pixel goes to the nearest grid value inside ``[x - eps, x + eps] ∩ [0, 1]``
      (if that interval holds no grid value, which needs ``eps < 1/Q``, the pixel goes back to
      the grid value nearest ``x``);
    * L1 / L2: the nearest grid value; for samples whose norm then exceeds ``eps``, each pixel
      is rounded *towards* ``x`` instead, which cannot increase any ``|delta_i|`` when ``x`` is
      itself on the grid (as 8-bit images are).

    Success must be re-checked after rounding; every advkit attack does this.
    """
    q = float(levels)
    rounded = torch.round(x_adv * q)
    if eps is None:
        return (rounded / q).clamp_(0, 1)
    if norm == math.inf:
        lo = torch.ceil((x - eps).clamp(0, 1) * q - 1e-6)
        hi = torch.floor((x + eps).clamp(0, 1) * q + 1e-6)
        empty = lo > hi
        out = torch.minimum(torch.maximum(rounded, lo), hi)
        out = torch.where(empty, torch.round(x * q), out)
        return (out / q).clamp_(0, 1)
    out = (rounded / q).clamp_(0, 1)
    delta = (out - x).reshape(len(x), -1)
    too_far = delta.norm(p=norm, dim=1) > eps * (1 + 1e-6)
    if too_far.any():
        towards = torch.where(x_adv > x, torch.floor(x_adv * q + 1e-6), torch.ceil(x_adv * q - 1e-6)) / q
        out[too_far] = towards[too_far].clamp(0, 1)
    return out
