"""Robustness evaluations built from attacks: accuracy-vs-budget curves, and :func:`audit`, an
evaluation that checks itself for the signs of gradient masking."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from .attacks.batching import batched
from .attacks.result import AttackResult


def robustness_curve(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: Callable[..., AttackResult],
    epsilons: Sequence[float],
    *,
    batch_size: int = 1000,
    progress: bool = True,
    **attack_kwargs,
) -> list[float]:
    """Robust accuracy of ``model`` under ``attack`` at each budget in ``epsilons``.

    ``eps = 0`` gives the clean accuracy. Returns one accuracy (a float in [0, 1]) per eps.

    Example
    -------
    >>> robustness_curve(model, x, y, fgsm, [0, 0.1, 0.2])   # doctest: +SKIP
    [0.99, 0.71, 0.12]
    """
    accs = []
    for eps in tqdm(list(epsilons), desc=getattr(attack, "__name__", "attack") + " curve",
                    disable=not progress):
        res = batched(attack, model, x, y, eps=eps, batch_size=batch_size, progress=False, **attack_kwargs)
        accs.append(res.robust_accuracy)
    return accs


# ====================================================================== the self-checking evaluation

#: The names of :func:`audit`'s checks, in the order they are reported.
CHECKS = ("zero_gradients", "blackbox_beats_whitebox", "no_zero_at_large_eps", "more_steps_worse",
          "randomised_model")

_ADVICE = {
    "zero_gradients": "the attack cannot move these inputs: look for a non-differentiable or saturating "
                      "layer (quantisation, JPEG, argmax, a huge temperature) and attack through it with BPDA "
                      "(advkit.defenses.BPDA), a margin loss, or a black-box attack",
    "blackbox_beats_whitebox": "a gradient-free attack did better than gradient attacks with full access: "
                               "the gradient is misleading (gradient masking); use BPDA/EOT or stronger "
                               "black-box attacks before trusting the white-box numbers",
    "no_zero_at_large_eps": "at this budget every input can be turned into a uniform grey image, so a working "
                            "attack reaches about 0% accuracy; the attack is failing, not the model succeeding",
    "more_steps_worse": "a stronger attack (more steps, random restarts) should never do worse; the loss "
                        "surface or the model's randomness misleads the attack (check randomised_model, "
                        "use EOT or a larger step)",
    "randomised_model": "the same input gives different outputs: single-sample gradients and judgements are "
                        "noisy; attack the expectation with EOT (advkit.blackbox.eot) and judge on several draws",
}


class GradientMaskingError(RuntimeError):
    """Raised by :func:`audit` with ``raise_on_flag=True`` when a check fires; ``.report`` holds the report."""

    def __init__(self, report: AuditReport):
        super().__init__(f"the evaluation shows signs of gradient masking: {', '.join(report.flags)}\n{report!r}")
        self.report = report


@dataclass
class Check:
    """One check of :func:`audit`: whether it fired, the rule it applies and the evidence."""

    name: str
    flagged: bool
    rule: str
    evidence: dict[str, Any]
    advice: str = ""

    def describe(self) -> str:
        """The evidence as one short line."""
        return "; ".join(f"{k}={_fmt(v)}" for k, v in self.evidence.items())


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


@dataclass
class AuditReport:
    """What :func:`audit` found: robust accuracies per attack, the checks and their evidence.

    Attributes
    ----------
    eps, norm, n
        The threat model and the number of inputs audited.
    accuracy : dict
        ``name -> accuracy`` for ``"clean"`` and each attack of the battery, in the order run.
    robust_accuracy : float
        The worst case at ``eps``: the share of inputs that no attack of the battery fooled
        (per input, over all attacks at ``eps``).
    checks : dict
        ``name -> Check`` for every check in :data:`CHECKS`.
    flags : list of str
        The names of the checks that fired (empty: no sign of gradient masking found).
    settings : dict
        The battery's parameters (for the record).
    results : dict
        ``name -> AttackResult`` of each attack, for a closer look (not shown in the repr).
    seconds : float
        Wall time of the audit.
    """

    eps: float
    norm: str
    n: int
    accuracy: dict[str, float]
    robust_accuracy: float
    checks: dict[str, Check]
    flags: list[str]
    settings: dict[str, Any]
    results: dict[str, AttackResult] = field(default_factory=dict, repr=False)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """No check fired."""
        return not self.flags

    def to_frame(self, what: str = "checks"):
        """A :class:`pandas.DataFrame`: ``"checks"`` (one row per check: flagged, rule, evidence) or
        ``"accuracy"`` (one row per attack: its robust accuracy; the last row is the worst case)."""
        import pandas as pd

        if what == "checks":
            rows = [{"check": c.name, "flagged": c.flagged, "rule": c.rule, "evidence": c.describe()}
                    for c in self.checks.values()]
            return pd.DataFrame(rows).set_index("check")
        if what == "accuracy":
            rows = [{"attack": k, "accuracy": round(v, 4)} for k, v in self.accuracy.items()]
            rows.append({"attack": f"worst case at eps={self.eps:g}", "accuracy": round(self.robust_accuracy, 4)})
            return pd.DataFrame(rows).set_index("attack")
        raise ValueError(f"what must be 'checks' or 'accuracy', got {what!r}")

    def __repr__(self) -> str:
        head = (f"AuditReport(eps={self.eps:g}, norm={self.norm}, n={self.n}, {self.seconds:.1f}s): "
                + (f"{len(self.flags)} flag(s): {', '.join(self.flags)}" if self.flags else "no flags"))
        acc = " | ".join(f"{k} {100 * v:.1f}%" for k, v in self.accuracy.items())
        lines = [head, f"  accuracy: {acc} | worst case {100 * self.robust_accuracy:.1f}%"]
        width = max(len(c) for c in self.checks)
        for c in self.checks.values():
            mark = "FLAG" if c.flagged else " ok "
            lines.append(f"  [{mark}] {c.name:<{width}}  {c.describe()}   (fires if {c.rule})")
        for c in self.checks.values():
            if c.flagged:
                lines.append(f"  -> {c.name}: {c.advice}")
        return "\n".join(lines)


def _margin_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    from .attacks.pgd import margin_loss

    return margin_loss(logits, labels)


class _WithGraph(nn.Module):
    """Gives a model that returns outputs without autograd history a (zero) gradient, so PGD runs."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.train(inner.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        return out if out.requires_grad or not x.requires_grad else out + 0.0 * x.sum()


def _union(runs: list[AttackResult], y: torch.Tensor) -> AttackResult:
    """Per input, the first run that fooled the model (else the last run): an attack made of several runs."""
    best = runs[-1]
    if len(runs) == 1:
        return best
    x_adv, pred = best.x_adv.clone(), best.pred.clone()
    for r in reversed(runs[:-1]):
        hit = r.pred != y
        x_adv[hit], pred[hit] = r.x_adv[hit], r.pred[hit]
    queries = sum(r.queries for r in runs) if all(r.queries is not None for r in runs) else None
    return AttackResult(x_adv=x_adv, success=pred != y, x=best.x, y=y, pred=pred, attack="pgd",
                        params={"runs": [r.params for r in runs]}, queries=queries)


def _large_eps(p: float, x: torch.Tensor) -> float:
    """The smallest budget whose ball around *every* x in [0, 1]^d contains the grey image 0.5:
    0.5 in Linf, 0.5 sqrt(d) in L2."""
    d = x[0].numel()
    return 0.5 if p == math.inf else 0.5 * math.sqrt(d)


def audit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: float | str = "inf",
    raise_on_flag: bool = False,
    seed: int = 0,
    progress: bool = True,
    n: int | None = 100,
    loss: str = "ce",
    steps: int = 20,
    long_steps: int = 100,
    long_restarts: int = 1,
    square_queries: int = 500,
    large_eps: float | None = None,
    large_eps_max_accuracy: float = 0.1,
    margin: float = 0.02,
    grad_tol: float | None = None,
    zero_grad_share: float = 0.0,
    repeats: int = 5,
    random_tol: float = 1e-4,
    warn: bool = True,
) -> AuditReport:
    """A self-checking robustness evaluation: a small battery of attacks and five checks for gradient masking.

    After AutoAttack's checks (Croce & Hein, "Reliable evaluation of adversarial robustness with an
    ensemble of diverse parameter-free attacks", ICML 2020; ``autoattack/checks.py``) and the
    checklist of Carlini, Athalye, Papernot, Brendel, Rauber, Tsipras, Goodfellow, Madry & Kurakin,
    "On Evaluating Adversarial Robustness" (arXiv:1902.06705, 2019). A model whose gradient
    misleads the attacker (Athalye, Carlini & Wagner, ICML 2018) shows at least one of these
    symptoms; an honest model and a working attack show none::

        (randomised_model)       f(x) != f(x) over `repeats` calls  (max normalised-logit change > random_tol,
                                 or a prediction changes)
        (zero_gradients)         share of inputs with max|grad_x L(f(x), y)| <= grad_tol  >  zero_grad_share
        a_short  = acc(PGD-steps from x,           step 2.5 eps / steps)
        a_long   = acc(PGD-long_steps from x, then long_restarts random starts; step 2.5 eps / long_steps)
        a_square = acc(Square, square_queries queries, same eps and norm; scores only)
        a_large  = acc(PGD-steps at large_eps from x, step 2.5 large_eps / steps)
        (blackbox_beats_whitebox)  a_square < min(a_short, a_long) - margin
        (more_steps_worse)         a_long   > a_short + margin
        (no_zero_at_large_eps)     a_large  > large_eps_max_accuracy

    All PGD runs use early stopping (an input once fooled stays fooled) and the loss ``loss``.
    ``large_eps`` defaults to the budget whose ball around every image contains the uniform grey
    image (0.5 in Linf, ``0.5 sqrt(d)`` in L2): any image can then be moved onto one and the same
    image, so a working attack drives accuracy to about 0; the threshold is 10%.

    Parameters
    ----------
    model : nn.Module
        Classifier in eval mode, pixels in [0, 1], logits ``N x K``.
    x, y : Tensor
        Images ``N x C x H x W`` in [0, 1] and int64 labels; the first ``n`` are audited.
    eps : float
        The budget of the evaluation being audited (> 0).
    norm : {"inf", 2}, default "inf"
        Threat model (Square exists for Linf and L2).
    raise_on_flag : bool, default False
        Raise :class:`GradientMaskingError` (with the report attached) if any check fires.
        Otherwise no error is raised, whatever the checks find.
    seed : int, default 0
        Seed of PGD's random starts and of Square.
    progress : bool, default True
        A tqdm bar over the battery's stages.
    n : int or None, default 100
        Inputs audited (the first ``n``; None: all).
    loss : {"ce", "margin"}, default "ce"
        The loss PGD ascends and whose gradient ``zero_gradients`` inspects. ``"ce"`` is what most
        evaluations run; ``"margin"`` (Carlini-Wagner) does not saturate.
    steps : int, default 20
        Steps of the short PGD (and of the large-eps PGD).
    long_steps, long_restarts : int, default 100, 1
        The strong PGD: one run of ``long_steps`` steps from ``x`` and ``long_restarts`` more from
        random starts; an input counts as fooled if any run fooled it.
    square_queries : int, default 500
        Query budget per input of Square (Andriushchenko et al., ECCV 2020).
    large_eps : float, optional
        Budget of ``no_zero_at_large_eps`` (default: see above).
    large_eps_max_accuracy : float, default 0.1
        ``no_zero_at_large_eps`` fires above this accuracy.
    margin : float, default 0.02
        Accuracy difference (a share of inputs, 2 points) that ``blackbox_beats_whitebox`` and
        ``more_steps_worse`` tolerate as noise.
    grad_tol : float, optional
        A gradient with ``max |g_i| <= grad_tol`` counts as zero. Default: float32's smallest
        normal number (1.2e-38), so exact zeros and denormals. Honest MNIST models have
        cross-entropy gradients of 1e-12 and more even on their most confident inputs.
    zero_grad_share : float, default 0.0
        ``zero_gradients`` fires when more than this share of inputs has a zero gradient (0: any,
        as AutoAttack).
    repeats : int, default 5
        Forward passes of ``randomised_model``.
    random_tol : float, default 1e-4
        Largest change of the L2-normalised logits still taken as deterministic (AutoAttack's).
    warn : bool, default True
        Also issue a ``RuntimeWarning`` naming the flags (when ``raise_on_flag`` is False).

    Returns
    -------
    AuditReport
        ``flags`` (names of the checks that fired), ``checks`` (evidence for each), ``accuracy``
        (per attack), ``robust_accuracy`` (worst case over the attacks at ``eps``), ``results``
        (the AttackResults); ``report.to_frame()`` is a pandas table.

    Example
    -------
    >>> report = audit(model, x, y, eps=0.3)                     # doctest: +SKIP
    >>> report.flags                                             # doctest: +SKIP
    []
    >>> audit(StaircaseModel(model), x, y, eps=0.3).flags        # doctest: +SKIP
    ['zero_gradients', 'blackbox_beats_whitebox', 'no_zero_at_large_eps']
    """
    import time
    import warnings

    from .attacks.checks import check_eps, check_images, check_labels, check_model, check_norm
    from .attacks.pgd import pgd
    from .blackbox.square import square

    t0 = time.perf_counter()
    check_model(model)
    check_images(x)
    check_labels(y, x)
    eps = check_eps(eps)
    if eps == 0:
        raise ValueError("eps must be > 0: the audit attacks the model inside the eps-ball")
    p = check_norm(norm, (math.inf, 2.0))
    if loss not in ("ce", "margin"):
        raise ValueError(f"loss must be 'ce' or 'margin', got {loss!r}")
    for value, name, lo in ((steps, "steps", 1), (long_steps, "long_steps", 1), (long_restarts, "long_restarts", 0),
                            (square_queries, "square_queries", 1), (repeats, "repeats", 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {value!r}")
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an int >= 1 or None (all inputs), got {n!r}")
        x, y = x[:n], y[:n]
    big = _large_eps(p, x) if large_eps is None else check_eps(large_eps, name="large_eps")
    tol = torch.finfo(x.dtype).tiny if grad_tol is None else float(grad_tol)
    norm_name = "inf" if p == math.inf else "2"
    m = len(x)

    stages = ["randomised_model", "zero_gradients", f"pgd-{steps}", f"pgd-{long_steps}+{long_restarts}rs",
              f"square-{square_queries}", f"pgd-{steps}@{big:g}"]
    bar = tqdm(total=len(stages), desc="audit", disable=not progress, leave=False)

    def stage(name: str) -> None:
        bar.set_postfix_str(name)

    checks: dict[str, Check] = {}
    # ---- randomised_model: the same input, several outputs
    stage("randomised_model")
    with torch.no_grad():
        outs = [model(x) for _ in range(repeats)]
    normed = [o / (o.flatten(1).norm(dim=1, keepdim=True) + 1e-10) for o in outs]
    max_change = max((normed[i] - normed[0]).flatten(1).norm(dim=1).max().item() for i in range(1, repeats))
    preds = torch.stack([o.argmax(1) for o in outs])
    pred_changes = int((preds != preds[0]).any(0).sum())
    clean_ok = preds[0] == y
    checks["randomised_model"] = Check(
        "randomised_model", bool(pred_changes > 0 or max_change > random_tol),
        f"a prediction changes or the normalised logits move by > {random_tol:g} over {repeats} calls",
        {"inputs_whose_prediction_changes": pred_changes, "max_logit_change": max_change},
        _ADVICE["randomised_model"])
    bar.update()

    # ---- zero_gradients: the loss gradient at the clean inputs
    stage("zero_gradients")
    xg = x.detach().clone().requires_grad_(True)
    logits = model(xg)
    if logits.requires_grad:
        J = F.cross_entropy(logits, y, reduction="sum") if loss == "ce" else _margin_loss(logits, y).sum()
        (g,) = torch.autograd.grad(J, xg, allow_unused=True)
        gmax = torch.zeros(m, device=x.device) if g is None else g.flatten(1).abs().amax(1)
        has_graph = g is not None
    else:
        gmax, has_graph = torch.zeros(m, device=x.device), False
    zero = int((gmax <= tol).sum())
    checks["zero_gradients"] = Check(
        "zero_gradients", zero / m > zero_grad_share,
        f"more than {100 * zero_grad_share:g}% of inputs have max|grad| <= {tol:.2g}",
        {"inputs_with_zero_gradient": f"{zero}/{m}", "median_max_abs_grad": float(gmax.median()),
         **({} if has_graph else {"note": "the output has no gradient at all"})},
        _ADVICE["zero_gradients"])
    bar.update()
    attacked = model if has_graph else _WithGraph(model)

    # ---- the battery
    results: dict[str, AttackResult] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # PGD's own zero-gradient warning: reported above
        name_short = f"pgd-{steps}"
        stage(name_short)
        results[name_short] = pgd(attacked, x, y, eps=eps, eps_step=2.5 * eps / steps, max_iter=steps, norm=p,
                                  loss=loss, early_stop=True, seed=seed)
        bar.update()
        name_long = f"pgd-{long_steps}+{long_restarts}rs"
        stage(name_long)
        long_runs = [pgd(attacked, x, y, eps=eps, eps_step=2.5 * eps / long_steps, max_iter=long_steps, norm=p,
                         loss=loss, early_stop=True, seed=seed)]
        if long_restarts:
            long_runs.append(pgd(attacked, x, y, eps=eps, eps_step=2.5 * eps / long_steps, max_iter=long_steps,
                                 norm=p, loss=loss, early_stop=True, random_start=True, restarts=long_restarts,
                                 seed=seed))
        results[name_long] = _union(long_runs, y)
        bar.update()
        name_sq = f"square-{square_queries}"
        stage(name_sq)
        results[name_sq] = square(model, x, y, eps=eps, norm=p, max_queries=square_queries, seed=seed,
                                  progress=False)
        bar.update()
        name_big = f"pgd-{steps}@{big:g}"
        stage(name_big)
        results[name_big] = pgd(attacked, x, y, eps=big, eps_step=2.5 * big / steps, max_iter=steps, norm=p,
                                loss=loss, early_stop=True, seed=seed)
        bar.update()
    bar.close()

    # judge every attack's final points with one fresh forward pass each, the same way for all
    # (for a randomised model an attack's own last answer may be a lucky draw)
    with torch.no_grad():
        fooled = {k: model(r.x_adv).argmax(1) != y for k, r in results.items()}
    acc = {"clean": clean_ok.double().mean().item()}
    acc.update({k: (~f).double().mean().item() for k, f in fooled.items()})
    a_short, a_long, a_sq, a_big = (acc[k] for k in (name_short, name_long, name_sq, name_big))
    a_white = min(a_short, a_long)
    only_square = int((fooled[name_sq] & ~fooled[name_short] & ~fooled[name_long]).sum())
    checks["blackbox_beats_whitebox"] = Check(
        "blackbox_beats_whitebox", a_sq < a_white - margin,
        f"acc({name_sq}) < min(acc(PGD)) - {margin:g}",
        {"acc_square": a_sq, "acc_best_pgd": a_white, "fooled_only_by_square": only_square},
        _ADVICE["blackbox_beats_whitebox"])
    checks["no_zero_at_large_eps"] = Check(
        "no_zero_at_large_eps", a_big > large_eps_max_accuracy,
        f"acc({name_big}) > {large_eps_max_accuracy:g}",
        {"large_eps": big, "acc_at_large_eps": a_big}, _ADVICE["no_zero_at_large_eps"])
    only_short = int((fooled[name_short] & ~fooled[name_long]).sum())
    checks["more_steps_worse"] = Check(
        "more_steps_worse", a_long > a_short + margin,
        f"acc({name_long}) > acc({name_short}) + {margin:g}",
        {"acc_short": a_short, "acc_long": a_long, "fooled_only_by_short": only_short},
        _ADVICE["more_steps_worse"])
    checks = {k: checks[k] for k in CHECKS}
    worst = (clean_ok & ~fooled[name_short] & ~fooled[name_long] & ~fooled[name_sq]).double().mean().item()
    flags = [k for k, c in checks.items() if c.flagged]
    settings = {"loss": loss, "steps": steps, "long_steps": long_steps, "long_restarts": long_restarts,
                "square_queries": square_queries, "large_eps": big, "large_eps_max_accuracy": large_eps_max_accuracy,
                "margin": margin, "grad_tol": tol, "zero_grad_share": zero_grad_share, "repeats": repeats,
                "random_tol": random_tol, "seed": seed}
    report = AuditReport(eps=eps, norm=norm_name, n=m, accuracy=acc, robust_accuracy=worst, checks=checks,
                         flags=flags, settings=settings, results=results, seconds=time.perf_counter() - t0)
    if flags and raise_on_flag:
        raise GradientMaskingError(report)
    if flags and warn:
        warnings.warn(f"audit: {', '.join(flags)} fired; the robust accuracy may be overestimated "
                      "(print the report for the evidence)", RuntimeWarning, stacklevel=2)
    return report
