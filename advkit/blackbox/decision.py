"""Decision-based (labels-only) attacks: HopSkipJump and the Boundary attack.

A decision-based attacker sees only the model's top-1 label. Both attacks start from a point
that is already adversarial (found by queries) and walk along the decision boundary towards
the clean image ``x``, so they are *minimisation* attacks: every sample they start succeeds,
and the query budget buys a smaller perturbation.

* **HopSkipJump** (Chen, Jordan & Wainwright, "HopSkipJumpAttack: A Query-Efficient
  Decision-Based Attack", IEEE S&P 2020): binary search to the boundary, a Monte-Carlo
  estimate of the boundary's normal from the signs of ``B`` random probes, a geometric step
  along it, repeat. L2 and Linf.
* **Boundary attack** (Brendel, Rauber & Bethge, "Decision-Based Adversarial Attacks: Reliable
  Attacks Against Black-Box Machine Learning Models", ICLR 2018): a random walk on the
  adversarial side of the boundary, an orthogonal (spherical) step plus a small step towards
  ``x``, with both step sizes adapted from success statistics. L2.

Both talk to the model only through an :class:`~advkit.blackbox.Oracle` answering labels
(an oracle answering scores or logits is accepted; only its top-1 label is used), run the
whole batch at once (every active sample advances in the same model call), count every query
per sample, and stop a sample cleanly before its ``max_queries`` would be passed, with the
best adversarial point it has queried. Shared helpers: :func:`binary_search` (to the
boundary along a segment, L2 interpolation or Linf clipping) and the query-found starting
point (uniform noise, then a binary search of the blend towards ``x``).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from tqdm.auto import tqdm

from ..attacks.checks import check_images, check_norm
from ..attacks.result import AttackResult
from .oracle import OUTPUTS, Oracle, as_oracle, check_budget, check_num_classes, finish

#: Uniform-noise draws per sample when looking for a starting point (ART's ``init_size``).
INIT_TRIALS = 100
#: Tolerance of the binary search of the noise/``x`` blend (the authors' code: 0.001).
INIT_TOL = 1e-3
#: Floats (rows x D) per model call in the gradient estimate, on CPU and on an accelerator:
#: about 500 MNIST rows is where a small CPU model runs fastest per row; bigger calls suit GPUs.
ROWS_ELEMENTS = {"cpu": 1 << 19, "other": 1 << 24}
#: Boundary attack statistics: the spherical candidates are queried every SPHERICAL_EVERY steps,
#: and the success rates are taken over the last SPHERICAL_WINDOW spherical / STEP_WINDOW step
#: outcomes. Foolbox 3 uses 10, 100, 30, tuned for its 25,000 steps; at 1,000-5,000 queries that
#: adapts too late (median L2 on LeNet-5, 40 MNIST images, 1,000 queries: 7.0 with 10/100/30,
#: 4.4-4.5 with 2/10/10, whose queries cost 1.5 per step instead of 1.1).
SPHERICAL_EVERY, SPHERICAL_WINDOW, STEP_WINDOW = 2, 10, 10
#: Halvings of the geometric step before a sample gives up on an iteration.
MAX_HALVINGS = 30


# ------------------------------------------------------------------------- shared helpers


def _check_count(value, name: str, *, minimum: int = 1, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        extra = " or None" if allow_none else ""
        raise ValueError(f"{name} must be an int >= {minimum}{extra}, got {value!r}")
    return value


def _check_positive(value, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def _distance(a: torch.Tensor, b: torch.Tensor, p: float) -> torch.Tensor:
    """Row-wise ``||a - b||_p`` of ``m x D`` tensors (p in 2, inf)."""
    d = a - b
    return d.norm(dim=1) if p == 2 else d.abs().amax(1)


class _Decision:
    """``phi(x') = 1`` iff ``x'`` is adversarial: the only thing the attacks ever ask."""

    def __init__(self, oracle: Oracle, y: torch.Tensor, target: torch.Tensor | None, shape: torch.Size):
        self.oracle, self.y, self.target, self.shape = oracle, y, target, shape

    def remaining(self, idx: torch.Tensor) -> torch.Tensor:
        return self.oracle.remaining(idx).to(idx.device)

    def __call__(self, rows: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Query flat ``rows`` (``m x D``) for samples ``idx``: (adversarial bool, labels)."""
        answer = self.oracle(rows.clamp(0, 1).view(len(rows), *self.shape), idx)
        labels = self.oracle.labels(answer).to(idx.device)
        adv = labels == self.target[idx] if self.target is not None else labels != self.y[idx]
        return adv, labels


def _project(x: torch.Tensor, x_adv: torch.Tensor, alpha: torch.Tensor, p: float) -> torch.Tensor:
    """The search path from ``x`` (alpha=0) to ``x_adv``: interpolation (L2) or clipping (Linf)."""
    if p == 2:
        a = alpha[:, None]
        return ((1 - a) * x + a * x_adv).clamp_(0, 1)
    a = alpha[:, None]
    return torch.clamp(x_adv, min=x - a, max=x + a).clamp_(0, 1)


def _search(decide: _Decision, x: torch.Tensor, x_adv: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor,
            p: float, tol: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched binary search on the path ``_project(x, x_adv, alpha)`` (rows of samples ``idx``).

    L2: ``alpha`` in [0, 1], stop when ``high - low <= tol``. Linf: ``alpha`` in
    [0, ||x_adv - x||_inf], stop when ``high - low <= min(tol * high_0, tol)`` (the authors'
    threshold). ``x_adv`` must be adversarial (labels: its answers). Returns the queried
    adversarial point at ``high`` and its label; a sample whose budget runs out stops early
    with the best ``high`` so far.
    """
    m = len(idx)
    out, out_lab = x_adv.clone(), labels.clone()
    low = torch.zeros(m, dtype=x.dtype, device=x.device)
    if p == 2:
        high = torch.ones_like(low)
        thr = torch.full_like(low, tol)
    else:
        high = _distance(x_adv, x, math.inf)
        thr = torch.minimum(high * tol, torch.full_like(high, tol))
    for _ in range(64):  # float32 bisection cannot usefully go deeper
        go = (high - low) > thr
        if not go.any():
            break
        go &= decide.remaining(idx) >= 1
        g = go.nonzero().squeeze(1)
        if len(g) == 0:
            break
        mid = (high[g] + low[g]) / 2
        img = _project(x[g], x_adv[g], mid, p)
        adv, lab = decide(img, idx[g])
        low[g] = torch.where(adv, low[g], mid)
        high[g] = torch.where(adv, mid, high[g])
        a = g[adv]
        out[a], out_lab[a] = img[adv], lab[adv]
    return out, out_lab


def binary_search(oracle: Oracle, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, *, norm: float | str = 2,
                  tol: float = 1e-3, target: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary search from adversarial points ``x_adv`` back to the decision boundary.

    The path from ``x`` to ``x_adv`` is the segment ``(1 - a) x + a x_adv``, ``a`` in [0, 1]
    (``norm=2``, HopSkipJump's and the Boundary attack's blend) or the clipping
    ``clip(x_adv, x - a, x + a)``, ``a`` in [0, ||x_adv - x||_inf] (``norm="inf"``). The
    invariant: the point at ``low`` is not adversarial (``a = 0`` is ``x``), the point at
    ``high`` is. It stops at ``high - low <= tol`` (L2) or ``<= min(tol * high_0, tol)`` (Linf).

    Parameters
    ----------
    oracle : Oracle
        Counts the queries (``oracle.n == len(x)``); each step costs one query per sample.
    x, y : Tensor
        Clean images and true labels.
    x_adv : Tensor
        Adversarial points (same shape as ``x``), queried once here to check them.
    norm : {2, "inf"}
        The path (see above).
    tol : float
        Search tolerance on ``a``.
    target : Tensor, optional
        Target labels: "adversarial" means classified as ``target``.

    Returns
    -------
    (Tensor, Tensor)
        The boundary points (adversarial, each one queried; ``x_adv`` itself where it was not
        adversarial) and the oracle's labels for them.

    Raises
    ------
    QueryBudgetExceeded
        If a sample has no query left for the check of ``x_adv`` (the search itself stops
        cleanly at the budget).
    """
    p = check_norm(norm, (2.0, math.inf))
    tol = _check_positive(tol, "tol")
    check_images(x_adv, name="x_adv")
    if x_adv.shape != x.shape:
        raise ValueError(f"x_adv must have the shape of x {tuple(x.shape)}, got {tuple(x_adv.shape)}")
    decide = _Decision(oracle, y, target, x.shape[1:])
    idx = torch.arange(len(x), device=x.device)
    xf, af = x.detach().flatten(1), x_adv.detach().flatten(1).to(x.dtype)
    adv, lab = decide(af, idx)
    out, out_lab = af.clone(), lab.clone()
    if adv.any():
        a = adv.nonzero().squeeze(1)
        out[a], out_lab[a] = _search(decide, xf[a], af[a], lab[a], idx[a], p, tol)
    return out.view_as(x), out_lab


def _starting_points(decide: _Decision, x: torch.Tensor, idx: torch.Tensor, x_init: torch.Tensor | None,
                     gen: torch.Generator, *, blend_init: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An adversarial starting point for each sample ``idx`` (flat rows ``x``), found by queries.

    ``x_init`` rows first (one query each; kept as they are unless ``blend_init``); samples
    still without one draw uniform noise in [0, 1]^D, one query a draw, up to
    :data:`INIT_TRIALS` draws; a noise start is then pulled towards ``x`` by a binary search
    of the blend ``(1 - a) x + a noise`` to :data:`INIT_TOL`. Returns (points, labels, found).
    """
    m = len(idx)
    start, lab = x.clone(), torch.zeros(m, dtype=torch.long, device=x.device)
    found = torch.zeros(m, dtype=torch.bool, device=x.device)
    blend = torch.zeros_like(found)
    if x_init is not None:
        ok = decide.remaining(idx) >= 1
        g = ok.nonzero().squeeze(1)
        if len(g):
            adv, l = decide(x_init[g], idx[g])
            start[g], lab[g], found[g] = x_init[g], l, adv
            blend[g] = adv & blend_init
    for _ in range(INIT_TRIALS):
        g = (~found & (decide.remaining(idx) >= 1)).nonzero().squeeze(1)
        if len(g) == 0:
            break
        noise = torch.rand(len(g), x.shape[1], generator=gen, device=x.device, dtype=x.dtype)
        adv, l = decide(noise, idx[g])
        a = g[adv]
        start[a], lab[a], found[a], blend[a] = noise[adv], l[adv], True, True
    b = blend.nonzero().squeeze(1)
    if len(b):
        start[b], lab[b] = _search(decide, x[b], start[b], lab[b], idx[b], 2.0, INIT_TOL)
    return start, lab, found


def _prepare(model, x, y, target, x_init, max_queries, max_iter, attack: str):
    """Validate, wrap the model, ask the clean query. Returns oracle, decision, flat x/x_init, clean labels."""
    max_queries = check_budget(max_queries)
    if target is not None and x_init is None:
        raise ValueError(
            f"a targeted {attack} needs x_init: starting images that the model classifies as `target` "
            "(e.g. test images of the target classes, one per sample, same shape as x); random noise "
            "almost never lands in a chosen class")
    oracle = as_oracle(model, x, y, allowed=OUTPUTS, default="labels", max_queries=max_queries, target=target)
    if oracle.max_queries is None and max_iter is None:  # a given Oracle brings its own budget
        raise ValueError(f"set max_queries or max_iter (or both): with neither the {attack} would never stop")
    if x_init is not None:
        check_images(x_init, name="x_init")
        if x_init.shape != x.shape:
            raise ValueError(f"x_init must have the shape of x {tuple(x.shape)}, got {tuple(x_init.shape)}")
        if x_init.device != x.device:
            raise ValueError(f"x_init is on {x_init.device} but x is on {x.device}; move both to one device")
    decide = _Decision(oracle, y, target, x.shape[1:])
    idx = torch.arange(len(x), device=x.device)
    xf = x.detach().flatten(1)
    adv0, lab0 = decide(xf, idx)  # the clean query: one per sample
    check_num_classes(oracle, y, target)
    xi = None if x_init is None else x_init.detach().flatten(1).to(x.dtype)
    return oracle, decide, xf, xi, adv0, lab0, idx


# --------------------------------------------------------------------------- HopSkipJump


def _gradient_direction(decide: _Decision, cur: torch.Tensor, idx: torch.Tensor, n_evals: torch.Tensor,
                        delta: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """HopSkipJump's Monte-Carlo estimate of the boundary normal at the points ``cur`` (Eq. 9-10).

    ``n_evals[i]`` unit random directions ``u_b`` (Gaussian for L2, uniform in [-1, 1]^D then
    L2-normalised for Linf); probes ``clip(cur + delta u_b)``, with ``u_b`` replaced by the
    clipped displacement ``/ delta``; ``phi_b = +-1`` (adversarial or not); baseline-corrected
    mean ``sum_b (phi_b - mean(phi)) u_b / B`` (the plain mean ``+-mean(u_b)`` when every
    ``phi_b`` agrees, as in the authors' code). Streams over rows, so memory is bounded.
    Returns the L2-normalised estimate.
    """
    m, D = cur.shape
    s_u = torch.zeros_like(cur)
    s_fu = torch.zeros_like(cur)
    s_f = torch.zeros(m, dtype=cur.dtype, device=cur.device)
    owner = torch.repeat_interleave(torch.arange(m, device=cur.device), n_evals)
    rows = max(1, ROWS_ELEMENTS["cpu" if cur.device.type == "cpu" else "other"] // D)
    for start in range(0, len(owner), rows):
        o = owner[start:start + rows]
        if p == 2:
            u = torch.randn(len(o), D, generator=gen, device=cur.device, dtype=cur.dtype)
        else:
            u = torch.rand(len(o), D, generator=gen, device=cur.device, dtype=cur.dtype).mul_(2).sub_(1)
        u /= u.norm(dim=1, keepdim=True).clamp_min(1e-12)
        probes = (cur[o] + delta[o, None] * u).clamp_(0, 1)
        u = (probes - cur[o]) / delta[o, None]
        adv, _ = decide(probes, idx[o])
        f = adv.to(cur.dtype) * 2 - 1
        s_u.index_add_(0, o, u)
        s_fu.index_add_(0, o, f[:, None] * u)
        s_f.index_add_(0, o, f)
    n = n_evals.to(cur.dtype)
    fbar = s_f / n
    grad = s_fu / n[:, None] - fbar[:, None] * s_u / n[:, None]
    grad = torch.where((fbar == 1)[:, None], s_u / n[:, None], grad)
    grad = torch.where((fbar == -1)[:, None], -s_u / n[:, None], grad)
    return grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-20)


def hop_skip_jump(
    model: nn.Module | Oracle,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: float | str = 2,
    max_queries: int | None = 1000,
    max_iter: int | None = None,
    init_evals: int = 100,
    max_evals: int = 10000,
    gamma: float = 1.0,
    target: torch.Tensor | None = None,
    x_init: torch.Tensor | None = None,
    seed: int = 0,
    progress: bool = True,
) -> AttackResult:
    """HopSkipJump: a labels-only, minimal-perturbation attack (L2 or Linf).

    Chen, Jordan & Wainwright, "HopSkipJumpAttack: A Query-Efficient Decision-Based Attack",
    IEEE Symposium on Security and Privacy 2020 (Algorithm 2, with the choices of the authors'
    code, which ART follows). With ``phi(x') = 1`` iff ``x'`` is adversarial, ``d = dim(x)``,
    ``theta = gamma / d^(3/2)`` (L2) or ``gamma / d^2`` (Linf)::

        x_0 = starting point (x_init, or uniform noise pulled towards x), then
        x_0 = binary_search(x, x_0)        # to the boundary, tolerance theta
        for t = 1, 2, ...:
            delta_t = 0.1 if t == 1 else sqrt(d) theta r_{t-1} (L2) | d theta r_{t-1} (Linf)
            B_t     = min(init_evals * sqrt(t), max_evals)
            v_t     = grad_estimate(x_{t-1}, B_t, delta_t)     # B_t queries (Eq. 9-10)
            v_t     = sign(v_t) for Linf
            eps     = ||x_{t-1} - x||_p / sqrt(t)
            while phi(x_{t-1} + eps v_t) == 0: eps /= 2        # geometric progression
            x'_t    = clip(x_{t-1} + eps v_t);  r_t = ||x'_t - x||_p
            x_t     = binary_search(x, x'_t)   # L2: (1-a) x + a x'_t; Linf: clip(x'_t, x-a, x+a)

    Every queried image is clipped to [0, 1]. The binary search keeps the adversarial end, so
    every ``x_t`` is a queried adversarial point; the result is the closest one (in the
    attack's norm) that a sample reached. All samples advance together (ART loops over them).

    Parameters
    ----------
    model : nn.Module or Oracle
        Classifier in eval mode (pixels in [0, 1], logits ``N x K``), or an :class:`Oracle`
        answering labels, scores or logits (only its top-1 label is used) with ``n == len(x)``.
    x : Tensor
        ``N x C x H x W`` (or ``N x D``) float images in [0, 1]. Never modified.
    y : Tensor
        ``N`` int64 true labels.
    norm : {2, "inf"}
        The distance minimised (``p`` above): the binary search's path, ``theta``, ``delta_t``
        and the update ``v_t`` (``sign`` for Linf) depend on it.
    max_queries : int or None
        Per-sample query budget, every query counted (the clean query, the start's search, the
        ``B_t`` probes, the step and binary searches). A sample whose next iteration would pass
        it spends what is left on a smaller ``B_t``, then stops with its best point.
    max_iter : int, optional
        At most this many iterations ``t`` (``None``: until ``max_queries`` is spent; one of the
        two must be set).
    init_evals : int
        ``B_1`` (``init_evals * sqrt(t)`` probes in iteration ``t``; the paper's ``B_0 = 100``).
    max_evals : int
        Cap on ``B_t``.
    gamma : float
        Scales ``theta``: the binary-search tolerance and the probe radius ``delta_t``.
    target : Tensor, optional
        ``N`` target labels: adversarial means classified as ``target``. Needs ``x_init``.
    x_init : Tensor, optional
        Starting images (shape of ``x``), e.g. images of the target classes. A sample whose
        ``x_init`` is not adversarial falls back to uniform noise.
    seed : int
        Seed of the local generator (noise starts and probes).
    progress : bool
        Show a ``tqdm`` bar over the iterations.

    Returns
    -------
    AttackResult
        ``x_adv``: the closest adversarial point found (``x`` where none was: such samples
        fail); ``pred``: the oracle's label for it; ``iterations``; ``queries`` (the oracle's
        count); ``extra["l2_history"]`` (or ``"linf_history"``): ``(T + 1) x N`` distances of the
        best point after the start and after each iteration (NaN without a start),
        ``extra["no_start"]``: samples for which no adversarial start was found,
        ``extra["out_of_queries"]``.

    Example
    -------
    >>> res = hop_skip_jump(model, x, y, norm=2, max_queries=1000)   # doctest: +SKIP
    >>> res.success_rate, res.norms(2).median()                      # doctest: +SKIP
    (1.0, tensor(1.62))
    """
    p = check_norm(norm, (2.0, math.inf))
    max_iter = _check_count(max_iter, "max_iter", minimum=0, allow_none=True)
    init_evals = _check_count(init_evals, "init_evals")
    max_evals = _check_count(max_evals, "max_evals")
    if init_evals > max_evals:
        raise ValueError(f"init_evals ({init_evals}) must be <= max_evals ({max_evals})")
    gamma = _check_positive(gamma, "gamma")
    oracle, decide, xf, xi, adv0, lab0, idx = _prepare(model, x, y, target, x_init, max_queries, max_iter,
                                                       "hop_skip_jump")
    n, d = xf.shape
    gen = torch.Generator(device=x.device).manual_seed(seed)
    theta = gamma / (d ** 1.5 if p == 2 else d ** 2)
    search_steps = math.ceil(math.log2(1 / theta)) if theta < 1 else 1

    best, best_lab = xf.clone(), lab0.clone()
    success = adv0.clone()
    iterations = torch.zeros(n, dtype=torch.long, device=x.device)
    inf = torch.full((n,), math.inf, dtype=x.dtype, device=x.device)
    best_dist = torch.where(adv0, torch.zeros_like(inf), inf)

    todo = (~adv0).nonzero().squeeze(1)
    cur, cur_lab = xf.clone(), lab0.clone()
    r_prev = torch.zeros_like(inf)
    active = torch.zeros(n, dtype=torch.bool, device=x.device)
    if len(todo):
        s, s_lab, found = _starting_points(decide, xf[todo], todo, None if xi is None else xi[todo], gen,
                                           blend_init=False)
        f = todo[found]
        if len(f):
            r_prev[f] = _distance(s[found], xf[f], p)
            cur[f], cur_lab[f] = _search(decide, xf[f], s[found], s_lab[found], f, p, theta)
            best[f], best_lab[f], success[f] = cur[f], cur_lab[f], True
            best_dist[f] = _distance(cur[f], xf[f], p)
            active[f] = True
    no_start = int((~success).sum())
    history = [_distance(best, xf, p).where(success, torch.nan)]

    t = 0
    bar = tqdm(total=max_iter, desc="hop_skip_jump", disable=not progress, leave=False)
    while active.any() and (max_iter is None or t < max_iter):
        t += 1
        a = active.nonzero().squeeze(1)
        b_t = min(int(init_evals * math.sqrt(t)), max_evals)
        # what the budget allows: the probes, at least one step query, and the binary search
        room = decide.remaining(a) - search_steps - 1
        n_ev = room.clamp(max=b_t)
        go = n_ev >= 1  # a last, smaller estimate still helps (measured on LeNet-5)
        active[a[~go]] = False
        a, n_ev = a[go], n_ev[go]
        if len(a) == 0:
            break
        xa, ca = xf[a], cur[a]
        dist = _distance(ca, xa, p)
        delta = torch.full_like(dist, 0.1) if t == 1 else (math.sqrt(d) if p == 2 else d) * theta * r_prev[a]
        delta = delta.clamp_min(1e-12)
        v = _gradient_direction(decide, ca, a, n_ev, delta, p, gen)
        if p == math.inf:
            v = v.sign()
        # geometric progression: halve eps until the step stays adversarial
        eps = dist / math.sqrt(t)
        stepped, stepped_lab = ca.clone(), cur_lab[a].clone()
        moved = torch.zeros(len(a), dtype=torch.bool, device=x.device)
        pending = torch.ones_like(moved)
        for _ in range(MAX_HALVINGS):
            pending &= decide.remaining(a) >= 1
            g = pending.nonzero().squeeze(1)
            if len(g) == 0:
                break
            cand = (ca[g] + eps[g, None] * v[g]).clamp_(0, 1)
            adv, lab = decide(cand, a[g])
            ok = g[adv]
            stepped[ok], stepped_lab[ok], moved[ok] = cand[adv], lab[adv], True
            pending[ok] = False
            eps[g[~adv]] /= 2
        # samples that found no adversarial step (budget, or MAX_HALVINGS) stop at their point
        active[a[~moved]] = False
        a, xa, stepped, stepped_lab = a[moved], xa[moved], stepped[moved], stepped_lab[moved]
        if len(a):
            r_prev[a] = _distance(stepped, xa, p)
            cur[a], cur_lab[a] = _search(decide, xa, stepped, stepped_lab, a, p, theta)
            iterations[a] += 1
            dn = _distance(cur[a], xa, p)
            better = dn < best_dist[a]
            bi = a[better]
            best[bi], best_lab[bi], best_dist[bi] = cur[bi], cur_lab[bi], dn[better]
        history.append(_distance(best, xf, p).where(success, torch.nan))
        bar.update(1)
    bar.close()

    name = "l2" if p == 2 else "linf"
    return finish(oracle, x, y, best.view_as(x).to(x.dtype), best_lab, attack="hop_skip_jump",
                  params={"norm": "inf" if p == math.inf else 2, "max_iter": max_iter, "init_evals": init_evals,
                          "max_evals": max_evals, "gamma": gamma, "seed": seed},
                  target=target, iterations=iterations,
                  extra={f"{name}_history": torch.stack(history), "no_start": no_start})


# ------------------------------------------------------------------------ Boundary attack


class _Window:
    """Per-sample ring buffers of the last ``size`` outcomes (NaN: empty), as Foolbox 3's ArrayQueue."""

    def __init__(self, n: int, size: int, device):
        self.data = torch.full((n, size), torch.nan, device=device)
        self.ptr = torch.zeros(n, dtype=torch.long, device=device)

    def append(self, idx: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> None:
        """Outcomes ``values[i, j]`` where ``mask[i, j]``, for samples ``idx``."""
        size = self.data.shape[1]
        k = mask.long().cumsum(1) - 1                                 # slot offset per kept outcome
        pos = (self.ptr[idx, None] + k) % size
        rows = idx[:, None].expand_as(pos)
        self.data[rows[mask], pos[mask]] = values[mask].float()
        self.ptr[idx] += mask.sum(1)

    def full(self) -> torch.Tensor:
        return ~self.data.isnan().any(1)

    def mean(self) -> torch.Tensor:
        return self.data.nanmean(1)

    def clear(self, which: torch.Tensor) -> None:
        self.data[which] = torch.nan


def _proposals(x: torch.Tensor, cur: torch.Tensor, sph: torch.Tensor, src: torch.Tensor,
               gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Brendel et al.'s proposal for each row (Foolbox 3's ``draw_proposals``, one draw per row).

    ``eta ~ N(0, I)`` made orthogonal to the source direction ``x - cur`` and scaled to
    ``sph * ||x - cur||``; the spherical candidate ``x + (eta - (x - cur)) / sqrt(1 + sph^2)``
    lies on the sphere of radius ``||x - cur||`` around ``x``; the candidate then moves
    ``src * ||x - cur||`` towards ``x`` (corrected for the clipping's departure from the sphere).
    """
    diff = x - cur
    r = diff.norm(dim=1, keepdim=True).clamp_min(1e-20)
    u = diff / r
    eta = torch.randn(cur.shape, generator=gen, device=cur.device, dtype=cur.dtype)
    eta -= (eta * u).sum(1, keepdim=True) * u
    eta *= sph[:, None] * r / eta.norm(dim=1, keepdim=True).clamp_min(1e-20)
    spherical = (x + (eta - diff) / (sph[:, None] ** 2 + 1).sqrt()).clamp_(0, 1)
    new_diff = x - spherical
    new_r = new_diff.norm(dim=1, keepdim=True).clamp_min(1e-20)
    length = (src[:, None] * r + new_r - r).clamp_min(0) / new_r
    return (spherical + length * new_diff).clamp_(0, 1), spherical


def boundary(
    model: nn.Module | Oracle,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    max_queries: int | None = 5000,
    spherical_step: float = 0.01,
    source_step: float = 0.01,
    step_adaptation: float = 1.5,
    candidates: int = 1,
    max_iter: int | None = None,
    target: torch.Tensor | None = None,
    x_init: torch.Tensor | None = None,
    seed: int = 0,
    progress: bool = True,
) -> AttackResult:
    """The Boundary attack: a labels-only random walk along the decision boundary towards ``x`` (L2).

    Brendel, Rauber & Bethge, "Decision-Based Adversarial Attacks: Reliable Attacks Against
    Black-Box Machine Learning Models", ICLR 2018; proposals and step-size adaptation as in
    Foolbox 3's reference ``BoundaryAttack``. With ``x_k`` adversarial and ``r = ||x - x_k||``::

        x_0 = starting point (x_init, or uniform noise), pulled towards x by a binary search
        for k = 1, 2, ...:
            for c = 1..candidates:                       # queried together
                eta  ~ N(0, I), orthogonal to x - x_k, ||eta|| = sph * r
                s_c  = clip(x + (eta - (x - x_k)) / sqrt(1 + sph^2))      # spherical step
                q_c  = clip(s_c + src * r * (x - s_c) / ||x - s_c||)      # step towards x
            x_{k+1} = the closest adversarial q_c closer than r (else x_k)
            every 2nd step the s_c are queried too: spherical success rate p_s (last 10):
                p_s > 0.5: sph, src *= step_adaptation;  p_s < 0.2: sph, src /= step_adaptation
            step success rate p_q of the q_c (last 10, every step):
                p_q > 0.25: src *= step_adaptation;    p_q < 0.1: src /= step_adaptation
            (a rate is used once its window is full, and the window is emptied after a change)
            stop when src < 1e-7 (converged) or the budget is spent

    Differences to Foolbox 3, whose thresholds these are: it queries the ``s_c`` every 10th
    step, takes ``p_s`` over the last 100 and ``p_q`` over the last 30 of those steps only, and
    draws one ``eta`` for the whole batch. Tuned for its 25,000 steps, that first adapts after
    1,000 steps; at the 1,000-5,000 queries of a black-box budget the shorter windows here
    (:data:`SPHERICAL_EVERY`, :data:`SPHERICAL_WINDOW`, :data:`STEP_WINDOW`) lower the median L2
    reached at 1,000 queries from 7.0 to 4.4 (LeNet-5, 40 MNIST images), and every sample draws
    its own ``eta``. One step costs
    ``candidates`` queries, twice that every 2nd step (1.5 per step on average for one candidate).

    Parameters
    ----------
    model : nn.Module or Oracle
        Classifier in eval mode (pixels in [0, 1], logits ``N x K``), or an :class:`Oracle`
        answering labels, scores or logits (only its top-1 label is used) with ``n == len(x)``.
    x : Tensor
        ``N x C x H x W`` (or ``N x D``) float images in [0, 1]. Never modified.
    y : Tensor
        ``N`` int64 true labels.
    max_queries : int or None
        Per-sample query budget, every query counted; the last step of a sample uses fewer
        candidates if that is all the budget allows.
    spherical_step : float
        Initial ``sph``: the orthogonal step, relative to ``r``.
    source_step : float
        Initial ``src``: the step towards ``x``, relative to ``r``.
    step_adaptation : float
        Factor (> 1) by which the statistics multiply or divide the steps.
    candidates : int
        Proposals per step and sample, queried in one model call. More candidates take fewer,
        better steps per query; at 1,000-5,000 queries one per step reached the smallest L2
        (LeNet-5: 7.5 / 8.5 / 9.0 at 1,000 queries for 1 / 4 / 10, with Foolbox's windows).
    max_iter : int, optional
        At most this many steps (``None``: until the budget is spent or the walk converged;
        one of ``max_iter`` and ``max_queries`` must be set).
    target : Tensor, optional
        ``N`` target labels: adversarial means classified as ``target``. Needs ``x_init``.
    x_init : Tensor, optional
        Starting images (shape of ``x``), e.g. images of the target classes; a sample whose
        ``x_init`` is not adversarial falls back to uniform noise.
    seed : int
        Seed of the local generator.
    progress : bool
        Show a ``tqdm`` bar over the steps.

    Returns
    -------
    AttackResult
        ``x_adv``: the last accepted (closest) adversarial point, ``x`` where no start was
        found; ``pred``: the oracle's label for it; ``iterations`` (steps taken);
        ``extra["l2_history"]``: ``(steps + 1) x N`` L2 distances, ``extra["init_l2"]``: the L2 of
        the starting point (after its binary search), ``extra["no_start"]``,
        ``extra["out_of_queries"]``.

    Example
    -------
    >>> res = boundary(model, x, y, max_queries=5000)      # doctest: +SKIP
    >>> res.norms(2).median() < res.extra["init_l2"].median()  # doctest: +SKIP
    tensor(True)
    """
    sph0 = _check_positive(spherical_step, "spherical_step")
    src0 = _check_positive(source_step, "source_step")
    adapt = _check_positive(step_adaptation, "step_adaptation")
    if adapt <= 1:
        raise ValueError(f"step_adaptation must be > 1 (the factor that grows or shrinks the steps), got {adapt}")
    c = _check_count(candidates, "candidates")
    max_iter = _check_count(max_iter, "max_iter", minimum=0, allow_none=True)
    oracle, decide, xf, xi, adv0, lab0, idx = _prepare(model, x, y, target, x_init, max_queries, max_iter,
                                                       "boundary attack")
    n, d = xf.shape
    gen = torch.Generator(device=x.device).manual_seed(seed)

    best, best_lab = xf.clone(), lab0.clone()
    success = adv0.clone()
    active = torch.zeros(n, dtype=torch.bool, device=x.device)
    todo = (~adv0).nonzero().squeeze(1)
    if len(todo):
        s, s_lab, found = _starting_points(decide, xf[todo], todo, None if xi is None else xi[todo], gen,
                                           blend_init=True)
        f = todo[found]
        best[f], best_lab[f], success[f], active[f] = s[found], s_lab[found], True, True
    no_start = int((~success).sum())
    dist = _distance(best, xf, 2)
    init_l2 = dist.where(success, torch.nan)
    history = [init_l2.clone()]

    sph = torch.full((n,), sph0, dtype=x.dtype, device=x.device)
    src = torch.full((n,), src0, dtype=x.dtype, device=x.device)
    stats_sph = _Window(n, SPHERICAL_WINDOW, x.device)
    stats_step = _Window(n, STEP_WINDOW, x.device)
    iterations = torch.zeros(n, dtype=torch.long, device=x.device)
    arange_c = torch.arange(c, device=x.device)

    k = 0
    bar = tqdm(total=max_iter, desc="boundary", disable=not progress, leave=False)
    while max_iter is None or k < max_iter:
        active &= src >= 1e-7
        a = active.nonzero().squeeze(1)
        if len(a):
            rem = decide.remaining(a)
            active[a[rem < 1]] = False
            a, rem = a[rem >= 1], rem[rem >= 1]
        if len(a) == 0:
            break
        k += 1
        check = k % SPHERICAL_EVERY == 0
        # candidates per sample: all of them if the budget allows (twice on a statistics step)
        m = rem.clamp(max=c)
        with_sph = (rem >= 2 * c) if check else torch.zeros_like(rem, dtype=torch.bool)
        mask = arange_c[None, :] < m[:, None]                     # len(a) x c
        rows = a[:, None].expand(-1, c)[mask]
        q, s = _proposals(xf[rows], best[rows], sph[rows], src[rows], gen)
        sm = mask & with_sph[:, None]
        srows_mask = sm[mask]                                      # which flat rows also query s
        nq = len(q)
        adv, lab = decide(torch.cat([q, s[srows_mask]]), torch.cat([rows, rows[srows_mask]]))  # one model call
        adv, lab, s_adv = adv[:nq], lab[:nq], adv[nq:]
        if with_sph.any():
            vals = torch.zeros(len(a), c, dtype=torch.bool, device=x.device)
            vals[sm] = s_adv
            stats_sph.append(a, vals, sm)
        qv = torch.zeros(len(a), c, dtype=torch.bool, device=x.device)
        qv[mask] = adv
        stats_step.append(a, qv, mask)
        # accept the closest adversarial candidate that is closer than the current point
        dq = _distance(q, xf[rows], 2)
        score = torch.full((len(a), c), math.inf, dtype=x.dtype, device=x.device)
        score[mask] = torch.where(adv & (dq < dist[rows]), dq, torch.full_like(dq, math.inf))
        top, j = score.min(1)
        take = torch.isfinite(top)
        flat_pos = mask.long().cumsum(1) - 1                       # position of (i, j) among the flat rows
        offsets = torch.cumsum(m, 0) - m
        sel = (offsets + flat_pos[torch.arange(len(a), device=x.device), j])[take]
        ai = a[take]
        best[ai], best_lab[ai], dist[ai] = q[sel], lab[sel], top[take]
        iterations[a] += 1
        # step-size adaptation from the success statistics (Foolbox 3's thresholds)
        if check:
            full = stats_sph.full()
            ps = stats_sph.mean()
            up, down = full & (ps > 0.5), full & (ps < 0.2)
            sph = torch.where(up, sph * adapt, torch.where(down, sph / adapt, sph))
            src = torch.where(up, src * adapt, torch.where(down, src / adapt, src))
            stats_sph.clear(up | down)
        full = stats_step.full()
        pq = stats_step.mean()
        up, down = full & (pq > 0.25), full & (pq < 0.1)
        src = torch.where(up, src * adapt, torch.where(down, src / adapt, src))
        stats_step.clear(up | down)
        history.append(dist.where(success, torch.nan).clone())
        bar.update(1)
    bar.close()

    return finish(oracle, x, y, best.view_as(x).to(x.dtype), best_lab, attack="boundary",
                  params={"spherical_step": sph0, "source_step": src0, "step_adaptation": adapt,
                          "candidates": c, "max_iter": max_iter, "seed": seed},
                  target=target, iterations=iterations,
                  extra={"l2_history": torch.stack(history), "init_l2": init_l2, "no_start": no_start})
