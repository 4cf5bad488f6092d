"""Input transformations as preprocessing defenses, and how each one is attacked honestly.

Each transform takes a batch ``N x C x H x W`` in [0, 1] and returns one of the same shape and
range (thermometer encoding, which multiplies the channels, is the exception). Put one in front
of a model with :func:`advkit.defenses.preprocess`. Random ones hold their own
``torch.Generator`` seeded at construction: every call draws fresh randomness (that is the
defense), and two instances with the same seed give the same sequence of outputs.

What the attacker must do depends on the transform's *kind* (Athalye, Carlini & Wagner,
"Obfuscated Gradients Give a False Sense of Security", ICML 2018):

======================  ==========================================  ================================
kind                    transforms                                  adaptive attack
======================  ==========================================  ================================
differentiable          Gaussian blur, median smoothing             plain PGD through the transform
non-differentiable      JPEG, bit-depth reduction, thermometer      BPDA (:mod:`.bpda`)
randomised              translation, rotation, mirroring, noise     EOT (:func:`advkit.blackbox.eot`)
randomised, non-diff.   total-variance minimisation (random drop)   BPDA + EOT
======================  ==========================================  ================================

A non-differentiable transform here returns its output with a zero gradient: for bit-depth
reduction and JPEG (which rounds to 8 bits) that *is* the derivative almost everywhere, and for
TV minimisation it stands for a solver that is not differentiated (as the original numpy code).
A plain PGD therefore runs, sees a zero gradient and reports robustness that is not there.

Papers: Guo, Rana, Cisse & van der Maaten, "Countering Adversarial Images using Input
Transformations", ICLR 2018 (JPEG, bit depth, TV minimisation, cropping); Xu, Evans & Qi,
"Feature Squeezing: Detecting Adversarial Examples in Deep Neural Networks", NDSS 2018 (bit depth,
median smoothing); Buckman, Roy, Raffel & Goodfellow, "Thermometer Encoding: One Hot Way To Resist
Adversarial Examples", ICLR 2018; Dziugaite, Ghahramani & Roy 2016 and Das et al. 2017 (JPEG);
Xie, Wang, Zhang, Ren & Yuille, "Mitigating Adversarial Effects Through Randomization", ICLR 2018
(random resizing and padding, the idea behind the random geometric transforms).

Random transforms also follow the EOT protocol of :mod:`advkit.blackbox.eot`: ``t(x, generator)``
draws from the generator it is given (the attacker's) instead of its own, so
``RandomizedModel(model, t)`` is the defense and ``eot(RandomizedModel(model, t), x, y)``
its adaptive attack; for TV minimisation (random *and* non-differentiable) use
``RandomizedModel(model, BPDA(TVM()))``: BPDA passes the generator on.

:data:`TRANSFORMS` lists them with MNIST-sized defaults for a lab to iterate over::

    for name, (make, kind) in TRANSFORMS.items():
        deployed = preprocess(model, make())                  # what a non-adaptive attack sees
        adaptive = preprocess(model, make(), bpda=True)       # BPDA (identity backward)
        ...                                                   # + EOT where kind is randomised
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from .bpda import BPDA, Defended

DIFFERENTIABLE = "differentiable"
NON_DIFFERENTIABLE = "non-differentiable"
RANDOMISED = "randomised"
RANDOMISED_NON_DIFFERENTIABLE = "randomised, non-differentiable"

#: kind -> the adaptive attack it calls for
ADAPTIVE_ATTACK = {
    DIFFERENTIABLE: "PGD through the transform",
    NON_DIFFERENTIABLE: "BPDA",
    RANDOMISED: "EOT",
    RANDOMISED_NON_DIFFERENTIABLE: "BPDA + EOT",
}


# ------------------------------------------------------------------ plumbing


def _check_batch(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a float tensor of pixels in [0, 1], got dtype {x.dtype}")
    if x.dim() != 4:
        raise ValueError(f"x must be a batch N x C x H x W, got shape {tuple(x.shape)}; "
                         "for a single image use x.unsqueeze(0)")


class _ZeroGradient(torch.autograd.Function):
    """``fn(x)`` computed without autograd; its backward pass is zero (the a.e. derivative of a
    piecewise-constant map, or a solver that is not differentiated)."""

    @staticmethod
    def forward(ctx, x, fn):
        ctx.shape, ctx.dtype, ctx.device = x.shape, x.dtype, x.device
        with torch.no_grad():
            return fn(x).detach()

    @staticmethod
    def backward(ctx, grad_out):
        return torch.zeros(ctx.shape, dtype=ctx.dtype, device=ctx.device), None


def _positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _number(value, name: str, lo: float = 0.0, hi: float = math.inf) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not (lo <= v <= hi) or math.isnan(v):
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
    return v


class Transform(nn.Module):
    """Base class: a preprocessing transform with a known *kind*.

    Subclasses set ``differentiable`` and ``randomised`` and implement ``_transform(x)``. A
    non-differentiable transform's output has a zero gradient (see the module docstring).
    """

    differentiable: bool = True
    randomised: bool = False

    @property
    def kind(self) -> str:
        """``"differentiable"``, ``"non-differentiable"``, ``"randomised"`` or ``"randomised, non-differentiable"``."""
        if self.randomised:
            return RANDOMISED if self.differentiable else RANDOMISED_NON_DIFFERENTIABLE
        return DIFFERENTIABLE if self.differentiable else NON_DIFFERENTIABLE

    @property
    def adaptive_attack(self) -> str:
        """The attack this kind calls for: PGD, BPDA, EOT or BPDA + EOT."""
        return ADAPTIVE_ATTACK[self.kind]

    def _transform(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Transform ``x``; a random transform draws from ``generator`` if given (the EOT protocol
        ``t(x, generator)`` of :mod:`advkit.blackbox.eot`), else from its own generator."""
        _check_batch(x)
        fn = self._transform if generator is None else partial(self._transform, generator=generator)
        if self.differentiable:
            return fn(x)
        return _ZeroGradient.apply(x, fn)


class RandomTransform(Transform):
    """A transform that draws fresh randomness at every call from its own generator."""

    randomised = True

    def __init__(self, seed: int = 0):
        super().__init__()
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)

    def reset(self, seed: int | None = None) -> RandomTransform:
        """Restart the random sequence (from ``seed``, default the construction seed)."""
        if seed is not None:
            self.seed = seed
        self.generator.manual_seed(self.seed)
        return self

    def _gen(self, generator: torch.Generator | None) -> torch.Generator:
        return self.generator if generator is None else generator


# ------------------------------------------------------------------ geometric (randomised, differentiable)


class RandomTranslate(RandomTransform):
    """Shift each image by a random integer offset, filling with black (0).

    ``(dy, dx)`` uniform in ``{-max_shift, ..., max_shift}^2`` per image, drawn at every call.
    Pure indexing, so the gradient flows (to the shifted pixels). ``max_shift=0`` is the identity.

    Example
    -------
    >>> RandomTranslate(max_shift=2, seed=0)(x).shape == x.shape   # doctest: +SKIP
    True
    """

    def __init__(self, max_shift: int = 2, *, seed: int = 0):
        super().__init__(seed)
        self.max_shift = _positive_int(max_shift, "max_shift", minimum=0)

    def _transform(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        m = self.max_shift
        n, _, h, w = x.shape
        if m == 0:
            return x
        shifts = torch.randint(-m, m + 1, (2, n), generator=self._gen(generator))
        dy, dx = shifts.to(x.device)
        xp = F.pad(x, (m, m, m, m))
        rows = torch.arange(h, device=x.device)[None] + m - dy[:, None]  # N x H
        cols = torch.arange(w, device=x.device)[None] + m - dx[:, None]  # N x W
        out = xp[torch.arange(n, device=x.device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
        return out.permute(0, 3, 1, 2)  # advanced indexing put C last

    def extra_repr(self) -> str:
        return f"max_shift={self.max_shift}, seed={self.seed}"


def rotate(x: torch.Tensor, degrees: torch.Tensor | float) -> torch.Tensor:
    """Rotate each image of ``x`` about its centre by ``degrees`` (one angle, or one per image).

    Bilinear interpolation (``grid_sample``, pixel centres as in ``align_corners=False``), black
    outside the image; differentiable in ``x``. A quarter turn of a square image is exact.
    """
    n, _, h, w = x.shape
    angle = torch.as_tensor(degrees, dtype=torch.float64).expand(n) * (math.pi / 180)
    cos, sin = angle.cos().to(x), angle.sin().to(x)
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * h / w  # normalised coordinates: keep the aspect ratio
    theta[:, 1, 0], theta[:, 1, 1] = sin * w / h, cos
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False).clamp(0, 1)


class RandomRotate(RandomTransform):
    """Rotate each image by a random angle uniform in ``[-max_degrees, max_degrees]`` about its centre.

    Bilinear interpolation (``grid_sample``), black outside the image, so values stay in [0, 1]
    and the gradient flows. ``max_degrees=0`` is the identity.
    """

    def __init__(self, max_degrees: float = 15.0, *, seed: int = 0):
        super().__init__(seed)
        self.max_degrees = _number(max_degrees, "max_degrees", 0.0, 180.0)

    def _transform(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        n, _, h, w = x.shape
        if self.max_degrees == 0:
            return x
        u = torch.rand(n, generator=self._gen(generator))
        return rotate(x, (2 * u - 1) * self.max_degrees)

    def extra_repr(self) -> str:
        return f"max_degrees={self.max_degrees}, seed={self.seed}"


class RandomMirror(RandomTransform):
    """Mirror each image left-right with probability ``p`` (``p=0``: identity, ``p=1``: always).

    Digits are not mirror-symmetric, so on MNIST this costs clean accuracy: measure it.
    """

    def __init__(self, p: float = 0.5, *, seed: int = 0):
        super().__init__(seed)
        self.p = _number(p, "p", 0.0, 1.0)

    def _transform(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        flip = (torch.rand(len(x), generator=self._gen(generator)) < self.p).to(x.device).view(-1, 1, 1, 1)
        return torch.where(flip, x.flip(3), x)

    def extra_repr(self) -> str:
        return f"p={self.p}, seed={self.seed}"


# ------------------------------------------------------------------ filters


def _gaussian_kernel(sigma: float, size: int, dtype, device) -> torch.Tensor:
    t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).to(dtype=dtype, device=device)


class GaussianBlur(Transform):
    """Gaussian smoothing with standard deviation ``sigma`` pixels (separable, reflected borders).

    ``kernel_size`` defaults to ``2 * ceil(3 sigma) + 1``. The kernel sums to one, so the output
    stays in [0, 1]. Differentiable (a convolution). ``sigma=0`` is the identity.
    """

    def __init__(self, sigma: float = 1.0, kernel_size: int | None = None):
        super().__init__()
        self.sigma = _number(sigma, "sigma")
        if kernel_size is None:
            kernel_size = 2 * math.ceil(3 * self.sigma) + 1
        self.kernel_size = _positive_int(kernel_size, "kernel_size")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")

    def _transform(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.sigma == 0 or self.kernel_size == 1:
            return x
        n, c, h, w = x.shape
        k = _gaussian_kernel(self.sigma, self.kernel_size, x.dtype, x.device)
        r = self.kernel_size // 2
        mode = "reflect" if r < min(h, w) else "replicate"
        y = F.pad(x.reshape(n * c, 1, h, w), (r, r, r, r), mode=mode)
        y = F.conv2d(y, k.view(1, 1, 1, -1))
        y = F.conv2d(y, k.view(1, 1, -1, 1))
        return y.reshape(n, c, h, w).clamp(0, 1)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, kernel_size={self.kernel_size}"


class GaussianNoise(RandomTransform):
    """Add ``N(0, sigma^2)`` noise to every pixel, fresh at every call, then clip to [0, 1].

    Randomised and differentiable (EOT averages the gradient over the noise). ``sigma=0`` is the identity.
    """

    def __init__(self, sigma: float = 0.2, *, seed: int = 0):
        super().__init__(seed)
        self.sigma = _number(sigma, "sigma")

    def _transform(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.sigma == 0:
            return x
        noise = torch.randn(x.shape, generator=self._gen(generator)).to(x)
        return (x + self.sigma * noise).clamp(0, 1)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, seed={self.seed}"


def _symmetric_index(n: int, before: int, after: int, device) -> torch.Tensor:
    """Indices of a half-sample symmetric padding (scipy's ``mode='reflect'``: d c b a | a b c d | d c b a)."""
    i = torch.arange(-before, n + after, device=device)
    period = 2 * n
    i = torch.remainder(i, period)
    return torch.where(i >= n, period - 1 - i, i)


def _median4_upper(v: list[torch.Tensor]) -> torch.Tensor:
    """The upper median (3rd smallest) of 4 tensors, elementwise: the second largest value."""
    lo1, hi1 = torch.minimum(v[0], v[1]), torch.maximum(v[0], v[1])
    lo2, hi2 = torch.minimum(v[2], v[3]), torch.maximum(v[2], v[3])
    return torch.maximum(torch.minimum(hi1, hi2), torch.maximum(lo1, lo2))


#: Paeth's 19 compare-exchanges that leave the median of 9 values in position 4 (as in N. Devillard,
#: "Fast median search: an ANSI C implementation", 1998, ``opt_med9``).
_MED9 = ((1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8), (0, 3), (5, 8), (4, 7),
         (3, 6), (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2))


def _median9(v: list[torch.Tensor]) -> torch.Tensor:
    """The median of 9 tensors, elementwise, by the selection network :data:`_MED9`."""
    p = list(v)
    for i, j in _MED9:
        p[i], p[j] = torch.minimum(p[i], p[j]), torch.maximum(p[i], p[j])
    return p[4]


class MedianSmoothing(Transform):
    """Median filter over a ``size x size`` window (feature squeezing, Xu, Evans & Qi, NDSS 2018).

    Xu et al. use 2 x 2 on MNIST and 3 x 3 on CIFAR-10/ImageNet. Borders are reflected
    (half-sample symmetric) and windows placed exactly as ``scipy.ndimage.median_filter(x,
    size=(1, 1, size, size), mode="reflect")``; for an even window of ``size^2`` values the
    upper of the two middle values is taken, as scipy does. Differentiable almost everywhere
    (the gradient reaches the pixel that is the median), so plain PGD attacks through it.
    ``size=1`` is the identity.
    """

    def __init__(self, size: int = 2):
        super().__init__()
        self.size = _positive_int(size, "size")

    def _transform(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        k = self.size
        if k == 1:
            return x
        n, c, h, w = x.shape
        before, after = k // 2, (k - 1) // 2  # scipy's window for origin 0: offsets -k//2 .. (k-1)//2
        ri = _symmetric_index(h, before, after, x.device)
        ci = _symmetric_index(w, before, after, x.device)
        xp = x[:, :, ri][:, :, :, ci]
        if k in (2, 3) and not (torch.is_grad_enabled() and x.requires_grad):
            # no gradient wanted (predictions, BPDA's forward, black-box queries): a selection network
            # on the k*k shifted copies, 3-10x faster than kthvalue on a CPU; the same values
            shifted = [xp[:, :, i:i + h, j:j + w] for i in range(k) for j in range(k)]
            return _median4_upper(shifted) if k == 2 else _median9(shifted)
        patches = xp.unfold(2, k, 1).unfold(3, k, 1).reshape(n, c, h, w, k * k)
        rank = (k * k) // 2 + 1  # 1-based: scipy's rank size // 2 (0-based)
        return patches.kthvalue(rank, dim=-1).values

    def extra_repr(self) -> str:
        return f"size={self.size}"


# ------------------------------------------------------------------ non-differentiable


class BitDepth(Transform):
    """Reduce each pixel to ``bits`` bits (feature squeezing, Xu, Evans & Qi, NDSS 2018).

    ``x -> round(x * (2^bits - 1)) / (2^bits - 1)`` with halves rounded up, so ``bits=1`` is the
    threshold ``x >= 0.5``. Xu et al. use 1 bit on MNIST, 5 bits on CIFAR-10 and 4 on ImageNet.
    ``bits=8`` is the identity on 8-bit images. Piecewise constant: zero gradient (use BPDA).
    """

    differentiable = False

    def __init__(self, bits: int = 1):
        super().__init__()
        self.bits = _positive_int(bits, "bits")
        if self.bits > 24:
            raise ValueError(f"bits must be at most 24 (float32 resolution), got {bits}")

    def _transform(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        q = 2 ** self.bits - 1
        return torch.floor(x * q + 0.5).clamp(0, q) / q

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


class JPEG(Transform):
    """JPEG compression and decompression with a real codec (libjpeg, through Pillow).

    Each image is rounded to 8 bits, encoded at ``quality`` (1-100; 75 as in Guo et al. and
    Athalye et al.) and decoded. One channel is coded as greyscale, three as colour (with the
    codec's default 4:2:0 chroma subsampling). Runs on the CPU, one image at a time (about 0.1 ms
    for a 28 x 28 digit); the result comes back on ``x``'s device.
    Zero gradient (8-bit rounding makes it piecewise constant): use BPDA.
    """

    differentiable = False

    def __init__(self, quality: int = 75):
        super().__init__()
        self.quality = _positive_int(quality, "quality")
        if self.quality > 100:
            raise ValueError(f"quality must be in 1..100, got {quality}")

    def _transform(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        import io

        import numpy as np
        from PIL import Image

        c = x.shape[1]
        if c not in (1, 3):
            raise ValueError(f"JPEG codes 1 (greyscale) or 3 (RGB) channels, got {c}")
        u8 = (x.detach() * 255).round().clamp(0, 255).to(torch.uint8).cpu().permute(0, 2, 3, 1).numpy()
        out = np.empty_like(u8)
        for i, img in enumerate(u8):
            buf = io.BytesIO()
            Image.fromarray(img[..., 0] if c == 1 else img, mode="L" if c == 1 else "RGB").save(
                buf, format="JPEG", quality=self.quality)
            buf.seek(0)
            with Image.open(buf) as decoded:
                arr = np.asarray(decoded)
            out[i] = arr[..., None] if c == 1 else arr
        return torch.from_numpy(out).permute(0, 3, 1, 2).to(device=x.device, dtype=x.dtype) / 255

    def extra_repr(self) -> str:
        return f"quality={self.quality}"


# ------------------------------------------------------------------ total-variance minimisation


def _forward_diff(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences with Neumann boundary (the last difference along each axis is 0)."""
    gx = torch.zeros_like(z)
    gy = torch.zeros_like(z)
    gx[..., :, :-1] = z[..., :, 1:] - z[..., :, :-1]
    gy[..., :-1, :] = z[..., 1:, :] - z[..., :-1, :]
    return gx, gy


def _divergence(px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """``div p = -grad^T p`` for the forward differences above."""
    d = torch.zeros_like(px)
    d[..., :, 0] = px[..., :, 0]
    d[..., :, 1:-1] = px[..., :, 1:-1] - px[..., :, :-2]
    d[..., :, -1] = -px[..., :, -2]
    d[..., 0, :] += py[..., 0, :]
    d[..., 1:-1, :] += py[..., 1:-1, :] - py[..., :-2, :]
    d[..., -1, :] -= py[..., -2, :]
    return d


@torch.no_grad()
def tv_minimize(x: torch.Tensor, mask: torch.Tensor | None = None, *, weight: float, isotropic: bool = False,
                max_iter: int = 200) -> torch.Tensor:
    """Masked total-variation minimisation (Rudin, Osher & Fatemi 1992; masked as in Guo et al. 2018).

    Solves, per image and channel::

        z* = argmin_z  1/2 sum_i m_i (z_i - x_i)^2  +  weight * TV(z)

    with ``TV(z) = sum_i |d_x z_i| + |d_y z_i|`` (anisotropic, as Guo et al.'s split-Bregman code)
    or ``sum_i sqrt(d_x z_i^2 + d_y z_i^2)`` (isotropic, as ``skimage.restoration.
    denoise_tv_chambolle``), forward differences with a Neumann boundary. ``m`` is the mask of
    kept pixels (all ones: plain TV denoising; zeros are filled in by the TV prior alone).

    The solver is the primal-dual algorithm of Chambolle & Pock ("A first-order primal-dual
    algorithm for convex problems with applications to imaging", JMIV 2011, Alg. 1) with
    ``tau = sigma = 0.99 / sqrt(8)`` (``||grad||^2 <= 8``), started at ``z = x``::

        p    <- proj_{|p| <= weight}(p + sigma * grad(z_bar))
        z'   <- (z + tau * div(p) + tau * m * x) / (1 + tau * m)
        z_bar = 2 z' - z;   z <- z'

    Batched over ``N x C`` on ``x``'s device; no gradient. ``weight=0`` returns ``x``.
    """
    _check_batch(x)
    weight = _number(weight, "weight")
    max_iter = _positive_int(max_iter, "max_iter")
    f = x.detach()
    if weight == 0:
        return f.clone()
    m = torch.ones_like(f) if mask is None else mask.to(f).expand_as(f)
    tau = sigma = 0.99 / math.sqrt(8.0)
    z = f.clone()
    z_bar = z.clone()
    px = torch.zeros_like(f)
    py = torch.zeros_like(f)
    for _ in range(max_iter):
        gx, gy = _forward_diff(z_bar)
        px.add_(gx, alpha=sigma)
        py.add_(gy, alpha=sigma)
        if isotropic:
            scale = (torch.sqrt(px * px + py * py) / max(weight, 1e-30)).clamp_min(1.0)
            px.div_(scale)
            py.div_(scale)
        else:
            px.clamp_(-weight, weight)
            py.clamp_(-weight, weight)
        z_new = (z + tau * _divergence(px, py) + tau * m * f) / (1 + tau * m)
        z_bar = 2 * z_new - z
        z = z_new
    return z


class TVM(RandomTransform):
    """Total-variance minimisation (Guo, Rana, Cisse & van der Maaten, ICLR 2018).

    Keep each pixel with probability ``keep_prob`` (one Bernoulli mask per image, shared by its
    channels, fresh at every call), then reconstruct the "simplest" image consistent with the
    kept pixels, :func:`tv_minimize` with ``weight = lambda_tv / 2``. Guo et al.'s code (split
    Bregman, as ``skimage.restoration.denoise_tv_bregman`` but with the mask; ``keep_prob=0.5,
    lambda_tv=0.03``, Bregman weight ``2 / lambda_tv``) minimises
    ``TV(z) + (1 / lambda_tv) ||m * (z - x)||^2``, the same problem scaled by ``lambda_tv / 2``.

    Randomised and non-differentiable (zero gradient): attack it with BPDA (identity) + EOT, as
    Athalye et al. did. ``lambda_tv=0`` with ``keep_prob=1`` is the identity.
    """

    differentiable = False

    def __init__(self, keep_prob: float = 0.5, lambda_tv: float = 0.03, *, isotropic: bool = False,
                 max_iter: int = 200, seed: int = 0):
        super().__init__(seed)
        self.keep_prob = _number(keep_prob, "keep_prob", 0.0, 1.0)
        self.lambda_tv = _number(lambda_tv, "lambda_tv")
        self.isotropic = bool(isotropic)
        self.max_iter = _positive_int(max_iter, "max_iter")

    def _transform(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        n, _, h, w = x.shape
        if self.lambda_tv == 0 and self.keep_prob == 1:
            return x
        mask = (torch.rand((n, 1, h, w), generator=self._gen(generator)) < self.keep_prob).to(x)
        z = tv_minimize(x, mask.to(x.device), weight=self.lambda_tv / 2, isotropic=self.isotropic,
                        max_iter=self.max_iter)
        return z.clamp(0, 1)

    def extra_repr(self) -> str:
        return (f"keep_prob={self.keep_prob}, lambda_tv={self.lambda_tv}, isotropic={self.isotropic}, "
                f"max_iter={self.max_iter}, seed={self.seed}")


# ------------------------------------------------------------------ thermometer encoding


def _levels_grid(levels: int, x: torch.Tensor) -> torch.Tensor:
    return (torch.arange(levels, device=x.device, dtype=x.dtype) / levels).view(1, 1, levels, 1, 1)


def thermometer_encode(x: torch.Tensor, levels: int = 16) -> torch.Tensor:
    """Thermometer code (Buckman et al., ICLR 2018, as written by Athalye et al. 2018, Sec. 5.2.1).

    ``tau(x)_k = 1 if x > k / levels else 0`` for ``k = 0 .. levels - 1``, per pixel and channel:
    ``N x C x H x W`` -> ``N x (C * levels) x H x W`` (channel ``c * levels + k``). A pixel of
    value ``v`` turns on ``ceil(v * levels)`` bits. Piecewise constant (no useful gradient).
    """
    _check_batch(x)
    levels = _positive_int(levels, "levels")
    n, c, h, w = x.shape
    code = (x.unsqueeze(2) > _levels_grid(levels, x)).to(x.dtype)
    return code.reshape(n, c * levels, h, w)


def thermometer_soft(x: torch.Tensor, levels: int = 16) -> torch.Tensor:
    """The linear ramp Athalye et al. use as BPDA's approximation of the thermometer code.

    ``tau_hat(x)_k = min(max(x - k / levels, 0) * levels, 1)``: piecewise linear, equal to
    :func:`thermometer_encode` on the grid ``x in {j / levels}``. Its derivative is taken as
    ``levels`` on the *closed* ramp ``k / levels <= x <= (k + 1) / levels`` (0 elsewhere): with
    autograd's ``clamp``, whose derivative is 0 at the ends, the pixels at exactly 0 or 1 (most
    of an MNIST digit) would get no gradient and BPDA from the clean image would stall.
    """
    _check_batch(x)
    levels = _positive_int(levels, "levels")
    n, c, h, w = x.shape
    r = (x.unsqueeze(2) - _levels_grid(levels, x)) * levels
    on_ramp = (r >= 0) & (r <= 1)
    soft = torch.where(on_ramp, r, r.detach().clamp(0, 1))
    return soft.reshape(n, c * levels, h, w)


class ThermometerEncoding(Transform):
    """:func:`thermometer_encode` as a module (``levels=16`` as Buckman et al.); zero gradient.

    ``approx`` is :func:`thermometer_soft` with the same ``levels``, BPDA's backward pass:
    ``BPDA(enc, approx=enc.approx)``.
    """

    differentiable = False

    def __init__(self, levels: int = 16):
        super().__init__()
        self.levels = _positive_int(levels, "levels")

    def _transform(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return thermometer_encode(x, self.levels)

    def approx(self, x: torch.Tensor) -> torch.Tensor:
        """The soft (linear) thermometer code: BPDA's differentiable approximation."""
        return thermometer_soft(x, self.levels)

    def extra_repr(self) -> str:
        return f"levels={self.levels}"


class ThermometerModel(nn.Module):
    """A classifier on thermometer-encoded pixels: ``net(tau(x))`` for ``x`` in [0, 1].

    ``net`` takes ``C * levels`` input channels, e.g. ``advkit.models.lenet5(in_channels=16)``
    for MNIST with 16 levels. ``bpda=False`` is the defense as deployed (a gradient attack gets
    a zero gradient at the encoding); ``bpda=True`` is the same forward pass with the gradient of
    :func:`thermometer_soft` (Athalye et al.'s attack). Train it like any model: the encoding
    is part of its forward pass.

    Example
    -------
    >>> from advkit import models
    >>> net = ThermometerModel(models.lenet5(in_channels=16), levels=16)   # train, then:  # doctest: +SKIP
    >>> pgd(net.eval(), x, y, eps=0.3).robust_accuracy                        # doctest: +SKIP
    >>> pgd(net.with_bpda(), x, y, eps=0.3).robust_accuracy                   # doctest: +SKIP
    """

    def __init__(self, net: nn.Module, levels: int = 16, *, bpda: bool = False):
        super().__init__()
        self.net = net
        self.levels = _positive_int(levels, "levels")
        self.bpda = bool(bpda)
        enc = ThermometerEncoding(self.levels)
        self.encoding = BPDA(enc._transform, approx=enc.approx) if self.bpda else enc
        self.train(net.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.encoding(x))

    def with_bpda(self) -> ThermometerModel:
        """The same network (shared weights) with BPDA through the encoding."""
        return ThermometerModel(self.net, self.levels, bpda=True)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, bpda={self.bpda}"


# ------------------------------------------------------------------ the registry


class Entry(NamedTuple):
    """``make()`` builds the transform (keyword arguments override the defaults); ``kind`` says how to attack it."""

    make: Callable[..., Transform]
    kind: str


def _entry(cls, **defaults) -> Entry:
    def make(**overrides):
        return cls(**{**defaults, **overrides})
    make.__name__ = cls.__name__
    make.__doc__ = f"{cls.__name__}({', '.join(f'{k}={v!r}' for k, v in defaults.items())}) unless overridden."
    probe = cls(**defaults)
    return Entry(make, probe.kind)


#: name -> (make, kind) with MNIST-sized defaults. ``make()`` gives a fresh transform (``make(seed=1)``,
#: ``make(bits=2)`` override a default). Thermometer encoding is not listed: it needs a model trained
#: on the code (:class:`ThermometerModel`).
TRANSFORMS: dict[str, Entry] = {
    "translate": _entry(RandomTranslate, max_shift=2),
    "rotate": _entry(RandomRotate, max_degrees=15.0),
    "mirror": _entry(RandomMirror, p=0.5),
    "blur": _entry(GaussianBlur, sigma=1.0),
    "noise": _entry(GaussianNoise, sigma=0.2),
    "jpeg": _entry(JPEG, quality=75),
    "bit_depth": _entry(BitDepth, bits=1),
    "median": _entry(MedianSmoothing, size=2),
    "tvm": _entry(TVM, keep_prob=0.5, lambda_tv=0.03),
}


def defended(model: nn.Module, name: str, *, bpda: bool = False, **overrides) -> Defended:
    """``preprocess(model, TRANSFORMS[name].make(**overrides), bpda=bpda)``: a registry entry before ``model``."""
    if name not in TRANSFORMS:
        raise ValueError(f"unknown transform {name!r}; choose one of {sorted(TRANSFORMS)}")
    return Defended(model, TRANSFORMS[name].make(**overrides), bpda=bpda)
