"""ImageNet-C corruptions at five severities (Hendrycks & Dietterich, ICLR 2019).

Constants from the authors' ``hendrycks/robustness`` ``ImageNet-C/imagenet_c/imagenet_c/
corruptions.py`` (cited as ``corruptions.py``); the ``c = [...][severity - 1]`` list of each
function is :data:`IMAGENET_C_SEVERITIES`. The maintained-looking package ``imagecorruptions``
(1.1.2, 2020) is a copy of that file and does not run on current libraries: checked in this
project's environment (NumPy 2.4, scikit-image 0.26, SciPy 1.17), it needs ``pkg_resources``
(gone from current setuptools) and ``glass_blur``, ``gaussian_blur`` (``multichannel=``) and
``fog`` (``np.float_``) raise. So the corruptions are reimplemented here, batched on
``N x 3 x H x W`` tensors in [0, 1], seeded, with the authors' arithmetic:

* noise: ``gaussian_noise``, ``shot_noise``, ``impulse_noise``;
* blur: ``defocus_blur`` (the authors' anti-aliased disk kernel, OpenCV's reflect-101 border),
  ``zoom_blur`` (``scipy.ndimage.zoom``, as the authors), ``glass_blur`` (the authors' loop);
* weather: ``fog`` (the authors' plasma fractal);
* digital: ``brightness`` (HSV value + c, in closed form), ``contrast``, ``pixelate`` and
  ``jpeg_compression`` (Pillow, as the authors).

Not yet (11 of 15 done): ``motion_blur`` and ``snow`` (ImageMagick's motion-blur kernel),
``frost`` (needs the authors' frost photographs), ``elastic_transform`` (OpenCV's fixed-point
``warpAffine``); see :data:`IMAGENET_C_NOT_IMPLEMENTED`.

The constants are the ImageNet ones (224-pixel images); on Imagenette-160 the same severities
are slightly stronger per pixel for the size-relative ones (pixelate and zoom are relative,
the blur radii are in pixels). Random corruptions draw from an explicit seed, so results are
reproducible but not the bytes of the released ImageNet-C files.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from .common import _check_batch, _generator
from .corruption_metrics import IMAGENET_C_CORRUPTIONS
from .mnist_corruptions import plasma_fractal

#: ``corruptions.py``: each function's ``c`` list, severity 1..5.
IMAGENET_C_SEVERITIES: dict[str, tuple] = {
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
    "shot_noise": (60, 25, 12, 5, 3),
    "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),
    "defocus_blur": ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
    "zoom_blur": ((1.0, 1.11, 0.01), (1.0, 1.16, 0.01), (1.0, 1.21, 0.02), (1.0, 1.26, 0.02), (1.0, 1.31, 0.03)),
    "fog": ((1.5, 2.0), (2.0, 2.0), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)),
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
    "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),
    "jpeg_compression": (25, 18, 15, 10, 7),
    "glass_blur": ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
}
IMAGENET_C_NOT_IMPLEMENTED: tuple[str, ...] = ("motion_blur", "snow", "frost", "elastic_transform")


def _check_rgb(x: torch.Tensor, severity: int) -> None:
    _check_batch(x)
    if x.shape[1] != 3:
        raise ValueError(f"ImageNet-C corruptions take RGB images N x 3 x H x W, got {x.shape[1]} channels; "
                         "use advkit.perturbations.to_rgb for grey images")
    if isinstance(severity, bool) or not isinstance(severity, int) or not 1 <= severity <= 5:
        raise ValueError(f"severity must be an int in 1..5, got {severity!r}")


def gaussian_noise(x: torch.Tensor, severity: int = 1, *, seed: int = 0) -> torch.Tensor:
    """``clip(x + N(0, c^2))``, ``c`` in (0.08, 0.12, 0.18, 0.26, 0.38)."""
    _check_rgb(x, severity)
    c = IMAGENET_C_SEVERITIES["gaussian_noise"][severity - 1]
    noise = torch.randn(x.shape, generator=_generator(seed, None), dtype=torch.float64) * c
    return (x + noise.to(x.device, x.dtype)).clamp(0, 1)


def shot_noise(x: torch.Tensor, severity: int = 1, *, seed: int = 0) -> torch.Tensor:
    """``clip(Poisson(c x) / c)``, ``c`` in (60, 25, 12, 5, 3)."""
    _check_rgb(x, severity)
    c = IMAGENET_C_SEVERITIES["shot_noise"][severity - 1]
    out = torch.poisson(x.detach().cpu().double() * c, generator=_generator(seed, None)) / c
    return out.clamp(0, 1).to(x.device, x.dtype)


def impulse_noise(x: torch.Tensor, severity: int = 1, *, seed: int = 0) -> torch.Tensor:
    """Salt and pepper on every channel value with probability ``c`` in (0.03, 0.06, 0.09, 0.17,
    0.27), salt or pepper with equal odds (``skimage.util.random_noise(mode='s&p')``)."""
    _check_rgb(x, severity)
    c = IMAGENET_C_SEVERITIES["impulse_noise"][severity - 1]
    gen = _generator(seed, None)
    flip = torch.rand(x.shape, generator=gen) <= c
    salt = torch.rand(x.shape, generator=gen) <= 0.5
    out = x.detach().cpu().clone()
    out[flip & salt] = 1.0
    out[flip & ~salt] = 0.0
    return out.to(x.device, x.dtype)


def _gaussian_kernel_1d(ksize: int, sigma: float) -> torch.Tensor:
    """OpenCV's ``getGaussianKernel`` for ``sigma > 0``."""
    i = torch.arange(ksize, dtype=torch.float64) - (ksize - 1) / 2
    k = torch.exp(-(i ** 2) / (2 * sigma ** 2))
    return k / k.sum()


def disk_kernel(radius: int, alias_blur: float) -> torch.Tensor:
    """``corruptions.py``, ``disk``: the indicator of ``X^2 + Y^2 <= r^2`` on ``[-8, 8]^2`` (or
    ``[-r, r]^2`` for ``r > 8``), normalised, then ``cv2.GaussianBlur`` with a 3 x 3 (5 x 5) kernel
    of ``sigma = alias_blur`` and OpenCV's default reflect-101 border."""
    half = 8 if radius <= 8 else radius
    ks = 3 if radius <= 8 else 5
    ax = torch.arange(-half, half + 1, dtype=torch.float64)
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    d = ((xx ** 2 + yy ** 2) <= radius ** 2).to(torch.float64)
    d = d / d.sum()
    g = _gaussian_kernel_1d(ks, alias_blur)
    p = ks // 2
    d = F.pad(d[None, None], (p, p, p, p), mode="reflect")
    d = F.conv2d(d, g.view(1, 1, 1, -1))
    d = F.conv2d(d, g.view(1, 1, -1, 1))
    return d[0, 0].to(torch.float32)  # the authors' disk is float32


def defocus_blur(x: torch.Tensor, severity: int = 1) -> torch.Tensor:
    """Convolve each channel with :func:`disk_kernel` (``cv2.filter2D``, reflect-101 border);
    ``(radius, alias_blur)`` in ((3, .1), (4, .5), (6, .5), (8, .5), (10, .5))."""
    _check_rgb(x, severity)
    r, a = IMAGENET_C_SEVERITIES["defocus_blur"][severity - 1]
    k = disk_kernel(r, a).to(x.device, x.dtype)
    p = k.shape[-1] // 2
    xp = F.pad(x, (p, p, p, p), mode="reflect")
    out = F.conv2d(xp.reshape(-1, 1, *xp.shape[-2:]), k[None, None]).reshape(x.shape)
    return out.clamp(0, 1)


def glass_blur(x: torch.Tensor, severity: int = 1, *, seed: int = 0) -> torch.Tensor:
    """Blur, move pixels locally, blur (``corruptions.py``, ``glass_blur``; ``(sigma, max_delta,
    iterations)`` in ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))).

    Faithful to a quirk of the authors' loop: ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` on an
    ``H x W x 3`` array assigns through views, so it *copies* pixel ``(h', w')`` onto ``(h, w)``
    and leaves ``(h', w')`` as it was, rather than swapping. Offsets are
    ``np.random.randint(-max_delta, max_delta)`` (the upper end excluded), drawn from
    ``np.random.RandomState(seed)`` in the authors' order. A Python loop: about a second per
    160-pixel image and iteration.
    """
    _check_rgb(x, severity)
    sigma, delta, iters = IMAGENET_C_SEVERITIES["glass_blur"][severity - 1]
    from scipy.ndimage import gaussian_filter

    rng = np.random.RandomState(seed)
    h_size, w_size = x.shape[-2:]
    outs = []
    for img in x:
        arr = (img.detach().cpu().permute(1, 2, 0).double().numpy() * 255).round().clip(0, 255) / 255
        a = np.uint8(gaussian_filter(arr, (sigma, sigma, 0), mode="nearest", truncate=4.0) * 255)
        for _ in range(iters):
            for h in range(h_size - delta, delta, -1):
                for w in range(w_size - delta, delta, -1):
                    dx, dy = rng.randint(-delta, delta, size=(2,))
                    a[h, w] = a[h + dy, w + dx]
        outs.append(np.clip(gaussian_filter(a / 255.0, (sigma, sigma, 0), mode="nearest", truncate=4.0), 0, 1))
    return torch.from_numpy(np.stack(outs)).permute(0, 3, 1, 2).to(x.device, x.dtype)


def _clipped_zoom(img: np.ndarray, zoom_factor: float) -> np.ndarray:
    """``corruptions.py``, ``clipped_zoom``: zoom the centre crop back to full size (H x W x C)."""
    from scipy.ndimage import zoom as scizoom

    h = img.shape[0]
    ch = int(np.ceil(h / float(zoom_factor)))
    top = (h - ch) // 2
    img = scizoom(img[top:top + ch, top:top + ch], (zoom_factor, zoom_factor, 1), order=1)
    trim_top = (img.shape[0] - h) // 2
    return img[trim_top:trim_top + h, trim_top:trim_top + h]


def zoom_blur(x: torch.Tensor, severity: int = 1) -> torch.Tensor:
    """Average of the image and its zooms by ``np.arange(1, hi, step)`` (``corruptions.py``,
    ``zoom_blur``: (1.11, .01), (1.16, .01), (1.21, .02), (1.26, .02), (1.31, .03)). Square
    images only, as the authors'."""
    _check_rgb(x, severity)
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"zoom_blur needs square images (the authors' clipped_zoom), got {tuple(x.shape[-2:])}")
    lo, hi, step = IMAGENET_C_SEVERITIES["zoom_blur"][severity - 1]
    factors = np.arange(lo, hi, step)
    outs = []
    for img in x.detach().cpu().permute(0, 2, 3, 1).numpy().astype(np.float32):
        acc = np.zeros_like(img)
        for z in factors:
            acc += _clipped_zoom(img, z)
        outs.append(np.clip((img + acc) / (len(factors) + 1), 0, 1))
    return torch.from_numpy(np.stack(outs)).permute(0, 3, 1, 2).to(x.device, x.dtype)


def fog(x: torch.Tensor, severity: int = 1, *, seed: int = 0) -> torch.Tensor:
    """``clip((x + c0 F) m / (m + c0))`` with the plasma fractal ``F`` (decay ``c1``) on all
    channels and ``m`` the image's maximum; ``(c0, c1)`` in ((1.5, 2), (2, 2), (2.5, 1.7),
    (2.5, 1.5), (3, 1.4))."""
    _check_rgb(x, severity)
    c0, c1 = IMAGENET_C_SEVERITIES["fog"][severity - 1]
    n, _, h, w = x.shape
    if max(h, w) > 256:
        raise ValueError(f"fog's plasma fractal is 256 x 256 (as the authors'); images of {h} x {w} are too large")
    rng = np.random.RandomState(seed)  # the authors' np.random stream after np.random.seed(seed)
    frac = torch.from_numpy(np.stack([plasma_fractal(256, c1, rng=rng)[:h, :w] for _ in range(n)]))
    frac = frac.to(x.device, x.dtype).unsqueeze(1)
    m = x.amax(dim=(1, 2, 3), keepdim=True)
    return ((x + c0 * frac) * m / (m + c0)).clamp(0, 1)


def brightness(x: torch.Tensor, severity: int = 1) -> torch.Tensor:
    """Add ``c`` in (0.1, ..., 0.5) to the HSV value (``rgb2hsv``, ``V + c`` clipped,
    ``hsv2rgb``). With hue and saturation fixed, RGB scales by ``V' / V`` where ``V = max(r, g,
    b) > 0``; a black pixel (saturation 0) becomes grey ``c``. Deterministic."""
    _check_rgb(x, severity)
    c = IMAGENET_C_SEVERITIES["brightness"][severity - 1]
    v = x.amax(dim=1, keepdim=True)
    v2 = (v + c).clamp(max=1)
    scaled = x * (v2 / v.clamp_min(1e-12))
    return torch.where(v > 0, scaled, v2.expand_as(x)).clamp(0, 1)


def contrast(x: torch.Tensor, severity: int = 1) -> torch.Tensor:
    """``clip((x - mean) c + mean)`` with the per-image, per-channel mean; ``c`` in
    (0.4, 0.3, 0.2, 0.1, 0.05). Deterministic."""
    _check_rgb(x, severity)
    c = IMAGENET_C_SEVERITIES["contrast"][severity - 1]
    mean = x.mean(dim=(2, 3), keepdim=True)
    return ((x - mean) * c + mean).clamp(0, 1)


def _to_pil(img: torch.Tensor) -> Image.Image:
    arr = (img.detach().cpu().permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def _from_pil(imgs: list[Image.Image], like: torch.Tensor) -> torch.Tensor:
    arr = np.stack([np.asarray(im, dtype=np.float32) / 255 for im in imgs])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).to(like.device, like.dtype)


def pixelate(x: torch.Tensor, severity: int = 1) -> torch.Tensor:
    """Pillow ``BOX`` resize to ``int(W c) x int(H c)`` and back, ``c`` in (0.6, 0.5, 0.4, 0.3, 0.25);
    the image is first rounded to 8 bits (the authors' input was a PIL image)."""
    _check_rgb(x, severity)
    c = IMAGENET_C_SEVERITIES["pixelate"][severity - 1]
    h, w = x.shape[-2:]
    out = [_to_pil(im).resize((int(w * c), int(h * c)), Image.BOX).resize((w, h), Image.BOX) for im in x]
    return _from_pil(out, x)


def jpeg_compression(x: torch.Tensor, severity: int = 1) -> torch.Tensor:
    """Pillow JPEG at quality ``c`` in (25, 18, 15, 10, 7), decoded back (8-bit input)."""
    _check_rgb(x, severity)
    q = IMAGENET_C_SEVERITIES["jpeg_compression"][severity - 1]
    out = []
    for im in x:
        buf = io.BytesIO()
        _to_pil(im).save(buf, "JPEG", quality=q)
        buf.seek(0)
        out.append(Image.open(buf).convert("RGB"))
    return _from_pil(out, x)


_FUNCS = {"gaussian_noise": gaussian_noise, "shot_noise": shot_noise, "impulse_noise": impulse_noise,
          "defocus_blur": defocus_blur, "zoom_blur": zoom_blur, "fog": fog, "brightness": brightness,
          "contrast": contrast, "pixelate": pixelate, "jpeg_compression": jpeg_compression,
          "glass_blur": glass_blur}
_SEEDED = {"gaussian_noise", "shot_noise", "impulse_noise", "fog", "glass_blur"}


def imagenet_c(x: torch.Tensor, name: str, severity: int, *, seed: int = 0) -> torch.Tensor:
    """Apply the ImageNet-C corruption ``name`` (one of :data:`IMAGENET_C_CORRUPTIONS`) at
    ``severity`` 1..5."""
    if name in IMAGENET_C_NOT_IMPLEMENTED:
        raise NotImplementedError(f"ImageNet-C {name!r} is not implemented yet in advkit (implemented: "
                                  f"{', '.join(_FUNCS)})")
    if name not in _FUNCS:
        raise ValueError(f"unknown ImageNet-C corruption {name!r}; choose one of {', '.join(IMAGENET_C_CORRUPTIONS)}")
    fn = _FUNCS[name]
    return fn(x, severity, seed=seed) if name in _SEEDED else fn(x, severity)
