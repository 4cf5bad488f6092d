"""ZOO: zeroth-order optimisation attack (Chen, Zhang, Sharma, Yi & Hsieh, "ZOO: Zeroth Order
Optimization Based Black-box Attacks to Deep Neural Networks without Training Substitute
Models", ACM AISec 2017).

Carlini & Wagner's L2 attack with the gradient replaced by finite differences of the score
oracle. The objective (eqs. 3-5 of the paper), in log-probability form::

    minimise_x  L(x) = ||x - x0||_2^2 + c * f(x)        subject to x in [0, 1]^p
    f(x) = max( log F_y(x) - max_{j != y} log F_j(x), -kappa )      untargeted, true label y
    f(x) = max( max_{j != t} log F_j(x) - log F_t(x), -kappa )      targeted, target t

``log F_a - log F_b`` equals the logit difference ``Z_a - Z_b`` (the softmax normaliser
cancels), so a logits oracle gives the same ``f``. The partial derivative along coordinate
``i`` is estimated by the symmetric difference (eq. 6) with ``h = 1e-4``::

    g_i = ( L(x + h e_i) - L(x - h e_i) ) / (2 h)

(one-sided at the box: the two points are clipped to [0, 1] and the quotient divides by the
distance actually between them). ZOO-ADAM (Algorithm 2), batched over ``B`` coordinates as in
the paper's experiments (``B = 128``) and over images::

    M, v, T = 0, 0, 0                                  (per coordinate)
    repeat:
        pick B coordinates uniformly at random (without replacement)
        one oracle call: x itself and x +- h e_i for the B coordinates (2B + 1 queries)
        for each picked i:  g_i as above;  T_i += 1
            M_i = b1 M_i + (1 - b1) g_i;   v_i = b2 v_i + (1 - b2) g_i^2
            x_i = proj_[0,1]( x_i - lr * (M_i / (1 - b1^T_i)) / (sqrt(v_i / (1 - b2^T_i)) + 1e-8) )
        keep x if it is adversarial (with margin kappa) and closer to x0 than the best so far

Around it, the binary search on ``c`` of Carlini & Wagner, per sample.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from tqdm.auto import tqdm

from .oracle import Oracle, as_oracle, check_budget, check_num_classes, finish, margin_from_scores

_NO_UPPER = 1e10  # "no successful c yet" (the reference code's 1e10)
_CPU_ROWS = 128   # rows per forward pass on a CPU: 2-3x the throughput of 4096-row passes (cache)
_H_MAX = 0.5      # cap of the flat-score fallback on h


# ---------------------------------------------------------------------------- finite differences


def fd_gradient(
    model: nn.Module | Oracle,
    x: torch.Tensor,
    y: torch.Tensor,
    coords: torch.Tensor,
    *,
    x0: torch.Tensor | None = None,
    c: float = 1.0,
    kappa: float = 0.0,
    h: float = 1e-4,
    target: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric finite-difference estimate of ZOO's loss gradient on chosen coordinates.

    Estimates ``dL/dx_i`` for ``L(x) = ||x - x0||_2^2 + c * f(x)`` (``f`` the log-probability
    C&W loss of the module docstring) by ``(L(x + h e_i) - L(x - h e_i)) / (2h)`` (eq. 6 of
    Chen et al., AISec 2017). Both points are clipped to [0, 1] and the quotient divides by the
    distance between them, so at a saturated pixel the estimate is one-sided. All coordinates of
    all images go in ONE oracle call of ``2 * B`` rows per image. The distance term's part of
    the difference is computed exactly (it is known to the attacker), not from the oracle.

    Parameters
    ----------
    model : nn.Module or Oracle
        The classifier, or an :class:`Oracle` answering ``"scores"`` or ``"logits"`` whose
        ``n == len(x)`` (queries are then counted per image, ``2 * B`` each).
    x : Tensor
        ``N x C x H x W`` (or ``N x D``) points in [0, 1] at which to differentiate.
    y : Tensor
        ``N`` true labels (the untargeted loss's ``y``).
    coords : Tensor
        Flat indices into ``C * H * W``: ``B`` indices shared by all images, or ``N x B``.
    x0 : Tensor, optional
        The original images of the distance term (default ``x``: that term's gradient is 0).
    c : float, default 1
        Weight of ``f`` in ``L``.
    kappa : float, default 0
        Confidence: ``f`` is clamped below at ``-kappa``.
    h : float, default 1e-4
        Half-width of the difference (the paper's ``h``).
    target : Tensor, optional
        ``N`` target labels: the targeted ``f``.

    Returns
    -------
    Tensor
        ``N x B`` estimates, in ``x``'s dtype (use float64 models and inputs for more digits).

    Example
    -------
    >>> g = fd_gradient(model, x, y, torch.arange(784), c=1.0)   # doctest: +SKIP
    """
    if x0 is None:
        x0 = x
    if x0.shape != x.shape:
        raise ValueError(f"x0 must have the shape of x {tuple(x.shape)}, got {tuple(x0.shape)}")
    c, kappa = _number(c, "c", positive=True), _number(kappa, "kappa", minimum=0.0)
    h = _number(h, "h", positive=True)
    if h > _H_MAX:
        raise ValueError(f"h must be <= {_H_MAX} (a half-width in pixel units), got {h}")
    oracle = as_oracle(model, x, y, allowed=("scores", "logits"), max_queries=None, target=target,
                       batch_size=rows_per_pass(x))
    n, d = len(x), x[0].numel()
    coords = torch.as_tensor(coords, device=x.device)
    if coords.is_floating_point() or coords.dtype == torch.bool:
        raise TypeError(f"coords must hold integer coordinate indices, got dtype {coords.dtype}")
    coords = coords.long()
    if coords.dim() == 1:
        coords = coords.expand(n, -1)
    if coords.dim() != 2 or len(coords) != n or coords.shape[1] == 0:
        raise ValueError(f"coords must be B indices or N x B indices (N = {n}), got shape {tuple(coords.shape)}")
    if coords.min() < 0 or coords.max() >= d:
        raise ValueError(f"coords must index the {d} coordinates of an image (0..{d - 1})")
    space = _Space.identity(x)
    x0f = x0.detach().reshape(n, -1)
    delta = x.detach().reshape(n, -1) - x0f
    lo, hi = space.bounds(x0f)
    grad, _ = _estimate(oracle, space, x0f, delta, lo, hi, coords, torch.arange(n), y, target,
                        torch.full((n,), c, dtype=x.dtype, device=x.device), kappa,
                        torch.full((n,), h, dtype=x.dtype, device=x.device), centre=False)
    return grad


class _Space:
    """The attack space: ``x = clip(x0 + U(delta))`` with ``U`` nearest-neighbour upsampling from
    ``C x h x w`` (``h = H, w = W``: the image itself). ``pix[k]`` lists the pixels of coordinate
    ``k`` (padded by repeating its first pixel; ``valid`` marks the real ones)."""

    def __init__(self, shape: tuple[int, ...], size: tuple[int, int] | None, device: torch.device):
        self.shape = shape
        if size is None or len(shape) != 3:
            d = math.prod(shape)
            self.of_pixel = torch.arange(d, device=device)
            self.pix = self.of_pixel[:, None]
            self.valid = torch.ones_like(self.pix, dtype=torch.bool)
            self.dim = d
            return
        ch, hh, ww = shape
        sh, sw = size
        rows = torch.arange(hh, device=device) * sh // hh
        cols = torch.arange(ww, device=device) * sw // ww
        chan = torch.arange(ch, device=device)
        of_pixel = (chan[:, None, None] * sh + rows[None, :, None]) * sw + cols[None, None, :]
        self.of_pixel = of_pixel.reshape(-1)
        self.dim = ch * sh * sw
        order = torch.argsort(self.of_pixel, stable=True)
        counts = torch.bincount(self.of_pixel, minlength=self.dim)
        width = int(counts.max())
        start = torch.cumsum(counts, 0) - counts
        slot = torch.arange(width, device=device)
        pos = (start[:, None] + slot[None, :].minimum(counts[:, None] - 1))
        self.pix = order[pos]
        self.valid = slot[None, :] < counts[:, None]

    @classmethod
    def identity(cls, x: torch.Tensor) -> "_Space":
        return cls(tuple(x.shape[1:]), None, x.device)

    def full(self, delta: torch.Tensor) -> torch.Tensor:
        return delta[:, self.of_pixel]

    def bounds(self, x0f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per coordinate, the range of ``delta`` over which at least one of its pixels moves."""
        v = x0f[:, self.pix]                                   # A x D' x s
        return -v.amax(2), (1 - v.amin(2))


def _estimate(oracle: Oracle, space: _Space, x0f: torch.Tensor, delta: torch.Tensor, lo: torch.Tensor,
              hi: torch.Tensor, coords: torch.Tensor, idx: torch.Tensor, y: torch.Tensor,
              target: torch.Tensor | None, c: torch.Tensor, kappa: float, h: torch.Tensor, *,
              centre: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
    """One oracle call: (the current point and) ``x +- h e_k`` for the ``b`` coordinates of each
    of the ``A`` rows. Returns the ``A x b`` gradient estimates and, with ``centre``, the
    answer at the current point (``pred``, ``margin``, ``f``) and whether the model's part of
    most differences was exactly zero (``flat``)."""
    a, b = coords.shape
    cur = (x0f + space.full(delta)).clamp_(0, 1)                              # A x D
    d_sel = delta.gather(1, coords)
    vp = (d_sel + h[:, None]).minimum(hi.gather(1, coords))
    vm = (d_sel - h[:, None]).maximum(lo.gather(1, coords))
    span = vp - vm
    pix = space.pix[coords]                                                  # A x b x s
    valid = space.valid[coords]
    x0p = x0f.gather(1, pix.reshape(a, -1)).reshape(pix.shape)
    xp, xm = (x0p + vp[..., None]).clamp(0, 1), (x0p + vm[..., None]).clamp(0, 1)
    rows_p = cur[:, None, :].repeat(1, b, 1).scatter_(2, pix, xp)
    rows_m = cur[:, None, :].repeat(1, b, 1).scatter_(2, pix, xm)
    parts = ([cur[:, None, :]] if centre else []) + [rows_p, rows_m]
    rows = torch.cat(parts, 1)                                               # A x R x D
    r = rows.shape[1]
    ans = oracle(rows.reshape(a * r, *space.shape), idx=idx.repeat_interleave(r))
    rep = lambda t: None if t is None else t.repeat_interleave(r)  # noqa: E731
    margin = margin_from_scores(ans, rep(y), rep(target), log=oracle.output != "logits").reshape(a, r)
    margin = margin.to(x0f.dtype)
    f = margin.clamp_min(-kappa)
    fp, fm = f[:, -2 * b:-b], f[:, -b:]
    dist = ((xp - x0p).square() - (xm - x0p).square()).mul_(valid).sum(2)   # exact distance part
    grad = (c[:, None] * (fp - fm) + dist) / span
    if not centre:
        return grad, None
    info = {"pred": oracle.labels(ans).reshape(a, r)[:, 0], "margin": margin[:, 0], "f": f[:, 0],
            "flat": (fp == fm).double().mean(1) > 0.5}
    return grad, info


def rows_per_pass(x: torch.Tensor) -> int:
    """Rows per forward pass of the oracle the attacks create: small on a CPU, where a small
    MNIST CNN runs 2-3x faster in passes of 128 rows than of 4096, the oracle's default elsewhere."""
    return _CPU_ROWS if x.device.type == "cpu" else 4096


# ---------------------------------------------------------------------------- the attack


def zoo(
    model: nn.Module | Oracle,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    max_queries: int | None = 20_000,
    c: float = 10.0,
    kappa: float = 0.0,
    lr: float = 0.01,
    coords_per_step: int = 128,
    h: float = 1e-4,
    betas: tuple[float, float] = (0.9, 0.999),
    binary_search_steps: int = 1,
    max_iter: int | None = None,
    abort_early: bool = True,
    attack_size: int | tuple[int, int] | None = None,
    target: torch.Tensor | None = None,
    seed: int = 0,
    progress: bool = True,
) -> "AttackResult":
    """ZOO-ADAM (Chen et al., AISec 2017, Algorithm 2): C&W L2 with finite-difference gradients.

    Pseudo-code, per sample (all samples advance together, one oracle call per iteration)::

        query x0 once; stop if it is already misclassified (success with 1 query)
        lower, upper, c = 0, 1e10, c
        repeat binary_search_steps times:
            M, v, T = 0                                   (ADAM restarts; delta carries over)
            for max_iter iterations (fewer if the budget ends or, with abort_early, the loss
            fell by less than 0.01% over the last max_iter // 10 iterations):
                B random coordinates; one call: x and x +- h e_i (2B + 1 queries)
                coordinate-wise ADAM step on each of them, projected onto the box
                keep x if adversarial (margin >= kappa) and closer than the best so far
            adversarial found: upper = min(upper, c) else lower = max(lower, c)
            c = (lower + upper) / 2 if upper < 1e10 else 10 c
        query the point after the last update (a leftover budget of 2-3 queries goes to
        delta + k * ADAM step, k = 1, 2: further steps along the moments, no new gradient)
        return the closest adversarial queried (x0 itself if none)

    Parameters
    ----------
    model : nn.Module or Oracle
        The classifier (eval mode, pixels in [0, 1], logits ``N x K``), queried only through a
        score oracle; or an :class:`Oracle` answering ``"scores"`` or ``"logits"`` (to share a
        budget, round the scores or add an output defense).
    x : Tensor
        ``N x C x H x W`` images in [0, 1] (``N x D`` features without ``attack_size``). Never modified.
    y : Tensor
        ``N`` int64 true labels.
    max_queries : int or None, default 20000
        Per-sample query budget (the oracle's; an :class:`Oracle` passed as ``model`` brings
        its own). An exhausted budget ends a sample cleanly. ``None``: unlimited (then give
        ``max_iter``).
    c : float, default 10
        First weight of ``f`` in ``||x - x0||^2 + c f(x)``; bisected per sample (tenfold while
        no adversarial is found) when ``binary_search_steps > 1``. The log-probability margin
        of a trained MNIST model is ~10-30, ``c = 10`` lets ``f`` lead at the start.
    kappa : float, default 0
        Confidence: ``f = max(margin, -kappa)``, an adversarial must beat every other class
        by ``kappa`` in log-probability (logits).
    lr : float, default 0.01
        ADAM step size ``eta`` (the paper's 0.01). A step moves a coordinate by about ``lr``,
        so small budgets need larger steps (Notes).
    coords_per_step : int, default 128
        ``B``, coordinates estimated and updated per iteration (the paper's batch of 128):
        ``2B + 1`` queries per iteration.
    h : float, default 1e-4
        Half-width of the symmetric difference (eq. 6). Flat-score fallback (not in the paper):
        when more than half of a sample's ``B`` differences of ``f`` are exactly zero (rounded
        scores, a staircase on the input, saturated outputs), that sample's ``h`` grows tenfold
        for the next iterations (up to 0.5).
    betas : (float, float), default (0.9, 0.999)
        ADAM's ``beta1, beta2`` (``epsilon = 1e-8``).
    binary_search_steps : int, default 1
        Optimisations with their own ``c`` (the perturbation carries over from one to the next,
        ADAM's moments restart).
    max_iter : int, optional
        Iterations per binary-search step. Default: the budget split evenly,
        ``(max_queries - 1) // (binary_search_steps * (2B + 1))``, and the last step runs on
        until the budget is spent (the last iteration uses fewer coordinates if need be).
    abort_early : bool, default True
        C&W's early abort of a binary-search step, per sample: every ``max_iter // 10``
        iterations, end the step if the loss fell by less than 0.01%; on the last step only
        once the sample has an adversarial (a failing sample keeps spending its budget).
    attack_size : int or (int, int), optional
        Attack-space dimension reduction (Section 3.5 of the paper): optimise ``delta`` on a
        ``C x h x w`` grid, upsampled to the image by nearest neighbour, ``x = clip(x0 +
        U(delta))``; each coordinate is then a block of pixels. ``None``: the pixels themselves.
    target : Tensor, optional
        ``N`` target labels (targeted attack).
    seed : int, default 0
        Seed of the private generator of the coordinate choices.
    progress : bool, default True
        A tqdm bar over the iterations.

    Returns
    -------
    AttackResult
        ``x_adv``: the closest adversarial example queried (``x`` itself where none was
        found); ``pred``: the oracle's answer on it; ``queries``: the oracle's count;
        ``iterations``: ZOO iterations per sample. ``extra``: ``"const"`` (the ``c`` that
        produced ``x_adv``, the last ``c`` tried for failures), ``"const_lower"``,
        ``"const_upper"`` (the final bracket), ``"h"`` (the final per-sample ``h``),
        ``"queries_to_success"`` (the oracle's count when the first adversarial was found, -1
        if none; 1 for samples misclassified from the start), ``"out_of_queries"``.

    Notes
    -----
    *Budget.* Every ADAM step moves a coordinate by about ``lr``, and one iteration touches
    ``B`` of the ``p`` coordinates, so the paper's ``lr = 0.01`` on a 28 x 28 digit needs
    thousands of iterations: on the zoo's MNIST ``cnn`` (8 test digits, 20,000 queries) it
    fools 25% of them at full resolution, 100% with ``attack_size=14`` (median 7,200 queries
    to success). Lab recipe: ``lr=0.1, c=10, attack_size=14`` fools the first 20 test digits
    within 1,500 queries each (median 1,029 to success, median L2 3.3;
    ``tests/test_zoo_attack.py``). More ``binary_search_steps`` and queries buy a smaller L2.
    A query budget below 5 leaves room for no iteration: only the clean query is asked.

    *Box.* The paper's ADAM update is projected onto the box; here the projection is on
    ``delta`` (for ``attack_size``, a block may move as long as one of its pixels can), and the
    finite differences are clipped to the box, i.e. one-sided at a saturated pixel. Not the
    ``tanh`` change of variables of the authors' code.

    *Not implemented:* importance sampling and the hierarchical (growing) attack space, which
    the paper uses for 299 x 299 ImageNet images; ZOO-Newton.

    Example
    -------
    >>> res = zoo(model, x, y, max_queries=1500, lr=0.1, c=10, attack_size=14)   # doctest: +SKIP
    >>> res.success_rate, res.norms(2).median(), res.queries.float().mean()       # doctest: +SKIP
    """
    max_queries = check_budget(max_queries)
    c0 = _number(c, "c", positive=True)
    kappa = _number(kappa, "kappa", minimum=0.0)
    lr = _number(lr, "lr", positive=True)
    h = _number(h, "h", positive=True)
    if h > _H_MAX:
        raise ValueError(f"h must be <= {_H_MAX} (a half-width in pixel units), got {h}")
    b1, b2 = _betas(betas)
    coords_per_step = _int(coords_per_step, "coords_per_step")
    binary_search_steps = _int(binary_search_steps, "binary_search_steps")
    if max_iter is not None:
        max_iter = _int(max_iter, "max_iter")
    oracle = as_oracle(model, x, y, allowed=("scores", "logits"), max_queries=max_queries, target=target,
                       batch_size=rows_per_pass(x))
    budget = oracle.max_queries
    if max_iter is None and budget is None:
        raise ValueError("give max_queries or max_iter: with neither the attack would never end")
    size = _attack_size(attack_size, x)

    n, dtype, dev = len(x), x.dtype, x.device
    x0f = x.detach().reshape(n, -1)
    space = _Space(tuple(x.shape[1:]), size, dev)
    dim = space.dim
    b_max = min(coords_per_step, dim)
    derived = max_iter is None                                 # then the last step runs until the budget ends
    if derived:
        max_iter = max(1, (budget - 1) // (binary_search_steps * (2 * b_max + 1)))
    gen = torch.Generator(device=dev).manual_seed(seed)

    clean = oracle(x)                                            # first, counted query
    check_num_classes(oracle, y, target)
    labels0 = oracle.labels(clean)
    adv0 = labels0 == target if target is not None else labels0 != y

    lo, hi = space.bounds(x0f)
    delta = torch.zeros(n, dim, dtype=dtype, device=dev)
    m, v = torch.zeros_like(delta), torch.zeros_like(delta)
    t = torch.zeros_like(delta)
    const = torch.full((n,), c0, dtype=dtype, device=dev)
    lower, upper = torch.zeros_like(const), torch.full_like(const, _NO_UPPER)
    hs = torch.full((n,), h, dtype=dtype, device=dev)
    best_l2 = torch.full((n,), math.inf, dtype=dtype, device=dev).masked_fill_(adv0, 0.0)
    best_adv, best_pred, best_const, last_const = x0f.clone(), labels0.clone(), const.clone(), const.clone()
    found = torch.zeros(n, dtype=torch.bool, device=dev)      # in the current binary-search step
    step_it = torch.zeros(n, dtype=torch.long, device=dev)
    bs_done = torch.zeros(n, dtype=torch.long, device=dev)
    prev = torch.full_like(const, math.inf)
    iterations = torch.zeros(n, dtype=torch.long, device=dev)
    q_success = torch.where(adv0, 1, -1).to(dev)            # oracle count at the first adversarial
    done = adv0.clone()
    check_every = max(1, max_iter // 10)

    def consider(rows: torch.Tensor, x_cur: torch.Tensor, pred: torch.Tensor, margin: torch.Tensor,
                 c_used: torch.Tensor) -> torch.Tensor:
        """Keep queried points that are adversarial (margin kappa) and closer than the best so far."""
        l2 = (x_cur - x0f[rows]).square().sum(1).sqrt()
        lab = y[rows] if target is None else target[rows]
        ok = (pred == lab if target is not None else pred != lab) & (margin <= -kappa)
        better = ok & (l2 < best_l2[rows])
        sel = rows[better]
        best_l2[sel], best_adv[sel] = l2[better], x_cur[better]
        best_pred[sel], best_const[sel] = pred[better], c_used[better]
        first = ok & (q_success[rows] < 0)
        q_success[rows[first]] = oracle.queries[rows[first].cpu()].to(dev)
        return ok

    def last_look(rows: torch.Tensor, count: torch.Tensor) -> None:
        """The point after a sample's last update has not been queried yet: ask it, and spend a
        budget too small for another iteration (``count`` <= 3 rows) on the next ADAM steps along
        the current moments, ``delta + k * step`` (k = 1, 2)."""
        dr = delta[rows]
        t_r = t[rows]
        m_hat = m[rows] / (1 - b1 ** t_r).clamp_min(1e-30)
        v_hat = v[rows] / (1 - b2 ** t_r).clamp_min(1e-30)
        step = torch.where(t_r > 0, -lr * m_hat / (v_hat.sqrt() + 1e-8), torch.zeros_like(dr))
        k = torch.arange(int(count.max()), device=dev)
        ask = k[None, :] < count[:, None]                                    # R x K
        cand = (dr[:, None, :] + k[None, :, None].to(dtype) * step[:, None, :])
        cand = cand.clamp(lo[rows][:, None, :]).minimum(hi[rows][:, None, :])[ask]
        owner = rows[:, None].expand_as(ask)[ask]
        x_c = (x0f[owner] + space.full(cand)).clamp(0, 1)
        ans = oracle(x_c.reshape(len(owner), *x.shape[1:]), idx=owner.cpu())
        lab = y[owner] if target is None else target[owner]
        margin = margin_from_scores(ans, y[owner], None if target is None else lab,
                                    log=oracle.output != "logits").to(dtype)
        c_used = torch.where(bs_done[owner] >= binary_search_steps, last_const[owner], const[owner])
        consider(owner, x_c, oracle.labels(ans), margin, c_used)

    bar = tqdm(total=binary_search_steps * max_iter, desc="zoo", leave=False, disable=not progress)
    while True:
        act = (~done).nonzero().squeeze(1)
        if len(act):
            left = oracle.remaining(act.cpu()).to(dev)
            steps_over = bs_done[act] >= binary_search_steps
            broke = (left < 4) & ~steps_over                  # no room for an iteration and its check
            ending = steps_over | broke
            look = ending & (left > 0) & (iterations[act] > 0)   # (no iteration: x0 itself, already asked)
            if look.any():
                last_look(act[look], torch.where(steps_over, 1, left.clamp_max(3))[look])
            done[act[ending]] = True
            act, left = act[~ending], left[~ending]
        if len(act) == 0:
            break
        b = int(min(b_max, (int(left.min()) - 2) // 2))       # leave one query to check the last update
        coords = torch.rand(len(act), dim, generator=gen, device=dev).argsort(1)[:, :b]
        d_act = delta[act]
        grad, info = _estimate(oracle, space, x0f[act], d_act, lo[act], hi[act], coords, act.cpu(), y[act],
                               None if target is None else target[act], const[act], kappa, hs[act], centre=True)
        # the current point: keep it if adversarial and closer
        x_cur = (x0f[act] + space.full(d_act)).clamp(0, 1)
        l2 = (x_cur - x0f[act]).square().sum(1)
        ok = consider(act, x_cur, info["pred"], info["margin"], const[act])
        found[act[ok]] = True
        # flat-score fallback: widen h where most differences saw no change of f
        flat = info["flat"] & ~ok
        hs[act[flat]] = (hs[act[flat]] * 10).clamp_max(_H_MAX)

        # coordinate-wise ADAM, projected onto the box
        m_a, v_a, t_a = m[act], v[act], t[act]
        mi = m_a.gather(1, coords).mul_(b1).add_(grad, alpha=1 - b1)
        vi = v_a.gather(1, coords).mul_(b2).addcmul_(grad, grad, value=1 - b2)
        ti = t_a.gather(1, coords) + 1
        step = lr * (mi / (1 - b1 ** ti)) / ((vi / (1 - b2 ** ti)).sqrt() + 1e-8)
        di = (d_act.gather(1, coords) - step).clamp(lo[act].gather(1, coords)).minimum(hi[act].gather(1, coords))
        delta[act] = d_act.scatter(1, coords, di)
        m[act], v[act], t[act] = m_a.scatter(1, coords, mi), v_a.scatter(1, coords, vi), t_a.scatter(1, coords, ti)

        # binary-search bookkeeping, per sample
        iterations[act] += 1
        step_it[act] += 1
        loss = l2 + const[act] * info["f"]
        last = bs_done[act] + 1 >= binary_search_steps
        end = (step_it[act] >= max_iter) & ~(last & derived)
        if abort_early:
            check = (step_it[act] - 1) % check_every == 0
            # a stalled step ends (and c moves) unless it is the last one and still unsuccessful
            stalled = check & (loss > 0.9999 * prev[act]) & (found[act] | ~last)
            prev[act[check]] = loss[check]
            end |= stalled
        fin = act[end]
        if len(fin):
            f_ok = found[fin]
            last_const[fin] = const[fin]
            upper[fin] = torch.where(f_ok, torch.minimum(upper[fin], const[fin]), upper[fin])
            lower[fin] = torch.where(f_ok, lower[fin], torch.maximum(lower[fin], const[fin]))
            const[fin] = torch.where(upper[fin] < _NO_UPPER, (lower[fin] + upper[fin]) / 2, const[fin] * 10)
            more = bs_done[fin] + 1 < binary_search_steps     # the last step keeps its moments for last_look
            reset = fin[more]
            m[reset], v[reset], t[reset] = 0.0, 0.0, 0.0
            found[fin], step_it[fin], prev[fin] = False, 0, math.inf
            bs_done[fin] += 1
        bar.update(1)
    bar.close()

    tried = torch.where(bs_done >= binary_search_steps, last_const, const)   # the c of the last step run
    best_const = torch.where(torch.isinf(best_l2), tried, best_const)         # never fooled: the last c tried
    x_adv = best_adv.reshape(x.shape).to(dtype)
    params = {"c": c0, "kappa": kappa, "lr": lr, "coords_per_step": coords_per_step, "h": h, "betas": (b1, b2),
              "binary_search_steps": binary_search_steps, "max_iter": max_iter, "abort_early": abort_early,
              "attack_size": size, "seed": seed}
    return finish(oracle, x, y, x_adv, best_pred, attack="zoo", params=params, target=target, iterations=iterations,
                  extra={"const": best_const, "const_lower": lower, "const_upper": upper, "h": hs,
                         "queries_to_success": q_success})


# ---------------------------------------------------------------------------- checks


def _number(value, name: str, *, minimum: float | None = None, positive: bool = False) -> float:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got {value!r}")
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum:g}, got {value}")
    return value


def _int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


def _betas(betas) -> tuple[float, float]:
    try:
        b1, b2 = (float(b) for b in betas)
    except (TypeError, ValueError):
        raise TypeError(f"betas must be two numbers (beta1, beta2), got {betas!r}") from None
    for name, b in (("beta1", b1), ("beta2", b2)):
        if not 0 <= b < 1:
            raise ValueError(f"betas: {name} must lie in [0, 1), got {b}")
    return b1, b2


def _attack_size(size, x: torch.Tensor) -> tuple[int, int] | None:
    if size is None:
        return None
    if x.dim() != 4:
        raise ValueError("attack_size needs images N x C x H x W")
    pair = (size, size) if isinstance(size, int) and not isinstance(size, bool) else size
    try:
        sh, sw = pair
    except (TypeError, ValueError):
        raise TypeError(f"attack_size must be an int or a pair (h, w), got {size!r}") from None
    hh, ww = x.shape[2:]
    for name, s, full in (("h", sh, hh), ("w", sw, ww)):
        if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= full:
            raise ValueError(f"attack_size {name} must be an int in 1..{full} (the image size), got {s!r}")
    return None if (sh, sw) == (hh, ww) else (sh, sw)
