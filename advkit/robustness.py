"""Robustness measures built on minimum-norm attacks (DeepFool's Table 1 and its relatives).

* :func:`empirical_robustness`: DeepFool's ``rho_adv = mean_x ||r_hat(x)||_2 / ||x||_2``;
* :func:`min_norm_stats`: mean, median and quantiles of the minimal perturbation norms;
* :func:`smallest_eps_fooling`: the smallest budget of a fixed-budget attack (FGSM) that
  misclassifies a given fraction of the data (the FGSM column of DeepFool's Table 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .attacks.result import AttackResult
from .evaluation import robustness_curve
from .metrics import lp_norm, median, parse_p

_FAILURES = ("exclude", "inf", "include")


def empirical_robustness(result: AttackResult, *, p: float | str = 2, count_failures: str = "exclude") -> float:
    """DeepFool's empirical robustness ``rho_adv = mean_x ||r_hat(x)||_p / ||x||_p``.

    Moosavi-Dezfooli, Fawzi & Frossard (CVPR 2016), the measure of their Table 1, with
    ``r_hat(x)`` the perturbation a minimum-norm attack found (``result.x_adv - result.x``).

    The paper averages over the whole test set, where DeepFool always succeeds and ``r_hat``
    is taken w.r.t. the model's *own* prediction. Here ``r_hat`` is w.r.t. the labels the attack
    was given: attack with ``y = advkit.metrics.predict(model, x)`` for the paper's definition,
    otherwise misclassified samples contribute ``||r|| = 0``. Failed samples (no adversarial
    example within the attack's iterations) are handled by ``count_failures``:

    * ``"exclude"`` (default): average over the successful samples only;
    * ``"inf"``: a failure counts as an infinite distance (the result is ``inf`` if any failed),
      the conservative reading of a *minimal* perturbation that was not found;
    * ``"include"``: count the failed sample's final, unsuccessful perturbation (what a plain
      mean over all samples gives; it says nothing reliable about the failed samples).

    Returns ``nan`` when no sample is counted.

    Example
    -------
    >>> empirical_robustness(deepfool(model, x, predict(model, x)))   # doctest: +SKIP
    0.19
    """
    if count_failures not in _FAILURES:
        raise ValueError(f"count_failures must be one of {', '.join(map(repr, _FAILURES))}, got {count_failures!r}")
    ratio = lp_norm(result.delta, p) / lp_norm(result.x, p).clamp_min(1e-12)
    ok = result.success.to(ratio.device)
    if count_failures == "exclude":
        ratio = ratio[ok]
    elif count_failures == "inf":
        ratio = torch.where(ok, ratio, torch.full_like(ratio, math.inf))
    return ratio.mean().item() if len(ratio) else math.nan


def min_norm_stats(result: AttackResult, p: float | str = 2) -> dict[str, float]:
    """Statistics of the perturbation norms ``||x_adv - x||_p`` over the *successful* samples.

    Returns ``{"mean", "median", "q10", "q90", "n_success", "n"}`` (norms are ``nan`` when no
    sample succeeded). The median and quantiles are robust to a few far-off samples, which a
    minimum-norm attack with a cap on iterations may produce.

    Example
    -------
    >>> min_norm_stats(deepfool(model, x, y), p=2)   # doctest: +SKIP
    {'mean': 1.71, 'median': 1.68, 'q10': 0.97, 'q90': 2.46, 'n_success': 200, 'n': 200}
    """
    p = parse_p(p)
    norms = result.norms(p)[result.success.to(result.x.device)]
    out = {"n_success": int(len(norms)), "n": len(result)}
    if len(norms) == 0:
        return {"mean": math.nan, "median": math.nan, "q10": math.nan, "q90": math.nan, **out}
    q = torch.quantile(norms.double(), torch.tensor([0.1, 0.9], dtype=torch.double, device=norms.device))
    return {"mean": norms.mean().item(), "median": median(norms), "q10": q[0].item(), "q90": q[1].item(), **out}


def smallest_eps_fooling(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: Callable[..., AttackResult],
    epsilons: Sequence[float],
    *,
    fraction: float = 0.9,
    batch_size: int = 1000,
    progress: bool = True,
    **attack_kwargs,
) -> tuple[float | None, list[float]]:
    """The smallest ``eps`` in ``epsilons`` at which ``attack`` misclassifies ``fraction`` of ``x``.

    DeepFool's Table 1 reports, for FGSM, "the smallest eps that causes 90% of the data to be
    misclassified". The error rate is ``1 - robust accuracy`` over all of ``x`` (clean errors
    count as misclassified), computed with :func:`advkit.evaluation.robustness_curve`.

    Parameters
    ----------
    attack : callable
        A fixed-budget attack ``attack(model, x, y, eps=..., **attack_kwargs)`` (e.g. ``fgsm``).
    epsilons : sequence of float
        Increasing budgets to try; a fine grid gives a precise answer.
    fraction : float
        Required fraction of misclassified samples, in (0, 1].

    Returns
    -------
    (eps, curve)
        ``eps``: the first budget reaching the fraction, or ``None`` if none does;
        ``curve``: the robust accuracy at every eps (as ``robustness_curve`` returns it).

    Example
    -------
    >>> eps, curve = smallest_eps_fooling(model, x, y, fgsm, [0.05 * i for i in range(1, 11)])  # doctest: +SKIP
    >>> eps                                                                                        # doctest: +SKIP
    0.25
    """
    fraction = float(fraction)
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    epsilons = [float(e) for e in epsilons]
    if not epsilons:
        raise ValueError("epsilons is empty; give increasing budgets such as [0.05, 0.1, ..., 0.5]")
    if any(b <= a for a, b in zip(epsilons, epsilons[1:])):
        raise ValueError(f"epsilons must be strictly increasing, got {epsilons}")
    curve = robustness_curve(model, x, y, attack, epsilons, batch_size=batch_size, progress=progress,
                             **attack_kwargs)
    eps = next((e for e, acc in zip(epsilons, curve) if 1 - acc >= fraction - 1e-12), None)
    return eps, curve
