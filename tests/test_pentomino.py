"""Tests for advkit.data.pentomino, checked by an independent shape classifier.

The classifier below does not use the module's masks: it has its own pentomino definitions
(drawn in different orientations from the module's), labels connected components with scipy,
undoes the scale and identifies each shape up to rotation (not reflection).
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from scipy import ndimage

from advkit.data.pentomino import CLASS_NAMES, pentomino

EXPECTED_NAMES = ("L", "N", "P", "F", "Y", "L'", "N'", "P'", "F'", "Y'")

# Our own drawings of the unprimed pentominoes, each a quarter turn clockwise from the
# conventional letter-like picture (L = vertical bar with its foot to the right, N, P with the
# bowl at the top right, F = .##/##./.#., Y = vertical bar with its bump on the left).
QUARTER_TURNED = {
    "L": ("####", "#..."),
    "N": ("##..", ".###"),
    "P": ("###", ".##"),
    "F": (".#.", "###", "..#"),
    "Y": ("..#.", "####"),
}

Shape = frozenset[tuple[int, int]]


def _cells(rows: tuple[str, ...]) -> Shape:
    return frozenset((r, c) for r, row in enumerate(rows) for c, ch in enumerate(row) if ch == "#")


def _normalise(cells: Shape) -> Shape:
    r0 = min(r for r, _ in cells)
    c0 = min(c for _, c in cells)
    return frozenset((r - r0, c - c0) for r, c in cells)


def _rotate(cells: Shape) -> Shape:
    return _normalise(frozenset((c, -r) for r, c in cells))


def _mirror(cells: Shape) -> Shape:
    return _normalise(frozenset((-r, c) for r, c in cells))  # up-down flip


def _canonical(cells: Shape) -> tuple[tuple[int, int], ...]:
    """Rotation-invariant key: the smallest sorted cell list over the 4 rotations."""
    variants = []
    shape = _normalise(cells)
    for _ in range(4):
        variants.append(tuple(sorted(shape)))
        shape = _rotate(shape)
    return min(variants)


def _class_table() -> dict[tuple[tuple[int, int], ...], str]:
    table = {}
    for name, rows in QUARTER_TURNED.items():
        shape = _cells(rows)
        table[_canonical(shape)] = name
        table[_canonical(_mirror(shape))] = name + "'"
    return table


TABLE = _class_table()


def _classify(component: np.ndarray) -> tuple[str, int]:
    """Class name and scale of one connected component given as a tight boolean mask."""
    count = int(component.sum())
    assert count in (5, 20), f"component has {count} pixels, expected 5 or 20"
    scale = 1 if count == 5 else 2
    if scale == 2:
        h, w = component.shape
        assert h % 2 == 0 and w % 2 == 0, "scale-2 shape has an odd-sized bounding box"
        blocks = component.reshape(h // 2, 2, w // 2, 2)
        assert (blocks.all(axis=(1, 3)) == blocks.any(axis=(1, 3))).all(), "not 2x2 blocks"
        component = blocks.all(axis=(1, 3))
    cells = frozenset(map(tuple, np.argwhere(component).tolist()))
    key = _canonical(cells)
    assert key in TABLE, f"component is not one of the 10 classes:\n{component.astype(int)}"
    return TABLE[key], scale


def _analyse(image: np.ndarray) -> list[tuple[str, int, tuple[slice, slice]]]:
    """(class, scale, bounding box) of every 8-connected component of a binary image."""
    labelled, count = ndimage.label(image, structure=np.ones((3, 3), dtype=int))
    assert count == 3, f"expected 3 separate shapes, found {count} connected components"
    result = []
    for index, box in enumerate(ndimage.find_objects(labelled), start=1):
        name, scale = _classify(labelled[box] == index)
        result.append((name, scale, box))
    return result


@pytest.fixture(scope="module")
def sample() -> tuple[torch.Tensor, torch.Tensor]:
    return pentomino(2000, seed=7).tensors


def test_class_table_is_ten_distinct_chiral_classes() -> None:
    assert len(TABLE) == 10
    assert sorted(TABLE.values()) == sorted(EXPECTED_NAMES)
    assert tuple(CLASS_NAMES) == EXPECTED_NAMES


def test_shapes_dtypes_and_values(sample: tuple[torch.Tensor, torch.Tensor]) -> None:
    images, labels = sample
    assert images.shape == (2000, 1, 64, 64)
    assert images.dtype == torch.float32
    assert labels.shape == (2000,)
    assert labels.dtype == torch.int64
    assert set(images.unique().tolist()) == {0.0, 1.0}
    assert int(labels.min()) >= 0 and int(labels.max()) <= 9
    # three pentominoes: 15 to 60 lit pixels per image
    lit = images.sum(dim=(1, 2, 3))
    assert int(lit.min()) >= 15 and int(lit.max()) <= 60


def test_labels_roughly_uniform(sample: tuple[torch.Tensor, torch.Tensor]) -> None:
    counts = torch.bincount(sample[1], minlength=10).double()
    assert (counts > 0).all()
    expected = len(sample[1]) / 10
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 30.0, f"labels far from uniform: counts={counts.tolist()}, chi2={chi2:.1f}"


def test_len_and_indexing() -> None:
    data = pentomino(5, seed=3)
    assert len(data) == 5
    image, label = data[4]
    assert image.shape == (1, 64, 64) and label.dim() == 0


def test_deterministic_per_seed() -> None:
    a_images, a_labels = pentomino(300, seed=11).tensors
    b_images, b_labels = pentomino(300, seed=11).tensors
    assert torch.equal(a_images, b_images) and torch.equal(a_labels, b_labels)
    c_images, c_labels = pentomino(300, seed=12).tensors
    assert not torch.equal(a_images, c_images)
    assert not torch.equal(a_labels, c_labels)
    # every image differs, not just one
    assert (a_images != c_images).flatten(1).any(dim=1).float().mean() > 0.99


def test_global_rng_untouched() -> None:
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    before = (torch.rand(4), np.random.rand(4), random.random())
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    pentomino(50, seed=1)
    after = (torch.rand(4), np.random.rand(4), random.random())
    assert torch.equal(before[0], after[0])
    assert np.array_equal(before[1], after[1])
    assert before[2] == after[2]


def test_independent_classifier_agrees_with_labels(
    sample: tuple[torch.Tensor, torch.Tensor],
) -> None:
    images, labels = sample
    images = images[:400, 0].numpy().astype(bool)
    odd_cells: set[int] = set()
    scales: set[int] = set()
    for image, label in zip(images, labels[:400].tolist()):
        shapes = _analyse(image)
        names = [name for name, _, _ in shapes]
        odd = [name for name in names if names.count(name) == 1]
        assert len(set(names)) == 2 and len(odd) == 1, f"expected classes b, b, a, got {names}"
        assert odd[0] == EXPECTED_NAMES[label], f"label {label} but odd shape is {odd[0]}"
        for name, scale, (rows, cols) in shapes:
            scales.add(scale)
            # inside one 16x16 grid cell, with >= 1 background pixel to its border
            cell_r, cell_c = rows.start // 16, cols.start // 16
            assert (rows.stop - 1) // 16 == cell_r and (cols.stop - 1) // 16 == cell_c
            assert rows.start % 16 >= 1 and cols.start % 16 >= 1
            assert (rows.stop - 1) % 16 <= 14 and (cols.stop - 1) % 16 <= 14
            if name == odd[0]:
                odd_cells.add(4 * cell_r + cell_c)
    assert scales == {1, 2}
    assert len(odd_cells) == 16, f"odd shape only ever in cells {sorted(odd_cells)}"


def test_shapes_never_touch_even_diagonally(sample: tuple[torch.Tensor, torch.Tensor]) -> None:
    images = sample[0][:400, 0].numpy().astype(bool)
    for image in images:
        labelled, count = ndimage.label(image, structure=np.ones((3, 3), dtype=int))
        assert count == 3
        # growing each shape by one pixel (8-neighbourhood) must not reach another shape
        for index in range(1, 4):
            grown = ndimage.binary_dilation(labelled == index, structure=np.ones((3, 3)))
            others = (labelled != 0) & (labelled != index)
            assert not (grown & others).any()


def test_all_rotations_and_pairs_occur(sample: tuple[torch.Tensor, torch.Tensor]) -> None:
    images, labels = sample
    orientations: dict[str, set[frozenset[tuple[int, int]]]] = {}
    pairs: set[tuple[str, str]] = set()
    for image in images[:600, 0].numpy().astype(bool):
        labelled, _ = ndimage.label(image, structure=np.ones((3, 3), dtype=int))
        names = []
        for index, box in enumerate(ndimage.find_objects(labelled), start=1):
            component = labelled[box] == index
            name, scale = _classify(component)
            names.append(name)
            if scale == 1:
                cells = frozenset(map(tuple, np.argwhere(component).tolist()))
                orientations.setdefault(name, set()).add(cells)
        odd = next(name for name in names if names.count(name) == 1)
        pair = next(name for name in names if names.count(name) == 2)
        pairs.add((odd, pair))
    assert all(len(orientations.get(name, ())) == 4 for name in EXPECTED_NAMES), orientations
    assert len(pairs) > 80  # 90 ordered (a, b) pairs exist; nearly all show up in 600 images


@pytest.mark.parametrize("size", [40, 96])
def test_other_sizes(size: int) -> None:
    images, labels = pentomino(50, seed=0, size=size).tensors
    assert images.shape == (50, 1, size, size)
    for image in images[:, 0].numpy().astype(bool):
        assert len(_analyse(image)) == 3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 0}, r"n must be a positive int"),
        ({"n": -1}, r"n must be a positive int"),
        ({"n": 2.5}, r"n must be an int.*float"),
        ({"n": "10"}, r"n must be an int"),
        ({"n": True}, r"n must be an int"),
        ({"n": 10, "seed": -1}, r"seed must be in"),
        ({"n": 10, "seed": 1.0}, r"seed must be an int"),
        ({"n": 10, "size": 63}, r"size must be a multiple of 4"),
        ({"n": 10, "size": 36}, r"at least 40"),
    ],
)
def test_bad_arguments_raise_helpful_value_error(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        pentomino(**kwargs)  # type: ignore[arg-type]


def test_numpy_integer_n_is_accepted() -> None:
    images, _ = pentomino(np.int64(3), seed=np.int64(1)).tensors
    assert images.shape[0] == 3
