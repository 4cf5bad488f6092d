"""Gradient masking, demonstrated: a model that *looks* robust to white-box PGD and is not.

A staircase is flat almost everywhere, so its derivative is zero almost everywhere. Put one on
the input (quantisation to a few grey levels) or in place of every ReLU, and the loss gradient
that PGD follows vanishes: PGD cannot move, and its robust accuracy stays at the clean
accuracy. The model has not become robust: its decisions are nearly those of the original
network, so

* a black-box attack that only looks at scores (Square, :func:`advkit.blackbox.square`) or at
  labels (HopSkipJump) finds adversarial examples as it would on the original network, and
* BPDA (Athalye, Carlini & Wagner, ICML 2018) replaces the staircase by the identity (or by the
  ReLU it stands in for) in the backward pass only, and PGD works again.

This is the pattern of "obfuscated gradients" (Athalye et al. 2018, Sec. 3: shattered
gradients), and the first thing :func:`advkit.evaluation.audit` checks for.

==================================  ==============================================================
``InputStaircase(levels)``          ``x -> floor(levels * x) / (levels - 1)``, clipped: ``levels`` grey values
``StaircaseModel(model, levels)``   ``model(InputStaircase(levels)(x))``; ``bpda=True``: identity backward
``Staircase(step)``                 activation ``step * floor(relu(z) / step)``; ``bpda=True``: ReLU backward
``staircase_activations(model)``    a copy of ``model`` with every ``nn.ReLU`` replaced by ``Staircase``
==================================  ==============================================================
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from .bpda import Defended, straight_through


def _check_levels(levels: int) -> int:
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
        raise ValueError(f"levels must be an int >= 2 (the number of grey values kept), got {levels!r}")
    return levels


class InputStaircase(nn.Module):
    """Quantise pixels to ``levels`` grey values: ``min(floor(levels * x), levels - 1) / (levels - 1)``.

    The interval [0, 1] is cut into ``levels`` equal bins and bin ``j`` is mapped to
    ``j / (levels - 1)``, so 0 and 1 are kept. Its derivative is 0 except at the bin edges,
    where it does not exist: autograd returns exactly 0.
    """

    def __init__(self, levels: int = 16):
        super().__init__()
        self.levels = _check_levels(levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.levels
        return torch.floor(x * q).clamp(0, q - 1) / (q - 1)

    def extra_repr(self) -> str:
        return f"levels={self.levels}"


class StaircaseModel(Defended):
    """``model`` behind input quantisation: gradient zero almost everywhere, decisions intact.

    Parameters
    ----------
    model : nn.Module
        The classifier (pixels in [0, 1]).
    levels : int, default 16
        Grey values kept (:class:`InputStaircase`). LeNet-5 keeps its clean accuracy with 4, 8 or
        16 levels (100% on the first 100 MNIST test digits, as without).
    bpda : bool, default False
        Backward pass through the identity instead of the staircase (Athalye et al.'s BPDA):
        same predictions, useful gradient.

    Example
    -------
    >>> masked = StaircaseModel(model, levels=16)     # LeNet-5, 100 MNIST test digits (measured):
    >>> pgd(masked, x, y, eps=0.3, eps_step=0.0375, max_iter=20).robust_accuracy              # doctest: +SKIP
    1.0
    >>> square(masked, x, y, eps=0.3, max_queries=500).robust_accuracy                       # doctest: +SKIP
    0.01
    >>> pgd(masked.with_bpda(), x, y, eps=0.3, eps_step=0.0375, max_iter=20).robust_accuracy  # doctest: +SKIP
    0.0
    """

    def __init__(self, model: nn.Module, levels: int = 16, *, bpda: bool = False):
        super().__init__(model, InputStaircase(levels), bpda=bpda)
        self.levels = levels

    def extra_repr(self) -> str:
        return f"levels={self.levels}, bpda={self.bpda}"


class Staircase(nn.Module):
    """A staircase ReLU: ``step * floor(relu(z) / step)``, zero derivative everywhere it exists.

    With ``bpda=True`` the forward pass is the same and the backward pass is that of
    ``relu`` (the function the staircase approximates), which is BPDA on the activation.
    """

    def __init__(self, step: float = 0.1, *, bpda: bool = False):
        super().__init__()
        if not isinstance(step, (int, float)) or isinstance(step, bool) or not step > 0:
            raise ValueError(f"step must be a number > 0, got {step!r}")
        self.step = float(step)
        self.bpda = bool(bpda)

    def _staircase(self, z: torch.Tensor) -> torch.Tensor:
        return torch.floor(F.relu(z) / self.step) * self.step

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return straight_through(self._staircase, z, approx=F.relu) if self.bpda else self._staircase(z)

    def extra_repr(self) -> str:
        return f"step={self.step}, bpda={self.bpda}"


def staircase_activations(model: nn.Module, step: float = 0.1, *, bpda: bool = False) -> nn.Module:
    """A deep copy of ``model`` with every ``nn.ReLU`` replaced by ``Staircase(step, bpda=bpda)``.

    The original is not modified. Functional ReLUs (``F.relu`` inside ``forward``) are not
    seen; the zoo's models use ``nn.ReLU`` modules.

    Example
    -------
    >>> masked = staircase_activations(model, step=0.1)
    >>> adaptive = staircase_activations(model, step=0.1, bpda=True)   # same predictions
    """
    out = copy.deepcopy(model)
    replaced = 0
    for parent in out.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(parent, name, Staircase(step, bpda=bpda))
                replaced += 1
    if replaced == 0:
        raise ValueError("the model has no nn.ReLU modules to replace")
    return out.train(model.training)
