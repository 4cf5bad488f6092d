"""Fast Gradient Sign Method (Goodfellow, Shlens & Szegedy, ICLR 2015).

One linearised step of the loss ``J(x, y)``::

    untargeted:  x_adv = clip_[0,1]( x + eps * sign(grad_x J(x, y)) )          (Linf)
    targeted:    x_adv = clip_[0,1]( x - eps * sign(grad_x J(x, t)) )
    L2 variant:  sign(g) is replaced by g / ||g||_2 ("fast gradient method")

The sign is the maximiser of ``g . delta`` over the Linf ball ``||delta||_inf <= eps``;
``g / ||g||_2`` is the maximiser over the L2 ball.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .checks import check_eps, check_levels, check_norm
from .constraints import quantize
from .core import judge, loss_gradient, prepare, warn_zero_gradients
from .result import AttackResult


def fgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: float | str = "inf",
    target: torch.Tensor | None = None,
    levels: int | None = None,
) -> AttackResult:
    """Fast Gradient Sign Method: one step of size ``eps`` along the loss gradient.

    Parameters
    ----------
    model : nn.Module
        Classifier in eval mode, taking pixels in [0, 1], returning logits ``N x K``.
    x : Tensor
        ``N x C x H x W`` float images in [0, 1]. Never modified.
    y : Tensor
        ``N`` int64 true labels.
    eps : float
        Budget: ``||x_adv - x||_p <= eps`` (before the box clip, which only shrinks it).
    norm : {"inf", 2}
        ``"inf"``: the sign step (FGSM). ``2``: the L2 fast gradient step ``eps * g / ||g||_2``.
    target : Tensor, optional
        ``N`` target labels: step *down* the loss of the target class (targeted FGSM).
    levels : int, optional
        Integer constraint: round ``x_adv`` to multiples of ``1/levels`` (``255`` for 8-bit
        images) inside the budget; success is judged after rounding.

    Returns
    -------
    AttackResult
        ``x_adv``, ``success`` (judged on the final ``x_adv``), predictions, and
        ``extra["zero_gradient"]`` (samples the attack could not move).

    Example
    -------
    >>> res = fgsm(model, x, y, eps=0.1)          # doctest: +SKIP
    >>> res.success_rate, res.norms("inf").max()  # doctest: +SKIP
    (0.43, tensor(0.1000))
    """
    eps = check_eps(eps)
    p = check_norm(norm, (math.inf, 2.0))
    levels = check_levels(levels)
    prepare(model, x, y, target)

    grad, _ = loss_gradient(model, x, y if target is None else target)
    zero = warn_zero_gradients(grad, "fgsm") if eps > 0 else 0
    if p == math.inf:
        step = grad.sign()
    else:
        g = grad.reshape(len(grad), -1)
        step = (g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)).view_as(grad)
    direction = -1.0 if target is not None else 1.0
    x_adv = (x.detach() + direction * eps * step).clamp_(0, 1)
    if levels is not None:
        x_adv = quantize(x_adv, x.detach(), levels, eps=eps, norm=p)
    pred, success = judge(model, x_adv, y, target)
    return AttackResult(
        x_adv=x_adv, success=success, x=x, y=y, pred=pred, target=target, attack="fgsm",
        params={"eps": eps, "norm": "inf" if p == math.inf else int(p), "levels": levels},
        extra={"zero_gradient": zero},
    )
