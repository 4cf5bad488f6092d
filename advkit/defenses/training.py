"""Adversarial training: FGSM (Goodfellow et al. 2015), PGD (Madry et al. 2018), fast FGSM (Wong et al. 2020).

Adversarial training replaces the training loss by (an approximation of) the worst-case loss in
the threat model, the saddle-point problem of Madry, Makelov, Schmidt, Tsipras & Vladu
("Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018)::

    min_theta  E_(x, y) [ max_{||delta||_inf <= eps, x + delta in [0, 1]}  CE(f_theta(x + delta), y) ]

The inner maximisation is approximated on every mini-batch by a training-time attack, then the
outer step is an ordinary optimiser step on the loss at the attacked inputs::

    for each mini-batch (x, y):
        delta_0 = U(-eps, eps)^d  if random_start  else 0            (clipped to the box)
        repeat steps times:                                           (1 for FGSM, fast FGSM)
            g     = grad_delta CE(f(x + delta), y)
            delta = clip_[-eps, eps]( delta + step_size * sign(g) )    then clipped to the box
        loss  = alpha * CE(f(x), y) + (1 - alpha) * CE(f(x + delta), y)
        theta = optimiser_step(theta, grad_theta loss)                (lr from the schedule)

============  ============  ============  =====  ========  =====================================
method        random_start  step_size     steps  alpha     paper
============  ============  ============  =====  ========  =====================================
"fgsm"        False         eps           1      0.5       Goodfellow, Shlens & Szegedy, ICLR 2015
"fast_fgsm"   True          1.25 * eps    1      0         Wong, Rice & Kolter, ICLR 2020
"pgd"         True          2.5*eps/steps 10     0         Madry et al., ICLR 2018
"none"        -             -             0      1         standard training, same loop and schedule
============  ============  ============  =====  ========  =====================================

(defaults per method; every one can be overridden). Naming: our ``alpha`` is Goodfellow et al.'s
weight of the clean loss; Wong et al. call the FGSM *step size* "alpha" (0.375 for MNIST at
eps 0.3, i.e. 1.25 eps), which is our ``step_size``.

*Catastrophic overfitting* (Wong et al. 2020, Sec. 4 and their repository's README): single-step
training can suddenly learn a model whose loss surface is curved so that the one FGSM step from
the clean point (or a step much longer than the ball, landing on its corners) is no longer a
good attack. FGSM accuracy on training batches then shoots up while PGD accuracy falls to about
0 within an epoch or two. A random start with ``step_size = 1.25 * eps`` avoids it in their
experiments, and the cheap guard is to watch PGD accuracy on a held-out batch (``eval_data``,
``eval_every``) and stop early (``callback``). :func:`catastrophic_overfitting` trains the
failing and the working recipe side by side so a lab can show the curves.

The training-time attack is :func:`training_perturbation`, written once here: the library's
:func:`advkit.attacks.fgsm` and :func:`advkit.attacks.pgd` refuse a model in training mode (they
are evaluation tools), whereas the standard recipes attack the model in the mode it trains in.
For networks without batch normalisation or dropout, such as the zoo's CNN and LeNet-5, both
modes compute the same function, so the two agree. Evaluations during training (the history)
do use :func:`advkit.attacks.fgsm` and :func:`advkit.attacks.pgd`, with the model in eval mode.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from ..attacks.batching import batched
from ..attacks.checks import check_eps, check_images, check_labels
from ..attacks.fgsm import fgsm
from ..attacks.pgd import pgd

METHODS = ("fast_fgsm", "fgsm", "pgd", "none")
SCHEDULES = ("cyclic", "onecycle", "constant")

#: Per-method defaults of (random_start, step_size as a multiple of eps, steps, alpha); the PGD
#: step ``None`` means Madry et al.'s rule of thumb ``2.5 * eps / steps``.
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "fgsm": dict(random_start=False, step=1.0, steps=1, alpha=0.5),
    "fast_fgsm": dict(random_start=True, step=1.25, steps=1, alpha=0.0),
    "pgd": dict(random_start=True, step=None, steps=10, alpha=0.0),
    "none": dict(random_start=False, step=0.0, steps=0, alpha=1.0),
}


# ------------------------------------------------------------------ the training-time attack


def training_perturbation(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    random_start: bool,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The Linf attack used inside the training loop; returns ``x + delta`` (detached).

    ``delta_0 = U(-eps, eps)`` (``random_start``) or 0, clipped so that ``x + delta_0`` is in
    [0, 1]; then ``steps`` times ``delta <- clip_[-eps, eps](delta + step_size * sign(grad_delta
    CE))``, clipped to the box again. ``steps=1`` is FGSM (fast FGSM with the random start).
    Works in whatever mode the model is in (no ``model.training`` check) and computes only the
    input gradient (``torch.autograd.grad``), so the parameters' ``.grad`` are left untouched.
    """
    x = x.detach()
    if steps == 0 or eps == 0:
        return x
    if random_start:
        delta = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype).mul_(2 * eps).sub_(eps)
        delta = (x + delta).clamp_(0, 1).sub_(x)
    else:
        delta = torch.zeros_like(x)
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model(x + delta), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta = delta.detach().add_(grad.sign(), alpha=step_size).clamp_(-eps, eps)
            delta = delta.add_(x).clamp_(0, 1).sub_(x)
    return (x + delta).detach()


# ------------------------------------------------------------------ evaluation during training


def evaluate_robustness(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    eps_step: float | None = None,
    max_iter: int = 20,
    random_start: bool = False,
    batch_size: int = 500,
) -> dict[str, float]:
    """Clean, FGSM and PGD accuracy of ``model`` (in eval mode) on ``(x, y)`` at Linf ``eps``.

    PGD is :func:`advkit.attacks.pgd` with ``eps_step`` (default ``eps / 10``), ``max_iter``
    (default 20) and ``random_start`` (default False): the zoo's protocol for adversarially trained
    models. Returns ``{"clean_acc", "fgsm_acc", "pgd_acc"}`` (fractions in [0, 1]).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            clean = sum((model(x[i:i + batch_size].to(device)).argmax(1).cpu() == y[i:i + batch_size]).sum().item()
                        for i in range(0, len(x), batch_size)) / len(x)
        out = {"clean_acc": clean}
        if eps > 0:
            out["fgsm_acc"] = batched(fgsm, model, x, y, eps=eps, batch_size=batch_size, progress=False).robust_accuracy
            out["pgd_acc"] = batched(pgd, model, x, y, eps=eps, eps_step=eps / 10 if eps_step is None else eps_step,
                                     max_iter=max_iter, random_start=random_start, batch_size=batch_size,
                                     progress=False).robust_accuracy
        else:
            out["fgsm_acc"] = out["pgd_acc"] = clean
    finally:
        model.train(was_training)
    return out


# ------------------------------------------------------------------ the training loop


def lr_at(schedule: str, t: float, lr: float) -> float:
    """Learning rate at training progress ``t`` in [0, 1] (fraction of all batches done).

    ``"cyclic"``: Wong et al.'s triangle, linear from 0 up to ``lr`` at ``t = 0.4`` and back to 0
    at ``t = 1``; ``"onecycle"``: PyTorch's ``OneCycleLR`` shape (cosine warm-up over the first 30%
    from ``lr / 25``, cosine annealing to ``lr / 25e4``), as the zoo's standard training uses;
    ``"constant"``: ``lr``.
    """
    if schedule == "cyclic":
        return lr * (t / 0.4 if t <= 0.4 else max(0.0, (1 - t) / 0.6))
    if schedule == "onecycle":
        lo, end = lr / 25, lr / 25e4
        if t <= 0.3:
            return lo + (lr - lo) * (1 - math.cos(math.pi * t / 0.3)) / 2
        return end + (lr - end) * (1 + math.cos(math.pi * (t - 0.3) / 0.7)) / 2
    if schedule == "constant":
        return lr
    raise ValueError(f"lr_schedule must be one of {SCHEDULES}, got {schedule!r}")


def adversarial_train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    method: str = "fast_fgsm",
    eps: float = 0.1,
    alpha: float | None = None,
    step_size: float | None = None,
    steps: int | None = None,
    random_start: bool | None = None,
    epochs: int = 3,
    batch_size: int = 100,
    lr: float = 5e-3,
    optimizer: str = "adam",
    lr_schedule: str = "cyclic",
    weight_decay: float = 0.0,
    seed: int = 0,
    eval_data: tuple[torch.Tensor, torch.Tensor] | None = None,
    eval_every: int | None = None,
    eval_pgd: dict[str, Any] | None = None,
    eval_fn: Callable[[nn.Module], dict[str, float]] | None = None,
    callback: Callable[[dict[str, Any], nn.Module], bool | None] | None = None,
    progress: bool = True,
):
    """Train ``model`` in place on ``(x, y)`` against an Linf adversary; returns ``(model, history)``.

    The attack and optimiser defaults are the CPU recipe of ``zoo.load("cnn_adv")``: fast FGSM
    (Wong, Rice & Kolter, "Fast is better than free: Revisiting adversarial training", ICLR 2020)
    at ``eps = 0.1``, Adam with their cyclic learning rate of peak 5e-3, batches of 100 (the zoo
    entry trains one epoch: robust error 3.7% under PGD-20 at eps 0.1, step 0.01, on the first
    1000 MNIST test images, test accuracy 98.83%). See the module docstring for the algorithm and
    the per-method defaults.

    Parameters
    ----------
    model : nn.Module
        Takes pixels in [0, 1], returns logits. Trained in place on its own device.
    x, y : Tensor
        Training images ``N x C x H x W`` in [0, 1] and int64 labels (any device; batches are
        moved to the model's).
    method : {"fast_fgsm", "fgsm", "pgd", "none"}, default "fast_fgsm"
        The training-time attack (:func:`training_perturbation`); ``"none"`` is standard training.
    eps : float, default 0.1
        Linf radius of the training attack.
    alpha : float, optional
        Weight of the clean loss in ``alpha * CE(x) + (1 - alpha) * CE(x + delta)`` (Goodfellow
        et al.'s mixed objective). Default 0.5 for ``"fgsm"``, 0 (adversarial loss only, as Madry
        et al. and Wong et al.) for ``"fast_fgsm"`` and ``"pgd"``.
    step_size : float, optional
        Attack step. Default ``eps`` (fgsm), ``1.25 * eps`` (fast_fgsm), ``2.5 * eps / steps`` (pgd).
    steps : int, optional
        Attack steps: 1 for the FGSM methods; default 10 for ``"pgd"``.
    random_start : bool, optional
        Start the attack at ``U(-eps, eps)``. Default True for fast_fgsm and pgd, False for fgsm.
    epochs : int, default 3
        Passes over ``(x, y)``.
    batch_size : int, default 100
        Mini-batch size (Wong et al.'s MNIST value).
    lr : float, default 5e-3
        Peak learning rate of the schedule (Wong et al.'s MNIST ``lr_max`` for Adam).
    optimizer : {"adam", "sgd"}, default "adam"
        ``"sgd"`` uses momentum 0.9.
    lr_schedule : {"cyclic", "onecycle", "constant"}, default "cyclic"
        See :func:`lr_at`; updated every batch.
    weight_decay : float, default 0
        L2 penalty ``weight_decay * ||theta||^2 / 2`` added through the optimiser's
        ``weight_decay`` (coupled L2, also for Adam).
    seed : int, default 0
        Seeds the shuffling and the random starts (private generators; the weight
        initialisation is the caller's).
    eval_data : (Tensor, Tensor), optional
        A small held-out set: clean, FGSM and PGD accuracy at ``eps`` are measured on it (model in
        eval mode, :func:`evaluate_robustness`) at every history row.
    eval_every : int, optional
        Batches between history rows; default one row per epoch.
    eval_pgd : dict, optional
        Keyword arguments of :func:`evaluate_robustness` for the PGD evaluation (``eps_step``,
        ``max_iter``, ``random_start``; default ``eps / 10``, 20, False).
    eval_fn : callable, optional
        ``eval_fn(model) -> dict`` of further measurements added to every history row (the model
        is in eval mode during the call and back in training mode after it), e.g. the DeepFool
        distance of :func:`weight_decay_curve`.
    callback : callable, optional
        ``callback(row, model)`` after each history row; returning True stops training (e.g. early
        stopping when ``row["pgd_acc"]`` collapses).
    progress : bool, default True
        tqdm bar over batches.

    Returns
    -------
    model : nn.Module
        The same module, trained, in eval mode.
    history : pandas.DataFrame
        One row per ``eval_every`` batches (or per epoch): ``epoch`` (fractional), ``batches``,
        ``lr``, ``loss`` (mean training loss since the previous row), ``train_acc`` (accuracy on
        the training-time adversarial inputs since the previous row), ``seconds`` (training time
        so far, evaluations excluded) and, with ``eval_data``, ``clean_acc``, ``fgsm_acc``, ``pgd_acc``.

    Example
    -------
    >>> model = advkit.models.cnn()                                              # doctest: +SKIP
    >>> model, hist = adversarial_train(model, x_train, y_train, eps=0.1, epochs=3,
    ...                                 eval_data=(x_test[:500], y_test[:500]))  # doctest: +SKIP
    >>> hist[["epoch", "clean_acc", "pgd_acc"]].iloc[-1]                        # doctest: +SKIP
    """
    import pandas as pd

    cfg = resolve_method(method, eps=eps, alpha=alpha, step_size=step_size, steps=steps, random_start=random_start)
    check_images(x)
    check_labels(y, x)
    epochs = _count(epochs, "epochs")
    batch_size = _count(batch_size, "batch_size")
    if eval_every is not None:
        eval_every = _count(eval_every, "eval_every")
    if lr_schedule not in SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {SCHEDULES}, got {lr_schedule!r}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a finite number > 0, got {lr}")
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    else:
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    if eval_data is not None:
        check_images(eval_data[0], name="eval_data[0]")
        check_labels(eval_data[1], eval_data[0], name="eval_data[1]")

    device = next(model.parameters()).device
    shuffle = torch.Generator().manual_seed(seed)
    starts = torch.Generator(device=device).manual_seed(seed + 1)
    per_epoch = (len(x) + batch_size - 1) // batch_size
    total = epochs * per_epoch
    every = eval_every or per_epoch
    rows: list[dict[str, Any]] = []
    run_loss = run_correct = run_n = 0.0
    trained_s = 0.0
    done = 0
    stop = False
    model.train()
    bar = tqdm(total=total, desc=f"adversarial training ({cfg['method']}, eps={eps:g})", disable=not progress,
               unit="batch", leave=False)
    tic = time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=shuffle)
        for i in range(per_epoch):
            idx = order[i * batch_size:(i + 1) * batch_size]
            xb, yb = x[idx].to(device, non_blocking=True), y[idx].to(device, non_blocking=True)
            for group in opt.param_groups:
                group["lr"] = lr_at(lr_schedule, done / total, lr)
            loss, correct = _train_step(model, opt, xb, yb, cfg, starts)
            done += 1
            run_loss += loss.item() * len(yb)
            run_correct += correct.item()
            run_n += len(yb)
            bar.update()
            if done % every == 0 or done == total:
                trained_s += time.perf_counter() - tic
                row = {"epoch": done / per_epoch, "batches": done, "lr": opt.param_groups[0]["lr"],
                       "loss": run_loss / run_n, "train_acc": run_correct / run_n, "seconds": trained_s}
                if eval_data is not None:
                    row.update(evaluate_robustness(model, *eval_data, eps=cfg["eps"], **(eval_pgd or {})))
                if eval_fn is not None:
                    model.eval()
                    row.update(eval_fn(model))
                    model.train()
                rows.append(row)
                bar.set_postfix({k: f"{row[k]:.3f}" for k in ("loss", "train_acc", "pgd_acc") if k in row})
                run_loss = run_correct = run_n = 0.0
                if callback is not None and callback(row, model):
                    stop = True
                tic = time.perf_counter()
            if stop:
                break
        if stop:
            break
    bar.close()
    return model.eval(), pd.DataFrame(rows)


def resolve_method(method: str, *, eps: float, alpha: float | None = None, step_size: float | None = None,
                   steps: int | None = None, random_start: bool | None = None) -> dict[str, Any]:
    """The full attack configuration of ``method`` after the per-method defaults (see the module table)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    eps = check_eps(eps)
    d = METHOD_DEFAULTS[method]
    if method == "none" and any(v is not None for v in (step_size, steps, random_start)):
        raise ValueError("method='none' is standard training: step_size, steps and random_start do not apply")
    steps = d["steps"] if steps is None else steps
    if method in ("fgsm", "fast_fgsm") and steps != 1:
        raise ValueError(f"method {method!r} takes one step; use method='pgd' for steps={steps}")
    if method == "pgd":
        steps = _count(steps, "steps")
    if step_size is None:
        step_size = (2.5 * eps / steps if steps else 0.0) if d["step"] is None else d["step"] * eps
    if not (step_size >= 0 and math.isfinite(step_size)) or (method != "none" and eps > 0 and step_size == 0):
        raise ValueError(f"step_size must be a finite number > 0, got {step_size}")
    alpha = d["alpha"] if alpha is None else float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha (weight of the clean loss) must be in [0, 1], got {alpha}")
    random_start = d["random_start"] if random_start is None else bool(random_start)
    return {"method": method, "eps": eps, "alpha": alpha, "step_size": float(step_size), "steps": int(steps),
            "random_start": random_start}


def _train_step(model, opt, xb, yb, cfg, gen):
    """One optimiser step on ``alpha * CE(x) + (1 - alpha) * CE(x_adv)``; returns (loss, #correct on x_adv)."""
    alpha = cfg["alpha"]
    if cfg["steps"] and alpha < 1:
        x_adv = training_perturbation(model, xb, yb, eps=cfg["eps"], step_size=cfg["step_size"],
                                      steps=cfg["steps"], random_start=cfg["random_start"], generator=gen)
        logits = model(x_adv)
        loss = F.cross_entropy(logits, yb)
        if alpha > 0:
            loss = alpha * F.cross_entropy(model(xb), yb) + (1 - alpha) * loss
    else:
        logits = model(xb)
        loss = F.cross_entropy(logits, yb)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach(), (logits.detach().argmax(1) == yb).sum()


def _count(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


# ------------------------------------------------------------------ experiments for the labs


def catastrophic_overfitting(
    x: torch.Tensor,
    y: torch.Tensor,
    eval_data: tuple[torch.Tensor, torch.Tensor],
    *,
    eps: float = 0.3,
    recipes: dict[str, dict[str, Any]] | None = None,
    arch: Callable[[], nn.Module] | None = None,
    init: nn.Module | None = None,
    epochs: int = 2,
    eval_every: int = 25,
    seed: int = 0,
    progress: bool = True,
    **train_kwargs: Any,
):
    """Train the same network with single-step recipes side by side; returns one tidy history table.

    The default ``recipes`` contrast Wong, Rice & Kolter's failure mode with their fix:

    ``"fgsm (zero start)"``
        ``method="fgsm", alpha=0``: one step of ``eps`` from the clean point (without a random
        start any step ``>= eps`` is the same step, as the projection clips it to ``eps``).
    ``"fgsm (random start, step 2 eps)"``
        ``method="fast_fgsm", step_size=2 * eps``: a random start, but a step so long that
        every coordinate ends on a corner of the ball (the "step too large" failure).
    ``"fast fgsm (random start, step 1.25 eps)"``
        ``method="fast_fgsm"`` with its defaults: Wong et al.'s recipe.

    With ``eval_every`` batches between rows, the table shows for each recipe the FGSM accuracy
    (``fgsm_acc``) and the PGD accuracy (``pgd_acc``) on ``eval_data``: catastrophic overfitting is
    ``fgsm_acc`` high while ``pgd_acc`` falls to about 0. ``arch`` builds the network (default:
    :func:`advkit.models.cnn`), seeded with ``seed`` for every recipe so all start from the same
    weights; ``init`` (a trained model of that architecture, e.g. ``zoo.load("cnn")``) makes every
    recipe start from a copy of its weights instead; ``train_kwargs`` go to
    :func:`adversarial_train` (``lr``, ``batch_size``, ``eval_pgd``, ...).

    *At CPU scale.* From scratch (the CNN at width 0.5, eps 0.3, a 10,000-image subset, 2
    epochs, ``eval_every=20``) none of the three default recipes learns anything (all stay at
    chance, 0.14 accuracy), so the demonstrations start from a trained CNN. Measured with
    ``lr=5e-3``, ``eval_pgd=dict(eps_step=0.075, max_iter=10)``, the zero-start and the 1.25-eps
    recipes, 200 held-out test digits:

    - ``init=zoo.load("cnn_adv")`` (robust at eps 0.1; the lab's setting), the first 5000
      training images, ``epochs=3``: both recipes reach 0.97 FGSM accuracy at eps 0.3 (0.79 at
      the start), but under PGD the zero start stays at 0.00 throughout while fast FGSM climbs
      from 0.00 to 0.50 (35 s for both on 2 CPU cores).
    - ``init=zoo.load("cnn")`` (standard training), 10,000 images, ``epochs=3``: the sudden
      form. The zero start's PGD accuracy rises to 0.15 at epoch 0.75, then falls to 0.00-0.03
      from epoch 1.25 on while its FGSM accuracy climbs to 0.93; fast FGSM stays between 0.04
      and 0.32 (0.12 at the end, FGSM 0.94): at a few hundred batches it is only a partial fix.

    Returns
    -------
    pandas.DataFrame
        The histories of :func:`adversarial_train` stacked, with a ``recipe`` column; each starts
        with a row at ``epoch`` 0 (the starting weights, evaluated the same way; no ``lr``,
        ``loss`` or ``train_acc`` there).
    """
    import pandas as pd

    from .. import models

    if recipes is None:
        recipes = {
            "fgsm (zero start)": dict(method="fgsm", alpha=0.0),
            "fgsm (random start, step 2 eps)": dict(method="fast_fgsm", step_size=2 * eps),
            "fast fgsm (random start, step 1.25 eps)": dict(method="fast_fgsm"),
        }
    build = arch or models.cnn
    tables = []
    for name, overrides in recipes.items():
        torch.manual_seed(seed)
        model = build()
        if init is not None:
            model.load_state_dict(init.state_dict())
        kw = {**train_kwargs, **overrides}
        start = {"epoch": 0.0, "batches": 0, "seconds": 0.0,
                 **evaluate_robustness(model, *eval_data, eps=eps, **(kw.get("eval_pgd") or {}))}
        _, hist = adversarial_train(model, x, y, eps=eps, epochs=epochs, eval_data=eval_data,
                                    eval_every=eval_every, seed=seed, progress=progress, **kw)
        tables.append(pd.concat([pd.DataFrame([start]), hist], ignore_index=True).assign(recipe=name))
    return pd.concat(tables, ignore_index=True)


def sweep(
    configs: Sequence[dict[str, Any]],
    *,
    arch: str = "cnn",
    eval_data: tuple[torch.Tensor, torch.Tensor] | None = None,
    eval_eps: float | None = None,
    eval_pgd: dict[str, Any] | None = None,
    device: str | torch.device = "auto",
    progress: bool = True,
    **common: Any,
):
    """Train (or load from the zoo's cache) one model per config and tabulate clean and robust accuracy.

    Each config is a dict of settings, merged over ``common``: ``width`` (the CNN's width
    multiplier, :func:`advkit.models.cnn`), the zoo recipe's ``epochs``, ``batch_size``, ``lr``,
    ``optimizer``, ``seed``, and any :func:`adversarial_train` argument (``method``, ``eps``,
    ``weight_decay``, ``n_train`` for the first ``n_train`` training images, ...). Every model goes
    through :func:`advkit.zoo.load` with ``training="adversarial"``, so it is trained once and
    cached under its recipe's hash.

    Each model is evaluated on ``eval_data`` (default: the first 1000 MNIST test images) at
    ``eval_eps`` (default: the config's ``eps``, which for ``method="none"`` is only the evaluation
    budget) with :func:`evaluate_robustness` (``eval_pgd``: its PGD
    settings).

    Returns
    -------
    pandas.DataFrame
        One row per config: the config's settings, ``params`` (parameter count), ``eval_eps``,
        ``clean_acc``, ``fgsm_acc``, ``pgd_acc``, ``train_seconds`` and ``path`` (the weights).

    Example
    -------
    >>> sweep([{"width": w, "method": m} for w in (0.25, 0.5, 1) for m in ("none", "fast_fgsm")],
    ...       eps=0.1, n_train=10000, epochs=2)                                      # doctest: +SKIP
    """
    import pandas as pd

    from .. import zoo
    from ..data import mnist

    recipe_fields = {"epochs", "batch_size", "lr", "optimizer", "seed"}
    if eval_data is None:
        xt, yt = mnist("test").tensors
        eval_data = (xt[:1000], yt[:1000])
    rows = []
    for cfg in tqdm(list(configs), desc="sweep", disable=not progress):
        c = {**common, **cfg}
        width = c.pop("width", None)
        rec = {k: c.pop(k) for k in list(c) if k in recipe_fields}
        if width is not None:
            rec["model_kwargs"] = {"width": width}
        eps = eval_eps if eval_eps is not None else c.get("eps")
        if eps is None:
            raise ValueError(f"config {cfg} has no eps: pass eps (or eval_eps) to evaluate it")
        if c.get("method") == "none":
            c.pop("eps", None)  # standard training: eps is only the evaluation budget, not part of the recipe
        model = zoo.load(arch, device=device, progress=progress, training="adversarial", training_kwargs=c, **rec)
        x_eval, y_eval = eval_data
        acc = evaluate_robustness(model, x_eval, y_eval, eps=eps, **(eval_pgd or {}))
        rows.append({**cfg, "params": sum(p.numel() for p in model.parameters()), "eval_eps": eps, **acc,
                     "train_seconds": model.zoo_record["train_seconds"], "path": model.zoo_record["path"]})
    return pd.DataFrame(rows)


def capacity_sweep(widths: Sequence[float] = (0.25, 0.5, 1.0), methods: Sequence[str] = ("none", "fast_fgsm"), *,
                   eps: float = 0.1, n_train: int = 10000, epochs: int = 2, **kwargs: Any):
    """Madry et al.'s capacity experiment at reduced scale: robust accuracy against CNN width.

    Madry et al. (ICLR 2018, Sec. 4, Fig. 4) found that capacity alone helps little against PGD,
    but that adversarial training needs it: wider networks reach higher robust accuracy (and
    small ones may lose clean accuracy). This trains the CNN at each ``width`` with each training
    ``method`` on the first ``n_train`` MNIST images (cached by the zoo) and evaluates at ``eps``;
    see :func:`sweep` for the table and ``kwargs``.

    Measured at tiny scale (``widths=(0.25, 1)``, ``n_train=2000, epochs=1``, evaluated on the
    first 200 test images): at width 0.25 fast FGSM does not learn at all (PGD accuracy 0.14,
    chance) while standard training reaches 0.30; at width 1 fast FGSM reaches 0.55 against 0.505
    for standard training (clean 0.725 vs 0.79).
    """
    configs = [{"width": float(w), "method": m} for w in widths for m in methods]
    kwargs = {"batch_size": 100, "lr": 5e-3, **kwargs}  # the optimiser settings of zoo "cnn_adv"
    return sweep(configs, eps=eps, eval_eps=eps, n_train=n_train, epochs=epochs, **kwargs)


def weight_decay_sweep(decays: Sequence[float] = (0.0, 1e-4, 1e-3, 1e-2), *, method: str = "fast_fgsm",
                       eps: float = 0.1, n_train: int = 10000, epochs: int = 2, **kwargs: Any):
    """Robust accuracy against the L2 weight-decay coefficient, for one training ``method``.

    L2 regularisation is a classic suspect for robustness (a smaller weight norm bounds the
    Lipschitz constant); this trains the CNN for each ``weight_decay`` (coupled L2 in the
    optimiser) on the first ``n_train`` MNIST images and evaluates at ``eps``; see :func:`sweep`.
    Measured at tiny scale (``n_train=2000, epochs=1``, first 200 test images): ``weight_decay``
    1.0 stops learning (0.105 clean, chance) against 0.725 clean / 0.55 PGD without decay. The
    intermediate values show nothing at this scale; the lecture's curve (robustness against
    weight decay, and over the epochs) is :func:`weight_decay_curve`, on standard training.
    """
    configs = [{"weight_decay": float(d), "method": method} for d in decays]
    kwargs = {"batch_size": 100, "lr": 5e-3, **kwargs}  # the optimiser settings of zoo "cnn_adv"
    return sweep(configs, eps=eps, eval_eps=eps, n_train=n_train, epochs=epochs, **kwargs)


def weight_decay_curve(
    decays: Sequence[float] = (0.0, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3),
    *,
    arch: str = "softmax_regression",
    n_train: int = 10000,
    epochs: int = 30,
    eval_data: tuple[torch.Tensor, torch.Tensor] | None = None,
    optimizer: str = "sgd",
    lr: float = 0.01,
    batch_size: int = 100,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: bool = True,
):
    """Clean accuracy and distance to the decision boundary, per epoch, against L2 weight decay.

    The lecture's regularisation experiment: standard training (no attack) of ``arch`` on the
    first ``n_train`` MNIST training images, once per coefficient ``lambda`` in ``decays`` (the
    penalty ``lambda * ||theta||^2 / 2`` through the optimiser's coupled ``weight_decay``; SGD
    with momentum 0.9 at a constant ``lr``, so that the epochs show convergence, not a schedule).
    After every epoch the model is measured on ``eval_data`` (default: the first 1000 MNIST test
    images): ``clean_acc`` and the **robustness** ``boundary_l2``, the mean L2 norm of the
    DeepFool perturbation (:func:`advkit.attacks.deepfool`, overshoot 0.02) over the correctly
    classified images, i.e. how far the average correct image is from a wrong class. For the
    default ``softmax_regression`` the distance to the nearest boundary without the box is the
    closed form ``min_j (z_y - z_j) / ||w_y - w_j||_2``; DeepFool's perturbation stays in [0, 1]
    and crosses the boundary, so it is never shorter (about 6-40% longer on MNIST digits, whose
    black pixels cannot get darker).
    Robust accuracy at a fixed ``eps`` would mix robustness with the falling clean accuracy;
    the distance does not. :func:`weight_decay_summary` summarises the curve.

    Measured with the defaults (2-core CPU, about 33 s): after 30 epochs ``boundary_l2`` grows
    with every step of ``lambda`` from 1.00 (``lambda = 0``) to 1.60 (``lambda = 0.3``) while clean
    accuracy falls from 0.898 to 0.780, so robustness keeps growing where the model is already
    over-regularised for accuracy; and without decay the accuracy is within 1% of its final value
    after about 10 epochs while the distance is still falling at epoch 30 (1.36 after one epoch):
    robustness converges more slowly than accuracy, and a stronger penalty makes both settle
    within a few epochs.

    Returns
    -------
    pandas.DataFrame
        One row per (``weight_decay``, ``epoch``): ``weight_decay``, ``epoch``, ``loss`` (mean
        training cross-entropy over the epoch, penalty excluded), ``train_acc``, ``clean_acc``,
        ``boundary_l2``, ``boundary_l2_median``, ``weight_norm`` (``||theta||_2``) and ``seconds``.

    Example
    -------
    >>> curve = weight_decay_curve((0.0, 0.01, 0.1), epochs=10)              # doctest: +SKIP
    >>> weight_decay_summary(curve)                                              # doctest: +SKIP
    """
    import pandas as pd

    from .. import models
    from ..attacks.deepfool import deepfool
    from ..data import mnist
    from ..devices import resolve_device
    from ..metrics import predict

    decays = [float(d) for d in decays]
    if not decays or not all(d >= 0 and math.isfinite(d) for d in decays):
        raise ValueError(f"decays must be a non-empty list of finite coefficients >= 0, got {decays}")
    n_train, epochs = _count(n_train, "n_train"), _count(epochs, "epochs")
    device = resolve_device(device)
    x, y = mnist("train").tensors
    x, y = x[:n_train], y[:n_train]
    if eval_data is None:
        xt, yt = mnist("test").tensors
        eval_data = (xt[:1000], yt[:1000])
    x_ev, y_ev = eval_data[0].to(device), eval_data[1].to(device)
    check_images(x_ev, name="eval_data[0]")
    check_labels(y_ev, x_ev, name="eval_data[1]")

    def distances(model: nn.Module) -> dict[str, float]:
        ok = predict(model, x_ev) == y_ev
        out = {"clean_acc": ok.float().mean().item()}
        if ok.any():
            norms = batched(deepfool, model, x_ev[ok], y_ev[ok], batch_size=500, progress=False).norms(2)
            out.update(boundary_l2=norms.mean().item(), boundary_l2_median=norms.median().item())
        else:
            out.update(boundary_l2=float("nan"), boundary_l2_median=float("nan"))
        out["weight_norm"] = torch.sqrt(sum((p.detach() ** 2).sum() for p in model.parameters())).item()
        return out

    frames = []
    for d in tqdm(decays, desc="weight decay", disable=not progress):
        torch.manual_seed(seed)  # the same initial weights for every coefficient
        model = models.build(arch).to(device)
        _, hist = adversarial_train(model, x, y, method="none", epochs=epochs, batch_size=batch_size, lr=lr,
                                    optimizer=optimizer, lr_schedule="constant", weight_decay=d, seed=seed,
                                    eval_fn=distances, progress=False)
        hist.insert(0, "weight_decay", d)
        frames.append(hist)
    curve = pd.concat(frames, ignore_index=True)
    return curve[["weight_decay", "epoch", "loss", "train_acc", "clean_acc", "boundary_l2", "boundary_l2_median",
                  "weight_norm", "seconds"]]


def weight_decay_summary(curve, columns: Sequence[str] = ("clean_acc", "boundary_l2"), *, since: float = 0.5):
    """Where each quantity of a :func:`weight_decay_curve` ends, and whether it was still moving.

    For each coefficient and each of ``columns``: the value after the first epoch
    (``<column>_first``), after the last (``<column>_final``), and ``<column>_late_change``, its
    relative change over the last ``1 - since`` of training, ``(v_final - v_at) / |v_final|`` with
    ``v_at`` the value at the epoch ``since * epochs`` (default: the second half). A quantity that
    has converged has a late change near 0 (within the run-to-run noise of a constant learning
    rate, about 1% here); one that is still moving does not.

    Returns
    -------
    pandas.DataFrame
        One row per ``weight_decay`` with those three columns per quantity.
    """
    import numpy as np
    import pandas as pd

    if not 0 <= since < 1:
        raise ValueError(f"since is a fraction of the training run in [0, 1), got {since}")
    missing = [c for c in ("weight_decay", "epoch", *columns) if c not in curve.columns]
    if missing:
        raise ValueError(f"curve has no column(s) {missing}: pass the table of weight_decay_curve")
    rows = []
    for d, g in curve.sort_values("epoch").groupby("weight_decay", sort=True):
        epochs = g["epoch"].to_numpy(dtype=float)
        at = int(np.searchsorted(epochs, since * epochs[-1] - 1e-9))  # first row at or after since * epochs
        row: dict[str, float] = {"weight_decay": float(d)}
        for c in columns:
            v = g[c].to_numpy(dtype=float)
            row.update({f"{c}_first": v[0], f"{c}_final": v[-1], f"{c}_late_change": (v[-1] - v[at]) / abs(v[-1])})
        rows.append(row)
    return pd.DataFrame(rows)
