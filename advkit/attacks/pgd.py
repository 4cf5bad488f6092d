"""Projected gradient descent (PGD) and the basic iterative method (BIM) for Linf, L2 and L1.

PGD: Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning Models Resistant to
Adversarial Attacks", ICLR 2018. BIM: Kurakin, Goodfellow & Bengio, "Adversarial examples in
the physical world", ICLR 2017 (workshop track). Both repeat a normalised gradient step on the
attack's objective ``J`` and pull the result back into the eps-ball and the box::

    delta_0 = 0                       (PGD with random_start: uniform in the eps-ball)
    for t = 0, ..., T - 1:
        g           = grad_delta J(x + delta_t)
        delta       = Proj_eps( delta_t + eps_step * s(g) )      s(g) = argmax_{||s||_p <= 1} g . s
        delta_{t+1} = clip(x + delta, 0, 1) - x
    x_adv = x + delta_T

``J`` is the cross-entropy of the true label (untargeted) or minus the cross-entropy of the
target (targeted), or the Carlini-Wagner margin on the logits (``loss="margin"``). Only the
steepest-ascent direction ``s`` and the projection ``Proj_eps`` depend on the norm, so the
loop is written once and each norm contributes two small functions (as in Foolbox 3's
``gradient_descent_base.py``):

===========  =====================================  ==========================================
norm         direction ``s(g)``                     projection onto ``||delta||_p <= eps``
===========  =====================================  ==========================================
Linf         ``sign(g)``                            ``clamp(delta, -eps, eps)`` (exact)
L2           ``g / ||g||_2``                        ``delta * min(1, eps / ||delta||_2)`` (exact)
L1           sparse L1 step (Tramer & Boneh 2019)   Euclidean projection, Duchi et al. 2008 (exact)
===========  =====================================  ==========================================

The exact L1 steepest-ascent direction puts the whole step on the single coordinate with
the largest ``|g_i|`` (ART's choice), so PGD moves one pixel per step. We use the "sparse L1
descent" step of Tramer & Boneh ("Adversarial Training and Robustness for Multiple
Perturbations", NeurIPS 2019), as Foolbox's ``SparseL1DescentAttack`` does: ``sign(g_i)`` on the
coordinates whose ``|g_i|`` is at least the ``l1_quantile`` quantile (0.99: about the top 1%),
scaled to unit L1 norm, ignoring coordinates that the box stops from moving (a pixel at 0
with a gradient pointing down).

Projecting onto the ball and then clipping to the box is the exact projection onto their
intersection for Linf (both are coordinate-wise); for L2 and L1 it is feasible (clipping only
shrinks ``|delta_i|``) but not the exact projection, as in Foolbox and ART.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from functools import partial

import torch
from torch import nn
from torch.nn import functional as F

from .checks import check_eps, check_levels, check_norm
from .constraints import quantize
from .core import judge, prepare, warn_zero_gradients
from .result import AttackResult

#: With early stopping, how often (in steps) the loop syncs to drop finished samples.
EARLY_STOP_EVERY = 10


# ------------------------------------------------------------------ the norm-specific pieces


def _per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape an ``N`` vector to broadcast over ``like`` (``N x ...``)."""
    return v.view(-1, *[1] * (like.dim() - 1))


def linf_direction(grad: torch.Tensor, x_adv: torch.Tensor | None = None) -> torch.Tensor:
    """Steepest ascent for Linf: ``sign(g)`` maximises ``g . s`` over ``||s||_inf <= 1``."""
    return grad.sign()


def l2_direction(grad: torch.Tensor, x_adv: torch.Tensor | None = None) -> torch.Tensor:
    """Steepest ascent for L2: ``g / ||g||_2`` (zero where the gradient is zero)."""
    norms = grad.reshape(len(grad), -1).norm(dim=1).clamp_min(1e-12)
    return grad / _per_sample(norms, grad)


def l1_direction(grad: torch.Tensor, x_adv: torch.Tensor | None = None, *, quantile: float = 0.99) -> torch.Tensor:
    """Sparse L1 step (Tramer & Boneh 2019): ``sign(g)`` on the top coordinates, unit L1 norm.

    Coordinates pushed out of the box (``x_adv == 0`` and ``g < 0``, or ``x_adv == 1`` and
    ``g > 0``) are ignored first. Of the rest, those with ``|g_i|`` at least the ``quantile``
    quantile of ``|g|`` (the top ``d - 1 - floor((d - 1) * quantile)`` coordinates of ``d``,
    ties included, as ``numpy.quantile`` counts them in Foolbox) get ``sign(g_i)``; the step is
    divided by its L1 norm. ``quantile=1`` gives the exact steepest-ascent direction (one
    coordinate), ``quantile=0`` the L1-normalised sign of the whole gradient.
    """
    g = grad.reshape(len(grad), -1)
    if x_adv is not None:
        xa = x_adv.reshape(len(grad), -1)
        g = g.masked_fill(((xa <= 0) & (g < 0)) | ((xa >= 1) & (g > 0)), 0.0)
    a = g.abs()
    d = a.shape[1]
    k = max(1, d - 1 - math.floor((d - 1) * quantile))
    threshold = a.topk(k, dim=1).values[:, -1:]
    e = torch.where(a >= threshold, g.sign(), torch.zeros_like(g))
    return (e / e.abs().sum(1, keepdim=True).clamp_min(1.0)).view_as(grad)


def project_linf(delta: torch.Tensor, eps: float) -> torch.Tensor:
    """Euclidean projection onto ``||delta||_inf <= eps``: clip each coordinate."""
    return delta.clamp(-eps, eps)


def project_l2(delta: torch.Tensor, eps: float) -> torch.Tensor:
    """Euclidean projection onto ``||delta||_2 <= eps``: shrink towards 0 if outside."""
    norms = delta.reshape(len(delta), -1).norm(dim=1)
    factor = (eps / norms.clamp_min(1e-12)).clamp(max=1.0)
    return delta * _per_sample(factor, delta)


def project_l1(delta: torch.Tensor, eps: float) -> torch.Tensor:
    """Euclidean projection onto ``||delta||_1 <= eps`` (Duchi, Shalev-Shwartz, Singer & Chandra,
    "Efficient projections onto the l1-ball for learning in high dimensions", ICML 2008).

    Soft-thresholding ``sign(v) * max(|v| - theta, 0)`` with the ``theta`` that makes the L1
    norm exactly ``eps``, found by sorting: with ``u = sort(|v|, descending)`` and
    ``rho = max{j : u_j > (sum_{i<=j} u_i - eps) / j}``, ``theta = (sum_{i<=rho} u_i - eps) / rho``.
    Batched over the first dimension, no Python loop; rows already inside are returned as they are.
    """
    v = delta.reshape(len(delta), -1)
    a = v.abs()
    u = a.sort(dim=1, descending=True).values
    css = u.cumsum(dim=1)
    j = torch.arange(1, v.shape[1] + 1, device=v.device, dtype=v.dtype)
    rho = (u - (css - eps) / j > 0).sum(dim=1, keepdim=True).clamp_min(1)
    theta = ((css.gather(1, rho - 1) - eps) / rho.to(v.dtype)).clamp_min(0)
    inside = a.sum(dim=1, keepdim=True) <= eps
    out = torch.where(inside, v, v.sign() * (a - theta).clamp_min(0))
    return out.view_as(delta)


def uniform_linf(shape: torch.Size, eps: float, gen: torch.Generator) -> torch.Tensor:
    """Uniform sample of the Linf ball (the box ``[-eps, eps]^d``)."""
    return (2 * torch.rand(shape, generator=gen) - 1) * eps


def uniform_l2(shape: torch.Size, eps: float, gen: torch.Generator) -> torch.Tensor:
    """Uniform sample of the L2 ball: a Gaussian direction times radius ``eps * U^(1/d)``.

    In high dimension almost all of the ball's volume is near its surface (for MNIST,
    ``U^(1/784) > 0.99`` with probability 0.9996), so this is nearly a sample of the sphere.
    """
    n, d = shape[0], math.prod(shape[1:])
    g = torch.randn(n, d, generator=gen)
    radius = eps * torch.rand(n, 1, generator=gen) ** (1.0 / d)
    return (g / g.norm(dim=1, keepdim=True).clamp_min(1e-12) * radius).view(shape)


def uniform_l1(shape: torch.Size, eps: float, gen: torch.Generator) -> torch.Tensor:
    """Uniform sample of the L1 ball: ``E_1..E_d / (E_1 + ... + E_{d+1})`` with ``E_i`` i.i.d.
    exponential is uniform on ``{s >= 0, sum s <= 1}``; random signs and ``eps`` finish it."""
    n, d = shape[0], math.prod(shape[1:])
    e = torch.empty(n, d + 1).exponential_(generator=gen)
    simplex = e[:, :d] / e.sum(dim=1, keepdim=True)
    signs = torch.randint(0, 2, (n, d), generator=gen).mul_(2).sub_(1)
    return (eps * simplex * signs).view(shape)


Direction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Projection = Callable[[torch.Tensor, float], torch.Tensor]
Sampler = Callable[[torch.Size, float, torch.Generator], torch.Tensor]

#: norm -> (steepest-ascent direction, projection onto the eps-ball, uniform sample of the ball)
NORMS: dict[float, tuple[Direction, Projection, Sampler]] = {
    math.inf: (linf_direction, project_linf, uniform_linf),
    2.0: (l2_direction, project_l2, uniform_l2),
    1.0: (l1_direction, project_l1, uniform_l1),
}


# ------------------------------------------------------------------ objectives


def margin_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Carlini-Wagner margin ``max_{j != l} z_j - z_l`` per sample (> 0 iff ``l`` is not the argmax)."""
    z_l = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], -math.inf).amax(1)
    return others - z_l


def objective(loss: str, targeted: bool) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The per-sample quantity PGD *ascends*: ``CE(y)`` or ``-CE(target)``; ``margin(y)`` or ``-margin(target)``."""
    base = partial(F.cross_entropy, reduction="none") if loss == "ce" else margin_loss
    return (lambda z, t: -base(z, t)) if targeted else base


def _succeeded(logits: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    pred = logits.argmax(1)
    return pred == labels if targeted else pred != labels


# ------------------------------------------------------------------ the attack


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float = 0.3,
    eps_step: float = 0.1,
    max_iter: int = 100,
    norm: float | str = "inf",
    random_start: bool = False,
    restarts: int = 1,
    target: torch.Tensor | None = None,
    loss: str = "ce",
    early_stop: bool = False,
    levels: int | None = None,
    seed: int = 0,
    record_loss: bool = False,
    l1_quantile: float = 0.99,
) -> AttackResult:
    """Projected gradient descent: ``max_iter`` normalised gradient steps, each projected onto the eps-ball.

    The defaults are those of ART's ``ProjectedGradientDescent`` (``eps=0.3, eps_step=0.1,
    max_iter=100, num_random_init=0``), so ``pgd(model, x, y)`` reproduces it; ART's
    ``num_random_init=k > 0`` is ``random_start=True, restarts=k``. Madry et al.'s MNIST
    setting is ``eps=0.3, eps_step=0.01, max_iter=40, random_start=True``.

    Parameters
    ----------
    model : nn.Module
        Classifier in eval mode, taking pixels in [0, 1], returning logits ``N x K``.
    x : Tensor
        ``N x C x H x W`` float images in [0, 1]. Never modified.
    y : Tensor
        ``N`` int64 true labels.
    eps : float, default 0.3
        Budget ``||x_adv - x||_p <= eps`` in the chosen norm.
    eps_step : float, default 0.1
        Step length in the same norm (each step has norm ``eps_step`` before projection).
    max_iter : int, default 100
        Steps per run (one forward and one backward pass each).
    norm : {"inf", 2, 1}, default "inf"
        See the module docstring for the direction and projection of each.
    random_start : bool, default False
        Start each run at a uniform sample of the eps-ball (Linf: the box; L2 and L1: exact
        uniform samples of the ball, see :func:`uniform_l2`, :func:`uniform_l1`), clipped to [0, 1].
    restarts : int, default 1
        Independent runs; each sample keeps the run that was *worst for the model*: a
        successful run beats an unsuccessful one, and among equals the higher final objective
        wins. ``restarts > 1`` needs ``random_start=True`` (runs from ``x`` are deterministic
        and identical, so extra ones would only cost time): otherwise a ``ValueError``.
    target : Tensor, optional
        ``N`` target labels: descend the cross-entropy of the target (targeted PGD).
    loss : {"ce", "margin"}, default "ce"
        ``"ce"``: cross-entropy (Madry et al., ART, Foolbox). ``"margin"``: the Carlini-Wagner
        margin ``max_{j != y} z_j - z_y`` on the logits (targeted: ``z_t - max_{j != t} z_j``),
        which does not saturate when the softmax does.
    early_stop : bool, default False
        Freeze each sample as soon as it is adversarial (its step is masked to 0; every
        ``EARLY_STOP_EVERY`` steps the frozen samples leave the batch, which saves passes), and
        skip in later restarts the samples already fooled. Off by default, as in ART: it keeps
        the *first* adversarial point instead of pushing the loss further, so ``x_adv`` is
        closer to the boundary (lower confidence, may not survive rounding) and the final loss
        is no longer the worst case. The success set can only grow (a sample that was once
        adversarial stays so).
    levels : int, optional
        Integer constraint: round ``x_adv`` to multiples of ``1/levels`` (255 for 8-bit
        images) inside the budget (:func:`advkit.attacks.quantize`); success is judged after rounding.
    seed : int, default 0
        Seed of the random starts (a private ``torch.Generator``; same seed, same result).
    record_loss : bool, default False
        Store the objective at every iterate in ``extra["loss_history"]``.
    l1_quantile : float, default 0.99
        For ``norm=1``: the quantile of ``|g|`` above which coordinates take part in a step
        (:func:`l1_direction`). Ignored for the other norms.

    Returns
    -------
    AttackResult
        ``x_adv`` (same shape, dtype, device as ``x``), ``success`` judged on the final ``x_adv``,
        ``iterations`` (``N`` long: steps that moved each sample, summed over restarts),
        ``queries`` (``N`` long: forward+backward passes spent on each sample), and in ``extra``:
        ``"zero_gradient"`` (samples whose first gradient was exactly zero), ``"restart"``
        (``N`` long: index of the run kept for each sample), and with ``record_loss``
        ``"loss_history"`` (``(restarts * max_iter) x N`` float, row ``r * max_iter + t`` = the
        objective ``J`` at iterate ``t`` of run ``r``, i.e. where the ``t``-th gradient was
        taken; ``J`` is what the attack ascends: ``CE(y)``, ``-CE(target)`` or the margin. NaN
        where the sample was not attacked: with early stopping, after the iterate at which
        it first became adversarial).

    Example
    -------
    >>> res = pgd(model, x, y, eps=0.1, eps_step=0.01, max_iter=40)              # doctest: +SKIP
    >>> res.robust_accuracy, res.norms("inf").max()                             # doctest: +SKIP
    (0.65, tensor(0.1000))
    >>> res = pgd(model, x, y, eps=1.5, eps_step=0.1, max_iter=40, norm=2,
    ...           random_start=True, restarts=5, record_loss=True)                # doctest: +SKIP
    >>> res.extra["loss_history"].shape                                          # doctest: +SKIP
    torch.Size([200, 100])
    """
    eps = check_eps(eps)
    eps_step = _check_positive(eps_step, "eps_step")
    max_iter = _check_count(max_iter, "max_iter")
    restarts = _check_count(restarts, "restarts")
    p = check_norm(norm, (math.inf, 2.0, 1.0))
    levels = check_levels(levels)
    if loss not in ("ce", "margin"):
        raise ValueError(f"loss must be 'ce' (cross-entropy) or 'margin' (Carlini-Wagner logit margin), got {loss!r}")
    if restarts > 1 and not random_start:
        raise ValueError(f"restarts={restarts} without random_start: every run would start at x and "
                         "take the same steps; pass random_start=True (or restarts=1)")
    if not 0.0 <= l1_quantile <= 1.0:
        raise ValueError(f"l1_quantile must be in [0, 1] (0.99 keeps about the top 1% of coordinates), "
                         f"got {l1_quantile}")
    if not random_start and eps > 0 and eps_step * max_iter < eps:
        warnings.warn(f"pgd: max_iter * eps_step = {max_iter * eps_step:.4g} < eps = {eps:.4g}, so the attack can "
                      "never reach the edge of the eps-ball; raise max_iter or eps_step", RuntimeWarning, stacklevel=2)
    prepare(model, x, y, target)

    direction, project, sample = NORMS[p]
    if p == 1.0:
        direction = partial(l1_direction, quantile=l1_quantile)
    targeted = target is not None
    labels = target if targeted else y
    J = objective(loss, targeted)
    x0 = x.detach()
    n = len(x0)
    gen = torch.Generator().manual_seed(seed)

    best = x0.clone()
    best_obj = torch.full((n,), -math.inf, device=x0.device)
    best_ok = torch.zeros(n, dtype=torch.bool, device=x0.device)
    kept = torch.zeros(n, dtype=torch.long, device=x0.device)
    steps = torch.zeros(n, dtype=torch.long, device=x0.device)
    queries = torch.zeros(n, dtype=torch.long, device=x0.device)
    history = torch.full((restarts * max_iter, n), math.nan, device=x0.device) if record_loss else None
    first_gmax = None
    for r in range(restarts if eps > 0 else 0):  # eps = 0: the ball is {x}; return x, judged, at once
        delta0 = sample(x0.shape, eps, gen).to(x0) if random_start else torch.zeros_like(x0)
        rows = torch.arange(n, device=x0.device) if not (early_stop and r) else (~best_ok).nonzero().squeeze(1)
        if len(rows) == 0:
            break
        x_r, gmax = _descend(
            model, x0[rows], labels[rows], delta0[rows], rows, J=J, direction=direction, box_aware=p == 1.0,
            project=project, eps=eps, eps_step=eps_step, max_iter=max_iter, targeted=targeted,
            early_stop=early_stop, steps=steps, queries=queries,
            history=None if history is None else history[r * max_iter:(r + 1) * max_iter])
        first_gmax = gmax if first_gmax is None else first_gmax
        if restarts == 1:
            best = x_r
            break
        with torch.no_grad():  # keep, per sample, the worst case so far: success first, then higher J
            logits = model(x_r)
            obj, ok = J(logits, labels[rows]), _succeeded(logits, labels[rows], targeted)
            better = (ok & ~best_ok[rows]) | ((ok == best_ok[rows]) & (obj > best_obj[rows]))
            sel = rows[better]
            best[sel], best_obj[sel], best_ok[sel], kept[sel] = x_r[better], obj[better], ok[better], r

    zero = warn_zero_gradients(first_gmax.view(-1, 1), "pgd") if eps > 0 else 0
    x_adv = best
    if levels is not None and eps > 0:
        x_adv = quantize(x_adv, x0, levels, eps=eps, norm=p)
    pred, success = judge(model, x_adv, y, target)
    extra: dict = {"zero_gradient": zero, "restart": kept}
    if history is not None:
        extra["loss_history"] = history
    return AttackResult(
        x_adv=x_adv, success=success, x=x, y=y, pred=pred, target=target, attack="pgd",
        params={"eps": eps, "eps_step": eps_step, "max_iter": max_iter, "norm": "inf" if p == math.inf else int(p),
                "random_start": random_start, "restarts": restarts, "loss": loss, "early_stop": early_stop,
                "levels": levels, "seed": seed, **({"l1_quantile": l1_quantile} if p == 1.0 else {})},
        iterations=steps, queries=queries, extra=extra,
    )


def _descend(
    model: nn.Module, x: torch.Tensor, labels: torch.Tensor, delta: torch.Tensor, rows: torch.Tensor, *,
    J: Callable, direction: Direction, box_aware: bool, project: Projection, eps: float, eps_step: float,
    max_iter: int, targeted: bool, early_stop: bool, steps: torch.Tensor, queries: torch.Tensor,
    history: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One run of PGD from ``x + delta``; returns ``x + delta_T`` and each sample's first ``max |grad|``.

    ``rows`` are the positions of these samples in the full batch (for ``steps``, ``queries``
    and ``history``, updated in place). With ``early_stop``, ``act`` indexes the samples still
    moving; the batch shrinks to them every ``EARLY_STOP_EVERY`` steps. ``box_aware``: the
    direction needs ``x_adv`` (the L1 step skips coordinates the box blocks).

    Speed: one forward and one backward per step, no host sync (except the early-stop check),
    and the step and box clip in place: with four more full-size temporaries per step
    (allocations, page faults on CPU) an earlier version measured 5-7% slower than the
    textbook loop on LeNet-5.
    """
    delta = (x + delta).clamp(0, 1) - x  # a random start may leave the box
    out = delta.clone()
    act = torch.arange(len(x), device=x.device)
    xs, ls, done_before = x, labels, torch.zeros(len(x), dtype=torch.bool, device=x.device)
    gmax, since = None, 0
    for t in range(max_iter):
        delta.requires_grad_(True)
        logits = model(xs + delta)
        obj = J(logits, ls)
        (grad,) = torch.autograd.grad(obj.sum(), delta)  # sum: per-sample gradients independent of N
        since += 1
        with torch.no_grad():
            if t == 0:
                gmax = grad.reshape(len(grad), -1).abs().amax(1)
            step = direction(grad, xs + delta.detach() if box_aware else None)
            if early_stop:
                moving = ~_succeeded(logits, ls, targeted)
                step = step * _per_sample(moving.to(step.dtype), step)
                steps.index_add_(0, rows[act], moving.long())
            if history is not None:
                history[t, rows[act]] = obj.masked_fill(done_before, math.nan) if early_stop else obj
            delta = project(delta.detach().add_(step, alpha=eps_step), eps)
            delta.add_(xs).clamp_(0, 1).sub_(xs)  # the box [0, 1], in place
            if early_stop:
                done_before = ~moving
                if (t + 1) % EARLY_STOP_EVERY == 0 and t + 1 < max_iter:
                    out[act] = delta
                    queries.index_add_(0, rows[act], torch.full_like(act, since))
                    keep = moving.nonzero().squeeze(1)  # the only sync in the loop
                    act, xs, ls, delta, done_before = act[keep], xs[keep], ls[keep], delta[keep], done_before[keep]
                    since = 0
                    if len(act) == 0:
                        break
    with torch.no_grad():
        out[act] = delta
        queries.index_add_(0, rows[act], torch.full_like(act, since))
        if not early_stop:
            steps[rows] += max_iter
        return x + out, gmax


def bim(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    eps_step: float = 1 / 255,
    max_iter: int | None = None,
    norm: float | str = "inf",
    target: torch.Tensor | None = None,
    loss: str = "ce",
    early_stop: bool = False,
    levels: int | None = None,
    record_loss: bool = False,
) -> AttackResult:
    """Basic iterative method (Kurakin, Goodfellow & Bengio, ICLR 2017 workshop): PGD from ``x``.

    ``x_{t+1} = Clip_{x, eps}( x_t + eps_step * sign(grad_x J(x_t, y)) )``, where ``Clip_{x, eps}``
    clips to the box ``[x - eps, x + eps] ∩ [0, 1]``: for Linf that clip *is* the projection
    onto the eps-ball, so BIM is :func:`pgd` with ``random_start=False`` and one run (the other
    norms are allowed and use PGD's projections).

    Parameters
    ----------
    eps : float
        Linf budget (required: the paper sweeps it).
    eps_step : float, default 1/255
        Kurakin et al.'s ``alpha = 1`` on the 0..255 scale.
    max_iter : int, optional
        Default: Kurakin et al.'s ``ceil(min(255 * eps + 4, 1.25 * 255 * eps))`` (at least 1).
    norm, target, loss, early_stop, levels, record_loss
        As in :func:`pgd`.

    Returns
    -------
    AttackResult
        As :func:`pgd`'s, with ``attack="bim"``.

    Example
    -------
    >>> res = bim(model, x, y, eps=8 / 255)   # 11 steps of 1/255          # doctest: +SKIP
    """
    if max_iter is None:
        e = 255 * check_eps(eps)
        max_iter = max(1, math.ceil(min(e + 4, 1.25 * e) - 1e-9))
    res = pgd(model, x, y, eps=eps, eps_step=eps_step, max_iter=max_iter, norm=norm, random_start=False,
              restarts=1, target=target, loss=loss, early_stop=early_stop, levels=levels, record_loss=record_loss)
    res.attack = "bim"
    return res


def _check_positive(value: float, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return v


def _check_count(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value
