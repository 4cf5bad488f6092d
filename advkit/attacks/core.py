"""Small functions every attack is built from: validate, differentiate, judge."""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.nn import functional as F

from .checks import check_images, check_labels, check_model, num_classes_of


def prepare(model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> int:
    """Validate the common arguments of an attack; returns the model's number of classes."""
    check_model(model)
    check_images(x)
    check_labels(y, x)
    with torch.no_grad():
        k = num_classes_of(model(x[:1]))
    check_labels(y, x, num_classes=k)
    if target is not None:
        check_labels(target, x, name="target", num_classes=k)
        if (target == y).any():
            n = int((target == y).sum())
            raise ValueError(f"{n} target label(s) equal the true label; a targeted attack needs "
                             "target != y (see advkit.attacks.random_targets)")
    return k


def loss_gradient(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient of the summed cross-entropy w.r.t. the input, and the logits.

    The sum (not the mean) keeps each sample's gradient independent of the batch size.
    """
    x = x.detach().requires_grad_(True)
    logits = model(x)
    loss = F.cross_entropy(logits, labels, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    return grad, logits.detach()


@torch.no_grad()
def judge(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor,
          target: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictions on ``x_adv`` and per-sample success (untargeted: pred != y; targeted: pred == target)."""
    pred = model(x_adv).argmax(1)
    success = pred == target if target is not None else pred != y
    return pred, success


def warn_zero_gradients(grad: torch.Tensor, attack: str) -> int:
    """Count samples whose input gradient is exactly zero and warn (a sign of gradient masking)."""
    zero = int((grad.reshape(len(grad), -1).abs().amax(1) == 0).sum())
    if zero:
        warnings.warn(
            f"{attack}: {zero} of {len(grad)} samples have an exactly zero input gradient, so the "
            "attack cannot move them. Saturated softmax or a non-differentiable defense (gradient "
            "masking) are the usual causes; try a margin loss, more iterations or a black-box attack.",
            RuntimeWarning, stacklevel=3)
    return zero


def random_targets(y: torch.Tensor, num_classes: int, *, seed: int = 0) -> torch.Tensor:
    """A uniformly random target label different from ``y`` for every sample (reproducible)."""
    gen = torch.Generator().manual_seed(seed)
    shift = torch.randint(1, num_classes, y.shape, generator=gen).to(y.device)
    return (y + shift) % num_classes
