"""``advkit reproduce thesis``: run lab 08 through papermill and collect its tables and figures.

The lab (``labs/08_thesis_reproduction.ipynb``) does the work; this module chooses its
parameters (a profile, the data sets, the number of images), points its ``out_dir`` at the
output folder, draws one progress bar per data set and phase from the JSON lines that
:mod:`advkit.thesis` appends to ``$ADVKIT_PROGRESS_FILE``, and prints the tables at the end.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from . import lab as labmod
from . import runner
from .paths import _CHECKOUT

LAB = "08_thesis_reproduction"
TABLES = ("table8", "table9", "table_ci", "claim")


class _Bars:
    """tqdm bars fed by the progress file: one per (data set, phase), left on screen when done."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled, self.offset, self.bars = path, enabled, 0, {}

    def poll(self) -> None:
        if not self.path.exists():
            return
        with open(self.path) as fh:
            fh.seek(self.offset)
            chunk = fh.read()
        end = chunk.rfind("\n") + 1          # only whole lines; the rest is read next time
        self.offset += len(chunk[:end].encode())
        for line in chunk[:end].splitlines():
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                continue
            key = ev.get("id", (ev["dataset"], ev["phase"]))
            bar = self.bars.get(key)
            if bar is None:
                bar = self.bars[key] = tqdm(total=ev["total"], desc=f"{ev['dataset']}: {ev['phase']}",
                                            disable=not self.enabled, leave=True, dynamic_ncols=True)
            bar.update(ev["n"] - bar.n)
            if ev.get("done"):
                bar.close()

    def close(self) -> None:
        self.poll()
        for bar in self.bars.values():
            bar.close()


def thesis(
    *,
    profile: str | None = None,
    datasets: list[str] | None = None,
    images: int | None = None,
    out: str | os.PathLike | None = None,
    extra_params: dict[str, Any] | None = None,
    threads: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Reproduce the thesis experiment: execute lab 08 with papermill into ``out``.

    Parameters
    ----------
    profile : str, optional
        A parameter profile (``"gpu"``: all four data sets at full scale; see ``labs/profiles/``).
    datasets : list of str, optional
        A subset of :data:`advkit.thesis.DATASETS` (default: the lab's, all four).
    images : int, optional
        Images per data set of the many-image table with confidence intervals.
    out : path, optional
        Output folder (default ``build/thesis`` of the checkout): the executed notebook, the
        tables as CSV and Markdown, the figures as PNG, ``records/`` and ``progress.jsonl``.
    extra_params : dict, optional
        Any other lab parameter (``-p NAME=VALUE`` on the command line).
    threads : int, optional
        Torch threads of the kernel (as ``advkit labs run --threads``).

    Returns
    -------
    dict
        ``notebook``, ``out``, ``seconds``, ``tables`` ({name: Markdown text}) and ``files``.

    Raises
    ------
    ValueError
        An unknown data set or a non-positive ``images``; nothing is run.
    RuntimeError
        The lab failed; the executed notebook in ``out`` shows the failing cell.
    """
    import papermill as pm

    from .thesis import DATASETS

    path = runner.select([LAB])[0]
    params: dict[str, Any] = labmod.load_profile(profile, LAB, path.parent) if profile else {}
    params.update(extra_params or {})
    if datasets is not None:
        bad = [d for d in datasets if d not in DATASETS]
        if bad or not datasets:
            raise ValueError(f"unknown data set(s) {bad}; choose from {list(DATASETS)}" if bad else
                             f"--datasets needs at least one of {list(DATASETS)}")
        params["datasets"] = list(dict.fromkeys(datasets))
    if images is not None:
        if isinstance(images, bool) or not isinstance(images, int) or images < 10:
            raise ValueError(f"images must be an int >= 10 (images // 10 per class), got {images!r}")
        params["images"] = images
    declared = pm.inspect_notebook(str(path))
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise ValueError(f"lab {LAB} has no parameter(s) {unknown}; it takes {sorted(declared)}")
    out = Path(out or _CHECKOUT / "build" / "thesis").resolve()
    out.mkdir(parents=True, exist_ok=True)
    params["out_dir"] = str(out)
    events = out / "progress.jsonl"
    events.write_text("")
    env = {"ADVKIT_PROGRESS_FILE": str(events), labmod.RECORDS_ENV: str(out / "records"),
           runner.THREADS_ENV: str(runner.kernel_threads(threads))}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)                       # the kernel inherits them
    target = out / path.name
    failure: list[BaseException] = []

    def work() -> None:
        try:
            runner.execute(path, target, params, progress=False)
        except BaseException as err:  # reported below, with the notebook's path
            failure.append(err)

    print(f"[advkit] reproducing the thesis: {path.name} -> {out}" + (f" with {params}" if params else ""), flush=True)
    bars = _Bars(events, enabled=progress)
    start = time.perf_counter()
    thread = threading.Thread(target=work, daemon=True)
    try:
        thread.start()
        while thread.is_alive():
            thread.join(0.3)
            bars.poll()
    finally:
        bars.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    seconds = time.perf_counter() - start
    if failure:
        lines = str(failure[0]).strip().splitlines()
        raise RuntimeError(f"lab {LAB} failed after {seconds:.0f} s: {lines[-1] if lines else type(failure[0]).__name__}\n"
                           f"the executed notebook shows the failing cell: {target}") from failure[0]
    tables = {name: (out / f"{name}.md").read_text() for name in TABLES if (out / f"{name}.md").exists()}
    for name, text in tables.items():
        print(f"\n## {name}\n\n{text}")
    print(f"[advkit] done in {seconds:.0f} s: {target}", flush=True)
    files = sorted(p for p in out.iterdir() if p.suffix in (".csv", ".md", ".png", ".ipynb"))
    return {"notebook": target, "out": out, "seconds": seconds, "tables": tables, "files": files}
