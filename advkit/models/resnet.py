"""torchvision's ResNet-50 with normalisation inside and an optional ImageNet start."""

from __future__ import annotations

import os
import urllib.error

import torch
from torch import nn
from torchvision.models import ResNet50_Weights
from torchvision.models import resnet50 as _tv_resnet50

from .nets import Normalize

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PretrainedWeightsUnavailable(RuntimeError):
    """ImageNet weights are neither in torch's hub cache nor downloadable (offline)."""


class GrayToRGB(nn.Module):
    """Repeat a single channel three times, so grayscale images fit an RGB network."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def _imagenet_state_dict(weights: ResNet50_Weights) -> dict:
    filename = os.path.basename(weights.url)
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", filename)
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except (urllib.error.URLError, OSError, RuntimeError) as err:
        raise PretrainedWeightsUnavailable(
            f"ImageNet-pretrained ResNet-50 weights ({weights.name}) are not available: {err}\n"
            f"They are downloaded from {weights.url} into {cached}. This machine cannot reach "
            f"it. Fix: copy that file there (or set TORCH_HOME), or use pretrained=False, which "
            f"trains from scratch (what advkit's CPU profiles do)."
        ) from err


def pretrained_cached(weights: ResNet50_Weights = ResNet50_Weights.IMAGENET1K_V1) -> bool:
    """Whether the ImageNet weights file is already in torch's hub cache (no network used)."""
    return os.path.isfile(os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url)))


def pretrained_available(weights: ResNet50_Weights = ResNet50_Weights.IMAGENET1K_V1, *, timeout: float = 5.0) -> bool:
    """Whether ``resnet50(pretrained=True)`` can work here: the file is in the hub cache, or its
    URL answers within ``timeout`` seconds (a HEAD request; nothing is downloaded)."""
    import urllib.request

    if pretrained_cached(weights):
        return True
    try:
        with urllib.request.urlopen(urllib.request.Request(weights.url, method="HEAD"), timeout=timeout) as r:
            return 200 <= r.status < 400
    except (urllib.error.URLError, OSError, ValueError):
        return False


def resnet50(
    num_classes: int = 10,
    *,
    in_channels: int = 3,
    pretrained: bool = False,
    weights: ResNet50_Weights = ResNet50_Weights.IMAGENET1K_V1,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> nn.Sequential:
    """ResNet-50 (He et al. 2016) taking [0, 1] pixels, with a new ``num_classes`` head.

    Parameters
    ----------
    num_classes : int
        Size of the new final layer (the ImageNet head is replaced).
    in_channels : {1, 3}
        1 repeats a grayscale image into three channels (MNIST, Pentomino).
    pretrained : bool
        Start from ImageNet weights (``weights``), as the thesis does. Offline and without
        the file in torch's hub cache this raises :class:`PretrainedWeightsUnavailable`.
    weights : torchvision.models.ResNet50_Weights
        Which ImageNet weights (default ``IMAGENET1K_V1``, the original torchvision release).
    mean, std : tuple of 3 floats
        The normalisation inside the model (default ImageNet's). The thesis normalised MNIST
        with 0.131 / 0.308 on every channel (:data:`advkit.thesis.NORMALIZATION`).

    Returns
    -------
    nn.Sequential
        ``[GrayToRGB], Normalize(mean, std), resnet``.
    """
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std need 3 values (the network is RGB), got {mean} and {std}")
    net = _tv_resnet50(weights=None)
    if pretrained:
        net.load_state_dict(_imagenet_state_dict(weights))
    net.fc = nn.Linear(net.fc.in_features, num_classes)
    layers: list[nn.Module] = [GrayToRGB()] if in_channels == 1 else []
    layers += [Normalize(tuple(mean), tuple(std)), net]
    return nn.Sequential(*layers)
