"""Student copies (advkit student build): stubs, hidden tests removed, checks kept, ids and
checksums, the same bytes twice, and no solution text left."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from advkit import runner
from advkit.grading import build_student_copy
from advkit.grading.notebook import BEGIN, END, CHECK, HIDDEN, LOCKED, PARAMETERS, SOLUTION, checksum, role, source_of, student_notebook

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "submissions" / "tiny" / "lab" / "90_tiny.ipynb"
LABS = runner.discover()


def _solution_lines(nb) -> set[str]:
    """Lines inside solution regions that appear nowhere else in the instructor notebook."""
    inside, elsewhere = set(), set()
    for cell in nb.cells:
        text = source_of(cell)
        if role(cell) != SOLUTION:
            elsewhere.update(l.strip() for l in text.splitlines())
            continue
        active = BEGIN not in text
        for line in text.splitlines():
            s = line.strip()
            if s == BEGIN:
                active = True
            elif s == END:
                active = False
            elif active and len(s) >= 8:
                inside.add(s)
            elif not active:
                elsewhere.add(s)
    return inside - elsewhere


@pytest.mark.parametrize("lab", LABS + [TINY], ids=lambda p: p.stem)
def test_student_copy_has_no_solution_and_keeps_checks(lab, tmp_path):
    src = nbformat.read(str(lab), as_version=4)
    out = build_student_copy(lab, tmp_path / "a")
    text = out.read_text()
    stu = nbformat.reads(text, as_version=4)
    nbformat.validate(stu)
    secret = _solution_lines(src)
    assert any(role(c) == SOLUTION for c in src.cells)
    assert secret, "the lab's solutions should have distinctive lines"
    leaked = [line for line in secret if line in text or json.dumps(line)[1:-1] in text]
    assert not leaked, f"solution text left in the student copy: {leaked[:3]}"
    assert BEGIN not in text and END not in text
    by_id = {c.id: c for c in stu.cells}
    for cell in src.cells:
        r = role(cell)
        if r == HIDDEN:
            assert cell.id not in by_id and source_of(cell) not in text
        elif r in (CHECK, LOCKED, PARAMETERS):
            assert source_of(by_id[cell.id]) == source_of(cell)   # visible checks kept as they are
            assert by_id[cell.id].metadata["editable"] is False
        elif r == SOLUTION and cell.cell_type == "code":
            assert "raise NotImplementedError()" in source_of(by_id[cell.id])
    meta = stu.metadata["advkit"]
    assert meta["lab"] == lab.stem
    recorded = {m["id"]: m for m in meta["cells"]}
    for cell in stu.cells:
        if cell.id in recorded:
            assert recorded[cell.id]["checksum"] == checksum(cell) == cell.metadata["advkit"]["checksum"]
    assert {c.id for c in src.cells if role(c) in (SOLUTION, CHECK, LOCKED, PARAMETERS)} == set(recorded)
    # reproducible: the same input gives the same bytes
    again = build_student_copy(lab, tmp_path / "b")
    assert again.read_bytes() == out.read_bytes()


def test_stub_raises_and_hidden_tests_are_gone(tmp_path):
    out = build_student_copy(TINY, tmp_path)
    text = out.read_text()
    assert "HIDDEN-TEST-SOURCE" not in text and "np.sqrt((np.asarray" not in text
    stu = nbformat.read(str(out), as_version=4)
    ns = {}
    import numpy as np

    ns["np"] = np
    exec(source_of(next(c for c in stu.cells if c.id == "ex1")), ns)
    with pytest.raises(NotImplementedError):
        ns["my_l2"](np.zeros((2, 3)))


def test_markers_need_the_solution_tag_and_must_balance():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x = 1\n### BEGIN SOLUTION\ny = 2\n### END SOLUTION")
    cell.id = "c1"
    nb.cells = [cell]
    with pytest.raises(ValueError, match="no 'solution' tag"):
        student_notebook(nb, "x")
    cell.metadata["tags"] = ["solution"]
    cell.source = "### BEGIN SOLUTION\ny = 2"
    with pytest.raises(ValueError, match="never closed"):
        student_notebook(nb, "x")
    cell.source = "y = 2\n### END SOLUTION"
    with pytest.raises(ValueError, match="without a"):
        student_notebook(nb, "x")
    cell.source = "    ### BEGIN SOLUTION\n    y = 2\n    ### END SOLUTION"
    assert source_of(student_notebook(nb, "x").cells[0]) == "    # YOUR CODE HERE\n    raise NotImplementedError()"
    del cell["id"]
    with pytest.raises(ValueError, match="no id"):
        student_notebook(nb, "x")


def test_cli_student_build(tmp_path, capsys):
    from advkit.cli import main

    assert main(["student", "build", "04", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "04_deepfool.ipynb").is_file() and len(list(tmp_path.iterdir())) == 1
    assert main(["student", "build", "99", "--out", str(tmp_path)]) == 2
    assert "no lab named" in capsys.readouterr().err
