"""Tests for advkit.data.download against a local HTTP server (no internet needed)."""

from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from advkit.data.download import (
    HEAD_BYTES,
    UnsafeArchiveError,
    extract,
    fetch,
    fetch_first,
    file_md5,
    file_sha256,
    verify,
)
from advkit.data.errors import DownloadError

PAYLOAD = bytes(range(256)) * 5000  # 1.28 MB: more than HEAD_BYTES and several chunks
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


class _Server:
    """A ThreadingHTTPServer on 127.0.0.1 serving ``routes`` and counting requests."""

    def __init__(self) -> None:
        self.routes: dict[str, bytes] = {}
        self.truncated: dict[str, tuple[bytes, int]] = {}  # path -> (body, announced length)
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                server.requests.append(self.path)
                if self.path in server.truncated:
                    body, announced = server.truncated[self.path]
                    self.send_response(200)
                    self.send_header("Content-Length", str(announced))
                    self.end_headers()
                    self.wfile.write(body)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                body = server.routes.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def url(self, path: str) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}{path}"


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server()
    s.thread.start()
    try:
        yield s
    finally:
        s.httpd.shutdown()
        s.httpd.server_close()
        s.thread.join(timeout=5)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --------------------------------------------------------------------------- helpers


def test_hash_helpers_and_verify(tmp_path: Path) -> None:
    f = tmp_path / "x.bin"
    f.write_bytes(PAYLOAD)
    assert file_md5(f) == PAYLOAD_MD5
    assert file_sha256(f) == PAYLOAD_SHA256
    assert file_md5(f, limit=HEAD_BYTES) == hashlib.md5(PAYLOAD[:HEAD_BYTES]).hexdigest()
    assert verify(f, md5=PAYLOAD_MD5.upper(), sha256=PAYLOAD_SHA256, size=len(PAYLOAD))
    assert verify(f, head_md5=hashlib.md5(PAYLOAD[:HEAD_BYTES]).hexdigest())
    assert not verify(f, md5="0" * 32)
    assert not verify(f, size=len(PAYLOAD) + 1)
    assert not verify(tmp_path / "missing.bin", md5=PAYLOAD_MD5)


# --------------------------------------------------------------------------- fetch


def test_good_download_verifies(server: _Server, tmp_path: Path) -> None:
    server.routes["/data.bin"] = PAYLOAD
    dest = tmp_path / "sub" / "data.bin"
    out = fetch(server.url("/data.bin"), dest, md5=PAYLOAD_MD5, sha256=PAYLOAD_SHA256,
                size=len(PAYLOAD), progress=False)
    assert out == dest
    assert dest.read_bytes() == PAYLOAD
    assert _leftovers(dest.parent) == ["data.bin"]


def test_head_md5_check_as_published_by_fastai(server: _Server, tmp_path: Path) -> None:
    server.routes["/a.tgz"] = PAYLOAD
    head = hashlib.md5(PAYLOAD[:HEAD_BYTES]).hexdigest()
    dest = fetch(server.url("/a.tgz"), tmp_path / "a.tgz", size=len(PAYLOAD),
                 head_md5=head, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_wrong_md5_raises_and_leaves_nothing(server: _Server, tmp_path: Path) -> None:
    server.routes["/data.bin"] = PAYLOAD
    url = server.url("/data.bin")
    with pytest.raises(DownloadError) as info:
        fetch(url, tmp_path / "data.bin", md5="0" * 32, progress=False)
    msg = str(info.value)
    assert url in msg and "0" * 32 in msg and PAYLOAD_MD5 in msg
    assert "retry" in msg and str(tmp_path / "data.bin") in msg
    assert _leftovers(tmp_path) == []


def test_wrong_size_from_content_length_refused(server: _Server, tmp_path: Path) -> None:
    server.routes["/data.bin"] = PAYLOAD
    with pytest.raises(DownloadError, match=str(len(PAYLOAD) + 7)):
        fetch(server.url("/data.bin"), tmp_path / "data.bin", size=len(PAYLOAD) + 7,
              progress=False)
    assert _leftovers(tmp_path) == []


def test_truncated_response_detected(server: _Server, tmp_path: Path) -> None:
    server.truncated["/cut.bin"] = (PAYLOAD[:1000], len(PAYLOAD))
    url = server.url("/cut.bin")
    with pytest.raises(DownloadError) as info:
        fetch(url, tmp_path / "cut.bin", progress=False)  # no checksum: Content-Length alone
    msg = str(info.value)
    assert url in msg and "truncated" in msg and str(len(PAYLOAD)) in msg
    assert _leftovers(tmp_path) == []


def test_404_names_url(server: _Server, tmp_path: Path) -> None:
    url = server.url("/nope.bin")
    with pytest.raises(DownloadError) as info:
        fetch(url, tmp_path / "nope.bin", md5=PAYLOAD_MD5, progress=False)
    assert url in str(info.value) and "404" in str(info.value)
    assert _leftovers(tmp_path) == []


def test_connection_refused_is_download_error(tmp_path: Path) -> None:
    # Bind then close a socket to get a port nobody listens on.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x.bin"
    with pytest.raises(DownloadError, match="Are you online"):
        fetch(url, tmp_path / "x.bin", md5=PAYLOAD_MD5, progress=False, timeout=5)
    assert _leftovers(tmp_path) == []


def test_existing_corrupt_dest_is_rejected_not_used(server: _Server, tmp_path: Path) -> None:
    server.routes["/data.bin"] = PAYLOAD
    dest = tmp_path / "data.bin"
    dest.write_bytes(b"half a download")
    with pytest.raises(DownloadError) as info:
        fetch(server.url("/data.bin"), dest, md5=PAYLOAD_MD5, progress=False)
    assert "Delete it" in str(info.value) and str(dest) in str(info.value)
    assert dest.read_bytes() == b"half a download"  # left for the user to inspect/delete
    assert server.requests == []


def test_existing_good_dest_makes_no_request(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    dest.write_bytes(PAYLOAD)
    out = fetch(server.url("/data.bin"), dest, md5=PAYLOAD_MD5, progress=False)
    assert out == dest
    assert server.requests == []


def test_mirror_fallback(server: _Server, tmp_path: Path) -> None:
    server.routes["/good/data.bin"] = PAYLOAD
    server.routes["/bad/data.bin"] = b"not the file"
    urls = [server.url("/missing/data.bin"), server.url("/bad/data.bin"),
            server.url("/good/data.bin")]
    dest = fetch_first(urls, tmp_path / "data.bin", md5=PAYLOAD_MD5, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == ["/missing/data.bin", "/bad/data.bin", "/good/data.bin"]
    assert _leftovers(tmp_path) == ["data.bin"]


def test_all_mirrors_fail_lists_each(server: _Server, tmp_path: Path) -> None:
    server.routes["/bad/data.bin"] = b"not the file"
    urls = [server.url("/missing/data.bin"), server.url("/bad/data.bin")]
    with pytest.raises(DownloadError) as info:
        fetch_first(urls, tmp_path / "data.bin", md5=PAYLOAD_MD5, progress=False)
    msg = str(info.value)
    assert all(u in msg for u in urls) and "404" in msg and PAYLOAD_MD5 in msg
    assert _leftovers(tmp_path) == []


# --------------------------------------------------------------------------- extract


def _tgz(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_extract_good_archive(tmp_path: Path) -> None:
    archive = _tgz(tmp_path / "ds.tgz", {"ds/train/a.txt": b"a", "ds/val/b.txt": b"b"})
    out = extract(archive, tmp_path / "into")
    assert out == tmp_path / "into" / "ds"
    assert (out / "train" / "a.txt").read_bytes() == b"a"
    assert _leftovers(tmp_path / "into") == ["ds"]  # no scratch directory left


@pytest.mark.parametrize("bad", ["../evil", "ds/../../evil", "/tmp/evil-abs"])
def test_extract_rejects_escaping_members(tmp_path: Path, bad: str) -> None:
    archive = _tgz(tmp_path / "evil.tgz", {"ds/ok.txt": b"ok", bad: b"pwned"})
    into = tmp_path / "into"
    with pytest.raises(UnsafeArchiveError, match="evil"):
        extract(archive, into)
    assert not (tmp_path / "evil").exists()
    assert _leftovers(into) == []  # nothing extracted, scratch removed


def test_extract_rejects_symlink_out(tmp_path: Path) -> None:
    archive = tmp_path / "link.tgz"
    with tarfile.open(archive, "w:gz") as tf:
        info = tarfile.TarInfo("ds/link")
        info.type = tarfile.SYMTYPE
        info.linkname = "../../etc/passwd"
        tf.addfile(info)
    with pytest.raises(UnsafeArchiveError):
        extract(archive, tmp_path / "into")


def test_extract_corrupt_archive_is_download_error(tmp_path: Path) -> None:
    archive = _tgz(tmp_path / "ds.tgz", {"ds/a.bin": PAYLOAD})
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])  # truncated gzip stream
    with pytest.raises(DownloadError, match="corrupt or truncated"):
        extract(archive, tmp_path / "into")
    assert _leftovers(tmp_path / "into") == []


def test_extract_refuses_to_overwrite(tmp_path: Path) -> None:
    archive = _tgz(tmp_path / "ds.tgz", {"ds/a.txt": b"a"})
    (tmp_path / "into" / "ds").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="delete it"):
        extract(archive, tmp_path / "into")
    assert _leftovers(tmp_path / "into") == ["ds"]
