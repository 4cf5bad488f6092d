"""Errors raised by the data layer. Each message says what to fix."""

from __future__ import annotations


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not on disk and could not (or may not) be downloaded."""


class DownloadError(RuntimeError):
    """A download failed or produced a file whose size or checksum is wrong.

    The partial file is always removed before this is raised.
    """
