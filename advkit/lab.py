"""Lab plumbing: seeding, device choice, parameter profiles and machine-readable records.

A lab notebook starts with::

    lab = advkit.lab.setup("01_fgsm", seed=seed, device=device)

and records the numbers that matter with ``lab.record("fgsm_acc_eps_0.1", acc)`` (or the module
function :func:`record`). Records go to ``<records dir>/<lab>.json``; the records dir is
``$ADVKIT_RECORDS`` (default ``build/records`` of the source checkout, else ``./records``).
Grading and the lab runner's summary read these files instead of scraping printed text.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .devices import resolve_device
from .paths import _CHECKOUT

RECORDS_ENV = "ADVKIT_RECORDS"

_current: Lab | None = None


def records_dir() -> Path:
    """Where lab records are written (``$ADVKIT_RECORDS``; see the module docstring)."""
    env = os.environ.get(RECORDS_ENV)
    if env:
        return Path(env).expanduser().resolve()
    if (_CHECKOUT / "pyproject.toml").is_file():
        return _CHECKOUT / "build" / "records"
    return Path("records").resolve()


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (CPU and CUDA) so that a lab gives the same numbers twice."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot record a {type(value).__name__}; record numbers, strings, lists, "
                    "dicts or tensors")


class Lab:
    """One lab run: its name, seed, device, and its record file."""

    def __init__(self, name: str, *, seed: int = 0, device: str | torch.device = "auto"):
        if not name or "/" in name:
            raise ValueError(f"lab name must be a plain name like '01_fgsm', got {name!r}")
        self.name = name
        self.seed = seed
        self.device = resolve_device(device)
        self.path = records_dir() / f"{name}.json"
        self.records: dict[str, Any] = {}
        self._started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")

    def record(self, key: str, value: Any) -> Any:
        """Store ``value`` under ``key`` in this lab's JSON file; returns ``value`` unchanged."""
        if not isinstance(key, str) or not key:
            raise ValueError(f"record key must be a non-empty string, got {key!r}")
        self.records[key] = _jsonable(value)
        self._write()
        return value

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"lab": self.name, "seed": self.seed, "device": str(self.device),
               "started": self._started, "records": self.records}
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=False))
        os.replace(tmp, self.path)

    def __repr__(self) -> str:
        return f"Lab({self.name!r}, seed={self.seed}, device={self.device}, records -> {self.path})"


def setup(name: str, *, seed: int = 0, device: str | torch.device = "auto") -> Lab:
    """Start a lab: seed everything, choose the device, and start a fresh record file.

    Parameters
    ----------
    name : str
        The lab's file stem, e.g. ``"01_fgsm"``.
    seed : int
        Seeds Python, NumPy and PyTorch.
    device : str
        ``"auto"`` (CUDA if available), ``"cpu"`` or ``"cuda"``.

    Returns
    -------
    Lab
        Also made current, so that the module-level :func:`record` writes to it.
    """
    global _current
    seed_everything(seed)
    lab = Lab(name, seed=seed, device=device)
    lab._write()  # a re-run starts from an empty record file, never from stale numbers
    _current = lab
    return lab


def record(key: str, value: Any) -> Any:
    """Record ``value`` in the current lab (see :func:`setup`)."""
    if _current is None:
        raise RuntimeError("no lab is running; call advkit.lab.setup('<lab name>') first")
    return _current.record(key, value)


def read_records(directory: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """All record files in ``directory`` (default :func:`records_dir`), keyed by lab name."""
    directory = Path(directory) if directory is not None else records_dir()
    out = {}
    for path in sorted(directory.glob("*.json")):
        doc = json.loads(path.read_text())
        out[doc.get("lab", path.stem)] = doc
    return out


def load_profile(profile: str | os.PathLike, lab: str, labs_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Parameters of ``lab`` in a profile: its ``all:`` section updated by its own section.

    ``profile`` is a name (``"gpu"`` -> ``labs/profiles/gpu.yaml``) or a path to a YAML file::

        all:            # every lab that declares these parameters
          device: cuda
        01_fgsm:
          n_test: 10000
    """
    import yaml

    path = Path(profile)
    if path.suffix not in (".yaml", ".yml"):
        base = Path(labs_dir) if labs_dir is not None else _CHECKOUT / "labs"
        path = base / "profiles" / f"{profile}.yaml"
    if not path.is_file():
        available = sorted(p.stem for p in path.parent.glob("*.yaml")) if path.parent.is_dir() else []
        raise FileNotFoundError(f"no profile {str(profile)!r} at {path}; available: {available or 'none'}")
    doc = yaml.safe_load(path.read_text()) or {}
    if not isinstance(doc, dict):
        raise ValueError(f"{path} must be a mapping of lab names to parameters")
    params = dict(doc.get("all") or {})
    params.update(doc.get(lab) or {})
    return params


def table(rows: list[dict[str, Any]], *, digits: int = 4, index: bool = True):
    """A list of dicts as a :class:`pandas.DataFrame`: an HTML table in JupyterLab and nbconvert.

    Every lab ends with one: the numbers a reader can check, Kolter & Madry style. Floats are
    rounded to ``digits`` significant digits (the values stay numbers, so ``.to_csv()`` and
    ``.to_markdown()`` export them); a key missing from a row leaves its cell empty. With
    ``index`` the first column labels the rows. Any text, including ``|``, is safe in a cell:
    an HTML table has no pipes to break (a Markdown table with ``max |δ|`` in a header does).

    Example
    -------
    >>> table([{"model": "lenet5", "acc": 0.98765}, {"model": "cnn", "acc": 0.5}])   # doctest: +SKIP
            acc
    model
    lenet5  0.9877
    cnn     0.5000
    """
    import pandas as pd

    if isinstance(rows, dict) or not rows or not all(isinstance(r, dict) for r in rows):
        raise ValueError("table needs a non-empty list of dicts, one per row, e.g. "
                         "[{'model': 'lenet5', 'acc': 0.99}]")
    if isinstance(digits, bool) or not isinstance(digits, int) or digits < 1:
        raise ValueError(f"digits must be a positive int, got {digits!r}")
    columns = list(dict.fromkeys(str(k) for row in rows for k in row))

    def cell(v: Any) -> Any:
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = v.item()
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, float) and math.isfinite(v) and v != 0:
            return float(format(v, f".{digits}g"))
        return v

    data = [{c: cell(row[c]) if c in row else "" for c in columns} for row in
            ({str(k): v for k, v in r.items()} for r in rows)]
    df = pd.DataFrame(data, columns=columns)
    return df.set_index(columns[0]) if index and len(columns) > 1 else df
