"""The thesis's five common perturbations, with the semantics of fastai v1's transforms.

The 2020 thesis perturbed its validation images with fastai v1 (``fastai==1.0.61``,
``fastai/vision/transform.py`` and ``fastai/vision/image.py``, repository ``fastai/fastai1`` at
commit 15bc02c6; source lines are cited as ``transform.py:15``). The tests compare every
function with fastai v1 itself on the same inputs and seeds. Here the same arithmetic runs batched on ``N x C x H x W``
tensors in [0, 1], on the input's device, with explicit seeds. What fastai v1 does:

* **Lighting transforms act in logit space** (``image.py:165``, ``Image.lighting``:
  "Equivalent to ``image = sigmoid(func(logit(image)))``"). The logit clamps first
  (``torch_core.py:333``, ``logit_``: ``x.clamp_(1e-7, 1-1e-7)``), so 0 and 1 come back as
  ``1e-7`` and ``1 - 1e-7``: the identity settings are the identity up to 1.2e-7.

  - ``brightness(x, change)``: ``sigmoid(logit(x) + logit(change))`` (``transform.py:15``);
    ``change = 0.5`` is the identity, ``change < 0.5`` darkens, ``> 0.5`` brightens.
  - ``contrast(x, scale)``: ``sigmoid(scale * logit(x))`` (``transform.py:20``); ``scale = 1``
    is the identity, ``scale = 0`` gives uniform grey 0.5, ``scale > 1`` pushes every pixel
    away from 0.5.

* **Affine and coordinate transforms resample** the image on a grid of **normalised
  coordinates** in [-1, 1] (``image.py:545``, ``_affine_grid``: ``torch.linspace(-1, 1, W)``,
  so -1 and 1 are the centres of the corner pixels) with ``F.grid_sample(mode="bilinear",
  padding_mode="reflection", align_corners=True)`` (``image.py:530-543``; ``reflection`` is
  the default of both ``Image.apply_tfms`` (``image.py:98``) and ``_grid_sample``). The grid
  holds, for each output pixel, where to read the input.

  - ``rotate(x, degrees)``: the matrix ``[[cos a, -sin a], [sin a, cos a]]``
    (``transform.py:25``) multiplies the grid, with the off-diagonal terms scaled by ``h/w``
    and ``w/h`` for non-square images (``image.py:555``, ``_affine_mult``). A positive angle
    turns the content counter-clockwise on screen (90 degrees is ``torch.rot90(x, 1, (2, 3))``).
    Corners that rotate in from outside are filled by reflection, not black.
  - ``jitter(x, magnitude)``: adds ``(U[0,1) - 0.5) * 2 * magnitude`` independently to both
    coordinates of every grid point (``transform.py:57``, ``_jitter``: ``c.flow.add_((torch.
    rand_like(c.flow)-0.5)*magnitude*2)``). ``magnitude`` is in normalised units: 0.05 moves a
    pixel by up to ``0.05 * (W - 1) / 2`` pixels (0.68 px on MNIST's 28, 1.6 px on 64-pixel
    Pentomino, 4.0 px on Imagenette-160). A negative magnitude draws the same distribution
    (with the same seed, the mirrored displacement).

* **Pixel transforms** act directly on the pixels.

  - ``rgb_randomize(x, thresh, channel)`` (``transform.py:137``): ``x[channel] =
    torch.rand(H, W) * np.random.uniform(0, thresh)``: one channel is *replaced* by uniform
    noise scaled by one random factor per image, so its values lie in ``[0, thresh)``.

**Grey images.** fastai v1 opens every image with ``PIL.Image.convert("RGB")``
(``image.py:393-398``, ``open_image(..., convert_mode='RGB')``), so the thesis's MNIST and Pentomino
reached the perturbations, and ResNet-50, as three identical channels. The pipeline was:
load -> ``to_rgb`` -> perturbation -> normalisation (inside the model). That is why RGB
randomise, which replaces one of the three channels, was the strongest perturbation on those two
data sets. To do what the thesis did, call :func:`to_rgb` before :func:`rgb_randomize`. On a
one-channel tensor :func:`rgb_randomize` does what fastai v1's function does to such a tensor:
its only channel, the whole image, becomes noise, which the thesis never did.
For a one-channel model (the course's MNIST models), :func:`to_grey` maps the perturbed RGB
image back with the ITU-R 601 luma weights that ``PIL.Image.convert("L")`` uses.

Every function here accepts a scalar level or one level per image (a tensor of length ``N``),
keeps the shape, dtype and device, returns values in [0, 1] and never modifies its input.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch.nn import functional as F

from ..attacks.checks import check_images

#: The thesis's levels for each perturbation (DESIGN.md, "The thesis experiment").
ROTATION_DEGREES: tuple[float, ...] = (-60.0, 20.0, 100.0, 180.0)
BRIGHTNESS_CHANGES: tuple[float, ...] = (0.1, 0.3, 0.4, 0.5)
RGB_RANDOMIZE_THRESHOLDS: tuple[float, ...] = (0.2, 0.5, 0.99)
RGB_RANDOMIZE_CHANNEL: int = 0  # red
JITTER_MAGNITUDES: tuple[float, ...] = (-0.05, -0.03, 0.0, 0.03, 0.05)
CONTRAST_SCALES: tuple[float, ...] = (0.5, 1.17, 2.74, 6.41)

#: ``name -> levels``, in the thesis's order; the keys are the names :func:`perturb` takes.
THESIS_LEVELS: dict[str, tuple[float, ...]] = {
    "rotate": ROTATION_DEGREES,
    "brightness": BRIGHTNESS_CHANGES,
    "rgb_randomize": RGB_RANDOMIZE_THRESHOLDS,
    "jitter": JITTER_MAGNITUDES,
    "contrast": CONTRAST_SCALES,
}

#: fastai v1's logit clamp (``torch_core.py:333``).
LOGIT_EPS = 1e-7


# --------------------------------------------------------------------------- helpers

def _check_batch(x: torch.Tensor) -> None:
    check_images(x)
    if x.dim() != 4:
        raise ValueError(f"x must be a batch of images N x C x H x W, got shape {tuple(x.shape)}")


def _levels(value, n: int, x: torch.Tensor, name: str) -> torch.Tensor:
    """A scalar or one value per image, as an ``N`` tensor of ``x``'s dtype on ``x``'s device."""
    t = torch.as_tensor(value, dtype=torch.float64)
    if t.dim() == 0:
        t = t.expand(n)
    if t.shape != (n,):
        raise ValueError(f"{name} must be a number or one value per image (shape ({n},)), "
                         f"got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite, got {value!r}")
    return t


def _generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator:
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        return generator
    if seed is None or isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int (or pass generator=torch.Generator()), got {seed!r}")
    return torch.Generator().manual_seed(seed)


def _logit(x: torch.Tensor) -> torch.Tensor:
    """fastai v1's ``logit_``: ``-log(1/x - 1)`` after clamping to ``[1e-7, 1 - 1e-7]``."""
    x = x.clamp(LOGIT_EPS, 1 - LOGIT_EPS)
    return -(x.reciprocal() - 1).log()


def _sample(x: torch.Tensor, grid: torch.Tensor, padding_mode: str) -> torch.Tensor:
    """fastai v1's ``_grid_sample`` (``image.py:530``) for a same-size output, batched."""
    if padding_mode not in ("reflection", "border", "zeros"):
        raise ValueError(f"padding_mode must be 'reflection' (fastai v1's default), 'border' or "
                         f"'zeros', got {padding_mode!r}")
    out = F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode=padding_mode, align_corners=True)
    return out.clamp_(0, 1)  # bilinear weights sum to 1; the clamp only removes rounding


def identity_grid(n: int, h: int, w: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """fastai v1's ``_affine_grid`` (``image.py:545``) for ``n`` images: ``N x H x W x 2``,
    last axis ``(x, y)`` in [-1, 1], ``-1``/``1`` at the centres of the corner pixels."""
    xs = torch.linspace(-1, 1, w, device=device, dtype=dtype) if w > 1 else torch.full((1,), -1.0, device=device, dtype=dtype)
    ys = torch.linspace(-1, 1, h, device=device, dtype=dtype) if h > 1 else torch.full((1,), -1.0, device=device, dtype=dtype)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # H x W x 2
    return grid.unsqueeze(0).expand(n, h, w, 2)


def affine_grid(theta: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Grid ``N x H x W x 2`` for 2 x 3 matrices ``theta`` (``N x 2 x 3``) in fastai v1's way.

    ``_affine_mult`` (``image.py:555``) scales ``m[0,1] *= h/w`` and ``m[1,0] *= w/h`` so that a
    rotation stays a rotation on a non-square image, then ``grid @ m[:2,:2].T + m[:2,2]``.
    """
    m = theta.clone()
    m[:, 0, 1] *= h / w
    m[:, 1, 0] *= w / h
    base = identity_grid(len(m), h, w, device=m.device, dtype=m.dtype)
    return base @ m[:, :, :2].transpose(1, 2).unsqueeze(1) + m[:, :, 2].view(-1, 1, 1, 2)


# --------------------------------------------------------------------------- the five

def rotate(x: torch.Tensor, degrees, *, padding_mode: str = "reflection") -> torch.Tensor:
    """Rotate each image by ``degrees`` about its centre (fastai v1 ``rotate``, ``transform.py:25``).

    The output pixel at normalised coordinates ``(u, v)`` reads the input at
    ``(cos a * u - sin a * (h/w) * v,  sin a * (w/h) * u + cos a * v)``, ``a = degrees * pi / 180``,
    with bilinear interpolation and reflection padding (``image.py:530-543``,
    ``align_corners=True``). 180 degrees is the double flip ``x.flip(2, 3)`` and 90 degrees on a
    square image ``torch.rot90(x, 1, (2, 3))`` (both up to float rounding, 1e-6).

    Parameters
    ----------
    x : Tensor
        ``N x C x H x W`` in [0, 1]; not modified.
    degrees : float or Tensor
        One angle, or one per image (shape ``(N,)``). Positive turns counter-clockwise on screen.
        The thesis's levels: :data:`ROTATION_DEGREES` = (-60, 20, 100, 180).
    padding_mode : {"reflection", "border", "zeros"}
        How corners that come from outside the image are filled; fastai v1's default is
        ``"reflection"`` (``image.py:98``).

    Returns
    -------
    Tensor
        Same shape, dtype and device as ``x``, in [0, 1].

    Example
    -------
    >>> x = torch.rand(2, 3, 8, 8)
    >>> torch.allclose(rotate(x, 180), x.flip(2, 3), atol=1e-5)
    True
    """
    _check_batch(x)
    n, _, h, w = x.shape
    a = _levels(degrees, n, x, "degrees") * (math.pi / 180)
    cos, sin = torch.cos(a), torch.sin(a)
    # round away the float error of cos/sin at multiples of 90 degrees (sin(pi) = 1.2e-16)
    cos = torch.where(cos.abs() < 1e-12, torch.zeros_like(cos), cos)
    sin = torch.where(sin.abs() < 1e-12, torch.zeros_like(sin), sin)
    zero = torch.zeros_like(a)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = affine_grid(theta, h, w).to(x.device)
    return _sample(x, grid, padding_mode)


def brightness(x: torch.Tensor, change) -> torch.Tensor:
    """Brightness in logit space (fastai v1 ``brightness``, ``transform.py:15``; ``image.py:165``).

    ``out = sigmoid(logit(x) + logit(change))``, where ``logit`` clamps to ``[1e-7, 1 - 1e-7]``.
    ``change = 0.5`` is the identity (``logit(0.5) = 0``); a mid-grey 0.5 becomes ``change``.

    Parameters
    ----------
    x : Tensor
        ``N x C x H x W`` in [0, 1]; not modified.
    change : float or Tensor
        In (0, 1), one or one per image. The thesis's levels: :data:`BRIGHTNESS_CHANGES`
        = (0.1, 0.3, 0.4, 0.5).

    Returns
    -------
    Tensor
        Same shape, dtype and device, in (0, 1).

    Example
    -------
    >>> round(brightness(torch.full((1, 1, 1, 1), 0.5), 0.1).item(), 6)
    0.1
    """
    _check_batch(x)
    c = _levels(change, len(x), x, "change")
    if ((c <= 0) | (c >= 1)).any():
        raise ValueError(f"change must lie strictly between 0 and 1 (0.5 is the identity), got {change!r}")
    shift = torch.log(c / (1 - c)).to(x.device, x.dtype).view(-1, 1, 1, 1)
    return torch.sigmoid(_logit(x) + shift)


def contrast(x: torch.Tensor, scale) -> torch.Tensor:
    """Contrast in logit space (fastai v1 ``contrast``, ``transform.py:20``; ``image.py:165``).

    ``out = sigmoid(scale * logit(x))``, where ``logit`` clamps to ``[1e-7, 1 - 1e-7]``.
    ``scale = 1`` is the identity, ``scale = 0`` gives uniform grey 0.5, ``scale > 1`` raises
    the contrast and ``0 < scale < 1`` lowers it; 0.5 is a fixed point for every scale.

    Parameters
    ----------
    x : Tensor
        ``N x C x H x W`` in [0, 1]; not modified.
    scale : float or Tensor
        ``>= 0``, one or one per image. The thesis's levels: :data:`CONTRAST_SCALES`
        = (0.5, 1.17, 2.74, 6.41).

    Returns
    -------
    Tensor
        Same shape, dtype and device, in (0, 1).

    Example
    -------
    >>> round(contrast(torch.full((1, 1, 1, 1), 0.75), 2.0).item(), 4)  # 0.75^2 / (0.75^2 + 0.25^2)
    0.9
    """
    _check_batch(x)
    s = _levels(scale, len(x), x, "scale")
    if (s < 0).any():
        raise ValueError(f"scale must be >= 0 (1 is the identity, 0 gives grey), got {scale!r}")
    return torch.sigmoid(_logit(x) * s.to(x.device, x.dtype).view(-1, 1, 1, 1))


def jitter(x: torch.Tensor, magnitude, *, seed: int | None = 0, generator: torch.Generator | None = None,
           padding_mode: str = "reflection") -> torch.Tensor:
    """Replace each pixel by a random neighbour (fastai v1 ``jitter``, ``transform.py:57``).

    Each output pixel reads the input at its own normalised coordinates plus
    ``(U - 0.5) * 2 * magnitude``, ``U ~ U[0, 1)`` drawn independently for ``x`` and ``y`` and
    every pixel, with bilinear interpolation and reflection padding (``image.py:530-543``).
    ``magnitude = 0`` is the identity.

    Parameters
    ----------
    x : Tensor
        ``N x C x H x W`` in [0, 1]; not modified.
    magnitude : float or Tensor
        In normalised units (the image spans [-1, 1]); one or one per image. The thesis's
        levels: :data:`JITTER_MAGNITUDES` = (-0.05, -0.03, 0, 0.03, 0.05).
    seed : int
        The noise is drawn from ``torch.Generator().manual_seed(seed)`` on the CPU, so the
        same seed gives the same output on any device, independent of the global RNG.
    generator : torch.Generator, optional
        Use (and advance) this CPU generator instead of ``seed``.
    padding_mode : {"reflection", "border", "zeros"}
        As in :func:`rotate`.

    Returns
    -------
    Tensor
        Same shape, dtype and device, in [0, 1].

    Notes
    -----
    The noise for image ``i`` is the ``i``-th ``H x W x 2`` block of one
    ``torch.rand(N, H, W, 2)`` draw, so image 0 with ``seed=s`` gets the displacement that
    fastai v1 draws after ``torch.manual_seed(s)``.
    """
    _check_batch(x)
    n, _, h, w = x.shape
    m = _levels(magnitude, n, x, "magnitude").to(torch.float32).view(-1, 1, 1, 1)
    gen = _generator(seed, generator)
    noise = torch.rand((n, h, w, 2), generator=gen)
    grid = identity_grid(n, h, w) + (noise - 0.5) * m * 2
    return _sample(x, grid.to(x.device), padding_mode)


def rgb_randomize(x: torch.Tensor, thresh, channel: int | None = 0, *, seed: int | None = 0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace one colour channel by scaled uniform noise (fastai v1 ``rgb_randomize``, ``transform.py:137``).

    ``out[:, channel] = U[0, 1)^{H x W} * u`` with one ``u ~ U[0, thresh)`` per image; the other
    channels are untouched. It is a pixel transform (no logit space). The result in that channel
    lies in ``[0, thresh)``, whatever the image was.

    Grey images: the thesis's fastai pipeline opened them as RGB (``convert("RGB")``), so
    expand them first with :func:`to_rgb`, as it did; then only one of the three identical
    channels is replaced (see the module docstring). A one-channel tensor is accepted too and
    gets what fastai v1's function does to such a tensor: its only channel becomes noise.

    Parameters
    ----------
    x : Tensor
        ``N x C x H x W`` in [0, 1] (RGB, or a one-channel tensor: see above); not modified.
    thresh : float or Tensor
        Upper bound of the random scale ``u``, ``> 0``; one or one per image. The thesis's
        levels: :data:`RGB_RANDOMIZE_THRESHOLDS` = (0.2, 0.5, 0.99), on the red channel.
    channel : int or None
        The channel to replace (0 = red, the thesis's choice). ``None`` draws one per image as
        fastai v1 does, ``np.random.randint(0, C - 1)``, which never picks the last (blue)
        channel; kept for fidelity.
    seed : int
        Reproducible noise from ``torch.Generator().manual_seed(seed)`` (CPU).
    generator : torch.Generator, optional
        Use (and advance) this CPU generator instead of ``seed``.

    Returns
    -------
    Tensor
        Same shape, dtype and device, in [0, 1].

    Notes
    -----
    For image ``i`` the noise is drawn before its scale, as in fastai's expression
    ``torch.rand(x.shape[1:]) * np.random.uniform(0, thresh)`` (fastai draws the scale from
    NumPy's global RNG; here both come from one torch generator).
    """
    _check_batch(x)
    n, c, h, w = x.shape
    t = _levels(thresh, n, x, "thresh")
    if (t <= 0).any():
        raise ValueError(f"thresh must be > 0 (the channel becomes noise in [0, thresh)), got {thresh!r}")
    if channel is not None:
        if isinstance(channel, bool) or not isinstance(channel, int) or not 0 <= channel < c:
            raise ValueError(f"channel must be an int in 0..{c - 1} (0 is red) or None, got {channel!r}")
    gen = _generator(seed, generator)
    out = x.clone()
    for i in range(n):
        noise = torch.rand((h, w), generator=gen)
        u = torch.rand((), generator=gen, dtype=torch.float64) * t[i]
        ch = channel if channel is not None else (int(torch.randint(0, c - 1, (), generator=gen)) if c > 1 else 0)
        out[i, ch] = (noise * u).to(x.device, x.dtype)
    return out


# --------------------------------------------------------------------------- grey <-> RGB

def to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Expand grey images ``N x 1 x H x W`` to three identical channels (what
    ``PIL.Image.convert("RGB")`` does when fastai v1 opens a grey image); RGB passes through."""
    _check_batch(x)
    if x.shape[1] == 3:
        return x
    if x.shape[1] != 1:
        raise ValueError(f"to_rgb expects 1 (grey) or 3 (RGB) channels, got {x.shape[1]}")
    return x.expand(-1, 3, -1, -1).contiguous()


#: ITU-R 601-2 luma weights, as in ``PIL.Image.convert("L")``: L = R * 299/1000 + G * 587/1000 + B * 114/1000.
LUMA_WEIGHTS: tuple[float, float, float] = (0.299, 0.587, 0.114)


def to_grey(x: torch.Tensor) -> torch.Tensor:
    """RGB ``N x 3 x H x W`` to one channel with the ITU-R 601 luma weights of
    ``PIL.Image.convert("L")``; a grey image passes through. ``to_grey(to_rgb(g))`` equals ``g``
    (up to float rounding), so a one-channel model sees exactly what it saw before for the
    perturbations that treat channels alike."""
    _check_batch(x)
    if x.shape[1] == 1:
        return x
    if x.shape[1] != 3:
        raise ValueError(f"to_grey expects 3 (RGB) or 1 (grey) channels, got {x.shape[1]}")
    wts = torch.tensor(LUMA_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * wts).sum(1, keepdim=True).clamp_(0, 1)


# --------------------------------------------------------------------------- by name

PERTURBATIONS: dict[str, Callable[..., torch.Tensor]] = {
    "rotate": rotate,
    "brightness": brightness,
    "rgb_randomize": rgb_randomize,
    "jitter": jitter,
    "contrast": contrast,
}
_SEEDED = {"jitter", "rgb_randomize"}


def perturb(name: str, x: torch.Tensor, level, *, seed: int = 0) -> torch.Tensor:
    """Apply the thesis perturbation ``name`` (a key of :data:`THESIS_LEVELS`) at ``level``.

    ``rgb_randomize`` uses the thesis's red channel; the random ones take ``seed``. A loop over
    ``THESIS_LEVELS.items()`` with this function is the thesis's whole perturbation protocol.
    """
    if name not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {name!r}; choose one of {', '.join(PERTURBATIONS)}")
    fn = PERTURBATIONS[name]
    if name == "rgb_randomize":
        return fn(x, level, RGB_RANDOMIZE_CHANNEL, seed=seed)
    if name in _SEEDED:
        return fn(x, level, seed=seed)
    return fn(x, level)
