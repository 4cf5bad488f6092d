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
  ``glass_blur`` (the authors' loop), ``motion_blur`` (ImageMagick's ``MotionBlurImage``, which the
  authors call through Wand, in torch), ``zoom_blur`` (``scipy.ndimage.zoom``, as the authors);
* weather: ``snow`` (its snow layer is motion-blurred too), ``fog`` (the authors' plasma fractal);
* digital: ``brightness`` (HSV value + c, in closed form), ``contrast``, ``elastic_transform``
  (OpenCV's fixed-point ``warpAffine`` in NumPy, then SciPy as the authors), ``pixelate`` and
  ``jpeg_compression`` (Pillow, as the authors).

Not implemented (14 of 15 done): ``frost``, which blends the image with the authors' frost
photographs, image files advkit does not ship (:data:`FROST_SOURCE` says where they are); see
:data:`IMAGENET_C_NOT_IMPLEMENTED`. Line numbers below refer to ``corruptions.py`` and to
``ImageNet-C/create_c/make_imagenet_c.py`` (the script that made the released data; the same
functions) at commit 8190fe3 of ``hendrycks/robustness``.

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
from .mnist_corruptions import apply_motion_blur, plasma_fractal

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
    "motion_blur": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
    "snow": ((0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7), (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
             (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65), (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)),
    "elastic_transform": ((244 * 2, 244 * 0.7, 244 * 0.1), (244 * 2, 244 * 0.08, 244 * 0.2),
                          (244 * 0.05, 244 * 0.01, 244 * 0.02), (244 * 0.07, 244 * 0.01, 244 * 0.02),
                          (244 * 0.12, 244 * 0.01, 244 * 0.02)),
}
IMAGENET_C_NOT_IMPLEMENTED: tuple[str, ...] = ("frost",)

#: Why ``frost`` is not implemented, and where its images come from.
FROST_SOURCE = (
    "ImageNet-C 'frost' is not implemented in advkit: it blends the image with a random 224 x 224 crop of "
    "one of the authors' frost photographs (frost1.png, frost2.png, frost3.png, frost4.jpg, frost5.jpg; "
    "frost6.jpg is listed but never drawn), image files that are not generated and that advkit does not "
    "ship. They come with the authors' code, github.com/hendrycks/robustness, "
    "ImageNet-C/imagenet_c/imagenet_c/frost/ (also in the imagecorruptions package, imagecorruptions/frost/); "
    "the formula is corruptions.py, frost: clip(c0 x + c1 frost), (c0, c1) in ((1, 0.4), (0.8, 0.6), "
    "(0.7, 0.7), (0.65, 0.7), (0.6, 0.75)).")


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


def motion_blur(x: torch.Tensor, severity: int = 1, *, seed: int = 0) -> torch.Tensor:
    """ImageMagick's motion blur along an angle uniform in [-45, 45) degrees per image
    (``corruptions.py``, ``motion_blur``, lines 201-216; ``make_imagenet_c.py`` lines 328-343);
    ``(radius, sigma)`` in ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)).

    The authors call ImageMagick through Wand; the blur here is
    :func:`advkit.perturbations.mnist_corruptions.apply_motion_blur` (a one-sided Gaussian of
    ``2 radius + 1`` taps, edge pixels repeated), equal to ImageMagick's before its 8-bit
    output rounding (this one is not rounded: it differs by less than 1/255). The angle is
    ``np.random.uniform(-45, 45)`` from ``np.random.RandomState(seed)``, one per image in order.
    """
    _check_rgb(x, severity)
    radius, sigma = IMAGENET_C_SEVERITIES["motion_blur"][severity - 1]
    rng = np.random.RandomState(seed)
    angles = [rng.uniform(-45, 45) for _ in range(len(x))]
    return apply_motion_blur(x, radius, sigma, angles).clamp(0, 1)


def _rgb2gray_float32(img: np.ndarray) -> np.ndarray:
    """``cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)`` on an ``H x W x 3`` float32 image:
    ``0.299 R + 0.587 G + 0.114 B`` in float32 (OpenCV's weights; its SIMD sum may differ in the
    last bit)."""
    w = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return img[..., 0] * w[0] + img[..., 1] * w[1] + img[..., 2] * w[2]


def snow(x: torch.Tensor, severity: int = 1, *, seed: int = 0) -> torch.Tensor:
    """Snow (``corruptions.py``, ``snow``, lines 265-290; ``make_imagenet_c.py`` lines 406-431), with
    ``c`` in ((0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7), (0.55, 0.3, 4, 0.9,
    12, 8, 0.7), (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65), (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)).

    Per image, as the authors: a snow layer ``S ~ N(c0, c1^2)`` of the image's size, zoomed by
    ``c2`` about its centre (``clipped_zoom``), values below ``c3`` set to 0, clipped to [0, 1] and
    cast to 8 bits (``astype(np.uint8)``, which truncates), motion-blurred by ImageMagick with
    radius ``c4``, sigma ``c5`` along an angle uniform in [-135, -45) degrees (falling snow; here
    :func:`~advkit.perturbations.mnist_corruptions.apply_motion_blur`, then cast to 8 bits as
    ImageMagick writes the PNG the authors decode); then ``x <- c6 x + (1 - c6) max(x, 1.5
    gray(x) + 0.5)`` (float32, OpenCV's grey ``0.299 R + 0.587 G + 0.114 B``) and ``clip(x + S +
    rot180(S))``. Draws from
    ``np.random.RandomState(seed)`` in the authors' order (the layer, then the angle), image by
    image. Square images only (the authors' ``clipped_zoom``).

    The 8-bit cast of the blurred layer ``v`` (0..255) is ``floor(floor(257 v + 1/2) / 257)``: a
    16-bit quantum, then truncated to 8 bits, which is what ImageMagick 6.9.11 Q16 (Debian 12)
    was measured to write (``imagecorruptions`` rounds to nearest instead; the two differ by
    1/255 on some layer pixels). Other ImageMagick builds may round; the authors' build is not
    recorded.
    """
    _check_rgb(x, severity)
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"snow needs square images (the authors' clipped_zoom), got {tuple(x.shape[-2:])}")
    c = IMAGENET_C_SEVERITIES["snow"][severity - 1]
    h = x.shape[-1]
    rng = np.random.RandomState(seed)
    layers, angles = [], []
    for _ in range(len(x)):
        layer = rng.normal(size=(h, h), loc=c[0], scale=c[1])
        layer = _clipped_zoom(layer[..., None], c[2])[..., 0]
        layer[layer < c[3]] = 0
        layers.append((np.clip(layer, 0, 1) * 255).astype(np.uint8).astype(np.float64))   # PIL 'L' image
        angles.append(rng.uniform(-135, -45))
    layer = torch.from_numpy(np.stack(layers)).unsqueeze(1)
    layer = apply_motion_blur(layer, c[4], c[5], angles).clamp(0, 255)
    layer = torch.div(torch.floor(257 * layer + 0.5), 257, rounding_mode="floor") / 255     # N x 1 x H x W, 8 bits
    img = x.detach().cpu().permute(0, 2, 3, 1).numpy().astype(np.float32)                 # N x H x W x 3
    gray = _rgb2gray_float32(img)[..., None]
    img = c[6] * img + (1 - c[6]) * np.maximum(img, gray * 1.5 + 0.5)
    img = torch.from_numpy(img).permute(0, 3, 1, 2).double()
    out = img + layer + torch.rot90(layer, 2, dims=(2, 3))
    return out.clamp(0, 1).to(x.device, x.dtype)


def _get_affine_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``cv2.getAffineTransform``: the 2 x 3 matrix mapping three ``(x, y)`` points ``src`` onto
    ``dst``, solved in float64."""
    a = np.concatenate([src.astype(np.float64), np.ones((3, 1))], axis=1)
    return np.linalg.solve(a, dst.astype(np.float64)).T


def _reflect101(p: np.ndarray, n: int) -> np.ndarray:
    """OpenCV's ``borderInterpolate`` for ``BORDER_REFLECT_101`` (``gfedcb|abcdefgh|gfedcba``)."""
    if n == 1:
        return np.zeros_like(p)
    period = 2 * n - 2
    p = np.abs(p) % period
    return np.where(p >= n, period - p, p)


def warp_affine_reflect101(img: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``cv2.warpAffine(img, m, (W, H), flags=INTER_LINEAR, borderMode=BORDER_REFLECT_101)`` for an
    ``H x W (x C)`` float32 image, with OpenCV's fixed-point arithmetic (``imgwarp.cpp``).

    OpenCV inverts ``m`` and, per destination pixel ``(x, y)``, computes the source position in
    units of 1/1024 pixel with ``cvRound``, then keeps 1/32 pixel (``INTER_BITS = 5``): ``X =
    (round(1024 (m10 y + m12)) + 16 + round(1024 m00 x)) >> 5`` (likewise ``Y``). The bilinear
    weights are ``(32 - fx)(32 - fy) / 1024`` and so on for the fractions ``fx, fy`` in 0..31,
    the sum is in float32, and neighbours outside the image are reflected
    (``BORDER_REFLECT_101``). Bit-identical to ``cv2.warpAffine`` of OpenCV 4.10 and 4.14 on a
    test image (an exact float bilinear warp differs from both by up to 0.018 there).
    """
    h, w = img.shape[:2]
    m = np.asarray(m, dtype=np.float64).reshape(6)
    d = m[0] * m[4] - m[1] * m[3]
    d = 1.0 / d if d != 0 else 0.0
    i00, i01, i10, i11 = m[4] * d, -m[1] * d, -m[3] * d, m[0] * d
    i02 = -i00 * m[2] - i01 * m[5]
    i12 = -i10 * m[2] - i11 * m[5]
    scale = 1024
    xs, ys = np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64)
    adelta = np.rint(i00 * xs * scale).astype(np.int64)
    bdelta = np.rint(i10 * xs * scale).astype(np.int64)
    x0 = np.rint((i01 * ys + i02) * scale).astype(np.int64) + scale // 32 // 2
    y0 = np.rint((i11 * ys + i12) * scale).astype(np.int64) + scale // 32 // 2
    big_x = (x0[:, None] + adelta[None, :]) >> 5
    big_y = (y0[:, None] + bdelta[None, :]) >> 5
    ix, fx = big_x >> 5, (big_x & 31).astype(np.float32) / np.float32(32)
    iy, fy = big_y >> 5, (big_y & 31).astype(np.float32) / np.float32(32)
    c0, c1 = _reflect101(ix, w), _reflect101(ix + 1, w)
    r0, r1 = _reflect101(iy, h), _reflect101(iy + 1, h)
    one = np.float32(1)
    w00, w01 = (one - fy) * (one - fx), (one - fy) * fx
    w10, w11 = fy * (one - fx), fy * fx
    if img.ndim == 3:
        w00, w01, w10, w11 = (v[..., None] for v in (w00, w01, w10, w11))
    img = img.astype(np.float32, copy=False)
    out = img[r0, c0] * w00 + img[r0, c1] * w01 + img[r1, c0] * w10 + img[r1, c1] * w11
    return out.astype(np.float32)


def elastic_transform(x: torch.Tensor, severity: int = 1, *, seed: int = 0) -> torch.Tensor:
    """A random affine map, then a smooth random displacement field (``corruptions.py``,
    ``elastic_transform``, lines 395-424; ``make_imagenet_c.py`` lines 539-568); ``(alpha, sigma,
    affine)`` in ((244 * 2, 244 * 0.7, 244 * 0.1), (244 * 2, 244 * 0.08, 244 * 0.2),
    (244 * 0.05, 244 * 0.01, 244 * 0.02), (244 * 0.07, 244 * 0.01, 244 * 0.02),
    (244 * 0.12, 244 * 0.01, 244 * 0.02)) pixels ("244 should have been 224", the authors' note).

    Per image, as the authors: the three points ``(c + s, c + s), (c0 + s, c1 - s), (c - s, c - s)``
    with ``c = (H // 2, W // 2)``, ``s = min(H, W) // 3`` move by ``U(-affine, affine)`` each
    (float32), and the image is warped by the affine map between them
    (:func:`warp_affine_reflect101`, OpenCV's ``warpAffine``); then ``dx, dy = alpha *
    gaussian(U(-1, 1)^{H x W}, sigma)`` (``skimage.filters.gaussian(mode='reflect', truncate=3)``,
    i.e. ``scipy.ndimage.gaussian_filter``) and the image is resampled at ``(row + dy, col + dx)``
    (``scipy.ndimage.map_coordinates(order=1, mode='reflect')``; SciPy >= 1.6 treats points
    within a pixel of the border differently from the SciPy of 2018). Draws from
    ``np.random.RandomState(seed)`` in the authors' order (the points, ``dx``, ``dy``), image by
    image. The constants are pixels of a 224-pixel image; severities 1-2 are mostly the affine
    part and move pixels further than severities 3-5, so the mean change is not monotone in
    severity.
    """
    _check_rgb(x, severity)
    from scipy.ndimage import gaussian_filter, map_coordinates

    alpha, sigma, affine = IMAGENET_C_SEVERITIES["elastic_transform"][severity - 1]
    rng = np.random.RandomState(seed)
    h, w = x.shape[-2:]
    center = np.float32((h, w)) // 2
    size = min(h, w) // 3
    pts1 = np.float32([center + size, [center[0] + size, center[1] - size], center - size])
    rows, cols, chans = np.meshgrid(np.arange(h), np.arange(w), np.arange(3), indexing="ij")
    outs = []
    for img in x.detach().cpu().permute(0, 2, 3, 1).numpy().astype(np.float32):
        pts2 = pts1 + rng.uniform(-affine, affine, size=pts1.shape).astype(np.float32)
        img = warp_affine_reflect101(img, _get_affine_transform(pts1, pts2))
        dx = (gaussian_filter(rng.uniform(-1, 1, size=(h, w)), sigma, mode="reflect", truncate=3) * alpha)
        dy = (gaussian_filter(rng.uniform(-1, 1, size=(h, w)), sigma, mode="reflect", truncate=3) * alpha)
        dx, dy = dx.astype(np.float32)[..., None], dy.astype(np.float32)[..., None]
        coords = (np.reshape(rows + dy, (-1, 1)), np.reshape(cols + dx, (-1, 1)), np.reshape(chans, (-1, 1)))
        outs.append(np.clip(map_coordinates(img, coords, order=1, mode="reflect").reshape(h, w, 3), 0, 1))
    return torch.from_numpy(np.stack(outs)).permute(0, 3, 1, 2).to(x.device, x.dtype)


def frost(x: torch.Tensor, severity: int = 1, *, seed: int = 0) -> torch.Tensor:
    """Not implemented: ImageNet-C's frost blends the image with a random crop of one of the
    authors' frost *photographs* (``corruptions.py``, ``frost``, lines 244-262: ``c0 x + c1
    frost``, ``(c0, c1)`` in ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))).
    Raises :class:`NotImplementedError`; see :data:`FROST_SOURCE`."""
    raise NotImplementedError(FROST_SOURCE)


_FUNCS = {"gaussian_noise": gaussian_noise, "shot_noise": shot_noise, "impulse_noise": impulse_noise,
          "defocus_blur": defocus_blur, "zoom_blur": zoom_blur, "fog": fog, "brightness": brightness,
          "contrast": contrast, "pixelate": pixelate, "jpeg_compression": jpeg_compression,
          "glass_blur": glass_blur, "motion_blur": motion_blur, "snow": snow, "elastic_transform": elastic_transform}
_SEEDED = {"gaussian_noise", "shot_noise", "impulse_noise", "fog", "glass_blur", "motion_blur", "snow",
           "elastic_transform"}


def imagenet_c(x: torch.Tensor, name: str, severity: int, *, seed: int = 0) -> torch.Tensor:
    """Apply the ImageNet-C corruption ``name`` (one of :data:`IMAGENET_C_CORRUPTIONS`) at
    ``severity`` 1..5."""
    if name == "frost":
        raise NotImplementedError(FROST_SOURCE + f" Implemented: {', '.join(_FUNCS)}.")
    if name in IMAGENET_C_NOT_IMPLEMENTED:
        raise NotImplementedError(f"ImageNet-C {name!r} is not implemented yet in advkit (implemented: "
                                  f"{', '.join(_FUNCS)})")
    if name not in _FUNCS:
        raise ValueError(f"unknown ImageNet-C corruption {name!r}; choose one of {', '.join(IMAGENET_C_CORRUPTIONS)}")
    fn = _FUNCS[name]
    return fn(x, severity, seed=seed) if name in _SEEDED else fn(x, severity)
