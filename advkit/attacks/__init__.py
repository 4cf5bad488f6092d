"""Adversarial attacks, one calling convention for all.

``attack(model, x, y, *, <hyperparameters>, target=None) -> AttackResult`` where ``model``
is an ``nn.Module`` in eval mode taking pixels in [0, 1], ``x`` is an ``N x C x H x W`` float
batch in [0, 1] (never modified) and ``y`` the int64 true labels. ``target`` makes the attack
targeted. Every attack validates its input, works on the whole batch on ``x``'s device and
judges ``success`` on the final (possibly rounded) ``x_adv``.

=================  ===========================================================
``fgsm``           Goodfellow et al. 2015: one L∞ sign step (or L2 gradient step)
``pgd``, ``bim``   Madry et al. 2018 / Kurakin et al. 2017: L∞, L2, L1, restarts
``deepfool``       Moosavi-Dezfooli et al. 2016: minimal L2 / L∞, batched, top-k
``jsma``           Papernot et al. 2016: targeted L0 saliency-map attack
=================  ===========================================================
"""

from .batching import batched
from .constraints import quantize
from .core import loss_gradient, random_targets
from .deepfool import deepfool
from .fgsm import fgsm
from .jsma import jsma
from .pgd import bim, pgd
from .result import AttackResult

__all__ = ["AttackResult", "batched", "bim", "deepfool", "fgsm", "jsma", "loss_gradient", "pgd", "quantize", "random_targets"]
