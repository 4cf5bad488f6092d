"""Corruption-error summaries: CE, mCE and relative mCE (Hendrycks & Dietterich, ICLR 2019).

Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations", ICLR 2019, Section 3. With ``E^f_{s,c}`` the top-1 error of classifier ``f``
on corruption ``c`` at severity ``s = 1..5`` and ``E^f_clean`` its clean error::

    CE^f_c          = sum_s E^f_{s,c} / sum_s E^base_{s,c}
    relative CE^f_c = sum_s (E^f_{s,c} - E^f_clean) / sum_s (E^base_{s,c} - E^base_clean)
    mCE             = mean_c CE^f_c           relative mCE = mean_c relative CE^f_c

The paper's baseline is AlexNet on ImageNet-C (:data:`IMAGENET_C_ALEXNET_ERRORS`); on other
data sets (MNIST-C, the Imagenette subsets) a baseline must be a model measured on the same
corruptions and images, e.g. the course's FC500-150-10 for MNIST. Values are fractions
(0.25 = 25%); the summaries are returned in percent, as the papers print them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

#: The 15 ImageNet-C corruptions, in the benchmark's order (noise, blur, weather, digital).
IMAGENET_C_CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
    "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
    "jpeg_compression",
)

#: AlexNet's top-1 error on ImageNet-C, averaged over the five severities, the normaliser of
#: mCE ("Raw AlexNet errors taken from https://github.com/hendrycks/robustness", as copied in
#: google-research/augmix ``imagenet.py``, ``ALEXNET_ERR``).
IMAGENET_C_ALEXNET_ERRORS: dict[str, float] = dict(zip(IMAGENET_C_CORRUPTIONS, (
    0.886428, 0.894468, 0.922640, 0.819880, 0.826268, 0.785948, 0.798360, 0.866816, 0.826572,
    0.819324, 0.564592, 0.853204, 0.646056, 0.717840, 0.606500,
)))

Errors = Mapping[str, "float | Sequence[float]"]


def _mean_error(name: str, value, who: str) -> float:
    """One corruption's errors (five severities, or already their mean) as a mean in [0, 1]."""
    vals = [float(value)] if isinstance(value, (int, float)) else [float(v) for v in value]
    if not vals:
        raise ValueError(f"{who}[{name!r}] is empty; give one error per severity (fractions in [0, 1])")
    for v in vals:
        if not math.isfinite(v) or not 0 <= v <= 1:
            raise ValueError(f"{who}[{name!r}] holds {v!r}: errors must be fractions in [0, 1] "
                             "(0.25 for 25%; pass 1 - accuracy)")
    return sum(vals) / len(vals)


def _common(errors: Errors, baseline: Errors) -> list[str]:
    if not errors:
        raise ValueError("errors is empty: give {corruption: [error at severity 1..5]}")
    missing = [c for c in errors if c not in baseline]
    if missing:
        raise ValueError(f"the baseline has no errors for {missing}; measure the baseline model on "
                         "the same corruptions (or pass baseline=IMAGENET_C_ALEXNET_ERRORS for ImageNet-C)")
    return list(errors)


def _check_lengths(errors: Errors, baseline: Errors, names: list[str]) -> None:
    for c in names:
        a, b = errors[c], baseline[c]
        if not isinstance(a, (int, float)) and not isinstance(b, (int, float)) and len(a) != len(b):
            raise ValueError(f"{c!r}: {len(a)} severities for the model but {len(b)} for the baseline")


def corruption_errors(errors: Errors, baseline: Errors = IMAGENET_C_ALEXNET_ERRORS) -> dict[str, float]:
    """``CE_c = sum_s E_{s,c} / sum_s E^base_{s,c}`` in percent, per corruption (see module docstring).

    ``errors`` maps a corruption name to its errors at each severity (fractions), or to their
    mean; so may ``baseline``. With equally many severities, the ratio of sums is the ratio of
    means.
    """
    names = _common(errors, baseline)
    _check_lengths(errors, baseline, names)
    out = {}
    for c in names:
        base = _mean_error(c, baseline[c], "baseline")
        if base == 0:
            raise ValueError(f"the baseline's error on {c!r} is 0: CE is undefined")
        out[c] = 100 * _mean_error(c, errors[c], "errors") / base
    return out


def mce(errors: Errors, baseline: Errors = IMAGENET_C_ALEXNET_ERRORS) -> float:
    """Mean corruption error (percent): the mean of :func:`corruption_errors` over corruptions.

    Example
    -------
    >>> round(mce(IMAGENET_C_ALEXNET_ERRORS), 6)   # AlexNet against itself
    100.0
    """
    ce = corruption_errors(errors, baseline)
    return sum(ce.values()) / len(ce)


def relative_corruption_errors(errors: Errors, clean_error: float, baseline: Errors,
                               baseline_clean_error: float) -> dict[str, float]:
    """``sum_s (E_{s,c} - E_clean) / sum_s (E^base_{s,c} - E^base_clean)`` in percent, per corruption.

    It measures the *degradation* from clean to corrupted relative to the baseline's; a model
    can have a low mCE only because it is accurate, and a relative mCE above 100% says it
    degrades faster than the baseline.
    """
    names = _common(errors, baseline)
    _check_lengths(errors, baseline, names)
    e0 = _mean_error("clean", clean_error, "clean_error")
    b0 = _mean_error("clean", baseline_clean_error, "baseline_clean_error")
    out = {}
    for c in names:
        gap = _mean_error(c, baseline[c], "baseline") - b0
        if gap == 0:
            raise ValueError(f"the baseline's error on {c!r} equals its clean error: relative CE is undefined")
        out[c] = 100 * (_mean_error(c, errors[c], "errors") - e0) / gap
    return out


def relative_mce(errors: Errors, clean_error: float, baseline: Errors, baseline_clean_error: float) -> float:
    """Relative mCE (percent): the mean of :func:`relative_corruption_errors`."""
    rce = relative_corruption_errors(errors, clean_error, baseline, baseline_clean_error)
    return sum(rce.values()) / len(rce)
