"""Rotation + translation, and the worst-of-k / grid spatial attack (Engstrom et al. 2019).

Engstrom, Tran, Tsipras, Schmidt & Madry, "Exploring the Landscape of Spatial Robustness",
ICML 2019 (arXiv:1712.02779, first titled "A Rotation and a Translation Suffice"). The attacker
picks, per image, a rotation ``r`` in ``[-30, 30]`` degrees and a translation ``(tx, ty)`` of at
most 3 pixels in each direction (MNIST and CIFAR-10; about 10% of the width on ImageNet) that
maximises the loss. No gradient is used: the loss landscape over these three parameters is
highly non-concave, so the paper's attacks are

* **grid** search over ``5 x 5 x 31`` points (``linspace(-3, 3, 5)`` pixels in ``x`` and ``y``,
  ``linspace(-30, 30, 31)`` degrees: 775 transformations), and
* **worst-of-k**: ``k = 10`` transformations drawn uniformly from the continuous box,
  independently per image, keeping the worst.

Selection rule (reference code ``MadryLab/adversarial_spatial``, ``spatial_attack.py``,
``perturb_grid``): a misclassifying transformation beats a correct one; among equals the
higher cross-entropy wins. (The reference keeps a single running maximum of the loss over all
transformations tried, so a misclassifying transformation whose loss is below that of an
earlier *correct* one is not chosen over an earlier misclassifying one; we apply the rule as
stated, lexicographically on (misclassified, loss).)

The transformation follows the reference's model (``resnet.py``: ``tf.contrib.image.rotate``
then ``tf.contrib.image.transform`` with ``[1, 0, -tx, 0, 1, -ty]``, bilinear, zero padding,
``pad_mode: constant``): rotate about the image centre, counter-clockwise for positive angles
(the convention of :func:`advkit.perturbations.rotate`), then shift the content ``tx`` pixels
right and ``ty`` pixels down; what comes from outside the image is black.

We write the transformation with ``torch.nn.functional.affine_grid``/``grid_sample`` rather
than Kornia: it is ten lines, runs batched with one angle and shift per image on any device, and
shares its coordinate convention with the thesis's fastai rotation; Kornia would add a
dependency for no new capability here.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from ..attacks.core import judge, prepare
from ..attacks.result import AttackResult
from .common import _check_batch, _generator, _levels

#: The paper's grid for MNIST and CIFAR-10 (reference ``config.json``: spatial_limits [3, 3, 30],
#: grid_granularity [5, 5, 31], random_tries 10).
MAX_TRANSLATION = 3.0
MAX_ROTATION = 30.0
NUM_TRANSLATIONS = 5
NUM_ROTATIONS = 31
WORST_OF_K = 10


def rotate_translate(x: torch.Tensor, degrees=0.0, tx=0.0, ty=0.0, *, padding_mode: str = "zeros") -> torch.Tensor:
    """Rotate each image by ``degrees`` about its centre, then shift it by ``(tx, ty)`` pixels.

    ``out(p) = x(R(p - t))`` in pixel coordinates centred on the image, with ``R`` the inverse
    rotation: positive ``degrees`` turn the content counter-clockwise on screen, positive ``tx``
    moves it right and positive ``ty`` down. Bilinear interpolation; ``padding_mode="zeros"``
    (the paper's) fills what comes from outside with black, ``"reflection"`` and ``"border"``
    are the alternatives. Integer shifts without rotation move pixels exactly.

    Parameters
    ----------
    x : Tensor
        ``N x C x H x W`` in [0, 1]; not modified.
    degrees, tx, ty : float or Tensor
        One value, or one per image (shape ``(N,)``).

    Returns
    -------
    Tensor
        Same shape, dtype and device, in [0, 1].
    """
    _check_batch(x)
    if padding_mode not in ("zeros", "reflection", "border"):
        raise ValueError(f"padding_mode must be 'zeros' (the paper's), 'reflection' or 'border', got {padding_mode!r}")
    n, _, h, w = x.shape
    a = _levels(degrees, n, x, "degrees") * (math.pi / 180)
    tx = _levels(tx, n, x, "tx")
    ty = _levels(ty, n, x, "ty")
    cos, sin = torch.cos(a), torch.sin(a)
    cos = torch.where(cos.abs() < 1e-12, torch.zeros_like(cos), cos)
    sin = torch.where(sin.abs() < 1e-12, torch.zeros_like(sin), sin)
    # pixel offsets from the centre: X = u * sx, Y = v * sy with align_corners=True
    sx, sy = (w - 1) / 2 if w > 1 else 1.0, (h - 1) / 2 if h > 1 else 1.0
    # input pixel = R (P - t), R = [[cos, -sin], [sin, cos]]; in normalised units u_in = X_in / sx
    theta = torch.empty(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = cos
    theta[:, 0, 1] = -sin * sy / sx
    theta[:, 1, 0] = sin * sx / sy
    theta[:, 1, 1] = cos
    theta[:, 0, 2] = -(cos * tx - sin * ty) / sx
    theta[:, 1, 2] = -(sin * tx + cos * ty) / sy
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=True)
    out = F.grid_sample(x, grid.to(x.device, x.dtype), mode="bilinear", padding_mode=padding_mode,
                        align_corners=True)
    return out.clamp_(0, 1)


def spatial_grid(*, max_rotation: float = MAX_ROTATION, max_translation: float = MAX_TRANSLATION,
                 num_rotations: int = NUM_ROTATIONS, num_translations: int = NUM_TRANSLATIONS) -> torch.Tensor:
    """The paper's grid as a ``K x 3`` tensor of ``(tx, ty, degrees)``, in the reference's order
    (``itertools.product`` over ``linspace(-l, l, g)`` for tx, ty, rotation)."""
    for name, v in (("num_rotations", num_rotations), ("num_translations", num_translations)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    for name, v in (("max_rotation", max_rotation), ("max_translation", max_translation)):
        if not math.isfinite(float(v)) or v < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    axes = [torch.linspace(-max_translation, max_translation, num_translations, dtype=torch.float64)
            if num_translations > 1 else torch.zeros(1, dtype=torch.float64)] * 2
    axes.append(torch.linspace(-max_rotation, max_rotation, num_rotations, dtype=torch.float64)
                if num_rotations > 1 else torch.zeros(1, dtype=torch.float64))
    return torch.tensor(list(itertools.product(*[a.tolist() for a in axes])), dtype=torch.float64)


@torch.no_grad()
def spatial_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    max_rotation: float = MAX_ROTATION,
    max_translation: float = MAX_TRANSLATION,
    num_rotations: int = NUM_ROTATIONS,
    num_translations: int = NUM_TRANSLATIONS,
    k: int | None = None,
    padding_mode: str = "zeros",
    target: torch.Tensor | None = None,
    seed: int = 0,
    progress: bool = False,
) -> AttackResult:
    """Worst-of-k or grid-search rotation + translation attack (Engstrom et al., ICML 2019).

    For every image, evaluate the loss ``J`` of the model on ``rotate_translate(x, r, tx, ty)``
    for each candidate ``(tx, ty, r)`` and keep the worst one: a candidate that fools the model
    beats one that does not, and among equals the larger ``J`` wins. ``J`` is the cross-entropy
    of the true label (untargeted) or minus that of the target (targeted).

    Parameters
    ----------
    model : nn.Module
        Classifier in eval mode on pixels in [0, 1].
    x : Tensor
        ``N x C x H x W`` in [0, 1]; never modified.
    y : Tensor
        ``N`` true labels.
    max_rotation : float
        Degrees; rotations lie in ``[-max_rotation, max_rotation]`` (paper: 30).
    max_translation : float
        Pixels in each direction (paper: 3 on 28- and 32-pixel images; use about 10% of the
        width for larger images, e.g. 16 on Imagenette-160).
    num_rotations, num_translations : int
        Grid resolution (paper: 31 and 5, i.e. 775 candidates). Ignored when ``k`` is given.
    k : int, optional
        Worst-of-k instead of the grid: ``k`` candidates drawn uniformly from the continuous box,
        independently per image (paper: ``k = 10``).
    padding_mode : {"zeros", "reflection", "border"}
        Fill for what rotates or shifts in from outside (paper: zeros).
    target : Tensor, optional
        Target labels: success means ``pred == target``.
    seed : int
        Seeds the worst-of-k draws.
    progress : bool
        Show a ``tqdm`` bar over the candidates.

    Returns
    -------
    AttackResult
        ``x_adv`` (the worst transformation of each image), ``success``, ``queries`` (model
        evaluations per image: the number of candidates), and ``extra["transform"]``, the chosen
        ``(tx, ty, degrees)`` per image (``N x 3``), so that
        ``rotate_translate(x, t[:, 2], t[:, 0], t[:, 1])`` reproduces ``x_adv``.

    Notes
    -----
    ``x_adv`` is not close to ``x`` in any Lp norm: this is a different threat model from the
    Lp attacks, which is the paper's point. ART's ``SpatialTransformation`` picks one
    transformation for the whole batch; Foolbox's ``SpatialAttack`` keeps the first fooling
    candidate (translating before rotating); this follows the per-image max-loss rule of the
    authors' code.
    """
    prepare(model, x, y, target)
    _check_batch(x)
    n = len(x)
    if k is not None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k (the number of random candidates per image) must be a positive int or None, got {k!r}")
        gen = _generator(seed, None)
        lim = torch.tensor([max_translation, max_translation, max_rotation], dtype=torch.float64)
        spatial_grid(max_rotation=max_rotation, max_translation=max_translation)  # validates the limits
        cands = (torch.rand(k, n, 3, generator=gen, dtype=torch.float64) * 2 - 1) * lim  # k x N x 3
    else:
        grid = spatial_grid(max_rotation=max_rotation, max_translation=max_translation,
                            num_rotations=num_rotations, num_translations=num_translations)
        cands = grid.unsqueeze(1).expand(-1, n, 3)
    labels = target if target is not None else y
    sign = -1.0 if target is not None else 1.0

    best_x = x.clone()
    best_t = torch.zeros(n, 3, dtype=torch.float64)
    best_loss = torch.full((n,), -math.inf, device=x.device)
    best_ok = torch.zeros(n, dtype=torch.bool, device=x.device)
    for t in tqdm(cands, desc="spatial attack", disable=not progress, leave=False):
        xt = rotate_translate(x, t[:, 2], t[:, 0], t[:, 1], padding_mode=padding_mode)
        logits = model(xt)
        loss = sign * F.cross_entropy(logits, labels, reduction="none")
        pred = logits.argmax(1)
        ok = pred == target if target is not None else pred != y
        better = (ok & ~best_ok) | ((ok == best_ok) & (loss > best_loss))
        best_x[better] = xt[better]
        best_t[better.cpu()] = t[better.cpu()]
        best_loss = torch.where(better, loss, best_loss)
        best_ok = best_ok | ok
    pred, success = judge(model, best_x, y, target)
    params = {"max_rotation": max_rotation, "max_translation": max_translation, "padding_mode": padding_mode,
              "k": k, "num_rotations": None if k else num_rotations, "num_translations": None if k else num_translations,
              "seed": seed if k else None}
    return AttackResult(
        x_adv=best_x, success=success, x=x, y=y, pred=pred, target=target,
        attack="worst_of_k" if k else "spatial_grid", params=params,
        queries=torch.full((n,), len(cands), dtype=torch.long, device=x.device),
        extra={"transform": best_t.to(torch.float32)},
    )
