"""Datasets, found through one setting (``ADVKIT_DATA``; see :mod:`advkit.paths`).

* :func:`mnist` - MNIST digits, torchvision's files, URLs and MD5s;
* :func:`pentomino` - our generator of the Arcade-Universe "odd one out" task;
* :func:`imagenette`, :func:`imagewoof` - fast.ai's 160-px ImageNet subsets;
* :func:`one_per_class` - the thesis's sample selection.

Every image is a float tensor in [0, 1]; models normalise inside.
"""

from .errors import DatasetNotFoundError, DownloadError
from .imagenette import imagenette, imagewoof
from .mnist import mnist
from .pentomino import pentomino
from .selection import one_per_class

__all__ = [
    "DatasetNotFoundError",
    "DownloadError",
    "imagenette",
    "imagewoof",
    "mnist",
    "one_per_class",
    "pentomino",
]
