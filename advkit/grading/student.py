"""``advkit student build``: student copies of the instructor notebooks."""

from __future__ import annotations

from pathlib import Path

import nbformat

from .notebook import student_notebook


def build_student_copy(source: str | Path, out_dir: str | Path) -> Path:
    """Write the student copy of one instructor notebook to ``out_dir/<name>.ipynb``.

    Solution regions become ``raise NotImplementedError()`` stubs, cells tagged ``hidden`` are
    removed, checks stay, and every graded or locked cell carries its id and checksum in the
    metadata (``metadata.advkit``). The same input gives the same bytes.
    """
    source = Path(source)
    nb = nbformat.read(str(source), as_version=4)
    student = student_notebook(nb, source.stem)
    nbformat.validate(student)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / source.name
    if target.resolve() == source.resolve():
        raise ValueError(f"--out {out_dir} would overwrite the instructor notebook {source}; choose another folder")
    text = nbformat.writes(student) + "\n"
    tmp = target.with_suffix(".ipynb.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(target)
    return target


def build(names: list[str] | None, out_dir: str | Path, directory: Path | None = None) -> list[Path]:
    """Student copies of the labs ``names`` (default: all), as :func:`advkit.runner.select` reads them."""
    from .. import runner

    return [build_student_copy(path, out_dir) for path in runner.select(names, directory)]
