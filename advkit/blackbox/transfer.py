"""Transferability matrices: adversarial examples crafted on one model (or an ensemble), tried on others.

Szegedy et al. (ICLR 2014) observed that adversarial examples transfer between models trained
separately; Papernot, McDaniel & Goodfellow ("Transferability in Machine Learning", 2016) and
Liu, Chen, Liu & Song ("Delving into Transferable Adversarial Examples and Black-box Attacks",
ICLR 2017) measure it as a source x target matrix, and Liu et al. show that examples crafted on
an *ensemble* (here: averaged logits) transfer better. Carlini & Wagner (IEEE S&P 2017, Sec.
VIII) raise the confidence ``kappa`` of their L2 attack to make its examples transfer.

Definition used in every cell::

    S(s, t) = { i : source s and target t both classify x_i correctly }
    rate(s, t) = |{ i in S(s, t) : argmax t(A_s(x_i)) != y_i }| / |S(s, t)|

where ``A_s`` is the attack run white-box on ``s`` (untargeted, against the true label). So the
diagonal ``rate(s, s)`` is the white-box success rate of the attack on ``s`` over the images
``s`` classifies correctly, and an image either model already misclassifies never counts as
transferred. ``rate`` is NaN where ``S(s, t)`` is empty.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..attacks.checks import check_eps, check_images, check_labels, check_model

ATTACKS = ("fgsm", "pgd", "cw")


class Ensemble(nn.Module):
    """Average of the logits of several classifiers (optionally weighted): ``sum_m w_m z_m(x) / sum_m w_m``.

    Liu et al. (ICLR 2017) attack such an ensemble to craft examples that transfer to a model
    outside it. The members keep their own modes; the ensemble reports eval mode if all are.
    """

    def __init__(self, models: Sequence[nn.Module], weights: Sequence[float] | None = None):
        super().__init__()
        models = list(models)
        if not models:
            raise ValueError("an Ensemble needs at least one model")
        for m in models:
            if not isinstance(m, nn.Module):
                raise TypeError(f"every member must be an nn.Module, got {type(m).__name__}")
        if weights is not None and (len(weights) != len(models) or any(w < 0 for w in weights) or sum(weights) <= 0):
            raise ValueError(f"weights must be {len(models)} non-negative numbers with a positive sum, got {weights!r}")
        self.members = nn.ModuleList(models)
        w = torch.ones(len(models)) if weights is None else torch.tensor([float(v) for v in weights])
        self.register_buffer("weights", w / w.sum())
        self.training = any(m.training for m in models)

    def train(self, mode: bool = True) -> Ensemble:
        for m in self.members:
            m.train(mode)
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = None
        for w, m in zip(self.weights, self.members):
            z = w * m(x)
            out = z if out is None else out + z
        return out


def transfer_matrix(
    sources: dict[str, nn.Module],
    targets: dict[str, nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    attack: str | Callable = "fgsm",
    eps: float = 0.3,
    ensembles: bool | Sequence[Sequence[str]] = False,
    kappa: float = 20.0,
    progress: bool = True,
    **attack_kwargs,
):
    """The transfer rate of adversarial examples from every source (and ensemble) to every target.

    Parameters
    ----------
    sources : dict[str, nn.Module]
        Models the examples are crafted on (white-box), by name, eval mode.
    targets : dict[str, nn.Module]
        Models they are tried on (asked for labels only). A model may be in both, giving the
        white-box diagonal.
    x : Tensor
        ``N x C x H x W`` images in [0, 1].
    y : Tensor
        ``N`` true labels.
    attack : {"fgsm", "pgd", "cw"} or callable, default "fgsm"
        :func:`advkit.attacks.fgsm` or :func:`advkit.attacks.pgd` at ``eps`` (Linf unless
        ``norm=`` is passed), or :func:`advkit.attacks.cw_l2` with ``confidence=kappa`` (a
        minimum-norm attack: ``eps`` is not used). A callable ``attack(model, x, y, **attack_kwargs)``
        returning an :class:`~advkit.attacks.AttackResult` (or the adversarial images).
    eps : float, default 0.3
        Budget of FGSM / PGD (passed as ``eps=``).
    ensembles : bool or list of name tuples, default False
        Extra source rows built by averaging logits (:class:`Ensemble`), named ``"a+b"``.
        ``True``: the ensemble of all sources and, with 3 or more sources, every leave-one-out
        ensemble (Liu et al.'s setting: attack the others, test on the one left out). A list
        such as ``[("lenet5", "fc500_150_10")]`` names them.
    kappa : float, default 20
        C&W's confidence for ``attack="cw"`` (Carlini & Wagner use large ``kappa`` for transfer).
    progress : bool, default True
        A tqdm bar over the source rows.
    **attack_kwargs
        Passed to the attack (e.g. ``eps_step=0.01, max_iter=40`` for PGD; ``max_iterations``,
        ``binary_search_steps`` for C&W).

    Returns
    -------
    pandas.DataFrame
        Rows: source names (then ensembles), columns: target names, cells: transfer rates in
        [0, 1] (see the module docstring). ``df.attrs`` holds ``"n"`` (a DataFrame of the
        sizes ``|S(s, t)|``), ``"white_box"`` (``{source: success rate on its own correct
        images}``), ``"attack"`` and ``"eps"``.

    Example
    -------
    >>> df = transfer_matrix({"lenet5": lenet, "fc": fc}, {"lenet5": lenet, "fc": fc, "ref": ref},
    ...                      x[:500], y[:500], attack="fgsm", eps=0.3, ensembles=True)   # doctest: +SKIP
    >>> df.round(2)                                                                      # doctest: +SKIP
    """
    import pandas as pd

    from ..attacks.cw import cw_l2
    from ..attacks.fgsm import fgsm
    from ..attacks.pgd import pgd

    check_images(x)
    check_labels(y, x)
    for kind, d in (("sources", sources), ("targets", targets)):
        if not isinstance(d, dict) or not d:
            raise ValueError(f"{kind} must be a non-empty dict name -> nn.Module")
        for name, m in d.items():
            if not isinstance(name, str):
                raise TypeError(f"{kind} keys must be str names, got {name!r}")
            check_model(m)
    if isinstance(attack, str):
        if attack not in ATTACKS:
            raise ValueError(f"attack must be one of {ATTACKS} or a callable, got {attack!r}")
        if attack != "cw":
            eps = check_eps(eps)
    elif not callable(attack):
        raise TypeError(f"attack must be a name in {ATTACKS} or a callable, got {type(attack).__name__}")

    rows: dict[str, nn.Module] = dict(sources)
    for combo in _ensembles(list(sources), ensembles):
        rows["+".join(combo)] = Ensemble([sources[c] for c in combo]).eval()

    def craft(m: nn.Module, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        if attack == "fgsm":
            return fgsm(m, xs, ys, eps=eps, **attack_kwargs).x_adv
        if attack == "pgd":
            return pgd(m, xs, ys, eps=eps, **attack_kwargs).x_adv
        if attack == "cw":
            return cw_l2(m, xs, ys, confidence=kappa, **attack_kwargs).x_adv
        out = attack(m, xs, ys, **attack_kwargs)
        out = getattr(out, "x_adv", out)
        if not isinstance(out, torch.Tensor) or out.shape != xs.shape:
            raise ValueError("a callable attack must return an AttackResult or adversarial images shaped like x")
        return out

    correct_t = {name: _labels(m, x) == y for name, m in targets.items()}
    rates = pd.DataFrame(index=list(rows), columns=list(targets), dtype=float)
    counts = pd.DataFrame(index=list(rows), columns=list(targets), dtype="Int64")
    white: dict[str, float] = {}
    for sname, smodel in tqdm(rows.items(), desc="transfer sources", leave=False, disable=not progress):
        ok_s = _labels(smodel, x) == y
        idx = ok_s.nonzero().squeeze(1)
        x_adv = x.detach().clone()
        if len(idx):
            x_adv[idx] = craft(smodel, x[idx], y[idx]).detach()
            white[sname] = (_labels(smodel, x_adv[idx]) != y[idx]).float().mean().item()
        else:
            white[sname] = float("nan")
        for tname, tmodel in targets.items():
            both = ok_s & correct_t[tname]
            k = int(both.sum())
            counts.loc[sname, tname] = k
            if k == 0:
                rates.loc[sname, tname] = float("nan")
                continue
            fooled = _labels(tmodel, x_adv[both]) != y[both]
            rates.loc[sname, tname] = fooled.float().mean().item()
    rates.attrs = {"n": counts, "white_box": white, "attack": attack if isinstance(attack, str) else
                   getattr(attack, "__name__", "callable"), "eps": None if attack == "cw" else eps}
    rates.index.name, rates.columns.name = "source", "target"
    return rates


def _ensembles(names: list[str], spec: bool | Sequence[Sequence[str]]) -> list[tuple[str, ...]]:
    if spec is False or spec is None:
        return []
    if spec is True:
        if len(names) < 2:
            raise ValueError("ensembles=True needs at least two sources")
        out = [tuple(names)]
        if len(names) >= 3:
            out += list(itertools.combinations(names, len(names) - 1))
        return out
    out = []
    for combo in spec:
        combo = (combo,) if isinstance(combo, str) else tuple(combo)
        unknown = [c for c in combo if c not in names]
        if unknown or len(combo) < 2:
            raise ValueError(f"each ensemble must name two or more of the sources {names}, got {combo!r}")
        out.append(combo)
    return out


@torch.no_grad()
def _labels(model: nn.Module, x: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
    return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])
