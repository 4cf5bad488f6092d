"""Expectation over Transformation (Athalye, Engstrom, Ilyas & Kwok, "Synthesizing Robust
Adversarial Examples", ICML 2018).

A randomised defense (a random rotation, shift, blur or noise applied to every input before the
classifier) gives a plain gradient attack a different model at every step, and its
adversarial examples often fail on the next draw. EOT attacks the *expected* loss over the
transformation distribution ``T`` instead, with the gradient of the expectation estimated by
``samples`` draws per step::

    delta_0 = 0
    for s = 0, ..., steps - 1:
        g       = 1/S * sum_{j=1..S} grad_delta J( f(t_j(x + delta_s)), y ),    t_j ~ T   (fresh draws)
        delta   = Proj_eps( delta_s + step_size * dir(g) )       dir, Proj: as in advkit.attacks.pgd
        delta_{s+1} = clip(x + delta, 0, 1) - x
    x_adv = x + delta_steps

``J`` is PGD's objective (cross-entropy of ``y``, or minus that of ``target``; or the C&W margin).
With ``samples=1`` and the identity transformation this is exactly :func:`advkit.attacks.pgd`
from ``x`` (no random start, no early stop). Athalye et al. optimise a Lagrangian with a
distance penalty; here, as in most EOT evaluations of randomised defenses, the distance is a
hard Linf / L2 budget (PGD's projection).

EOT is a **white-box** attack: it differentiates ``source`` (default ``model``) through the
transformations, so the transformations must be differentiable torch operations
(:func:`random_transform` builds rotations and translations with ``affine_grid`` /
``grid_sample``, Gaussian blur with ``conv2d``, brightness and Gaussian noise by addition).
A transformation is any callable ``t(x, generator) -> x`` that draws its own random parameters,
independently for every row of ``x``, from the ``torch.Generator`` it is given.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from ..attacks.checks import check_eps, check_images, check_labels, check_model, check_norm
from ..attacks.core import prepare
from ..attacks.result import AttackResult

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
KINDS = ("rotation", "translation", "scale", "brightness", "noise", "blur")


def identity(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The identity transformation (EOT with it is PGD)."""
    return x


class RandomTransform:
    """A seeded, differentiable distribution of image transformations (see :func:`random_transform`)."""

    def __init__(self, kind: Sequence[str], *, angle: float, shift: float, scale: float, brightness: float,
                 noise_std: float, blur_sigma: tuple[float, float], interpolation: str = "bilinear"):
        self.kind = tuple(kind)
        self.interpolation = interpolation
        self.angle, self.shift, self.scale = float(angle), float(shift), float(scale)
        self.brightness, self.noise_std = float(brightness), float(noise_std)
        self.blur_sigma = (float(blur_sigma[0]), float(blur_sigma[1]))

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"random transformations need images N x C x H x W, got shape {tuple(x.shape)}")
        n, _, h, w = x.shape

        def uniform(lo: float, hi: float) -> torch.Tensor:
            return (lo + (hi - lo) * torch.rand(n, generator=generator)).to(x.device, x.dtype)

        out = x
        if {"rotation", "translation", "scale"} & set(self.kind):
            a = uniform(-self.angle, self.angle) * (math.pi / 180) if "rotation" in self.kind else torch.zeros(n).to(x)
            s = uniform(1 - self.scale, 1 + self.scale) if "scale" in self.kind else torch.ones(n).to(x)
            if "translation" in self.kind:
                tx, ty = uniform(-self.shift, self.shift) * (2 / w), uniform(-self.shift, self.shift) * (2 / h)
            else:
                tx = ty = torch.zeros(n).to(x)
            cos, sin = torch.cos(a) / s, torch.sin(a) / s  # the grid maps output pixels to input pixels
            theta = torch.stack([torch.stack([cos, -sin * h / w, tx], 1),
                                 torch.stack([sin * w / h, cos, ty], 1)], 1)
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            out = F.grid_sample(out, grid, mode=self.interpolation, padding_mode="zeros", align_corners=False)
        if "blur" in self.kind:
            out = _gaussian_blur(out, uniform(*self.blur_sigma), self.blur_sigma[1])
        if "brightness" in self.kind:
            out = out + uniform(-self.brightness, self.brightness).view(n, 1, 1, 1)
        if "noise" in self.kind:
            out = out + self.noise_std * torch.randn(x.shape, generator=generator).to(x)
        return out.clamp(0, 1)

    def __repr__(self) -> str:
        parts = {"rotation": f"angle=±{self.angle:g}°", "translation": f"shift=±{self.shift:g}px",
                 "scale": f"scale=1±{self.scale:g}", "brightness": f"brightness=±{self.brightness:g}",
                 "noise": f"noise_std={self.noise_std:g}", "blur": f"blur_sigma={self.blur_sigma}"}
        return f"RandomTransform({', '.join(parts[k] for k in self.kind)})"


def random_transform(kind: str | Sequence[str] = ("rotation", "translation", "noise"), *, angle: float = 30.0,
                     shift: float = 3.0, scale: float = 0.1, brightness: float = 0.1, noise_std: float = 0.1,
                     blur_sigma: tuple[float, float] = (0.5, 1.5), interpolation: str = "bilinear"
                     ) -> RandomTransform:
    """A distribution of random transformations, differentiable in the image, seeded by the caller.

    Every row gets its own random parameters. The pieces, applied in this order whatever the
    order of ``kind`` (the geometric ones as a single bilinear resampling, zeros outside):

    * ``"rotation"``: angle ``~ U(-angle, angle)`` degrees, about the image centre;
    * ``"translation"``: shifts ``~ U(-shift, shift)`` pixels, horizontally and vertically;
    * ``"scale"``: zoom ``~ U(1 - scale, 1 + scale)``;
    * ``"blur"``: Gaussian blur with ``sigma ~ U(*blur_sigma)`` pixels (separable ``conv2d``);
    * ``"brightness"``: ``+ b``, ``b ~ U(-brightness, brightness)``;
    * ``"noise"``: ``+ noise_std * N(0, 1)`` per pixel;

    and the result is clipped to [0, 1]. ``interpolation`` ("bilinear" or "nearest", as ART's
    ``EoTImageRotationPyTorch``) is the resampling of the geometric part; both are
    differentiable in the image (not in the angle).

    Returns
    -------
    RandomTransform
        A callable ``t(x, generator) -> x``: pass it to :func:`eot` or :class:`RandomizedModel`.

    Example
    -------
    >>> t = random_transform(("rotation", "noise"), angle=20, noise_std=0.1)   # doctest: +SKIP
    >>> x_t = t(x, torch.Generator().manual_seed(0))                          # doctest: +SKIP
    """
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"kind must name one or more of {KINDS}, got {kind!r}")
    for name, v in (("angle", angle), ("shift", shift), ("scale", scale), ("brightness", brightness),
                    ("noise_std", noise_std)):
        check_eps(v, name=name)
    if scale >= 1:
        raise ValueError(f"scale must be < 1 (zoom in U(1 - scale, 1 + scale)), got {scale}")
    lo, hi = blur_sigma
    if interpolation not in ("bilinear", "nearest"):
        raise ValueError(f"interpolation must be 'bilinear' or 'nearest', got {interpolation!r}")
    if not 0 < lo <= hi:
        raise ValueError(f"blur_sigma must be (low, high) with 0 < low <= high, got {blur_sigma!r}")
    return RandomTransform(tuple(k for k in KINDS if k in kinds), angle=angle, shift=shift, scale=scale,
                           brightness=brightness, noise_std=noise_std, blur_sigma=(lo, hi),
                           interpolation=interpolation)


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, sigma_max: float) -> torch.Tensor:
    """Per-row Gaussian blur (``sigma``: ``N`` values), separable, replicate padding."""
    n, c, h, w = x.shape
    r = max(1, math.ceil(3 * sigma_max))
    k = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    g = torch.exp(-(k[None, :] ** 2) / (2 * sigma[:, None] ** 2))
    g = (g / g.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (N*C) x K
    y = x.reshape(1, n * c, h, w)
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="replicate"), g.view(n * c, 1, 1, -1), groups=n * c)
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), g.view(n * c, 1, -1, 1), groups=n * c)
    return y.view(n, c, h, w)


def compose(transforms: Sequence[Transform]) -> Transform:
    """Apply ``transforms`` in order, each drawing from the same generator."""
    ts = list(transforms)
    for t in ts:
        if not callable(t):
            raise TypeError(f"every transformation must be a callable t(x, generator) -> x, got {type(t).__name__}")

    def composed(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for t in ts:
            x = t(x, generator)
        return x

    composed.transforms = ts  # type: ignore[attr-defined]
    return composed


class RandomizedModel(nn.Module):
    """A classifier behind a randomised input transformation: ``forward(x) = model(t(x))``, ``t ~ T``.

    The randomised-input defenses that Athalye et al. break with EOT. Every call draws fresh
    transformations (one per row) from the module's own generator, seeded by ``seed``; the
    module takes the train/eval mode of ``model`` (it has no parameters of its own).

    Parameters
    ----------
    model : nn.Module
        The classifier.
    transform : callable
        ``t(x, generator) -> x``, e.g. ``random_transform(("rotation", "noise"))``.
    seed : int, default 0
        Seed of the defense's randomness (see :meth:`reseed`).

    Example
    -------
    >>> defended = RandomizedModel(lenet, random_transform(("rotation", "noise")))   # doctest: +SKIP
    >>> res = eot(defended, x, y, eps=0.2)     # EOT through the defense's own distribution  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, transform: Transform, *, seed: int = 0):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if not callable(transform):
            raise TypeError(f"transform must be a callable t(x, generator) -> x, got {type(transform).__name__}")
        self.model = model
        self.transform = transform
        self.generator = torch.Generator().manual_seed(seed)
        self.train(model.training)

    def reseed(self, seed: int) -> RandomizedModel:
        self.generator.manual_seed(seed)
        return self

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.model(self.transform(x, self.generator if generator is None else generator))

    def extra_repr(self) -> str:
        return f"transform={self.transform!r}"


def _resolve(src: nn.Module, transform) -> tuple[nn.Module, Transform, str]:
    """The module to differentiate and the transformation to draw, with a name for the params."""
    if isinstance(transform, str):
        if transform == "identity":
            return src, identity, "identity"
        if transform != "default":
            raise ValueError(f"transform must be 'default', 'identity', a callable t(x, generator) -> x or a list "
                             f"of them, got {transform!r}")
        if isinstance(src, RandomizedModel):  # the defense's own distribution, drawn by the attacker
            return src.model, src.transform, repr(src.transform)
        t = random_transform()
        return src, t, repr(t)
    if transform is None:
        return src, identity, "identity"
    if isinstance(transform, (list, tuple)):
        return src, compose(transform), f"compose({len(transform)})"
    if callable(transform):
        return src, transform, getattr(transform, "__name__", repr(transform))
    raise TypeError(f"transform must be 'default', 'identity', a callable or a list of callables, got "
                    f"{type(transform).__name__}")


def eot(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float = 0.3,
    norm: float | str = "inf",
    steps: int = 40,
    step_size: float | None = None,
    transform: str | Transform | Sequence[Transform] = "default",
    samples: int = 16,
    target: torch.Tensor | None = None,
    loss: str = "ce",
    fresh_draws: int = 32,
    compare_pgd: bool = False,
    source: nn.Module | None = None,
    seed: int = 0,
    progress: bool = True,
) -> AttackResult:
    """PGD on the expected loss over random transformations (EOT, Athalye et al., ICML 2018).

    Parameters
    ----------
    model : nn.Module
        The classifier attacked and judged, often a :class:`RandomizedModel` (eval mode).
    x : Tensor
        ``N x C x H x W`` images in [0, 1]. Never modified.
    y : Tensor
        ``N`` int64 true labels.
    eps : float, default 0.3
        Budget ``||x_adv - x||_p <= eps``.
    norm : {"inf", 2}, default "inf"
        Direction and projection as in :func:`advkit.attacks.pgd`.
    steps : int, default 40
        PGD steps (each: ``samples`` forward and backward passes per image).
    step_size : float, optional
        Step length; default ``2.5 * eps / steps`` (Madry et al.'s rule of thumb).
    transform : "default", "identity", callable or list of callables
        The distribution ``T`` the expectation is taken over. ``"default"``: when ``source`` is
        a :class:`RandomizedModel`, its own transformation (differentiated through
        ``source.model``, drawn from the attacker's generator: the white-box adaptive attack of
        Athalye et al.); otherwise :func:`random_transform` with its defaults (rotation ±30°,
        shifts ±3 px, Gaussian noise 0.1). A callable ``t(x, generator) -> x`` is used as it is
        (on top of ``source``'s own randomness, if any); a list is composed in order.
    samples : int, default 16
        ``S``, draws per step averaged in the gradient.
    target : Tensor, optional
        Target labels: descend the target's cross-entropy (targeted EOT).
    loss : {"ce", "margin"}, default "ce"
        PGD's objective.
    fresh_draws : int, default 32
        Transformations drawn afresh (a generator the attack never used) to evaluate
        ``x_adv``: ``extra["fresh_success"]`` (see :func:`success_under_transforms`). ``0`` skips it.
    compare_pgd : bool, default False
        Also run :func:`advkit.attacks.pgd` on ``model`` with the same ``eps``, ``step_size``,
        ``steps`` (no random start) and evaluate it on the same fresh draws:
        ``extra["pgd_fresh_success_rate"]``.
    source : nn.Module, optional
        The model differentiated (default ``model``). EOT is white-box on ``source``.
    seed : int, default 0
        Seed of the attack's transformations (a private generator).
    progress : bool, default True
        A tqdm bar over the steps.

    Returns
    -------
    AttackResult
        ``x_adv``; ``pred`` and ``success``: ``model``'s answer on ``x_adv`` (one forward: one
        random draw for a randomised model); ``iterations`` (``steps``) and ``queries``
        (``steps * samples`` forward+backward passes per image); ``extra``: ``"fresh_success"``
        (``N`` float: fraction of ``fresh_draws`` fresh transformations under which ``x_adv``
        fools the model), ``"fresh_success_rate"`` (its mean), ``"transform"`` (the
        distribution used) and, with ``compare_pgd``, ``"pgd_fresh_success_rate"`` and
        ``"pgd_result"``.

    Example
    -------
    >>> defended = RandomizedModel(model, random_transform(("rotation", "noise")))     # doctest: +SKIP
    >>> res = eot(defended, x, y, eps=0.2, compare_pgd=True)                          # doctest: +SKIP
    >>> res.extra["fresh_success_rate"], res.extra["pgd_fresh_success_rate"]           # doctest: +SKIP
    (0.93, 0.61)
    """
    from ..attacks.pgd import NORMS, _check_count, _check_positive, objective

    eps = check_eps(eps)
    p = check_norm(norm, (math.inf, 2.0))
    steps = _check_count(steps, "steps")
    samples = _check_count(samples, "samples")
    step_size = 2.5 * eps / steps if step_size is None else _check_positive(step_size, "step_size")
    if loss not in ("ce", "margin"):
        raise ValueError(f"loss must be 'ce' or 'margin', got {loss!r}")
    if isinstance(fresh_draws, bool) or not isinstance(fresh_draws, int) or fresh_draws < 0:
        raise ValueError(f"fresh_draws must be an int >= 0, got {fresh_draws!r}")
    prepare(model, x, y, target)
    src = model if source is None else source
    check_model(src)
    net, t, tname = _resolve(src, transform)

    direction, project, _ = NORMS[p]
    targeted = target is not None
    labels = target if targeted else y
    J = objective(loss, targeted)
    x0 = x.detach()
    n = len(x0)
    gen = torch.Generator().manual_seed(seed)
    rep = labels.repeat(samples)
    delta = (x0 + torch.zeros_like(x0)).clamp(0, 1) - x0
    for _ in tqdm(range(steps), desc="eot", leave=False, disable=not progress):
        delta.requires_grad_(True)
        xs = x0 + delta
        if samples > 1:
            xs = xs.repeat(samples, *[1] * (x0.dim() - 1))
        obj = J(net(t(xs, gen)), rep)
        (grad,) = torch.autograd.grad(obj.sum() / samples if samples > 1 else obj.sum(), delta)
        with torch.no_grad():
            step = direction(grad, None)
            delta = project(delta.detach().add_(step, alpha=step_size), eps)
            delta.add_(x0).clamp_(0, 1).sub_(x0)
    with torch.no_grad():
        x_adv = x0 + delta
        pred = model(x_adv).argmax(1)
    success = pred == target if targeted else pred != y
    extra: dict = {"transform": tname}
    eval_seed = 10_000 + seed  # a stream the attack never drew from
    # fresh draws: a randomised model's own transformation; otherwise the attack's distribution
    fresh_t = None if isinstance(model, RandomizedModel) else t
    if fresh_draws:
        fs = success_under_transforms(model, x_adv, y, transform=fresh_t, draws=fresh_draws, seed=eval_seed,
                                      target=target)
        extra["fresh_success"], extra["fresh_success_rate"] = fs, fs.mean().item()
    if compare_pgd:
        from ..attacks.pgd import pgd

        ref = pgd(model, x, y, eps=eps, eps_step=step_size, max_iter=steps, norm=norm, target=target, loss=loss)
        extra["pgd_result"] = ref
        if fresh_draws:
            extra["pgd_fresh_success_rate"] = success_under_transforms(
                model, ref.x_adv, y, transform=fresh_t, draws=fresh_draws, seed=eval_seed, target=target).mean().item()
    return AttackResult(
        x_adv=x_adv, success=success, x=x, y=y, pred=pred, target=target, attack="eot",
        params={"eps": eps, "norm": "inf" if p == math.inf else 2, "steps": steps, "step_size": step_size,
                "samples": samples, "transform": tname, "loss": loss, "seed": seed,
                "source": "model" if source is None else type(source).__name__},
        iterations=torch.full((n,), steps, dtype=torch.long, device=x0.device),
        queries=torch.full((n,), steps * samples, dtype=torch.long, device=x0.device), extra=extra,
    )


@torch.no_grad()
def success_under_transforms(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, *,
                             transform: Transform | None = None, draws: int = 32, seed: int = 1,
                             target: torch.Tensor | None = None) -> torch.Tensor:
    """Per image, the fraction of ``draws`` fresh random transformations under which ``x_adv`` fools ``model``.

    For a :class:`RandomizedModel` with ``transform=None`` the draws are of the defense's own
    transformation, from a generator seeded with ``seed`` (not the defense's, so the result
    is reproducible and independent of the attack's draws); otherwise ``model(t(x_adv))`` with
    ``t = transform`` (``None``: ``model`` as it is, called ``draws`` times). Fooling is
    ``pred != y`` (``pred == target`` when targeted).

    Returns
    -------
    Tensor
        ``N`` floats in [0, 1]; ``.mean()`` is the success rate over fresh transformations
        (the quantity Athalye et al. report for their robust examples).
    """
    check_images(x_adv, name="x_adv")
    check_labels(y, x_adv)
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be an int >= 1, got {draws!r}")
    gen = torch.Generator().manual_seed(seed)
    hits = torch.zeros(len(x_adv), device=x_adv.device)
    for _ in range(draws):
        if transform is None and isinstance(model, RandomizedModel):
            logits = model(x_adv, generator=gen)
        elif transform is None:
            logits = model(x_adv)
        else:
            logits = model(transform(x_adv, gen))
        pred = logits.argmax(1)
        hits += (pred == target if target is not None else pred != y).float()
    return hits / draws
