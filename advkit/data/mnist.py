"""MNIST from torchvision's raw files, read without writing next to them.

The files are looked for in ``<dir>/MNIST/raw/`` for every ``dir`` in
:func:`advkit.paths.search_dirs` (torchvision's own layout, so an existing torchvision
download is found too). The ``.gz`` archives are parsed directly, so a read-only directory
works. When nothing is found and ``download=True``, the archives are fetched from
torchvision's mirrors into the cache and verified against torchvision's MD5 checksums.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset
from torchvision.datasets import MNIST as _TorchvisionMNIST

from .. import paths
from .download import fetch_first, verify
from .errors import DatasetNotFoundError

#: Mirrors and (file, md5) pairs, taken from torchvision so that they stay the real ones.
MIRRORS: list[str] = list(_TorchvisionMNIST.mirrors)
RESOURCES: list[tuple[str, str]] = list(_TorchvisionMNIST.resources)
CLASS_NAMES = tuple(str(i) for i in range(10))

_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_MD5 = dict(RESOURCES)
_memo: dict[tuple[str, str], TensorDataset] = {}


def _read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (optionally gzipped) into a uint8 array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    if magic >> 8 != 0x08:  # 0x08 = unsigned byte
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (magic {magic:#x})")
    ndim = magic & 0xFF
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    arr = np.frombuffer(data, dtype=np.uint8, offset=offset)
    if arr.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: expected {shape}, got {arr.size} bytes")
    return arr.reshape(shape)


def _find(filename: str) -> Path | None:
    for root in paths.search_dirs():
        raw = root / "MNIST" / "raw"
        for candidate in (raw / filename, raw / filename[:-3]):
            if candidate.is_file():
                return candidate
    return None


def _not_found(split: str) -> DatasetNotFoundError:
    searched = "\n".join(f"  - {d / 'MNIST' / 'raw'}" for d in paths.search_dirs())
    return DatasetNotFoundError(
        f"MNIST ({split}) is not on disk. Looked for {', '.join(_FILES[split])} in:\n{searched}\n"
        f"Fix: set {paths.DATA_ENV} to a directory that holds MNIST/raw/ (torchvision's layout), "
        f"or call advkit.data.mnist({split!r}, download=True) on a machine with internet access "
        f"(files come from {MIRRORS[0]} and are checked against torchvision's MD5s)."
    )


def mnist(split: str = "train", *, download: bool = False) -> TensorDataset:
    """The MNIST digits as a :class:`~torch.utils.data.TensorDataset`.

    Parameters
    ----------
    split : {"train", "test"}
        60,000 training or 10,000 test images.
    download : bool, default False
        Fetch missing archives from torchvision's mirrors into :func:`advkit.paths.cache_dir`,
        verifying each MD5. A failed or corrupt download raises
        :class:`~advkit.data.errors.DownloadError` and leaves nothing behind.

    Returns
    -------
    TensorDataset
        ``(images, labels)``: float32 ``N x 1 x 28 x 28`` in [0, 1] and int64 labels 0..9.

    Raises
    ------
    DatasetNotFoundError
        When the files are missing and ``download`` is False; the message lists where
        advkit looked and what to set.

    Example
    -------
    >>> ds = mnist("test")
    >>> x, y = ds.tensors
    >>> x.shape, y[:5].tolist()
    (torch.Size([10000, 1, 28, 28]), [7, 2, 1, 0, 4])
    """
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    key = (split, str(paths.data_dir()))
    if key in _memo:
        return _memo[key]
    found = []
    for filename in _FILES[split]:
        path = _find(filename)
        if path is None:
            if not download:
                raise _not_found(split)
            dest = paths.cache_dir() / "MNIST" / "raw" / filename
            path = fetch_first([m + filename for m in MIRRORS], dest, md5=_MD5[filename])
        elif path.suffix == ".gz" and not verify(path, md5=_MD5[filename]):
            raise DatasetNotFoundError(
                f"{path} does not match torchvision's MD5 {_MD5[filename]}: the file is corrupt "
                f"or not MNIST. Delete it and download again (advkit.data.mnist(download=True))."
            )
        found.append(path)
    images = torch.from_numpy(_read_idx(found[0]).copy()).unsqueeze(1).float().div_(255)
    labels = torch.from_numpy(_read_idx(found[1]).astype(np.int64))
    if len(images) != len(labels):
        raise ValueError(f"MNIST {split}: {len(images)} images but {len(labels)} labels")
    ds = TensorDataset(images, labels)
    _memo[key] = ds
    return ds
