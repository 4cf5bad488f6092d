"""Model architectures used in the labs. Every model takes pixels in [0, 1].

Normalisation lives *inside* the model (:class:`Normalize` as its first layer), so attacks,
budgets and pictures are all in pixel space.

============================  =======================================================
``lenet5()``                  LeNet-5 (LeCun et al. 1998), as in DeepFool's MNIST table
``fc500_150_10()``            the fully connected 784-500-150-10 net of DeepFool's Table 1
``cnn()``                     the small MNIST CNN of the Kolter & Madry tutorial (ch. 4)
``mlp_64_64()``               the lecture's 784-64-64-10 MLP (deep k-NN detection)
``softmax_regression()``      one linear layer on raw pixels (the weight-decay curve)
``resnet50(num_classes, ...)``torchvision ResNet-50, optionally ImageNet-pretrained
============================  =======================================================
"""

from __future__ import annotations

from .nets import MNIST_MEAN, MNIST_STD, Normalize, cnn, fc500_150_10, lenet5, mlp_64_64, softmax_regression
from .resnet import IMAGENET_MEAN, IMAGENET_STD, PretrainedWeightsUnavailable, pretrained_available, pretrained_cached, resnet50

ARCHITECTURES = {
    "lenet5": lenet5,
    "fc500_150_10": fc500_150_10,
    "cnn": cnn,
    "mlp_64_64": mlp_64_64,
    "softmax_regression": softmax_regression,
    "resnet50": resnet50,
}


def build(name: str, **kwargs):
    """Build an architecture by name (one of :data:`ARCHITECTURES`)."""
    try:
        factory = ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(ARCHITECTURES)}") from None
    return factory(**kwargs)


__all__ = [
    "ARCHITECTURES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MNIST_MEAN",
    "MNIST_STD",
    "Normalize",
    "PretrainedWeightsUnavailable",
    "build",
    "cnn",
    "fc500_150_10",
    "lenet5",
    "mlp_64_64",
    "pretrained_available",
    "pretrained_cached",
    "resnet50",
    "softmax_regression",
]
