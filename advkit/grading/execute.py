"""Grade one submission: the worker process (``python -m advkit.grading.execute JOB_DIR``).

The batch grader (:mod:`advkit.grading.grader`) starts one worker process per submission and
reads its ``result.json``; a worker that dies (the student killed it, or it ran out of time)
becomes a row with a reason, never a dead batch. The worker:

1. parses the submission and checks that it is a Python notebook of this lab;
2. rebuilds the notebook from the source (:mod:`advkit.grading.assemble`) and appends one export
   cell per check (:func:`advkit.grading.spec.export_cell`);
3. executes it with papermill (parameters from the lab's ``grading`` profile) in a sandboxed
   kernel (:mod:`advkit.grading.sandbox`) with a per-cell timeout, a total timeout, memory,
   process and output limits, and errors allowed so that every cell runs;
4. loads the exported arrays without pickle and grades them with the spec's functions, in this
   process, against references computed here.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import nbformat

from . import sandbox as sb
from .assemble import InvalidSubmission, assemble, parse
from .spec import export_cell, load_export, load_spec_source

STATUSES = ("graded", "invalid", "timeout", "crashed", "memory", "output_limit", "error")
_MEMORY_HINTS = ("can't allocate memory", "cannot allocate memory", "std::bad_alloc", "out of memory")


def _engine():
    """papermill's nbclient engine with a client that caps the output and can be stopped."""
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine, papermill_engines

    class CappedClient(PapermillNotebookClient):
        def output(self, outs, msg, display_id, cell_index):
            job = _CURRENT["job"]
            content = msg.get("content", {})
            size = len(json.dumps(content.get("data", content.get("text", "")), default=str))
            job.output_bytes += size
            if job.output_bytes > job.limits.output:
                if not job.output_exceeded:
                    job.output_exceeded = True
                    job.stop_kernel()
                return None
            return super().output(outs, msg, display_id, cell_index)

    class Engine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, log_output=False, stdout_file=None,
                                     stderr_file=None, start_timeout=60, execution_timeout=None, **kwargs):
            kwargs.pop("input_path", None)
            return CappedClient(nb_man, timeout=execution_timeout, startup_timeout=start_timeout,
                                kernel_name=kernel_name, log_output=False, **kwargs).execute()

    papermill_engines.register("advkit-grader", Engine)
    return "advkit-grader"


_CURRENT: dict[str, Any] = {}


def _kernel_manager(box: sb.Sandbox):
    from jupyter_client.manager import AsyncKernelManager

    # an *async* manager: with a blocking client nbclient waits for output forever and its
    # timeouts never fire (it polls the output with no timeout on the one event loop)
    class SandboxedKernelManager(AsyncKernelManager):
        def format_kernel_cmd(self, extra_arguments=None):
            cmd = super().format_kernel_cmd(extra_arguments)
            if cmd and os.path.basename(cmd[0]).startswith("python"):
                cmd[0] = sys.executable
            return box.wrap(cmd)

        async def _async_launch_kernel(self, kernel_cmd, **kw):
            log = open(box.work.parent / "private" / "kernel.log", "ab")   # the kernel's own stdout/stderr, capped below
            kw["stdout"] = kw["stderr"] = log
            try:
                return await super()._async_launch_kernel(kernel_cmd, **kw)
            finally:
                log.close()

        def write_connection_file(self, **kwargs):
            super().write_connection_file(**kwargs)
            if box.uid is not None and sb.can_switch_uid():
                os.chown(self.connection_file, box.uid, box.uid)

    run = box.work / ".kernel"
    run.mkdir(exist_ok=True)
    if box.uid is not None and sb.can_switch_uid():
        os.chown(run, box.uid, box.uid)
    km = SandboxedKernelManager(kernel_name="python3", transport="ipc", ip=str(run / "k"),
                                connection_file=str(run / "kernel.json"))
    km.cache_ports = False
    return km


class Job:
    def __init__(self, spec: dict[str, Any], job_dir: Path):
        self.d = spec
        self.dir = job_dir
        self.limits = sb.Limits(**spec.get("limits", {}))
        self.output_bytes = 0
        self.output_exceeded = False
        self.total_exceeded = False
        self.km = None

    def stop_kernel(self) -> None:
        km = self.km
        proc = getattr(getattr(km, "provisioner", None), "process", None)
        if proc is not None:
            try:
                proc.kill()
            except OSError:
                pass


def _hidden_paths(extra: list[str]) -> tuple[list[Path], list[Path]]:
    """Folders the kernel must not see, and the ones it needs read-only inside them."""
    from ..paths import _CHECKOUT, cache_dir

    hidden = [Path(p) for p in extra]
    readonly = []
    if (_CHECKOUT / "pyproject.toml").is_file():   # an editable install: hide the checkout ...
        hidden.append(_CHECKOUT)
        readonly.append(_CHECKOUT / "advkit")         # ... except the package (read-only)
        prefix = Path(sys.prefix).resolve()
        if _CHECKOUT in prefix.parents:
            readonly.append(prefix)
    base = Path(sys.base_prefix).resolve()            # the interpreter (e.g. under ~root/.pyenv)
    readonly.append(base)
    cache = Path(cache_dir()).resolve()
    readonly.append(cache)
    data = os.environ.get("ADVKIT_DATA")
    if data:
        readonly.append(Path(data).resolve())
    return hidden, readonly


def run_job(job_dir: Path) -> dict[str, Any]:
    d = json.loads((job_dir / "private" / "job.json").read_text())
    job = Job(d, job_dir)
    _CURRENT["job"] = job
    start = time.monotonic()
    result: dict[str, Any] = {"submission": d["submission"], "sha256": d["sha256"], "status": "error",
                              "checks": {c: 0.0 for c in d["check_names"]}, "messages": {}, "notes": [],
                              "errors": [], "sandbox": None}
    try:
        _run(job, d, result)
    except InvalidSubmission as err:
        result["status"] = "invalid"
        result["reason"] = str(err)
        result["messages"] = {c: f"not graded: {err}" for c in d["check_names"]}
    except Exception as err:  # the grader's own failure: say so in the row
        result["status"] = "error"
        result["reason"] = f"grader error: {type(err).__name__}: {err}"
        result["traceback"] = traceback.format_exc()
    result["points"] = round(float(sum(result["checks"].values())), 6)
    result["seconds"] = round(time.monotonic() - start, 2)
    return result


def _run(job: Job, d: dict[str, Any], result: dict[str, Any]) -> None:
    import papermill as pm
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    lab = d["lab"]
    source = nbformat.reads(d["source"], as_version=4)
    spec = load_spec_source(d["spec_text"], lab)
    data = base64.b64decode(d["submission_b64"])
    submission = parse(data, lab)
    built = assemble(source, submission, lab)
    result["notes"] = built.notes
    nb = built.nb
    for i, check in enumerate(spec.checks):
        cell = nbformat.v4.new_code_cell(export_cell(spec.checks, i))
        cell.id = f"advkit-export-{i}"
        cell.metadata["tags"] = ["advkit-export"]
        nb.cells.append(cell)
    if spec.prepare is not None:
        spec.prepare()

    work = job.dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    (work / "_advkit").mkdir(exist_ok=True)
    (work / ".tmp").mkdir(exist_ok=True)
    (work / "_advkit" / "inputs.npz").write_bytes(base64.b64decode(d["inputs_b64"]))
    kind = sb.probe()
    slot = sb.Slot() if sb.can_switch_uid() else None
    uid = slot.uid if slot else None
    if uid is not None:
        for root, dirs, files in os.walk(work):
            for name in dirs + files:
                os.chown(os.path.join(root, name), uid, uid)
        os.chown(work, uid, uid)
        os.chown(work / "_advkit" / "inputs.npz", 0, 0)   # the grader's inputs stay read-only
        os.chmod(work / "_advkit" / "inputs.npz", 0o644)
        os.chown(work / "_advkit", 0, 0)
        os.chmod(work / "_advkit", 0o755)
    hidden, readonly = _hidden_paths(d.get("hide", []))
    env = {"PATH": os.path.dirname(sys.executable) + ":/usr/bin:/bin", "HOME": str(work), "LANG": "C.UTF-8",
           "MPLBACKEND": "Agg", "OMP_NUM_THREADS": str(d.get("threads", 1)), "ADVKIT_RECORDS": str(work / "records"),
           "PYTHONDONTWRITEBYTECODE": "1", "JUPYTER_PLATFORM_DIRS": "1", "TMPDIR": str(work / ".tmp"),
           "IPYTHONDIR": str(work / ".ipython"), "MPLCONFIGDIR": str(work / ".mpl")}
    for key in ("ADVKIT_DATA", "ADVKIT_CACHE"):
        if os.environ.get(key):   # resolved: the sandbox binds the real folders, not the symlinks to them
            env[key] = str(Path(os.environ[key]).resolve())
    box = sb.Sandbox(kind, work, readonly=readonly, hidden=hidden, limits=job.limits, uid=uid, env=env)
    result["sandbox"] = kind
    job.km = km = _kernel_manager(box)
    timer = threading.Timer(d["total_timeout"], lambda: (setattr(job, "total_exceeded", True), job.stop_kernel()))
    timer.daemon = True
    status, reason = "graded", ""
    executed = None
    target = job.dir / "private" / "executed.ipynb"   # holds the hidden tests: never in the kernel's reach
    try:
        timer.start()
        executed = pm.execute_notebook(nb, str(target), parameters=d.get("params", {}), cwd=str(work),
                                       progress_bar=False, kernel_name="python3", km=km,
                                       engine_name=_engine(), execution_timeout=d["cell_timeout"],
                                       allow_errors=True, start_timeout=120, request_save_on_cell_execute=False)
    except PapermillExecutionError:   # papermill re-raises the first cell error at the end: the run completed
        executed = None
    except CellTimeoutError:
        status, reason = "timeout", f"a cell ran longer than the per-cell timeout of {d['cell_timeout']:g} s"
    except DeadKernelError:
        status, reason = "crashed", ("the kernel died (a crash, os._exit, a signal, or the memory limit of "
                                     f"{job.limits.memory // 2**20} MiB)")
    except Exception as err:
        status, reason = "crashed", f"execution stopped: {type(err).__name__}: {str(err)[:300]}"
    finally:
        timer.cancel()
        job.stop_kernel()   # nbclient has shut it down already unless it hung; kill the sandbox either way
        proc = getattr(km.provisioner, "process", None) if km.provisioner else None
        if proc is not None:
            try:
                proc.wait(10)
            except Exception:
                pass
        sb.kill_uid(uid)
        if slot:
            slot.release()
    if job.total_exceeded:
        status, reason = "timeout", f"the notebook ran longer than the total timeout of {d['total_timeout']:g} s"
    elif job.output_exceeded:
        status, reason = "output_limit", f"the notebook printed more than {job.limits.output} bytes of output"
    if executed is None and target.is_file():
        try:
            executed = nbformat.read(str(target), as_version=4)
        except Exception:
            executed = None
    errors = []
    memory = False
    if executed is not None:
        for cell in executed.cells:
            if cell.get("cell_type") != "code":
                continue
            for out in cell.get("outputs", []):
                if out.get("output_type") == "error":
                    ename, evalue = str(out.get("ename", "")), str(out.get("evalue", ""))
                    if ename == "MemoryError" or any(h in evalue.lower() for h in _MEMORY_HINTS):
                        memory = True
                    if cell.get("id") in built.student_cells:   # only the student's own code is quoted
                        errors.append(f"cell `{cell.get('id')}`: {ename}: {evalue[:300]}")
    if memory and status in ("graded", "crashed"):
        status, reason = "memory", f"the notebook ran out of memory (limit {job.limits.memory // 2**20} MiB)"
    result["status"], result["reason"], result["errors"] = status, reason, errors
    log = job.dir / "private" / "kernel.log"
    if log.is_file():
        with open(log, "rb") as f:
            f.seek(max(0, log.stat().st_size - 4000))
            result["kernel_log"] = f.read().decode(errors="replace")

    exports = work / "_advkit_exports"
    if exports.is_symlink() or not exports.is_dir():
        exports = work / ".no-exports"
    # the grader's own copy of its inputs: the kernel could have replaced the file in its folder
    inputs = _load_inputs(base64.b64decode(d["inputs_b64"]))
    for check in spec.checks:
        npz, err = exports / f"{check.name}.npz", exports / f"{check.name}.json"
        msg, frac = "", 0.0
        if npz.is_file() and not npz.is_symlink():
            try:
                got = load_export(npz)
                frac, msg = check.grade(got, inputs)
                frac = min(1.0, max(0.0, float(frac)))
                if frac != frac:
                    frac = 0.0
            except Exception as e:
                frac, msg = 0.0, f"{type(e).__name__}: {e}"
        elif err.is_file() and not err.is_symlink() and err.stat().st_size < 100_000:
            try:
                info = json.loads(err.read_text())
                msg = f"calling your code raised {str(info.get('ename'))[:80]}: {str(info.get('evalue'))[:300]}"
            except Exception:
                msg = "your code failed (unreadable error report)"
        else:
            msg = f"no result: the notebook stopped before the grader could call your code ({status}: {reason})"
        result["checks"][check.name] = round(frac * check.points, 6)
        result["messages"][check.name] = msg


def _load_inputs(data: bytes):
    import io

    import numpy as np

    with np.load(io.BytesIO(data), allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    job_dir = Path(argv[0])
    result = run_job(job_dir)
    tmp = job_dir / "private" / "result.json.tmp"
    tmp.write_text(json.dumps(result))
    os.replace(tmp, job_dir / "private" / "result.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
