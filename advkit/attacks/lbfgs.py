"""The box-constrained L-BFGS attack (Szegedy, Zaremba, Sutskever, Bruna, Erhan, Goodfellow &
Fergus, "Intriguing properties of neural networks", ICLR 2014) -- the paper that named
adversarial examples.

For a target class ``t`` it approximates the smallest perturbation ``delta`` with
``f(x + delta) = t`` by solving, for a constant ``c``::

    minimise_delta  c * ||delta||_2^2 + CE(model(x + delta), t)    subject to  x + delta in [0, 1]^d

with box-constrained L-BFGS, and searching ``c`` per sample: a larger ``c`` weighs the distance
more and gives a smaller perturbation, until the target is no longer reached. (The paper asks
for "the minimum c"; in the equivalent form ``||delta||^2 + (1/c) CE``, used by Foolbox, that
is the smallest weight on the loss, i.e. the largest ``c`` here.) Pseudo-code, per sample::

    ok, fail, c = 0, inf, initial_const          # the bracket: a c that succeeded, one that failed
    repeat binary_search_steps times:
        x' = L-BFGS-B(c ||x' - x||^2 + CE(x', t), start x, bounds [0, 1])
        if model(x') hits the target: ok = c, keep x' if closer than the best;  else: fail = c
        c = 10 c if fail = inf,  c / 10 if ok = 0,  sqrt(ok * fail) otherwise (geometric bisection)

Design: one ``scipy.optimize.minimize(method="L-BFGS-B")`` call per search step optimises the
whole batch as one vector; the objective is the *sum* of the per-sample objectives, whose
gradients are independent per sample, so each sample's minimiser is that of its own problem
(the shared line search and curvature memory only change the path, not the optimum). The
squared norm replaces the paper's ``|r|``: it is smooth at ``delta = 0``, where L-BFGS starts.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import Bounds, minimize
from torch import nn
from torch.nn import functional as F

from .checks import check_levels
from .constraints import quantize
from .core import judge, prepare
from .cw import _check_int, _check_number
from .result import AttackResult


def lbfgs(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    target: torch.Tensor | None = None,
    initial_const: float = 0.1,
    binary_search_steps: int = 10,
    max_iterations: int = 100,
    levels: int | None = None,
) -> AttackResult:
    """Szegedy et al.'s box-constrained L-BFGS attack with a per-sample search over ``c``.

    Parameters
    ----------
    model : nn.Module
        Classifier in eval mode, taking pixels in [0, 1], returning logits ``N x K``.
    x : Tensor
        ``N x C x H x W`` float images in [0, 1]. Never modified.
    y : Tensor
        ``N`` int64 true labels.
    target : Tensor, optional
        ``N`` target labels: success means ``model(x_adv).argmax(1) == target``. Without it the
        attack is untargeted: the cross-entropy pulls towards each sample's most likely wrong
        class on the clean input (``extra["goal"]``) and success means ``argmax != y``.
    initial_const : float, default 0.1
        First ``c`` (weight of ``||delta||^2``). It grows tenfold while the target is reached,
        shrinks tenfold while it is not, then is bisected geometrically. (LeNet-5 on MNIST
        settles between 0.5 and 1.)
    binary_search_steps : int, default 10
        L-BFGS runs per sample, each with its own ``c``.
    max_iterations : int, default 100
        L-BFGS-B iterations per run (each takes one or a few forward+backward passes).
    levels : int, optional
        Integer constraint, e.g. ``255``: each run's result is rounded to the grid and judged
        after rounding, so the search settles on a ``c`` whose *rounded* image still succeeds.

    Returns
    -------
    AttackResult
        ``x_adv``: per sample the closest successful image over all runs (``x`` if none);
        ``success`` judged on ``x_adv``; ``iterations``: L-BFGS iterations per sample over all
        runs; ``queries``: forward+backward passes per sample. ``extra["const"]``: the ``c`` that
        produced ``x_adv`` (for failures the last ``c`` tried), ``extra["goal"]``: the class the
        cross-entropy aimed at.

    Notes
    -----
    Cost: about ``binary_search_steps * max_iterations`` forward+backward passes of the batch,
    plus scipy's L-BFGS-B bookkeeping on ``N * C * H * W`` variables, which takes about as long
    again on CPU. With the defaults, 20 MNIST digits took 73 s of CPU time on LeNet-5; use
    ``binary_search_steps=6, max_iterations=50`` in a lab.

    Example
    -------
    >>> t = random_targets(y, 10, seed=0)                # doctest: +SKIP
    >>> res = lbfgs(model, x, y, target=t)               # doctest: +SKIP
    >>> res.success_rate, res.norms(2).median()          # doctest: +SKIP
    (1.0, tensor(2.1892))
    """
    initial_const = _check_number(initial_const, "initial_const", positive=True)
    binary_search_steps = _check_int(binary_search_steps, "binary_search_steps")
    max_iterations = _check_int(max_iterations, "max_iterations")
    levels = check_levels(levels)
    prepare(model, x, y, target)

    n, x0 = len(x), x.detach()
    if target is None:  # the most likely wrong class on the clean input
        with torch.no_grad():
            goal = model(x0).scatter(1, y[:, None], -math.inf).argmax(1)
    else:
        goal = target
    per_sample = (-1,) + (1,) * (x.dim() - 1)
    start = x0.double().cpu().numpy().ravel()
    box = Bounds(np.zeros_like(start), np.ones_like(start))

    const = torch.full((n,), initial_const, device=x.device)
    c_ok, c_fail = torch.zeros_like(const), torch.full_like(const, math.inf)
    best_l2, best_adv, best_const = torch.full_like(const, math.inf), x0.clone(), const.clone()
    iterations = torch.zeros(n, dtype=torch.long, device=x.device)
    queries = torch.zeros_like(iterations)

    def objective(z: np.ndarray) -> tuple[float, np.ndarray]:
        xa = torch.from_numpy(z).to(x.device, x.dtype).view_as(x0).requires_grad_(True)
        dist = (xa - x0).flatten(1).pow(2).sum(1)
        per = const * dist + F.cross_entropy(model(xa), goal, reduction="none")
        (grad,) = torch.autograd.grad(per.sum(), xa)
        return per.sum().item(), grad.double().cpu().numpy().ravel()

    for _ in range(binary_search_steps):
        opt = minimize(objective, start, jac=True, method="L-BFGS-B", bounds=box,
                       options={"maxiter": max_iterations})
        iterations += opt.nit
        queries += opt.nfev
        x_new = torch.from_numpy(opt.x).to(x.device, x.dtype).view_as(x0).clamp(0, 1)
        if levels is not None:
            x_new = quantize(x_new, x0, levels)
        _, ok = judge(model, x_new, y, target)
        l2 = (x_new - x0).flatten(1).norm(dim=1)
        better = ok & (l2 < best_l2)
        best_l2 = torch.where(better, l2, best_l2)
        best_adv = torch.where(better.view(per_sample), x_new, best_adv)
        best_const = torch.where(better, const, best_const)
        last_const = const

        c_ok = torch.where(ok, const, c_ok)
        c_fail = torch.where(ok, c_fail, const)
        const = torch.where(torch.isinf(c_fail), const * 10,
                            torch.where(c_ok == 0, const / 10, (c_ok * c_fail).sqrt()))

    best_const = torch.where(torch.isinf(best_l2), last_const, best_const)
    pred, success = judge(model, best_adv, y, target)
    return AttackResult(
        x_adv=best_adv, success=success, x=x, y=y, pred=pred, target=target, attack="lbfgs",
        params={"initial_const": initial_const, "binary_search_steps": binary_search_steps,
                "max_iterations": max_iterations, "levels": levels},
        iterations=iterations, queries=queries,
        extra={"const": best_const, "goal": goal},
    )
