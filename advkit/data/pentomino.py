"""Synthetic "Pentomino odd-one-out" images (Gulcehre & Bengio 2013, "Knowledge Matters").

Our own vectorised generator for the Arcade-Universe Pentomino task: every image shows three
pentominoes, two of one class and one of another; the label is the class of the odd one.

Classes
-------
Ten classes: the five chiral pentominoes L, N, P, F, Y as drawn in :data:`MASKS` (row 0 at the
top, ``#`` = filled) and their mirror images (flipped left-right), named with a prime::

    L      N      P      F       Y
    #.     .#     ##     .##     .#
    #.     .#     ##     ##.     ##
    #.     ##     #.     .#.     .#
    ##     #.                    .#

All five are chiral, so under rotations by multiples of 90 degrees alone the ten classes are
pairwise distinct; a shape and its mirror image are *different* classes.

Layout rule
-----------
The ``size x size`` image is cut into a 4 x 4 grid of ``size // 4``-pixel square cells (16 x 16
for the default 64 x 64). Three distinct cells are drawn uniformly at random, in random order,
so the odd shape lands in any of the 16 cells with equal probability. Each shape is rotated by
``k * 90`` degrees counter-clockwise (``k`` uniform in 0..3), scaled by 1 or 2 (uniform; at scale
2 every cell of the pentomino becomes a 2 x 2 pixel block, so shapes are at most 8 x 8 pixels),
and placed at a uniform random offset inside its grid cell that keeps at least one background
pixel between the shape and the cell border. Shapes in different cells are therefore at least
two background pixels apart and never touch, not even diagonally.
"""

from __future__ import annotations

import numbers

import torch
from torch.utils.data import TensorDataset

__all__ = ["CLASS_NAMES", "MASKS", "pentomino"]

_BASE_DRAWINGS: dict[str, tuple[str, ...]] = {
    "L": ("#.", "#.", "#.", "##"),
    "N": (".#", ".#", "##", "#."),
    "P": ("##", "##", "#."),
    "F": (".##", "##.", ".#."),
    "Y": (".#", "##", ".#", ".#"),
}

CLASS_NAMES: tuple[str, ...] = (*_BASE_DRAWINGS, *(f"{name}'" for name in _BASE_DRAWINGS))
"""Label ``i`` means the odd shape is ``CLASS_NAMES[i]``; ``X'`` is the mirror image of ``X``."""

_NUM_CLASSES = len(CLASS_NAMES)
_GRID = 4  # the image is a _GRID x _GRID grid of square cells
_MARGIN = 1  # background pixels kept between a shape and the border of its cell
_SCALES = (1, 2)
_ROTATIONS = 4
_PIXELS_PER_SHAPE = 5 * max(_SCALES) ** 2  # every shape is rendered as this many (y, x) pairs


def _drawing_to_mask(rows: tuple[str, ...]) -> torch.Tensor:
    return torch.tensor([[ch == "#" for ch in row] for row in rows], dtype=torch.bool)


def _class_masks() -> list[torch.Tensor]:
    """Fresh tight-bounding-box masks of the 10 classes, in the order of ``CLASS_NAMES``."""
    base = [_drawing_to_mask(rows) for rows in _BASE_DRAWINGS.values()]
    return base + [torch.flip(mask, dims=(1,)) for mask in base]


MASKS: tuple[torch.Tensor, ...] = tuple(_class_masks())
"""Boolean masks (tight bounding box, at most 4 x 3) of the 10 classes, in ``CLASS_NAMES`` order.

For reference only: the generator builds its own copies, so editing these does not affect it.
"""

_MAX_EXTENT = max(_SCALES) * max(max(mask.shape) for mask in MASKS)  # 8 pixels
_MIN_SIZE = _GRID * (_MAX_EXTENT + 2 * _MARGIN)  # 40 pixels


def _check_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(
            f"{name} must be an int, got {value!r} of type {type(value).__name__}; "
            f"pass a whole number such as {name}=1000"
        )
    return int(value)


def _validate(n: object, seed: object, size: object) -> tuple[int, int, int]:
    n = _check_int("n", n)
    if n < 1:
        raise ValueError(f"n must be a positive int (the number of images), got n={n}")
    seed = _check_int("seed", seed)
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed must be in [0, 2**63), got seed={seed}; pass a non-negative int")
    size = _check_int("size", size)
    if size < _MIN_SIZE or size % _GRID != 0:
        raise ValueError(
            f"size must be a multiple of {_GRID} and at least {_MIN_SIZE} (the image is a "
            f"{_GRID}x{_GRID} grid of cells that must fit an {_MAX_EXTENT}-pixel shape plus a "
            f"{_MARGIN}-pixel margin on each side), got size={size}; the default is 64"
        )
    return n, seed, size


def _shape_tables() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pixel offsets and bounding boxes of every (class, rotation, scale) variant.

    Returns
    -------
    offsets : int64 tensor ``[10, 4, 2, 20, 2]``
        ``(dy, dx)`` of the filled pixels relative to the top-left corner of the bounding box.
        Scale-1 shapes have 5 pixels, listed 4 times each, so every variant has 20 entries.
    heights, widths : int64 tensors ``[10, 4, 2]``
        Bounding-box size in pixels.
    """
    variants = (_NUM_CLASSES, _ROTATIONS, len(_SCALES))
    offsets = torch.empty(*variants, _PIXELS_PER_SHAPE, 2, dtype=torch.long)
    heights = torch.empty(variants, dtype=torch.long)
    widths = torch.empty_like(heights)
    for c, mask in enumerate(_class_masks()):
        for r in range(_ROTATIONS):
            rotated = torch.rot90(mask, r)  # r quarter turns counter-clockwise
            for s, scale in enumerate(_SCALES):
                scaled = rotated.repeat_interleave(scale, 0).repeat_interleave(scale, 1)
                pixels = scaled.nonzero()
                offsets[c, r, s] = pixels.repeat(_PIXELS_PER_SHAPE // len(pixels), 1)
                heights[c, r, s], widths[c, r, s] = scaled.shape
    return offsets, heights, widths


def _sample_classes(n: int, gen: torch.Generator) -> torch.Tensor:
    """``[n, 3]`` classes: column 0 is the odd class ``a``, columns 1 and 2 the pair ``b``."""
    odd = torch.randint(_NUM_CLASSES, (n,), generator=gen)
    pair = (odd + 1 + torch.randint(_NUM_CLASSES - 1, (n,), generator=gen)) % _NUM_CLASSES
    return torch.stack([odd, pair, pair], dim=1)


def _sample_cells(n: int, gen: torch.Generator) -> torch.Tensor:
    """``[n, 3]`` distinct grid cells (0..15, row-major), a uniformly random ordered triple."""
    return torch.rand(n, _GRID * _GRID, generator=gen).argsort(dim=1)[:, :3]


def _sample_offsets(extent: torch.Tensor, cell: int, gen: torch.Generator) -> torch.Tensor:
    """Uniform offset in ``[margin, cell - margin - extent]`` for each bounding-box extent."""
    choices = cell - 2 * _MARGIN - extent + 1
    u = torch.rand(extent.shape, generator=gen)
    return _MARGIN + torch.minimum((u * choices).long(), choices - 1)


def _render(n: int, seed: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    cell = size // _GRID
    classes = _sample_classes(n, gen)
    cells = _sample_cells(n, gen)
    rotations = torch.randint(_ROTATIONS, (n, 3), generator=gen)
    scales = torch.randint(len(_SCALES), (n, 3), generator=gen)

    offsets, heights, widths = _shape_tables()
    variant = (classes, rotations, scales)
    top = (cells // _GRID) * cell + _sample_offsets(heights[variant], cell, gen)
    left = (cells % _GRID) * cell + _sample_offsets(widths[variant], cell, gen)
    pixels = offsets[variant]  # [n, 3, 20, 2]
    rows = top[..., None] + pixels[..., 0]
    cols = left[..., None] + pixels[..., 1]
    flat = (rows * size + cols).reshape(n, -1)  # [n, 60] indices into the flattened image

    images = torch.zeros(n, size * size, dtype=torch.float32)
    images.scatter_(1, flat, 1.0)
    return images.view(n, 1, size, size), classes[:, 0].clone()


def pentomino(n: int, seed: int = 0, *, size: int = 64) -> TensorDataset:
    """Generate the Pentomino odd-one-out task (Gulcehre & Bengio 2013, "Knowledge Matters").

    Each image shows three pentominoes on a black background: one of class ``a`` and two of
    class ``b != a``; the label is ``a``. ``a`` is uniform over the 10 classes in
    :data:`CLASS_NAMES` (L, N, P, F, Y and their mirror images L', N', P', F', Y') and ``b`` is
    uniform over the other 9. Every shape is independently rotated by a uniform multiple of 90
    degrees and scaled by 1 or 2 (uniform; scale 2 turns each pentomino cell into a 2 x 2 pixel
    block).

    Layout: the image is a 4 x 4 grid of ``size // 4``-pixel cells (16 x 16 by default). The
    three shapes go to three distinct cells chosen uniformly at random, in random order (so
    the odd shape can be in any cell), each at a uniform random offset that keeps at least 1
    background pixel between the shape and its cell border. Shapes are thus >= 2 pixels apart
    and never touch, not even diagonally.

    Generation is vectorised and deterministic: it uses its own ``torch.Generator`` seeded with
    ``seed`` and never reads or changes the global random state.

    Parameters
    ----------
    n : int
        Number of images, at least 1.
    seed : int, default 0
        Seed in ``[0, 2**63)``. The same seed (and ``size``) gives identical tensors.
    size : int, default 64
        Image side in pixels; a multiple of 4 and at least 40.

    Returns
    -------
    torch.utils.data.TensorDataset
        ``(images, labels)``: ``images`` is float32 of shape ``[n, 1, size, size]`` with values
        exactly 0.0 (background) or 1.0 (shape); ``labels`` is int64 of shape ``[n]`` in 0..9,
        the index in :data:`CLASS_NAMES` of the odd shape.

    Raises
    ------
    ValueError
        If ``n``, ``seed`` or ``size`` is not an int or out of range.

    Example
    -------
    >>> from advkit.data.pentomino import CLASS_NAMES, pentomino
    >>> data = pentomino(1000, seed=0)
    >>> images, labels = data.tensors
    >>> images.shape, images.dtype, labels.dtype
    (torch.Size([1000, 1, 64, 64]), torch.float32, torch.int64)
    >>> CLASS_NAMES[int(labels[0])] in CLASS_NAMES
    True
    """
    n, seed, size = _validate(n, seed, size)
    images, labels = _render(n, seed, size)
    return TensorDataset(images, labels)
