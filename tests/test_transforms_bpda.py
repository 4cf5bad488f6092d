"""Input transformations and BPDA: shapes and seeds, identities, peers (Pillow's JPEG, scipy's median
filter, scikit-image's TV denoising), closed forms, and the measured gap between a plain PGD and
BPDA-PGD on LeNet-5 behind a non-differentiable transform."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from advkit import models
from advkit.attacks import pgd
from advkit.defenses import bpda as B
from advkit.defenses import transforms as T

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits(mnist_test):
    x, y = mnist_test
    return x[:30], y[:30]


def random_batch(shape=(4, 1, 12, 12), seed=0):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------- every transform


@pytest.mark.parametrize("name", list(T.TRANSFORMS))
def test_shape_range_dtype_and_seeds(name, digits):
    x = digits[0][:8]
    make, kind = T.TRANSFORMS[name]
    t = make()
    assert t.kind == kind and kind in T.ADAPTIVE_ATTACK
    out = t(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(x, digits[0][:8]), "the input must not be modified"
    if t.randomised:
        again = make()(x)
        assert torch.equal(out, again), "same seed, same first draw"
        assert not torch.equal(t(x), out), "a randomised transform draws afresh at every call"
        assert not torch.equal(make(seed=1)(x), out), "another seed, another draw"
        assert torch.equal(t.reset()(x), out), "reset() restarts the sequence"
        # the EOT protocol t(x, generator): the given generator is used, the own one is untouched
        g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        state = t.generator.get_state()
        assert torch.equal(t(x, g1), t(x, g2))
        assert torch.equal(t.generator.get_state(), state)
    else:
        assert torch.equal(t(x), out), "a deterministic transform gives the same output twice"


def test_identity_settings_are_the_identity(digits):
    x = digits[0][:8]
    x8 = (x * 255).round() / 255  # 8-bit images, as MNIST's are
    for t in (T.RandomTranslate(0), T.RandomRotate(0), T.RandomMirror(0.0), T.GaussianBlur(0.0),
              T.GaussianNoise(0.0), T.MedianSmoothing(1), T.TVM(keep_prob=1.0, lambda_tv=0.0)):
        assert torch.equal(t(x), x), repr(t)
    assert torch.equal(T.BitDepth(8)(x8), x8)
    torch.testing.assert_close(T.tv_minimize(x, weight=0.0, max_iter=5), x, rtol=0, atol=0)
    # bilinear rotation by a (numerically) zero angle reproduces the image up to float rounding
    torch.testing.assert_close(T.RandomRotate(1e-9)(x), x, rtol=0, atol=1e-5)


def test_translation_is_a_shift_with_black_fill_and_mirror_a_flip():
    x = random_batch((6, 2, 9, 9)) + 0.01  # no zeros inside, so the fill is recognisable
    x = x.clamp(max=1)
    m = 2
    out = T.RandomTranslate(m, seed=3)(x)
    xp = F.pad(x, (m, m, m, m))
    for i in range(len(x)):
        matches = [(dy, dx) for dy in range(-m, m + 1) for dx in range(-m, m + 1)
                   if torch.equal(out[i], xp[i, :, m - dy:m - dy + 9, m - dx:m - dx + 9])]
        assert len(matches) == 1, f"image {i} is not one shift of the input"
    assert torch.equal(T.RandomMirror(1.0)(x), x.flip(3))


def test_rotation_by_a_quarter_turn_is_exact_and_random_angles_stay_in_range():
    x = random_batch((3, 1, 8, 8))
    quarter = T.rotate(x, 90.0)
    assert torch.allclose(quarter, torch.rot90(x, k=1, dims=(2, 3)), atol=1e-5) or \
        torch.allclose(quarter, torch.rot90(x, k=-1, dims=(2, 3)), atol=1e-5)
    torch.testing.assert_close(T.rotate(T.rotate(x, 90.0), -90.0), x, rtol=0, atol=1e-5)
    # RandomRotate(m) rotates image i by (2 u_i - 1) m degrees, u_i from its generator
    g = torch.Generator().manual_seed(4)
    u = torch.rand(3, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(T.RandomRotate(30.0)(x, g), T.rotate(x, (2 * u - 1) * 30.0))


# ---------------------------------------------------------------------------- JPEG, bit depth, median


def test_jpeg_quality_100_is_near_identity_and_quality_10_is_not(digits):
    x = digits[0]
    hi, lo = T.JPEG(100)(x), T.JPEG(10)(x)
    assert (hi - x).abs().max() <= 2 / 255 + 1e-6          # measured: 1/255
    assert (lo - x).abs().mean() > 0.02                     # measured: 0.032
    assert (lo - x).abs().max() > 0.3                       # measured: 0.55
    assert torch.equal(hi, (hi * 255).round() / 255), "decoded JPEG is 8-bit"


@pytest.mark.parametrize("quality", [10, 75])
def test_jpeg_is_exactly_the_libjpeg_codec(digits, quality):
    """Pillow and torchvision.io both call libjpeg: same quality, same pixels out. (JPEG uses
    Pillow, as torchvision's image codecs are deprecated since 0.29.)"""
    import warnings

    from torchvision.io import decode_jpeg, encode_jpeg

    x = digits[0][:10]
    u8 = (x * 255).round().to(torch.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ref = torch.stack(decode_jpeg(encode_jpeg(list(u8), quality=quality))).float() / 255
    assert torch.equal(T.JPEG(quality)(x), ref)


def test_bit_depth_one_bit_is_thresholding_and_two_bits_the_nearest_level():
    x = random_batch((5, 3, 7, 7))
    ties = x.clone()
    ties[0, 0, 0, :3] = torch.tensor([0.5, 0.4999, 0.5001])
    assert torch.equal(T.BitDepth(1)(ties), (ties >= 0.5).to(x.dtype)), "halves round up"
    out = T.BitDepth(2)(x)
    levels = torch.tensor([0, 1 / 3, 2 / 3, 1])
    nearest = levels[(x.unsqueeze(-1) - levels).abs().argmin(-1)]
    torch.testing.assert_close(out, nearest, rtol=0, atol=1e-7)


@pytest.mark.parametrize("size", [2, 3, 4, 5])
def test_median_filter_matches_scipy(size):
    """Both code paths: the selection networks (sizes 2 and 3, no gradient wanted) and kthvalue."""
    from scipy import ndimage

    x = random_batch((3, 2, 9, 11))
    ref = ndimage.median_filter(x.numpy(), size=(1, 1, size, size), mode="reflect")
    assert np.array_equal(T.MedianSmoothing(size)(x).numpy(), ref)
    xr = x.clone().requires_grad_(True)
    out = T.MedianSmoothing(size)(xr)
    assert out.requires_grad and np.array_equal(out.detach().numpy(), ref)


def test_median_selection_networks_are_correct_by_the_zero_one_principle():
    """A comparator network selects rank r of every input iff it does so for every 0/1 input."""
    import itertools

    for n, select, rank in ((4, T._median4_upper, 2), (9, T._median9, 4)):
        bits = torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)))
        assert torch.equal(select([bits[:, i] for i in range(n)]), bits.sort(1).values[:, rank])


# ---------------------------------------------------------------------------- TV minimisation


@pytest.mark.parametrize("isotropic", [False, True])
def test_tv_minimisation_of_a_step_has_the_closed_form(isotropic):
    """Rows identical: each row is the 1-D ROF problem of a step, whose solution is the step with
    both sides moved towards each other by weight / (side length): a - w / k and b + w / (W - k)."""
    a, b, k, width, w = 0.9, 0.2, 4, 10, 0.3
    x = torch.full((1, 1, 6, width), b, dtype=torch.float64)
    x[..., :k] = a
    z = T.tv_minimize(x, weight=w, isotropic=isotropic, max_iter=3000)
    ref = torch.full_like(x, b + w / (width - k))
    ref[..., :k] = a - w / k
    torch.testing.assert_close(z, ref, rtol=0, atol=1e-4)


def test_isotropic_tv_matches_scikit_image_chambolle(digits):
    restoration = pytest.importorskip("skimage.restoration")
    img = digits[0][:2].double()
    for weight in (0.05, 0.2):
        z = T.tv_minimize(img, weight=weight, isotropic=True, max_iter=1500)
        for i in range(2):
            ref = restoration.denoise_tv_chambolle(img[i, 0].numpy(), weight=weight, eps=1e-10, max_num_iter=5000)
            assert np.abs(z[i, 0].numpy() - ref).max() < 2e-3   # measured: 2e-4 to 1e-3


def test_tvm_keeps_what_it_keeps_fills_the_rest_and_redraws_the_mask(digits):
    x = digits[0][:4]
    t = T.TVM(keep_prob=0.5, lambda_tv=0.03, seed=0)
    a, b = t(x), t(x)
    assert not torch.equal(a, b), "a fresh pixel mask at every call"
    assert torch.equal(T.TVM(seed=0)(x), a)
    # a digit survives: close to the original on average, and smoother (lower total variation)
    assert (a - x).abs().mean() < 0.05
    tv = lambda z: (z[..., 1:, :] - z[..., :-1, :]).abs().sum() + (z[..., :, 1:] - z[..., :, :-1]).abs().sum()
    assert tv(a) < tv(x)


# ---------------------------------------------------------------------------- thermometer


def test_thermometer_code_counts_levels_and_the_soft_code_agrees_on_the_grid():
    L = 8
    x = random_batch((2, 3, 5, 5))
    code = T.thermometer_encode(x, L)
    assert code.shape == (2, 3 * L, 5, 5)
    bits = code.view(2, 3, L, 5, 5)
    assert torch.equal(bits.sum(2), torch.ceil(x * L)), "a pixel v turns on ceil(v L) bits"
    assert (bits[:, :, 1:] <= bits[:, :, :-1]).all(), "a thermometer: ones first, then zeros"
    grid = torch.randint(0, L + 1, (2, 3, 5, 5), generator=torch.Generator().manual_seed(1)).float() / L
    assert torch.equal(T.thermometer_soft(grid, L), T.thermometer_encode(grid, L))
    # the ramp's derivative reaches pixels at exactly 0 and 1 (most of an MNIST digit)
    edge = torch.tensor([0.0, 1.0, 0.3]).view(1, 1, 1, 3).requires_grad_(True)
    (g,) = torch.autograd.grad(T.thermometer_soft(edge, L).sum(), edge)
    assert (g == L).all()


# ---------------------------------------------------------------------------- BPDA


def test_bpda_forward_is_the_transform_and_backward_the_identity():
    x = random_batch((4, 1, 8, 8))
    w = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    for t in (T.BitDepth(2), T.JPEG(50), T.MedianSmoothing(3), torch.round):
        xr = x.clone().requires_grad_(True)
        out = B.BPDA(t)(xr)
        assert torch.equal(out, t(x)), "forward: exactly the real transform"
        (g,) = torch.autograd.grad((w * out).sum(), xr)
        assert torch.equal(g, w), "backward: the identity's vector-Jacobian product"
    # with an approximation, the backward pass is the approximation's
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad((w * B.BPDA(T.BitDepth(1), approx=lambda z: 3 * z)(xr)).sum(), xr)
    assert torch.equal(g, 3 * w)
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad((w * B.straight_through(torch.floor, xr)).sum(), xr)
    assert torch.equal(g, w)


def test_bpda_through_the_thermometer_uses_the_soft_codes_gradient():
    L = 4
    x = random_batch((2, 1, 5, 5))
    enc = T.ThermometerEncoding(L)
    w = torch.randn(2, L, 5, 5, generator=torch.Generator().manual_seed(3))
    xr = x.clone().requires_grad_(True)
    out = B.BPDA(enc, approx=enc.approx)(xr)
    assert torch.equal(out, T.thermometer_encode(x, L))
    (g,) = torch.autograd.grad((w * out).sum(), xr)
    xs = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad((w * T.thermometer_soft(xs, L)).sum(), xs)
    assert torch.equal(g, ref)
    with pytest.raises(ValueError, match="approx"):
        B.BPDA(enc)(x)  # the identity cannot be the backward pass of a shape-changing transform


def test_non_differentiable_transforms_give_a_zero_gradient_and_differentiable_ones_do_not(digits):
    x = digits[0][:4]
    for name, (make, kind) in T.TRANSFORMS.items():
        xr = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad((make()(xr) * torch.linspace(0, 1, 28)).sum(), xr)
        if "non-differentiable" in kind:
            assert g.abs().max() == 0, name
        elif name != "mirror":
            assert g.abs().max() > 0, name


def test_defended_is_model_after_transform_and_keeps_eval_mode(lenet, digits):
    x = digits[0][:5]
    t = T.JPEG(75)
    d = B.preprocess(lenet, t)
    assert not d.training and not B.preprocess(lenet, t, bpda=True).training
    with torch.no_grad():
        assert torch.equal(d(x), lenet(t(x)))
        assert torch.equal(d.with_bpda()(x), d(x)), "BPDA changes the backward pass only"
    assert d.with_bpda().base_transform is t
    with pytest.raises(ValueError, match="bpda=True"):
        B.Defended(lenet, t, approx=B.identity)
    with pytest.raises(TypeError):
        B.Defended(lenet, "jpeg")
    d2 = T.defended(lenet, "bit_depth", bpda=True, bits=2)
    assert d2.bpda and d2.base_transform.bits == 2


def test_bad_settings_say_what_to_fix():
    with pytest.raises(ValueError, match="bits"):
        T.BitDepth(0)
    with pytest.raises(ValueError, match="quality"):
        T.JPEG(101)
    with pytest.raises(ValueError, match="odd"):
        T.GaussianBlur(1.0, kernel_size=4)
    with pytest.raises(ValueError, match="N x C x H x W"):
        T.BitDepth(2)(torch.rand(1, 28, 28))
    with pytest.raises(ValueError, match="unknown transform"):
        T.defended(nn.Identity(), "quilting")


# ---------------------------------------------------------------------------- PGD vs BPDA-PGD, measured


@pytest.mark.parametrize("transform, eps", [(T.BitDepth(2), 0.3), (T.JPEG(75), 0.3), (T.JPEG(75), 0.2)])
def test_bpda_breaks_what_plain_pgd_reports_as_robust(lenet, digits, transform, eps):
    """Measured on these 30 digits: plain PGD-20 sees a zero gradient and leaves accuracy at the
    clean 100%; BPDA-PGD-20 drives it to 0% in all three cases (on 100 digits: 0%, 0%, 2%)."""
    x, y = digits
    deployed = B.preprocess(lenet, transform)
    adaptive = B.preprocess(lenet, transform, bpda=True)
    with pytest.warns(RuntimeWarning, match="zero input gradient"):
        plain = pgd(deployed, x, y, eps=eps, eps_step=eps / 8, max_iter=20)
    broken = pgd(adaptive, x, y, eps=eps, eps_step=eps / 8, max_iter=20)
    assert plain.robust_accuracy >= 0.9
    assert broken.robust_accuracy <= 0.1
    assert plain.robust_accuracy - broken.robust_accuracy >= 0.8
    # success is judged on the real transform: BPDA's x_adv fool the deployed defense itself
    with torch.no_grad():
        assert torch.equal(deployed(broken.x_adv).argmax(1), broken.pred)


def test_one_bit_squeezing_resists_bpda_at_eps_0_3_on_mnist(lenet, digits):
    """An honest negative: binarising at 0.5 removes every Linf perturbation below 0.5 on pixels
    that are 0 or 1, so BPDA has little to work with. Measured at eps 0.3: BPDA-PGD-20 77% on these
    30 digits (80% on 100). Not gradient masking: PGD adversarials of the undefended LeNet,
    transferred, do no better (87% here, 84% on 100)."""
    x, y = digits
    adaptive = B.preprocess(lenet, T.BitDepth(1), bpda=True)
    res = pgd(adaptive, x, y, eps=0.3, eps_step=0.3 / 8, max_iter=20)
    transfer = pgd(lenet, x, y, eps=0.3, eps_step=0.3 / 8, max_iter=20)
    with torch.no_grad():
        transfer_acc = (adaptive(transfer.x_adv).argmax(1) == y).float().mean().item()
    assert res.robust_accuracy >= 0.6
    assert transfer_acc >= res.robust_accuracy - 0.1


def test_thermometer_model_plain_pgd_stuck_bpda_with_the_soft_code_breaks_it(mnist_test):
    """A thermometer LeNet-5 (16 levels) trained for one pass over 3000 digits (1-2 s): plain PGD
    gets a zero gradient at the encoding; BPDA with the soft code (Athalye et al.) breaks it.
    Measured at eps 0.3 on these 30 digits: clean 93%, PGD-20 93%, BPDA-PGD-20 0% (100 digits:
    91%, 91%, 0%)."""
    x_all, y_all = mnist_test
    x_tr, y_tr = x_all[-3000:], y_all[-3000:]   # train on the end of the test set, test on its start
    x, y = x_all[:30], y_all[:30]
    torch.manual_seed(0)
    model = T.ThermometerModel(models.lenet5(in_channels=16), levels=16)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    order = torch.randperm(len(x_tr), generator=torch.Generator().manual_seed(0))
    for i in range(0, len(x_tr), 64):
        idx = order[i:i + 64]
        loss = F.cross_entropy(model(x_tr[idx]), y_tr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
    assert clean >= 0.85
    with pytest.warns(RuntimeWarning, match="zero input gradient"):
        plain = pgd(model, x, y, eps=0.3, eps_step=0.3 / 8, max_iter=20)
    broken = pgd(model.with_bpda(), x, y, eps=0.3, eps_step=0.3 / 8, max_iter=20)
    assert plain.robust_accuracy == pytest.approx(clean)
    assert broken.robust_accuracy <= 0.1


# ---------------------------------------------------------------------------- peers: ART's preprocessors


def _art():
    pytest.importorskip("art")
    from art.defences.preprocessor import FeatureSqueezing, JpegCompression, SpatialSmoothing

    return FeatureSqueezing, JpegCompression, SpatialSmoothing


def test_transforms_equal_arts_preprocessors_on_mnist(digits):
    """ART 1.20.1's FeatureSqueezing, SpatialSmoothing (scipy) and JpegCompression (Pillow) on the
    same 30 digits: the same images (bit depth 2 up to ART's float64 rounding)."""
    FeatureSqueezing, JpegCompression, SpatialSmoothing = _art()
    x = digits[0]
    xn = x.numpy()
    pairs = [(T.BitDepth(1), FeatureSqueezing(clip_values=(0, 1), bit_depth=1), 0.0),
             (T.BitDepth(2), FeatureSqueezing(clip_values=(0, 1), bit_depth=2), 1e-7),
             (T.MedianSmoothing(2), SpatialSmoothing(window_size=2, channels_first=True), 0.0),
             (T.MedianSmoothing(3), SpatialSmoothing(window_size=3, channels_first=True), 0.0),
             (T.JPEG(75), JpegCompression(clip_values=(0, 1), quality=75, channels_first=True), 0.0)]
    for ours, art, tol in pairs:
        ref, _ = art(xn)
        assert np.abs(ours(x).numpy() - ref).max() <= tol, repr(ours)


@pytest.mark.parametrize("name, eps", [("median", 0.1), ("jpeg", 0.15)])
def test_bpda_pgd_matches_arts_pgd_through_the_same_preprocessor(lenet, digits, name, eps):
    """ART's PyTorchClassifier back-propagates through a preprocessing defense with its
    ``estimate_gradient`` (the identity: BPDA). Same weights, digits and PGD-20 budget: median
    smoothing gives the same x_adv (99.5% of pixels; the rest are gradients of about 0 whose sign
    depends on float rounding) and the same accuracy (86.7%); JPEG the same robust accuracy within
    one digit (measured: 26.7% both on these 30; 100 digits: 27% vs 26%), because ART truncates
    to 8 bits where we round, so off-grid iterates are coded slightly differently."""
    pytest.importorskip("art")
    from art.attacks.evasion import ProjectedGradientDescent
    from art.defences.preprocessor import JpegCompression, SpatialSmoothing
    from art.estimators.classification import PyTorchClassifier

    x, y = digits
    ours_t, art_t = {"median": (T.MedianSmoothing(2), SpatialSmoothing(window_size=2, channels_first=True,
                                                                        clip_values=(0, 1))),
                     "jpeg": (T.JPEG(75), JpegCompression(clip_values=(0, 1), quality=75, channels_first=True))}[name]
    clf = PyTorchClassifier(model=lenet, loss=nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10,
                            clip_values=(0, 1), preprocessing_defences=[art_t])
    x_art = ProjectedGradientDescent(clf, eps=eps, eps_step=eps / 8, max_iter=20, num_random_init=0,
                                     batch_size=len(x), verbose=False).generate(x.numpy(), y.numpy())
    ours = pgd(B.preprocess(lenet, ours_t, bpda=True), x, y, eps=eps, eps_step=eps / 8, max_iter=20)
    art_acc = float((clf.predict(x_art).argmax(1) == y.numpy()).mean())
    if name == "median":
        same = np.isclose(ours.x_adv.numpy(), x_art, rtol=0, atol=1e-6).mean()
        assert same >= 0.99   # measured 99.5%: float differences flip the sign of a few tiny gradients
        assert ours.robust_accuracy == pytest.approx(art_acc)
    else:
        assert abs(ours.robust_accuracy - art_acc) <= 1 / len(x) + 1e-6


def test_models_holding_transforms_move_between_devices_and_dtypes():
    """A Transform is an nn.Module: .to(), .double() and .cpu() must work on a model that holds one
    (a method named ``_apply`` once shadowed nn.Module._apply and broke them)."""
    import torch

    from advkit.defenses import TRANSFORMS, ThermometerModel, preprocess
    from advkit.models import lenet5

    model = preprocess(lenet5(), TRANSFORMS["jpeg"].make())
    model.to("cpu").double().float()
    therm = ThermometerModel(lenet5(in_channels=16), levels=16).to(torch.device("cpu"))
    assert therm(torch.rand(2, 1, 28, 28)).shape == (2, 10)
