"""Common perturbations: the thesis's five (fastai v1 semantics), the spatial attack, MNIST-C, ImageNet-C.

=======================  ==============================================================================
``rotate``               rotation about the centre, bilinear, reflection padding
``brightness``           ``sigmoid(logit(x) + logit(change))``; 0.5 is the identity
``contrast``             ``sigmoid(scale * logit(x))``; 1 is the identity, 0 gives grey
``jitter``               every pixel read from a random neighbour (seeded)
``rgb_randomize``        one channel replaced by scaled uniform noise (seeded)
``to_rgb``, ``to_grey``  the grey <-> RGB steps of the thesis's pipeline
``perturb``              any of the five by name, for loops over :data:`THESIS_LEVELS`
``sweep``                the thesis's protocol: accuracy, true-class probability, L1/L2/Linf per level
``rotate_translate``     rotation about the centre then a pixel shift, zero padding
``spatial_attack``       Engstrom et al. 2019: grid (775) or worst-of-k rotations + translations
``mnist_c``              MNIST-C corruptions (Mu & Gilmer 2019), all 15
``imagenet_c``           ImageNet-C corruptions (Hendrycks & Dietterich 2019), 14 of 15 (not frost), 5 severities
``mce``                  mean corruption error, and ``relative_mce`` (Hendrycks & Dietterich 2019)
=======================  ==============================================================================
"""

from .common import (
    BRIGHTNESS_CHANGES,
    CONTRAST_SCALES,
    JITTER_MAGNITUDES,
    LUMA_WEIGHTS,
    PERTURBATIONS,
    RGB_RANDOMIZE_CHANNEL,
    RGB_RANDOMIZE_THRESHOLDS,
    ROTATION_DEGREES,
    THESIS_LEVELS,
    brightness,
    contrast,
    jitter,
    perturb,
    rgb_randomize,
    rotate,
    to_grey,
    to_rgb,
)
from .corruption_metrics import IMAGENET_C_ALEXNET_ERRORS, IMAGENET_C_CORRUPTIONS, corruption_errors, mce, relative_corruption_errors, relative_mce
from .imagenet_corruptions import IMAGENET_C_NOT_IMPLEMENTED, IMAGENET_C_SEVERITIES, imagenet_c
from .mnist_corruptions import MNIST_C_CORRUPTIONS, MNIST_C_NOT_IMPLEMENTED, MNIST_C_PARAMS, mnist_c
from .spatial import rotate_translate, spatial_attack, spatial_grid
from .sweep import sweep

__all__ = [
    "BRIGHTNESS_CHANGES", "CONTRAST_SCALES", "JITTER_MAGNITUDES", "LUMA_WEIGHTS", "PERTURBATIONS",
    "RGB_RANDOMIZE_CHANNEL", "RGB_RANDOMIZE_THRESHOLDS", "ROTATION_DEGREES", "THESIS_LEVELS",
    "brightness", "contrast", "jitter", "perturb", "rgb_randomize", "rotate", "to_grey", "to_rgb",
    "rotate_translate", "spatial_attack", "spatial_grid",
    "IMAGENET_C_ALEXNET_ERRORS", "IMAGENET_C_CORRUPTIONS", "corruption_errors", "mce", "relative_corruption_errors",
    "relative_mce", "MNIST_C_CORRUPTIONS", "MNIST_C_NOT_IMPLEMENTED", "MNIST_C_PARAMS", "mnist_c",
    "IMAGENET_C_NOT_IMPLEMENTED", "IMAGENET_C_SEVERITIES", "imagenet_c", "sweep",
]
from .analysis import corruption_sweep, discordant_pairs, errors_by_corruption, rank_correlation, spatial_budget
__all__ += ["corruption_sweep", "discordant_pairs", "errors_by_corruption", "rank_correlation", "spatial_budget"]
