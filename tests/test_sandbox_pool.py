"""Launchers started ahead of time (pettingllms/sandbox_pool.py) with real processes: each
is used by one program only, leaves nothing for the next, and none outlives its pool or its
collector."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from pettingllms import sandbox
from pettingllms.sandbox import run_python
from pettingllms.sandbox_pool import WorkerPool


def wait_until(condition, timeout_s: float = 20.0) -> bool:
    """Poll `condition` until it holds; False if it still does not after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def run_with_a_ready_launcher(code: str, **kwargs) -> sandbox.SandboxResult:
    """Run `code` once the pool has a launcher waiting, so that the run takes it."""
    pool = sandbox._launcher_pool()
    if pool.idle_count() == 0:
        run_python("pass")  # the pool starts a launcher for the next run
    assert wait_until(lambda: pool.idle_count() > 0)
    return run_python(textwrap.dedent(code), **kwargs)


def sandbox_children() -> list[int]:
    """Our child processes that are launchers or programs they became, reaped or not."""
    found = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            with open(f"/proc/{name}/stat") as stream:
                parent = int(stream.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{name}/cmdline", "rb") as stream:
                command = stream.read()
            if parent == os.getpid() and (
                sandbox.__file__.encode() in command or sandbox.SCRIPT_NAME.encode() in command
            ):
                found.append(int(name))
    return found


def uid_locks_held() -> list[str]:
    """The uid lock files this process has open: each one keeps a sandbox uid claimed."""
    lock_dir = str(sandbox._uid_lock_dir()) + os.sep
    targets = []
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            targets.append(os.readlink(f"/proc/self/fd/{name}"))
    return [target for target in targets if target.startswith(lock_dir)]


def exit_code_of(child: int) -> int | None:
    """Wait for a forked child; None if it hung (it is killed then)."""
    ended = []

    def has_ended() -> bool:
        pid, status = os.waitpid(child, os.WNOHANG)
        ended.extend([os.waitstatus_to_exitcode(status)] if pid else [])
        return bool(pid)

    if not wait_until(has_ended):
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        return None
    return ended[0]


def is_running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stream:
            return stream.read().rsplit(")", 1)[1].split()[0] not in "ZX"
    except FileNotFoundError:
        return False


def test_a_launcher_used_by_one_program_leaves_nothing_for_the_next():
    first = run_with_a_ready_launcher(
        """
        import os, subprocess, sys
        for folder in (".", "/tmp", "/dev/shm"):
            open(os.path.join(folder, "left_by_first"), "w").write("x")
        os.environ["LEFT_BY_FIRST"] = "1"
        sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
        print(sleeper.pid)
        """
    )
    second = run_with_a_ready_launcher(
        """
        import os, sys
        own_workdir = os.path.basename(os.getcwd())  # its mount point, in its own /tmp
        # An interpreter (or venv) that lives under /tmp is bound back into the private /tmp, read-only.
        interpreter = {path.split("/")[2] for path in (sys.prefix, sys.base_prefix) if path.startswith("/tmp/")}
        for folder in (".", "/tmp", "/dev/shm"):
            print(folder, sorted(set(os.listdir(folder)) - {own_workdir} - interpreter))
        print("env", sorted(os.environ))
        print("processes", [pid for pid in os.listdir("/proc") if pid.isdigit() and int(pid) != os.getpid()])
        """
    )
    assert first.ok and second.ok, (first.stderr, second.stderr)
    assert not is_running(int(first.stdout))
    lines = second.stdout.splitlines()
    assert lines[0] == ". ['main.py']"
    assert "LEFT_BY_FIRST" not in lines[3]
    if second.private_tmp:  # otherwise /tmp is the host's (see the module docstring of sandbox)
        assert lines[1:3] == ["/tmp []", "/dev/shm []"]
        assert lines[4] == "processes []"


@pytest.mark.parametrize(
    "code, expected",
    [
        ("import os\nos._exit(3)", {"returncode": 3, "timed_out": False}),
        ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", {"returncode": -9, "killed_by_signal": 9}),
        ("import os\nfor fd in (0, 1, 2):\n    os.close(fd)\n", {"returncode": 0, "stdout": ""}),
        ("import os, time\nfor fd in (0, 1, 2):\n    os.close(fd)\ntime.sleep(60)", {"timed_out": True}),
        ("while True:\n    pass", {"timed_out": True, "stopped_for": "timeout", "returncode": None}),
    ],
    ids=["exits-at-once", "kills-itself", "closes-its-pipes", "closes-its-pipes-and-hangs", "hangs"],
)
def test_programs_that_end_badly_still_give_a_result(code, expected):
    result = run_with_a_ready_launcher(code, stdin="some input\n", timeout_s=1.0)
    assert {name: getattr(result, name) for name in expected} == expected, result


def test_a_launcher_that_died_while_it_waited_is_replaced(monkeypatch):
    """A launcher killed from outside before its program arrived: the run starts another."""
    pool = sandbox._launcher_pool()
    run_with_a_ready_launcher("pass")
    assert wait_until(lambda: pool.idle_count() > 0)
    for pid in sandbox_children():
        if is_running(pid):
            os.kill(pid, signal.SIGKILL)
    monkeypatch.setattr(sandbox._Launcher, "alive", lambda launcher: True)  # as if it died just after
    result = run_python("print(input())", stdin="still answered\n")
    assert result.ok and result.stdout == "still answered\n", result


@pytest.mark.slow
def test_eight_threads_of_ten_runs_each_are_all_correct_and_closing_leaves_nothing():
    def run_ten(thread: int) -> list[str]:
        return [run_python("print(int(input()) ** 2)", stdin=f"{thread * 10 + n}\n").stdout for n in range(10)]

    with ThreadPoolExecutor(8) as threads:
        outputs = [output for batch in threads.map(run_ten, range(8)) for output in batch]
    assert outputs == [f"{n * n}\n" for n in range(80)]
    sandbox._launcher_pool().close()
    assert sandbox_children() == []
    assert uid_locks_held() == []


def test_closing_the_pool_ends_its_launchers_and_frees_their_uids():
    run_with_a_ready_launcher("pass")
    pool = sandbox._launcher_pool()
    assert wait_until(lambda: pool.idle_count() > 0) and sandbox_children() != []
    pool.close()
    assert pool.idle_count() == 0
    assert sandbox_children() == []
    assert uid_locks_held() == []
    assert run_python("print('open again')").stdout == "open again\n"


def test_the_pool_grows_with_demand_up_to_its_cap_and_ends_launchers_left_idle():
    pool = WorkerPool(sandbox._Launcher.start, max_idle=3, idle_s=1.0)
    before = set(sandbox_children())
    try:
        with contextlib.ExitStack() as leases:  # eight callers at once find (nearly) nothing ready
            for launcher in [leases.enter_context(pool.lease()) for _ in range(8)]:
                if launcher is not None:
                    launcher.discard()
        assert wait_until(lambda: pool.idle_count() == 3)
        assert not wait_until(lambda: pool.idle_count() > 3, timeout_s=0.5)
        with pool.lease() as launcher:
            assert launcher is not None and launcher.alive()
            launcher.discard()  # used up without a program
        assert wait_until(lambda: pool.idle_count() == 0)  # each waited idle_s: none is kept
        assert wait_until(lambda: set(sandbox_children()) <= before)
    finally:
        pool.close()
    assert set(sandbox_children()) <= before


@pytest.mark.slow
def test_a_killed_collector_leaves_no_launcher_behind():
    """Launchers waiting in the pool of a collector killed with SIGKILL die too: PDEATHSIG,
    and the end of the stdin they wait on."""
    collector = textwrap.dedent(
        """
        import os, time
        from concurrent.futures import ThreadPoolExecutor
        from pettingllms import sandbox
        with ThreadPoolExecutor(3) as threads:
            list(threads.map(sandbox.run_python, ["pass"] * 3))
        while sandbox._launcher_pool().idle_count() < 2:
            time.sleep(0.02)
        for name in os.listdir("/proc"):
            if name.isdigit():
                with open(f"/proc/{name}/stat") as stream:
                    if int(stream.read().rsplit(")", 1)[1].split()[1]) == os.getpid():
                        print(name, flush=True)
        print("listed", flush=True)
        time.sleep(60)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", collector], stdout=subprocess.PIPE, text=True)
    try:
        launchers = [int(line) for line in iter(process.stdout.readline, "listed\n")]
    finally:
        process.kill()
        process.wait()
    assert len(launchers) >= 2
    assert wait_until(lambda: not any(is_running(pid) for pid in launchers), timeout_s=5.0)


def test_a_forked_child_keeps_none_of_the_parents_launchers():
    """A fork (a DataLoader worker, multiprocessing) must not hold the parent's uid locks."""
    run_with_a_ready_launcher("pass")
    assert wait_until(lambda: sandbox._launcher_pool().idle_count() > 0)  # its replacement
    child = os.fork()
    if child == 0:
        status = 1
        try:
            clean = uid_locks_held() == [] and sandbox._launcher_pool().idle_count() == 0
            works = run_python("print(7)").stdout == "7\n"
            sandbox._launcher_pool().close()
            status = 0 if clean and works else 2
        finally:
            os._exit(status)
    assert exit_code_of(child) == 0
    assert run_with_a_ready_launcher("print('parent too')").stdout == "parent too\n"
