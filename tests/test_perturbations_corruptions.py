"""advkit.perturbations: MNIST-C corruptions and the mCE summaries.

MNIST-C (Mu & Gilmer 2019) against the authors' constants (google-research/mnist-c
``corruptions.py``) and scikit-image (the library the authors' code called: ``warp`` with an
``inverse_map``, the HSV brightness pipeline); the plasma fractal of ``fog`` against numbers
produced by the authors' ``plasma_fractal`` after ``np.random.seed(0)`` (with ``np.float_``
replaced by ``np.float64``, the only change it needs on NumPy 2). mCE against the paper's
formulas and the AlexNet normaliser.
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
                                "glass_blur": (0.7, 1, 2), "spatter": (0.65, 0.3, 1, 0.65, 1.5, 1)}
    assert P.MNIST_C_NOT_IMPLEMENTED == ("motion_blur",)
    with pytest.raises(NotImplementedError, match="motion_blur"):
        P.mnist_c(torch.zeros(1, 1, 28, 28), "motion_blur")
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
    with pytest.raises(NotImplementedError, match="frost"):
        P.imagenet_c(torch.zeros(1, 3, 8, 8), "frost", 1)
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
    assert dist[-1] > dist[0] > 0          # severity 5 moves the image more than severity 1


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
