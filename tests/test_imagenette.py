"""Tests for advkit.data.imagenette: offline loaders, errors, local end-to-end download."""

from __future__ import annotations

import hashlib
import http.server
import importlib
import io
import tarfile
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from advkit.data.errors import DatasetNotFoundError, DownloadError

# The package re-exports the *function* ``imagenette`` under the module's name, so fetch the
# module itself from the import system.
inet = importlib.import_module("advkit.data.imagenette")

from conftest import STAGED  # $ADVKIT_DATA or ../shared/data


def _isolate(monkeypatch: pytest.MonkeyPatch, data: Path, cache: Path) -> None:
    monkeypatch.setenv("ADVKIT_DATA", str(data))
    monkeypatch.setenv("ADVKIT_CACHE", str(cache))


# --------------------------------------------------------------------------- constants


def test_wnids_sorted_and_names_match_fastai() -> None:
    assert list(inet.IMAGENETTE_WNIDS) == sorted(inet.IMAGENETTE_WNIDS)
    assert list(inet.IMAGEWOOF_WNIDS) == sorted(inet.IMAGEWOOF_WNIDS)
    assert inet.CLASS_NAMES["imagenette"] == (
        "tench", "English springer", "cassette player", "chain saw", "church",
        "French horn", "garbage truck", "gas pump", "golf ball", "parachute",
    )
    woof = dict(zip(inet.IMAGEWOOF_WNIDS, inet.IMAGEWOOF_CLASS_NAMES))
    assert woof == {
        "n02086240": "Shih-Tzu", "n02087394": "Rhodesian ridgeback", "n02088364": "Beagle",
        "n02089973": "English foxhound", "n02093754": "Border terrier",
        "n02096294": "Australian terrier", "n02099601": "Golden retriever",
        "n02105641": "Old English sheepdog", "n02111889": "Samoyed", "n02115641": "Dingo",
    }
    assert inet.WNIDS["imagenette"][0] == "n01440764"


def test_official_archives_are_verifiable() -> None:
    for name, info in inet.ARCHIVES.items():
        assert info.urls[0] == f"https://s3.amazonaws.com/fast-ai-imageclas/{name}.tgz"
        assert info.verifiable


# --------------------------------------------------------------------------- staged mini


@pytest.mark.parametrize(
    ("loader", "folder", "wnids"),
    [
        (inet.imagenette, "imagenette2-160-mini", inet.IMAGENETTE_WNIDS),
        (inet.imagewoof, "imagewoof2-160-mini", inet.IMAGEWOOF_WNIDS),
    ],
)
def test_staged_mini_subsets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                             loader, folder: str, wnids: tuple[str, ...]) -> None:
    if STAGED is None or not (STAGED / folder).is_dir():
        pytest.skip(f"staged data {STAGED / folder} is not present on this machine")
    _isolate(monkeypatch, STAGED, tmp_path / "cache")
    train, val = loader("train"), loader("val")
    for ds, per_class in ((train, 40), (val, 10)):
        assert ds.dataset_root == STAGED / folder and ds.is_subset
        assert tuple(ds.classes) == wnids and len(ds.classes) == 10
        assert Counter(ds.targets) == {i: per_class for i in range(10)}
        x, y = ds[len(ds) - 1]
        assert isinstance(y, int) and y == 9
        assert x.dtype == torch.float32 and x.shape == (3, 160, 160)
        assert 0.0 <= x.min().item() and x.max().item() <= 1.0
    xb, yb = next(iter(DataLoader(val, batch_size=12, shuffle=False)))
    assert xb.shape == (12, 3, 160, 160) and yb.dtype == torch.int64


def test_size_and_custom_transform(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    if STAGED is None or not (STAGED / "imagenette2-160-mini").is_dir():
        pytest.skip(f"staged data {STAGED / 'imagenette2-160-mini'} is not present")
    _isolate(monkeypatch, STAGED, tmp_path / "cache")
    assert inet.imagenette("val", size=64)[0][0].shape == (3, 64, 64)
    ds = inet.imagenette("val", transform=lambda im: im.size)
    assert min(ds[0][0]) == 160  # raw PIL image: shorter side 160
    with pytest.raises(ValueError, match="split"):
        inet.imagenette("test")


# --------------------------------------------------------------------------- not found


@pytest.mark.parametrize("loader", [inet.imagenette, inet.imagewoof])
def test_not_found_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, loader) -> None:
    data, cache = tmp_path / "data", tmp_path / "cache"
    data.mkdir()
    _isolate(monkeypatch, data, cache)
    with pytest.raises(DatasetNotFoundError) as info:
        loader("train")
    msg = str(info.value)
    name = "imagenette2-160" if loader is inet.imagenette else "imagewoof2-160"
    for searched in (data / name, cache / name, data / f"{name}-mini", cache / f"{name}-mini"):
        assert str(searched) in msg
    assert "ADVKIT_DATA" in msg and "ADVKIT_CACHE" in msg and "download=True" in msg
    assert f"https://s3.amazonaws.com/fast-ai-imageclas/{name}.tgz" in msg


def test_incomplete_folder_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "imagenette2-160" / "train" / "n01440764").mkdir(parents=True)
    _isolate(monkeypatch, data, tmp_path / "cache")
    with pytest.raises(DatasetNotFoundError, match="missing class folders"):
        inet.imagenette("train")


# --------------------------------------------------------------------------- download


def _fake_archive(path: Path, name: str, wnids: tuple[str, ...]) -> bytes:
    """A tiny .tgz in the official layout: 2 train + 1 val JPEG per class."""
    with tarfile.open(path, "w:gz") as tf:
        for split, count in (("train", 2), ("val", 1)):
            for c, wnid in enumerate(wnids):
                for i in range(count):
                    buf = io.BytesIO()
                    Image.new("RGB", (213, 160), (20 * c, 100 + i, 50)).save(buf, "JPEG")
                    info = tarfile.TarInfo(f"{name}/{split}/{wnid}/{wnid}_{i}.JPEG")
                    info.size = buf.tell()
                    buf.seek(0)
                    tf.addfile(info, buf)
    return path.read_bytes()


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str, list[str]]]:
    """(directory served, base URL, list of requested paths)."""
    root = tmp_path / "www"
    root.mkdir()
    requests: list[str] = []

    class Handler(_Handler):
        def __init__(self, *a, **kw) -> None:
            super().__init__(*a, directory=str(root), **kw)

        def do_GET(self) -> None:  # noqa: N802
            requests.append(self.path)
            super().do_GET()

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{httpd.server_address[1]}", requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def test_end_to_end_download(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, served) -> None:
    www, base, requests = served
    blob = _fake_archive(www / "imagenette2-160.tgz", "imagenette2-160", inet.IMAGENETTE_WNIDS)
    monkeypatch.setitem(inet.ARCHIVES, "imagenette2-160", inet.ArchiveInfo(
        urls=(f"{base}/imagenette2-160.tgz",), md5=hashlib.md5(blob).hexdigest()))
    data, cache = tmp_path / "data", tmp_path / "cache"
    data.mkdir()
    _isolate(monkeypatch, data, cache)

    train = inet.imagenette("train", download=True)
    assert train.dataset_root == cache / "imagenette2-160" and not train.is_subset
    assert len(train) == 20 and tuple(train.classes) == inet.IMAGENETTE_WNIDS
    x, y = train[3]
    assert x.shape == (3, 160, 160) and y == 1
    assert (cache / "imagenette2-160.tgz").read_bytes() == blob
    assert sorted(p.name for p in cache.iterdir()) == ["imagenette2-160", "imagenette2-160.tgz"]
    assert requests == ["/imagenette2-160.tgz"]

    # Found in the cache now: no further request, with or without download=True.
    assert len(inet.imagenette("val")) == 10
    assert len(inet.imagenette("val", download=True)) == 10
    assert requests == ["/imagenette2-160.tgz"]


def test_download_with_wrong_checksum_is_not_used(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path, served) -> None:
    www, base, _ = served
    _fake_archive(www / "imagewoof2-160.tgz", "imagewoof2-160", inet.IMAGEWOOF_WNIDS)
    monkeypatch.setitem(inet.ARCHIVES, "imagewoof2-160", inet.ArchiveInfo(
        urls=(f"{base}/imagewoof2-160.tgz",), md5="0" * 32))
    cache = tmp_path / "cache"
    _isolate(monkeypatch, tmp_path / "data", cache)
    with pytest.raises(DownloadError, match="0" * 32):
        inet.imagewoof("train", download=True)
    assert list(cache.iterdir()) == []


def test_archive_without_checksum_is_refused(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path, served) -> None:
    www, base, requests = served
    _fake_archive(www / "imagewoof2-160.tgz", "imagewoof2-160", inet.IMAGEWOOF_WNIDS)
    monkeypatch.setitem(inet.ARCHIVES, "imagewoof2-160",
                        inet.ArchiveInfo(urls=(f"{base}/imagewoof2-160.tgz",)))
    _isolate(monkeypatch, tmp_path / "data", tmp_path / "cache")
    with pytest.raises(DownloadError, match="refuses"):
        inet.imagewoof("train", download=True)
    assert requests == []


def test_failed_download_mentions_staged_subset(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path, served) -> None:
    _www, base, _ = served
    data = tmp_path / "data"
    for split in ("train", "val"):
        for wnid in inet.IMAGENETTE_WNIDS:
            d = data / "imagenette2-160-mini" / split / wnid
            d.mkdir(parents=True)
            Image.new("RGB", (160, 160)).save(d / "a.JPEG")
    monkeypatch.setitem(inet.ARCHIVES, "imagenette2-160", inet.ArchiveInfo(
        urls=(f"{base}/missing.tgz",), md5="0" * 32))
    _isolate(monkeypatch, data, tmp_path / "cache")
    with pytest.raises(DownloadError, match="download=False") as info:
        inet.imagenette("train", download=True)
    assert "404" in str(info.value)
    assert len(inet.imagenette("train")) == 10  # offline: the subset is used
