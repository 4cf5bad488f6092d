"""Adversarial attacks, one calling convention for all.

``attack(model, x, y, *, <hyperparameters>, target=None) -> AttackResult`` where ``model``
is an ``nn.Module`` in eval mode taking pixels in [0, 1], ``x`` is an ``N x C x H x W`` float
batch in [0, 1] (never modified) and ``y`` the int64 true labels. ``target`` makes the attack
targeted. Every attack validates its input, works on the whole batch on ``x``'s device and
judges ``success`` on the final (possibly rounded) ``x_adv``.
"""

from .batching import batched
from .constraints import quantize
from .core import random_targets
from .fgsm import fgsm
from .result import AttackResult

__all__ = ["AttackResult", "batched", "fgsm", "quantize", "random_targets"]
