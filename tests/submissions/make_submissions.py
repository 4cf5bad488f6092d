"""Regenerate the submission fixtures of tests/test_grader.py (run from the checkout root):

    .venv/bin/python tests/submissions/make_submissions.py

``tiny/lab/90_tiny.ipynb`` is a tiny instructor notebook (two exercises, NumPy only, so that a
kernel starts in about a second); every ``tiny/*.ipynb`` is a submission made from its student
copy, as a student would: correct, partly correct, empty, and each bad or hostile case.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
TINY = HERE / "tiny"
LAB = TINY / "lab" / "90_tiny.ipynb"

L2 = '''def my_l2(delta):
    """The L2 norm of every row of delta (an N x D array): one number per row."""
    ### BEGIN SOLUTION
    return np.sqrt((np.asarray(delta, dtype=float) ** 2).sum(axis=1))
    ### END SOLUTION'''
LINF = '''def my_linf(delta):
    """The L-infinity norm of every row of delta."""
    ### BEGIN SOLUTION
    return np.abs(np.asarray(delta, dtype=float)).max(axis=1)
    ### END SOLUTION'''


def code(src, cid, tags=()):
    c = nbformat.v4.new_code_cell(src)
    c.id = cid
    if tags:
        c.metadata["tags"] = list(tags)
    return c


def md(src, cid):
    c = nbformat.v4.new_markdown_cell(src)
    c.id = cid
    return c


def instructor() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        md("# Tiny lab: norms of perturbations\n\nTwo exercises, checked by the visible checks below.", "intro"),
        code("n = 5  # rows the visible checks try", "params", ["parameters"]),
        code("import numpy as np\nrng = np.random.default_rng(0)", "setup"),
        code(L2, "ex1", ["solution"]),
        code('d = rng.normal(size=(n, 7))\nassert np.allclose(my_l2(d), np.linalg.norm(d, axis=1)), "my_l2 differs from np.linalg.norm"\nprint("my_l2: correct")', "check1", ["check"]),
        code(LINF, "ex2", ["solution"]),
        code('d = rng.normal(size=(n, 7))\nassert np.allclose(my_linf(d), np.abs(d).max(axis=1))\nprint("my_linf: correct")', "check2", ["check"]),
        code('assert my_l2(np.array([[3.0, 4.0]]))[0] == 5.0, "HIDDEN-TEST-SOURCE: 3-4-5"', "hidden1", ["hidden"]),
    ]
    return nb


def student_copy() -> nbformat.NotebookNode:
    from advkit.grading.notebook import student_notebook

    return student_notebook(instructor(), "90_tiny")


def with_cells(nb, **sources):
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.id in sources:
            cell.source = sources[cell.id]
    return nb


def solved(src: str) -> str:
    return src.replace("    ### BEGIN SOLUTION\n", "").replace("\n    ### END SOLUTION", "")


WRONG_L2 = "def my_l2(delta):\n    return np.abs(delta).sum(axis=1)   # L1, not L2"


def submissions(stu) -> dict[str, object]:
    good1, good2 = solved(L2), solved(LINF)
    out = {
        "correct": with_cells(stu, ex1=good1, ex2=good2),
        "partial": with_cells(stu, ex1=good1),
        "empty": stu,
        # nbgrader #1324: silence tracebacks so that failing checks look clean
        "showtraceback": with_cells(stu, ex1="get_ipython().showtraceback = lambda *a, **k: None\n" + WRONG_L2),
        "custom_exc": with_cells(stu, ex1="get_ipython().set_custom_exc((BaseException,), lambda *a, **k: None)\n" + WRONG_L2),
        "eq_true": with_cells(stu, ex1=("class Always:\n    def __eq__(self, other):\n        return True\n"
                                        "    __array_priority__ = 1000\n\n"
                                        "def my_l2(delta):\n    return Always()\n\n"
                                        "np.allclose = lambda *a, **k: True")),
        # the visible check compares against np.linalg.norm: patch it to agree with a wrong answer
        "monkeypatch": with_cells(stu, ex1=WRONG_L2 + "\n_real = np.linalg.norm\nnp.linalg.norm = lambda d, axis=None: my_l2(d)"),
        "edit_check": with_cells(stu, ex1=WRONG_L2, check1='print("my_l2: correct")'),
        "params": with_cells(stu, ex1=WRONG_L2, params="n = 0  # no rows: the visible check passes trivially"),
        "syntax_error": with_cells(stu, ex1="def my_l2(delta)\n    return 0", ex2=good2),
        "infinite_loop": with_cells(stu, ex1="while True:\n    pass"),
        "sys_exit": with_cells(stu, ex1="import sys\nsys.exit(0)"),
        "os_exit": with_cells(stu, ex1="import os\nos._exit(0)"),
        "crash": with_cells(stu, ex1="import ctypes\nctypes.string_at(0)"),
        "kill_parent": with_cells(stu, ex1="import os\nos.kill(os.getppid(), 9)\n" + WRONG_L2),
        "kill_all": with_cells(stu, ex1="import os\nos.kill(-1, 9)"),
        "memory": with_cells(stu, ex1="hog = []\nwhile True:\n    hog.append(bytearray(2**26))"),
        "fork_bomb": with_cells(stu, ex1="import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"),
        "output_flood": with_cells(stu, ex1='while True:\n    print("x" * 2**20)'),
        "daemon": with_cells(stu, ex1=(
            "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            "        while True:\n            time.sleep(1)\n    os._exit(0)\n" + WRONG_L2)),
        # swaps the grader's inputs for all-zero rows, on which its L1 "norm" is right
        "swap_inputs": with_cells(stu, ex1=(
            "import os\nos.rename('_advkit', '_advkit_old')\nos.makedirs('_advkit')\n"
            "np.savez('_advkit/inputs.npz', delta=np.zeros((40, 13)))\n" + WRONG_L2)),
        # reads what the sandbox must hide, writes what it must protect: every success earns points
        "escape": with_cells(stu, ex1=ESCAPE),
    }
    delete = copy.deepcopy(stu)
    delete.cells = [c for c in delete.cells if c.id not in ("check1", "check2")]
    for c in delete.cells:
        if c.id == "ex1":
            c.source = WRONG_L2
    out["delete_check"] = delete
    retag = with_cells(stu, ex1=WRONG_L2, check1="pass")
    for c in retag.cells:
        if c.id == "check1":
            c.metadata["tags"] = ["solution"]
    out["retag_check"] = retag
    other = copy.deepcopy(stu)
    other.metadata["kernelspec"] = {"name": "ir", "display_name": "R", "language": "R"}
    out["other_kernel"] = other
    return out


ESCAPE = '''import os, socket
import advkit
root = os.path.dirname(os.path.dirname(os.path.abspath(advkit.__file__)))
stolen = []
for path in [os.path.join(root, "tests", "submissions", "tiny", "lab", "grading", "90_tiny.py"),
             os.path.join(root, "tests", "submissions", "tiny", "lab", "90_tiny.ipynb"),
             os.path.join(root, "tests", "submissions", "tiny", "correct.ipynb"),
             os.path.join(root, "labs", "01_fgsm.ipynb"), "/etc/shadow", os.path.expanduser("~root/.bash_history")]:
    try:
        with open(path) as f:
            stolen.append(f.read(100))
    except OSError:
        pass
try:   # opening for appending needs write access and changes nothing
    open(os.path.join(root, "advkit", "__init__.py"), "a").close()
    stolen.append("advkit source")
except OSError:
    pass
for path in [os.path.join(root, ".advkit-escape-probe"), "/etc/.advkit-escape-probe"]:
    try:
        open(path, "x").close()
        os.remove(path)   # leave nothing behind even when the sandbox is missing
        stolen.append(path)
    except OSError:
        pass
try:
    socket.create_connection(("1.1.1.1", 53), timeout=2)
    stolen.append("network")
except OSError:
    pass
if stolen:   # any leak earns full marks, so the test would catch it
    def my_l2(delta):
        return np.sqrt((np.asarray(delta, dtype=float) ** 2).sum(axis=1))
print(len(stolen), "leaks")'''


def main() -> None:
    LAB.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(instructor(), str(LAB))
    stu = student_copy()
    for name, nb in submissions(stu).items():
        (TINY / f"{name}.ipynb").write_text(nbformat.writes(nb) + "\n")
    # invalid_json.ipynb is written by tests/test_grader.py at test time: a file that is not JSON
    # cannot be stored under the labs' house rules (notebooks checked for outputs must parse).
    (TINY / "not_notebook.ipynb").write_text(json.dumps({"hello": "world"}))


if __name__ == "__main__":
    main()
