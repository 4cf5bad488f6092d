"""Reading perturbation results: corruption sweeps, does Lp distance track accuracy, and a
spatial attack's budget curve.

* :func:`corruption_sweep` - MNIST-C or ImageNet-C on a batch, evaluated for several models at
  once (the corruption is computed once), one row per (model, corruption, severity) with the
  same columns as :func:`~advkit.perturbations.sweep`; :func:`errors_by_corruption` turns the
  rows into the ``{corruption: [error per severity]}`` mappings that
  :func:`~advkit.perturbations.mce` takes.
* :func:`rank_correlation` and :func:`discordant_pairs` - the thesis's observation that "the
  Lp distance of a perturbation does not tell how much accuracy it costs", as numbers: the
  Spearman (or Kendall) rank correlation between a distance and the accuracy over a set of
  perturbation levels (``-1`` if the distance ordered the levels exactly by their cost), and the
  pairs of levels whose *smaller* distance costs *more* accuracy.
* :func:`spatial_budget` - random rotations/translations against worst-of-k at the same number
  of model evaluations (Engstrom et al., ICML 2019, Section 4: the average over random draws
  is the "common perturbation", the worst of the same draws the attack).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..attacks.checks import check_labels, check_model
from ..metrics import lp_norm
from .common import _check_batch, _generator, to_rgb
from .corruption_metrics import IMAGENET_C_CORRUPTIONS
from .imagenet_corruptions import IMAGENET_C_NOT_IMPLEMENTED, imagenet_c
from .mnist_corruptions import MNIST_C_CORRUPTIONS, MNIST_C_NOT_IMPLEMENTED, mnist_c
from .spatial import MAX_ROTATION, MAX_TRANSLATION, rotate_translate

_SUITES = ("mnist_c", "imagenet_c")


def _models(models) -> dict[str, nn.Module]:
    if isinstance(models, nn.Module):
        models = {"model": models}
    if not isinstance(models, Mapping) or not models:
        raise TypeError("models must be an nn.Module or a non-empty {name: nn.Module} mapping")
    for name, m in models.items():
        if not isinstance(m, nn.Module):
            raise TypeError(f"models[{name!r}] is a {type(m).__name__}, not an nn.Module")
        check_model(m)
    return dict(models)


@torch.no_grad()
def corruption_sweep(
    models: nn.Module | Mapping[str, nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    suite: str = "mnist_c",
    names: Sequence[str] | None = None,
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    seed: int = 0,
    before_model: Callable[[torch.Tensor], torch.Tensor] | None = None,
    distance_as_rgb: bool = False,
    batch_size: int = 1000,
    progress: bool = True,
) -> list[dict]:
    """Corrupt ``x`` with every corruption of a suite and evaluate every model on it.

    Parameters
    ----------
    models : nn.Module or mapping
        One classifier, or ``{name: classifier}`` (eval mode, pixels in [0, 1]); the corrupted
        batch is computed once and shown to each.
    x : Tensor
        ``N x C x H x W`` clean images in [0, 1]: grey ``N x 1 x 28 x 28`` for ``"mnist_c"``,
        RGB for ``"imagenet_c"`` (``to_rgb(x)`` for grey images, with ``before_model=to_grey``).
    y : Tensor
        ``N`` true labels.
    suite : {"mnist_c", "imagenet_c"}
        MNIST-C (Mu & Gilmer 2019: one fixed severity per corruption; the row's ``severity`` is
        ``None``) or ImageNet-C (Hendrycks & Dietterich 2019, ``severities`` 1..5).
    names : sequence of str, optional
        Corruptions to run; default every implemented one of the suite, in the paper's order
        (the not-implemented ones, e.g. ImageNet-C ``frost``, are skipped).
    severities : sequence of int
        ImageNet-C severities (ignored for MNIST-C).
    seed : int
        Seed of the random corruptions (the same for every severity).
    before_model : callable, optional
        Applied to the corrupted images before the models (not before the distances).
    distance_as_rgb : bool
        Measure the distances between ``to_rgb`` of the corrupted and the clean images: the
        space in which ``sweep(model, to_rgb(x), y, before_model=to_grey)`` measures the
        thesis's perturbations of grey images, so that both tables share one scale (for grey
        images: ``L1 x 3``, ``L2 x sqrt(3)``, ``Linf`` unchanged).
    batch_size : int
        Images per forward pass.
    progress : bool
        A ``tqdm`` bar over the corruptions.

    Returns
    -------
    list of dict
        Keys ``model``, ``perturbation`` (the corruption), ``severity``, ``n``, ``accuracy``,
        ``error`` (``1 - accuracy``), ``mean_true_prob``, ``l1``, ``l2``, ``linf`` (means over
        images).

    Example
    -------
    >>> rows = corruption_sweep({"lenet5": lenet, "cnn": cnn}, x, y)            # doctest: +SKIP
    >>> mce(errors_by_corruption(rows, "cnn"), errors_by_corruption(rows, "lenet5"))  # doctest: +SKIP
    """
    models = _models(models)
    _check_batch(x)
    check_labels(y, x)
    if suite not in _SUITES:
        raise ValueError(f"suite must be one of {_SUITES}, got {suite!r}")
    all_names, missing = ((MNIST_C_CORRUPTIONS, MNIST_C_NOT_IMPLEMENTED) if suite == "mnist_c"
                          else (IMAGENET_C_CORRUPTIONS, IMAGENET_C_NOT_IMPLEMENTED))
    if names is None:
        names = [c for c in all_names if c not in missing]
    names = list(names)
    unknown = [c for c in names if c not in all_names]
    if unknown:
        raise ValueError(f"unknown {suite} corruptions {unknown}; choose from {', '.join(all_names)}")
    skipped = [c for c in names if c in missing]
    if skipped:
        raise NotImplementedError(f"{suite} {skipped} not implemented in advkit; leave them out of names "
                                  "(names=None runs every implemented one)")
    if suite == "imagenet_c":
        severities = list(severities)
        if not severities:
            raise ValueError("severities is empty; ImageNet-C has severities 1..5")
    jobs = ([(c, None) for c in names] if suite == "mnist_c"
            else [(c, s) for c in names for s in severities])
    rows = []
    for c, s in tqdm(jobs, desc=suite, disable=not progress, leave=False):
        xc = mnist_c(x, c, seed=seed) if s is None else imagenet_c(x, c, s, seed=seed)
        a, b = (to_rgb(xc), to_rgb(x)) if distance_as_rgb else (xc, x)
        d = a - b
        norms = {k: lp_norm(d, p).mean().item() for k, p in (("l1", 1), ("l2", 2), ("linf", math.inf))}
        xin = before_model(xc) if before_model is not None else xc
        for mname, model in models.items():
            correct, prob = 0, 0.0
            for i in range(0, len(x), batch_size):
                logits = model(xin[i:i + batch_size])
                yb = y[i:i + batch_size]
                correct += (logits.argmax(1) == yb).sum().item()
                prob += logits.softmax(1).gather(1, yb[:, None]).sum().item()
            acc = correct / len(x)
            rows.append({"model": mname, "perturbation": c, "severity": s, "n": len(x), "accuracy": acc,
                         "error": 1 - acc, "mean_true_prob": prob / len(x), **norms})
    return rows


def errors_by_corruption(rows: Sequence[Mapping], model: str | None = None) -> dict[str, list[float]]:
    """``{corruption: [error at each severity, in row order]}`` of one model's
    :func:`corruption_sweep` rows: the input of :func:`~advkit.perturbations.mce`."""
    out: dict[str, list[float]] = {}
    for r in rows:
        if model is None or r.get("model") == model:
            out.setdefault(r["perturbation"], []).append(float(r["error"]))
    if not out:
        have = sorted({str(r.get("model")) for r in rows})
        raise ValueError(f"no rows for model {model!r}; the rows hold models {have}")
    return out


# --------------------------------------------------------------------------- distance vs accuracy

def _column(rows: Sequence[Mapping], key: str) -> list[float]:
    if not rows:
        raise ValueError("rows is empty: pass the rows of sweep() or corruption_sweep()")
    vals = []
    for i, r in enumerate(rows):
        if key not in r:
            raise KeyError(f"row {i} has no {key!r}; it has {sorted(r)}")
        v = float(r[key])
        if not math.isfinite(v):
            raise ValueError(f"row {i}: {key} = {v} is not finite")
        vals.append(v)
    return vals


def rank_correlation(rows: Sequence[Mapping], distance: str = "l2", metric: str = "accuracy", *,
                     method: str = "spearman") -> dict[str, float]:
    """Rank correlation between a distance and a metric over perturbation levels.

    Spearman's ``rho`` is Pearson's correlation of the ranks (ties get their average rank; with
    no ties ``rho = 1 - 6 sum d_i^2 / (n (n^2 - 1))``); Kendall's ``tau_b`` counts concordant
    minus discordant pairs. If a larger distance always cost more accuracy, the correlation
    between distance and accuracy would be ``-1``; the thesis's observation is that it is not.
    Computed with :func:`scipy.stats.spearmanr` / :func:`scipy.stats.kendalltau`.

    Parameters
    ----------
    rows : sequence of mapping
        One row per level, e.g. from :func:`~advkit.perturbations.sweep`.
    distance, metric : str
        Row keys, e.g. ``"l1"``, ``"l2"``, ``"linf"`` and ``"accuracy"`` or ``"mean_true_prob"``.
    method : {"spearman", "kendall"}

    Returns
    -------
    dict
        ``rho`` (the correlation), ``p_value`` (two-sided, for no association; levels are not
        independent samples, so read it as a guide only) and ``n``.
    """
    from scipy import stats

    if method not in ("spearman", "kendall"):
        raise ValueError(f"method must be 'spearman' or 'kendall', got {method!r}")
    a, b = _column(rows, distance), _column(rows, metric)
    if len(a) < 3:
        raise ValueError(f"a rank correlation needs at least 3 rows, got {len(a)}")
    if len(set(a)) == 1 or len(set(b)) == 1:
        raise ValueError(f"{distance if len(set(a)) == 1 else metric} is constant over the rows: "
                         "the correlation is undefined")
    res = stats.spearmanr(a, b) if method == "spearman" else stats.kendalltau(a, b)
    return {"rho": float(res.statistic), "p_value": float(res.pvalue), "n": len(a)}


def _label(r: Mapping, keys: Sequence[str]) -> str:
    parts = []
    for k in keys:
        v = r.get(k)
        if v is None:
            continue
        parts.append(f"{v:g}" if isinstance(v, float) else str(v))
    return " ".join(parts)


def discordant_pairs(rows: Sequence[Mapping], distance: str = "l2", metric: str = "accuracy", *,
                     min_gap: float = 0.0, z: float | None = None,
                     label: Sequence[str] = ("model", "perturbation", "level", "severity")) -> list[dict]:
    """Pairs of levels where the *smaller* distance costs *more*: ``d_a < d_b`` and ``m_a < m_b``.

    For accuracy (higher is better) such a pair contradicts "a larger Lp distance means a
    stronger perturbation". Pairs are sorted by the metric gap ``m_b - m_a``, largest first,
    then by the distance ratio ``d_b / d_a``.

    Parameters
    ----------
    rows : sequence of mapping
        One row per level (``sweep``, ``corruption_sweep`` or a mix of both).
    distance, metric : str
        Row keys.
    min_gap : float
        Keep only pairs whose gap exceeds it.
    z : float, optional
        Keep only pairs whose gap exceeds ``z`` standard errors of the difference of two
        proportions, ``z * sqrt(m_a (1 - m_a) / n_a + m_b (1 - m_b) / n_b)`` (the unpooled
        two-proportion z-test; ``z = 2`` is about the 95% level), with ``n`` the rows' ``n``
        (the images each accuracy was measured on), so that a gap within noise is not a pair.
        Needs a metric in [0, 1] and an ``n`` in every row.
    label : sequence of str
        Row keys joined into each level's label (missing or ``None`` ones are left out).

    Returns
    -------
    list of dict
        ``small`` and ``large`` (labels), ``small_index`` and ``large_index`` (positions in
        ``rows``), ``small_distance``, ``large_distance``,
        ``small_metric``, ``large_metric``, ``gap`` and ``ratio``; empty when the distance
        orders the levels by their cost.
    """
    if min_gap < 0:
        raise ValueError(f"min_gap must be >= 0, got {min_gap!r}")
    d, m = _column(rows, distance), _column(rows, metric)
    var = [0.0] * len(rows)
    if z is not None:
        if not math.isfinite(z) or z < 0:
            raise ValueError(f"z must be a finite number >= 0, got {z!r}")
        ns = _column(rows, "n")
        if any(v < 0 or v > 1 for v in m) or any(k < 1 for k in ns):
            raise ValueError(f"z needs {metric!r} in [0, 1] (a proportion such as accuracy) and n >= 1 in every row")
        var = [p * (1 - p) / k for p, k in zip(m, ns)]
    out = []
    for i in range(len(rows)):
        for j in range(len(rows)):
            if d[i] < d[j] and m[i] < m[j] and m[j] - m[i] > min_gap and \
                    (z is None or m[j] - m[i] > z * math.sqrt(var[i] + var[j])):
                out.append({"small": _label(rows[i], label), "large": _label(rows[j], label),
                            "small_index": i, "large_index": j,
                            "small_distance": d[i], "large_distance": d[j],
                            "small_metric": m[i], "large_metric": m[j], "gap": m[j] - m[i],
                            "ratio": d[j] / d[i] if d[i] > 0 else math.inf})
    out.sort(key=lambda p: (-p["gap"], -p["ratio"]))
    return out


# --------------------------------------------------------------------------- spatial budget

@torch.no_grad()
def spatial_budget(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    k: int = 10,
    max_rotation: float = MAX_ROTATION,
    max_translation: float = MAX_TRANSLATION,
    padding_mode: str = "zeros",
    seed: int = 0,
    progress: bool = False,
) -> dict[str, list[float]]:
    """Random transformations against worst-of-j, for every budget ``j = 1..k``, from one set of draws.

    Draws ``k`` rotations/translations per image uniformly from
    ``[-max_translation, max_translation]^2 x [-max_rotation, max_rotation]`` exactly as
    :func:`~advkit.perturbations.spatial_attack` with ``k`` and ``seed`` does (the first ``j``
    draws are those of ``spatial_attack(k=j, seed=seed)``), and classifies every transformed
    image once. With ``c_{t,i}`` = 1 when draw ``t`` of image ``i`` is classified correctly:

    * **random** (a common perturbation): accuracy ``mean_{t <= j, i} c_{t,i}``, the expected
      accuracy under one random transformation (estimated on ``j`` draws);
    * **worst-of-j** (the attack): accuracy ``mean_i min_{t <= j} c_{t,i}``, the same draws,
      but an image counts as robust only if none of them fools the model.

    Both spend ``j`` model evaluations per image.

    Returns
    -------
    dict
        ``k`` (``[1, ..., k]``), ``random_accuracy`` and ``worst_of_k_accuracy`` (lists over
        the budgets), and ``correct`` (the ``k x N`` bool tensor ``c``).
    """
    check_model(model)
    _check_batch(x)
    check_labels(y, x)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int (draws per image), got {k!r}")
    for name, v in (("max_rotation", max_rotation), ("max_translation", max_translation)):
        if not math.isfinite(float(v)) or v < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    n = len(x)
    gen = _generator(seed, None)
    lim = torch.tensor([max_translation, max_translation, max_rotation], dtype=torch.float64)
    cands = (torch.rand(k, n, 3, generator=gen, dtype=torch.float64) * 2 - 1) * lim  # as spatial_attack
    correct = torch.zeros(k, n, dtype=torch.bool)
    for t in tqdm(range(k), desc="random transformations", disable=not progress, leave=False):
        c = cands[t]
        xt = rotate_translate(x, c[:, 2], c[:, 0], c[:, 1], padding_mode=padding_mode)
        correct[t] = (model(xt).argmax(1) == y).cpu()
    cf = correct.float()
    budgets = list(range(1, k + 1))
    rand = [cf[:j].mean().item() for j in budgets]
    worst = [correct[:j].all(0).float().mean().item() for j in budgets]
    return {"k": budgets, "random_accuracy": rand, "worst_of_k_accuracy": worst, "correct": correct}
