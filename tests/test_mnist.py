"""MNIST: staged files, read-only sources, clear errors, and the download path on a local server."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import importlib
import shutil
import threading
from functools import partial

import pytest
import torch

from advkit.data import DatasetNotFoundError, DownloadError, mnist

mnist_module = importlib.import_module("advkit.data.mnist")


def test_staged_mnist_shapes_values_and_known_counts(staged, monkeypatch, tmp_path):
    monkeypatch.setenv("ADVKIT_DATA", str(staged))
    monkeypatch.setenv("ADVKIT_CACHE", str(tmp_path))
    x, y = mnist("train").tensors
    assert x.shape == (60000, 1, 28, 28) and x.dtype == torch.float32
    assert y.dtype == torch.int64
    assert 0 <= x.min() and x.max() == 1
    # per-digit counts of the official training set (PROVENANCE.md / LeCun's page)
    assert torch.bincount(y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    xt, yt = mnist("test").tensors
    assert xt.shape == (10000, 1, 28, 28) and yt[:5].tolist() == [7, 2, 1, 0, 4]


def test_read_only_source_directory_works(staged, tmp_path, monkeypatch):
    src = tmp_path / "ro" / "MNIST" / "raw"
    src.mkdir(parents=True)
    for f in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(staged / "MNIST" / "raw" / f, src / f)
    for p in (src, src.parent, src.parent.parent):
        p.chmod(0o555)
    try:
        monkeypatch.setenv("ADVKIT_DATA", str(tmp_path / "ro"))
        monkeypatch.setenv("ADVKIT_CACHE", str(tmp_path / "cache"))
        assert len(mnist("test")) == 10000
        assert sorted(p.name for p in src.iterdir()) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    finally:
        for p in (src.parent.parent, src.parent, src):
            p.chmod(0o755)


def test_missing_dataset_says_where_it_looked_and_what_to_set(isolated):
    data, cache = isolated
    with pytest.raises(DatasetNotFoundError) as err:
        mnist("test")
    msg = str(err.value)
    assert str(data / "MNIST" / "raw") in msg and "ADVKIT_DATA" in msg and "download=True" in msg


def test_corrupt_staged_file_is_reported(staged, tmp_path, monkeypatch):
    raw = tmp_path / "d" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    shutil.copy(staged / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz", raw)
    data = (staged / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz").read_bytes()
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(data[: len(data) // 2])  # truncated
    monkeypatch.setenv("ADVKIT_DATA", str(tmp_path / "d"))
    monkeypatch.setenv("ADVKIT_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DatasetNotFoundError, match="MD5.*corrupt"):
        mnist("test")


def test_bad_split():
    with pytest.raises(ValueError, match="'train' or 'test'"):
        mnist("validation")


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


def _serve_test_split(staged, root, *, corrupt: bool = False):
    for f in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        data = (staged / "MNIST" / "raw" / f).read_bytes()
        (root / f).write_bytes(data[:-10] if corrupt and "labels" in f else data)


def test_download_from_a_mirror_verifies_md5(staged, server, isolated, monkeypatch):
    root, url = server
    _serve_test_split(staged, root)
    monkeypatch.setattr(mnist_module, "MIRRORS", ["http://127.0.0.1:9/nothing/", url])  # first mirror dead
    mnist_module._memo.clear()
    ds = mnist("test", download=True)
    assert len(ds) == 10000
    _, cache = isolated
    got = cache / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz"
    assert hashlib.md5(got.read_bytes()).hexdigest() == dict(mnist_module.RESOURCES)[got.name]


def test_corrupt_download_is_reported_and_not_left_behind(staged, server, isolated, monkeypatch):
    root, url = server
    _serve_test_split(staged, root, corrupt=True)
    monkeypatch.setattr(mnist_module, "MIRRORS", [url])
    mnist_module._memo.clear()
    with pytest.raises(DownloadError, match="t10k-labels"):
        mnist("test", download=True)
    _, cache = isolated
    raw = cache / "MNIST" / "raw"
    assert not (raw / "t10k-labels-idx1-ubyte.gz").exists()
    assert not list(raw.glob("*.part"))


def test_real_urls_and_checksums_are_torchvisions():
    assert any("ossci-datasets" in m or "yann.lecun" in m for m in mnist_module.MIRRORS)
    assert dict(mnist_module.RESOURCES)["train-images-idx3-ubyte.gz"] == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
