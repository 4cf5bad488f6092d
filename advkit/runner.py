"""Execute labs with papermill and summarise what they recorded (``advkit labs run``)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import lab as labmod
from .paths import _CHECKOUT


def labs_dir() -> Path:
    """The folder of lab notebooks (``$ADVKIT_LABS``, default ``labs/`` of the checkout)."""
    env = os.environ.get("ADVKIT_LABS")
    return Path(env).resolve() if env else _CHECKOUT / "labs"


def discover(directory: Path | None = None) -> list[Path]:
    """Lab notebooks ``NN_*.ipynb`` in order."""
    directory = directory or labs_dir()
    return sorted(p for p in directory.glob("[0-9][0-9]_*.ipynb"))


def select(names: list[str] | None, directory: Path | None = None) -> list[Path]:
    """Labs matching ``names`` (a stem ``01_fgsm``, a number ``01`` or ``1``, or a path)."""
    all_labs = discover(directory)
    if not names:
        return all_labs
    chosen = []
    for name in names:
        path = Path(name)
        if path.suffix == ".ipynb" and path.is_file():
            chosen.append(path.resolve())
            continue
        key = name.zfill(2) if name.isdigit() else name
        hits = [p for p in all_labs if p.stem == key or p.stem.split("_")[0] == key]
        if not hits:
            raise ValueError(f"no lab named {name!r}; available: {[p.stem for p in all_labs]}")
        chosen.extend(hits)
    return chosen


def kernel_manager(kernel_name: str = "python3"):
    """A kernel manager whose kernel talks to us over CurveZMQ-encrypted sockets when pyzmq can.

    A default papermill kernel listens on plain TCP and ipykernel warns "Kernel is running over
    TCP without encryption" before every lab. jupyter_client provisions Curve keys itself with
    ``transport_encryption="auto"`` when the kernelspec declares support (ipykernel's does), which
    fixes the cause rather than hiding the message. Without libsodium in pyzmq it stays plain TCP.
    """
    import zmq
    from jupyter_client.manager import KernelManager

    policy = "auto" if zmq.has("curve") else "disabled"
    return KernelManager(kernel_name=kernel_name, transport_encryption=policy)


def execute(path: Path, target: Path, params: dict[str, Any] | None = None, *, progress: bool = True,
            cwd: Path | None = None, **papermill_kwargs: Any) -> None:
    """Execute one notebook with papermill in its own kernel (cwd: the notebook's folder)."""
    import papermill as pm

    km = kernel_manager()
    try:
        pm.execute_notebook(str(path), str(target), parameters=params or {}, cwd=str(cwd or path.parent),
                            progress_bar=progress, kernel_name="python3", km=km, **papermill_kwargs)
    finally:
        if km.has_kernel:
            km.shutdown_kernel(now=False)


THREADS_ENV = "OMP_NUM_THREADS"


def kernel_threads(threads: int | None = None) -> int:
    """The torch thread count the lab kernels get: ``threads``, else ``$OMP_NUM_THREADS``, else
    torch's default (the number of physical cores)."""
    if threads is None:
        env = os.environ.get(THREADS_ENV, "").strip()
        if env:
            threads = int(env) if env.isdigit() else 0
            if threads < 1:
                raise ValueError(f"{THREADS_ENV}={env!r} is not a positive integer; unset it or pass --threads N")
            return threads
        import torch

        return torch.get_num_threads()
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    return threads


@dataclass
class LabRun:
    name: str
    status: str  # "ok" or "failed"
    seconds: float
    output: Path
    error: str = ""


def run(
    names: list[str] | None = None,
    *,
    profile: str | None = None,
    out: Path | None = None,
    directory: Path | None = None,
    extra_params: dict[str, Any] | None = None,
    progress: bool = True,
    threads: int | None = None,
) -> list[LabRun]:
    """Execute labs with papermill; executed notebooks go to ``out/labs``, records to ``out/records``.

    ``threads`` sets the kernels' torch threads (``OMP_NUM_THREADS``). By default an
    ``OMP_NUM_THREADS`` already in the environment is kept, and otherwise it is torch's own default
    (the physical cores), made explicit: on the 2-core dev machine, idle, labs 00-05 took 198 s
    with 2 threads and 215 s with 1 (README, "Using the labs").
    """
    import papermill as pm

    directory = directory or labs_dir()
    out = (out or _CHECKOUT / "build").resolve()
    (out / "labs").mkdir(parents=True, exist_ok=True)
    records = out / "records"
    os.environ[labmod.RECORDS_ENV] = str(records)  # the kernels inherit it
    os.environ[THREADS_ENV] = str(kernel_threads(threads))  # read by torch when a kernel imports it
    runs = []
    for path in select(names, directory):
        declared = pm.inspect_notebook(str(path))
        params = labmod.load_profile(profile, path.stem, directory) if profile else {}
        params.update(extra_params or {})
        params = {k: v for k, v in params.items() if k in declared}
        target = out / "labs" / path.name
        print(f"[advkit] running {path.stem}" + (f" with {params}" if params else ""), flush=True)
        start = time.perf_counter()
        try:
            execute(path, target, params, progress=progress)
            runs.append(LabRun(path.stem, "ok", time.perf_counter() - start, target))
        except Exception as err:  # papermill wraps cell errors; keep going with the other labs
            first = str(err).strip().splitlines()
            runs.append(LabRun(path.stem, "failed", time.perf_counter() - start, target,
                               first[-1] if first else type(err).__name__))
        print(f"[advkit] {path.stem}: {runs[-1].status} in {runs[-1].seconds:.0f} s", flush=True)
    write_summary(runs, out)
    return runs


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        text = json.dumps(value)
        return text if len(text) <= 80 else text[:77] + "..."
    return str(value)


def write_summary(runs: list[LabRun], out: Path) -> Path:
    """Write ``summary.md`` and ``summary.json`` in ``out`` and print the Markdown."""
    recs = labmod.read_records(out / "records") if (out / "records").is_dir() else {}
    lines = ["# advkit lab summary", "", "| lab | status | time (s) | records |", "| --- | --- | ---: | ---: |"]
    for r in runs:
        lines.append(f"| {r.name} | {r.status} | {r.seconds:.0f} | {len(recs.get(r.name, {}).get('records', {}))} |")
    for r in runs:
        lines += ["", f"## {r.name}", ""]
        if r.error:
            lines += [f"**failed:** `{r.error}`", ""]
        items = recs.get(r.name, {}).get("records", {})
        if items:
            lines += ["| record | value |", "| --- | --- |"]
            lines += [f"| {k} | {_fmt(v)} |" for k, v in items.items()]
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    doc = {r.name: {"status": r.status, "seconds": round(r.seconds, 1), "error": r.error,
                    "notebook": str(r.output), "records": recs.get(r.name, {}).get("records", {})}
           for r in runs}
    (out / "summary.json").write_text(json.dumps(doc, indent=1))
    print(text)
    return out / "summary.md"
