"""Universal adversarial perturbations (Moosavi-Dezfooli, Fawzi, Fawzi & Frossard, "Universal
adversarial perturbations", CVPR 2017).

One image-agnostic perturbation ``v`` with ``||v||_p <= xi`` that changes the prediction of most
images: ``P_x( k(x + v) != k(x) ) >= 1 - delta``, where ``k`` is the classifier's label (the
*fooling rate* counts prediction changes, not errors: the true label plays no part).
Algorithm 1 of the paper::

    v = 0
    while Err(X_v) <= 1 - delta and passes < max_passes:       Err(X_v) = fooling rate on X
        for x_i in X (a random order each pass):
            if k(x_i + v) == k(x_i):
                dv_i = argmin_r ||r||_2  s.t.  k(x_i + v + r) != k(x_i)       (DeepFool)
                v    = P_{p, xi}(v + dv_i)          P: projection onto the Lp ball of radius xi

``dv_i`` is an **L2** DeepFool perturbation (:func:`advkit.attacks.deepfool`, moving away from
the clean label ``k(x_i)``) whatever ``p`` is, as in the paper and the authors' code
(``universal_pert.py``: ``deepfool(cur_img + v)`` then ``proj_lp(v + dr, xi, p)``); only the
projection depends on ``p``. ``dv_i`` is computed at ``clip(x_i + v, 0, 1)`` and
is the step DeepFool actually takes there (its output minus its input), so ``v`` keeps its value
on pixels that the box clips for this image. As in ART, ``v`` changes only if DeepFool changed
the label.

Batching. With ``batch_size=1`` this is the paper's sequential loop. With ``batch_size=B`` the
pass is cut into chunks of ``B`` images; the not-yet-fooled images of a chunk get their DeepFool
steps at the *same* ``v`` in one batched call, then ``v = P(v + dv_i)`` is applied for each of
them in turn (steps computed at a slightly stale ``v``). Measured on the zoo's LeNet-5 (300 test
images, Linf ``xi = 0.3``, 5 passes, 1 thread): held-out fooling rate 0.236 in 56 s with
``B = 1``, 0.231 in 20 s with ``B = 16``.

Which ``v`` is returned. On MNIST a single image's DeepFool step is large next to the ball, so
the projection keeps overwriting ``v`` and the fooling rate at the end of a pass goes up and
down (0.16, 0.20, 0.28, 0.16, 0.09 over the 5 passes above). The paper stops as soon as it
passes ``1 - delta``; when it never does, ``keep_best=True`` (default) returns the ``v`` of the
pass that fooled most of ``x`` (ART returns the last one: ``keep_best=False``).

Fooling rates are low on MNIST at small budgets: at ``xi = 0.2`` LeNet-5's prediction changes
on about 1% of held-out images, against 0.5% for random signs of the same norm; at 0.3, about
23% against 1.4%. ``eps=0.3`` is the default for that reason.

The stochastic-gradient variant (``method="sgd"``). Shafahi, Najibi, Xu, Dickerson, Davis &
Goldstein ("Universal adversarial training", AAAI 2020, Algorithm 1) maximise the mean clipped
loss over ``v`` directly, by projected stochastic gradient ascent on mini-batches::

    v = 0
    for each pass, for each mini-batch B of X (a random order each pass):
        g = grad_v  mean_{i in B} min( J(F(clip(x_i + v, 0, 1)), k(x_i)), beta )
        v = P_{p, xi}( v + alpha_t * sign(g) )         (Linf; L2: alpha_t * g / ||g||_2)

``J`` is the cross-entropy against the clean label ``k(x_i)``; clipping it at ``beta`` stops the
images that are already fooled from dominating ``g``. The step decays geometrically from
``alpha_0 = step`` (default ``xi / 4``) to ``step_decay * alpha_0`` at the last mini-batch (a public
PyTorch implementation, ``uap_sgd`` of ``sgd-uap-torch``, decays its sign step the same way). On
MNIST it is much stronger than Algorithm 1, and cheaper (one forward and backward pass per
mini-batch, no DeepFool loop): on the zoo's LeNet-5, ``v`` from 300 training digits, applied
to test digits 5000-5999, Linf ``xi = 0.3``, 1 thread, CPU seconds on a loaded 2-core machine:

=================================================  ======================  ==========
method                                             held-out fooling rate   CPU time
=================================================  ======================  ==========
random signs of the same norm                      0.013                   -
``"deepfool"``, 3 passes, ``batch_size=16``        0.113                   ~8-9 s
``"sgd"``, 10 passes (defaults), seeds 0-2         0.25 - 0.41             ~1 s
``"sgd"``, 20 passes, seed 0                       0.29                    ~2 s
=================================================  ======================  ==========

With ``v`` from test digits 0-299 instead (the tests' setting): ``"deepfool"`` 3 passes 0.23,
``"sgd"`` 0.28 - 0.38 (seeds 0-2). At ``xi = 0.2`` both stay close to noise (from training
digits: DeepFool 0.012, SGD 0.016 - 0.028, noise 0.005): no single MNIST pattern of that size
moves many digits. (Measured with ``universal(lenet, x, y, eps=xi, method="sgd",
max_passes=10, seed=s)`` and :func:`fooling_rate`.)

Threat model. The algorithm runs on ``source`` (its gradients, its labels ``k``); ``model`` is
only asked for labels to judge the result (two label queries per image through an
:class:`~advkit.blackbox.Oracle`: clean and perturbed; counted in ``result.queries``). With
``source=None`` (``source = model``) this is the paper's white-box setting; pass a substitute
as ``source`` for a transfer (black-box) universal perturbation.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from tqdm.auto import tqdm

from ..attacks.checks import check_eps, check_images, check_labels, check_model, check_norm
from ..attacks.result import AttackResult
from .oracle import Oracle

METHODS = ("deepfool", "sgd")


def universal(
    model: nn.Module | Oracle,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float = 0.3,
    norm: float | str = "inf",
    method: str = "deepfool",
    delta: float = 0.2,
    max_passes: int = 10,
    overshoot: float = 0.02,
    deepfool_iter: int = 50,
    candidates: int | None = 10,
    deepfool_norm: float | str = 2,
    step: float | None = None,
    step_decay: float = 0.1,
    beta: float = 10.0,
    batch_size: int | None = None,
    keep_best: bool = True,
    source: nn.Module | None = None,
    target: torch.Tensor | None = None,
    seed: int = 0,
    progress: bool = True,
) -> AttackResult:
    """A universal perturbation ``v``: Algorithm 1 of Moosavi-Dezfooli et al. (CVPR 2017), or the
    stochastic-gradient algorithm of Shafahi et al. (AAAI 2020) with ``method="sgd"``.

    Parameters
    ----------
    model : nn.Module or Oracle
        The classifier the perturbation is judged on (labels only). An :class:`Oracle`
        (counting ``len(x)`` samples) is accepted when ``source`` is given.
    x : Tensor
        ``N x C x H x W`` images in [0, 1] the perturbation is computed on (the paper's ``X``).
    y : Tensor
        ``N`` true labels; used only for ``extra["error_rate"]`` (success is a prediction change).
    eps : float, default 0.3
        ``xi``, the radius of the Lp ball: ``||v||_p <= xi``. (The paper's ImageNet values
        ``xi = 10`` (Linf) and ``2000`` (L2) are on the 0..255 scale, i.e. 0.039 and about 7.8.)
    norm : {"inf", 2}, default "inf"
        ``p`` of the ball (the projection ``P_{p, xi}``).
    method : {"deepfool", "sgd"}, default "deepfool"
        ``"deepfool"``: the paper's Algorithm 1 (DeepFool steps, projected). ``"sgd"``: projected
        sign-gradient ascent on the clipped cross-entropy over mini-batches (Shafahi et al.;
        see the module docstring: on MNIST it fools 1.2 to 3.6 times more held-out digits, in a
        tenth of the time).
    delta : float, default 0.2
        The paper's ``delta``: stop once the fooling rate on ``x`` exceeds ``1 - delta``
        (0.2: a desired fooling rate of 80%). ``0`` runs all ``max_passes``.
    max_passes : int, default 10
        Passes over ``x`` at most (ART's ``max_iter``).
    overshoot, deepfool_iter, candidates
        DeepFool's ``overshoot`` (0.02), ``max_iter`` (50) and ``candidates`` (10), per step ``dv_i``.
    deepfool_norm : {2, "inf"}, default 2
        The norm DeepFool minimises for ``dv_i`` (the paper: 2, for every ``p``).
    step, step_decay, beta
        ``method="sgd"`` only: the first step ``alpha_0`` (default ``eps / 4``), the factor it
        decays to by the last mini-batch (0.1) and the clipping value ``beta`` of the loss (10).
    batch_size : int, optional
        ``"deepfool"`` (default 16): images whose DeepFool steps are computed at the same ``v``
        (1: the paper's sequential loop; 16 is about 3x faster on LeNet-5 for the same fooling
        rate, see the module docstring). ``"sgd"`` (default 32): the mini-batch of one step.
    keep_best : bool, default True
        Return the ``v`` with the highest fooling rate on ``x`` (on ``source``) at the end of a
        pass, rather than the last one.
    source : nn.Module, optional
        The model whose gradients and labels the algorithm uses (default ``model``: white-box).
    target : None
        Untargeted only (the attack's convention keeps the keyword): success is a change of the
        prediction, so any other value raises ``NotImplementedError``. For per-image targeted
        examples use :func:`advkit.attacks.pgd` with ``target=...``.
    seed : int, default 0
        Seeds the order of the images in each pass (a private generator).
    progress : bool, default True
        A tqdm bar over the passes.

    Returns
    -------
    AttackResult
        ``x_adv = clip(x + v, 0, 1)``; ``pred``: ``model``'s labels on it; ``success``: the
        prediction changed from ``model``'s clean prediction (the paper's fooling
        criterion, *not* ``pred != y``); ``queries``: ``model``'s label queries (2 per image);
        ``iterations``: updates of ``v`` made with each image (a DeepFool step; for ``"sgd"``,
        the mini-batch steps it took part in). ``extra``:
        ``"perturbation"`` (``v``, ``1 x C x H x W``), ``"fooling_rate"`` (on ``model``),
        ``"source_fooling_rate"`` (on ``source``, after each pass: a list), ``"passes"``,
        ``"converged"`` (the fooling rate on ``source`` passed ``1 - delta``),
        ``"clean_pred"`` and ``"error_rate"`` (``pred != y``).

    Example
    -------
    >>> res = universal(model, x[:300], y[:300], eps=0.3, max_passes=5)                  # doctest: +SKIP
    >>> v = res.extra["perturbation"]
    >>> fooling_rate(model, v, x[5000:6000]), random_fooling_rate(model, x[5000:6000], 0.3)  # doctest: +SKIP
    (0.23, 0.014)
    """
    from ..attacks.deepfool import deepfool
    from ..attacks.pgd import project_l2, project_linf

    if target is not None:
        raise NotImplementedError(
            "universal is untargeted only (success: the prediction changes from the clean one, whatever the "
            "label), so target= is not supported; for per-image targeted examples use "
            "advkit.attacks.pgd(model, x, y, target=target)")
    eps = check_eps(eps)
    p = check_norm(norm, (math.inf, 2.0))
    q = check_norm(deepfool_norm, (math.inf, 2.0))
    if not (isinstance(delta, (int, float)) and 0 <= delta <= 1):
        raise ValueError(f"delta must be in [0, 1] (the paper's 0.2 asks for a fooling rate of 80%), got {delta!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if batch_size is None:
        batch_size = 16 if method == "deepfool" else 32
    for name, v_ in (("max_passes", max_passes), ("deepfool_iter", deepfool_iter), ("batch_size", batch_size)):
        if isinstance(v_, bool) or not isinstance(v_, int) or v_ < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v_!r}")
    step = eps / 4 if step is None else step
    for name, v_, ok in (("step", step, lambda t: t > 0), ("step_decay", step_decay, lambda t: 0 < t <= 1),
                         ("beta", beta, lambda t: t > 0)):
        if isinstance(v_, bool) or not isinstance(v_, (int, float)) or not math.isfinite(v_) or not ok(v_):
            raise ValueError(f"{name} must be a positive number{' <= 1' if name == 'step_decay' else ''}, got {v_!r}")
    check_images(x)
    check_labels(y, x)
    if isinstance(model, Oracle):
        if source is None:
            raise ValueError("model is an Oracle (labels only): pass source=, the model whose gradients the "
                             "algorithm uses")
        if model.n != len(x):
            raise ValueError(f"the oracle counts {model.n} samples but x has {len(x)}")
        oracle = model
    else:
        check_model(model)
        oracle = Oracle(model, "labels", n=len(x))
    src = model if source is None else source
    check_model(src)
    project = project_linf if p == math.inf else project_l2

    x0 = x.detach()
    n = len(x0)
    k0 = _labels(src, x0)  # k(x_i) of the algorithm's model
    v = torch.zeros_like(x0[:1])
    gen = torch.Generator().manual_seed(seed)
    updates = torch.zeros(n, dtype=torch.long, device=x0.device)
    history: list[float] = []
    converged = False
    best_rate, best_v = -1.0, v
    total_steps, t = max_passes * math.ceil(n / batch_size), 0
    bar = tqdm(total=max_passes, desc="universal passes", leave=False, disable=not progress)
    for _ in range(max_passes):
        order = torch.randperm(n, generator=gen).to(x0.device)
        for chunk in order.split(batch_size):
            if method == "sgd":
                alpha = step * step_decay ** (t / max(total_steps - 1, 1))
                t += 1
                v = project(v + alpha * _ascent_direction(src, x0[chunk], k0[chunk], v, beta, p), eps)
                updates[chunk] += 1
                continue
            xc = (x0[chunk] + v).clamp(0, 1)
            still = _labels(src, xc) == k0[chunk]
            if not still.any():
                continue
            rows = chunk[still]
            start = xc[still]
            res = deepfool(src, start, k0[rows], norm="inf" if q == math.inf else 2, overshoot=overshoot,
                           max_iter=deepfool_iter, candidates=candidates)
            steps = res.x_adv - start
            for j in res.success.nonzero().squeeze(1).tolist():
                v = project(v + steps[j:j + 1], eps)
                updates[rows[j]] += 1
        rate = (_labels(src, (x0 + v).clamp(0, 1)) != k0).float().mean().item()
        history.append(rate)
        if rate > best_rate:
            best_rate, best_v = rate, v.clone()
        bar.update()
        bar.set_postfix(fooling=f"{rate:.3f}")
        if rate > 1 - delta:
            converged = True
            break
    bar.close()
    if keep_best:
        v = best_v

    x_adv = (x0 + v).clamp(0, 1)
    clean = oracle(x0).to(x0.device)
    pred = oracle(x_adv).to(x0.device)
    success = pred != clean
    return AttackResult(
        x_adv=x_adv, success=success, x=x, y=y, pred=pred, attack="universal",
        params={"eps": eps, "norm": "inf" if p == math.inf else 2, "delta": delta, "max_passes": max_passes,
                "overshoot": overshoot, "deepfool_iter": deepfool_iter, "candidates": candidates,
                "deepfool_norm": "inf" if q == math.inf else 2, "batch_size": batch_size, "keep_best": keep_best,
                "method": method, **({"step": step, "step_decay": step_decay, "beta": beta} if method == "sgd" else {}),
                "source": "model" if source is None else type(source).__name__, "seed": seed},
        iterations=updates, queries=oracle.queries.to(x0.device),
        extra={"perturbation": v, "fooling_rate": success.float().mean().item(), "source_fooling_rate": history,
               "passes": len(history), "converged": converged, "clean_pred": clean,
               "error_rate": (pred != y).float().mean().item()},
    )


def fooling_rate(model: nn.Module, v: torch.Tensor, x: torch.Tensor, *, batch_size: int = 2048) -> float:
    """Fraction of ``x`` whose predicted label changes when ``v`` is added: ``P(k(clip(x + v)) != k(x))``.

    ``v`` is one perturbation (``1 x C x H x W`` or ``C x H x W``) broadcast over the batch, e.g.
    ``result.extra["perturbation"]`` of :func:`universal`, evaluated on held-out images.
    """
    check_model(model)
    check_images(x)
    v = v.reshape(1, *x.shape[1:]).to(x)
    clean = _labels(model, x, batch_size)
    return (_labels(model, (x + v).clamp(0, 1), batch_size) != clean).float().mean().item()


def random_fooling_rate(model: nn.Module, x: torch.Tensor, eps: float, *, norm: float | str = "inf",
                        draws: int = 1, seed: int = 0, batch_size: int = 2048) -> float:
    """The fooling rate of random noise of the same norm: the baseline for :func:`fooling_rate`.

    Each image gets its own noise from :func:`advkit.noise.random_noise` (Linf: a random sign per
    pixel, ``||noise||_inf = eps``; L2: a uniform direction on the sphere of radius ``eps``);
    the rate is averaged over ``draws`` draws. One shared random vector has the same expected
    fooling rate (each image sees the same noise distribution); independent draws only make
    the estimate less noisy.
    """
    from ..noise import random_noise

    check_model(model)
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be an int >= 1, got {draws!r}")
    clean = _labels(model, x, batch_size)
    rates = [(_labels(model, random_noise(x, eps, norm=norm, seed=seed + d), batch_size) != clean).float().mean().item()
             for d in range(draws)]
    return sum(rates) / draws


def _ascent_direction(model: nn.Module, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: float,
                      p: float) -> torch.Tensor:
    """sign(g) (Linf) or g / ||g||_2 (L2), g = grad_v mean_i min(CE(model(clip(x_i + v)), k_i), beta)."""
    from torch.nn import functional as F

    vv = v.detach().requires_grad_(True)
    loss = F.cross_entropy(model((x + vv).clamp(0, 1)), k, reduction="none").clamp(max=beta).mean()
    (g,) = torch.autograd.grad(loss, vv)
    return g.sign() if p == math.inf else g / g.norm().clamp_min(1e-12)


@torch.no_grad()
def _labels(model: nn.Module, x: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
    return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])
