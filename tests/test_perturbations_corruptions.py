"""advkit.perturbations: MNIST-C corruptions and the mCE summaries.

MNIST-C (Mu & Gilmer 2019) against the authors' constants (google-research/mnist-c
``corruptions.py``) and scikit-image (the library the authors' code called: ``warp`` with an
``inverse_map``, the HSV brightness pipeline); the plasma fractal of ``fog`` against numbers
produced by the authors' ``plasma_fractal`` after ``np.random.seed(0)`` (with ``np.float_``
replaced by ``np.float64``, the only change it needs on NumPy 2). mCE against the paper's
formulas and the AlexNet normaliser.

Motion blur (MNIST-C and ImageNet-C ``motion_blur``, the snow layer of ImageNet-C ``snow``) against
a transcription of ``imagecorruptions``' NumPy port of ImageMagick's kernel, and against numbers
from the authors' own functions run with ImageMagick (Wand) and OpenCV (see ``WAND_CV2_SEED0``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import advkit.perturbations as P
from advkit.perturbations import mnist_corruptions as MC


@pytest.fixture(scope="module")
def digits(mnist_test) -> torch.Tensor:
    return mnist_test[0][:20]


# ---------------------------------------------------------------- MNIST-C

def test_corruption_list_and_constants():
    assert len(P.MNIST_C_CORRUPTIONS) == 15
    assert set(P.MNIST_C_NOT_IMPLEMENTED) < set(P.MNIST_C_CORRUPTIONS)
    assert P.MNIST_C_PARAMS == {"shot_noise": 3, "impulse_noise": 0.17, "shear": 0.4, "scale": 1 / 0.7,
                                "rotate": 0.4, "brightness": 0.5, "translate": 3, "fog": (3.0, 1.4),
                                "glass_blur": (0.7, 1, 2), "spatter": (0.65, 0.3, 1, 0.65, 1.5, 1),
                                "motion_blur": (10, 3)}    # corruptions.py motion_blur: severity 1 of [(10, 3), ...]
    assert P.MNIST_C_NOT_IMPLEMENTED == ()
    with pytest.raises(ValueError, match="unknown MNIST-C"):
        P.mnist_c(torch.zeros(1, 1, 28, 28), "blur")
    with pytest.raises(ValueError, match="to_grey"):
        P.mnist_c(torch.zeros(1, 3, 28, 28), "stripe")


@pytest.mark.parametrize("name", [c for c in P.MNIST_C_CORRUPTIONS if c not in P.MNIST_C_NOT_IMPLEMENTED])
def test_shape_range_seed_and_change(digits, name):
    before = digits.clone()
    a, b = P.mnist_c(digits, name, seed=1), P.mnist_c(digits, name, seed=1)
    assert a.shape == digits.shape and a.dtype == digits.dtype and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, b) and torch.equal(digits, before)
    assert (a - digits).abs().amax(dim=(1, 2, 3)).min() > 0.05   # every image is visibly corrupted


def test_warp_matches_skimage(digits):
    transform = pytest.importorskip("skimage.transform")
    img = digits[3, 0].double().numpy()
    cases = [np.array([[math.cos(0.4), -math.sin(0.4)], [math.sin(0.4), math.cos(0.4)]]),   # rotate
             np.array([[1, -math.sin(-0.4)], [0, math.cos(-0.4)]]),                          # shear (authors' skimage)
             np.eye(2) / 0.7]                                                                # scale
    for a in cases:
        m = np.eye(3)
        m[:2, :2] = a
        m[:2, 2] = 13.5 * (1 - a.sum(1))            # corruptions.py: a3 = 13.5 * (1 - a1 - a2)
        ref = np.clip(transform.warp(img, inverse_map=transform.AffineTransform(matrix=m)), 0, 1)
        ours = MC.warp(digits[3:4].double(), torch.tensor(a).unsqueeze(0))[0, 0].numpy()
        np.testing.assert_allclose(ours, ref, atol=1e-6)
    m = np.eye(3)
    m[:2, 2] = [3, -3]
    ref = transform.warp(img, inverse_map=transform.AffineTransform(matrix=m))
    ours = MC.warp(digits[3:4].double(), torch.eye(2, dtype=torch.float64)[None], torch.tensor([[3.0, -3.0]]))
    np.testing.assert_allclose(ours[0, 0].numpy(), ref, atol=1e-6)


def test_rotate_shear_translate_are_those_warps_with_a_random_sign(digits):
    out = P.mnist_c(digits, "rotate", seed=0)
    plus = P.rotate_translate(digits, -0.4 * 180 / math.pi)     # our rotate is counter-clockwise on screen
    minus = P.rotate_translate(digits, 0.4 * 180 / math.pi)
    close = [(torch.allclose(o, p, atol=1e-5), torch.allclose(o, m, atol=1e-5)) for o, p, m in zip(out, plus, minus)]
    assert all(a or b for a, b in close) and any(a for a, _ in close) and any(b for _, b in close)
    t = P.mnist_c(digits, "translate", seed=0)
    shifts = {(dx, dy) for dx in (-3, 3) for dy in (-3, 3)}
    for o, d in zip(t, digits):   # an integer shift by 3 in each direction: content moved by (-dx, -dy)
        assert any(torch.allclose(o, P.rotate_translate(d[None], 0, -dx, -dy)[0], atol=1e-6) for dx, dy in shifts)


def test_brightness_is_skimage_hsv_on_grey(digits):
    color = pytest.importorskip("skimage.color")
    img = digits[0, 0].double().numpy()
    hsv = color.rgb2hsv(color.gray2rgb(img))
    hsv[:, :, 2] = np.clip(hsv[:, :, 2] + 0.5, 0, 1)
    ref = np.clip(color.rgb2gray(color.hsv2rgb(hsv)), 0, 1)
    np.testing.assert_allclose(P.mnist_c(digits[:1].double(), "brightness")[0, 0].numpy(), ref, atol=1e-6)


def test_stripe_scale_exact(digits):
    ref = digits.clone()
    ref[..., :7] = 1 - digits[..., :7]
    ref[..., 21:] = 1 - digits[..., 21:]
    assert torch.equal(P.mnist_c(digits, "stripe"), ref)
    # scale keeps the centre pixel's value and ink mass shrinks by about 0.7^2
    s = P.mnist_c(digits, "scale")
    ratio = (s.sum() / digits.sum()).item()
    assert 0.4 < ratio < 0.55


def test_noise_statistics():
    x = torch.full((20, 1, 28, 28), 0.4)
    shot = P.mnist_c(x, "shot_noise", seed=0)
    assert torch.allclose(shot * 3, (shot * 3).round(), atol=1e-6)          # Poisson(3x) / 3
    # E[min(K, 3)] / 3 for K ~ Poisson(1.2): the clip at 1 lowers the mean below 0.4
    pk = [math.exp(-1.2) * 1.2 ** k / math.factorial(k) for k in range(3)]
    expected = (sum(k * p for k, p in enumerate(pk)) + 3 * (1 - sum(pk))) / 3
    assert abs(shot.mean().item() - expected) < 0.01
    imp = P.mnist_c(x, "impulse_noise", seed=0)
    changed = imp != x
    assert abs(changed.float().mean().item() - 0.17) < 0.01
    assert abs((imp[changed] == 1).float().mean().item() - 0.5) < 0.03


def test_fog_plasma_matches_the_authors_code():
    f = MC.plasma_fractal(256, 1.4, rng=np.random.RandomState(0))
    np.testing.assert_allclose(f[:2, :5], [[0.199883, 0.216546, 0.214966, 0.212111, 0.220136],
                                          [0.229958, 0.216421, 0.22516, 0.230553, 0.233077]], atol=1e-6)
    assert f[:28, :28].mean() == pytest.approx(0.308541, abs=1e-6)
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 10:18, 10:18] = 1.0                                             # max 1: (x + 3F) / 4
    out = MC.fog(x, seed=0)
    frac = MC.plasma_fractal(256, 1.4, rng=np.random.RandomState(0))[:28, :28]
    torch.testing.assert_close(out[0, 0], ((x[0, 0] + 3 * torch.from_numpy(frac).float()) / 4).clamp(0, 1))


# The authors' corruptions.py functions run on MNIST test digit 0 after np.random.seed(0): the
# output's sum and its sum weighted by (row * 28 + col) / 784. Their code ran here with
# np.float_ -> np.float64, np.int -> int, and skimage's old gaussian(multichannel=True) (on a
# 2-D image: sigma (s, 0)) emulated with scipy.ndimage.gaussian_filter(mode="nearest").
AUTHORS_SEED0_DIGIT0 = {
    "fog": (199.51423, 93.53465),
    "glass_blur": (71.93832, 37.97451),
    "spatter": (81.00858, 40.25985),
    "dotted_line": (92.22786, 48.38510),
    "zigzag": (111.73324, 56.08370),
    "canny_edges": (74.00000, 39.57908),
}


@pytest.mark.parametrize("name", list(AUTHORS_SEED0_DIGIT0))
def test_numpy_corruptions_equal_the_authors_code_for_the_same_seed(digits, name):
    out = P.mnist_c(digits[:1], name, seed=0)[0, 0].double().numpy()
    w = np.arange(784).reshape(28, 28) / 784
    total, weighted = AUTHORS_SEED0_DIGIT0[name]
    assert out.sum() == pytest.approx(total, abs=1e-3)
    assert (out * w).sum() == pytest.approx(weighted, abs=1e-3)


def test_glass_blur_blurs_vertically_only_as_the_authors_skimage_did():
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, :, 14] = 1.0                         # a vertical line: a vertical blur leaves it sharp
    out = MC.glass_blur(x, seed=0)[0, 0]
    far = torch.ones(28, dtype=torch.bool)
    far[11:18] = False                           # shuffling moves pixels by at most 1 per pass
    assert out[:, far].max() == 0


def test_dotted_line_adds_dashes(digits):
    out = P.mnist_c(digits, "dotted_line", seed=0)
    added = (out - digits).clamp_min(0).sum(dim=(1, 2))               # N x W: per column
    on = added > 0
    assert not on[:, 0::4].any() and on[:, 2::4].float().mean() > 0.5  # columns 0-1, 4-5, ... stay off


# ---------------------------------------------------------------- mCE

def test_mce_of_the_baseline_itself_is_100():
    assert P.mce(P.IMAGENET_C_ALEXNET_ERRORS) == pytest.approx(100.0)
    assert list(P.IMAGENET_C_ALEXNET_ERRORS) == list(P.IMAGENET_C_CORRUPTIONS)
    assert P.IMAGENET_C_ALEXNET_ERRORS["gaussian_noise"] == 0.886428
    assert P.IMAGENET_C_ALEXNET_ERRORS["jpeg_compression"] == 0.606500


def test_mce_by_hand():
    errors = {"a": [0.1, 0.2, 0.3, 0.4, 0.5], "b": [0.5] * 5}
    base = {"a": [0.6] * 5, "b": [0.25, 0.25, 0.25, 0.25, 0.25]}
    ce = P.corruption_errors(errors, base)
    assert ce == pytest.approx({"a": 50.0, "b": 200.0})                     # 1.5 / 3.0 and 2.5 / 1.25
    assert P.mce(errors, base) == pytest.approx(125.0)
    # the AugMix formula: 100 * mean error / baseline mean error, averaged over corruptions
    rng = np.random.default_rng(0)
    accs = {c: rng.uniform(0.2, 0.9, 5).tolist() for c in P.IMAGENET_C_CORRUPTIONS}
    augmix = sum(100 * (1 - np.mean(accs[c])) / P.IMAGENET_C_ALEXNET_ERRORS[c] for c in accs) / 15
    assert P.mce({c: [1 - a for a in v] for c, v in accs.items()}) == pytest.approx(augmix)


def test_relative_mce_by_hand():
    errors = {"a": [0.2, 0.3, 0.4, 0.5, 0.6]}          # mean 0.4, clean 0.1: degradation 0.3
    base = {"a": [0.7] * 5}                           # clean 0.4: degradation 0.3
    assert P.relative_mce(errors, 0.1, base, 0.4) == pytest.approx(100.0)
    assert P.relative_mce(errors, 0.25, base, 0.4) == pytest.approx(50.0)
    assert P.mce(errors, base) == pytest.approx(400 / 7)


def test_mce_bad_input():
    with pytest.raises(ValueError, match="fractions"):
        P.mce({"gaussian_noise": [45.0] * 5})
    with pytest.raises(ValueError, match="baseline has no errors"):
        P.mce({"my_blur": [0.1] * 5})
    with pytest.raises(ValueError, match="severities"):
        P.mce({"a": [0.1] * 5}, {"a": [0.2] * 3})
    with pytest.raises(ValueError, match="empty"):
        P.mce({})


# ---------------------------------------------------------------- ImageNet-C

from advkit.perturbations import imagenet_corruptions as IC  # noqa: E402

# hendrycks/robustness ImageNet-C/imagenet_c/imagenet_c/corruptions.py, each function's `c` list
PUBLISHED = {
    "gaussian_noise": [.08, .12, 0.18, 0.26, 0.38],
    "shot_noise": [60, 25, 12, 5, 3],
    "impulse_noise": [.03, .06, .09, 0.17, 0.27],
    "defocus_blur": [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)],
    "fog": [(1.5, 2), (2., 2), (2.5, 1.7), (2.5, 1.5), (3., 1.4)],
    "brightness": [.1, .2, .3, .4, .5],
    "contrast": [0.4, .3, .2, .1, .05],
    "pixelate": [0.6, 0.5, 0.4, 0.3, 0.25],
    "jpeg_compression": [25, 18, 15, 10, 7],
    "glass_blur": [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)],
    "motion_blur": [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)],
    "snow": [(0.1, 0.3, 3, 0.5, 10, 4, 0.8),
             (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
             (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
             (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
             (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)],
    "elastic_transform": [(244 * 2, 244 * 0.7, 244 * 0.1),
                          (244 * 2, 244 * 0.08, 244 * 0.2),
                          (244 * 0.05, 244 * 0.01, 244 * 0.02),
                          (244 * 0.07, 244 * 0.01, 244 * 0.02),
                          (244 * 0.12, 244 * 0.01, 244 * 0.02)],
}
ZOOM = [np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.02),
        np.arange(1, 1.26, 0.02), np.arange(1, 1.31, 0.03)]


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    return (x * 255).round() / 255   # 8-bit, as the authors' PIL inputs


def test_imagenet_c_constants_are_the_published_table():
    for name, table in PUBLISHED.items():
        assert [tuple(v) if isinstance(v, tuple) else v for v in table] == list(P.IMAGENET_C_SEVERITIES[name]), name
    for s, ref in enumerate(ZOOM, start=1):
        lo, hi, step = P.IMAGENET_C_SEVERITIES["zoom_blur"][s - 1]
        np.testing.assert_allclose(np.arange(lo, hi, step), ref)
    implemented = set(P.IMAGENET_C_SEVERITIES)
    assert implemented | set(P.IMAGENET_C_NOT_IMPLEMENTED) == set(P.IMAGENET_C_CORRUPTIONS)
    assert P.IMAGENET_C_NOT_IMPLEMENTED == ("frost",)
    with pytest.raises(NotImplementedError, match="frost photographs.*hendrycks/robustness"):
        P.imagenet_c(torch.zeros(1, 3, 8, 8), "frost", 1)
    with pytest.raises(NotImplementedError, match="not generated"):
        IC.frost(torch.zeros(1, 3, 8, 8), 1)
    with pytest.raises(ValueError, match="severity"):
        P.imagenet_c(torch.zeros(1, 3, 8, 8), "contrast", 6)
    with pytest.raises(ValueError, match="to_rgb"):
        P.imagenet_c(torch.zeros(1, 1, 8, 8), "contrast", 1)


@pytest.mark.parametrize("name", list(P.IMAGENET_C_SEVERITIES))
def test_imagenet_c_shape_range_seed_and_monotone(photos, name):
    outs = [P.imagenet_c(photos, name, s, seed=2) for s in range(1, 6)]
    for s, out in enumerate(outs, start=1):
        assert out.shape == photos.shape and 0 <= out.min() and out.max() <= 1
        assert torch.equal(out, P.imagenet_c(photos, name, s, seed=2))
    dist = [(o - photos).abs().mean().item() for o in outs]
    assert min(dist) > 0
    if name != "elastic_transform":        # not monotone as published: see test_elastic_transform_severities
        assert dist[-1] > dist[0]          # severity 5 moves the image more than severity 1


def test_disk_kernel_matches_opencv_reference():
    # cv2 4.x: corruptions.disk(3, 0.1)[8, 4:13] and disk(10, 0.5)[10, 0:6]
    np.testing.assert_allclose(IC.disk_kernel(3, 0.1)[8, 4:13].numpy(),
                               [0.0] + [0.034483] * 7 + [0.0], atol=1e-6)
    np.testing.assert_allclose(IC.disk_kernel(10, 0.5)[10, 0:6].numpy(),
                               [0.002625, 0.003083, 0.003154, 0.003155, 0.003155, 0.003155], atol=1e-6)
    assert IC.disk_kernel(6, 0.5).sum().item() == pytest.approx(1.0, abs=1e-5)


def test_imagenet_c_brightness_is_skimage_hsv(photos):
    color = pytest.importorskip("skimage.color")
    for s in (1, 5):
        img = photos[0].permute(1, 2, 0).double().numpy()
        hsv = color.rgb2hsv(img)
        hsv[:, :, 2] = np.clip(hsv[:, :, 2] + 0.1 * s, 0, 1)
        ref = np.clip(color.hsv2rgb(hsv), 0, 1)
        ours = P.imagenet_c(photos[:1].double(), "brightness", s)[0].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_imagenet_c_contrast_and_digital_by_hand(photos):
    out = P.imagenet_c(photos, "contrast", 5)
    mean = photos.mean(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(out, ((photos - mean) * 0.05 + mean).clamp(0, 1))
    torch.testing.assert_close(out.mean(dim=(2, 3)), mean[..., 0, 0], atol=1e-6, rtol=0)   # means kept
    px = P.imagenet_c(torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)), "pixelate", 5)
    # c = 0.25: 8 x 8 blocks, each constant after BOX down and up by an integer factor
    blocks = px[0].unfold(1, 4, 4).unfold(2, 4, 4)
    assert (blocks.amax((-1, -2)) - blocks.amin((-1, -2))).max() < 1 / 255 + 1e-6
    flat = torch.full((1, 3, 16, 16), 128 / 255)
    torch.testing.assert_close(P.imagenet_c(flat, "jpeg_compression", 5), flat, atol=2 / 255, rtol=0)


def test_imagenet_c_noise_statistics():
    x = torch.full((4, 3, 32, 32), 0.5)
    g = P.imagenet_c(x, "gaussian_noise", 3, seed=0)
    assert abs((g - x).std().item() - 0.18) < 0.01            # the clip at 0 and 1 (2.8 sigma) barely lowers it
    imp = P.imagenet_c(x, "impulse_noise", 5, seed=0)
    assert abs((imp != x).float().mean().item() - 0.27) < 0.015


# The authors' ImageNet-C functions (hendrycks/robustness corruptions.py; np.float_ -> np.float64,
# old skimage gaussian(multichannel=True) emulated with scipy) on the 224 x 224 8-bit image
# ((7 i + 13 j + 50 c) mod 256) after np.random.seed(0): output sum and sum weighted by the
# flat (i, j, c) index / (224 * 224 * 3).
AUTHORS_SEED0_224 = {
    ("glass_blur", 2): (74962.4945, 37480.1193),
    ("fog", 1): (75270.5286, 36323.0032),
    ("fog", 5): (77606.2493, 37329.8060),
}


@pytest.mark.parametrize("name,severity", list(AUTHORS_SEED0_224))
def test_imagenet_c_random_corruptions_equal_the_authors_code(name, severity):
    i, j, c = np.meshgrid(np.arange(224), np.arange(224), np.arange(3), indexing="ij")
    arr = ((i * 7 + j * 13 + c * 50) % 256).astype(np.uint8)
    x = torch.from_numpy(arr.astype(np.float32) / 255).permute(2, 0, 1)[None]
    out = P.imagenet_c(x, name, severity, seed=0)[0].permute(1, 2, 0).double().numpy()
    w = np.arange(224 * 224 * 3).reshape(224, 224, 3) / (224 * 224 * 3)
    total, weighted = AUTHORS_SEED0_224[(name, severity)]
    assert out.sum() == pytest.approx(total, abs=0.05)
    assert (out * w).sum() == pytest.approx(weighted, abs=0.05)


# ---------------------------------------------------------------- motion blur, snow, elastic transform

def _ic_shift(image, dx, dy):
    """bethgelab/imagecorruptions, imagecorruptions/corruptions.py lines 117-133 (``shift``), transcribed."""
    if dx < 0:
        shifted = np.roll(image, shift=image.shape[1] + dx, axis=1)
        shifted[:, dx:] = shifted[:, dx - 1:dx]
    elif dx > 0:
        shifted = np.roll(image, shift=dx, axis=1)
        shifted[:, :dx] = shifted[:, dx:dx + 1]
    else:
        shifted = image
    if dy < 0:
        shifted = np.roll(shifted, shift=image.shape[0] + dy, axis=0)
        shifted[dy:, :] = shifted[dy - 1:dy, :]
    elif dy > 0:
        shifted = np.roll(shifted, shift=dy, axis=0)
        shifted[:dy, :] = shifted[dy:dy + 1, :]
    return shifted


def _ic_motion_blur(x, radius, sigma, angle):
    """imagecorruptions corruptions.py lines 103-151 (``getOptimalKernelWidth1D``, ``gauss_function``,
    ``getMotionBlurKernel``, ``_motion_blur``), transcribed: its NumPy port of ImageMagick's kernel."""
    width = radius * 2 + 1
    k = np.exp(-(np.arange(width) - 0) ** 2 / (2 * (sigma ** 2))) / (np.sqrt(2 * np.pi) * sigma)
    kernel = k / np.sum(k)
    point = (width * np.sin(np.deg2rad(angle)), width * np.cos(np.deg2rad(angle)))
    hypot = math.hypot(point[0], point[1])
    blurred = np.zeros_like(x, dtype=np.float32)
    for i in range(width):
        dy = -math.ceil(((i * point[0]) / hypot) - 0.5)
        dx = -math.ceil(((i * point[1]) / hypot) - 0.5)
        if np.abs(dy) >= x.shape[0] or np.abs(dx) >= x.shape[1]:
            break   # simulated motion exceeded image borders
        blurred = blurred + kernel[i] * _ic_shift(x, dx, dy)
    return blurred


def test_motion_blur_equals_imagecorruptions_numpy_kernel():
    rng = np.random.RandomState(1)
    rgb = rng.randint(0, 256, (48, 44, 3)).astype(np.float64)
    for radius, sigma in [(10, 3), (15, 8), (20, 15)]:
        for angle in [0.0, 30.0, -45.0, 12.3, 44.9, -100.0, -135.0, 89.9]:
            for img in (rgb, rgb[..., 1:2]):
                ref = _ic_motion_blur(img, radius, sigma, angle)
                x = torch.from_numpy(img).permute(2, 0, 1)[None]
                ours = MC.apply_motion_blur(x, radius, sigma, [angle])[0].permute(1, 2, 0).numpy()
                np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-9)
    w, offsets = MC.motion_blur_kernel(10, 3, 0.0)
    assert len(w) == 21 and w.sum() == pytest.approx(1.0) and np.all(np.diff(w) < 0)   # one-sided Gaussian
    assert offsets[:, 0].tolist() == [0] * 21 and offsets[:, 1].tolist() == list(range(21))   # angle 0: to the right
    assert MC.motion_blur_kernel(10, 3, 90.0)[1][:, 0].tolist() == list(range(21))            # 90: downwards


def test_motion_blur_longer_than_the_image_repeats_edges_as_imagemagick():
    # imagecorruptions stops adding taps when an offset leaves the image, so a constant image gets
    # darker; ImageMagick (checked: 6.9.11 Q16, through Wand) reads edge pixels and keeps it constant
    flat = np.full((8, 8, 1), 0.5)
    assert _ic_motion_blur(flat, 20, 15, 10.0).max() < 0.45
    x = torch.full((1, 1, 8, 8), 0.5, dtype=torch.float64)
    torch.testing.assert_close(MC.apply_motion_blur(x, 20, 15, [10.0]), x, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="one angle per image"):
        MC.apply_motion_blur(x, 10, 3, [0.0, 1.0])


def _im_8bit(v: torch.Tensor) -> torch.Tensor:
    """ImageMagick 6.9.11 Q16's 8-bit PNG output of a value ``v`` in [0, 1]: a 16-bit quantum, truncated
    (measured: with this, Wand's motion blur equals ours bit for bit)."""
    return torch.floor(torch.floor(257 * 255 * v + 0.5) / 257) / 255


def _pattern224() -> torch.Tensor:
    i, j, c = np.meshgrid(np.arange(224), np.arange(224), np.arange(3), indexing="ij")
    arr = ((i * 7 + j * 13 + c * 50) % 256).astype(np.uint8)
    return torch.from_numpy(arr.astype(np.float64) / 255).permute(2, 0, 1)[None]


# The authors' functions (hendrycks/robustness ImageNet-C/imagenet_c/imagenet_c/corruptions.py at 8190fe3;
# google-research/mnist-c corruptions.py) run unchanged but for np.fromstring -> np.frombuffer, with Wand
# 0.6 on ImageMagick 6.9.11-60 Q16 (Debian 12) and OpenCV 4.10 (opencv-python-headless 4.10.0.84), NumPy
# 1.26, SciPy 1.17, scikit-image 0.26, after np.random.seed(0): on _pattern224() (ImageNet-C) and on
# MNIST test digit 0 (MNIST-C), the output's sum and its sum weighted by the flat index / size, in [0, 1].
WAND_CV2_SEED0 = {
    ("motion_blur", 1): (74992.53725, 37478.46675),
    ("motion_blur", 3): (74949.45098, 37451.61899),
    ("motion_blur", 5): (74972.25098, 37451.25513),
    ("snow", 1): (100411.29883, 50182.15481),
    ("snow", 2): (114911.27325, 57460.50539),
    ("snow", 3): (115304.96388, 57654.39805),
    ("snow", 4): (123443.96785, 61776.59399),
    ("snow", 5): (130898.55827, 65422.85317),
    ("elastic_transform", 1): (75272.92984, 37623.15677),
    ("elastic_transform", 2): (75026.35557, 37507.93848),
    ("elastic_transform", 3): (75332.75134, 37656.26658),
    ("elastic_transform", 4): (75365.60785, 37664.70244),
    ("elastic_transform", 5): (75435.35187, 37668.01264),
}


@pytest.mark.parametrize("name,severity", list(WAND_CV2_SEED0))
def test_new_imagenet_c_corruptions_equal_the_authors_code_with_imagemagick_and_opencv(name, severity):
    out = P.imagenet_c(_pattern224(), name, severity, seed=0)
    if name == "motion_blur":
        assert (out - _im_8bit(out)).abs().max() < 1 / 255     # ours is not rounded; Wand's is 8-bit
        out = _im_8bit(out)
    out = out[0].permute(1, 2, 0).numpy()
    w = np.arange(out.size).reshape(out.shape) / out.size
    total, weighted = WAND_CV2_SEED0[(name, severity)]
    tol = 1e-4 if name == "motion_blur" else 0.01   # snow, elastic: float32 sums of the authors (1e-7 a pixel)
    assert out.sum() == pytest.approx(total, abs=tol)
    assert (out * w).sum() == pytest.approx(weighted, abs=tol)


def test_mnist_c_motion_blur_equals_the_authors_code_with_imagemagick(digits):
    out = P.mnist_c(digits[:1].double(), "motion_blur", seed=0)
    assert (out - _im_8bit(out)).abs().max() < 1 / 255
    out = _im_8bit(out)[0, 0].numpy()
    assert out.sum() == pytest.approx(71.71765, abs=1e-4)
    assert (out * np.arange(784).reshape(28, 28) / 784).sum() == pytest.approx(37.88393, abs=1e-4)
    # the angle: np.random.uniform(-45, 45) per image, in order, from RandomState(seed)
    rng = np.random.RandomState(3)
    angles = [rng.uniform(-45, 45) for _ in range(4)]
    torch.testing.assert_close(P.mnist_c(digits[:4], "motion_blur", seed=3),
                               MC.apply_motion_blur(digits[:4], 10, 3, angles).clamp(0, 1))


def test_warp_affine_is_opencv_fixed_point():
    rng = np.random.RandomState(0)
    img = rng.rand(24, 20, 3).astype(np.float32)
    pts1 = np.float32([[15, 15], [15, 5], [5, 5]])
    pts2 = pts1 + rng.uniform(-3, 3, size=pts1.shape).astype(np.float32)
    m = IC._get_affine_transform(pts1, pts2)
    # cv2.getAffineTransform(pts1, pts2) and cv2.warpAffine(img, M, (20, 24), borderMode=cv2.BORDER_REFLECT_101)
    # of OpenCV 4.10.0 and 4.14.0 (identical outputs)
    np.testing.assert_allclose(m, [[1.0672768831253052, 0.055602741241455075, -1.905084967613219],
                                   [0.3602480411529541, 0.6563714981079102, -2.4591691493988037]], rtol=0, atol=1e-12)
    out = IC.warp_affine_reflect101(img, m).astype(np.float64)
    assert out.dtype == np.float64 and out.shape == img.shape
    np.testing.assert_allclose(out[0, :4, 0], [0.397341, 0.249652, 0.288066, 0.453358], atol=1e-6)
    np.testing.assert_allclose(out[23, 16:20, 2], [0.212714, 0.512715, 0.303421, 0.36922], atol=1e-6)
    assert out.sum() == pytest.approx(722.493340, abs=1e-5)
    assert (out * np.arange(out.size).reshape(out.shape) / out.size).sum() == pytest.approx(361.987847, abs=1e-5)
    # an exact bilinear warp (no 1/32-pixel grid) is measurably different
    from scipy.ndimage import map_coordinates
    inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))
    yy, xx = np.mgrid[0:24, 0:20]
    sx, sy = inv[0, 0] * xx + inv[0, 1] * yy + inv[0, 2], inv[1, 0] * xx + inv[1, 1] * yy + inv[1, 2]
    exact = np.stack([map_coordinates(img[..., k], [sy, sx], order=1, mode="mirror") for k in range(3)], -1)
    assert np.abs(exact - out).max() > 0.01
    assert np.abs(IC.warp_affine_reflect101(img, np.float64([[1, 0, 0], [0, 1, 0]])) - img).max() == 0


def _authors_elastic(image, severity):
    """hendrycks/robustness corruptions.py lines 395-424 (``elastic_transform``), transcribed, with
    cv2.getAffineTransform / cv2.warpAffine replaced by advkit's (checked above against OpenCV) and
    skimage's gaussian by the SciPy call it makes."""
    from scipy.ndimage import gaussian_filter, map_coordinates

    c = [(244 * 2, 244 * 0.7, 244 * 0.1), (244 * 2, 244 * 0.08, 244 * 0.2), (244 * 0.05, 244 * 0.01, 244 * 0.02),
         (244 * 0.07, 244 * 0.01, 244 * 0.02), (244 * 0.12, 244 * 0.01, 244 * 0.02)][severity - 1]
    image = np.array(image, dtype=np.float32) / 255.
    shape = image.shape
    shape_size = shape[:2]
    center_square = np.float32(shape_size) // 2
    square_size = min(shape_size) // 3
    pts1 = np.float32([center_square + square_size, [center_square[0] + square_size, center_square[1] - square_size],
                       center_square - square_size])
    pts2 = pts1 + np.random.uniform(-c[2], c[2], size=pts1.shape).astype(np.float32)
    image = IC.warp_affine_reflect101(image, IC._get_affine_transform(pts1, pts2))
    dx = (gaussian_filter(np.random.uniform(-1, 1, size=shape[:2]),
                          c[1], mode="reflect", truncate=3) * c[0]).astype(np.float32)
    dy = (gaussian_filter(np.random.uniform(-1, 1, size=shape[:2]),
                          c[1], mode="reflect", truncate=3) * c[0]).astype(np.float32)
    dx, dy = dx[..., np.newaxis], dy[..., np.newaxis]
    x, y, z = np.meshgrid(np.arange(shape[1]), np.arange(shape[0]), np.arange(shape[2]))
    indices = np.reshape(y + dy, (-1, 1)), np.reshape(x + dx, (-1, 1)), np.reshape(z, (-1, 1))
    return np.clip(map_coordinates(image, indices, order=1, mode="reflect").reshape(shape), 0, 1) * 255


def _smooth(h: int = 48, w: int = 40) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    x = torch.stack([0.5 + 0.4 * torch.sin(6 * xx + 3 * yy), 0.5 + 0.4 * torch.cos(5 * yy), xx * yy])[None]
    return ((x * 255).round() / 255).double()


def test_elastic_transform_equals_the_transcribed_authors_code():
    x = torch.cat([_smooth(), _smooth().flip(-1)])          # 2 images, H != W: one RNG stream in image order
    arrs = [(im.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for im in x]
    for s in (1, 3, 5):
        np.random.seed(7)
        ref = np.stack([_authors_elastic(a, s) for a in arrs]) / 255
        ours = P.imagenet_c(x, "elastic_transform", s, seed=7).permute(0, 2, 3, 1).numpy()
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)


def test_elastic_transform_severities():
    x = _smooth()
    d = [(P.imagenet_c(x, "elastic_transform", s, seed=0) - x).abs().mean().item() for s in range(1, 6)]
    # severities 3-5 share the affine part (+-4.9 px) and grow the elastic field (alpha 12.2, 17.1,
    # 29.3 px); 1-2 are mostly affine (+-24.4, +-48.8 px) and move pixels further: as published
    assert 0 < d[2] < d[3] < d[4] < min(d[0], d[1])


def test_snow_structure():
    black = torch.zeros(2, 3, 32, 32, dtype=torch.float64)
    for s in range(1, 6):
        c6 = P.IMAGENET_C_SEVERITIES["snow"][s - 1][6]
        out = P.imagenet_c(black, "snow", s, seed=0)
        # a black image becomes grey (1 - c6) / 2 plus the snow layer and its 180-degree rotation
        torch.testing.assert_close(out, torch.rot90(out, 2, dims=(2, 3)), rtol=0, atol=1e-12)
        assert out.min().item() == pytest.approx((1 - c6) / 2, abs=1e-6)
        assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])     # white snow
        assert not torch.equal(out[0], out[1])                                              # one layer per image
    with pytest.raises(ValueError, match="square"):
        P.imagenet_c(torch.zeros(1, 3, 16, 20), "snow", 1)
