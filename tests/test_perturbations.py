"""advkit.perturbations: the thesis's five with fastai v1's semantics.

Pinned against closed forms (identity settings, logit-space values by hand, 180 degrees = the
double flip, 90 degrees = a transposition, a linear ramp under jitter) and against fastai v1
itself: the reference arrays below were produced by ``fastai==1.0.61`` on the 1 x 4 x 5 image
``(arange(20) * 0.37) % 1`` with::

    from fastai.vision.image import Image; from fastai.vision import transform as T
    Image(x).rotate(20).px;  Image(x).rotate(-60).px
    torch.manual_seed(0); Image(x).apply_tfms(T.jitter(magnitude=0.05)).px   # and 0.3

(fastai v1 imports with current torch given a stub ``pkg_resources``; when it is importable,
``test_against_fastai_v1`` also compares on random inputs, otherwise it skips.)
"""

from __future__ import annotations


import pytest
import torch

import advkit.perturbations as P

FASTAI_ROTATE_20 = [
    [0.347438, 0.560262, 0.431178, 0.439424, 0.524566],
    [0.324819, 0.353379, 0.652969, 0.830455, 0.268216],
    [0.761785, 0.199545, 0.377031, 0.676621, 0.279236],
    [0.505434, 0.590576, 0.598822, 0.469738, 0.533368],
]
FASTAI_ROTATE_M60 = [
    [0.545128, 0.693669, 0.404043, 0.403028, 0.466243],
    [0.700123, 0.134359, 0.381604, 0.666970, 0.546063],
    [0.483937, 0.363030, 0.648396, 0.895641, 0.329877],
    [0.563757, 0.626972, 0.529546, 0.336331, 0.484872],
]
FASTAI_JITTER_005_SEED0 = [
    [0.034445, 0.335811, 0.722733, 0.161677, 0.473916],
    [0.818875, 0.282892, 0.574331, 0.928344, 0.375395],
    [0.670038, 0.129515, 0.432974, 0.763391, 0.222509],
    [0.571617, 0.868909, 0.339643, 0.648072, 0.063565],
]
FASTAI_JITTER_03_SEED0 = [
    [0.205767, 0.301150, 0.636395, 0.416528, 0.448778],
    [0.676617, 0.454994, 0.495986, 0.770062, 0.535946],
    [0.588088, 0.392441, 0.401680, 0.530348, 0.435054],
    [0.603923, 0.680589, 0.440638, 0.588432, 0.231386],
]


def ref_image() -> torch.Tensor:
    return ((torch.arange(20, dtype=torch.float32) * 0.37) % 1).view(1, 1, 4, 5)


@pytest.fixture
def batch() -> torch.Tensor:
    return torch.rand(4, 3, 9, 11, generator=torch.Generator().manual_seed(0))


SEEDED = {"jitter": lambda x, lvl, s: P.jitter(x, lvl, seed=s),
          "rgb_randomize": lambda x, lvl, s: P.rgb_randomize(x, lvl, 0, seed=s)}
ALL = {"rotate": lambda x, lvl, s: P.rotate(x, lvl),
       "brightness": lambda x, lvl, s: P.brightness(x, lvl),
       "contrast": lambda x, lvl, s: P.contrast(x, lvl), **SEEDED}
CASES = [(name, lvl) for name, levels in P.THESIS_LEVELS.items() for lvl in levels]


# ---------------------------------------------------------------- the thesis's constants

def test_thesis_levels_exact():
    assert P.ROTATION_DEGREES == (-60, 20, 100, 180)
    assert P.BRIGHTNESS_CHANGES == (0.1, 0.3, 0.4, 0.5)
    assert P.RGB_RANDOMIZE_THRESHOLDS == (0.2, 0.5, 0.99) and P.RGB_RANDOMIZE_CHANNEL == 0
    assert P.JITTER_MAGNITUDES == (-0.05, -0.03, 0, 0.03, 0.05)
    assert P.CONTRAST_SCALES == (0.5, 1.17, 2.74, 6.41)
    assert list(P.THESIS_LEVELS) == ["rotate", "brightness", "rgb_randomize", "jitter", "contrast"]


# ---------------------------------------------------------------- shape, range, input kept, seeds

@pytest.mark.parametrize("name,level", CASES)
def test_shape_range_dtype_and_input_untouched(batch, name, level):
    before = batch.clone()
    out = P.perturb(name, batch, level, seed=3)
    assert out.shape == batch.shape and out.dtype == batch.dtype and out.device == batch.device
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(batch, before)


@pytest.mark.parametrize("name", list(SEEDED))
def test_determinism_per_seed(batch, name):
    level = 0.05 if name == "jitter" else 0.5
    f = SEEDED[name]
    a, b, c = f(batch, level, 1), f(batch, level, 1), f(batch, level, 2)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    torch.manual_seed(123)  # the global RNG plays no part
    assert torch.equal(f(batch, level, 1), a)
    # an explicit generator is used and advanced
    g = torch.Generator().manual_seed(1)
    first = P.jitter(batch, 0.05, generator=g) if name == "jitter" else P.rgb_randomize(batch, 0.5, generator=g)
    assert torch.equal(first, a)
    second = P.jitter(batch, 0.05, generator=g) if name == "jitter" else P.rgb_randomize(batch, 0.5, generator=g)
    assert not torch.equal(second, a)


@pytest.mark.parametrize("name", list(ALL))
def test_per_image_levels_equal_one_image_at_a_time(batch, name):
    levels = {"rotate": [-60., 20., 100., 180.], "brightness": [0.1, 0.3, 0.4, 0.5],
              "contrast": [0.5, 1.17, 2.74, 6.41], "jitter": [-0.05, -0.03, 0.03, 0.05],
              "rgb_randomize": [0.2, 0.5, 0.99, 0.7]}[name]
    out = ALL[name](batch, torch.tensor(levels), 0)
    if name in SEEDED:  # the noise of image i is drawn after that of images < i: check image 0
        torch.testing.assert_close(out[:1], ALL[name](batch[:1], levels[0], 0))
    else:
        for i, lvl in enumerate(levels):
            torch.testing.assert_close(out[i:i + 1], ALL[name](batch[i:i + 1], lvl, 0), atol=1e-6, rtol=0)


# ---------------------------------------------------------------- identity settings

@pytest.mark.parametrize("fn", [lambda x: P.brightness(x, 0.5), lambda x: P.contrast(x, 1.0),
                                lambda x: P.rotate(x, 0.0), lambda x: P.rotate(x, 360.0),
                                lambda x: P.jitter(x, 0.0, seed=5)])
def test_identity_settings(batch, fn):
    # lighting clamps to [1e-7, 1 - 1e-7] in logit space (fastai's logit_): identity up to that
    torch.testing.assert_close(fn(batch), batch, atol=2e-6, rtol=0)


def test_identity_keeps_the_clamp_of_fastai():
    x = torch.tensor([0.0, 1.0]).view(1, 1, 1, 2)
    out = P.brightness(x, 0.5).flatten()
    assert 0 < out[0] < 2e-7 and 1 - 2e-7 < out[1] < 1


def test_contrast_zero_is_grey(batch):
    assert torch.equal(P.contrast(batch, 0.0), torch.full_like(batch, 0.5))


# ---------------------------------------------------------------- logit space, by hand

@pytest.mark.parametrize("pixel,change,expected", [
    (0.5, 0.1, 0.1),                      # logit(0.5) = 0: mid-grey becomes `change`
    (0.25, 0.75, 0.5),                    # -ln 3 + ln 3 = 0
    (0.2, 0.6, 0.375 / 1.375),            # odds 0.25 * 1.5 = 0.375
    (0.9, 0.3, 9 * (3 / 7) / (1 + 9 * (3 / 7))),
])
def test_brightness_by_hand(pixel, change, expected):
    out = P.brightness(torch.full((1, 1, 1, 1), pixel), change).item()
    assert out == pytest.approx(expected, abs=1e-6)


def test_brightness_is_not_a_pixel_space_shift():
    # a pixel-space shift would give 0.2 + 0.6 - 0.5 = 0.3; logit space gives 0.2727
    assert P.brightness(torch.full((1, 1, 1, 1), 0.2), 0.6).item() == pytest.approx(3 / 11, abs=1e-6)


@pytest.mark.parametrize("pixel,scale,expected", [
    (0.75, 2.0, 0.9),                     # odds 3 -> 9
    (0.2, 0.5, 1 / 3),                    # odds 1/4 -> 1/2
    (0.5, 6.41, 0.5),                     # fixed point
    (0.6, 6.41, 1 / (1 + (2 / 3) ** 6.41)),
])
def test_contrast_by_hand(pixel, scale, expected):
    assert P.contrast(torch.full((1, 1, 1, 1), pixel), scale).item() == pytest.approx(expected, abs=1e-6)


# ---------------------------------------------------------------- geometry

def test_rotate_180_is_the_double_flip(batch):
    torch.testing.assert_close(P.rotate(batch, 180), batch.flip(2, 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(P.rotate(batch, -180), batch.flip(2, 3), atol=1e-6, rtol=0)


def test_rotate_90_is_a_counter_clockwise_quarter_turn():
    x = torch.rand(2, 3, 7, 7, generator=torch.Generator().manual_seed(1))
    # output(u, v) reads input(-v, u): out[i, j] = x[j, W-1-i], torch.rot90 (counter-clockwise on screen)
    torch.testing.assert_close(P.rotate(x, 90), torch.rot90(x, 1, (2, 3)), atol=1e-6, rtol=0)
    torch.testing.assert_close(P.rotate(x, -90), torch.rot90(x, -1, (2, 3)), atol=1e-6, rtol=0)
    torch.testing.assert_close(P.rotate(P.rotate(x, 90), 90), P.rotate(x, 180), atol=1e-5, rtol=0)


def test_rotate_fills_corners_by_reflection_not_black():
    x = torch.ones(1, 1, 16, 16)
    torch.testing.assert_close(P.rotate(x, 45), x, atol=1e-6, rtol=0)  # reflection keeps a constant image constant
    assert P.rotate(x, 45, padding_mode="zeros")[0, 0, 0, 0] == 0


def test_jitter_on_a_ramp_moves_by_at_most_magnitude():
    w = 41
    ramp = torch.linspace(0, 1, w).expand(1, 1, 9, w).contiguous()  # value = (u + 1) / 2
    for m in (0.05, -0.05, 0.2):
        delta = (P.jitter(ramp, m, seed=0) - ramp).abs()
        # a normalised displacement d changes the ramp by d / 2; |d| <= |m| (reflection is 1-Lipschitz)
        assert delta.max() <= abs(m) / 2 + 1e-6
        assert delta.max() > 0.9 * abs(m) / 2           # and it does use the full range
    # the same seed with the opposite sign mirrors the displacement
    inner = slice(3, w - 3)
    a = P.jitter(ramp, 0.05, seed=4)[..., inner] - ramp[..., inner]
    b = P.jitter(ramp, -0.05, seed=4)[..., inner] - ramp[..., inner]
    torch.testing.assert_close(a, -b, atol=1e-6, rtol=0)


# ---------------------------------------------------------------- against fastai v1 (literal references)

def test_rotate_matches_fastai_v1_reference_non_square():
    x = ref_image()
    torch.testing.assert_close(P.rotate(x, 20)[0, 0], torch.tensor(FASTAI_ROTATE_20), atol=2e-6, rtol=0)
    torch.testing.assert_close(P.rotate(x, -60)[0, 0], torch.tensor(FASTAI_ROTATE_M60), atol=2e-6, rtol=0)


def test_jitter_matches_fastai_v1_reference_same_seed():
    x = ref_image()
    torch.testing.assert_close(P.jitter(x, 0.05, seed=0)[0, 0], torch.tensor(FASTAI_JITTER_005_SEED0), atol=2e-6, rtol=0)
    torch.testing.assert_close(P.jitter(x, 0.3, seed=0)[0, 0], torch.tensor(FASTAI_JITTER_03_SEED0), atol=2e-6, rtol=0)


def test_against_fastai_v1():
    """Run fastai v1 itself where it can be imported (not a project dependency)."""
    import sys
    import types

    if "pkg_resources" not in sys.modules:
        try:
            import pkg_resources  # noqa: F401
        except ImportError:
            sys.modules["pkg_resources"] = types.SimpleNamespace(require=lambda *a, **k: None)
    try:
        from fastai.vision import transform as T
        from fastai.vision.image import Image
    except Exception as exc:  # noqa: BLE001 - any import failure means: not available here
        pytest.skip(f"fastai v1 not importable ({type(exc).__name__}: {exc})")
    import numpy as np

    x = torch.rand(3, 6, 9, generator=torch.Generator().manual_seed(2))
    for d in P.ROTATION_DEGREES:
        torch.testing.assert_close(P.rotate(x[None], d)[0], Image(x.clone()).rotate(d).px, atol=2e-6, rtol=0)
    for c in P.BRIGHTNESS_CHANGES:
        torch.testing.assert_close(P.brightness(x[None], c)[0], Image(x.clone()).brightness(c).px, atol=1e-6, rtol=0)
    for s in P.CONTRAST_SCALES:
        torch.testing.assert_close(P.contrast(x[None], s)[0], Image(x.clone()).contrast(s).px, atol=1e-6, rtol=0)
    for m in P.JITTER_MAGNITUDES:
        torch.manual_seed(9)
        ref = Image(x.clone()).apply_tfms(T.jitter(magnitude=m)).px
        torch.testing.assert_close(P.jitter(x[None], m, seed=9)[0], ref, atol=1e-6, rtol=0)
    for t in P.RGB_RANDOMIZE_THRESHOLDS:
        torch.manual_seed(9)
        np.random.seed(0)
        ref = Image(x.clone()).apply_tfms(T.rgb_randomize(thresh=t, channel=0)).px
        ours = P.rgb_randomize(x[None], t, 0, seed=9)[0]
        torch.testing.assert_close(ours[1:], ref[1:])  # other channels untouched
        ratio = ref[0] / ours[0]                        # same noise field; the scale comes from NumPy there
        assert ratio.max() - ratio.min() < 1e-5


# ---------------------------------------------------------------- RGB randomise and grey inputs

def test_rgb_randomize_replaces_one_channel_within_thresh(batch):
    for t in P.RGB_RANDOMIZE_THRESHOLDS:
        out = P.rgb_randomize(batch, t, 0, seed=0)
        assert torch.equal(out[:, 1:], batch[:, 1:])
        assert out[:, 0].max() < t and out[:, 0].min() >= 0
        # one random scale per image: channel / its own max is U[0, 1)-like, not constant
        assert (out[:, 0].flatten(1).std(1) > 0).all()
    out = P.rgb_randomize(batch, 0.5, 2, seed=0)
    assert torch.equal(out[:, :2], batch[:, :2])


def test_rgb_randomize_channel_none_follows_fastai_and_never_picks_the_last():
    x = torch.rand(64, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    out = P.rgb_randomize(x, 0.5, None, seed=0)
    changed = (out != x).flatten(2).any(2)          # N x C
    assert (changed.sum(1) == 1).all()
    assert not changed[:, 2].any() and changed[:, 0].any() and changed[:, 1].any()


def test_grey_pipeline_to_rgb_then_randomize():
    g = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    alone = P.rgb_randomize(g, 0.5, seed=0)           # a grey tensor as it is: fastai's result, all noise
    assert alone.shape == g.shape and 0 <= alone.min() and alone.max() < 0.5
    assert torch.equal(P.rgb_randomize(g, 0.5, None, seed=0), alone)   # the only channel there is
    rgb = P.to_rgb(g)
    assert rgb.shape == (2, 3, 8, 8) and torch.equal(rgb[:, 1], g[:, 0]) and torch.equal(rgb[:, 2], g[:, 0])
    torch.testing.assert_close(P.to_grey(rgb), g, atol=1e-6, rtol=0)
    out = P.rgb_randomize(rgb, 0.99, 0, seed=0)
    assert torch.equal(out[:, 1:], rgb[:, 1:])       # two of three channels keep the digit
    grey = P.to_grey(out)                            # what a one-channel model would see
    expected = 0.299 * out[:, 0] + 0.587 * g[:, 0] + 0.114 * g[:, 0]
    torch.testing.assert_close(grey[:, 0], expected, atol=1e-6, rtol=0)


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("call,match", [
    (lambda x: P.brightness(x, 0.0), "between 0 and 1"),
    (lambda x: P.brightness(x, 1.0), "between 0 and 1"),
    (lambda x: P.contrast(x, -1.0), ">= 0"),
    (lambda x: P.rgb_randomize(x, 0.0), "thresh must be > 0"),
    (lambda x: P.rgb_randomize(x, 0.5, 3), "channel must be"),
    (lambda x: P.rotate(x, [1.0, 2.0]), "one value per image"),
    (lambda x: P.rotate(x, float("nan")), "finite"),
    (lambda x: P.rotate(x, 10, padding_mode="wrap"), "padding_mode"),
    (lambda x: P.perturb("blur", x, 1), "unknown perturbation"),
    (lambda x: P.rotate(x * 2, 10), r"\[0, 1\]"),
    (lambda x: P.rotate(x[0], 10), "N x C x H x W"),
    (lambda x: P.jitter(x, 0.1, seed=None), "seed must be an int"),
])
def test_bad_input_says_what_to_fix(call, match):
    x = torch.rand(3, 3, 5, 5, generator=torch.Generator().manual_seed(0)) * 0.9 + 0.05
    with pytest.raises((ValueError, TypeError), match=match):
        call(x)


def test_cuda_if_available():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    for name, level in CASES:
        torch.testing.assert_close(P.perturb(name, x.cuda(), level, seed=1).cpu(), P.perturb(name, x, level, seed=1),
                                   atol=1e-5, rtol=0)


# ---------------------------------------------------------------- the protocol in one call

def test_sweep_rows_by_hand():
    from conftest import linear_model

    model = linear_model(d=3 * 6 * 6, k=4, seed=0)
    x = torch.rand(7, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    y = model(x).argmax(1)
    y[0] = (y[0] + 1) % 4                       # one wrong label: clean accuracy 6/7
    rows = P.sweep(model, x, y, progress=False, batch_size=3)
    assert [(r["perturbation"], r["level"]) for r in rows] == [(n, float(v)) for n, vs in P.THESIS_LEVELS.items() for v in vs]
    by = {(r["perturbation"], r["level"]): r for r in rows}
    for key in [("brightness", 0.5), ("jitter", 0.0)]:     # identity levels
        r = by[key]
        assert r["accuracy"] == pytest.approx(6 / 7) and r["linf"] < 2e-6 and r["n"] == 7
    r = by[("rotate", 180.0)]
    flipped = x.flip(2, 3)
    assert r["l1"] == pytest.approx((flipped - x).abs().flatten(1).sum(1).mean().item(), rel=1e-4)
    assert r["l2"] == pytest.approx((flipped - x).flatten(1).norm(dim=1).mean().item(), rel=1e-4)
    assert r["accuracy"] == pytest.approx((model(flipped).argmax(1) == y).float().mean().item())
    p = model(flipped).softmax(1).gather(1, y[:, None]).mean().item()
    assert r["mean_true_prob"] == pytest.approx(p, rel=1e-4)
    # a one-channel model on RGB-perturbed digits: before_model maps back to grey
    grey_model = linear_model(d=36, k=4, seed=1)
    g = torch.rand(5, 1, 6, 6, generator=torch.Generator().manual_seed(2))
    rows = P.sweep(grey_model, P.to_rgb(g), grey_model(g).argmax(1), levels={"rgb_randomize": (0.99,)},
                   before_model=P.to_grey, progress=False)
    assert rows[0]["linf"] > 0 and 0 <= rows[0]["accuracy"] <= 1
