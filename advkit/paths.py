"""Where advkit finds data and where it writes caches.

One setting decides where datasets are looked for: the environment variable ``ADVKIT_DATA``
(default: the ``data/`` folder of the source checkout advkit runs from, else
``~/.cache/advkit/data``; never the current directory, so that a notebook run from
``labs/`` finds the same data as the command line). That directory may be read-only
(a shared, staged copy); everything advkit *writes* (downloads, extracted archives, trained
weights) goes to the cache directory instead:

* ``ADVKIT_CACHE`` if set;
* otherwise ``ADVKIT_DATA`` itself when it is writable;
* otherwise ``data/cache/`` of the source checkout, or ``~/.cache/advkit``.

Example
-------
>>> import os
>>> from advkit import paths
>>> os.environ["ADVKIT_DATA"] = "/srv/datasets"
>>> paths.data_dir()
PosixPath('/srv/datasets')
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "ADVKIT_DATA"
CACHE_ENV = "ADVKIT_CACHE"


_CHECKOUT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """The directory searched for datasets (``$ADVKIT_DATA``; see the module docstring)."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser().resolve()
    if (_CHECKOUT / "pyproject.toml").is_file():
        return _CHECKOUT / "data"
    return Path("~/.cache/advkit/data").expanduser().resolve()


def _writable(path: Path) -> bool:
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            return False
        probe = probe.parent
    return os.access(probe, os.W_OK)


def cache_dir() -> Path:
    """The writable directory for downloads, extracted files and trained weights.

    Created on first use. See the module docstring for how it is chosen.
    """
    env = os.environ.get(CACHE_ENV)
    if env:
        path = Path(env).expanduser().resolve()
    else:
        path = data_dir()
        if not _writable(path):
            in_checkout = (_CHECKOUT / "pyproject.toml").is_file()
            path = _CHECKOUT / "data" / "cache" if in_checkout else Path("~/.cache/advkit").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def search_dirs() -> list[Path]:
    """Directories searched for an existing dataset, in order (data dir, then cache)."""
    dirs = [data_dir()]
    cache = cache_dir()
    if cache not in dirs:
        dirs.append(cache)
    return dirs
