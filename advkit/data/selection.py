"""Choosing the images an experiment attacks."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def one_per_class(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    per_class: int = 1,
    num_classes: int | None = None,
    seed: int | None = None,
    batch_size: int = 500,
) -> torch.Tensor:
    """Indices of ``per_class`` correctly classified images of every class (the thesis's protocol).

    The thesis attacks "one validation image per class that the model classifies correctly";
    ``per_class > 1`` extends the protocol for tighter confidence intervals.

    Parameters
    ----------
    model : nn.Module
        Classifier in eval mode, taking ``x`` as it is.
    x, y : Tensor
        Candidate images (N x C x H x W) and their int labels.
    per_class : int
        How many images per class.
    num_classes : int, optional
        Defaults to ``y.max() + 1``.
    seed : int, optional
        ``None`` takes the first correct images in dataset order (reproducible, like the
        thesis); an int draws them at random with that seed.
    batch_size : int
        Evaluation batch size.

    Returns
    -------
    Tensor
        int64 indices into ``x``, ordered by class: ``per_class`` for class 0, then class 1, ...

    Raises
    ------
    ValueError
        If some class has fewer than ``per_class`` correctly classified images.

    Example
    -------
    >>> idx = one_per_class(model, x_test, y_test)   # doctest: +SKIP
    >>> y_test[idx].tolist()                         # doctest: +SKIP
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    """
    if model.training:
        raise ValueError("model is in training mode; call model.eval() first")
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} images but y has {len(y)} labels")
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    num_classes = int(y.max()) + 1 if num_classes is None else num_classes
    device = next(model.parameters()).device
    preds = torch.cat([model(x[i : i + batch_size].to(device)).argmax(1).cpu()
                       for i in range(0, len(x), batch_size)])
    correct = preds == y.cpu()
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    chosen = []
    for c in range(num_classes):
        idx = torch.nonzero(correct & (y.cpu() == c)).flatten()
        if len(idx) < per_class:
            raise ValueError(
                f"class {c} has only {len(idx)} correctly classified images, need {per_class}; "
                "pass more candidates or lower per_class"
            )
        if gen is not None:
            idx = idx[torch.randperm(len(idx), generator=gen)]
        chosen.append(idx[:per_class])
    return torch.cat(chosen)
