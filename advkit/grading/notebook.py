"""Cell roles, checksums and solution stripping: what the student build and the grader share.

The instructor notebook is the source of truth. Its cell tags say what each cell is:

* ``solution``: the student's work. ``### BEGIN SOLUTION`` / ``### END SOLUTION`` regions are
  replaced by a stub that raises ``NotImplementedError`` (a cell without markers is replaced whole);
* ``check``: a visible check, kept in the student copy (``### BEGIN HIDDEN TESTS`` /
  ``### END HIDDEN TESTS`` regions inside it are removed);
* ``hidden``: removed from the student copy; the grader puts it back;
* ``parameters``: papermill's parameters cell; the grader restores it and injects its own values.

Every other code cell is *locked*: the student copy marks it read-only, and the grader restores it
from the source by its cell id. Markdown cells are left alone.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import nbformat

SOLUTION, CHECK, HIDDEN, PARAMETERS, LOCKED, TEXT = "solution", "check", "hidden", "parameters", "locked", "text"
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
STUB = "# YOUR CODE HERE\nraise NotImplementedError()"
TEXT_STUB = "YOUR ANSWER HERE"
META_KEY = "advkit"


def source_of(cell: Any) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def checksum(cell: Any) -> str:
    """sha256 of a cell's type and source (trailing whitespace of each line ignored)."""
    text = "\n".join(line.rstrip() for line in source_of(cell).strip("\n").splitlines())
    return hashlib.sha256(f"{cell.get('cell_type')}\n{text}".encode()).hexdigest()


def role(cell: Any) -> str:
    """The role of a cell of the *instructor* notebook (see the module docstring)."""
    tags = set(cell.get("metadata", {}).get("tags", []))
    if cell.get("cell_type") != "code":
        return SOLUTION if SOLUTION in tags else TEXT
    for name in (HIDDEN, SOLUTION, CHECK, PARAMETERS):
        if name in tags:
            return name
    return LOCKED


def _replace_regions(text: str, begin: str, end: str, stub: str | None, where: str) -> str:
    out, inside, indent = [], False, ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped == begin:
            if inside:
                raise ValueError(f"{where}: '{begin}' inside another region; close it with '{end}' first")
            inside, indent = True, line[: len(line) - len(line.lstrip())]
            if stub is not None:
                out.extend(indent + s for s in stub.splitlines())
        elif stripped == end:
            if not inside:
                raise ValueError(f"{where}: '{end}' without a '{begin}' before it")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{where}: '{begin}' is never closed; add a line '{end}'")
    return "\n".join(out)


def strip_solution(cell: Any, where: str = "cell") -> str:
    """The student version of a ``solution`` cell's source."""
    text = source_of(cell)
    code = cell.get("cell_type") == "code"
    if BEGIN not in text and END not in text:
        return STUB if code else TEXT_STUB
    return _replace_regions(text, BEGIN, END, STUB if code else TEXT_STUB, where)


def strip_hidden_tests(cell: Any, where: str = "cell") -> str:
    text = source_of(cell)
    if BEGIN_HIDDEN not in text and END_HIDDEN not in text:
        return text
    return _replace_regions(text, BEGIN_HIDDEN, END_HIDDEN, None, where)


def _check_ids(nb: Any, name: str) -> None:
    seen = set()
    for i, cell in enumerate(nb.cells):
        cid = cell.get("id")
        if not cid:
            raise ValueError(f"{name}: cell {i} has no id; save the notebook with nbformat >= 4.5 "
                             "(JupyterLab does) so that every cell has a stable id")
        if cid in seen:
            raise ValueError(f"{name}: cell id {cid!r} appears twice; give each cell its own id")
        seen.add(cid)


def student_notebook(source: Any, lab: str) -> Any:
    """The student copy of an instructor notebook (a new NotebookNode; ``source`` is untouched).

    Deterministic: the same instructor notebook gives the same notebook, field for field.
    """
    _check_ids(source, lab)
    nb = nbformat.v4.new_notebook()
    nb.nbformat, nb.nbformat_minor = 4, max(5, source.get("nbformat_minor", 5))
    keep = {k: copy.deepcopy(source.metadata[k]) for k in ("kernelspec", "language_info") if k in source.metadata}
    nb.metadata.update(keep)
    cells_meta = []
    for i, cell in enumerate(source.cells):
        r = role(cell)
        where = f"{lab}, cell {i} ({cell.get('id')})"
        text = source_of(cell)
        if r != SOLUTION and (BEGIN in text or END in text):
            raise ValueError(f"{where} has solution markers but no 'solution' tag; tag it 'solution' "
                             "so that its solution is removed from the student copy")
        if r == HIDDEN:
            continue
        if r == SOLUTION:
            text = strip_solution(cell, where)
        elif r == CHECK:
            text = strip_hidden_tests(cell, where)
        tags = [t for t in cell.get("metadata", {}).get("tags", []) if t != HIDDEN]
        if cell.cell_type == "code":
            new = nbformat.v4.new_code_cell(text)
        elif cell.cell_type == "markdown":
            new = nbformat.v4.new_markdown_cell(text)
        else:
            new = nbformat.v4.new_raw_cell(text)
        new.id = cell.id
        if tags:
            new.metadata["tags"] = tags
        if r in (CHECK, LOCKED, PARAMETERS):
            new.metadata["editable"] = False
            new.metadata["deletable"] = False
        if r != TEXT:
            digest = checksum(new)
            new.metadata[META_KEY] = {"role": r, "checksum": digest}
            cells_meta.append({"id": cell.id, "role": r, "checksum": digest})
        if "attachments" in cell and cell.cell_type != "code":
            new["attachments"] = copy.deepcopy(cell["attachments"])
        nb.cells.append(new)
    nb.metadata[META_KEY] = {"lab": lab, "cells": cells_meta}
    return nb
