"""Check a submission and rebuild the notebook the grader runs from it.

The grader trusts the instructor notebook, not the submission. It keeps the student's
``solution`` cells (matched by cell id) and the code cells the student added, and takes every
other code cell (checks, hidden tests, locked cells, the ``parameters`` cell) from the source,
whatever the student did to it: edited, deleted, re-tagged or moved.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import nbformat

from .notebook import CHECK, HIDDEN, LOCKED, META_KEY, PARAMETERS, SOLUTION, checksum, role, source_of, strip_solution


class InvalidSubmission(Exception):
    """The file cannot be graded as a notebook of this lab; the message says why."""


@dataclass
class Assembled:
    nb: Any
    notes: list[str] = field(default_factory=list)       # what the grader restored, for the feedback
    student_cells: set[str] = field(default_factory=set)  # ids of cells whose code is the student's


def parse(data: bytes, lab: str) -> Any:
    if len(data) > 64 * 2**20:
        raise InvalidSubmission(f"the file is {len(data)} bytes; a lab notebook is far smaller")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InvalidSubmission(f"not a notebook: the file is not valid JSON ({err})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("cells"), list) or "nbformat" not in doc:
        raise InvalidSubmission("not a notebook: JSON without 'cells' and 'nbformat'")
    if doc.get("nbformat") != 4:
        raise InvalidSubmission(f"nbformat {doc.get('nbformat')!r}; save it from JupyterLab (nbformat 4)")
    try:
        nb = nbformat.from_dict(doc)
    except Exception as err:  # nbformat raises several kinds of errors on bad structure
        raise InvalidSubmission(f"not a valid notebook: {err}") from None
    for i, cell in enumerate(nb.cells):
        if not isinstance(cell, dict) or cell.get("cell_type") not in ("code", "markdown", "raw"):
            raise InvalidSubmission(f"not a valid notebook: cell {i} has no valid cell_type")
        if not isinstance(cell.get("source", ""), (str, list)):
            raise InvalidSubmission(f"not a valid notebook: cell {i} has a source that is not text")
    meta = nb.get("metadata") or {}
    ks = meta.get("kernelspec") or {}
    li = meta.get("language_info") or {}
    language = str(ks.get("language") or li.get("name") or "python").lower()
    name = str(ks.get("name") or "python3")
    if language != "python" or not name.startswith("python"):
        raise InvalidSubmission(f"a notebook for the kernel {name!r} ({language}); this lab runs on Python 3 (python3)")
    mine = (meta.get(META_KEY) or {}).get("lab")
    if mine is not None and mine != lab:
        raise InvalidSubmission(f"a notebook of lab {mine!r}, not of {lab!r}")
    return nb


def assemble(source: Any, submission: Any, lab: str) -> Assembled:
    """The notebook to execute: the source's cells in order, with the student's solutions."""
    by_id: dict[str, Any] = {}
    for cell in submission.cells:
        cid = cell.get("id")
        if isinstance(cid, str) and cid not in by_id:
            by_id[cid] = cell
    source_ids = [c.get("id") for c in source.cells]
    known = set(source_ids)
    solution_ids = [c.id for c in source.cells if role(c) == SOLUTION and c.cell_type == "code"]
    if not any(cid in by_id for cid in solution_ids) and not any(cid in by_id for cid in known):
        raise InvalidSubmission(f"no cell of lab {lab} found by id: this is not a notebook of {lab} "
                                "(start from the student copy made by `advkit student build`)")

    # code cells the student added: keep them after the last known cell before them
    added: dict[str | None, list[Any]] = {}
    anchor = None
    for cell in submission.cells:
        cid = cell.get("id")
        if cid in known:
            anchor = cid
        elif cell.get("cell_type") == "code" and source_of(cell).strip():
            added.setdefault(anchor, []).append(cell)

    out = nbformat.v4.new_notebook()
    out.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                    "language_info": {"name": "python"}}
    notes: list[str] = []
    student_cells: set[str] = set()

    def add_student(cell: Any, cid: str) -> None:
        new = nbformat.v4.new_code_cell(source_of(cell))
        new.id = cid
        new.metadata["tags"] = ["student"]
        out.cells.append(new)
        student_cells.add(cid)

    n_added = 0
    for cell in added.get(None, []):
        n_added += 1
        add_student(cell, f"student-added-{n_added}")
    for i, cell in enumerate(source.cells):
        r = role(cell)
        cid = cell.id
        theirs = by_id.get(cid)
        if r == SOLUTION and cell.cell_type == "code":
            if theirs is None or theirs.get("cell_type") != "code":
                notes.append(f"solution cell `{cid}` is missing from the submission: graded with the empty stub")
                stub = nbformat.v4.new_code_cell(strip_solution(cell))
                stub.id = cid
                out.cells.append(stub)
            else:
                add_student(theirs, cid)
        elif cell.cell_type == "code":
            new = nbformat.v4.new_code_cell(source_of(cell))
            new.id = cid
            tags = list(cell.metadata.get("tags", []))
            if tags:
                new.metadata["tags"] = tags
            out.cells.append(new)
            if r != HIDDEN:
                expected = checksum(new)
                label = {CHECK: "check", PARAMETERS: "parameters", LOCKED: "locked"}[r]
                if theirs is None:
                    notes.append(f"{label} cell `{cid}` was deleted: restored from the lab")
                else:
                    if theirs.get("cell_type") != "code" or checksum(theirs) != expected:
                        notes.append(f"{label} cell `{cid}` was changed: restored from the lab"
                                     + (" (the grader's parameters replace the parameters cell)" if r == PARAMETERS else ""))
                    their_tags = list((theirs.get("metadata") or {}).get("tags", []))
                    if sorted(their_tags) != sorted(tags):
                        notes.append(f"{label} cell `{cid}` was re-tagged {their_tags}: the lab's tags {tags} are used")
        else:  # markdown and raw cells: the lab's text
            new = nbformat.from_dict({"cell_type": cell.cell_type, "id": cid, "metadata": {},
                                      "source": source_of(cell)})
            out.cells.append(new)
        for extra in added.get(cid, []):
            n_added += 1
            add_student(extra, f"student-added-{n_added}")
    if n_added:
        notes.append(f"{n_added} code cell(s) you added were run in place")
    return Assembled(out, notes, student_cells)
