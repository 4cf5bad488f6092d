"""Imagenette and Imagewoof (fast.ai's 10-class ImageNet subsets), 160 px variants.

Both datasets come in the official fast.ai folder layout::

    imagenette2-160/
        train/<wnid>/*.JPEG
        val/<wnid>/*.JPEG

and are read with :class:`torchvision.datasets.ImageFolder`, so the class index is the
position of the WordNet id (wnid) in sorted order, exactly as in fast.ai and
``torchvision.datasets.Imagenette``. :data:`WNIDS` and :data:`CLASS_NAMES` list the wnids
and human-readable names in that order.

Where the data is looked for
----------------------------
In every directory of :func:`advkit.paths.search_dirs` (``$ADVKIT_DATA``, then the cache
``$ADVKIT_CACHE``) the loader looks for ``imagenette2-160/`` (the folder the official
archive extracts to), and only if no full copy is found anywhere, for
``imagenette2-160-mini/`` — a small staged **subset** (40 train / 10 val images per class)
meant for working offline; results on it are not comparable to published figures. The
same holds for ``imagewoof2-160/`` and ``imagewoof2-160-mini/``.

With ``download=True`` and no full copy on disk, the official archive is downloaded into
:func:`advkit.paths.cache_dir`, verified against its published checksum and extracted
there. An archive whose checksum is not known is never used.

Example
-------
>>> from torch.utils.data import DataLoader
>>> from advkit.data.imagenette import imagenette, CLASS_NAMES
>>> ds = imagenette("val")                                       # doctest: +SKIP
>>> x, y = ds[0]; x.shape, CLASS_NAMES["imagenette"][y]          # doctest: +SKIP
(torch.Size([3, 160, 160]), 'tench')
>>> xb, yb = next(iter(DataLoader(ds, batch_size=32)))           # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchvision import transforms as T
from torchvision.datasets import ImageFolder

from advkit import paths
from advkit.data.download import extract, fetch_first
from advkit.data.errors import DatasetNotFoundError, DownloadError

__all__ = [
    "ARCHIVES",
    "ArchiveInfo",
    "CLASS_NAMES",
    "FastAIImageFolder",
    "IMAGENETTE_CLASS_NAMES",
    "IMAGENETTE_WNIDS",
    "IMAGEWOOF_CLASS_NAMES",
    "IMAGEWOOF_WNIDS",
    "WNIDS",
    "default_transform",
    "find_root",
    "imagenette",
    "imagewoof",
]

# --------------------------------------------------------------------------- classes

_IMAGENETTE = {
    "n01440764": "tench",
    "n02102040": "English springer",
    "n02979186": "cassette player",
    "n03000684": "chain saw",
    "n03028079": "church",
    "n03394916": "French horn",
    "n03417042": "garbage truck",
    "n03425413": "gas pump",
    "n03445777": "golf ball",
    "n03888257": "parachute",
}
_IMAGEWOOF = {
    "n02086240": "Shih-Tzu",
    "n02087394": "Rhodesian ridgeback",
    "n02088364": "Beagle",
    "n02089973": "English foxhound",
    "n02093754": "Border terrier",
    "n02096294": "Australian terrier",
    "n02099601": "Golden retriever",
    "n02105641": "Old English sheepdog",
    "n02111889": "Samoyed",
    "n02115641": "Dingo",
}

#: WordNet ids in sorted order (= class index order).
IMAGENETTE_WNIDS: tuple[str, ...] = tuple(sorted(_IMAGENETTE))
IMAGEWOOF_WNIDS: tuple[str, ...] = tuple(sorted(_IMAGEWOOF))
#: Human-readable class names (fast.ai's), index-aligned with the wnids.
IMAGENETTE_CLASS_NAMES: tuple[str, ...] = tuple(_IMAGENETTE[w] for w in IMAGENETTE_WNIDS)
IMAGEWOOF_CLASS_NAMES: tuple[str, ...] = tuple(_IMAGEWOOF[w] for w in IMAGEWOOF_WNIDS)

#: ``WNIDS["imagenette"][i]`` is the wnid of class ``i``; same for ``"imagewoof"``.
WNIDS: dict[str, tuple[str, ...]] = {
    "imagenette": IMAGENETTE_WNIDS,
    "imagewoof": IMAGEWOOF_WNIDS,
}
#: ``CLASS_NAMES["imagenette"][i]`` is the name of class ``i``; same for ``"imagewoof"``.
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "imagenette": IMAGENETTE_CLASS_NAMES,
    "imagewoof": IMAGEWOOF_CLASS_NAMES,
}

# --------------------------------------------------------------------------- archives


@dataclass(frozen=True)
class ArchiveInfo:
    """Where an official archive lives and how to verify it.

    At least one of ``md5``/``sha256``/``head_md5`` must be set, otherwise the loader
    refuses to download (it never uses an unverified archive).

    Attributes
    ----------
    urls
        Mirror URLs, best first.
    md5, sha256
        Digest of the whole archive.
    size
        Size in bytes.
    head_md5
        MD5 of the first 1 MiB: the check fast.ai publishes (together with ``size``) in
        ``fastai/data/download_checks.py``.
    source
        Where the values come from.
    """

    urls: tuple[str, ...]
    md5: str | None = None
    sha256: str | None = None
    size: int | None = None
    head_md5: str | None = None
    source: str = ""

    @property
    def verifiable(self) -> bool:
        return any(v is not None for v in (self.md5, self.sha256, self.head_md5))


_FASTAI_S3 = "https://s3.amazonaws.com/fast-ai-imageclas/"


def _imagenette_160_from_torchvision() -> tuple[str, str]:
    """URL and MD5 of imagenette2-160.tgz as recorded by torchvision (>= 0.17)."""
    try:
        from torchvision.datasets.imagenette import Imagenette

        url, md5 = Imagenette._ARCHIVES["160px"]  # type: ignore[attr-defined]
        return str(url), str(md5)
    except (ImportError, AttributeError, KeyError, TypeError, ValueError):
        # Same values as torchvision 0.29.1's Imagenette._ARCHIVES["160px"].
        return _FASTAI_S3 + "imagenette2-160.tgz", "e793b78cc4c9e9a4ccc0c1155377a412"


_tv_url, _tv_md5 = _imagenette_160_from_torchvision()

# Provenance of the checks (the S3 objects have been re-uploaded over the years, so older
# published values no longer apply):
# * imagenette2-160: full-file MD5 from torchvision's Imagenette (added Dec 2023). fast.ai's
#   own check for it in fastai/data/download_checks.py is size 99003388 + MD5 of the first
#   MiB c475f8f7617a200ba35b9facc48443c3 (not a whole-file MD5; not enforced here).
# * imagewoof2-160: fast.ai publishes only (size, MD5 of first MiB); that is what we check,
#   and extract() verifies the gzip CRC-32 of the whole stream. Third-party code (catalyst,
#   copies of torchvision's class) uses 3d200a7be99704a0d7509be2a9fbfe15 as its whole-file
#   MD5; not from fast.ai and not confirmed here, so it is not used.
#: Official archives, keyed by the folder name they extract to. Module-level so that
#: tests (or a local mirror) can patch an entry.
ARCHIVES: dict[str, ArchiveInfo] = {
    "imagenette2-160": ArchiveInfo(
        urls=(_tv_url,),
        md5=_tv_md5,
        source="torchvision.datasets.Imagenette._ARCHIVES['160px'] (torchvision 0.29.1)",
    ),
    "imagewoof2-160": ArchiveInfo(
        urls=(_FASTAI_S3 + "imagewoof2-160.tgz",),
        size=92612825,
        head_md5="3559b194123981a540b87132dbda412f",
        source="fastai/data/download_checks.py (fastai): (size, md5 of first MiB); "
        "the gzip CRC-32 of the whole stream is checked again on extraction",
    ),
}

# --------------------------------------------------------------------------- dataset


class FastAIImageFolder(ImageFolder):
    """An :class:`~torchvision.datasets.ImageFolder` over one split of a fast.ai dataset.

    Items are ``(image, label)``: with the default transform ``image`` is a float tensor
    of shape ``3 x size x size`` with values in ``[0, 1]``, and ``label`` is a Python int
    (collated to ``torch.int64`` by a ``DataLoader``).

    Attributes
    ----------
    classes
        Sorted wnids (ImageFolder's attribute), ``classes[i]`` is class ``i``.
    class_names
        Human-readable names, index-aligned with ``classes``.
    dataset_root
        The dataset folder that was used (containing ``train/`` and ``val/``).
    split
        ``"train"`` or ``"val"``.
    is_subset
        ``True`` for a staged ``*-mini`` subset.
    """

    def __init__(
        self,
        dataset_root: Path,
        split: str,
        *,
        class_names: tuple[str, ...],
        transform: Callable[[Any], Any] | None,
    ) -> None:
        super().__init__(str(dataset_root / split), transform=transform)
        self.dataset_root = Path(dataset_root)
        self.split = split
        self.class_names = class_names
        self.is_subset = self.dataset_root.name.endswith("-mini")


def default_transform(size: int = 160) -> Callable[[Any], Any]:
    """``Resize(size)`` (shorter side) + ``CenterCrop(size)`` + ``ToTensor()``.

    Parameters
    ----------
    size
        Output height and width in pixels.

    Returns
    -------
    Callable
        A transform mapping a PIL image to a float tensor ``3 x size x size`` in ``[0, 1]``.

    Example
    -------
    >>> default_transform(128)                                     # doctest: +SKIP
    Compose(Resize(128), CenterCrop(128), ToTensor())
    """
    return T.Compose([T.Resize(size), T.CenterCrop(size), T.ToTensor()])


def _layout_problem(root: Path, wnids: tuple[str, ...]) -> str | None:
    """Why ``root`` is not a usable dataset folder (``None`` if it is)."""
    if not root.is_dir():
        return "does not exist"
    for split in ("train", "val"):
        d = root / split
        if not d.is_dir():
            return f"has no {split}/ folder"
        present = sorted(p.name for p in d.iterdir() if p.is_dir())
        if present != sorted(wnids):
            missing = sorted(set(wnids) - set(present))
            extra = sorted(set(present) - set(wnids))
            what = []
            if missing:
                what.append(f"missing class folders {missing}")
            if extra:
                what.append(f"unexpected folders {extra}")
            return f"{split}/ is incomplete ({'; '.join(what)})"
    return None


def _candidates(name: str) -> list[Path]:
    """Folders tried, in order: full copies in every search dir, then the mini subsets."""
    dirs = paths.search_dirs()
    return [d / name for d in dirs] + [d / f"{name}-mini" for d in dirs]


def find_root(name: str, wnids: tuple[str, ...], *, full_only: bool = False) -> Path | None:
    """The first valid dataset folder for ``name`` (e.g. ``"imagenette2-160"``), or ``None``.

    Parameters
    ----------
    name
        Folder name of the official archive.
    wnids
        The class folders that ``train/`` and ``val/`` must contain (exactly).
    full_only
        Ignore ``<name>-mini`` subsets.

    Returns
    -------
    Path or None
        The dataset folder (containing ``train/`` and ``val/``).

    Example
    -------
    >>> find_root("imagenette2-160", IMAGENETTE_WNIDS)             # doctest: +SKIP
    PosixPath('/work/shared/data/imagenette2-160-mini')
    """
    for root in _candidates(name):
        if full_only and root.name.endswith("-mini"):
            continue
        if _layout_problem(root, wnids) is None:
            return root
    return None


def _not_found(name: str, wnids: tuple[str, ...], info: ArchiveInfo) -> DatasetNotFoundError:
    lines = []
    for root in _candidates(name):
        problem = _layout_problem(root, wnids)
        lines.append(f"  - {root}" + ("" if problem == "does not exist" else f" ({problem})"))
    return DatasetNotFoundError(
        f"{name} was not found. Searched (each needs train/ and val/ with the 10 class "
        f"folders {wnids[0]}, ...):\n" + "\n".join(lines) + "\n"
        f"Fix: point the environment variable {paths.DATA_ENV} at the directory that "
        f"contains {name}/ (downloads and extractions go to {paths.CACHE_ENV}, currently "
        f"{paths.cache_dir()}), or pass download=True when online to fetch "
        f"{info.urls[0]} into the cache. To install by hand: download that archive and "
        f"extract it inside {paths.data_dir()} (tar -xzf {name}.tgz)."
    )


def _download(name: str, wnids: tuple[str, ...], info: ArchiveInfo) -> Path:
    cache = paths.cache_dir()
    archive = cache / f"{name}.tgz"
    if not info.verifiable:
        raise DownloadError(
            f"No published checksum is known for {info.urls[0]}, so advkit refuses to "
            f"download and use it unverified. Download it by hand, check it against the "
            f"checksum published by fast.ai, and extract it into {cache} so that "
            f"{cache / name}/train exists."
        )
    fetch_first(
        info.urls, archive,
        md5=info.md5, sha256=info.sha256, size=info.size, head_md5=info.head_md5,
    )
    target = cache / name
    if target.exists() and _layout_problem(target, wnids) is not None:
        raise DownloadError(
            f"{target} exists but is incomplete ({_layout_problem(target, wnids)}), probably "
            f"from an earlier interrupted extraction. Delete it (rm -r '{target}') and try "
            f"again; the verified archive {archive} is kept and will be reused."
        )
    if not target.exists():
        extract(archive, cache)
    problem = _layout_problem(target, wnids)
    if problem is not None:
        raise DownloadError(
            f"{archive} was verified and extracted, but {target} {problem}. The archive "
            f"does not have the expected layout; delete {archive} and {target} and report "
            f"this."
        )
    return target


def _load(
    name: str,
    dataset: str,
    split: str,
    *,
    size: int,
    download: bool,
    transform: Callable[[Any], Any] | None,
) -> FastAIImageFolder:
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if int(size) <= 0:
        raise ValueError(f"size must be a positive number of pixels, got {size!r}")
    wnids = WNIDS[dataset]
    info = ARCHIVES[name]

    root = find_root(name, wnids, full_only=True)
    if root is None and download:
        try:
            root = _download(name, wnids, info)
        except DownloadError as e:
            subset = find_root(name, wnids)
            if subset is not None:
                raise DownloadError(
                    f"{e}\nNote: the subset {subset} is available offline; pass "
                    f"download=False to use it."
                ) from e
            raise
    if root is None:
        root = find_root(name, wnids)
    if root is None:
        raise _not_found(name, wnids, info)

    ds = FastAIImageFolder(
        root, split,
        class_names=CLASS_NAMES[dataset],
        transform=transform if transform is not None else default_transform(int(size)),
    )
    if tuple(ds.classes) != wnids:  # guarded by _layout_problem; keep labels honest anyway
        raise DatasetNotFoundError(
            f"{root / split} has classes {ds.classes}, expected {list(wnids)}."
        )
    return ds


def imagenette(
    split: str = "train",
    *,
    size: int = 160,
    download: bool = False,
    transform: Callable[[Any], Any] | None = None,
) -> FastAIImageFolder:
    """Imagenette (10 easy ImageNet classes), from the 160 px archive ``imagenette2-160``.

    Looks for ``imagenette2-160/`` in ``$ADVKIT_DATA`` and the cache, then for the staged
    subset ``imagenette2-160-mini/`` (40 train / 10 val images per class, for offline
    work only). See the module docstring.

    Parameters
    ----------
    split
        ``"train"`` or ``"val"``.
    size
        Output height/width of the default transform (the archive's shorter side is 160).
    download
        If no full copy is on disk, download the official archive (verified against its
        MD5) into the cache and extract it there.
    transform
        Replaces the default ``Resize(size) + CenterCrop(size) + ToTensor()``; receives a
        PIL RGB image.

    Returns
    -------
    FastAIImageFolder
        Items ``(float tensor 3 x size x size in [0, 1], int label)``; labels index
        :data:`IMAGENETTE_WNIDS` / :data:`IMAGENETTE_CLASS_NAMES`.

    Raises
    ------
    DatasetNotFoundError
        Not on disk and ``download=False`` (the message lists every folder searched).
    DownloadError
        The download or its verification failed.

    Example
    -------
    >>> ds = imagenette("val")                                     # doctest: +SKIP
    >>> x, y = ds[0]; x.shape, ds.class_names[y]                   # doctest: +SKIP
    (torch.Size([3, 160, 160]), 'tench')
    """
    return _load("imagenette2-160", "imagenette", split, size=size, download=download,
                 transform=transform)


def imagewoof(
    split: str = "train",
    *,
    size: int = 160,
    download: bool = False,
    transform: Callable[[Any], Any] | None = None,
) -> FastAIImageFolder:
    """Imagewoof (10 hard-to-tell dog breeds), from the 160 px archive ``imagewoof2-160``.

    Looks for ``imagewoof2-160/`` in ``$ADVKIT_DATA`` and the cache, then for the staged
    subset ``imagewoof2-160-mini/`` (40 train / 10 val images per class, for offline
    work only). See the module docstring.

    Parameters
    ----------
    split
        ``"train"`` or ``"val"``.
    size
        Output height/width of the default transform (the archive's shorter side is 160).
    download
        If no full copy is on disk, download the official archive into the cache, verify
        it against fast.ai's published size and checksum, and extract it there.
    transform
        Replaces the default ``Resize(size) + CenterCrop(size) + ToTensor()``; receives a
        PIL RGB image.

    Returns
    -------
    FastAIImageFolder
        Items ``(float tensor 3 x size x size in [0, 1], int label)``; labels index
        :data:`IMAGEWOOF_WNIDS` / :data:`IMAGEWOOF_CLASS_NAMES`.

    Raises
    ------
    DatasetNotFoundError
        Not on disk and ``download=False`` (the message lists every folder searched).
    DownloadError
        The download or its verification failed.

    Example
    -------
    >>> ds = imagewoof("train")                                    # doctest: +SKIP
    >>> ds.class_names[:3]                                         # doctest: +SKIP
    ('Shih-Tzu', 'Rhodesian ridgeback', 'Beagle')
    """
    return _load("imagewoof2-160", "imagewoof", split, size=size, download=download,
                 transform=transform)
