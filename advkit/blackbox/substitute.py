"""Substitute training with Jacobian-based dataset augmentation (Papernot, McDaniel, Goodfellow,
Jha, Celik & Swami, "Practical Black-Box Attacks against Machine Learning", AsiaCCS 2017).

The attacker holds neither the model nor its training data, only a small set of inputs
``S_0`` (e.g. 150 MNIST test digits) and a **label** oracle ``O``. It trains a local
*substitute* ``F`` on the oracle's labels, grows the set where ``F`` changes fastest, and
finally attacks ``F`` white-box, counting on transferability. Algorithm 1 of the paper::

    label S_0 by the oracle:  D = {(x, O(x)) : x in S_0};   train F on D
    for r = 0, ..., rho - 1:                                     (substitute epochs)
        lam_r   = lam * (-1) ** floor(r / tau)                   (periodic step size, optional)
        S_{r+1} = S_r  U  { clip(x + lam_r * sign(J_F(x)[O(x)]), 0, 1) : x in S_r }
        label the new points by the oracle; train F on all of S_{r+1}
    x_adv = FGSM or PGD on F at eps;  one label query per sample on O judges the transfer

``J_F(x)[O(x)]`` is the row of the substitute's Jacobian for the oracle's label, i.e. the input
gradient of the substitute's logit for that class (the logits, as in the authors' cleverhans
``jacobian_augmentation``). Every augmentation doubles the set, so ``rho`` rounds label
``|S_0| * 2**rho`` points: 150 seeds and ``rho=6`` give the paper's 9600 (Table 1 reports the
substitute after each of the 7 trainings, rho = 0..6). With *reservoir sampling*
(``reservoir=(sigma, kappa)``, Section 6 of the paper), rounds ``r >= sigma`` augment only
``kappa`` points drawn uniformly at random from ``S_r``, for ``|S_0| * 2**sigma + kappa * (rho -
sigma)`` training queries.

Note: the authors' cleverhans tutorial (``mnist_blackbox.py``, ``data_aug=6``) trains 6 times and
does not augment after the last training, so its final set holds 150 * 2**5 = 4800 points;
here ``rho`` counts augmentations, so ``rho=5`` reproduces it.

Measured transfer (MNIST test images 0..499; seeds: 150 class-balanced images of the last 1000
test images; target: the Kolter-Madry tutorial CNN ``zoo.reference("model_cnn")``, which advkit
did not train; transfer = success among the images the target classifies correctly; 1 thread on
a shared 2-core machine, CPU seconds of the ``substitute`` call, inflated by a load average of
5-14 for the first three rows)::

    for s in (0, 1, 2):
        x_seed, _ = seed_set(x_test[-1000:], y_test[-1000:], n=150, seed=s)
        res = substitute(ref, x_test[:500], y_test[:500], x_seed=x_seed, seed=s, x_holdout=x_test[-2000:-1000])
        transfer_rates(res.extra["substitute"], ref, x_test[:500], y_test[:500], eps=(0.2, 0.3))

============================================  =========  ============  ============  ============  ========
substitute, training                          agreement  FGSM eps 0.3  PGD eps 0.2   PGD eps 0.3   CPU time
============================================  =========  ============  ============  ============  ========
**defaults** (:func:`small_cnn`, ``tau=3``,   0.95-0.96  0.45 - 0.68*  0.40 - 0.43   0.81 - 0.88   48-51 s
5 epochs, batch 32, PGD), ``rho=6``, 9600 q.
the same, ``rho=5`` (4800 labels)             0.93-0.94               0.33 - 0.39   0.76 - 0.77   28-30 s
the same, ``rho=4`` (2400 labels, seeds 0-1)  0.87-0.88               0.22 - 0.27   0.61 - 0.68   ~14 s
LeNet-5, ``tau=None``, 10 epochs, batch 128*  0.78-0.80  0.33 - 0.40                0.40 - 0.59   ~19 s
LeNet-5, ``tau=3``, batch 32*                 0.91       0.42 - 0.43                0.61 - 0.66   ~22 s
============================================  =========  ============  ============  ============  ========

(Agreement: after the last training, on the 1000 held-out test images. Starred: an earlier
measurement, seed set of seed 0, agreement on the attacked images, substitute seeds 0-1 or 0-2,
at a lower load; the LeNet-5 row without ``tau`` was the default before.) PGD is 40 steps of
``2.5 * eps / 40``. The agreement grows by round, e.g. seed 0, ``rho=6``: 0.68, 0.82, 0.87,
0.89, 0.87, 0.94, 0.95. Papernot et al.'s 84.24% was against MetaMind's model; this target is
harder: even a LeNet-5 trained on 9600 *real* training images labelled by the target (98%
agreement) transfers only 56% by FGSM, while a substitute of the target's family (strided
convolutions, :func:`small_cnn`) with PGD clears 80%. On this target the substitute's
architecture and the attack matter more than its agreement. Without ``tau`` (``+lam`` every
round) no augmented point ever changes its oracle label (measured on 4 rounds): the new points
are more confident copies of their parents.

Query accounting. The labelling queries of ``S_0`` and of every augmented point go to a
separate training :class:`~advkit.blackbox.Oracle` with one "sample" per labelled row, reported
as ``extra["training_queries"]`` (= the size of the final training set). The attacked images are
asked through their own oracle (``result.queries``): one query of the clean image (a sample the
oracle already misclassifies stops there, a success with one query), one of the adversarial
example crafted on the substitute.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from ..attacks.checks import check_eps, check_images, check_labels, check_model
from .oracle import Oracle, as_oracle, check_budget, check_num_classes, finish

ATTACKS = ("fgsm", "pgd")


def seed_set(x: torch.Tensor, y: torch.Tensor, n: int = 150, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A class-balanced random subset of ``x``: the attacker's initial substitute set ``S_0``.

    ``n // K`` images of each of the ``K`` classes present in ``y`` (the first ``n % K``
    classes get one more), drawn without replacement with a private generator. Papernot et
    al. take 150 MNIST test images; take them from images you will not attack (e.g. the last
    1000 test images) so that the seed set is held out.

    Parameters
    ----------
    x : Tensor
        Candidate images ``N x C x H x W`` in [0, 1].
    y : Tensor
        Their labels ``N`` (used only to balance the classes; the substitute never sees them).
    n : int, default 150
        Size of the set, at least the number of classes.
    seed : int, default 0
        Seed of the draw.

    Returns
    -------
    (Tensor, Tensor)
        The images ``x[idx]`` and the indices ``idx`` (int64, sorted within each class).

    Example
    -------
    >>> x_seed, idx = seed_set(x_test[-1000:], y_test[-1000:], n=150)   # doctest: +SKIP
    """
    check_images(x)
    check_labels(y, x)
    classes = torch.unique(y.cpu())
    k = len(classes)
    if isinstance(n, bool) or not isinstance(n, int) or n < k:
        raise ValueError(f"n must be an int >= the number of classes ({k}) so that every class has a seed, got {n!r}")
    gen = torch.Generator().manual_seed(seed)
    yc = y.cpu()
    picked = []
    for i, c in enumerate(classes.tolist()):
        members = (yc == c).nonzero().squeeze(1)
        want = n // k + (1 if i < n % k else 0)
        if len(members) < want:
            raise ValueError(f"class {c} has {len(members)} images but the balanced seed set needs {want}; "
                             "pass more images or a smaller n")
        picked.append(members[torch.randperm(len(members), generator=gen)[:want]].sort().values)
    idx = torch.cat(picked).to(x.device)
    return x[idx], idx


def substitute(
    model: nn.Module | Oracle,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    x_seed: torch.Tensor,
    y_seed: torch.Tensor | None = None,
    eps: float = 0.3,
    arch: str | Callable[[], nn.Module] = "small_cnn",
    rho: int = 6,
    lam: float = 0.1,
    tau: int | None = 3,
    reservoir: tuple[int, int] | None = None,
    epochs: int = 5,
    lr: float = 1e-3,
    batch_size: int = 32,
    jacobian: str = "logits",
    attack: str = "pgd",
    attack_kwargs: dict | None = None,
    x_holdout: torch.Tensor | None = None,
    max_queries: int | None = None,
    target: torch.Tensor | None = None,
    seed: int = 0,
    progress: bool = True,
) -> "AttackResult":  # noqa: F821
    """Papernot et al.'s black-box attack: train a substitute on the oracle's labels, attack it, transfer.

    Parameters
    ----------
    model : nn.Module or Oracle
        The target, reached only through a label oracle (an :class:`Oracle` answering labels,
        scores or logits is accepted for the attacked images; only its top-1 label is used).
    x : Tensor
        ``N x C x H x W`` images in [0, 1] to attack. Never modified.
    y : Tensor
        ``N`` int64 true labels.
    x_seed : Tensor
        The attacker's initial set ``S_0`` (``M x C x H x W`` in [0, 1]), e.g. 150 held-out
        images from :func:`seed_set`; it should hold at least one image of every class the
        oracle answers (a warning says when the oracle's labels of ``S_0`` miss a class).
    y_seed : Tensor, optional
        Labels of ``S_0`` the attacker already has. In the paper's pure black-box setting
        (the default, ``None``) the oracle labels ``S_0`` (``M`` training queries).
    eps : float, default 0.3
        Linf budget of the final FGSM / PGD on the substitute (the paper's MNIST eps).
    arch : str or callable, default "small_cnn"
        The substitute: ``"small_cnn"`` (:func:`small_cnn`, strided convolutions), a name in
        :data:`advkit.models.ARCHITECTURES` (e.g. ``"lenet5"``) or a
        zero-argument callable returning a fresh ``nn.Module`` (pixels in [0, 1] in, logits out).
    rho : int, default 6
        Substitute epochs: Jacobian augmentations ``S_r -> S_{r+1}``; the substitute is
        trained ``rho + 1`` times, the last time on ``|S_0| * 2**rho`` points.
    lam : float, default 0.1
        Augmentation step ``lambda`` (the paper's 0.1). A negative value starts with steps
        *down* the label's logit, towards the decision boundary (the cleverhans tutorial's
        ``lmbda_coef``: ``-lam`` for rounds 0-2, then ``+lam``, i.e. ``lam=-0.1, tau=3``).
    tau : int or None, default 3
        Periodic step size (Section 6 of the paper, its ``tau = 3``): ``lam_r = lam * (-1) **
        floor(r / tau)``, so rounds 0-2 step up the label's logit, rounds 3-5 down, towards the
        boundary. ``None``: always ``+lam`` (Algorithm 1 as printed; then no augmented point
        changes its oracle label, see the note below the table above).
    reservoir : (int, int), optional
        ``(sigma, kappa)``: from augmentation round ``sigma`` on, augment only ``kappa``
        points drawn uniformly at random from the current set. ``None``: augment every point.
    epochs : int, default 5
        Training epochs per substitute epoch (the cleverhans tutorial has ``nb_epochs_s=10``
        with batches of 128; 5 epochs of batches of 32 are half the passes over the data and
        twice the Adam steps); training continues from the previous round's weights (a fresh
        Adam each round).
    lr : float, default 1e-3
        Adam learning rate (the tutorial's).
    batch_size : int, default 32
        Training mini-batch.
    jacobian : {"logits", "probs"}, default "logits"
        Differentiate the substitute's logit of the oracle's label (the cleverhans code) or its
        softmax probability (the paper's ``F``).
    attack : {"pgd", "fgsm"}, default "pgd"
        The white-box attack on the substitute, Linf at ``eps``, against the true label:
        :func:`advkit.attacks.pgd` with Madry et al.'s MNIST schedule, ``x_{t+1} =
        Pi_eps(x_t + alpha * sign(grad_x J(F(x_t), y)))``, 40 steps of ``alpha = 2.5 * eps / 40``,
        no random start; or :func:`advkit.attacks.fgsm`, ``x + eps * sign(grad_x J(F(x), y))``
        (the paper's attack; it transfers less here: 0.45-0.68 against PGD's 0.81-0.88 at
        ``rho=6``, see the table above).
    attack_kwargs : dict, optional
        More keyword arguments for that attack (e.g. ``{"eps_step": 0.01, "max_iter": 100}``
        for PGD, replacing the schedule above).
    x_holdout : Tensor, optional
        Images on which ``extra["agreement_history"]`` is measured (labelled once by an
        evaluation oracle, counted in ``extra["holdout_queries"]``, not in the attack's
        budget). ``None``: measured on ``x``, with the labels of its clean query.
    max_queries : int, optional
        Per-sample budget on the attacked images (2 are needed: clean and adversarial).
        The training queries are fixed by ``|S_0|``, ``rho`` and ``reservoir``.
    target : None
        Untargeted only (the attack's convention keeps the keyword): any other value raises
        ``NotImplementedError``. For a targeted transfer, train the substitute with this
        function, attack ``result.extra["substitute"]`` with :func:`advkit.attacks.pgd`
        (``target=...``) and judge the adversarial examples on the model.
    seed : int, default 0
        Seeds the substitute's initial weights, the training order and the reservoir draws
        (private generators; the global RNG is left as it was).
    progress : bool, default True
        A tqdm bar over the substitute epochs.

    Returns
    -------
    AttackResult
        ``x_adv`` (the substitute's adversarial examples; ``x`` itself for samples the oracle
        already misclassifies or that had no query left), ``success`` and ``pred`` from the
        oracle's answer on ``x_adv``, ``queries`` (per attacked image), and in ``extra``:
        ``"substitute"`` (the trained module, eval mode), ``"agreement_history"`` (list of
        ``rho + 1`` floats: the substitute's agreement with the oracle after each training),
        ``"training_queries"`` (int), ``"training_set_sizes"`` (list), ``"training_set"``
        (``(x_sub, y_sub)``, the final labelled set), ``"transfer_rate"`` (``{eps: rate}``,
        success among the images the oracle classifies correctly) and
        ``"substitute_success_rate"`` (white-box success of the attack on the substitute).

    Example
    -------
    >>> x_seed, _ = seed_set(x_test[-1000:], y_test[-1000:], n=150)           # doctest: +SKIP
    >>> res = substitute(target, x_test[:500], y_test[:500], x_seed=x_seed)    # doctest: +SKIP
    >>> res.extra["transfer_rate"], res.extra["training_queries"]             # doctest: +SKIP
    ({0.3: 0.88}, 9600)
    """
    from .. import models

    if target is not None or "target" in (attack_kwargs or {}):
        raise NotImplementedError(
            "substitute is untargeted only (success: the model's label is no longer y), so target= (or "
            "attack_kwargs['target']) is not supported. For a targeted transfer attack, call substitute without "
            "target, then run advkit.attacks.pgd(res.extra['substitute'], x, y, eps=..., target=target) and judge "
            "its x_adv on the model")
    eps = check_eps(eps)
    try:
        lam = float(lam)
    except (TypeError, ValueError):
        raise TypeError(f"lam must be a number, got {lam!r}") from None
    if not math.isfinite(lam):
        raise ValueError(f"lam must be finite, got {lam}")
    for name, v in (("rho", rho), ("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "rho" else 1):
            raise ValueError(f"{name} must be an int >= {0 if name == 'rho' else 1}, got {v!r}")
    if tau is not None and (isinstance(tau, bool) or not isinstance(tau, int) or tau < 1):
        raise ValueError(f"tau (the period of the step-size sign flip) must be a positive int or None, got {tau!r}")
    if reservoir is not None:
        if (not isinstance(reservoir, (tuple, list)) or len(reservoir) != 2
                or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in reservoir)):
            raise ValueError(f"reservoir must be (sigma, kappa), two ints >= 0, or None; got {reservoir!r}")
    if attack not in ATTACKS:
        raise ValueError(f"attack must be one of {ATTACKS}, got {attack!r}")
    if jacobian not in ("logits", "probs"):
        raise ValueError(f"jacobian must be 'logits' or 'probs', got {jacobian!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    max_queries = check_budget(max_queries)
    check_images(x_seed, name="x_seed")
    if x_seed.shape[1:] != x.shape[1:]:
        raise ValueError(f"x_seed has images of shape {tuple(x_seed.shape[1:])} but x has {tuple(x.shape[1:])}")
    if y_seed is not None:
        check_labels(y_seed, x_seed, name="y_seed")
    if x_holdout is not None:
        check_images(x_holdout, name="x_holdout")
    oracle = as_oracle(model, x, y, allowed=("labels", "scores", "logits"), max_queries=max_queries)
    target_module = oracle._model  # the training oracle labels rows for the same model (package-internal)
    sizes = _set_sizes(len(x_seed), rho, reservoir)
    trainer = Oracle(target_module, "labels", n=sizes[-1])
    device = x.device

    # the attacked images: one clean query each (misclassified ones are done); a shared oracle may
    # have samples with no query left: they keep x and count as not fooled
    asked = (oracle.remaining() > 0).to(device)
    clean = y.clone()
    if asked.any():
        rows = asked.nonzero().squeeze(1)
        clean[rows] = oracle.labels(oracle(x[rows], idx=rows.cpu())).to(device)
    k = check_num_classes(oracle, y, None) if oracle.num_classes is not None else int(y.max()) + 1
    if x_holdout is not None:
        evaluator = Oracle(target_module, "labels", n=len(x_holdout))
        ref_x, ref_y = x_holdout, evaluator(x_holdout)
    else:
        ref_x, ref_y = x[asked], clean[asked]

    # S_0 and its labels
    x_sub = x_seed.detach().to(device)
    y_sub = (y_seed.to(device) if y_seed is not None
             else trainer(x_sub, idx=torch.arange(len(x_sub))).to(device))
    missing = sorted(set(range(k)) - set(y_sub.tolist()))
    if missing:
        warnings.warn(f"substitute: the labels of the seed set miss class(es) {missing} of the oracle's {k}; the "
                      "substitute can only learn them if an augmentation happens to reach them. Use a seed set with "
                      "at least one image per class (see seed_set)", RuntimeWarning, stacklevel=2)

    gen = torch.Generator().manual_seed(seed)
    net = _build(arch, seed, models).to(device)
    agreement: list[float] = []
    bar = tqdm(total=rho + 1, desc="substitute epochs", leave=False, disable=not progress)
    for r in range(rho + 1):
        _train(net, x_sub, y_sub, epochs=epochs, lr=lr, batch_size=batch_size, gen=gen)
        agreement.append(_agreement(net, ref_x, ref_y))
        bar.update()
        bar.set_postfix(n=len(x_sub), agreement=f"{agreement[-1]:.3f}")
        if r == rho:
            break
        step = lam * (-1) ** (r // tau) if tau else lam
        if reservoir is not None and r >= reservoir[0]:
            pick = torch.randperm(len(x_sub), generator=gen)[: reservoir[1]].to(device)
        else:
            pick = torch.arange(len(x_sub), device=device)
        x_new = jacobian_augmentation(net, x_sub[pick], y_sub[pick], step, jacobian)
        if len(x_new):
            start = len(x_sub)
            y_new = trainer(x_new, idx=torch.arange(start, start + len(x_new))).to(device)
            x_sub, y_sub = torch.cat([x_sub, x_new]), torch.cat([y_sub, y_new])
    bar.close()
    net.eval()

    # white-box attack on the substitute, one label query per remaining sample on the oracle
    x_adv = x.detach().clone()
    pred = clean.clone()
    act = (asked & (clean == y) & (oracle.remaining().to(device) > 0)).nonzero().squeeze(1)
    sub_rate = float("nan")
    if len(act):
        crafted = _craft(net, x[act], y[act], eps, attack, attack_kwargs)
        sub_rate = crafted.success_rate
        x_adv[act] = crafted.x_adv
        pred[act] = oracle.labels(oracle(x_adv[act], idx=act.cpu())).to(device)
    correct = asked & (clean == y)
    rate = (pred[correct] != y[correct]).float().mean().item() if correct.any() else float("nan")
    extra = {
        "substitute": net, "agreement_history": agreement, "training_queries": trainer.total_queries,
        "training_set_sizes": sizes, "training_set": (x_sub, y_sub), "transfer_rate": {eps: rate},
        "substitute_success_rate": sub_rate,
    }
    if x_holdout is not None:
        extra["holdout_queries"] = len(x_holdout)
    return finish(oracle, x, y, x_adv, pred, attack="substitute",
                  params={"eps": eps, "arch": arch if isinstance(arch, str) else getattr(arch, "__name__", "callable"),
                          "rho": rho, "lam": lam, "tau": tau, "jacobian": jacobian, "reservoir": reservoir,
                          "epochs": epochs, "lr": lr,
                          "batch_size": batch_size, "substitute_attack": attack, "seeds": len(x_seed),
                          "seed": seed},
                  extra=extra)


def small_cnn(num_classes: int = 10, in_channels: int = 1) -> nn.Sequential:
    """A slim version of the Kolter-Madry MNIST CNN (``advkit.models.cnn``) for substitutes.

    conv3x3(16) - conv3x3(16, stride 2) - conv3x3(32) - conv3x3(32, stride 2) - fc100 - fc10,
    ReLU throughout, pixels in [0, 1] in (no normalisation layer): about a quarter of the
    multiply-adds of ``cnn``, five times those of LeNet-5. A substitute of the target's family
    (here: strided convolutions) transfers much better than LeNet-5 or an MLP; see the tests.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, stride=2), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1, stride=2), nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 100), nn.ReLU(),
        nn.Linear(100, num_classes),
    )


def jacobian_augmentation(net: nn.Module, x: torch.Tensor, labels: torch.Tensor, lam: float,
                          output: str = "logits") -> torch.Tensor:
    """``clip(x + lam * sign(grad_x Z_label(x)), 0, 1)``: Papernot et al.'s new training points.

    ``Z_label`` is the substitute's logit of the oracle's label (its Jacobian row
    ``J_F(x)[O(x)]``); one backward pass for the whole batch (samples do not interact).
    """
    was_training = net.training
    net.eval()
    xa = x.detach().requires_grad_(True)
    z = net(xa)
    if output == "probs":
        z = z.softmax(1)
    (grad,) = torch.autograd.grad(z.gather(1, labels[:, None]).sum(), xa)
    net.train(was_training)
    return (x.detach() + lam * grad.sign()).clamp(0, 1)


def transfer_rates(source: nn.Module, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                   eps: float | tuple[float, ...] = (0.2, 0.3), attack: str = "pgd",
                   attack_kwargs: dict | None = None) -> dict[float, float]:
    """Transfer rate of adversarial examples crafted on ``source`` against ``model``, per eps.

    The rate is the fraction of the images ``model`` classifies correctly whose adversarial
    example (Linf, on ``source`` against the true label) ``model`` misclassifies. The attack is
    :func:`substitute`'s, with the same defaults: ``"pgd"`` (40 steps of ``2.5 * eps / 40``,
    unless ``attack_kwargs`` say otherwise) or ``"fgsm"``; so ``transfer_rates(res.extra[
    "substitute"], model, x, y, eps=eps)`` repeats ``res.extra["transfer_rate"][eps]`` with
    fresh queries (on the images ``substitute`` attacked, the same number).
    ``model`` is asked for labels only (through an :class:`Oracle`), ``len(x) * (1 + len(eps))``
    queries in all.

    Example
    -------
    >>> transfer_rates(res.extra["substitute"], target, x, y, eps=(0.2, 0.3))   # doctest: +SKIP
    {0.2: 0.42, 0.3: 0.88}
    """
    if attack not in ATTACKS:
        raise ValueError(f"attack must be one of {ATTACKS}, got {attack!r}")
    check_model(source)
    epss = (eps,) if isinstance(eps, (int, float)) else tuple(eps)
    oracle = Oracle(model, "labels", n=len(x))
    ok = oracle(x).to(x.device) == y
    out: dict[float, float] = {}
    if not ok.any():
        return {float(e): float("nan") for e in epss}
    for e in epss:
        e = check_eps(e)
        res = _craft(source, x[ok], y[ok], e, attack, attack_kwargs)
        pred = oracle(res.x_adv, idx=ok.nonzero().squeeze(1).cpu()).to(x.device)
        out[e] = (pred != y[ok]).float().mean().item()
    return out


# ------------------------------------------------------------------ helpers


def _craft(net: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, attack: str, attack_kwargs: dict | None):
    """FGSM, or PGD with Madry et al.'s MNIST schedule (40 steps of 2.5 * eps / 40) unless told otherwise."""
    from ..attacks.fgsm import fgsm
    from ..attacks.pgd import pgd

    kw = dict(attack_kwargs or {})
    if attack == "fgsm":
        return fgsm(net, x, y, eps=eps, **kw)
    kw.setdefault("max_iter", 40)
    kw.setdefault("eps_step", 2.5 * eps / kw["max_iter"] if eps > 0 else 0.01)
    return pgd(net, x, y, eps=eps, **kw)


def _set_sizes(m: int, rho: int, reservoir: tuple[int, int] | None) -> list[int]:
    """Size of ``S_r`` for ``r = 0..rho``."""
    sizes = [m]
    for r in range(rho):
        grow = sizes[-1] if reservoir is None or r < reservoir[0] else min(reservoir[1], sizes[-1])
        sizes.append(sizes[-1] + grow)
    return sizes


def _build(arch: str | Callable[[], nn.Module], seed: int, models) -> nn.Module:
    with torch.random.fork_rng(devices=[]):  # seeded initial weights; the global RNG is restored
        torch.manual_seed(seed)
        if isinstance(arch, str):
            if arch == "small_cnn":
                net = small_cnn()
            elif arch in models.ARCHITECTURES:
                net = models.build(arch)
            else:
                raise ValueError(f"unknown substitute architecture {arch!r}; choose one of "
                                 f"{sorted(['small_cnn', *models.ARCHITECTURES])} or pass a zero-argument callable")
        elif callable(arch):
            net = arch()
        else:
            raise TypeError(f"arch must be an architecture name or a zero-argument callable, got {type(arch).__name__}")
    if not isinstance(net, nn.Module):
        raise TypeError(f"arch() must return an nn.Module, got {type(net).__name__}")
    return net


def _train(net: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float, batch_size: int,
           gen: torch.Generator) -> None:
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen).to(x.device)
        for i in range(0, len(x), batch_size):
            b = order[i:i + batch_size]
            loss = F.cross_entropy(net(x[b]), y[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    net.eval()


@torch.no_grad()
def _agreement(net: nn.Module, x: torch.Tensor, labels: torch.Tensor, batch: int = 2048) -> float:
    if len(x) == 0:
        return float("nan")
    pred = torch.cat([net(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])
    return (pred == labels.to(pred.device)).float().mean().item()
