"""Small MNIST networks: LeNet-5, FC500-150-10, the Kolter-Madry CNN and the lecture's 64-64 MLP."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, as the first layer of a model.

    Keeping it inside the model means every model takes pixels in [0, 1], so an attack's
    budget (eps = 0.3 means 30% of the pixel range) is the same whatever the dataset.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean and std need one value per channel, got {mean} and {std}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {std}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def lenet5(num_classes: int = 10, in_channels: int = 1) -> nn.Sequential:
    """LeNet-5 for 28x28 inputs (first convolution padded by 2, as for the 32x32 original).

    conv5x5(6) - ReLU - maxpool2 - conv5x5(16) - ReLU - maxpool2 - fc120 - fc84 - fc10.
    ReLU and max-pooling replace the original's tanh and subsampling, as in DeepFool's and
    most modern reimplementations. About 61k parameters.
    """
    return nn.Sequential(
        Normalize(MNIST_MEAN * in_channels, MNIST_STD * in_channels),
        nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, num_classes),
    )


def fc500_150_10(num_classes: int = 10, in_features: int = 784) -> nn.Sequential:
    """The fully connected 784-500-150-10 network of DeepFool's Table 1 (ReLU activations)."""
    return nn.Sequential(
        Normalize(MNIST_MEAN, MNIST_STD),
        nn.Flatten(),
        nn.Linear(in_features, 500), nn.ReLU(),
        nn.Linear(500, 150), nn.ReLU(),
        nn.Linear(150, num_classes),
    )


def cnn(num_classes: int = 10, *, normalize: bool = True, width: float = 1) -> nn.Sequential:
    """The MNIST CNN of Kolter & Madry's tutorial, chapter 4 ("model_cnn").

    conv3x3(32) - conv3x3(32, stride 2) - conv3x3(64) - conv3x3(64, stride 2) - fc100 - fc10,
    ReLU throughout. ``normalize=False`` gives exactly the tutorial's layer list (it feeds raw
    [0, 1] pixels), which is what its published checkpoints expect.

    ``width`` scales every hidden layer (32, 64 and 100 units become ``round(32 * width)``, ...,
    at least 1), for capacity experiments in the spirit of Madry et al. (ICLR 2018, Sec. 4),
    who found that wider networks gain more from adversarial training. ``width=1`` is the
    tutorial's network, with the same parameter names.
    """
    if not (isinstance(width, (int, float)) and not isinstance(width, bool)) or not width > 0:
        raise ValueError(f"width must be a number > 0 (1 is the tutorial's network), got {width!r}")
    c1, c2, h = (max(1, round(n * width)) for n in (32, 64, 100))
    layers: list[nn.Module] = [Normalize(MNIST_MEAN, MNIST_STD)] if normalize else []
    layers += [
        nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(),
        nn.Conv2d(c1, c1, 3, padding=1, stride=2), nn.ReLU(),
        nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(),
        nn.Conv2d(c2, c2, 3, padding=1, stride=2), nn.ReLU(),
        nn.Flatten(),
        nn.Linear(7 * 7 * c2, h), nn.ReLU(),
        nn.Linear(h, num_classes),
    ]
    return nn.Sequential(*layers)


def softmax_regression(num_classes: int = 10, in_features: int = 784) -> nn.Sequential:
    """Multinomial logistic regression on raw pixels: ``Flatten`` then one ``Linear(784, 10)``.

    No normalisation layer, on purpose: the weights act on pixels, so an L2 penalty on them and
    the L2 distance to the decision boundary, ``min_j (z_y - z_j) / ||w_y - w_j||_2``, live in the
    same space (the weight-decay curve of lab 06, :func:`advkit.defenses.training.weight_decay_curve`).
    The modules are named ``flatten, logits``; 7850 parameters.
    """
    return nn.Sequential(OrderedDict([("flatten", nn.Flatten()), ("logits", nn.Linear(in_features, num_classes))]))


def mlp_64_64(num_classes: int = 10, in_features: int = 784) -> nn.Sequential:
    """The lecture's MLP: 784 - 64 - 64 - 10 with ReLU, normalisation inside (pixels in [0, 1]).

    The modules are named ``normalize, flatten, fc1, hidden1, fc2, hidden2, logits``; ``hidden1``
    and ``hidden2`` are the ReLU outputs, the activations
    :class:`advkit.defenses.detection.DeepKNN` reads (``detection.MLP_LAYERS``). About 55k parameters.
    """
    return nn.Sequential(OrderedDict([
        ("normalize", Normalize(MNIST_MEAN, MNIST_STD)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(in_features, 64)), ("hidden1", nn.ReLU()),
        ("fc2", nn.Linear(64, 64)), ("hidden2", nn.ReLU()),
        ("logits", nn.Linear(64, num_classes)),
    ]))
