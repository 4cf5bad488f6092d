"""Input validation shared by every attack. Each error says what to fix."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..metrics import parse_p


def check_model(model: nn.Module) -> None:
    """A model must be an ``nn.Module`` in eval mode (dropout/batch-norm statistics frozen)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if model.training:
        raise ValueError(
            "model is in training mode (dropout and batch-norm would make the attack and its "
            "evaluation random); call model.eval() before attacking it"
        )


def check_images(x: torch.Tensor, *, name: str = "x") -> None:
    """``x`` must be a floating-point batch ``N x C x H x W`` (or ``N x D``) with values in [0, 1]."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a float tensor of pixels in [0, 1], got dtype {x.dtype}; "
                        f"for uint8 images use {name}.float() / 255")
    if x.dim() not in (2, 4):
        raise ValueError(f"{name} must be a batch N x C x H x W (or N x D features), got shape "
                         f"{tuple(x.shape)}; for a single image use {name}.unsqueeze(0)")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    lo, hi = x.min().item(), x.max().item()
    if math.isnan(lo) or math.isnan(hi):
        raise ValueError(f"{name} contains NaN")
    if lo < 0 or hi > 1:
        raise ValueError(
            f"{name} must hold pixels in [0, 1], found values in [{lo:.4g}, {hi:.4g}]; advkit "
            "models normalise inside, so pass un-normalised images (divide 8-bit images by 255)"
        )


def check_labels(y: torch.Tensor, x: torch.Tensor, *, name: str = "y", num_classes: int | None = None) -> None:
    """``y`` must be integer labels, one per image, on the same device as ``x``."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of int labels, got {type(y).__name__}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class labels, got dtype {y.dtype}; use {name}.long()")
    if y.shape != (len(x),):
        raise ValueError(f"{name} must have shape ({len(x)},), one label per image, got {tuple(y.shape)}")
    if y.device != x.device:
        raise ValueError(f"{name} is on {y.device} but x is on {x.device}; move both to one device")
    if len(y) and (y.min() < 0 or (num_classes is not None and y.max() >= num_classes)):
        raise ValueError(f"{name} holds labels in [{y.min().item()}, {y.max().item()}] but the model "
                         f"has {num_classes} classes (labels must be 0..{(num_classes or 1) - 1})")


def check_eps(eps: float, *, name: str = "eps") -> float:
    """A budget must be a finite, non-negative number."""
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {eps!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {eps}")
    return value


def check_norm(norm: float | int | str, allowed: tuple[float, ...]) -> float:
    p = parse_p(norm)
    if p not in allowed:
        names = ", ".join("inf" if a == math.inf else str(int(a)) for a in allowed)
        raise ValueError(f"norm must be one of {names}; got {norm!r}")
    return p


def check_levels(levels: int | None) -> int | None:
    if levels is None:
        return None
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise ValueError(f"levels (the integer constraint Q, e.g. 255) must be a positive int or None, got {levels!r}")
    return levels


def num_classes_of(logits: torch.Tensor) -> int:
    if logits.dim() != 2:
        raise ValueError(f"the model must return logits of shape N x K, got {tuple(logits.shape)}")
    return logits.shape[1]
