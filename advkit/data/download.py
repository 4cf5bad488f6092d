"""Verified downloads and safe archive extraction.

Everything here follows three rules:

* A file only ever appears at its final path after its size and checksum were verified.
  While downloading it lives next to it as ``<name>.part``; on any failure that part file
  is removed and :class:`~advkit.data.errors.DownloadError` is raised, with a message that
  names the URL, what was expected, what was received, and what to do.
* An existing file is never silently trusted: if it does not verify, the user is told to
  delete it (it may be a half-finished or tampered download).
* Archives are extracted into a temporary directory first and only then renamed into
  place, so an interrupted extraction never looks complete. Members with absolute paths,
  ``..`` components, links pointing outside, or device files are refused.

Example
-------
>>> from pathlib import Path
>>> from advkit.data.download import fetch, extract
>>> archive = fetch("https://example.org/data.tgz", Path("cache/data.tgz"),
...                 md5="0123456789abcdef0123456789abcdef")      # doctest: +SKIP
>>> extract(archive, Path("cache"))                              # doctest: +SKIP
PosixPath('cache/data')
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from advkit.data.errors import DownloadError

__all__ = [
    "HEAD_BYTES",
    "UnsafeArchiveError",
    "extract",
    "fetch",
    "fetch_first",
    "file_md5",
    "file_sha256",
    "verify",
]

#: Number of leading bytes hashed by ``head_md5`` (fast.ai's ``checks.txt`` /
#: ``download_checks.py`` store the size and the MD5 of the first megabyte of each archive).
HEAD_BYTES = 2**20

_CHUNK = 1 << 20
_USER_AGENT = "advkit (python-urllib)"


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the target directory (or is a device)."""


# tarfile.FilterError exists where tarfile has extraction filters (PEP 706).
_FilterError: type[Exception] = getattr(tarfile, "FilterError", UnsafeArchiveError)


# --------------------------------------------------------------------------- hashing


def _hash_file(path: Path, algo: str, limit: int | None = None) -> str:
    h = hashlib.new(algo)
    remaining = limit
    with open(path, "rb") as f:
        while remaining is None or remaining > 0:
            n = _CHUNK if remaining is None else min(_CHUNK, remaining)
            block = f.read(n)
            if not block:
                break
            h.update(block)
            if remaining is not None:
                remaining -= len(block)
    return h.hexdigest()


def file_md5(path: str | os.PathLike[str], *, limit: int | None = None) -> str:
    """MD5 hex digest of a file (of its first ``limit`` bytes if given).

    Parameters
    ----------
    path
        File to hash.
    limit
        Hash only this many leading bytes (``HEAD_BYTES`` reproduces fast.ai's check).

    Returns
    -------
    str
        Lower-case hexadecimal digest.

    Example
    -------
    >>> file_md5("data/MNIST/raw/t10k-labels-idx1-ubyte.gz")   # doctest: +SKIP
    'ec29112dd5afa0611ce80d1b7f02629c'
    """
    return _hash_file(Path(path), "md5", limit)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 hex digest of a file.

    Parameters
    ----------
    path
        File to hash.

    Returns
    -------
    str
        Lower-case hexadecimal digest.

    Example
    -------
    >>> file_sha256("data/MNIST/raw/t10k-labels-idx1-ubyte.gz")   # doctest: +SKIP
    'f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6'
    """
    return _hash_file(Path(path), "sha256")


def _mismatches(
    path: Path,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    size: int | None = None,
    head_md5: str | None = None,
) -> list[str]:
    """Human-readable list of the checks ``path`` fails (empty list = verified)."""
    problems: list[str] = []
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        problems.append(f"size: expected {size} bytes, got {actual_size} bytes")
        # A wrong size already proves the file is wrong; skip hashing a possibly huge file.
        return problems
    if head_md5 is not None:
        got = file_md5(path, limit=HEAD_BYTES)
        if got != head_md5.lower():
            problems.append(f"md5 of first {HEAD_BYTES} bytes: expected {head_md5}, got {got}")
    if md5 is not None:
        got = file_md5(path)
        if got != md5.lower():
            problems.append(f"md5: expected {md5}, got {got}")
    if sha256 is not None:
        got = file_sha256(path)
        if got != sha256.lower():
            problems.append(f"sha256: expected {sha256}, got {got}")
    return problems


def verify(
    path: str | os.PathLike[str],
    *,
    md5: str | None = None,
    sha256: str | None = None,
    size: int | None = None,
    head_md5: str | None = None,
) -> bool:
    """Whether ``path`` exists and matches every given check.

    Parameters
    ----------
    path
        File to check.
    md5, sha256
        Expected hex digest of the whole file (case-insensitive).
    size
        Expected size in bytes.
    head_md5
        Expected MD5 of the first :data:`HEAD_BYTES` bytes (the check fast.ai publishes).

    Returns
    -------
    bool
        ``True`` if the file exists and passes all checks that were given (a file with
        no checks given verifies trivially).

    Example
    -------
    >>> verify("data/MNIST/raw/t10k-labels-idx1-ubyte.gz",
    ...        md5="ec29112dd5afa0611ce80d1b7f02629c")            # doctest: +SKIP
    True
    """
    p = Path(path)
    if not p.is_file():
        return False
    return not _mismatches(p, md5=md5, sha256=sha256, size=size, head_md5=head_md5)


# --------------------------------------------------------------------------- download


def _describe(checks: dict[str, Any]) -> str:
    labels = {"size": "size {} bytes", "md5": "md5 {}", "sha256": "sha256 {}",
              "head_md5": f"md5 of the first {HEAD_BYTES} bytes {{}}"}
    parts = [labels[k].format(v) for k, v in checks.items() if v is not None]
    return ", ".join(parts)


def _what_to_do(url: str, dest: Path, checks: dict[str, Any] | None = None) -> str:
    expected = _describe(checks or {})
    check = f"check it ({expected})" if expected else "check it"
    return (
        f"What to do: retry (the network or the server may have hiccupped). If it keeps "
        f"failing, download {url} by hand (browser, curl or wget) on a machine that is "
        f"online, {check}, and place the file at {dest}."
    )


def fetch(
    url: str,
    dest: str | os.PathLike[str],
    *,
    md5: str | None = None,
    sha256: str | None = None,
    size: int | None = None,
    head_md5: str | None = None,
    progress: bool = True,
    timeout: float = 60,
) -> Path:
    """Download ``url`` to ``dest``, verifying size and checksum before it appears there.

    The data is streamed to ``dest`` + ``".part"`` (same directory) with a progress bar.
    Then the number of bytes is compared with the server's ``Content-Length`` (a short
    read means a truncated download) and with ``size``, and the checksums are compared.
    Only a verified file is moved to ``dest`` (atomically, with :func:`os.replace`).

    Parameters
    ----------
    url
        ``http(s)://`` (or ``file://``) URL.
    dest
        Final path of the file. Parent directories are created.
    md5, sha256
        Expected hex digest of the whole file.
    size
        Expected size in bytes.
    head_md5
        Expected MD5 of the first :data:`HEAD_BYTES` bytes (fast.ai's published check).
    progress
        Show a ``tqdm`` progress bar (bytes).
    timeout
        Socket timeout in seconds (for connecting and for each read).

    Returns
    -------
    Path
        ``dest``. If it already exists and verifies, it is returned without any request.

    Raises
    ------
    DownloadError
        On a network/HTTP error, a truncated download, a size or checksum mismatch (the
        ``.part`` file is removed first), or if ``dest`` already exists but does not
        verify (it is left alone; the message tells you to delete it).

    Example
    -------
    >>> fetch("https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz",
    ...       Path("cache/imagenette2-160.tgz"),
    ...       md5="e793b78cc4c9e9a4ccc0c1155377a412")             # doctest: +SKIP
    PosixPath('cache/imagenette2-160.tgz')
    """
    dest = Path(dest)
    checks: dict[str, Any] = dict(md5=md5, sha256=sha256, size=size, head_md5=head_md5)

    if dest.exists():
        if not dest.is_file():
            raise DownloadError(f"{dest} exists but is not a file. Remove it, then try again.")
        problems = _mismatches(dest, **checks)
        if not problems:
            return dest
        raise DownloadError(
            f"{dest} already exists but does not match the expected file from {url} "
            f"({'; '.join(problems)}). It is probably an incomplete or corrupt earlier "
            f"download; it was NOT used. Delete it (rm '{dest}') and call again to "
            f"re-download, or replace it with a correct copy."
        )

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        received, announced = _stream(url, part, checks=checks, progress=progress,
                                      timeout=timeout, desc=dest.name)
        if announced is not None and received != announced:
            raise DownloadError(
                f"Download of {url} was truncated: the server announced {announced} bytes "
                f"(Content-Length) but only {received} arrived. The partial file was "
                f"removed. {_what_to_do(url, dest, checks)}"
            )
        problems = _mismatches(part, **checks)
        if problems:
            raise DownloadError(
                f"Download of {url} does not match the expected file: "
                f"{'; '.join(problems)}. The file was removed. This usually means a broken "
                f"or truncated transfer, or that the file on the server has changed. "
                f"{_what_to_do(url, dest, checks)}"
            )
        os.replace(part, dest)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return dest


def _stream(url: str, part: Path, *, checks: dict[str, Any], progress: bool, timeout: float,
            desc: str) -> tuple[int, int | None]:
    """Copy the response body of ``url`` into ``part``; return (received, Content-Length)."""
    from tqdm.auto import tqdm

    size = checks.get("size")

    final = part.with_name(part.name[: -len(".part")])
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    received = 0
    announced: int | None = None
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            if length is not None and length.strip().isdigit():
                announced = int(length)
                if size is not None and announced != size:
                    raise DownloadError(
                        f"The server at {url} announces {announced} bytes (Content-Length) "
                        f"but the expected file has {size} bytes; refusing to download a "
                        f"different file. {_what_to_do(url, final, checks)}"
                    )
            with open(part, "wb") as out, tqdm(
                total=announced if announced is not None else size,
                unit="B", unit_scale=True, unit_divisor=1024,
                desc=desc, disable=not progress,
            ) as bar:
                while True:
                    block = response.read(_CHUNK)
                    if not block:
                        break
                    out.write(block)
                    received += len(block)
                    bar.update(len(block))
    except DownloadError:
        raise
    except urllib.error.HTTPError as e:
        e.close()  # the error carries the open response; release its socket
        hint = "The file is not at this address (moved or removed?). " if e.code == 404 else ""
        raise DownloadError(
            f"Download of {url} failed: HTTP {e.code} {e.reason}. {hint}"
            f"{_what_to_do(url, final, checks)}"
        ) from e
    except http.client.IncompleteRead as e:
        got = received + len(e.partial)
        of = f" of {announced}" if announced is not None else ""
        raise DownloadError(
            f"Download of {url} was truncated: the connection closed after {got}{of} bytes. "
            f"The partial file was removed. {_what_to_do(url, final, checks)}"
        ) from e
    except urllib.error.URLError as e:
        raise DownloadError(
            f"Download of {url} failed: {e.reason!s}. Are you online, and is the address "
            f"right? {_what_to_do(url, final, checks)}"
        ) from e
    except (http.client.HTTPException, OSError) as e:
        # Timeouts, resets and disk errors (OSError includes TimeoutError, ConnectionError).
        raise DownloadError(
            f"Download of {url} failed after {received} bytes: {type(e).__name__}: {e}. "
            f"The partial file was removed. {_what_to_do(url, final, checks)}"
        ) from e
    return received, announced


def fetch_first(urls: Sequence[str], dest: str | os.PathLike[str], **kw: Any) -> Path:
    """Like :func:`fetch`, trying several mirrors of the same file in order.

    Parameters
    ----------
    urls
        Mirror URLs, best first. All must serve the same file (same checks apply).
    dest
        Final path of the file.
    **kw
        Passed to :func:`fetch` (``md5``, ``sha256``, ``size``, ``head_md5``,
        ``progress``, ``timeout``).

    Returns
    -------
    Path
        ``dest``.

    Raises
    ------
    DownloadError
        If every mirror failed; the message lists each URL with its error.

    Example
    -------
    >>> fetch_first(["https://mirror-a/x.tgz", "https://mirror-b/x.tgz"],
    ...             Path("cache/x.tgz"), sha256="...")            # doctest: +SKIP
    """
    urls = list(urls)
    if not urls:
        raise ValueError("fetch_first needs at least one URL")
    dest = Path(dest)
    if dest.exists():
        # No request is needed either way: verify (or reject) the existing file once.
        return fetch(urls[0], dest, **kw)
    failures: list[str] = []
    for url in urls:
        try:
            return fetch(url, dest, **kw)
        except DownloadError as e:
            failures.append(f"  - {url}: {e}")
    listing = "\n".join(failures)
    raise DownloadError(
        f"All {len(urls)} mirrors failed for {dest.name}:\n{listing}\n"
        f"Retry later, or download the file by hand from any of these URLs and place it "
        f"at {dest}."
    )


# --------------------------------------------------------------------------- extract


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    name = member.name
    pure = PurePosixPath(name)
    if name.startswith(("/", "\\")) or pure.is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(
            f"Refusing to extract {archive}: member {name!r} has an absolute path."
        )
    if ".." in pure.parts or ".." in PurePosixPath(name.replace("\\", "/")).parts:
        raise UnsafeArchiveError(
            f"Refusing to extract {archive}: member {name!r} contains '..' and would be "
            f"written outside the target directory."
        )
    if member.issym() or member.islnk():
        target = PurePosixPath(member.linkname)
        if target.is_absolute() or ".." in target.parts:
            raise UnsafeArchiveError(
                f"Refusing to extract {archive}: link {name!r} points to "
                f"{member.linkname!r}, outside the target directory."
            )
    if member.isdev():
        raise UnsafeArchiveError(
            f"Refusing to extract {archive}: member {name!r} is a device file."
        )


def extract(archive: str | os.PathLike[str], into: str | os.PathLike[str]) -> Path:
    """Safely extract a ``.tgz`` / ``.tar.gz`` (or ``.tar``) archive into a directory.

    The archive is first extracted into a hidden temporary directory inside ``into``;
    only when that succeeded (including the gzip CRC check over the whole stream) are
    its top-level entries renamed into ``into``. An interrupted extraction therefore
    leaves at most a ``.extract-*`` scratch directory, never a half-filled dataset folder.

    Parameters
    ----------
    archive
        Path of the archive.
    into
        Directory that receives the archive's top-level entries (created if needed).

    Returns
    -------
    Path
        The extracted top-level directory if the archive has exactly one top-level
        entry (the usual case, e.g. ``into/imagenette2-160``), otherwise ``into``.

    Raises
    ------
    UnsafeArchiveError
        If a member has an absolute path, a ``..`` component, a link leaving the target
        directory, or is a device file. Nothing is extracted in that case.
    FileExistsError
        If a top-level entry already exists in ``into`` (delete it first).
    DownloadError
        If the archive is corrupt or truncated (delete it and download again).

    Example
    -------
    >>> extract(Path("cache/imagenette2-160.tgz"), Path("cache"))   # doctest: +SKIP
    PosixPath('cache/imagenette2-160')
    """
    archive = Path(archive)
    into = Path(into)
    into.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".extract-{archive.name}-", dir=into))
    try:
        try:
            with tarfile.open(archive, mode="r:*") as tf:
                members = tf.getmembers()
                for member in members:
                    _check_member(member, archive)
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(scratch, filter="data")
                else:  # pragma: no cover - Python without PEP 706 backport
                    tf.extractall(scratch)
                # Read to the end of the compressed stream so gzip verifies its CRC-32
                # and length trailer over the *whole* archive, not just up to the last member.
                fileobj = tf.fileobj
                if fileobj is not None:
                    while fileobj.read(_CHUNK):
                        pass
        except UnsafeArchiveError:
            raise
        except _FilterError as e:
            raise UnsafeArchiveError(f"Refusing to extract {archive}: {e}") from e
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise DownloadError(
                f"{archive} is corrupt or truncated ({type(e).__name__}: {e}). Delete it "
                f"(rm '{archive}') and download it again."
            ) from e

        tops = sorted(p.name for p in scratch.iterdir())
        clashes = [name for name in tops if (into / name).exists() or (into / name).is_symlink()]
        if clashes:
            raise FileExistsError(
                f"Cannot extract {archive} into {into}: "
                + ", ".join(str(into / n) for n in clashes)
                + " already exist(s). If that is an incomplete earlier extraction, delete "
                "it and try again."
            )
        for name in tops:
            os.replace(scratch / name, into / name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return into / tops[0] if len(tops) == 1 else into
