"""The (few-)pixel attack (Su, Vargas & Sakurai, "One Pixel Attack for Fooling Deep Neural
Networks", IEEE Transactions on Evolutionary Computation 2019).

An L0 attack with a score oracle: change at most ``pixels`` pixels (all channels of each), and
find which and to what by differential evolution (DE). A candidate is a vector of
``pixels`` tuples ``(row, col, v_1, ..., v_C)``; its fitness is the probability the model gives
the true class (untargeted, minimised) or ``-`` the target's probability (targeted). DE/rand/1
as in the paper (no crossover, mutation factor ``F = 0.5``, population 400, at most 100
generations)::

    population: P candidates, row ~ U[0, H), col ~ U[0, W), v ~ N(128/255, 127/255) clipped to [0, 1]
    evaluate them (P queries); stop if one is adversarial
    for g = 1 .. max_iter:
        child_i = cand_r1 + F (cand_r2 - cand_r3)     r1, r2, r3 distinct and != i, per child
                  (clipped to the bounds; row, col are floored to a pixel)
        evaluate all children (P queries); child_i replaces cand_i if its fitness is no worse
        stop as soon as one candidate is adversarial

The paper stops early on its Kaggle CIFAR-10 / ImageNet runs when the true class's probability
falls below a threshold; here a sample stops when its predicted label changes (untargeted) or
equals the target.

The untargeted fitness ``p_y`` is computed as ``1 - sum_{j != y} p_j``: the same order in exact
arithmetic (for scores that sum to 1), but a confident model's ``p_y`` rounds to 1.0 in float32
while the other classes' probabilities still tell candidates apart.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from tqdm.auto import tqdm

from .oracle import Oracle, as_oracle, check_budget, check_num_classes, finish
from .zoo_attack import rows_per_pass


def pixel(
    model: nn.Module | Oracle,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    pixels: int = 1,
    max_queries: int | None = None,
    popsize: int = 400,
    max_iter: int = 100,
    F: float = 0.5,
    target: torch.Tensor | None = None,
    seed: int = 0,
    progress: bool = True,
) -> "AttackResult":
    """Few-pixel attack by differential evolution (Su, Vargas & Sakurai, IEEE TEVC 2019).

    All active images and their whole populations are evaluated in one oracle call per
    generation; an image leaves as soon as one of its candidates is adversarial.

    Parameters
    ----------
    model : nn.Module or Oracle
        The classifier (eval mode, pixels in [0, 1], logits ``N x K``), queried only through a
        score oracle; or an :class:`Oracle` answering ``"scores"`` or ``"logits"`` (logits are
        turned into probabilities for the fitness).
    x : Tensor
        ``N x C x H x W`` images in [0, 1]. Never modified.
    y : Tensor
        ``N`` int64 true labels.
    pixels : int, default 1
        Number of pixels a candidate changes (the paper's 1, 3 and 5): each is ``(row, col,
        v_1..v_C)``, i.e. ``pixels * (2 + C)`` DE variables.
    max_queries : int, optional
        Per-sample query budget; ``None`` (default): the DE's own bound,
        ``1 + popsize * (max_iter + 1)``. A generation that does not fit evaluates only as
        many children as there are queries left (the others keep their parents).
    popsize : int, default 400
        Candidates per image (the paper's 400; at least 4). A generation costs ``popsize``
        queries per active image: on one CPU thread and an MNIST CNN, expect about a second per
        generation for 10 images; ``popsize=100, max_iter=50`` is a lab-sized run.
    max_iter : int, default 100
        Generations after the initial population (the paper's 100).
    F : float, default 0.5
        Mutation (scale) factor of DE/rand/1, in (0, 2].
    target : Tensor, optional
        ``N`` target labels (targeted attack: maximise the target's probability).
    seed : int, default 0
        Seed of the private generator (initial population and the choice of r1, r2, r3).
    progress : bool, default True
        A tqdm bar over the generations.

    Returns
    -------
    AttackResult
        ``x_adv``: the first adversarial candidate found (the fittest of its generation), or
        the fittest candidate for failures (``x`` itself for samples misclassified from the
        start); ``pred``: the oracle's answer on it; ``queries``: the oracle's count;
        ``iterations``: generations per sample. ``extra["pixels"]``: ``N x pixels x 2`` int64
        ``(row, col)`` positions the candidate writes (``-1`` where nothing was written; two
        tuples may name the same pixel, and a written value may equal the original, so
        ``x_adv`` differs from ``x`` in at most ``pixels`` positions, all listed here);
        ``extra["fitness"]``: the true-class probability (untargeted) or the target's
        probability (targeted) of ``x_adv``; ``extra["out_of_queries"]``.

    Example
    -------
    >>> res = pixel(model, x, y, pixels=1, popsize=100, max_iter=50)   # doctest: +SKIP
    >>> res.success_rate, res.extra["pixels"][res.success]            # doctest: +SKIP
    """
    pixels = _int(pixels, "pixels")
    popsize = _int(popsize, "popsize")
    if popsize < 4:
        raise ValueError(f"popsize must be >= 4 (DE/rand/1 draws three other candidates), got {popsize}")
    max_iter = _int(max_iter, "max_iter", minimum=0)
    try:
        F = float(F)
    except (TypeError, ValueError):
        raise TypeError(f"F must be a number, got {F!r}") from None
    if not (0 < F <= 2):
        raise ValueError(f"F (the DE mutation factor) must lie in (0, 2], got {F}")
    max_queries = check_budget(max_queries)
    oracle = as_oracle(model, x, y, allowed=("scores", "logits"), max_queries=max_queries, target=target,
                       batch_size=rows_per_pass(x))
    if x.dim() != 4:
        raise ValueError(f"the pixel attack needs images N x C x H x W, got shape {tuple(x.shape)}")
    if pixels > x.shape[2] * x.shape[3]:
        raise ValueError(f"pixels={pixels} exceeds the {x.shape[2] * x.shape[3]} pixels of an image")

    n, ch, hh, ww = x.shape
    dev, dtype = x.device, x.dtype
    x0 = x.detach()
    gen = torch.Generator(device=dev).manual_seed(seed)
    lab = y if target is None else target
    sign = 1.0 if target is None else -1.0                   # minimise sign * p_lab

    clean = oracle(x0)                                       # first, counted query
    check_num_classes(oracle, y, target)
    pred0 = oracle.labels(clean)
    adv0 = pred0 == target if target is not None else pred0 != y

    nvar = 2 + ch
    lo = torch.zeros(nvar, dtype=dtype, device=dev)
    hi = torch.tensor([hh, ww] + [1] * ch, dtype=dtype, device=dev)

    def fitness(ans: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``p_y`` (untargeted) or ``-p_t`` (targeted), minimised. ``p_y`` is computed as ``1 -
        sum_{j != y} p_j``: the same order in exact arithmetic, but a confident model's ``p_y``
        rounds to 1.0 in float32, where the others still differ."""
        p = (ans.double().softmax(1) if oracle.output == "logits" else ans.double())
        own = p.gather(1, labels[:, None]).squeeze(1)
        if target is None:
            own = 1 - p.scatter(1, labels[:, None], 0.0).sum(1)
        return sign * own

    def apply(sample: torch.Tensor, genome: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images of candidates ``genome`` (M x pixels x nvar) on samples ``sample``; positions M x pixels x 2."""
        img = x0[sample].clone()
        pos = genome[..., :2].floor().long()
        pos[..., 0].clamp_(0, hh - 1)
        pos[..., 1].clamp_(0, ww - 1)
        ar = torch.arange(len(sample), device=dev)
        for j in range(pixels):                              # later tuples overwrite earlier ones
            img[ar, :, pos[:, j, 0], pos[:, j, 1]] = genome[:, j, 2:].to(dtype)
        return img, pos

    pop = torch.empty(n, popsize, pixels, nvar, dtype=dtype, device=dev)
    pop[..., 0] = torch.rand(n, popsize, pixels, generator=gen, device=dev, dtype=dtype) * hh
    pop[..., 1] = torch.rand(n, popsize, pixels, generator=gen, device=dev, dtype=dtype) * ww
    pop[..., 2:] = (128 + 127 * torch.randn(n, popsize, pixels, ch, generator=gen, device=dev, dtype=dtype)) / 255
    pop[..., 2:].clamp_(0, 1)
    fit = torch.full((n, popsize), math.inf, dtype=torch.float64, device=dev)
    lbl = torch.full((n, popsize), -1, dtype=torch.long, device=dev)   # the oracle's label of each member

    x_adv, pred = x0.clone(), pred0.clone()
    best_fit = fitness(clean, lab)
    pos_out = torch.full((n, pixels, 2), -1, dtype=torch.long, device=dev)
    done = adv0.clone()
    iterations = torch.zeros(n, dtype=torch.long, device=dev)

    def evaluate(act: torch.Tensor, cand: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Query the candidates ``cand`` (A x P x pixels x nvar) of samples ``act``, as many as
        each sample's budget allows; returns fitness (inf where not asked), labels and positions."""
        a = len(act)
        left = oracle.remaining(act.cpu()).to(dev).clamp_max(popsize)
        ask = torch.arange(popsize, device=dev)[None, :] < left[:, None]       # A x P
        sample = act[:, None].expand(a, popsize)[ask]
        img, pos = apply(sample, cand[ask])
        f = torch.full((a, popsize), math.inf, dtype=torch.float64, device=dev)
        labels = torch.full((a, popsize), -1, dtype=torch.long, device=dev)
        if len(sample):
            ans = oracle(img, idx=sample.cpu())
            f[ask] = fitness(ans, lab[sample])
            labels[ask] = oracle.labels(ans)
        allpos = torch.full((a, popsize, pixels, 2), -1, dtype=torch.long, device=dev)
        allpos[ask] = pos
        return f, labels, allpos

    def settle(act: torch.Tensor, cand: torch.Tensor, f: torch.Tensor, labels: torch.Tensor,
               pos: torch.Tensor) -> None:
        """Samples with an adversarial candidate: keep the fittest one and stop."""
        t = lab[act][:, None]
        hit = (labels == t) if target is not None else (labels != t) & (labels >= 0)
        won = hit.any(1)
        if not won.any():
            return
        fw = torch.where(hit, f, math.inf)[won]
        k = fw.argmin(1)
        rows = act[won]
        img, _ = apply(rows, cand[won, k])
        x_adv[rows], pred[rows], best_fit[rows] = img, labels[won, k], fw.gather(1, k[:, None]).squeeze(1)
        pos_out[rows] = pos[won, k]
        done[rows] = True

    act = (~done).nonzero().squeeze(1)
    if len(act):
        f, labels, pos = evaluate(act, pop[act])
        fit[act], lbl[act] = f, labels
        settle(act, pop[act], f, labels, pos)

    bar = tqdm(total=max_iter, desc=f"pixel ({pixels})", leave=False, disable=not progress)
    for _ in range(max_iter):
        act = (~done).nonzero().squeeze(1)
        if len(act):
            act = act[oracle.remaining(act.cpu()).to(dev) > 0]
        if len(act) == 0:
            break
        a = len(act)
        r = _three_others(a, popsize, gen, dev)                           # A x P x 3
        p = pop[act]
        pick = lambda k: p.gather(1, r[..., k, None, None].expand(-1, -1, pixels, nvar))  # noqa: E731
        child = pick(0) + F * (pick(1) - pick(2))
        child = torch.maximum(torch.minimum(child, hi), lo)
        f, labels, pos = evaluate(act, child)
        iterations[act] += 1
        keep = f <= fit[act]
        pop[act] = torch.where(keep[..., None, None], child, p)
        fit[act] = torch.where(keep, f, fit[act])
        lbl[act] = torch.where(keep, labels, lbl[act])
        settle(act, child, f, labels, pos)
        bar.update(1)
    bar.close()

    # failures: the fittest candidate, with the label the oracle gave it
    fail = (~done).nonzero().squeeze(1)
    if len(fail):
        k = fit[fail].argmin(1)
        asked = torch.isfinite(fit[fail, k])
        fail, k = fail[asked], k[asked]
    if len(fail):
        img, pos = apply(fail, pop[fail, k])
        x_adv[fail], pos_out[fail], best_fit[fail], pred[fail] = img, pos, fit[fail, k], lbl[fail, k]
    params = {"pixels": pixels, "popsize": popsize, "max_iter": max_iter, "F": F, "seed": seed}
    return finish(oracle, x, y, x_adv, pred, attack="pixel", params=params, target=target, iterations=iterations,
                  extra={"pixels": pos_out, "fitness": sign * best_fit})


def _three_others(a: int, p: int, gen: torch.Generator, dev: torch.device) -> torch.Tensor:
    """For each of ``a x p`` candidates ``i``, three distinct indices in ``0..p-1`` other than ``i``."""
    i = torch.arange(p, device=dev).expand(a, p)
    excl = i[..., None]                                                     # sorted exclusions
    out = []
    for k in range(3):
        r = torch.randint(0, p - 1 - k, (a, p), generator=gen, device=dev)
        for e in range(excl.shape[-1]):                                     # skip the excluded, in order
            r = r + (r >= excl[..., e])
        out.append(r)
        excl = torch.sort(torch.cat([excl, r[..., None]], -1), -1).values
    return torch.stack(out, -1)


def _int(value, name: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value
