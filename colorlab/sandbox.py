"""Where a student's notebook runs while it is graded: a kernel that cannot reach the grader's files.

The kernel (a Jupyter kernel, spoken to over Unix sockets) starts in a fresh temporary folder that
holds only the student's notebook, in its own session, under resource limits (CPU seconds,
address space, processes, file size). Where the grader runs as root and ``unshare`` exists
(Linux), the kernel also gets its own network namespace (no network, not even the host's
loopback) and its own mount namespace in which every file system is read-only except its
folder and ``/dev``, the answer key, the class's submissions and the grades CSV are covered by
``/dev/null``, and every capability is dropped before the kernel starts, so it cannot undo any
of that. Elsewhere only the folder, the session and the limits apply (`isolation` says which).

When grading ends, the kernel's process group is killed, and so is every process that left it
(``setsid``, double forks): the grader is the "child subreaper" of everything the kernel starts,
so orphans come back to it, and it kills them until none is left.
"""

from __future__ import annotations

import ctypes
import os
import queue
import resource
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h
NOBODY_PROCESSES = 512  # processes and threads the kernel may add to those its user already runs


@dataclass(frozen=True)
class Limits:
    """What one submission's kernel may use."""

    cpu_seconds: int = 3600
    memory_bytes: int = 12 * 2**30  # address space: torch maps more than it touches
    file_bytes: int = 2**30
    processes: int = NOBODY_PROCESSES


@dataclass(frozen=True)
class Outcome:
    """What running one piece of code in the kernel did: status is "ok", "error", "timeout" or "dead"."""

    status: str
    error: str | None = None
    data: tuple[dict, ...] = ()  # display_data payloads of the mime type asked for
    output_bytes: int = 0


def isolation() -> str:
    """How strongly this machine can wall a kernel off: "namespaces" (root, Linux, unshare) or "process"."""
    can = sys.platform.startswith("linux") and os.geteuid() == 0 and shutil.which("unshare") and shutil.which("setpriv")
    return "namespaces" if can else "process"


def _become_subreaper() -> None:
    """Orphans of the kernel's processes are re-parented to this process, so none escapes the sweep."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _children() -> set[int]:
    """The live processes whose parent is this one (Linux /proc; empty elsewhere)."""
    me, found = os.getpid(), set()
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = entry.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me and fields[0] != "Z":
            found.add(int(entry.parent.name))
    return found


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _kill(pid: int) -> None:
    for kill in (lambda: os.killpg(os.getpgid(pid), signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            if pid != os.getpid() and os.getpgid(pid) != os.getpgid(0):
                kill()
            else:
                os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def sweep(before: set[int], rounds: int = 50) -> list[int]:
    """Kill every child of this process not in `before` (and their groups) until none is left; the killed pids."""
    killed: list[int] = []
    quiet = 0
    for _ in range(rounds):
        _reap()
        strays = _children() - before
        if not strays:
            quiet += 1
            if quiet == 3:
                break
            time.sleep(0.05)
            continue
        quiet = 0
        for pid in strays:
            _kill(pid)
            killed.append(pid)
        time.sleep(0.05)
    _reap()
    return killed


def _limit(limits: Limits, processes_now: int) -> None:
    """In the kernel's process, before it starts: the resource limits (run by Popen's preexec_fn)."""
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds))
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
    resource.setrlimit(resource.RLIMIT_NPROC, (processes_now + limits.processes,) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _user_processes() -> int:
    """Processes and threads of this user now: RLIMIT_NPROC counts them all, so the limit adds to it."""
    uid, count = os.getuid(), 0
    for status in Path("/proc").glob("[0-9]*/task/[0-9]*/status"):
        try:
            count += f"Uid:\t{uid}\t" in status.read_text()
        except OSError:
            continue
    return count


def _walls(writable: Iterable[Path], hidden: Iterable[Path]) -> str:
    """The shell commands that build the kernel's mount namespace (run as root inside ``unshare -n -m``)."""
    keep = [str(path) for path in writable]
    commands = [f"mount --bind {shlex.quote(path)} {shlex.quote(path)}" for path in keep]
    with open("/proc/self/mountinfo") as file:
        mounts = [line.split()[4] for line in file]
    skip = {"/proc", "/dev", "/dev/shm", "/dev/pts", "/dev/mqueue", *keep}
    commands += [f"mount -o remount,bind,ro {shlex.quote(m)} 2>/dev/null"
                 for m in dict.fromkeys(mounts) if m not in skip and not m.startswith(("/proc/", "/sys"))]
    commands += [f"mount --bind /dev/null {shlex.quote(str(path))}" for path in hidden if Path(path).is_file()]
    return "; ".join(commands) + "; true"


class Sandbox:
    """One kernel for one submission: `execute` code in it, `close` it and everything it started."""

    def __init__(self, notebook_name: str, notebook_text: str, *, limits: Limits = Limits(),
                 hidden: Iterable[str | Path] = ()) -> None:
        self.limits = limits
        self.hidden = [Path(path).resolve() for path in hidden]
        self.root = Path(tempfile.mkdtemp(prefix="colorlab-grading-"))
        self.work = self.root / "work"  # the kernel's cwd, HOME and TMPDIR: the student's notebook only
        self.runtime = self.root / "runtime"  # the connection file and sockets; the calls' requests
        for folder in (self.work, self.runtime):
            folder.mkdir()
            folder.chmod(0o777)
        (self.work / Path(notebook_name).name).write_text(notebook_text, encoding="utf-8")
        self.km: Any = None
        self.kc: Any = None
        self._before: set[int] = set()

    def start(self) -> None:
        """Start (or restart) the kernel."""
        from jupyter_client import KernelManager

        self.stop()
        walls = _walls([self.work, self.runtime], self.hidden) if isolation() == "namespaces" else None

        class WalledKernel(KernelManager):
            def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
                kernel = [sys.executable, "-m", "ipykernel_launcher", "-f", self.connection_file]
                if walls is None:
                    return kernel
                drop = ["setpriv", "--bounding-set", "-all", "--inh-caps", "-all", "--no-new-privs", "--"]
                return ["unshare", "--net", "--mount", "--propagation", "private", "--", "sh", "-c",
                        f"{walls}; exec {shlex.join(drop + kernel)}"]

        _become_subreaper()
        self._before = _children()
        self.km = WalledKernel(transport="ipc", connection_file=str(self.runtime / "kernel.json"))
        env = {key: value for key, value in os.environ.items() if key in {"PATH", "LANG", "LC_ALL", "PYTHONPATH"}}
        env.update(HOME=str(self.work), TMPDIR=str(self.work), MPLBACKEND="Agg", PYTHONDONTWRITEBYTECODE="1",
                   OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        processes_now = _user_processes()
        self.km.start_kernel(cwd=str(self.work), env=env, stderr=open(os.devnull, "w"),  # noqa: SIM115
                             preexec_fn=lambda: _limit(self.limits, processes_now))
        self.kc = self.km.client()
        self.kc.start_channels()
        try:
            self.kc.wait_for_ready(timeout=120)
        except RuntimeError as error:
            raise RuntimeError(f"the grading kernel did not start: {' '.join(str(error).split())}") from None

    def execute(self, code: str, timeout: float, mime: str | None = None, max_output_bytes: int = 10**6) -> Outcome:
        """Run `code`; wait at most `timeout` s. Display payloads of type `mime` come back (up to the budget)."""
        import json

        msg_id = self.kc.execute(code, store_history=False, allow_stdin=False, stop_on_error=False)
        deadline = time.monotonic() + timeout
        error, data, size = None, [], 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return Outcome("timeout", output_bytes=size)
            try:
                msg = self.kc.get_iopub_msg(timeout=min(remaining, 0.5))
            except queue.Empty:
                if not self.km.is_alive():
                    return Outcome("dead", output_bytes=size)
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "status" and content.get("execution_state") == "idle":
                break
            if kind == "error":
                error = " ".join(f"{content.get('ename')}: {content.get('evalue')}".split()).rstrip(":")
            elif kind in {"stream", "display_data", "execute_result", "update_display_data"}:
                size += len(json.dumps(content))
                if mime and mime in content.get("data", {}) and size <= max_output_bytes:
                    data.append(content["data"][mime])
        return Outcome("error" if error else "ok", error, tuple(data), size)

    def stop(self) -> list[int]:
        """Kill the kernel, its process group and every process it left behind; the stray pids killed."""
        if self.km is None:
            return []
        if self.kc is not None:
            self.kc.stop_channels()
        try:
            os.killpg(self.km.provisioner.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError, AttributeError):
            pass
        try:
            self.km.shutdown_kernel(now=True)
        except Exception:  # noqa: BLE001: a kernel that died by itself cannot be shut down again
            pass
        self.km = self.kc = None
        return sweep(self._before)

    def close(self) -> list[int]:
        """Stop the kernel and delete the folder; the stray pids killed."""
        killed = self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
        return killed

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
