"""The scoreboard: every defense under non-adaptive, adaptive and black-box attacks, with the audit's verdict.

A defense is only as strong as the best attack *on the defense as deployed*. The classic
evaluation mistake (Athalye, Carlini & Wagner, ICML 2018; Carlini et al., "On Evaluating
Adversarial Robustness", arXiv:1902.06705, 2019) is to report the accuracy under an attack that
does not know the defense: PGD on the cross-entropy through a zero gradient, one random draw,
or a saturated softmax. :func:`scoreboard` puts the three kinds of attack side by side, on the
same inputs and at the same budget, and adds :func:`advkit.evaluation.audit`'s flags::

    non-adaptive   FGSM (one step) and PGD-steps on the cross-entropy, through the deployed model
    adaptive       the attack that knows the defense (see :class:`Defense`):
                     "pgd"     PGD on the margin loss through ``adaptive`` (BPDA view, T-scaled logits, ...)
                     "eot"     EOT through ``adaptive``, a randomised model (advkit.blackbox.eot)
                     "labels"  HopSkipJump (labels only), success if within eps
    black-box      Square with ``square_queries`` queries (scores only; through ``output`` if given)
    worst case     the share of inputs that no attack of the row fooled
    audit          the names of the checks that fired (advkit.evaluation.audit on the deployed model)

Every attack's final points are judged the same way: one fresh forward pass of the *deployed*
model, ``model(x_adv).argmax(1) != y`` (and ``||x_adv - x||_p <= eps``), so an adaptive attack
that ran on a surrogate view gets no credit for fooling the surrogate only.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..attacks.checks import check_eps, check_images, check_labels, check_model, check_norm

#: The adaptive attacks a :class:`Defense` can ask for.
ADAPTIVE = ("pgd", "eot", "labels")


@dataclass
class Defense:
    """One row of :func:`scoreboard`: the defense as deployed, and how an adaptive attacker sees it.

    Parameters
    ----------
    model : nn.Module
        The defended classifier as deployed (eval mode, pixels in [0, 1], logits). Non-adaptive
        and black-box attacks face it, the audit inspects it, and it judges every attack.
    adaptive : nn.Module, optional
        The adaptive attacker's differentiable view with the same decisions: the BPDA version
        (``Defended.with_bpda()``, ``StaircaseModel(..., bpda=True)``), the distilled logits
        divided by T (:class:`~advkit.defenses.distillation.Tempered`), or, for ``attack="eot"``,
        a randomised model whose transform the attacker draws. Default: ``model``.
    attack : {"pgd", "eot", "labels"}, default "pgd"
        The adaptive attack (see the module docstring).
    output : str or callable, optional
        An output-side defense (``"rounding"``, ``"reverse_sigmoid"``, ``"one_hot"``, ``"labels"``
        or a ``probs -> probs`` callable, :func:`~advkit.defenses.output.defended_oracle`): the
        black-box column talks to the model through it; with ``"labels"`` a score attack cannot
        run (cell NaN). The white-box columns ignore it: an attacker with the weights does too.
    note : str, optional
        The adaptive attack's name in the table (default: derived from ``attack``).
    """

    model: nn.Module
    adaptive: nn.Module | None = None
    attack: str = "pgd"
    output: str | Callable[[torch.Tensor], torch.Tensor] | None = None
    note: str | None = None

    def __post_init__(self):
        if not isinstance(self.model, nn.Module):
            raise TypeError(f"Defense.model must be an nn.Module (the deployed classifier), got {type(self.model).__name__}")
        if self.adaptive is not None and not isinstance(self.adaptive, nn.Module):
            raise TypeError(f"Defense.adaptive must be an nn.Module or None, got {type(self.adaptive).__name__}")
        if self.attack not in ADAPTIVE:
            raise ValueError(f"Defense.attack must be one of {ADAPTIVE}, got {self.attack!r}")
        if self.attack == "eot" and self.adaptive is None:
            from ..blackbox.eot import RandomizedModel

            if not isinstance(self.model, RandomizedModel):
                raise ValueError("attack='eot' needs a randomised model to draw from: pass adaptive=RandomizedModel(...) "
                                 "or a RandomizedModel as model")


def _as_defense(name: str, d: Any) -> Defense:
    if isinstance(d, Defense):
        return d
    if isinstance(d, nn.Module):
        return Defense(d)
    raise TypeError(f"defense {name!r} must be an nn.Module or a Defense, got {type(d).__name__}")


def _fooled(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, eps: float, p: float) -> torch.Tensor:
    """One fresh forward pass of the deployed model, and the budget re-checked."""
    with torch.no_grad():
        wrong = model(x_adv).argmax(1) != y
    dist = (x_adv - x).flatten(1).norm(p=p, dim=1)
    return wrong & (dist <= eps * (1 + 1e-5) + 1e-6)


def scoreboard(
    defenses: Mapping[str, nn.Module | Defense],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: float | str = "inf",
    steps: int = 20,
    adaptive_steps: int = 50,
    restarts: int = 1,
    eot_samples: int = 8,
    square_queries: int = 300,
    label_queries: int = 1000,
    audit: bool = True,
    audit_kwargs: Mapping[str, Any] | None = None,
    seed: int = 0,
    progress: bool = True,
):
    """Robust accuracy of each defense under non-adaptive, adaptive and black-box attacks, and the audit's flags.

    Parameters
    ----------
    defenses : mapping
        ``row name -> Defense`` (or a plain ``nn.Module``: ``Defense(model)``, whose adaptive
        attack is PGD on the margin loss through the model itself).
    x, y : Tensor
        Images ``N x C x H x W`` in [0, 1] and int64 labels, the same for every row.
    eps : float
        The budget of every attack (> 0), stated in the table's ``attrs``.
    norm : {"inf", 2}, default "inf"
        Threat model.
    steps : int, default 20
        Steps of the non-adaptive PGD, ``eps_step = 2.5 eps / steps`` (Madry et al.), from ``x``.
    adaptive_steps : int, default 50
        Steps of the adaptive PGD (margin loss, Carlini & Wagner) and of EOT, step ``2.5 eps / adaptive_steps``.
    restarts : int, default 1
        Extra adaptive-PGD runs from random starts (an input counts as fooled if any run fooled it).
    eot_samples : int, default 8
        Draws per EOT step.
    square_queries : int, default 300
        Query budget per input of Square (Andriushchenko et al., ECCV 2020).
    label_queries : int, default 1000
        Query budget of HopSkipJump for ``attack="labels"`` rows.
    audit : bool, default True
        Run :func:`advkit.evaluation.audit` on each deployed model (the costliest column).
    audit_kwargs : mapping, optional
        Passed to the audit (``long_steps``, ``square_queries``, ...).
    seed : int, default 0
        Seed of the random starts, Square, EOT, HopSkipJump and the audit.
    progress : bool, default True
        A tqdm bar over the rows.

    Returns
    -------
    pandas.DataFrame
        One row per defense; columns (a two-level index): ``("", "clean")``,
        ``("non-adaptive", "FGSM")``, ``("non-adaptive", "PGD-<steps> (CE)")``,
        ``("adaptive", "attack")`` (its name), ``("adaptive", "accuracy")``,
        ``("black-box", "Square-<queries>")``, ``("", "worst case")`` and ``("audit", "flags")``
        (``"none"`` or the names of the checks that fired; absent with ``audit=False``).
        Accuracies are shares of the ``N`` inputs in [0, 1]. ``df.attrs`` holds the settings and,
        under ``"reports"``, the :class:`~advkit.evaluation.AuditReport` of each row.

    Example
    -------
    >>> from advkit.defenses import StaircaseModel, Defense, scoreboard
    >>> board = scoreboard({"standard": model,
    ...                     "staircase": Defense(StaircaseModel(model), StaircaseModel(model, bpda=True))},
    ...                    x, y, eps=0.3)                                               # doctest: +SKIP
    >>> board[("audit", "flags")]                                                     # doctest: +SKIP
    defense
    standard                                                   none
    staircase    zero_gradients, blackbox_beats_whitebox, no_zero_at_large_eps
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from ..attacks.fgsm import fgsm
    from ..attacks.pgd import pgd
    from ..blackbox.decision import hop_skip_jump
    from ..blackbox.eot import eot
    from ..blackbox.square import square
    from ..evaluation import _WithGraph
    from ..evaluation import audit as run_audit
    from .output import defended_oracle

    if not isinstance(defenses, Mapping) or not defenses:
        raise ValueError("defenses must be a non-empty mapping of row names to models or Defense objects, "
                         "e.g. {'standard': model, 'staircase': Defense(StaircaseModel(model), ...)}")
    rows_in = {str(k): _as_defense(str(k), v) for k, v in defenses.items()}
    check_images(x)
    check_labels(y, x)
    eps = check_eps(eps)
    if eps == 0:
        raise ValueError("eps must be > 0: the scoreboard attacks every defense inside the eps-ball")
    p = check_norm(norm, (math.inf, 2.0))
    for value, name, lo in ((steps, "steps", 1), (adaptive_steps, "adaptive_steps", 1), (restarts, "restarts", 0),
                            (eot_samples, "eot_samples", 1), (square_queries, "square_queries", 1),
                            (label_queries, "label_queries", 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {value!r}")
    for name, d in rows_in.items():
        check_model(d.model)
        if d.adaptive is not None:
            check_model(d.adaptive)

    col_pgd, col_sq = f"PGD-{steps} (CE)", f"Square-{square_queries}"
    rows, reports = [], {}
    for name, d in tqdm(rows_in.items(), desc="scoreboard", disable=not progress):
        model = d.model
        attacked = _WithGraph(model)  # a zero gradient rather than an error for outputs without history
        view = d.adaptive if d.adaptive is not None else model
        with torch.no_grad():
            clean_ok = model(x).argmax(1) == y
        fooled: dict[str, torch.Tensor] = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # PGD's zero-gradient warning: the audit reports it
            fooled["fgsm"] = _fooled(model, x, y, fgsm(attacked, x, y, eps=eps, norm=p).x_adv, eps, p)
            fooled["pgd"] = _fooled(model, x, y, pgd(attacked, x, y, eps=eps, eps_step=2.5 * eps / steps, max_iter=steps,
                                                    norm=p, early_stop=True, seed=seed).x_adv, eps, p)
            if d.attack == "pgd":
                kw = dict(eps=eps, eps_step=2.5 * eps / adaptive_steps, max_iter=adaptive_steps, norm=p, loss="margin",
                          early_stop=True, seed=seed)
                hit = _fooled(model, x, y, pgd(_WithGraph(view), x, y, **kw).x_adv, eps, p)
                if restarts:
                    r = pgd(_WithGraph(view), x, y, random_start=True, restarts=restarts, **kw)
                    hit = hit | _fooled(model, x, y, r.x_adv, eps, p)
                note = d.note or f"PGD-{adaptive_steps} margin" + (f" +{restarts} restart" if restarts else "") + \
                    (" (adaptive view)" if d.adaptive is not None else "")
            elif d.attack == "eot":
                r = eot(view, x, y, eps=eps, norm=p, steps=adaptive_steps, samples=eot_samples, loss="margin",
                        fresh_draws=0, seed=seed, progress=False)
                hit = _fooled(model, x, y, r.x_adv, eps, p)
                note = d.note or f"EOT-{adaptive_steps} x {eot_samples} draws"
            else:
                oracle = defended_oracle(model, "labels", n=len(x), max_queries=label_queries)
                r = hop_skip_jump(oracle, x, y, norm=p, seed=seed, progress=False)
                hit = _fooled(model, x, y, r.x_adv, eps, p)
                note = d.note or f"HopSkipJump, labels only, {label_queries} queries"
            fooled["adaptive"] = hit
            if d.output == "labels":
                sq = None
            else:
                target = model if d.output is None else defended_oracle(model, d.output, n=len(x))
                sq = _fooled(model, x, y, square(target, x, y, eps=eps, norm=p, max_queries=square_queries, seed=seed,
                                                 progress=False).x_adv, eps, p)
        if sq is not None:
            fooled["square"] = sq

        def acc(f: torch.Tensor) -> float:
            return (clean_ok & ~f).double().mean().item()

        any_fooled = torch.stack(list(fooled.values())).any(0)
        row = {("", "clean"): clean_ok.double().mean().item(),
               ("non-adaptive", "FGSM"): acc(fooled["fgsm"]), ("non-adaptive", col_pgd): acc(fooled["pgd"]),
               ("adaptive", "attack"): note, ("adaptive", "accuracy"): acc(fooled["adaptive"]),
               ("black-box", col_sq): acc(sq) if sq is not None else float("nan"),
               ("", "worst case"): acc(any_fooled)}
        if audit:
            rep = run_audit(model, x, y, eps=eps, norm=p, n=None, seed=seed, progress=False, warn=False,
                            **dict(audit_kwargs or {}))
            reports[name] = rep
            row[("audit", "flags")] = ", ".join(rep.flags) if rep.flags else "none"
        rows.append(row)
    df = pd.DataFrame(rows, index=pd.Index(list(rows_in), name="defense"))
    df.columns = pd.MultiIndex.from_tuples(df.columns)
    df.attrs.update({"eps": eps, "norm": "inf" if p == math.inf else "2", "n": len(x), "steps": steps,
                     "adaptive_steps": adaptive_steps, "restarts": restarts, "eot_samples": eot_samples,
                     "square_queries": square_queries, "label_queries": label_queries, "seed": seed,
                     "reports": reports})
    return df


__all__ = ["ADAPTIVE", "Defense", "scoreboard"]
