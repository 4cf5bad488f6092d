"""pytest plugin for the labs under nbval: keep what every cell printed.

nbval executes each lab cell by cell and checks for errors, but throws the outputs away. This
hook stores each cell's outputs back into the notebook nbval read and writes the executed copy
to ``build/test-labs/<lab>.ipynb`` when the lab's last cell has run. The rendering tests
(``tests/test_rendered_labs.py``, run after the labs by ``make test``) read those copies, so the
labs are executed once per test run, not twice.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

EXECUTED_DIR = Path(os.environ.get("ADVKIT_TEST_LABS", Path(__file__).resolve().parent / "build" / "test-labs"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    yield
    outputs = getattr(item, "test_outputs", None)
    cell = getattr(item, "cell", None)
    if call.when != "call" or cell is None or outputs is None or not hasattr(item.parent, "nb"):
        return
    import nbformat

    cell.outputs = [nbformat.from_dict(dict(out)) for out in outputs]
    nb = item.parent.nb
    code = [c for c in nb.cells if c.cell_type == "code"]
    if code and cell is code[-1]:
        _write(item.parent)


def _write(notebook_item) -> None:
    import nbformat

    EXECUTED_DIR.mkdir(parents=True, exist_ok=True)
    path = EXECUTED_DIR / Path(str(notebook_item.fspath)).name
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    for c in notebook_item.nb.cells:
        if c.cell_type == "code":
            c.setdefault("outputs", [])
            for out in c.outputs:
                if out.get("output_type") in ("execute_result", "display_data"):
                    out.setdefault("metadata", {})
                if out.get("output_type") == "execute_result":
                    out.setdefault("execution_count", None)
    nbformat.write(notebook_item.nb, str(tmp))
    os.replace(tmp, path)
