"""Run the student's kernel as arbitrary code: bubblewrap where Linux allows it.

With ``bwrap`` (Debian package ``bubblewrap``) the kernel gets its own PID, network, IPC and UTS
namespaces (no network at all: the grader talks to it over Unix sockets in its working
directory), a read-only view of the file system in which the instructor material, the gradebook,
other submissions and advkit's checkout are hidden or read-only, and a uid of its own
(``setpriv``), with limits on address space, processes, CPU time and file size (``prlimit``).
When the kernel ends, the namespace's init dies and the kernel of Linux kills every process left
in it, daemonised children included; the grader then kills whatever that uid still runs.

Without bubblewrap (or where namespaces are not allowed) the grader warns loudly and falls back to
process isolation only: a separate uid where the grader is root, and the same limits.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

UID_BASE = 200_000
SLOTS = 256
_SLOT_DIR = Path("/tmp/advkit-grader-slots")


@dataclass
class Limits:
    memory: int = 8 * 2**30        # bytes of address space (RLIMIT_AS; importing torch alone reserves ~3.5 GiB)
    processes: int = 64            # tasks of the sandbox uid (RLIMIT_NPROC; threads count)
    cpu: int = 1200                # CPU seconds per process (RLIMIT_CPU)
    file_size: int = 256 * 2**20   # largest file it may write (RLIMIT_FSIZE)
    output: int = 32 * 2**20       # bytes of cell output the grader keeps before it stops the kernel


class SandboxWarning(UserWarning):
    pass


_probe_cache: dict[str, str] = {}


def probe() -> str:
    """``"bwrap"`` when bubblewrap can create the namespaces here, else ``"process"``."""
    if "kind" in _probe_cache:
        return _probe_cache["kind"]
    kind, why = "process", "bwrap is not installed (apt-get install bubblewrap)"
    if os.environ.get("ADVKIT_GRADER_SANDBOX") == "none":
        why = "ADVKIT_GRADER_SANDBOX=none"
    elif shutil.which("bwrap"):
        try:
            r = subprocess.run(["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-pid",
                                "--unshare-net", "--die-with-parent", "true"], capture_output=True, timeout=30)
            if r.returncode == 0:
                kind = "bwrap"
            else:
                why = f"bwrap cannot create namespaces here: {r.stderr.decode(errors='replace').strip()}"
        except (OSError, subprocess.SubprocessError) as err:
            why = f"bwrap failed: {err}"
    if kind != "bwrap":
        msg = (f"advkit grade: NO SANDBOX ({why}). Submissions run with process isolation only: "
               "they can read every file the grader's user can read and use the network.")
        warnings.warn(msg, SandboxWarning, stacklevel=2)
        print("\n" + "!" * 100 + "\n" + msg + "\n" + "!" * 100 + "\n", file=sys.stderr, flush=True)
    _probe_cache["kind"] = kind
    _probe_cache["why"] = why
    return kind


class Slot:
    """A uid of our own for one running kernel, locked across processes on this machine."""

    def __init__(self):
        _SLOT_DIR.mkdir(mode=0o700, exist_ok=True)
        for k in range(SLOTS):
            fd = os.open(_SLOT_DIR / f"{k}.lock", os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            self.fd, self.uid = fd, UID_BASE + k
            return
        raise RuntimeError(f"all {SLOTS} sandbox slots are busy on this machine")

    def release(self) -> None:
        os.close(self.fd)


def can_switch_uid() -> bool:
    """Root with ``setpriv``, and another uid can run this interpreter (in the sandbox it always
    can: the interpreter is bound readable; without one, a private prefix such as ``~root/.pyenv``
    keeps other uids out, and the kernel then runs as the grader's user)."""
    if "uid" not in _probe_cache:
        ok = os.geteuid() == 0 and shutil.which("setpriv") is not None
        if ok and probe() != "bwrap":
            r = subprocess.run(["setpriv", f"--reuid={UID_BASE}", f"--regid={UID_BASE}", "--clear-groups",
                                "env", "-i", sys.executable, "-c", "import ipykernel"], capture_output=True, cwd="/")
            ok = r.returncode == 0
            if not ok:
                msg = (f"advkit grade: another uid cannot run {sys.executable}; without a sandbox the "
                       "kernels run as the grader's own user")
                warnings.warn(msg, SandboxWarning, stacklevel=2)
                print(msg, file=sys.stderr, flush=True)
        _probe_cache["uid"] = "yes" if ok else "no"
    return _probe_cache["uid"] == "yes"


@dataclass
class Sandbox:
    kind: str                      # "bwrap" or "process"
    work: Path                     # the kernel's working directory (writable)
    readonly: list[Path] = field(default_factory=list)   # bound read-only on top of the masks
    hidden: list[Path] = field(default_factory=list)     # replaced by empty folders
    limits: Limits = field(default_factory=Limits)
    uid: int | None = None
    env: dict[str, str] = field(default_factory=dict)

    def wrap(self, cmd: list[str]) -> list[str]:
        lim = self.limits
        inner = []
        if self.uid is not None and can_switch_uid():
            inner += ["setpriv", f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups",
                      "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
        if shutil.which("prlimit"):
            inner += ["prlimit", f"--as={lim.memory}", f"--cpu={lim.cpu}", f"--fsize={lim.file_size}", "--core=0"]
            if self.uid is not None and can_switch_uid():
                inner += [f"--nproc={lim.processes}"]
            inner += ["--"]
        inner += ["env", "-i"] + [f"{k}={v}" for k, v in sorted(self.env.items())] + cmd
        if self.kind != "bwrap":
            return inner
        outer = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                 "--perms", "1777", "--tmpfs", "/tmp", "--perms", "1777", "--tmpfs", "/dev/shm", "--tmpfs", "/run"]
        masks = [Path("/tmp"), Path("/dev/shm"), Path("/run")]
        for path in [Path.home(), *self.hidden]:
            if path.is_dir() and path not in masks:
                masks.append(path)
                outer += ["--tmpfs", str(path)]
        made: set[Path] = set()

        def bind(flag: str, path: Path) -> None:
            for mask in masks:   # folders between a mask and a path bound inside it: traversable
                if mask in path.parents:
                    for parent in reversed(path.parents):
                        if mask in parent.parents and parent not in made:
                            made.add(parent)
                            outer.extend(["--perms", "0755", "--dir", str(parent)])
            outer.extend([flag, str(path), str(path)])

        for path in self.readonly:
            if path.exists():
                bind("--ro-bind", path)
        bind("--bind", self.work)
        outer += [
                  "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
                  "--die-with-parent", "--new-session", "--chdir", str(self.work)]
        return outer + ["--"] + inner


def kill_uid(uid: int | None) -> int:
    """Kill every process of ``uid`` (as that uid, so nothing else can be hit); returns how many were left."""
    if uid is None or not can_switch_uid():
        return 0
    left = 0
    for _ in range(20):
        pids = [p for p in _pids_of(uid)]
        if not pids:
            return left
        left = max(left, len(pids))
        subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "kill", "-9", "-1"],
                       capture_output=True)
        time.sleep(0.05)
    return left


def _pids_of(uid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    out.append(int(entry))
            except OSError:
                pass
    return out
