"""Device choice shared by the zoo, the attacks and the labs."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA if available, else CPU; anything else is checked and returned.

    Asking for CUDA on a machine without it raises a ``ValueError`` that says so, rather
    than failing later inside a kernel.
    """
    if isinstance(device, torch.device):
        dev = device
    elif device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {str(device)!r} was requested but CUDA is not available here; "
            "use device='cpu' or 'auto'"
        )
    return dev
