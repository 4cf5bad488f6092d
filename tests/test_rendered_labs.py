"""Every table a lab shows is a well-formed table: HTML tables have the same number of columns in
every row, Markdown tables (in the lab text or printed by a cell) have a separator row and the
same number of cells in every row.

A Markdown table breaks into a paragraph of ``|`` characters when a cell holds an unescaped pipe
(``max |δ|`` did that in lab 01). The executed copies come from the nbval run of the same
``make test`` (``build/test-labs/``, written by the root ``conftest.py``); a lab without a fresh
copy is executed here with papermill.
"""

from __future__ import annotations

import os
import re
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
LABS = sorted((ROOT / "labs").glob("[0-9][0-9]_*.ipynb"))
EXECUTED = Path(os.environ.get("ADVKIT_TEST_LABS", ROOT / "build" / "test-labs"))


class _Tables(HTMLParser):
    """Column counts per row of every ``<table>`` (``colspan`` counted)."""

    def __init__(self):
        super().__init__()
        self.tables: list[list[int]] = []
        self._row: int | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self._row = 0
        elif tag in ("td", "th") and self._row is not None:
            self._row += int(dict(attrs).get("colspan") or 1)

    def handle_endtag(self, tag):
        if tag == "tr" and self._row is not None and self.tables:
            self.tables[-1].append(self._row)
            self._row = None


def html_table_widths(html: str) -> list[list[int]]:
    parser = _Tables()
    parser.feed(html)
    return parser.tables


_SEP = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?$")


def _cells(line: str) -> int:
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    body = re.sub(r"`[^`]*`", "code", body)          # pipes inside code spans do not split cells
    body = re.sub(r"\$[^$]*\$", "math", body)        # nor do pipes inside inline math
    return len(re.split(r"(?<!\\)\|", body))


def markdown_table_problems(text: str) -> list[str]:
    """Problems with the Markdown tables in ``text``: rows whose cell count differs from the header's."""
    problems = []
    lines = text.splitlines()
    for i in range(1, len(lines)):
        if not _SEP.match(lines[i].strip()) or "|" not in lines[i - 1]:
            continue
        width = _cells(lines[i - 1])
        if _cells(lines[i]) != width:
            problems.append(f"separator row has {_cells(lines[i])} cells, header {width}: {lines[i - 1]!r}")
        j = i + 1
        while j < len(lines) and lines[j].strip().startswith("|"):
            if _cells(lines[j]) != width:
                problems.append(f"row has {_cells(lines[j])} cells, header {width}: {lines[j]!r}")
            j += 1
    return problems


def test_checkers_catch_a_broken_table():
    broken = "| eps | max |δ| |\n|---|---|\n| 0.1 | 0.1 |"
    assert markdown_table_problems(broken)
    assert not markdown_table_problems("| eps | max \\|δ\\| |\n|---|---|\n| 0.1 | 0.1 |")
    assert not markdown_table_problems("| norm | ball |\n| --- | --- |\n| $\\|x\\|_2$ | `a|b` |")
    assert html_table_widths("<table><tr><th>a</th><th>b</th></tr><tr><td colspan=2>c</td></tr></table>") == [[2, 2]]


def executed_copy(lab: Path, tmp_path: Path) -> nbformat.NotebookNode:
    copy = EXECUTED / lab.name
    if copy.is_file() and copy.stat().st_mtime >= lab.stat().st_mtime:
        return nbformat.read(str(copy), as_version=4)
    from advkit import runner

    out = tmp_path / lab.name
    runner.execute(lab, out, progress=False)
    return nbformat.read(str(out), as_version=4)


@pytest.mark.parametrize("lab", LABS, ids=[p.stem for p in LABS])
def test_every_table_in_a_lab_is_well_formed(lab, tmp_path):
    nb = executed_copy(lab, tmp_path)
    problems, html_tables = [], 0
    for k, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            problems += [f"markdown cell {k}: {p}" for p in markdown_table_problems(cell.source)]
            continue
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if out.get("output_type") == "error":
                problems.append(f"cell {k} raised {out.get('ename')}: {out.get('evalue')}")
            if "text/markdown" in data:
                problems += [f"cell {k} (markdown output): {p}" for p in markdown_table_problems(data["text/markdown"])]
            if "text/html" in data and "<table" in data["text/html"]:
                for widths in html_table_widths(data["text/html"]):
                    html_tables += 1
                    if not widths or len(set(widths)) != 1:
                        problems.append(f"cell {k}: HTML table rows have {widths} columns")
    assert not problems, "\n".join(problems)
    assert html_tables >= 1, f"{lab.stem} shows no table; every lab ends in a table of numbers"
