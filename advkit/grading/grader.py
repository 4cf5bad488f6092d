"""``advkit grade``: grade a class's submissions into ``gradebook.csv`` and one feedback file each.

Resumable: every result is kept in ``OUT/results/<key>.json``, where the key hashes the
submission's bytes together with the lab, its spec, the grading parameters and the limits; an
unchanged submission is never graded twice. Submissions run in parallel, one worker process each
(``--workers``), or on a Dask cluster (``--dask ADDRESS``). The gradebook is replaced atomically
at the end of the run, so an interrupted run leaves the previous gradebook intact.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from . import sandbox
from .sandbox import Limits
from .spec import load_spec, seed_for

GRADER_VERSION = "1"
MAX_SUBMISSION_BYTES = 64 * 2**20
COLUMNS = ("submission", "status", "points", "max_points")


def find_submissions(items: Iterable[str | Path]) -> list[Path]:
    """The ``.ipynb`` files among ``items`` (files, or folders searched recursively), sorted."""
    found: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts and p.is_file())
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"no submission file or folder {path}")
    seen, out = set(), []
    for p in found:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            out.append(p)
    return out


def _names(paths: list[Path]) -> list[str]:
    """The gradebook's ``submission`` column: the file name, with its folder where names repeat."""
    counts: dict[str, int] = {}
    for p in paths:
        counts[p.name] = counts.get(p.name, 0) + 1
    return [p.name if counts[p.name] == 1 else f"{p.parent.name}/{p.name}" for p in paths]


def _inputs_bytes(spec, lab: str, salt: str) -> bytes:
    rng = np.random.default_rng(seed_for(lab, salt))
    arrays = spec.inputs(rng) or {}
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return buf.getvalue()


def run_worker(job: dict[str, Any], hard_timeout: float) -> dict[str, Any]:
    """Grade one job in a fresh worker process; a dead or hung worker becomes a row with a reason."""
    job_dir = Path(tempfile.mkdtemp(prefix="advkit-grade-"))
    try:
        os.chmod(job_dir, 0o711)   # the kernel's uid may pass through to work/, nothing else
        private = job_dir / "private"
        private.mkdir(mode=0o700)
        (private / "job.json").write_text(json.dumps(job))
        cmd = [sys.executable, "-m", "advkit.grading.execute", str(job_dir)]
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                log, _ = proc.communicate(timeout=hard_timeout)
            except subprocess.TimeoutExpired:
                _killpg(proc)
                log, _ = proc.communicate()
                return _failed(job, "timeout", f"the grader's worker did not finish within {hard_timeout:g} s")
            finally:
                _killpg(proc)
        except OSError as err:
            return _failed(job, "error", f"could not start the grader's worker: {err}")
        path = job_dir / "private" / "result.json"
        if path.is_file():
            return json.loads(path.read_text())
        tail = (log or b"").decode(errors="replace")[-500:]
        return _failed(job, "crashed", f"the grader's worker process died (exit status {proc.returncode}); "
                                       "the submission killed it or exhausted a limit", log=tail)
    finally:
        _sweep(job_dir)
        shutil.rmtree(job_dir, ignore_errors=True)


def _sweep(job_dir: Path, rounds: int = 5) -> int:
    """Kill every process still working in ``job_dir``: its working folder is inside it, or its
    command line names it (the kernel's connection file). jupyter_client starts the kernel in a
    session of its own, so killing the worker's process group does not reach it; without the
    sandbox (no PID namespace, no uid of its own to sweep) a kernel or a daemon it forked would
    otherwise outlive a submission that killed its worker. Returns the number of processes killed."""
    root, killed = str(job_dir), 0
    for _ in range(rounds):
        found = 0
        for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cwd = os.readlink(entry / "cwd")
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if cwd == root or cwd.startswith(root + "/") or root in cmdline:
                try:
                    os.kill(int(entry.name), 9)
                    found += 1
                except OSError:
                    pass
        killed += found
        if not found:
            break
        time.sleep(0.1)
    return killed


def _killpg(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, 9)
    except OSError:
        pass


def _failed(job: dict[str, Any], status: str, reason: str, log: str = "") -> dict[str, Any]:
    return {"submission": job["submission"], "sha256": job["sha256"], "status": status, "reason": reason,
            "points": 0.0, "checks": {c: 0.0 for c in job["check_names"]},
            "messages": {c: f"not graded: {reason}" for c in job["check_names"]}, "notes": [], "errors": [],
            "sandbox": None, "log": log}


def _dask_task(job: dict[str, Any], hard_timeout: float) -> dict[str, Any]:  # runs on a Dask worker
    return run_worker(job, hard_timeout)


def grade(lab: str | Path, submissions: Iterable[str | Path], out: str | Path, *, workers: int = 1,
          timeout: float | None = None, cell_timeout: float | None = None, dask: str | None = None,
          profile: str = "grading", limits: Limits | None = None, salt: str = "", threads: int = 1,
          progress: bool = True) -> list[dict[str, Any]]:
    """Grade ``submissions`` of ``lab``; writes ``out/gradebook.csv`` and ``out/feedback/*.md``.

    Parameters
    ----------
    lab : a lab name (``04_deepfool``, ``04``) or the instructor notebook's path; its spec is
        ``<labs dir>/grading/<lab>.py``.
    submissions : ``.ipynb`` files or folders of them.
    workers : submissions graded at once (one worker process and one kernel each).
    timeout : total seconds per submission (default: 10 x the spec's per-cell timeout).
    cell_timeout : seconds per cell (default: the spec's ``cell_timeout``).
    dask : address of a Dask scheduler (``tcp://host:8786``) to run the workers on instead.
    limits : memory, process, CPU, file-size and output limits (:class:`advkit.grading.sandbox.Limits`).
    salt : changes the grader's randomly drawn inputs (the default is fixed, so grades repeat).

    Returns the rows (dicts) in the gradebook's order.
    """
    from tqdm.auto import tqdm

    from .. import lab as labmod
    from .. import runner

    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    (source_path,) = runner.select([str(lab)]) if not str(lab).endswith(".ipynb") else [Path(lab).resolve()]
    source_path = Path(source_path).resolve()
    if not source_path.is_file():
        raise FileNotFoundError(f"no lab notebook {source_path}")
    spec, spec_text = load_spec(source_path)
    name = source_path.stem
    cell_timeout = float(cell_timeout or spec.cell_timeout)
    timeout = float(timeout or 10 * cell_timeout)
    if cell_timeout <= 0 or timeout <= 0:
        raise ValueError("timeouts must be positive numbers of seconds")
    limits = limits or Limits()
    import papermill as pm

    declared = pm.inspect_notebook(str(source_path))
    try:
        params = labmod.load_profile(profile, name, source_path.parent)
    except FileNotFoundError:
        params = {}
    params = {k: v for k, v in params.items() if k in declared}
    source_text = source_path.read_text()
    inputs = _inputs_bytes(spec, name, salt)
    out = Path(out).resolve()
    (out / "results").mkdir(parents=True, exist_ok=True)
    (out / "feedback").mkdir(parents=True, exist_ok=True)
    paths = [p for p in find_submissions(submissions) if p.resolve() != source_path]   # never the lab itself
    names = _names(paths)
    config = json.dumps({"v": GRADER_VERSION, "lab": hashlib.sha256(source_text.encode()).hexdigest(),
                         "spec": hashlib.sha256(spec_text.encode()).hexdigest(), "params": params,
                         "inputs": hashlib.sha256(inputs).hexdigest(), "limits": dataclasses.asdict(limits),
                         "timeouts": [cell_timeout, timeout], "threads": threads}, sort_keys=True)
    hide = sorted({str(p.parent.resolve()) for p in paths} | {str(out), str(source_path.parent)})
    check_names = [c.name for c in spec.checks]
    jobs, rows = [], {}
    for path, shown in zip(paths, names):
        try:
            size = path.stat().st_size
            data = path.read_bytes() if size <= MAX_SUBMISSION_BYTES else b""
        except OSError as err:   # unreadable: a row with the reason, the batch goes on
            rows[shown] = _failed({"submission": shown, "sha256": "", "check_names": check_names}, "invalid",
                                  f"cannot read the file: {err}")
            continue
        if size > MAX_SUBMISSION_BYTES:
            rows[shown] = _failed({"submission": shown, "sha256": "", "check_names": check_names}, "invalid",
                                  f"the file is {size} bytes; a lab notebook is far smaller (limit {MAX_SUBMISSION_BYTES})")
            continue
        digest = hashlib.sha256(data).hexdigest()
        key = hashlib.sha256((digest + config).encode()).hexdigest()[:32]
        cached = out / "results" / f"{key}.json"
        if cached.is_file():
            try:
                row = json.loads(cached.read_text())
                row["submission"] = shown
                rows[shown] = row
                continue
            except json.JSONDecodeError:
                pass
        jobs.append(({"lab": name, "source": source_text, "spec_text": spec_text, "submission": shown,
                      "sha256": digest, "submission_b64": base64.b64encode(data).decode(), "params": params,
                      "limits": dataclasses.asdict(limits), "cell_timeout": cell_timeout, "total_timeout": timeout,
                      "inputs_b64": base64.b64encode(inputs).decode(), "check_names": check_names,
                      "hide": hide, "threads": threads}, cached))
    hard = timeout + 120
    if jobs and not dask:
        sandbox.probe()   # warns loudly, here in the grader's own output, when there is no sandbox
    bar = tqdm(total=len(jobs), desc=f"grading {name}", unit="nb", disable=not progress or not jobs)

    def finish(result: dict[str, Any], cached: Path) -> None:
        result["max_points"] = spec.max_points
        tmp = cached.with_suffix(".tmp")
        tmp.write_text(json.dumps(result))
        os.replace(tmp, cached)
        rows[result["submission"]] = result
        bar.update(1)

    if dask and jobs:
        from distributed import Client

        with Client(dask) as client:
            futures = {client.submit(_dask_task, job, hard, pure=False, key=f"advkit-grade-{job['sha256'][:16]}-{i}"): cached
                       for i, (job, cached) in enumerate(jobs)}
            from distributed import as_completed as dask_completed

            for fut in dask_completed(futures):
                job_cached = futures[fut]
                try:
                    result = fut.result()
                except Exception as err:
                    job = next(j for j, c in jobs if c == job_cached)
                    result = _failed(job, "error", f"the Dask task failed: {err}")
                finish(result, job_cached)
    elif jobs:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(run_worker, job, hard): (job, cached) for job, cached in jobs}
            for fut in as_completed(futures):
                job, cached = futures[fut]
                try:
                    result = fut.result()
                except Exception as err:
                    result = _failed(job, "error", f"grader error: {err}")
                finish(result, cached)
    bar.close()
    unsandboxed = [r["submission"] for r in rows.values() if r.get("sandbox") == "process"]
    if unsandboxed and dask:
        print(f"advkit grade: NO SANDBOX on the Dask workers for {len(unsandboxed)} submission(s): "
              "process isolation only (install bubblewrap there)", file=sys.stderr, flush=True)
    ordered = [rows[n] for n in names]
    for row in ordered:
        row["max_points"] = spec.max_points
        _write_atomic(out / "feedback" / f"{_safe(row['submission'])}.md", feedback(row, spec, name))
    write_gradebook(out / "gradebook.csv", ordered, check_names)
    return ordered


def _safe(name: str) -> str:
    stem = name[:-6] if name.endswith(".ipynb") else name
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem)


def _fmt(x: float) -> str:
    return f"{x:g}"


def write_gradebook(path: Path, rows: list[dict[str, Any]], check_names: list[str]) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*COLUMNS, *check_names])
    for r in rows:
        name = r["submission"]
        if name[:1] in ("=", "+", "-", "@"):   # never a formula when the gradebook opens in a spreadsheet
            name = "'" + name
        w.writerow([name, r["status"], _fmt(r["points"]), _fmt(r["max_points"]),
                    *[_fmt(r["checks"].get(c, 0.0)) for c in check_names]])
    _write_atomic(path, buf.getvalue())
    return path


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _md(text: str) -> str:
    return str(text).replace("\r", " ").replace("\n", " ").replace("|", "\\|").replace("<", "&lt;")


def feedback(row: dict[str, Any], spec, lab: str) -> str:
    """A submission's feedback in Markdown: a reason for every lost point, no hidden source."""
    lines = [f"# {lab}: feedback for {_md(row['submission'])}", "",
             f"**{_fmt(row['points'])} / {_fmt(row['max_points'])} points** (status: `{row['status']}`)", ""]
    if row.get("reason"):
        lines += [f"Why: {_md(row['reason'])}", ""]
    if row.get("sandbox") == "process":
        lines += ["Note: graded without a sandbox (process isolation only).", ""]
    lines += ["| check | points | max | reason |", "| --- | ---: | ---: | --- |"]
    for c in spec.checks:
        got = row["checks"].get(c.name, 0.0)
        msg = row.get("messages", {}).get(c.name, "")
        reason = "correct" if got >= c.points - 1e-9 else (msg or "no result")
        if got < c.points - 1e-9 and got > 0 and msg:
            reason = f"partly correct: {msg}"
        lines.append(f"| {c.name} | {_fmt(got)} | {_fmt(c.points)} | {_md(reason)} |")
    if row.get("notes"):
        lines += ["", "## What the grader restored", ""] + [f"- {_md(n)}" for n in row["notes"]]
    if row.get("errors"):
        lines += ["", "## Errors in your cells", ""] + [f"- {_md(e)}" for e in row["errors"][:20]]
    return "\n".join(lines) + "\n"
