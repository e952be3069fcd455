"""Run model-written Python in a child process that cannot hurt the collector.

`run_python(code, stdin=..., timeout_s=..., memory_mb=...)` writes `code` to `main.py` in a
fresh working directory, runs it with this interpreter and returns a `SandboxResult`. It is
called from many threads at once (`await asyncio.to_thread(run_python, ...)`) inside a
long-running collector, so every run is independent and always returns: the program may hang,
fork, flood its output or try to kill us, and the call still comes back soon after
`timeout_s`. `SandboxError` is raised only when the sandbox itself cannot be set up.

How a run is set up: a launcher (this file, run as a script) starts in a new session with
nothing of the collector's environment, sets up the part of the isolation below that does not
depend on the program (namespaces, read-only mounts, private /tmp) while it still has the
rights to, and waits on its stdin. The program arrives there (code, working directory,
environment, limits; then the program's own stdin): the launcher mounts the working
directory, takes the run's uid, sets the limits and `execve`s `python -s -P main.py`. The
launcher is a fresh single-threaded process, so none of this runs in a forked copy of the
threaded collector, where `preexec_fn` can deadlock.

Launchers are started ahead of time by a pool (`pettingllms/sandbox_pool.py`) that keeps as
many waiting as programs were recently in flight: a run takes a waiting launcher, so it waits
for one interpreter start, not two, and once it is over the pool starts the next launcher in
the background (about as much CPU as a bare interpreter start). Each launcher serves one
program and is then gone: no process ever serves two programs, so nothing of one reaches the
next. When none is waiting (the first run, a burst), the run starts its own, as before.

What is protected when the collector runs as root (our CI and containers):

- Other processes and users. The program runs under an unprivileged uid of its own (one of
  `_UID_SLOTS` uids from `_UID_BASE`, claimed with an flock so that no two runs share one, even
  across collectors). It cannot signal the collector or other runs, cannot read other
  processes' `/proc/<pid>/environ`, and cannot write or delete root's files (normal permission
  rules). `no_new_privs` is set, so setuid binaries give no privileges back.
- Process count and lifetime. `RLIMIT_NPROC` holds for a non-root uid, so a fork bomb stops at
  `max_processes`. When the run ends (exit, timeout, output flood) its process group is
  killed, then every process of its uid, found in `/proc`, until none is left: programs that
  `setsid()` or double-fork do not outlive the run. If the collector dies, PDEATHSIG kills the
  program and the launchers waiting in the pool; what the program left behind (processes,
  working directory) goes when its uid is next claimed.
- Network: with CAP_SYS_ADMIN the launcher enters a new network namespace with no interface
  up, not even loopback. Without it the program has the host's network, and the result says
  `network_isolated=False`.
- Files: with CAP_SYS_ADMIN the launcher also enters private mount and IPC namespaces. Every
  mount is made read-only there, then the working directory, `/tmp`, `/var/tmp`, `/dev/shm`
  and `/run/lock` become small private tmpfs mounts, the only places the program can write
  (the disk cannot fill up, and nothing persists or is shared between runs; a world-writable
  folder elsewhere, a 1777 `/srv/x` or a 0777 data folder, takes no file). `/proc` hides other
  users' processes, System V IPC objects die with the run, and interpreter directories under
  a directory only root may enter (pyenv in `/root`) are bound back read-only while the rest
  of that directory stays hidden (`private_tmp=True`).
- Kernel surface: the program runs in a user namespace of its own in which it cannot create
  another (`max_user_namespaces=0`, or its uid left unmapped where `/proc/sys` is read-only),
  so it cannot unshare(CLONE_NEWUSER) to get capabilities and, with them, kernel code that
  unprivileged users otherwise cannot reach (netfilter, mounts). Where the launcher cannot
  create one, the program, with the same uid under the same kernel policy, cannot either.
- Resources: CPU seconds (timeout + 1), address space (`memory_mb`, so a memory bomb gets a
  MemoryError), file size (`max_file_mb`), open files, no core dumps. stdout and stderr keep
  at most `max_output_bytes` each; a program that writes far more is killed.
- Secrets: the environment is built from scratch (PATH, LANG, HOME = TMPDIR = the working
  directory, PYTHONHASHSEED=0, one BLAS thread). No variable of the collector reaches it.

What is not protected: this is a process sandbox, not a virtual machine. The program shares
the kernel, and it can read every world-readable file (the repository, the virtualenv).
Without CAP_SYS_ADMIN (no mount namespace) it can write to every world-writable directory:
`/tmp` and `/dev/shm`, but also a 1777 folder such as `/srv/x` or a 0777 data folder, where
it can plant files that outlive the run (each at most `max_file_mb`, in any number); on such
hosts keep data folders out of other users' reach (0755). If the interpreter sits where other
users cannot enter and no mount namespace can expose it, the program runs as root
(`separate_user=False`, logged once as a warning) with no process-count limit, and may create
user namespaces. When the collector is not root, the program runs as the same user: it gets
a user+network namespace if the kernel allows one (its uid unmapped there, so it cannot create
another), `RLIMIT_NPROC` is the user's current task count plus `max_processes`, only the
process group is killed at the end (a program that leaves its group survives), and it can
signal the collector and read its files and `/proc` entries. Killed orphans are reaped by
pid 1, so the collector should run under an init that reaps (docker `--init`); until reaped
they block their uid slot.

The child runs `python -s -P` (no user site-packages, script directory not on `sys.path`):
isolated mode `-I` minus ignoring `PYTHON*` variables, because PYTHONHASHSEED=0 must take
effect and the environment holds nothing we did not set. Site-packages stay importable, so
programs may use numpy and friends.
"""

from __future__ import annotations

# This file is also the launcher (run as a script), which stops at the `__main__` block after
# its own section below: it imports only these. The collector's side, with the heavier imports
# (dataclasses, subprocess, logging...), comes after that block: importing them cost more CPU
# than the rest of a launcher's work.
import contextlib
import errno
import functools
import json
import math
import os
import re
import resource
import signal
import sys

WORKDIR_PREFIX = "pettingllms_sandbox_"
SCRIPT_NAME = "main.py"
_UID_BASE = 1_900_000_000  # far above real users, userns remapping ranges and systemd's
_UID_SLOTS = 1024
_LOCK_DIR_NAME = "pettingllms_uid_locks"  # must not start with WORKDIR_PREFIX
_SHARED_WRITABLE_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
_SHARED_SCRATCH_MB = 8
_CHILD_PATH = "/usr/local/bin:/usr/bin:/bin"
_LAUNCH_FAILED = 125
_POLL_S = 0.05  # how often to look at the program when nothing wakes us up
_DRAIN_S = 0.5  # how long to keep reading once everything is killed
_CHUNK = 64 * 1024
# Fields of /proc/<pid>/status, always in this order; a process name cannot fake one (a newline in it is escaped).
_STATUS_FIELDS = re.compile(
    rb"\nState:\s*(?P<state>\S).*?\nUid:\s*(?P<uid>\d+).*?\nThreads:\s*(?P<threads>\d+)", re.DOTALL
)
_POOL_MAX_IDLE = 16  # launchers kept ready at most: one per program in flight, up to this
_POOL_IDLE_S = 60.0  # a launcher unused this long is ended, and the pool keeps one fewer

# Linux constants (sched.h, mount.h, prctl.h): Python 3.11 has no os.unshare or os.mount.
_CLONE_NEWNS, _CLONE_NEWIPC = 0x00020000, 0x08000000
_CLONE_NEWUSER, _CLONE_NEWNET = 0x10000000, 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE, _PR_SET_NO_NEW_PRIVS = 1, 4, 38
_SYS_MOUNT_SETATTR = 442  # the same on every architecture (Linux 5.12+)
_AT_FDCWD, _AT_RECURSIVE, _MOUNT_ATTR_RDONLY = -100, 0x8000, 1
_RLIMIT_MAX = 2**63 - 1  # the largest limit setrlimit takes from Python: a larger one means none


# ------------------------------------------------------------ the launcher (this file run as a script)


def _launch(config: dict) -> NoReturn:
    """Isolate this fresh process as far as we may, wait for the one program, then become it.

    Everything that does not depend on the program is done before it is known, so that a
    launcher started ahead of time leaves little to do once it arrives.
    """
    status_fd = config["status_fd"]
    os.set_inheritable(status_fd, False)  # closed by exec: the program never sees it
    try:
        report = _isolate_as_root(config) if os.geteuid() == 0 else _isolate_as_user()
        _bind_to_parent(config["parent_pid"])  # a launcher that waits dies with the collector too
        request = _read_request()
        _enter_workdir(request["workdir"], request["code"], report["private_tmp"], config["uid"], request["limits"])
        if report["separate_user"]:
            _become(config["uid"])
            _bind_to_parent(config["parent_pid"])  # the change of uid disarmed PDEATHSIG
            report["uid"] = os.getuid()
        _apply_limits(request["limits"], shares_uid=not report["separate_user"])
        if report["separate_user"]:
            _forbid_user_namespaces(report["uid"])
        os.write(status_fd, (json.dumps(report) + "\n").encode())
        python = config["python"]
        os.execve(python, [python, "-s", "-P", SCRIPT_NAME], request["env"])
    except BaseException as error:  # anything here is reported to the collector
        message = json.dumps({"error": f"{type(error).__name__}: {error}"})
        os.write(status_fd, (message + "\n").encode())
        os._exit(_LAUNCH_FAILED)


def _isolate_as_root(config: dict) -> dict:
    """New network, mount and IPC namespaces if we can; the run's uid is taken later, once
    the working directory is mounted."""
    network_isolated = _unshare(_CLONE_NEWNET)
    private_tmp = _unshare(_CLONE_NEWNS | _CLONE_NEWIPC)
    if private_tmp:
        _mount(None, "/", None, _MS_REC | _MS_PRIVATE)  # our mounts stay ours
        _make_read_only()  # all that is mounted now; the mounts made below are the writable ones
        _expose_interpreter(config["exposed"])
        _cover_shared_directories(config["interpreter_dirs"])
        _hide_other_processes()
    return {
        "network_isolated": network_isolated,
        "private_tmp": private_tmp,
        "separate_user": private_tmp or not config["exposed"],
        "uid": os.getuid(),
    }


def _isolate_as_user() -> dict:
    """Not root: a user namespace is what lets us have an empty network namespace."""
    uid = os.getuid()  # before the user namespace, where it has no mapping
    network_isolated = _unshare(_CLONE_NEWUSER | _CLONE_NEWNET | _CLONE_NEWIPC)
    return {"network_isolated": network_isolated, "private_tmp": False, "separate_user": False, "uid": uid}


def _become(uid: int) -> None:
    """Drop root for good: no groups, and real, effective and saved ids all `uid`."""
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise RuntimeError(f"dropping privileges to uid {uid} did not work")


def _forbid_user_namespaces(uid: int) -> None:
    """Enter a user namespace of our own in which the program cannot create another, so it
    cannot unshare(CLONE_NEWUSER) to get every capability there, and with them kernel code
    that is a common way in (netfilter, mounts of its own).

    Every way out of here forbids it: max_user_namespaces=0 (we hold CAP_SYS_RESOURCE in the
    namespace until execve, the program never does, so it cannot raise it again) with `uid`
    mapped to itself, so ids look the same from inside; or, where /proc/sys is read-only
    (docker), no uid map at all: the kernel refuses a namespace to a process whose uid has no
    mapping (the program then sees itself and root's files as uid 65534). And if we cannot
    create a namespace, the program, with our uid under the same kernel policy, cannot either.
    """
    if not _unshare(_CLONE_NEWUSER):
        return
    try:
        _write("/proc/sys/user/max_user_namespaces", "0")
    except OSError:
        return
    # Since we dropped root we are not dumpable, so /proc/self is root's and its maps closed
    # to us; the program is dumpable anyway once it is exec'd, and dumps no core.
    _check(_libc().prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0), "prctl(DUMPABLE)")
    with contextlib.suppress(OSError):  # left unmapped it is still forbidden, as above
        _write("/proc/self/setgroups", "deny")  # the kernel wants this before an unprivileged gid_map
        _write("/proc/self/uid_map", f"{uid} {uid} 1")
        _write("/proc/self/gid_map", f"{uid} {uid} 1")


def _make_read_only() -> None:
    """Make every mount read-only, so that the program cannot leave files in world-writable
    folders outside its scratch mounts (a 1777 /srv/x, a 0777 data folder). One mount_setattr
    call (Linux 5.12+); older kernels have each mount point remounted."""
    import ctypes

    attributes = (ctypes.c_uint64 * 4)(_MOUNT_ATTR_RDONLY, 0, 0, 0)  # struct mount_attr: set, clear, ...
    size = ctypes.sizeof(attributes)
    result = _libc().syscall(_SYS_MOUNT_SETATTR, _AT_FDCWD, b"/", _AT_RECURSIVE, ctypes.byref(attributes), size)
    if result != 0 and ctypes.get_errno() == errno.ENOSYS:
        _remount_each_read_only()
    else:
        _check(result, "mount_setattr / (read-only)")


def _remount_each_read_only() -> None:
    """What `_make_read_only` does, one mount point at a time. A remount drops the flags it
    does not repeat, so each keeps its nosuid, nodev and noexec (ST_* = MS_* values)."""
    for point in _mount_points():
        try:
            kept = os.statvfs(point).f_flag & (os.ST_NOSUID | os.ST_NODEV | os.ST_NOEXEC)
            _mount(None, point, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | kept)
        except OSError as error:
            if error.errno not in (errno.EINVAL, errno.ENOENT):  # hidden under a later mount
                raise


def _mount_points() -> list[str]:
    """Every mount point of our mount namespace: field 5 of /proc/self/mountinfo, where a
    space and the like are written as octal escapes (\\040)."""
    with open("/proc/self/mountinfo", "rb") as stream:
        fields = [line.split(b" ")[4] for line in stream.read().splitlines()]
    octal = re.compile(rb"\\([0-7]{3})")
    return [os.fsdecode(octal.sub(lambda match: bytes([int(match[1], 8)]), field)) for field in fields]


def _expose_interpreter(exposed: dict[str, list[str]]) -> None:
    """Cover each closed directory (e.g. /root) with an empty tmpfs and bind back, read-only,
    only the interpreter directories under it; the rest stays out of sight."""
    for closed, needed in exposed.items():
        _cover_keeping(closed, needed, "mode=0755,size=1m")


def _cover_keeping(directory: str, keep: list[str], options: str) -> None:
    """Mount a fresh tmpfs over `directory`, then bind the `keep` paths under it back, read-only."""
    handles = [os.open(path, os.O_PATH | os.O_DIRECTORY) for path in keep]
    _mount("tmpfs", directory, "tmpfs", _MS_NOSUID | _MS_NODEV, options)
    for path, handle in zip(keep, handles):
        os.makedirs(path, mode=0o755, exist_ok=True)
        _mount(f"/proc/self/fd/{handle}", path, None, _MS_BIND | _MS_REC)
        _mount(None, path, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)
        os.close(handle)


def _cover_shared_directories(interpreter_dirs: list[str]) -> None:
    """Small private tmpfs mounts over the world-writable directories: the disk cannot fill
    up, and nothing is shared with other runs or left behind. An interpreter that lives
    under one of them (a venv in /tmp) is bound back, read-only."""
    for path in _SHARED_WRITABLE_DIRS:
        if os.path.isdir(path) and not os.path.islink(path):
            keep = [d for d in interpreter_dirs if d.startswith(path + os.sep)]
            _cover_keeping(path, keep, f"mode=1777,size={_SHARED_SCRATCH_MB}m")


def _read_request() -> dict:
    """Wait for the program (see `_program_request`), reading no byte of its stdin."""
    size = int.from_bytes(_read_exactly(8), "big")
    request = json.loads(_read_exactly(size))
    request["code"] = _read_exactly(request.pop("code_bytes"))
    return request


def _read_exactly(count: int) -> bytes:
    parts = []
    while count:
        chunk = os.read(0, min(count, _CHUNK))
        if not chunk:
            os._exit(0)  # the collector closed our stdin (its pool was closed) or died: no program is coming
        parts.append(chunk)
        count -= len(chunk)
    return b"".join(parts)


def _enter_workdir(workdir: str, code: bytes, private_tmp: bool, uid: int | None, limits: dict) -> None:
    """Write the program into its working directory and go there. In a mount namespace the
    directory is a fresh tmpfs of `scratch_mb`, the only one the program gets."""
    if private_tmp:
        os.makedirs(workdir, mode=0o755, exist_ok=True)  # under /tmp it is hidden by our own /tmp
        options = f"mode=0700,uid={uid},gid={uid},size={limits['scratch_mb']}m"
        _mount("tmpfs", workdir, "tmpfs", _MS_NOSUID | _MS_NODEV, options)
    _write(os.path.join(workdir, SCRIPT_NAME), code)
    os.chdir(workdir)


def _write(path: str, data: str | bytes) -> None:
    with open(path, "wb") as stream:
        stream.write(data.encode() if isinstance(data, str) else data)


def _hide_other_processes() -> None:
    """A /proc that shows the program only its own processes (hidepid=2); best effort."""
    with contextlib.suppress(OSError):
        _mount("proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, "hidepid=2")


def _bind_to_parent(parent_pid: int) -> None:
    """No new privileges (setuid binaries), and die with the collector rather than outlive it.

    PDEATHSIG fires when the thread that started us ends: either the caller of run_python,
    which waits until we are gone, or the pool's keeper, which lives until no launcher it
    started is in use (pettingllms/sandbox_pool.py). Neither can end first.
    """
    libc = _libc()
    _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
    _check(libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PDEATHSIG)")
    if os.getppid() != parent_pid:
        os._exit(_LAUNCH_FAILED)  # the collector died before PDEATHSIG was armed


def _apply_limits(limits: dict, *, shares_uid: bool) -> None:
    """Resource limits, set last: lowering a limit needs no privilege."""
    cpu_s = math.ceil(limits["timeout_s"]) + 1
    processes = limits["max_processes"]
    if shares_uid:  # RLIMIT_NPROC counts every task of the uid, the collector's too
        processes += _tasks_of(os.getuid())
    _lower_limit(resource.RLIMIT_CPU, cpu_s, cpu_s + 1)
    _lower_limit(resource.RLIMIT_AS, limits["memory_mb"] << 20)
    _lower_limit(resource.RLIMIT_FSIZE, limits["max_file_mb"] << 20)
    _lower_limit(resource.RLIMIT_NPROC, processes)
    _lower_limit(resource.RLIMIT_NOFILE, 256)
    _lower_limit(resource.RLIMIT_CORE, 0)


def _tasks_of(uid: int) -> int:
    """How many tasks (threads) `uid` runs now."""
    return sum(threads for owner, _, threads in _process_table().values() if owner == uid)


def _lower_limit(which: int, soft: int, hard: int | None = None) -> None:
    """Set a limit, never above the hard limit we already have (raising it needs privilege)."""
    _, current_hard = resource.getrlimit(which)
    ceiling = _RLIMIT_MAX if current_hard == resource.RLIM_INFINITY else current_hard
    hard = soft if hard is None else hard
    resource.setrlimit(which, (min(soft, ceiling), min(hard, ceiling)))


@functools.cache
def _libc():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    text, number = ctypes.c_char_p, ctypes.c_ulong
    libc.mount.argtypes = [text, text, text, number, text]
    libc.unshare.argtypes = [ctypes.c_int]
    libc.prctl.argtypes = [ctypes.c_int, number, number, number, number]
    libc.syscall.argtypes = [ctypes.c_long, ctypes.c_long, text, ctypes.c_long, ctypes.c_void_p, ctypes.c_size_t]
    return libc


def _check(result: int, action: str) -> None:
    if result != 0:
        import ctypes

        number = ctypes.get_errno()
        raise OSError(number, f"{action}: {os.strerror(number)}")


def _unshare(flags: int) -> bool:
    """Enter new namespaces; False if the kernel or our capabilities do not allow it."""
    return _libc().unshare(flags) == 0


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    def encode(text: str | None) -> bytes | None:
        return None if text is None else text.encode()

    result = _libc().mount(encode(source), encode(target), encode(fstype), flags, encode(data))
    _check(result, f"mount {target}")


def _process_table() -> dict[int, tuple[int, str, int]]:
    """pid -> (real uid, state letter, threads) of every process, from /proc."""
    table = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            status = _process_status(int(entry.name))
            if status is not None:
                table[int(entry.name)] = status
    return table


def _process_status(pid: int) -> tuple[int, str, int] | None:
    """(real uid, state letter, threads) of one process, or None if it is gone.

    Raw reads and one regular expression: this runs for every process on the machine after
    every run, while the caller waits (splitting the file into fields cost 5x more).
    """
    try:
        handle = os.open(f"/proc/{pid}/status", os.O_RDONLY)
        try:
            data = os.read(handle, 8192)
        finally:
            os.close(handle)
    except OSError:
        return None
    match = _STATUS_FIELDS.search(data)
    return None if match is None else (int(match["uid"]), match["state"].decode(), int(match["threads"]))


if __name__ == "__main__":
    _launch(json.loads(sys.argv[1]))  # it becomes the program or exits: it never reads what follows


# ------------------------------------------------------------ the collector's side

import dataclasses  # noqa: E402 (see the imports at the top)
import fcntl  # noqa: E402
import logging  # noqa: E402
import selectors  # noqa: E402
import shutil  # noqa: E402
import stat  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING, NoReturn  # noqa: E402

if TYPE_CHECKING:
    from pettingllms.sandbox_pool import WorkerPool

logger = logging.getLogger(__name__)


class SandboxError(RuntimeError):
    """The sandbox could not run the program at all; not the program's fault."""


@dataclasses.dataclass(frozen=True)
class SandboxResult:
    """What happened to one program."""

    returncode: int | None
    """Exit status; minus the signal number if a signal ended it; None if we stopped it."""
    stdout: str
    """The first `max_output_bytes` of stdout, decoded as UTF-8 (bad bytes replaced)."""
    stderr: str
    """The first `max_output_bytes` of stderr."""
    timed_out: bool
    """It was still running at `timeout_s` and was killed."""
    output_truncated: bool = False
    """stdout or stderr was longer than `max_output_bytes` and was cut."""
    stopped_for: str | None = None
    """Why the sandbox killed it: "timeout", "output_limit", or None if it ended by itself."""
    killed_by_signal: int | None = None
    """The signal that ended it, ours (SIGKILL) or another (SIGXCPU, SIGSEGV...)."""
    wall_time_s: float = 0.0
    """From launch to cleanup, interpreter start-up included."""
    network_isolated: bool = False
    """It ran in a network namespace with no interface up."""
    separate_user: bool = False
    """It ran under an unprivileged uid of its own, not the collector's."""
    private_tmp: bool = False
    """It ran in private mount and IPC namespaces: tmpfs working dir and /tmp, hidden /proc."""
    uid: int | None = None
    """The uid it ran as; None if it was stopped before it started."""

    @property
    def ok(self) -> bool:
        """It ran to the end and exited with status 0."""
        return self.returncode == 0 and not self.timed_out


_WHOLE_LIMIT_MINIMUMS = {"memory_mb": 32, "max_output_bytes": 1, "max_file_mb": 1, "max_processes": 1, "scratch_mb": 1}


@dataclasses.dataclass(frozen=True)
class _Limits:
    """The limits of one run, as given to `run_python`."""

    timeout_s: float
    memory_mb: int
    max_output_bytes: int
    max_file_mb: int
    max_processes: int
    scratch_mb: int


def run_python(
    code: str,
    *,
    stdin: str = "",
    timeout_s: float = 5.0,
    memory_mb: int = 512,
    max_output_bytes: int = 64 * 1024,
    max_file_mb: int = 8,
    max_processes: int = 64,
    scratch_mb: int = 64,
) -> SandboxResult:
    """Run `code` as a Python program with `stdin` as its input (see the module docstring).

    `timeout_s` is wall-clock time from launch, start-up included. `max_processes` counts
    threads too, as RLIMIT_NPROC does. `scratch_mb` sizes the private working directory when
    a mount namespace is available. Thread-safe; raises `SandboxError` only when the sandbox
    itself cannot be set up.
    """
    limits = _Limits(timeout_s, memory_mb, max_output_bytes, max_file_mb, max_processes, scratch_mb)
    _check_limits(limits)
    started = time.monotonic()
    program = code.encode("utf-8", "surrogatepass"), stdin.encode("utf-8", "surrogatepass")
    with _launcher_pool().lease() as launcher:
        if launcher is not None:
            with contextlib.suppress(_LauncherLost):  # it died while it waited: start one here
                return launcher.run(*program, limits, started)
    return _Launcher.start().run(*program, limits, started)


def _check_limits(limits: _Limits) -> None:
    """Reject limits that cannot work, naming the argument and what is accepted.

    Checked here, not where they are used: a NaN or infinite limit would otherwise fail deep
    in the launcher (setrlimit, tmpfs options) as a SandboxError that blames the sandbox.
    """
    timeout_s = limits.timeout_s
    if not _is_number(timeout_s, (int, float)) or not 0 < timeout_s < math.inf:
        raise ValueError(f"timeout_s must be a finite number of seconds > 0, got {timeout_s!r}")
    for name, minimum in _WHOLE_LIMIT_MINIMUMS.items():
        value = getattr(limits, name)
        if not _is_number(value, int) or value < minimum:
            why = " (Python needs it to start)" if name == "memory_mb" else ""
            raise ValueError(f"{name} must be a whole number >= {minimum}{why}, got {value!r}")


def _is_number(value: object, kinds: type | tuple[type, ...]) -> bool:
    return isinstance(value, kinds) and not isinstance(value, bool)


_pool: WorkerPool[_Launcher] | None = None
_pool_lock = threading.Lock()


def _launcher_pool() -> WorkerPool[_Launcher]:
    """This process's launchers started ahead of time (made on first use: the launcher script
    itself cannot import the pettingllms package)."""
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                from pettingllms.sandbox_pool import WorkerPool

                _pool = WorkerPool(
                    _Launcher.start, max_idle=_POOL_MAX_IDLE, idle_s=_POOL_IDLE_S, name="sandbox-launchers"
                )
    return _pool


# ------------------------------------------------------------ one run, seen from the collector


class _LauncherLost(SandboxError):
    """The launcher ended before its program started, killed from outside (not by a failed
    isolation step, which it reports): a fresh one may do."""


class _Launcher:
    """A launcher process, isolated and waiting on its stdin for the one program it becomes.

    It holds a claimed uid from `start` to the end of its run (or `discard`). Started ahead of
    time by the pool's keeper thread, or by `run_python` itself when none is ready.
    """

    def __init__(self, proc: subprocess.Popen, uid: int | None, uid_lock: int | None, status_read: int):
        self.proc = proc
        self.uid = uid
        self._uid_lock = uid_lock
        self._status_read = status_read

    @classmethod
    def start(cls) -> _Launcher:
        """Claim a uid and start a launcher for it; it isolates itself while we go on."""
        uid, uid_lock = _claim_uid()
        status_read = status_write = None
        try:
            status_read, status_write = os.pipe()
            proc = _start_launcher(_launcher_config(uid, status_write), status_write)
        except OSError as error:
            _close_all(status_read, uid_lock)
            raise SandboxError(f"could not start the sandbox launcher: {error}") from error
        finally:
            _close_all(status_write)
        return cls(proc, uid, uid_lock, status_read)

    def run(self, code: bytes, stdin_data: bytes, limits: _Limits, started: float) -> SandboxResult:
        """Send the program, watch it to the end, and describe what happened."""
        try:
            with _temporary_workdir(self.uid) as workdir:
                try:
                    request = _program_request(workdir, code, limits)
                    deadline = started + limits.timeout_s
                    outcome = _supervise(self.proc, self.uid, request + stdin_data, deadline, limits)
                    status_read, self._status_read = self._status_read, None
                    report = _read_status(status_read, self.proc, outcome)
                except BaseException:
                    _stop_everything(self.proc, self.uid)  # e.g. KeyboardInterrupt: nothing may outlive the call
                    raise
                return _describe(self.proc, report, outcome, time.monotonic() - started)
        finally:
            self._close()

    def alive(self) -> bool:
        return not _has_exited(self.proc.pid)

    def discard(self) -> None:
        """End it unused (the pool had too many, or is closing)."""
        _stop_everything(self.proc, self.uid)
        self._close()

    def forget(self) -> None:
        """In a forked child: close our copies of its pipes and of its uid lock. The pipes'
        raw files only: a buffered file's lock may be held by a thread the fork left behind."""
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            stream.raw.close()
        _close_all(self._status_read, self._uid_lock)
        self._status_read = self._uid_lock = None

    def _close(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            stream.close()
        _close_all(self._status_read, self._uid_lock)  # closing the lock frees the uid
        self._status_read = self._uid_lock = None


def _close_all(*handles: int | None) -> None:
    for handle in handles:
        if handle is not None:
            os.close(handle)


def _launcher_config(uid: int | None, status_fd: int) -> dict:
    """What the launcher needs before it knows its program, as JSON-able values."""
    return {
        "python": sys.executable,
        "uid": uid,
        "status_fd": status_fd,
        "parent_pid": os.getpid(),
        "exposed": _interpreter_exposures() if uid is not None else {},
        "interpreter_dirs": _interpreter_dirs(),
    }


def _program_request(workdir: Path, code: bytes, limits: _Limits) -> bytes:
    """What the launcher reads from its stdin before it becomes the program: a JSON header
    (its size first, 8 bytes), then the code. The program's stdin follows."""
    header = {
        "workdir": str(workdir),
        "env": _child_environment(workdir),
        "limits": dataclasses.asdict(limits),
        "code_bytes": len(code),
    }
    encoded = json.dumps(header).encode()
    return len(encoded).to_bytes(8, "big") + encoded + code


def _child_environment(workdir: Path) -> dict[str, str]:
    """A minimal environment made from scratch, so no secret of the collector leaks."""
    return {
        "PATH": _CHILD_PATH,
        "LANG": "C.UTF-8",
        "HOME": str(workdir),
        "TMPDIR": str(workdir),
        "PYTHONHASHSEED": "0",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": "1",  # BLAS thread pools eat RLIMIT_NPROC and address space
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _start_launcher(config: dict, status_write: int) -> subprocess.Popen:
    """Start this file as a script in a new session, with nothing of our environment."""
    return subprocess.Popen(
        [sys.executable, "-I", "-S", os.path.abspath(__file__), json.dumps(config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd="/",
        env={"PATH": _CHILD_PATH, "LANG": "C.UTF-8"},
        start_new_session=True,
        pass_fds=(status_write,),
    )


@dataclasses.dataclass
class _Outcome:
    """How a run ended, seen from outside."""

    stopped_for: str | None  # "timeout", "output_limit" or None
    exited_by_itself: bool
    io: _ProcessIO


def _supervise(
    proc: subprocess.Popen, uid: int | None, stdin_data: bytes, deadline: float, limits: _Limits
) -> _Outcome:
    """Feed and read the program until it ends or breaks a limit, then kill all that is left.

    Killing what the program left in the background also closes the pipes those processes
    inherited, so what is still in the pipes can be read to the end.
    """
    io = _ProcessIO(proc, stdin_data, limits.max_output_bytes)
    try:
        stopped_for = _pump_until_done(proc, io, deadline)
        exited_by_itself = _has_exited(proc.pid)
        _stop_everything(proc, uid)
        io.drain(time.monotonic() + _DRAIN_S)
    finally:
        io.close()
    return _Outcome(None if exited_by_itself else stopped_for, exited_by_itself, io)


def _pump_until_done(proc: subprocess.Popen, io: _ProcessIO, deadline: float) -> str | None:
    """Move bytes until the program exits; say why if we must stop it first."""
    while not _has_exited(proc.pid):
        now = time.monotonic()
        if now >= deadline:
            return "timeout"
        if io.flooded:
            return "output_limit"
        io.pump(min(_POLL_S, deadline - now))
    return None


def _has_exited(pid: int) -> bool:
    """Whether the launched process has ended, without reaping it.

    While it is an unreaped zombie, its pid, which is also its process group id, cannot be
    reused, so killing the group stays safe.
    """
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _stop_everything(proc: subprocess.Popen, uid: int | None) -> None:
    """Kill the program, its process group and every process of its uid, then reap it.

    The group is killed only while the program is not reaped (see `_has_exited`). The uid
    sweep comes before `wait`, which could otherwise wait on a program blocked on a pipe.
    """
    if proc.returncode is None:
        _kill_group(proc.pid)
    if uid is not None:
        _kill_processes_of(uid)
    proc.wait()


def _kill_group(pgid: int) -> None:
    """SIGKILL a process group; nothing happens if it is already gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _read_status(status_read: int, proc: subprocess.Popen, outcome: _Outcome) -> dict:
    """What the launcher reported: the isolation it got, or why it failed."""
    with os.fdopen(status_read, "rb") as stream:
        lines = stream.read().decode("utf-8", "replace").splitlines()
    report: dict = {}
    for line in lines:
        report.update(json.loads(line))
    if "error" in report:
        raise SandboxError(f"the sandbox launcher failed: {report['error']}")
    if not report and outcome.stopped_for != "timeout":
        stderr = outcome.io.text("stderr")[-2000:]
        error = _LauncherLost if proc.returncode < 0 else SandboxError  # killed, or failed by itself
        raise error(f"the sandbox launcher exited with {proc.returncode} before the program started: {stderr}")
    if report and os.geteuid() == 0 and not report["separate_user"]:
        _warn_once(
            "sandboxed programs run as root: the interpreter is out of other users' reach "
            "and no mount namespace can expose it (see pettingllms/sandbox.py)"
        )
    return report


def _describe(proc: subprocess.Popen, report: dict, outcome: _Outcome, wall_time_s: float) -> SandboxResult:
    """Build the result; a program that exited by itself keeps its own status."""
    stopped_for = outcome.stopped_for
    return SandboxResult(
        returncode=proc.returncode if stopped_for is None else None,
        stdout=outcome.io.text("stdout"),
        stderr=outcome.io.text("stderr"),
        timed_out=stopped_for == "timeout",
        output_truncated=outcome.io.truncated,
        stopped_for=stopped_for,
        killed_by_signal=-proc.returncode if proc.returncode < 0 else None,
        wall_time_s=wall_time_s,
        network_isolated=report.get("network_isolated", False),
        separate_user=report.get("separate_user", False),
        private_tmp=report.get("private_tmp", False),
        uid=report.get("uid"),
    )


_warned: set[str] = set()
_warned_lock = threading.Lock()


def _warn_once(message: str) -> None:
    """Log a warning the first time only: a collector runs thousands of programs."""
    with _warned_lock:
        if message in _warned:
            return
        _warned.add(message)
    logger.warning(message)


# ------------------------------------------------------------ moving bytes without blocking


@dataclasses.dataclass
class _Capture:
    """The first `limit` bytes of one output stream, and how many arrived in all."""

    limit: int
    kept: bytearray = dataclasses.field(default_factory=bytearray)
    total: int = 0

    def add(self, chunk: bytes) -> None:
        room = self.limit - len(self.kept)
        if room > 0:
            self.kept += chunk[:room]
        self.total += len(chunk)


class _ProcessIO:
    """Writes the program's stdin and reads its stdout and stderr, never blocking on either.

    One selector per run, driven by the calling thread, so concurrent runs share nothing.
    Output beyond the cap is read and dropped (the program must not block on a full pipe);
    `flooded` says when there is so much that the program should be killed.
    """

    def __init__(self, proc: subprocess.Popen, stdin_data: bytes, max_output_bytes: int):
        self._proc = proc
        self._selector = selectors.DefaultSelector()
        self._pending = memoryview(stdin_data)
        self._flood_bytes = max(16 * max_output_bytes, 1 << 20)
        self.captures = {"stdout": _Capture(max_output_bytes), "stderr": _Capture(max_output_bytes)}
        for name, capture in self.captures.items():
            self._watch(getattr(proc, name), selectors.EVENT_READ, capture)
        if stdin_data:
            self._watch(proc.stdin, selectors.EVENT_WRITE, "stdin")
        else:
            proc.stdin.close()
        self._watch_exit(proc.pid)

    def _watch(self, stream, events: int, data: object) -> None:
        os.set_blocking(stream.fileno(), False)
        self._selector.register(stream, events, data)

    def _watch_exit(self, pid: int) -> None:
        """Wake up as soon as the program exits (a pidfd), not at the next poll."""
        with contextlib.suppress(AttributeError, OSError):  # old kernel: _POLL_S notices
            self._selector.register(os.pidfd_open(pid), selectors.EVENT_READ, "exit")

    @property
    def outputs_open(self) -> bool:
        return any(isinstance(key.data, _Capture) for key in self._selector.get_map().values())

    @property
    def flooded(self) -> bool:
        return any(capture.total > self._flood_bytes for capture in self.captures.values())

    @property
    def truncated(self) -> bool:
        return any(capture.total > len(capture.kept) for capture in self.captures.values())

    def text(self, name: str) -> str:
        return self.captures[name].kept.decode("utf-8", "replace")

    def pump(self, timeout: float) -> None:
        """Wait up to `timeout` for one round of events and handle them."""
        for key, _ in self._selector.select(max(timeout, 0)):
            if isinstance(key.data, _Capture):
                self._read(key)
            elif key.data == "stdin":
                self._write(key)
            else:
                self._forget(key)  # the exit pidfd stays readable: one wake-up is enough

    def drain(self, deadline: float) -> None:
        """Read what is left in the pipes once the program is gone."""
        while self.outputs_open and not self.flooded and time.monotonic() < deadline:
            self.pump(deadline - time.monotonic())

    def _read(self, key: selectors.SelectorKey) -> None:
        try:
            chunk = os.read(key.fd, _CHUNK)
        except BlockingIOError:
            return
        if chunk:
            key.data.add(chunk)
        else:
            self._forget(key)

    def _write(self, key: selectors.SelectorKey) -> None:
        try:
            written = os.write(key.fd, self._pending[:_CHUNK])
        except BlockingIOError:
            return
        except OSError:  # it closed stdin or exited: the rest is not wanted
            written = len(self._pending)
        self._pending = self._pending[written:]
        if not self._pending:
            self._forget(key)

    def _forget(self, key: selectors.SelectorKey) -> None:
        self._selector.unregister(key.fileobj)
        if isinstance(key.fileobj, int):
            os.close(key.fileobj)
        else:
            key.fileobj.close()

    def close(self) -> None:
        for key in list(self._selector.get_map().values()):
            self._forget(key)
        self._selector.close()
        for stream in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
            stream.close()


# ------------------------------------------------------------ uids, working dirs, /proc


def _claim_uid() -> tuple[int | None, int | None]:
    """Claim an unprivileged uid for one run: (uid, the handle whose closing frees it), or
    (None, None) when we are not root and cannot switch.

    The claim is an flock on a file per uid, so it holds across threads and across
    collectors on one machine, and it is released if the collector dies.
    """
    if os.geteuid() != 0:
        return None, None
    lock_dir = _uid_lock_dir()
    for uid in range(_UID_BASE, _UID_BASE + _UID_SLOTS):
        handle = _try_lock(lock_dir / f"{uid - _UID_BASE}.lock")
        if handle is None:
            continue
        if _pids_of(uid, with_zombies=True):  # left by a collector that died, or unreaped
            _kill_processes_of(uid)  # zombies count against RLIMIT_NPROC: take another uid
            os.close(handle)
            continue
        _remove_stale_workdirs(uid)
        return uid, handle
    raise SandboxError(f"all {_UID_SLOTS} sandbox uids are in use; run fewer programs at once")


def _remove_stale_workdirs(uid: int) -> None:
    """Remove working directories of `uid` left by a collector that was killed mid-run.

    A directory belongs to a uid only while that uid is claimed, and we hold the claim now.
    """
    for entry in os.scandir(tempfile.gettempdir()):
        if entry.name.startswith(WORKDIR_PREFIX) and entry.is_dir(follow_symlinks=False):
            with contextlib.suppress(OSError):
                if entry.stat(follow_symlinks=False).st_uid == uid:
                    _remove_workdir(Path(entry.path))


def _uid_lock_dir() -> Path:
    """A directory only root can write, for the uid lock files."""
    for base in ("/run", tempfile.gettempdir()):
        path = Path(base) / _LOCK_DIR_NAME
        try:
            path.mkdir(mode=0o700, exist_ok=True)
            info = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISDIR(info.st_mode) and info.st_uid == 0 and not info.st_mode & 0o022:
            return path
    raise SandboxError(f"no safe place for {_LOCK_DIR_NAME}: /run and the temp dir are unusable")


def _try_lock(path: Path) -> int | None:
    """Open and exclusively flock `path`; None if another run holds it."""
    handle = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(handle)
        return None
    return handle


@contextlib.contextmanager
def _temporary_workdir(uid: int | None) -> Iterator[Path]:
    """A fresh directory owned by the run's uid, removed afterwards whatever happens."""
    path = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
    try:
        if uid is not None:
            os.chown(path, uid, uid)
        yield path
    finally:
        _remove_workdir(path)


def _remove_workdir(path: Path) -> None:
    """Remove a working directory, even one whose program took away our write rights.

    That can only happen when we are not root (root ignores permissions), so only then are
    the rights given back, never through symlinks the program may have planted.
    """
    shutil.rmtree(path, ignore_errors=True)
    if path.exists() and os.geteuid() != 0:
        _open_up(path)
        shutil.rmtree(path, ignore_errors=True)
    if path.exists():
        logger.warning("could not remove sandbox directory %s", path)


def _open_up(path: Path) -> None:
    """chmod 700 `path` and every real directory below it, each before walking into it."""
    with contextlib.suppress(OSError):
        os.chmod(path, 0o700)
    for directory, subdirectories, _ in os.walk(path):
        for name in subdirectories:
            child = os.path.join(directory, name)
            if not os.path.islink(child):
                with contextlib.suppress(OSError):
                    os.chmod(child, 0o700)


def _kill_processes_of(uid: int) -> None:
    """SIGKILL every process running as `uid`, again until none is left.

    This finds what left the process group (setsid, double fork). Each process is pinned by
    a pidfd before its uid is checked again, so a reused pid is never hit.
    """
    for _ in range(100):
        pids = _pids_of(uid)
        if not pids:
            return
        for pid in pids:
            _kill_if_owned_by(pid, uid)
        time.sleep(0.002)  # let SIGKILL land before looking again
    logger.warning("processes of sandbox uid %d kept appearing", uid)


def _pids_of(uid: int, *, with_zombies: bool = False) -> list[int]:
    """Processes whose real uid is `uid`; zombies (dead, not yet reaped) on request."""
    return [
        pid
        for pid, (owner, state, _) in _process_table().items()
        if owner == uid and (with_zombies or state not in "ZX")
    ]


def _kill_if_owned_by(pid: int, uid: int) -> None:
    try:
        handle = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except OSError:  # kernel before 5.3 has no pidfds; reuse within microseconds is unlikely
        with contextlib.suppress(OSError, TypeError):
            if _process_status(pid)[0] == uid:
                os.kill(pid, signal.SIGKILL)
        return
    try:
        if _process_status(pid)[0] == uid:
            signal.pidfd_send_signal(handle, signal.SIGKILL)
    except (OSError, TypeError):
        pass  # it ended meanwhile
    finally:
        os.close(handle)


@functools.cache
def _interpreter_dirs() -> list[str]:
    """The outermost directories the program's interpreter needs (the venv and its base)."""
    places = (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)
    needed = {os.path.realpath(path) for path in places} | {os.path.abspath(path) for path in places}
    needed.add(os.path.dirname(os.path.realpath(sys.executable)))
    needed.add(os.path.dirname(os.path.abspath(sys.executable)))
    return sorted(path for path in needed if not any(path.startswith(top + os.sep) for top in needed))


@functools.cache
def _interpreter_exposures() -> dict[str, list[str]]:
    """Interpreter directories that other users cannot reach, grouped by the outermost
    directory that shuts them out, e.g. {"/root": ["/root/.pyenv/versions/3.11.7"]}."""
    exposures: dict[str, list[str]] = {}
    for path in _interpreter_dirs():
        closed = _first_closed_directory(path)
        if closed is not None and closed != path:
            exposures.setdefault(closed, []).append(path)
    return exposures


def _first_closed_directory(path: str) -> str | None:
    """The first directory on the way to `path` that others may not enter (no o+x)."""
    current = "/"
    for part in Path(path).parts[1:]:
        current = os.path.join(current, part)
        try:
            if not os.stat(current).st_mode & stat.S_IXOTH:
                return current
        except OSError:
            return None
    return None
