"""Grading specs: what the kernel exports and how the grader judges it, outside the kernel.

A lab's spec is the Python file ``<labs dir>/grading/<lab>.py`` (e.g. ``labs/grading/01_fgsm.py``)
that defines ``SPEC = Spec(...)``. It is instructor material: the grader imports it in its own
process and the student's kernel never sees it (the sandbox hides the folder).

* ``Spec.inputs(rng)`` draws the inputs the grader chooses (a dict of NumPy arrays). They are
  written to ``_advkit/inputs.npz`` in the kernel's working directory.
* Each :class:`Check` has ``export``: the body of a function ``export(inputs)`` that runs in the
  kernel after the student's cells and returns a dict of arrays or tensors (the student's
  function called on the grader's inputs). The kernel saves them with ``numpy.savez``.
* ``grade(got, inputs)`` runs in the grader process on the arrays loaded with
  ``allow_pickle=False`` (numbers only) and returns ``(fraction of the points, message)``. It
  computes its references itself, e.g. with advkit's own functions imported in the grader
  process, where the student cannot monkeypatch them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

Arrays = dict[str, np.ndarray]
MAX_EXPORT_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Check:
    """One graded check.

    name : the gradebook column; points : its maximum; cells : the solution cell ids it grades
    (named in the feedback); export : kernel-side code (see the module docstring); grade :
    grader-side ``(got, inputs) -> (fraction in [0, 1], message)``.
    """

    name: str
    points: float
    export: str
    grade: Callable[[Arrays, Arrays], tuple[float, str]]
    cells: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class Spec:
    checks: tuple[Check, ...]
    inputs: Callable[[np.random.Generator], Arrays] = field(default=lambda rng: {})
    prepare: Callable[[], None] | None = None   # e.g. warm the model cache, outside the sandbox
    cell_timeout: float = 120.0                  # default per-cell timeout of this lab (seconds)

    def __post_init__(self):
        names = [c.name for c in self.checks]
        if not names:
            raise ValueError("a Spec needs at least one Check")
        bad = [n for n in names if not n.isidentifier() or n in ("submission", "status", "points", "max_points")]
        if bad or len(set(names)) != len(names):
            raise ValueError(f"check names must be unique identifiers, not gradebook columns; got {names}")
        for c in self.checks:
            if not (isinstance(c.points, (int, float)) and c.points > 0 and math.isfinite(c.points)):
                raise ValueError(f"check {c.name}: points must be a positive number, got {c.points!r}")

    @property
    def max_points(self) -> float:
        return float(sum(c.points for c in self.checks))


def spec_path(lab: Path) -> Path:
    return lab.parent / "grading" / f"{lab.stem}.py"


def load_spec_source(text: str, name: str = "spec") -> Spec:
    """Execute a spec file's text and return its ``SPEC``."""
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(f"advkit_grading_spec_{name}", loader=None))
    exec(compile(text, f"<grading spec {name}>", "exec"), module.__dict__)
    spec = module.__dict__.get("SPEC")
    if not isinstance(spec, Spec):
        raise ValueError(f"grading spec {name} must define SPEC = advkit.grading.Spec(...)")
    return spec


def load_spec(lab: Path) -> tuple[Spec, str]:
    """The spec of the lab notebook ``lab`` and its text (for hashing and for remote workers)."""
    path = spec_path(lab)
    if not path.is_file():
        raise FileNotFoundError(f"no grading spec for {lab.stem}: write {path} (see advkit.grading.spec)")
    text = path.read_text()
    return load_spec_source(text, lab.stem), text


def seed_for(lab: str, salt: str = "") -> int:
    return int.from_bytes(hashlib.sha256(f"advkit-grading:{lab}:{salt}".encode()).digest()[:8], "little")


def export_cell(checks: tuple[Check, ...] | list[Check], index: int) -> str:
    """Source of the kernel cell that exports check ``index`` (never shown to students)."""
    c = checks[index]
    body = "\n".join("    " + line for line in (c.export.strip("\n") or "return {}").splitlines())
    return f'''# advkit grader: export for {c.name}
def __advkit_export(inputs):
{body}

def __advkit_run(name, fn):
    import json, os, sys
    import numpy
    out_dir = "_advkit_exports"
    os.makedirs(out_dir, exist_ok=True)
    for suffix in (".npz", ".json"):
        if os.path.exists(os.path.join(out_dir, name + suffix)):
            os.remove(os.path.join(out_dir, name + suffix))
    try:
        with numpy.load("_advkit/inputs.npz", allow_pickle=False) as f:
            inputs = {{k: f[k] for k in f.files}}
        got = fn(inputs)
        arrays = {{}}
        for key, value in dict(got).items():
            if hasattr(value, "detach"):
                value = value.detach().cpu().numpy()
            arrays[str(key)] = numpy.asarray(value)
        numpy.savez(os.path.join(out_dir, name + ".npz"), **arrays)
    except BaseException as err:
        with open(os.path.join(out_dir, name + ".json"), "w") as f:
            json.dump({{"ename": type(err).__name__, "evalue": str(err)[:1000]}}, f)

__advkit_run({c.name!r}, __advkit_export)
del __advkit_export, __advkit_run
'''


def load_export(path: Path) -> Arrays:
    """Load one exported ``.npz`` safely: no pickle, numbers and booleans only, bounded size."""
    if path.stat().st_size > MAX_EXPORT_BYTES:
        raise ValueError(f"the exported data is {path.stat().st_size} bytes, more than {MAX_EXPORT_BYTES}")
    out = {}
    try:
        with np.load(path, allow_pickle=False) as f:
            for key in f.files:
                arr = f[key]
                if arr.dtype.kind not in "biuf":
                    raise ValueError(f"'{key}' has dtype {arr.dtype}; the grader accepts numbers only")
                out[key] = arr
    except ValueError as err:
        if "pickle" in str(err):
            raise ValueError("the exported value is not plain numbers (it needs pickle: an object "
                             "that is not a tensor or array of numbers)") from None
        raise
    return out


# helpers for grade functions -------------------------------------------------------------------

def fetch(got: Arrays, key: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """``got[key]`` as float64, with a clear error if it is missing or has the wrong shape."""
    if key not in got:
        raise ValueError(f"the result has no '{key}'")
    arr = np.asarray(got[key])
    if shape is not None and tuple(arr.shape) != tuple(shape):
        raise ValueError(f"expected shape {tuple(shape)}, got {tuple(arr.shape)}")
    return arr.astype(np.float64)


def mismatch_fraction(mine: np.ndarray, ref: np.ndarray, atol: float) -> float:
    return float(np.mean(~(np.abs(mine - ref) <= atol)))


def unchanged(got: Arrays, key: str, original: np.ndarray) -> bool:
    """Whether ``got[key]``, the kernel's copy of an input after the student's function ran on it,
    still equals ``original`` (False: the function modified its argument in place). A missing key
    or another shape raises ``ValueError``, as :func:`fetch` does."""
    return bool(np.array_equal(fetch(got, key, original.shape), np.asarray(original).astype(np.float64)))


_MODELS: dict[tuple[str, str], object] = {}


def cached_model(name: str):
    """The zoo model ``name`` (``advkit.zoo.load``: ``"lenet5"``, ``"cnn"``, ``"cnn_adv"``, ...) on
    the CPU in eval mode, loaded once per grader process; trained and cached on first use.

    For references computed in the grader (the same weights the kernel loads from the model
    cache) and for a spec's ``prepare``, which warms the cache outside the sandbox, where it is
    read-only. The memo is keyed by the weight file, so another ``ADVKIT_CACHE`` loads afresh.
    Never hand the model to student code: the grader's references rely on it being unmodified.
    """
    import advkit.zoo

    key = (name, str(advkit.zoo.recipe(name).path()))
    if key not in _MODELS:
        _MODELS[key] = advkit.zoo.load(name, device="cpu", progress=False).eval()
    return _MODELS[key]
