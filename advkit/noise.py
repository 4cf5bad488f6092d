"""Random perturbations of a given norm: the baseline every crafted attack is compared with."""

from __future__ import annotations

import math

import torch

from .attacks.checks import check_eps, check_images, check_norm


def random_noise(x: torch.Tensor, eps: float, *, norm: float | str = "inf", seed: int = 0) -> torch.Tensor:
    """``x`` plus random noise of norm exactly ``eps`` (before clipping to [0, 1]).

    * ``norm="inf"``: a random sign per pixel, ``eps * s`` with ``s`` in {-1, +1} (the same
      Linf norm as an FGSM step, but not aligned with the gradient);
    * ``norm=2``: a uniformly random direction on the L2 sphere of radius ``eps``.

    Parameters
    ----------
    x : Tensor
        Batch in [0, 1]; not modified.
    eps : float
        Norm of the noise.
    seed : int
        The noise is reproducible and independent of the global RNG.

    Returns
    -------
    Tensor
        Clipped to [0, 1], same shape and device as ``x``.
    """
    check_images(x)
    eps = check_eps(eps)
    p = check_norm(norm, (math.inf, 2.0))
    gen = torch.Generator().manual_seed(seed)
    if p == math.inf:
        noise = torch.randint(0, 2, x.shape, generator=gen).float().mul_(2).sub_(1)
    else:
        noise = torch.randn(x.shape, generator=gen)
        noise /= noise.reshape(len(x), -1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
    return (x + eps * noise.to(x.device, x.dtype)).clamp(0, 1)
