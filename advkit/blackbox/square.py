"""The Square attack: score-based random search with square-shaped updates, Linf and L2.

Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient black-box
adversarial attack via random search", ECCV 2020 (arXiv:1912.00049). The attack sees only the
model's scores and keeps, per sample, the best point found so far; each iteration proposes one
candidate per still-unsuccessful sample that differs from the current best on a random square
of side ``s`` (shrinking with the schedule ``p(i)``) and is accepted if the loss does not
increase. Every candidate sits on the boundary of the feasible set::

    x_best = clip(x + init(eps), 0, 1);  L_best = L(f(x_best))         (1 query, always kept)
    for i = 0, 1, ..., n_iters - 2:                                     (1 query each)
        s  = side of a square covering about p(i) * H * W pixels
        x' = x_best with a fresh update on a random s x s window        (Linf or L2 below)
        if L(f(x')) <= L_best or x' is adversarial:  x_best, L_best = x', L(f(x'))
        stop the sample once x_best is adversarial or its budget is spent

=====  ===============================================================  ================================
norm   init                                                             update on the window
=====  ===============================================================  ================================
Linf   vertical stripes: ``x + eps * u``, ``u`` in {-1, 1}^(C x 1 x W)   every pixel of the window set to
                                                                         ``clip(x +- eps)`` with one
                                                                         random sign per channel
L2     a 5 x 5 grid of "meta pseudo-Gaussian" bumps with random signs,  move mass between two windows:
       rescaled to ``||delta||_2 = eps``                                 window 2 set to 0, window 1
                                                                         gets its old content plus a new
                                                                         bump, rescaled so that the total
                                                                         stays at ``||delta||_2 = eps``
=====  ===============================================================  ================================

The schedule is the official code's ``p_selection``: ``p = p_init`` halved at iterations 10,
50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of 10 000, those thresholds rescaled to the
budget (``i -> int(i / n_iters * 10000)``). The Linf update is redrawn until it changes the
window (as in the official code), so no query is spent on a copy of ``x_best``.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import nn
from tqdm.auto import tqdm

from ..attacks.checks import check_eps, check_norm
from ..attacks.result import AttackResult
from .oracle import Oracle, as_oracle, check_budget, check_num_classes, finish, margin_from_scores

#: Redraws of a Linf window's signs that leave the window unchanged (each succeeds with
#: probability >= 1/2 for one channel, so this bound is never reached in practice).
MAX_REDRAWS = 64

#: The default ``p_init`` per norm: 0.8 for Linf (the paper's MNIST setting, AutoAttack's
#: default); 0.1 for L2 (the official code's "L2 standard").
P_INIT = {math.inf: 0.8, 2.0: 0.1}


# ------------------------------------------------------------------ schedule and patterns


def p_selection(p_init: float, it: int, n_iters: int) -> float:
    """The official piece-wise constant schedule of ``p`` (the fraction of pixels a square covers).

    ``it`` is rescaled to a 10 000-iteration run, ``j = int(it / n_iters * 10000)``, and ``p`` is
    ``p_init`` for ``j <= 10``, then halves after ``j`` = 10, 50, 200, 500, 1000, 2000, 4000, 6000
    and 8000 (down to ``p_init / 512``).
    """
    j = int(it / n_iters * 10000)
    for k, bound in enumerate((10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)):
        if j <= bound:
            return p_init / 2 ** k
    return p_init / 512


def linf_side(p: float, c: int, h: int, w: int) -> int:
    """Square side for the Linf update: ``round(sqrt(p * H * W))``, clamped to ``1 .. min(H, W) - 1``."""
    s = int(round(math.sqrt(p * c * h * w / c)))
    return min(max(s, 1), min(h, w) - 1)


def l2_side(p: float, c: int, h: int, w: int) -> int:
    """Square side for the L2 update: ``round(sqrt(p * H * W))``, at least 3, odd, at most ``min(H, W)``."""
    s = max(int(round(math.sqrt(p * c * h * w / c))), 3)
    if s % 2 == 0:
        s += 1
    if s > min(h, w):
        s = min(h, w) if min(h, w) % 2 else min(h, w) - 1
    return s


def _rectangle_bump(a: int, b: int) -> torch.Tensor:
    """The official ``pseudo_gaussian_pert_rectangles(a, b)``: nested rectangles around the centre
    weighted ``1 / (k + 1)^2``, unit L2 norm (float64, ``a x b``)."""
    delta = torch.zeros(a, b, dtype=torch.float64)
    r, c = a // 2, b // 2
    for k in range(max(a // 2 + 1, b // 2 + 1)):
        delta[max(r, 0):min(r + 2 * k + 1, a), max(c, 0):min(c + 2 * k + 1, b)] += 1.0 / (k + 1) ** 2
        r, c = r - 1, c - 1
    return delta / delta.norm()


@lru_cache(maxsize=64)
def meta_pseudo_gaussian(s: int) -> torch.Tensor:
    """The official ``meta_pseudo_gaussian_pert(s)`` before its random transpose: a bump on the
    top half of an ``s x s`` window and its negative on the bottom half, unit L2 norm (float64).
    Callers transpose it at random (with probability 1/2)."""
    delta = torch.zeros(s, s, dtype=torch.float64)
    delta[:s // 2] = _rectangle_bump(s // 2, s)
    delta[s // 2:] = -_rectangle_bump(s - s // 2, s)
    return delta / delta.norm()


def _bumps(m: int, s: int, gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """``m`` meta pseudo-Gaussian ``s x s`` patterns, each transposed with probability 1/2 (``m x s x s``)."""
    base = meta_pseudo_gaussian(s).to(like)
    flip = torch.rand(m, generator=gen) > 0.5
    return torch.where(flip.to(like.device).view(m, 1, 1), base.T, base)


def _signs(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2, shape, generator=gen).mul_(2).sub_(1)


def _corners(m: int, s: int, h: int, w: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-left corners of ``m`` random ``s x s`` windows, uniform over all positions inside the image."""
    return torch.randint(0, h - s + 1, (m,), generator=gen), torch.randint(0, w - s + 1, (m,), generator=gen)


def _window_mask(r: torch.Tensor, c: torch.Tensor, s: int, h: int, w: int, device) -> torch.Tensor:
    """Bool ``m x 1 x H x W``: the window of side ``s`` at ``(r, c)`` in each image."""
    r, c = r.to(device), c.to(device)
    rows = torch.arange(h, device=device)
    cols = torch.arange(w, device=device)
    in_r = (rows[None] >= r[:, None]) & (rows[None] < r[:, None] + s)
    in_c = (cols[None] >= c[:, None]) & (cols[None] < c[:, None] + s)
    return (in_r[:, :, None] & in_c[:, None, :])[:, None]


def _window_index(r: torch.Tensor, c: torch.Tensor, s: int, channels: int, device) -> tuple[torch.Tensor, ...]:
    """Advanced-indexing tuple selecting each image's ``C x s x s`` window (``t[idx]`` is ``m x C x s x s``)."""
    m = len(r)
    ar = torch.arange(s, device=device)
    rows = r.to(device)[:, None] + ar
    cols = c.to(device)[:, None] + ar
    return (torch.arange(m, device=device)[:, None, None, None],
            torch.arange(channels, device=device)[None, :, None, None],
            rows[:, None, :, None], cols[:, None, None, :])


def _per_sample(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)


def _l2(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1)


# ------------------------------------------------------------------ init and updates


def linf_init(x: torch.Tensor, eps: float, gen: torch.Generator) -> torch.Tensor:
    """Vertical stripes: ``clip(x + eps * u, 0, 1)``, one sign ``u`` per image, channel and column."""
    m, c, _, w = x.shape
    u = _signs((m, c, 1, w), gen).to(x)
    return (x + eps * u).clamp(0, 1)


def linf_update(x: torch.Tensor, best: torch.Tensor, eps: float, s: int, gen: torch.Generator) -> torch.Tensor:
    """One Linf candidate per image: the window of side ``s`` at a random position set to
    ``clip(x + eps * u_c, 0, 1)`` with one sign ``u_c`` per channel, redrawn while the window
    would equal ``best``'s (the official code's rule); elsewhere ``best``."""
    m, c, h, w = x.shape
    r, col = _corners(m, s, h, w, gen)
    mask = _window_mask(r, col, s, h, w, x.device)
    hi, lo = (x + eps).clamp(0, 1), (x - eps).clamp(0, 1)
    cand = best.clone()
    todo = torch.arange(m, device=x.device)
    for _ in range(MAX_REDRAWS):
        u = _signs((len(todo), c, 1, 1), gen).to(x.device)
        new = torch.where(mask[todo], torch.where(u > 0, hi[todo], lo[todo]), best[todo])
        cand[todo] = new
        same = ((new - best[todo]).abs() < 1e-7).flatten(1).all(1)
        todo = todo[same]
        if len(todo) == 0:
            break
    return cand


def l2_init(x: torch.Tensor, eps: float, gen: torch.Generator) -> torch.Tensor:
    """The paper's L2 init: a grid of ``(H // s) x (W // s)`` meta pseudo-Gaussian bumps of side
    ``s = max(min(H, W) // 5, 2)``, centred, each with a random sign per channel (and a random
    transpose), rescaled to ``||delta||_2 = eps`` and clipped to the box."""
    m, c, h, w = x.shape
    s = max(min(h, w) // 5, 2)
    nh, nw = h // s, w // s
    tiles = _bumps(m * nh * nw, s, gen, x).view(m, 1, nh, nw, s, s)
    tiles = tiles * _signs((m, c, nh, nw, 1, 1), gen).to(x)
    grid = tiles.permute(0, 1, 2, 4, 3, 5).reshape(m, c, nh * s, nw * s)
    delta = torch.zeros_like(x)
    oh, ow = (h - nh * s) // 2, (w - nw * s) // 2
    delta[:, :, oh:oh + nh * s, ow:ow + nw * s] = grid
    return (x + delta * _per_sample(eps / _l2(delta).clamp_min(1e-12))).clamp(0, 1)


def l2_update(x: torch.Tensor, best: torch.Tensor, eps: float, s: int, gen: torch.Generator) -> torch.Tensor:
    """One L2 candidate per image (the official ``square_attack_l2`` step, with per-image windows).

    With ``delta = best - x``, two random windows ``W1``, ``W2`` of side ``s`` and, per channel,
    ``r^2 = max(eps^2 - ||delta||^2, 0) / C + ||delta restricted to W1 u W2||^2`` (the mass the
    two windows hold plus what the image still has free)::

        new = eta * u + delta[W1] / ||delta[W1]||        eta: meta pseudo-Gaussian, u = +-1 per channel
        delta[W2] = 0;  delta[W1] = r * new / ||new||
        x' = clip(x + eps * delta / ||delta||_2, 0, 1)
    """
    m, c, h, w = x.shape
    delta = best - x
    r1, c1 = _corners(m, s, h, w, gen)
    r2, c2 = _corners(m, s, h, w, gen)
    w1 = _window_index(r1, c1, s, c, x.device)
    union = _window_mask(r1, c1, s, h, w, x.device) | _window_mask(r2, c2, s, h, w, x.device)
    old = delta[w1]                                                      # m x C x s x s
    norm_w1 = old.square().sum((2, 3), keepdim=True).sqrt()
    norm_img = _per_sample(_l2(delta))
    norm_windows = (delta * union).square().sum((2, 3), keepdim=True).sqrt()
    new = _bumps(m, s, gen, x)[:, None] * _signs((m, c, 1, 1), gen).to(x) + old / (1e-10 + norm_w1)
    radius = ((eps ** 2 - norm_img ** 2).clamp_min(0) / c + norm_windows ** 2).sqrt()
    new = new / new.square().sum((2, 3), keepdim=True).sqrt().clamp_min(1e-12) * radius
    delta = delta.masked_fill(_window_mask(r2, c2, s, h, w, x.device), 0.0)
    delta[w1] = new
    return (x + delta * _per_sample(eps / _l2(delta).clamp_min(1e-12))).clamp(0, 1)


# ------------------------------------------------------------------ the attack


def _log_scores(oracle: Oracle, answer: torch.Tensor) -> torch.Tensor:
    """Log-probabilities from a score answer (clamped at 1e-30, as :func:`margin_from_scores`) or logits."""
    return answer.log_softmax(1) if oracle.output == "logits" else answer.clamp_min(1e-30).log()


def _objective(logp: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, loss: str) -> torch.Tensor:
    """The loss the attack *decreases*: the margin (> 0 while not adversarial), or ``log p_y``
    (untargeted CE) / ``-log p_t`` (targeted CE)."""
    if loss == "margin":
        return margin_from_scores(logp, y, target, log=False)
    if target is None:
        return logp.gather(1, y[:, None]).squeeze(1)
    return -logp.gather(1, target[:, None]).squeeze(1)


def square(
    model: nn.Module | Oracle,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: float | str = "inf",
    max_queries: int = 1000,
    p_init: float | None = None,
    loss: str | None = None,
    target: torch.Tensor | None = None,
    seed: int = 0,
    progress: bool = True,
    batch_size: int | None = None,
    record_loss: bool = False,
) -> AttackResult:
    """Square attack (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020): score-based random search.

    Talks to the model only through a score :class:`~advkit.blackbox.Oracle` (scores or
    logits). Per sample: 1 query on the clean ``x`` (a sample already misclassified stops
    there, successful), 1 on the init (always kept, as in the official code), then 1 per
    iteration while the sample is not adversarial and has budget left, so at most
    ``max_queries`` in all. See the module docstring for the algorithm::

        ans = f(x)                                   # query 1; stop where already adversarial
        x_best = init(x);  L_best = L(f(x_best))     # query 2, kept
        for i in 0 .. max_queries - 3:               # one query per active sample
            x' = update(x_best, s(p_selection(p_init, i, max_queries - 1)))
            accept x' if L(f(x')) <= L_best or f(x') is adversarial

    Parameters
    ----------
    model : nn.Module or Oracle
        Classifier in eval mode (pixels in [0, 1], logits ``N x K``), wrapped in a fresh
        ``Oracle(model, "scores", max_queries=max_queries)``; or an :class:`Oracle` answering
        ``"scores"`` (e.g. rounded with ``decimals``) or ``"logits"``: its own budget is then
        enforced as well, and ``max_queries`` still sets the schedule and the number of iterations.
    x : Tensor
        ``N x C x H x W`` float images in [0, 1]. Never modified.
    y : Tensor
        ``N`` int64 true labels.
    eps : float
        Radius: ``||x_adv - x||_p <= eps``. ``0`` returns ``x`` after the clean query.
    norm : {"inf", 2}, default "inf"
        The threat model: Linf (stripes init, constant-sign square updates) or L2 (bump init,
        mass moved between two windows).
    max_queries : int, default 1000
        Per-sample budget, the clean query included (``n_iters = max_queries - 1`` in the
        official code's terms: init plus ``max_queries - 2`` updates). The schedule ``p(i)`` is
        scaled to it. ``1`` asks only the clean query.
    p_init : float, optional
        Initial fraction of pixels a square covers, ``0 < p_init <= 1``: 0.8 for Linf (the
        paper's MNIST value, AutoAttack's default), 0.1 for L2 (the official code's L2
        standard; it recommends larger ``p`` for robust models; on the zoo's LeNet-5, L2 eps=2,
        100 images, ``p_init=0.8`` measured 0.27 vs 0.14 success at 300 queries and 0.64 vs 0.53
        at 3000). Side ``s = round(sqrt(p H W))`` (Linf: ``1 <= s <= min(H, W) - 1``; L2: odd, ``>= 3``).
    loss : {"margin", "ce"}, optional
        What the search decreases, on log-probabilities ``log f_j``: ``"margin"``,
        ``log f_y - max_{j != y} log f_j`` (targeted: ``max_{j != t} log f_j - log f_t``);
        ``"ce"``, ``log f_y`` (targeted: ``-log f_t``). Default: margin untargeted,
        cross-entropy targeted, as the official code chooses.
    target : Tensor, optional
        ``N`` target labels (targeted attack; success is ``pred == target``).
    seed : int, default 0
        Seed of a private ``torch.Generator`` (same seed, same result).
    progress : bool, default True
        Show a ``tqdm`` bar over the iterations.
    batch_size : int, optional
        Rows the fresh oracle sends to the model at once (memory and speed only; the
        :class:`~advkit.blackbox.Oracle` default: 128 on a CPU, 4096 on a GPU).
    record_loss : bool, default False
        Store ``L_best`` after the init and after every iteration in ``extra["loss_history"]``
        (``(max_queries - 1) x N``, NaN where a sample was not attacked).

    Returns
    -------
    AttackResult
        ``x_adv`` (in the eps-ball and [0, 1]), ``pred`` (the oracle's answer on it), ``success``,
        ``queries`` (the oracle's count), ``iterations`` (updates tried per sample, the init not
        counted) and ``extra``: ``"loss"`` (``L_best`` per sample; NaN where never attacked),
        ``"accepted"`` (updates accepted per sample), ``"out_of_queries"`` and optionally
        ``"loss_history"``.

    Notes
    -----
    Deviations from the official code, all minor: windows are drawn per image (the official
    L2 code draws one position for the whole batch) uniformly over *all* positions (the
    official ``randint(0, h - s)`` never reaches the last row and column); ties are accepted
    (``<=`` instead of ``<``) so that the search keeps moving on flat or rounded scores (on a
    LeNet-5 whose scores are one-hot, 50 images, Linf 0.3, 1000 queries: 0.62 success with ties
    accepted, 0.16 without; on continuous scores ties do not occur); a
    candidate that is adversarial is accepted even if its loss is higher (AutoAttack's rule,
    which matters for the cross-entropy loss).

    Example
    -------
    On the zoo's LeNet-5 and the first 100 MNIST test images (measured):

    >>> res = square(model, x, y, eps=0.3, max_queries=1000, progress=False)    # doctest: +SKIP
    >>> res.success_rate, res.queries[res.success].median()                     # doctest: +SKIP
    (1.0, tensor(28))
    >>> oracle = Oracle(model, "scores", n=len(x), max_queries=500, decimals=2)  # doctest: +SKIP
    >>> square(oracle, x, y, eps=0.3, max_queries=500, progress=False).success_rate  # doctest: +SKIP
    0.97
    """
    eps = check_eps(eps)
    p = check_norm(norm, (math.inf, 2.0))
    max_queries = check_budget(max_queries)
    if max_queries is None:
        raise ValueError("square needs a finite max_queries: its square-size schedule is scaled to the budget")
    if p_init is None:
        p_init = P_INIT[p]
    if isinstance(p_init, bool) or not isinstance(p_init, (int, float)) or not 0 < p_init <= 1:
        raise ValueError(f"p_init (the initial fraction of pixels a square covers) must be in (0, 1], got {p_init!r}")
    if loss is None:
        loss = "margin" if target is None else "ce"
    if loss not in ("margin", "ce"):
        raise ValueError(f"loss must be 'margin' (the margin on log-scores) or 'ce' (cross-entropy), got {loss!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    oracle_kwargs = {} if isinstance(model, Oracle) else {"batch_size": batch_size}
    oracle = as_oracle(model, x, y, allowed=("scores", "logits"), default="scores", max_queries=max_queries,
                       target=target, **oracle_kwargs)
    if x.dim() != 4:
        raise ValueError(f"square attacks images: x must be N x C x H x W, got shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    if min(h, w) < (2 if p == math.inf else 3):
        raise ValueError(f"images of {h} x {w} pixels are too small for square windows "
                         f"(need at least {2 if p == math.inf else 3} x {2 if p == math.inf else 3})")

    x0 = x.detach()
    dev = x0.device
    gen = torch.Generator().manual_seed(seed)
    init, update, side = (linf_init, linf_update, linf_side) if p == math.inf else (l2_init, l2_update, l2_side)

    def adversarial(pred: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return pred == target[rows] if target is not None else pred != y[rows]

    best = x0.clone()
    pred = y.clone()  # overwritten by the clean answer wherever the oracle can answer
    best_loss = torch.full((n,), math.nan, device=dev)
    done = torch.zeros(n, dtype=torch.bool, device=dev)
    iterations = torch.zeros(n, dtype=torch.long, device=dev)
    accepted = torch.zeros(n, dtype=torch.long, device=dev)
    n_iters = max_queries - 1
    history = torch.full((n_iters, n), math.nan, device=dev) if record_loss else None

    def active() -> torch.Tensor:
        return ((~done).cpu() & (oracle.remaining() > 0)).nonzero().squeeze(1).to(dev)

    # 1. the clean query (counted); samples already adversarial are done
    rows = active()
    if len(rows):
        ans = oracle(x0[rows], idx=rows)
        check_num_classes(oracle, y, target)
        pred[rows] = oracle.labels(ans)
        done[rows] = adversarial(pred[rows], rows)

    # 2. the init (counted, always kept)
    rows = active() if eps > 0 else rows[:0]
    if len(rows):
        cand = init(x0[rows], eps, gen)
        ans = oracle(cand, idx=rows)
        best[rows] = cand
        pred[rows] = oracle.labels(ans)
        best_loss[rows] = _objective(_log_scores(oracle, ans), y[rows], None if target is None else target[rows], loss)
        done[rows] = adversarial(pred[rows], rows)
        if history is not None:
            history[0, rows] = best_loss[rows]

    # 3. the random search
    bar = tqdm(total=max(n_iters - 1, 0), desc="square", leave=False, disable=not progress)
    try:
        for i in range(n_iters - 1 if eps > 0 else 0):
            rows = active()
            if len(rows) == 0:
                break
            s = side(p_selection(p_init, i, n_iters), c, h, w)
            cand = update(x0[rows], best[rows], eps, s, gen)
            ans = oracle(cand, idx=rows)
            lab = oracle.labels(ans)
            new_loss = _objective(_log_scores(oracle, ans), y[rows], None if target is None else target[rows], loss)
            ok = adversarial(lab, rows)
            take = (new_loss <= best_loss[rows]) | ok
            keep = rows[take]
            best[keep] = cand[take]
            pred[keep] = lab[take]
            best_loss[keep] = new_loss[take]
            done[keep] = ok[take]
            iterations[rows] += 1
            accepted[keep] += 1
            if history is not None:
                history[i + 1, rows] = best_loss[rows]
            bar.update(1)
            if progress:
                bar.set_postfix(success=int(done.sum()), refresh=False)
    finally:
        bar.close()

    extra: dict = {"loss": best_loss, "accepted": accepted}
    if history is not None:
        extra["loss_history"] = history
    return finish(oracle, x, y, best, pred, attack="square",
                  params={"eps": eps, "norm": "inf" if p == math.inf else 2, "p_init": p_init, "loss": loss,
                          "seed": seed},
                  target=target, iterations=iterations, extra=extra)
