"""Output-side defenses: change what the model *answers*, not what it computes.

A black-box attacker learns about the model only from its answers, so a defender can hand out
less: rounded scores, deliberately misleading scores, or the top-1 label alone. Each defense
here is a post-processing of the softmax scores that keeps the top-1 label (so the defended
model is exactly as accurate as the undefended one) and plugs into the black-box threat model
of :class:`advkit.blackbox.Oracle`::

    Oracle(model, "scores", n=len(x), postprocess=reverse_sigmoid(beta=1.0, gamma=0.1))
    defended_oracle(model, "rounding", n=len(x), max_queries=1000, decimals=2)

====================  ==========================================================  ======================
defense               answer                                                      keeps the top-1
====================  ==========================================================  ======================
``"none"``            softmax scores ``p``                                        yes
``"rounding"``        ``round(p, decimals)`` (:func:`round_scores`)               unless rounding ties
                                                                                  the top two
``"reverse_sigmoid"`` ``q = normalise(clip(p - beta (sigmoid(gamma logit p)        when ``p_top >= 0.3755``
                      - 1/2), 0, 1))`` (:func:`reverse_sigmoid`, Lee et al.)      (beta=1, gamma=0.1)
``"one_hot"``         ``onehot(argmax p)`` as scores (:func:`one_hot_scores`)      yes
``"labels"``          ``argmax p`` only (``Oracle(model, "labels")``)              yes
====================  ==========================================================  ======================

What they buy, honestly: they only slow down attacks that *read the scores* (ZOO's finite
differences, the Square attack's loss comparisons); a decision-based attack (HopSkipJump, the
Boundary attack: :mod:`advkit.blackbox.decision`) needs the top-1 label alone, which every one
of these defenses must keep, so it goes through them unchanged. And none of them does anything
against a transfer attack from a substitute model, or against a white-box attacker.
Measured on the zoo's LeNet-5 (``tests/test_output_defenses.py``, first MNIST test images):

======================  ======================================  ==================================  =================
defense                 Square, Linf 0.2, 300 queries (20 img)  ZOO-ADAM, 4,000 queries (10 img)    HopSkipJump L2,
                                                                                                    1,000 queries:
                                                                                                    median L2 (20)
======================  ======================================  ==================================  =================
none                    0.70                                    0.90                                3.23
rounding (2 decimals)   0.55                                    0.10                                3.16
reverse sigmoid         0.05                                    0.00                                3.23
one-hot scores          0.10                                    --                                  --
labels only             (score attacks cannot run)              (cannot run)                        3.23
======================  ======================================  ==================================  =================

Rounding hurts finite differences (ZOO's ``h = 1e-4`` steps vanish) far more than a random
search that accepts ties (Square; at 3 decimals Square even succeeded more often: 0.82 vs
0.76 on 50 images).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..blackbox.oracle import Oracle

#: Names accepted by :func:`defended_oracle`.
DEFENSES = ("none", "rounding", "reverse_sigmoid", "one_hot", "labels")

#: ART's clip of the probabilities before the logit, ``[1e-9, 1 - 1e-9]``.
CLIP = 1e-9


def _check_probs(probs: torch.Tensor) -> None:
    if not isinstance(probs, torch.Tensor) or not probs.is_floating_point() or probs.dim() != 2:
        raise ValueError("an output defense takes an N x K float tensor of probabilities, got "
                         f"{type(probs).__name__}{'' if not isinstance(probs, torch.Tensor) else tuple(probs.shape)}")


class ReverseSigmoid:
    """The reverse-sigmoid perturbation of the scores (Lee et al. 2019), as a ``probs -> probs`` callable.

    Lee, Zhu, Ganapathy, Kaafar & Zhou, "Defending Against NN Model Stealing Attacks Using
    Deceptive Perturbations", IEEE Security and Privacy Workshops 2019 (arXiv:1806.00054).
    With ``sigma`` the sigmoid and ``logit(p) = log(p / (1 - p))``, per class ``j``::

        p~_j = clip(p_j, 1e-9, 1 - 1e-9)
        r_j  = beta * (sigma(gamma * logit(p~_j)) - 1/2)         # the reverse-sigmoid perturbation
        q_j  = clip(p_j - r_j, 0, 1)
        q    = q / sum_j q_j                                      # renormalised

    exactly as ART's :class:`art.defences.postprocessor.ReverseSigmoid` computes it (a
    single-column input is read as the positive-class probability of a binary model, as in
    ART). The computation runs in float64 and the result is cast back to the input's dtype:
    float32 cannot represent ``1 - 1e-9``, so a float32 implementation (ART on float32 arrays)
    sees ``logit(1) = inf`` and answers ``q = 0.5`` before renormalising where float64 answers
    ``1 - 0.388``.

    Why it misleads: ``q_j`` is not monotone in ``p_j``. With ``beta=1, gamma=0.1`` it *falls*
    from 0.88 to 0.61 as ``p_j`` rises from 0.99 to 1, and from 0.39 to 0.26 as a small ``p_j``
    rises from 1e-9 to 1e-5; a confident model lives in exactly those two regions, so an
    attacker who lowers ``p_y`` or raises a wrong class sees its loss get *worse*.

    Top-1: with ``beta=1, gamma=0.1`` the argmax is unchanged whenever ``p_top >= 0.3755``
    (below it, a class with ``p <= 1e-9``, whose ``q`` is 0.388, can overtake): always for two
    classes or a confident model, not for an input scored about equally by three or more classes.

    Parameters
    ----------
    beta : float, default 1.0
        Magnitude ``beta > 0`` of the perturbation (ART's default).
    gamma : float, default 0.1
        Convergence ``gamma > 0``: the slope of the sigmoid on the logit (ART's default).
    """

    def __init__(self, beta: float = 1.0, gamma: float = 0.1):
        for name, v in (("beta", beta), ("gamma", gamma)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or v != v or v == float("inf"):
                raise ValueError(f"{name} must be a positive finite number, got {v!r}")
        self.beta = float(beta)
        self.gamma = float(gamma)

    def _perturb(self, p: torch.Tensor, pc: torch.Tensor | None = None) -> torch.Tensor:
        """``clip(p - r(pc), 0, 1)`` with ``pc`` the clipped ``p`` (given for the binary branch, as ART does)."""
        pc = p.clamp(CLIP, 1.0 - CLIP) if pc is None else pc
        r = self.beta * (torch.sigmoid(-self.gamma * torch.log((1.0 - pc) / pc)) - 0.5)
        return (p - r).clamp(0.0, 1.0)

    def __call__(self, probs: torch.Tensor) -> torch.Tensor:
        _check_probs(probs)
        p = probs.detach().double()
        if p.shape[1] == 1:  # ART's binary branch: p is P(class 1)
            pc = p.clamp(CLIP, 1.0 - CLIP)
            q1, q2 = self._perturb(p, pc), self._perturb(1.0 - p, 1.0 - pc)
            q = q1 / (q1 + q2)
        else:
            q = self._perturb(p)
            q = q / q.sum(1, keepdim=True)
        return q.to(probs.dtype)

    def __repr__(self) -> str:
        return f"reverse_sigmoid(beta={self.beta:g}, gamma={self.gamma:g})"


def reverse_sigmoid(beta: float = 1.0, gamma: float = 0.1) -> ReverseSigmoid:
    """The reverse-sigmoid output defense (see :class:`ReverseSigmoid`) for ``Oracle(postprocess=...)``.

    Example
    -------
    >>> oracle = Oracle(model, "scores", n=len(x), postprocess=reverse_sigmoid(beta=1.0, gamma=0.1))  # doctest: +SKIP
    >>> reverse_sigmoid()(torch.tensor([[0.98, 0.02]]))
    tensor([[0.8839, 0.1161]])
    """
    return ReverseSigmoid(beta, gamma)


class RoundScores:
    """``probs -> round(probs, decimals)``, the "rounded scores" defense as a callable.

    The same as ``Oracle(..., decimals=decimals)`` (which rounds after any ``postprocess``).
    Rounding keeps the top-1 except where it *ties* the top two (``p_1 - p_2 < 10^-decimals``
    straddling a rounding boundary); ``argmax`` then answers the lower class index.
    """

    def __init__(self, decimals: int = 2):
        if isinstance(decimals, bool) or not isinstance(decimals, int) or decimals < 0:
            raise ValueError(f"decimals must be an int >= 0, got {decimals!r}")
        self.decimals = decimals

    def __call__(self, probs: torch.Tensor) -> torch.Tensor:
        _check_probs(probs)
        scale = 10 ** self.decimals
        return torch.round(probs.detach() * scale) / scale

    def __repr__(self) -> str:
        return f"round_scores(decimals={self.decimals})"


def round_scores(decimals: int = 2) -> RoundScores:
    """The rounding output defense: scores rounded to ``decimals`` (default 2) decimals.

    Example
    -------
    >>> round_scores(2)(torch.tensor([[0.987, 0.013]]))
    tensor([[0.9900, 0.0100]])
    """
    return RoundScores(decimals)


class OneHotScores:
    """``probs -> onehot(argmax probs)``: the top-1 label alone, in the shape of scores.

    For running a *score-based* attack against a label-only model (it then sees flat scores,
    which is all a labels answer tells it); ``defended_oracle(model, "labels", ...)`` is the
    same information as an int64 label.
    """

    def __call__(self, probs: torch.Tensor) -> torch.Tensor:
        _check_probs(probs)
        return torch.zeros_like(probs).scatter_(1, probs.argmax(1, keepdim=True), 1.0)

    def __repr__(self) -> str:
        return "one_hot_scores()"


def one_hot_scores() -> OneHotScores:
    """The top-1-only defense as scores: ``onehot(argmax p)`` (see :class:`OneHotScores`)."""
    return OneHotScores()


def defended_oracle(model: nn.Module, defense: str | Callable[[torch.Tensor], torch.Tensor] | None = "none", *,
                    n: int, max_queries: int | None = None, decimals: int = 2, beta: float = 1.0,
                    gamma: float = 0.1, batch_size: int = 4096) -> Oracle:
    """A query-counting :class:`~advkit.blackbox.Oracle` of ``model`` behind an output defense.

    Parameters
    ----------
    model : nn.Module
        The classifier (eval mode, pixels in [0, 1], logits).
    defense : str or callable, default "none"
        One of :data:`DEFENSES`: ``"none"`` (plain scores), ``"rounding"`` (scores rounded to
        ``decimals``: ``Oracle(decimals=decimals)``), ``"reverse_sigmoid"`` (``beta``,
        ``gamma``: :func:`reverse_sigmoid`), ``"one_hot"`` (one-hot scores of the top-1),
        ``"labels"`` (the top-1 label only: ``Oracle(model, "labels")``); or any
        ``probs -> probs`` callable, used as the oracle's ``postprocess``. ``None`` is ``"none"``.
    n : int
        Number of attacked samples (the oracle counts queries per sample).
    max_queries : int, optional
        Per-sample query budget (``None``: unlimited, still counted).
    decimals : int, default 2
        For ``"rounding"``.
    beta, gamma : float, default 1.0, 0.1
        For ``"reverse_sigmoid"`` (ART's defaults).
    batch_size : int, default 4096
        Rows sent to the model at once (memory only).

    Returns
    -------
    Oracle
        Pass it to any black-box attack in place of the model (its ``n`` must be ``len(x)``).

    Example
    -------
    >>> from advkit.blackbox import square, hop_skip_jump                         # doctest: +SKIP
    >>> o = defended_oracle(model, "reverse_sigmoid", n=len(x), max_queries=300)  # doctest: +SKIP
    >>> square(o, x, y, eps=0.2, max_queries=300).success_rate                   # doctest: +SKIP
    >>> o = defended_oracle(model, "labels", n=len(x), max_queries=1000)          # doctest: +SKIP
    >>> hop_skip_jump(o, x, y, max_queries=1000).norms(2).median()                # doctest: +SKIP
    """
    common = dict(n=n, max_queries=max_queries, batch_size=batch_size)
    if defense is None:
        defense = "none"
    if callable(defense) and not isinstance(defense, str):
        return Oracle(model, "scores", postprocess=defense, **common)
    if defense == "none":
        return Oracle(model, "scores", **common)
    if defense == "rounding":
        return Oracle(model, "scores", decimals=decimals, **common)
    if defense == "reverse_sigmoid":
        return Oracle(model, "scores", postprocess=reverse_sigmoid(beta, gamma), **common)
    if defense == "one_hot":
        return Oracle(model, "scores", postprocess=one_hot_scores(), **common)
    if defense == "labels":
        return Oracle(model, "labels", **common)
    raise ValueError(f"defense must be one of {', '.join(map(repr, DEFENSES))} or a probs -> probs callable, "
                     f"got {defense!r}")


__all__ = ["DEFENSES", "OneHotScores", "ReverseSigmoid", "RoundScores", "defended_oracle", "one_hot_scores",
           "reverse_sigmoid", "round_scores"]
