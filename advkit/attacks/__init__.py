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
``cw_l2``          Carlini & Wagner 2017: L2, tanh variable, margin loss, binary search on c
``lbfgs``          Szegedy et al. 2014: box-constrained L-BFGS with a search on c
=================  ===========================================================
"""

from .batching import batched
from .constraints import quantize
from .core import loss_gradient, random_targets
from .cw import cw_l2
from .deepfool import deepfool
from .fgsm import fgsm
from .jsma import jsma
from .lbfgs import lbfgs
from .pgd import bim, pgd
from .result import AttackResult

__all__ = ["AttackResult", "batched", "bim", "cw_l2", "deepfool", "fgsm", "jsma", "lbfgs", "loss_gradient", "pgd", "quantize", "random_targets"]
