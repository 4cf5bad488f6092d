"""The black-box threat model, enforced: an oracle that answers labels, scores or logits and
counts every question.

A black-box attacker never holds the model. It holds an :class:`Oracle`, which

* answers only what its threat model allows: ``"labels"`` (the top-1 class), ``"scores"``
  (softmax probabilities, optionally rounded to ``decimals``) or ``"logits"``;
* counts the queries per attacked sample, and refuses a query beyond ``max_queries`` with
  :class:`QueryBudgetExceeded` (attacks ask :meth:`Oracle.remaining` first and stop cleanly);
* never lets a gradient through: it runs the model under ``torch.no_grad()`` on a detached
  copy of the input, with the model's parameters' ``requires_grad`` switched off during the
  call, and returns detached tensors.

Every query-based attack in :mod:`advkit.blackbox` talks to the model only through one, and the
``queries`` of its :class:`~advkit.attacks.AttackResult` are the oracle's count, not the
attack's own bookkeeping.

Example
-------
>>> oracle = Oracle(model, "labels", n=len(x), max_queries=1000)    # doctest: +SKIP
>>> labels = oracle(x)                       # one query per sample   # doctest: +SKIP
>>> oracle.queries                           # tensor([1, 1, ...])    # doctest: +SKIP
>>> oracle(x[[0, 0, 3]], idx=torch.tensor([0, 0, 3]))   # two more for sample 0, one for 3  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ..attacks.checks import check_images, check_labels, check_model, num_classes_of

OUTPUTS = ("labels", "scores", "logits")


class QueryBudgetExceeded(RuntimeError):
    """A query would take a sample past its ``max_queries``."""


class Oracle:
    """A model behind a threat model: it answers ``output`` and counts queries per sample.

    Parameters
    ----------
    model : nn.Module
        The classifier (eval mode, pixels in [0, 1], logits ``N x K``). It is kept private:
        attacks receive answers, never the module.
    output : {"labels", "scores", "logits"}
        What a query returns: int64 top-1 labels ``N``; float softmax probabilities ``N x K``
        (rounded to ``decimals`` when given, the "rounded scores" output defense); or raw
        logits ``N x K``.
    n : int
        Number of attacked samples: queries are counted per sample index ``0 .. n-1``.
    max_queries : int, optional
        Per-sample query budget (``None``: unlimited, still counted).
    decimals : int, optional
        Round the scores to this many decimals (``output="scores"`` only).
    postprocess : callable, optional
        ``f(probs) -> probs`` applied to the scores before rounding, for output-side defenses
        (e.g. a reverse sigmoid). Only for ``output="scores"``.
    batch_size : int, optional
        Rows sent to the model at once; only memory and speed depend on it. Default: 128 on a
        CPU (measured 2-3x faster there than 4096 for the MNIST CNN: the activations stay in
        cache), 4096 on a GPU.
    """

    def __init__(self, model: nn.Module, output: str = "labels", *, n: int, max_queries: int | None = None,
                 decimals: int | None = None, postprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 batch_size: int | None = None):
        check_model(model)
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(map(repr, OUTPUTS))}, got {output!r}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n (the number of attacked samples) must be a positive int, got {n!r}")
        if max_queries is not None and (isinstance(max_queries, bool) or not isinstance(max_queries, int)
                                        or max_queries < 1):
            raise ValueError(f"max_queries must be a positive int or None, got {max_queries!r}")
        if decimals is not None:
            if output != "scores":
                raise ValueError("decimals rounds the scores: it needs output='scores'")
            if isinstance(decimals, bool) or not isinstance(decimals, int) or decimals < 0:
                raise ValueError(f"decimals must be an int >= 0, got {decimals!r}")
        if postprocess is not None and output != "scores":
            raise ValueError("postprocess acts on the scores: it needs output='scores'")
        if batch_size is None:
            on_cpu = all(p.device.type == "cpu" for p in model.parameters())
            batch_size = 128 if on_cpu else 4096
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self._model = model
        self.output = output
        self.n = n
        self.max_queries = max_queries
        self.decimals = decimals
        self._postprocess = postprocess
        self.batch_size = batch_size
        self.num_classes: int | None = None
        self._queries: torch.Tensor | None = None  # created on the first query's device

    # -- accounting -------------------------------------------------------------------------
    @property
    def queries(self) -> torch.Tensor:
        """Queries answered so far, per sample (int64 ``n``)."""
        if self._queries is None:
            return torch.zeros(self.n, dtype=torch.long)
        return self._queries.clone()

    @property
    def total_queries(self) -> int:
        return int(self.queries.sum())

    def remaining(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        """Queries each sample (or each of ``idx``) may still make; ``inf``-like when unlimited."""
        used = self.queries if idx is None else self.queries[idx.cpu()]
        if self.max_queries is None:
            return torch.full_like(used, torch.iinfo(torch.long).max)
        return (self.max_queries - used).clamp_min(0)

    def exhausted(self) -> torch.Tensor:
        """Bool ``n``: samples with no query left."""
        return self.remaining() == 0

    # -- answering ---------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """Answer one query per row of ``x``; ``idx[i]`` is the attacked sample row ``i`` belongs to.

        ``idx`` defaults to ``0 .. len(x)-1`` (one query for each sample). Rows of one sample
        may repeat (a batch of candidates). Raises :class:`QueryBudgetExceeded` if any sample
        would pass its budget; nothing is counted or answered then.
        """
        check_images(x)
        if idx is None:
            if len(x) != self.n:
                raise ValueError(f"{len(x)} rows but the oracle counts {self.n} samples: pass idx= to say "
                                 "which sample each row belongs to")
            idx = torch.arange(self.n)
        idx = torch.as_tensor(idx).long().reshape(-1).cpu()
        if len(idx) != len(x):
            raise ValueError(f"idx has {len(idx)} entries for {len(x)} rows; give one sample index per row")
        if len(idx) and (idx.min() < 0 or idx.max() >= self.n):
            raise ValueError(f"idx must be sample indices in 0..{self.n - 1}, got [{idx.min()}, {idx.max()}]")
        asked = torch.bincount(idx, minlength=self.n)
        if self._queries is None:
            self._queries = torch.zeros(self.n, dtype=torch.long)
        if self.max_queries is not None:
            over = (self._queries + asked) > self.max_queries
            if over.any():
                s = int(over.nonzero()[0])
                raise QueryBudgetExceeded(
                    f"{int(over.sum())} sample(s) would pass max_queries={self.max_queries} (sample {s} has "
                    f"{int(self.remaining()[s])} left and asked for {int(asked[s])}); check oracle.remaining() "
                    "before querying")
        out = self._answer(x)
        self._queries += asked
        return out

    def _answer(self, x: torch.Tensor) -> torch.Tensor:
        params = [p for p in self._model.parameters() if p.requires_grad]
        for p in params:
            p.requires_grad_(False)
        try:
            with torch.no_grad():
                xd = x.detach()
                logits = torch.cat([self._model(xd[i:i + self.batch_size]) for i in range(0, len(xd), self.batch_size)])
        finally:
            for p in params:
                p.requires_grad_(True)
        if self.num_classes is None:
            self.num_classes = num_classes_of(logits)
        logits = logits.detach()
        if self.output == "logits":
            return logits
        if self.output == "labels":
            return logits.argmax(1)
        probs = logits.softmax(1)
        if self._postprocess is not None:
            probs = self._postprocess(probs).detach()
        if self.decimals is not None:
            probs = torch.round(probs * 10 ** self.decimals) / 10 ** self.decimals
        return probs

    def labels(self, answer: torch.Tensor) -> torch.Tensor:
        """Top-1 labels from an answer of this oracle (labels, scores or logits)."""
        return answer if self.output == "labels" else answer.argmax(1)

    def __repr__(self) -> str:
        budget = "unlimited" if self.max_queries is None else str(self.max_queries)
        return f"Oracle(output={self.output!r}, n={self.n}, max_queries={budget}, total_queries={self.total_queries})"


def as_oracle(model: nn.Module | Oracle, x: torch.Tensor, y: torch.Tensor, *, allowed: tuple[str, ...],
              max_queries: int | None, target: torch.Tensor | None = None, default: str | None = None,
              **oracle_kwargs) -> Oracle:
    """Validate a black-box attack's arguments and wrap ``model`` in the oracle its threat model allows.

    ``model`` may already be an :class:`Oracle` (to share a budget, round scores, or add an
    output defense); its ``output`` must then be one of ``allowed`` and its ``n`` equal ``len(x)``.
    A fresh oracle answers ``default`` (the first of ``allowed`` when not given).
    """
    check_images(x)
    check_labels(y, x)
    if isinstance(model, Oracle):
        if model.output not in allowed:
            raise ValueError(f"this attack needs an oracle answering {' or '.join(allowed)}, got output={model.output!r}")
        if model.n != len(x):
            raise ValueError(f"the oracle counts {model.n} samples but x has {len(x)}")
        oracle = model
    else:
        oracle = Oracle(model, default or allowed[0], n=len(x), max_queries=max_queries, **oracle_kwargs)
    if target is not None:
        check_labels(target, x, name="target")
        if (target == y).any():
            raise ValueError(f"{int((target == y).sum())} target label(s) equal the true label; a targeted "
                             "attack needs target != y (see advkit.attacks.random_targets)")
    return oracle


def check_budget(max_queries: int | None) -> int | None:
    if max_queries is None:
        return None
    if isinstance(max_queries, bool) or not isinstance(max_queries, int) or max_queries < 1:
        raise ValueError(f"max_queries (the per-sample query budget) must be a positive int, got {max_queries!r}")
    return max_queries


def check_num_classes(oracle: Oracle, y: torch.Tensor, target: torch.Tensor | None) -> int:
    """After the first query: labels must lie in the model's classes."""
    k = oracle.num_classes
    for name, t in (("y", y), ("target", target)):
        if t is not None and len(t) and t.max() >= k:
            raise ValueError(f"{name} holds labels up to {int(t.max())} but the model has {k} classes")
    return k


def margin_from_scores(answer: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None,
                       *, log: bool = True) -> torch.Tensor:
    """The C&W-style margin of a score answer, > 0 while the attack has not succeeded.

    Untargeted: ``f_y - max_{j != y} f_j``; targeted: ``max_{j != t} f_j - f_t``. With ``log``
    the scores are log-probabilities (``log`` of the rounded scores, clamped), as ZOO and the
    Square attack use.
    """
    f = answer.clamp_min(1e-30).log() if log else answer
    lab = y if target is None else target
    own = f.gather(1, lab[:, None]).squeeze(1)
    other = f.scatter(1, lab[:, None], -math.inf).amax(1)
    return own - other if target is None else other - own


def finish(oracle: Oracle, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, pred: torch.Tensor, *,
           attack: str, params: dict, target: torch.Tensor | None = None, iterations: torch.Tensor | None = None,
           extra: dict | None = None) -> "AttackResult":
    """The :class:`~advkit.attacks.AttackResult` of a black-box attack.

    ``pred`` must be the oracle's own answer on the final ``x_adv`` (every candidate an attack
    keeps was queried), so success is judged without a query the oracle did not count.
    ``queries`` is the oracle's per-sample count; ``extra["out_of_queries"]`` the number of
    samples that failed with their budget spent.
    """
    from ..attacks.result import AttackResult

    pred = pred.to(x.device)
    success = pred == target if target is not None else pred != y
    queries = oracle.queries.to(x.device)
    out = {} if extra is None else dict(extra)
    out["out_of_queries"] = int((oracle.exhausted().to(x.device) & ~success).sum()) if oracle.max_queries else 0
    return AttackResult(x_adv=x_adv.detach(), success=success, x=x, y=y, pred=pred, target=target, attack=attack,
                        params={**params, "max_queries": oracle.max_queries, "output": oracle.output},
                        iterations=iterations, queries=queries, extra=out)
