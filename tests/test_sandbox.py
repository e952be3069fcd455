"""The sandbox against real hostile programs: each test runs one through `run_python`.

Tests that take the `separate_user` fixture check protections that exist only when programs
run under a uid of their own (the collector is root); elsewhere they are skipped, as the
module docstring of pettingllms.sandbox explains.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pettingllms import sandbox
from pettingllms.sandbox import SandboxResult, run_python


@pytest.fixture(scope="module")
def isolation() -> SandboxResult:
    """What this machine allows: one harmless run tells."""
    return run_python("pass")


@pytest.fixture
def separate_user(isolation: SandboxResult) -> None:
    if not isolation.separate_user:
        pytest.skip("programs run as the collector's own user here (not root, or no way to switch)")


@pytest.fixture
def mount_namespace(isolation: SandboxResult) -> None:
    if not isolation.private_tmp:
        pytest.skip("no mount namespace here (needs root with CAP_SYS_ADMIN): see the module docstring")


def run(code: str, **kwargs) -> SandboxResult:
    return run_python(textwrap.dedent(code), **kwargs)


def is_running(pid: int) -> bool:
    """Alive and not a zombie (a killed orphan waits for pid 1 to reap it)."""
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as stream:
            return stream.read().rsplit(")", 1)[1].split()[0] not in "ZX"
    except (ProcessLookupError, FileNotFoundError):
        return False


def seconds_since_boot() -> float:
    with open("/proc/uptime") as stream:
        return float(stream.read().split()[0])


def running_processes_of(uid: int, started_before_s: float) -> list[int]:
    """Running processes of `uid` started before a moment (seconds since boot): once a run is
    over, its uid may already serve another run, of this or another collector."""
    found = []
    for pid, (owner, state, _) in sandbox._process_table().items():
        if owner == uid and state not in "ZX":
            with contextlib.suppress(OSError, IndexError):
                with open(f"/proc/{pid}/stat") as stream:
                    ticks = int(stream.read().rsplit(")", 1)[1].split()[19])
                if ticks / os.sysconf("SC_CLK_TCK") < started_before_s:
                    found.append(pid)
    return found


def test_runs_a_program_with_its_input():
    result = run(
        """
        import sys
        numbers = [int(line) for line in sys.stdin]
        print("sum", sum(numbers))
        print("to stderr", file=sys.stderr)
        """,
        stdin="1\n2\n39\n",
    )
    assert result.ok and result.returncode == 0
    assert result.stdout == "sum 42\n"
    assert result.stderr == "to stderr\n"
    assert not result.timed_out and not result.output_truncated and result.stopped_for is None


def test_exit_status_and_exceptions_are_reported():
    assert run("import sys; sys.exit(3)").returncode == 3
    result = run("raise ValueError('bad input')")
    assert result.returncode == 1 and not result.ok
    assert "ValueError: bad input" in result.stderr


def test_syntax_error_fails_with_the_error_on_stderr():
    result = run("def broken(:\n    pass\n")
    assert result.returncode not in (0, None)
    assert "SyntaxError" in result.stderr
    assert not result.timed_out


def test_infinite_loop_is_killed_at_the_timeout():
    result = run("while True:\n    pass\n", timeout_s=1.0)
    assert result.timed_out and result.stopped_for == "timeout"
    assert result.returncode is None and not result.ok
    assert result.killed_by_signal == 9
    assert 1.0 <= result.wall_time_s < 3.0


def test_sleeper_that_ignores_sigterm_and_sigint_is_killed_and_keeps_its_output():
    result = run(
        """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("ready", flush=True)
        time.sleep(60)
        """,
        timeout_s=1.0,
    )
    assert result.timed_out
    assert result.stdout == "ready\n"
    assert result.wall_time_s < 3.0


def test_background_children_do_not_outlive_the_run(separate_user):
    """A new-session child and a double-forked setsid grandchild both leave the process group."""
    result = run(
        """
        import os, subprocess, sys
        sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
        child = subprocess.Popen(sleeper, start_new_session=True)
        print(child.pid, flush=True)
        middle = os.fork()
        if middle == 0:
            os.setsid()
            grandchild = os.fork()
            if grandchild == 0:
                import time
                time.sleep(60)
            print(grandchild, flush=True)
            os._exit(0)
        os.waitpid(middle, 0)
        """
    )
    assert result.ok, result.stderr
    pids = [int(line) for line in result.stdout.split()]
    assert len(pids) == 2
    assert result.wall_time_s < 3.0  # did not wait for the sleepers' open pipes
    assert [pid for pid in pids if is_running(pid)] == []  # killed before run_python returned


@pytest.mark.slow
def test_program_dies_with_a_killed_collector():
    """PDEATHSIG: a collector killed mid-run (SIGKILL, no cleanup) takes its program along."""
    collector = textwrap.dedent(
        """
        import os, threading, time
        from pettingllms.sandbox import run_python
        threading.Thread(target=run_python, args=("import time; time.sleep(60)",),
                         kwargs={"timeout_s": 60}, daemon=True).start()
        time.sleep(1.0)
        for name in os.listdir("/proc"):
            if name.isdigit():
                with open(f"/proc/{name}/stat") as stream:
                    if int(stream.read().rsplit(")", 1)[1].split()[1]) == os.getpid():
                        print(name, flush=True)
        time.sleep(60)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", collector], stdout=subprocess.PIPE, text=True)
    try:
        program_pid = int(process.stdout.readline())
    finally:
        process.kill()
        process.wait()
    deadline = time.monotonic() + 2.0
    while is_running(program_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not is_running(program_pid)


@pytest.mark.slow
def test_fork_bomb_is_contained_and_other_runs_go_on():
    bomb = textwrap.dedent(
        """
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
        """
    )
    with ThreadPoolExecutor(1) as pool:
        exploding = pool.submit(run_python, bomb, timeout_s=2.0)
        time.sleep(0.5)
        neighbour = run("print('still here')", timeout_s=20.0)
        bombed = exploding.result(timeout=30)
        returned_at = seconds_since_boot()
    assert neighbour.ok and neighbour.stdout == "still here\n"
    assert bombed.timed_out and bombed.wall_time_s < 8.0
    if bombed.separate_user:
        assert running_processes_of(bombed.uid, started_before_s=returned_at) == []
    assert run("print('after')").stdout == "after\n"  # the collector can still start processes


def test_memory_bomb_gets_a_memory_error_promptly():
    hoarder = "hoard = []\nwhile True:\n    hoard.append(bytearray(10**7))\n"
    result = run(hoarder, memory_mb=256, timeout_s=10.0)
    assert result.returncode not in (0, None)
    assert "MemoryError" in result.stderr
    assert result.wall_time_s < 5.0


def test_gigabyte_of_output_is_truncated_and_stopped():
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = run(
        """
        import sys
        chunk = "x" * (1 << 20)
        for _ in range(1024):
            sys.stdout.write(chunk)
        """,
        timeout_s=20.0,
    )
    peak_growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert result.output_truncated and result.stopped_for == "output_limit"
    assert result.stdout == "x" * (64 * 1024)
    assert result.wall_time_s < 5.0
    assert peak_growth_mb < 100


def test_output_cap_is_configurable_and_a_short_run_keeps_its_status():
    result = run("print('y' * 5000)", max_output_bytes=1000)
    assert result.ok and result.output_truncated and result.stopped_for is None
    assert result.stdout == "y" * 1000


def _visible_parent() -> Path:
    for candidate in (Path(__file__).resolve().parent, Path("/var/lib"), Path("/opt"), Path("/srv")):
        hidden = any(str(candidate).startswith(shared + os.sep) for shared in sandbox._SHARED_WRITABLE_DIRS)
        if (
            candidate.is_dir()
            and os.access(candidate, os.W_OK)
            and not hidden
            and sandbox._first_closed_directory(str(candidate)) is None
        ):
            return candidate
    pytest.skip("no directory both visible to the sandboxed program and writable by the test")


@pytest.fixture
def victim_dir():
    """A root-owned 0755 directory with a 0644 file, somewhere the program can see: the
    repository, unless it lies under /tmp (a private tmpfs in the sandbox, as for a CI clone
    in /tmp) or a directory others cannot enter; then a system folder such as /var/lib."""
    path = Path(tempfile.mkdtemp(prefix=".sandbox_victim_", dir=_visible_parent()))
    try:
        path.chmod(0o755)
        (path / "victim.txt").write_text("precious")
        (path / "victim.txt").chmod(0o644)
        yield path
    finally:
        for child in path.iterdir():
            child.unlink()
        path.rmdir()


def test_cannot_write_or_delete_files_outside_its_directory(separate_user, victim_dir):
    result = run(
        f"""
        import errno, os
        victim = {str(victim_dir / "victim.txt")!r}
        print("visible", os.path.exists(victim))
        attempts = {{
            "create": lambda: open({str(victim_dir / "new.txt")!r}, "w").write("x"),
            "append": lambda: open(victim, "a").write("x"),
            "delete": lambda: os.remove(victim),
            "rename": lambda: os.rename(victim, victim + ".moved"),
            "chmod": lambda: os.chmod(victim, 0o777),
        }}
        for name, attempt in attempts.items():
            try:
                attempt()
                print(name, "DONE")
            except OSError as error:
                print(name, errno.errorcode[error.errno])
        """
    )
    assert result.separate_user
    lines = result.stdout.splitlines()
    assert lines[0] == "visible True"
    refusals = {"EACCES", "EPERM", "EROFS"}  # not its file; read-only when there is a mount namespace
    assert [line.split()[0] for line in lines[1:]] == ["create", "append", "delete", "rename", "chmod"]
    assert all(line.split()[1] in refusals for line in lines[1:]), lines
    assert sorted(path.name for path in victim_dir.iterdir()) == ["victim.txt"]
    assert (victim_dir / "victim.txt").read_text() == "precious"


@pytest.fixture
def world_writable_dirs():
    """A sticky 1777 folder and a 0777 data folder holding a 0666 log, both visible to the
    program and outside its private tmpfs mounts (see `victim_dir` for where)."""
    parent = Path(tempfile.mkdtemp(prefix=".sandbox_open_", dir=_visible_parent()))
    try:
        parent.chmod(0o755)
        sticky, data = parent / "sticky", parent / "data"
        sticky.mkdir()
        sticky.chmod(0o1777)
        data.mkdir()
        data.chmod(0o777)
        (data / "rollouts.jsonl").write_text("{}\n")
        (data / "rollouts.jsonl").chmod(0o666)
        yield sticky, data
    finally:
        shutil.rmtree(parent)


def try_writing(attempts: list[tuple[str, str]]) -> SandboxResult:
    """Run a program that appends a line to each (name, path) of `attempts` (makes a folder
    when the name ends in "mkdir") and prints the name with DONE or the error's errno name."""
    program = """
import errno, os
for name, path in ATTEMPTS:
    try:
        if name.endswith("mkdir"):
            os.mkdir(path)
        else:
            with open(path, "a") as stream:
                stream.write("{}\\n")
        print(name, "DONE")
    except OSError as error:
        print(name, errno.errorcode[error.errno])
"""
    return run_python(f"ATTEMPTS = {attempts!r}\n{program}")


def test_cannot_plant_files_in_world_writable_directories(mount_namespace, world_writable_dirs):
    """Regression: a 1777 folder outside /tmp, or a 0777 data folder, took files that outlived
    the run (a planted `rollouts_planted.jsonl`). Everything is read-only but the scratch mounts."""
    sticky, data = world_writable_dirs
    attempts = [
        ("sticky", str(sticky / "planted.txt")),
        ("sticky mkdir", str(sticky / "planted")),
        ("data", str(data / "rollouts_planted.jsonl")),
        ("append", str(data / "rollouts.jsonl")),
    ]
    result = try_writing(attempts)
    assert result.ok, result.stderr
    assert result.stdout.splitlines() == [f"{name} EROFS" for name, _ in attempts]
    assert list(sticky.iterdir()) == []
    assert sorted(path.name for path in data.iterdir()) == ["rollouts.jsonl"]
    assert (data / "rollouts.jsonl").read_text() == "{}\n"


def test_kernels_without_mount_setattr_get_each_mount_remounted_read_only(mount_namespace, world_writable_dirs):
    """The fallback of `_make_read_only` for Linux before 5.12, run as root in a mount
    namespace of its own: read-only everywhere, a mount's nosuid/nodev/noexec kept, and a
    mount point with a space in its name (octal-escaped in /proc/self/mountinfo) found."""
    sticky, data = world_writable_dirs
    probe = f"""
import errno, os, runpy
sandbox = runpy.run_path({sandbox.__file__!r})
assert sandbox["_unshare"](sandbox["_CLONE_NEWNS"])
sandbox["_mount"](None, "/", None, sandbox["_MS_REC"] | sandbox["_MS_PRIVATE"])
spaced = {str(sticky / "a mount point")!r}
os.mkdir(spaced)
sandbox["_mount"]("tmpfs", spaced, "tmpfs", os.ST_NOSUID | os.ST_NODEV | os.ST_NOEXEC, "size=1m")
sandbox["_remount_each_read_only"]()
print(all(os.statvfs(point).f_flag & os.ST_RDONLY for point in sandbox["_mount_points"]() if os.path.isdir(point)))
print(os.statvfs(spaced).f_flag & 15 == os.ST_RDONLY | os.ST_NOSUID | os.ST_NODEV | os.ST_NOEXEC)
for path in (spaced + "/file", {str(data / "rollouts_planted.jsonl")!r}):
    try:
        open(path, "w")
        print("DONE")
    except OSError as error:
        print(errno.errorcode[error.errno])
"""
    out = subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True, text=True, timeout=30)
    assert out.stdout.split() == ["True", "True", "EROFS", "EROFS"], out.stderr
    assert sorted(path.name for path in data.iterdir()) == ["rollouts.jsonl"]


def test_scratch_mounts_stay_writable(mount_namespace):
    """The other side of the read-only filesystem: its own folders still take files."""
    attempts = [(name, f"{name}/file") for name in (".", *sandbox._SHARED_WRITABLE_DIRS) if os.path.isdir(name)]
    attempts.append(("/dev/null", "/dev/null"))
    result = try_writing(attempts)
    assert result.ok, result.stderr
    assert result.stdout.splitlines() == [f"{name} DONE" for name, _ in attempts]


def test_cannot_create_user_namespaces(separate_user):
    """Regression: a program could unshare(CLONE_NEWUSER) and get every capability inside
    (more kernel to attack: netfilter, mounts). It may not, nor raise its own limit."""
    result = run(
        """
        import ctypes, errno, os
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(0x10000000) == 0:  # CLONE_NEWUSER
            print("unshare DONE")
        else:
            print("unshare", errno.errorcode[ctypes.get_errno()])
        try:
            with open("/proc/sys/user/max_user_namespaces", "w") as stream:
                stream.write("100")
            print("raise limit DONE")
        except OSError as error:
            print("raise limit", errno.errorcode[error.errno])
        if os.fork() == 0:  # a child is no different
            print("child", "DONE" if libc.unshare(0x10000000) == 0 else "refused", flush=True)
            os._exit(0)
        os.wait()
        """
    )
    assert result.ok, result.stderr
    assert "DONE" not in result.stdout, result.stdout
    assert "child refused" in result.stdout


def test_files_written_to_tmp_do_not_reach_the_host():
    marker = f"sandbox_marker_{os.getpid()}_{time.monotonic_ns()}"
    result = run(f"open('/tmp/{marker}', 'w').write('x')\nprint('written')")
    assert result.ok and result.stdout == "written\n"
    if not result.private_tmp:
        os.remove(f"/tmp/{marker}")
        pytest.skip("no mount namespace here: /tmp is shared (see the module docstring)")
    assert not os.path.exists(f"/tmp/{marker}")


def test_environment_is_built_from_scratch(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    result = run(
        """
        import os
        for name, value in sorted(os.environ.items()):
            print(name, value)
        print("cwd", os.getcwd())
        print("hash", hash("abc"))
        """
    )
    assert result.ok
    assert "sk-secret" not in result.stdout and "OPENAI_API_KEY" not in result.stdout
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert lines["HOME"] == lines["cwd"] == lines["TMPDIR"]
    assert lines["PYTHONHASHSEED"] == "0"
    assert run("print(hash('abc'))").stdout == f"{lines['hash']}\n"  # same in every run


def test_cannot_read_the_collectors_environment_through_proc(separate_user, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    result = run(
        """
        import os
        for path in (f"/proc/{os.getppid()}/environ", "/proc/1/environ"):
            try:
                print(open(path, "rb").read())
            except OSError as error:
                print(path, type(error).__name__)
        """
    )
    assert result.ok, result.stderr
    assert "sk-secret" not in result.stdout
    assert result.stdout.count("Error") == 2


@pytest.mark.slow
def test_cannot_kill_its_parent_or_other_runs(separate_user):
    sleeper_code = "import time\ntime.sleep(1.5)\nprint('survived')\n"
    killer_code = """
        import os, signal
        for name, attempt in [
            ("parent", lambda: os.kill(os.getppid(), signal.SIGKILL)),
            ("parent group", lambda: os.killpg(os.getpgid(os.getppid()), signal.SIGKILL)),
            ("everyone", lambda: os.kill(-1, signal.SIGKILL)),
        ]:
            try:
                attempt()
                print(name, "sent")
            except OSError as error:
                print(name, type(error).__name__)
        """
    with ThreadPoolExecutor(1) as pool:
        sleeping = pool.submit(run_python, sleeper_code, timeout_s=10.0)
        time.sleep(0.7)
        killer = run(killer_code)
        sleeper = sleeping.result(timeout=30)
    assert "parent PermissionError" in killer.stdout
    assert "parent group PermissionError" in killer.stdout
    assert sleeper.ok and sleeper.stdout == "survived\n"  # kill(-1) reached only the killer's uid


def test_network_connection_to_a_local_listener():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        result = run(
            f"""
            import socket
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=2).close()
                print("connected")
            except OSError as error:
                print("blocked", error.errno)
            """
        )
        listener.setblocking(False)
        no_connection = pytest.raises(BlockingIOError)
        with no_connection if result.network_isolated else contextlib.nullcontext():
            listener.accept()[0].close()
    assert result.ok, result.stderr
    assert result.stdout.startswith("blocked" if result.network_isolated else "connected")


@pytest.mark.slow
def test_working_directories_are_removed_even_after_hostile_runs(monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    run("print('fine')")
    run("while True:\n    pass\n", timeout_s=0.5)
    run("x = (")
    run(
        """
        import os
        os.makedirs("a/b/c")
        open("a/b/c/f", "w").write("x")
        os.chmod("a/b/c", 0o000)
        os.chmod("a", 0o500)
        os.chmod(".", 0o500)
        """
    )
    leftovers = [path for path in tmp_path.iterdir() if path.name.startswith(sandbox.WORKDIR_PREFIX)]
    assert leftovers == []


def test_eight_concurrent_runs_from_threads_are_all_correct():
    code = "import time\nn = int(input())\ntime.sleep(0.2)\nprint(n * n)\n"
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda n: run_python(code, stdin=f"{n}\n"), range(8)))
    assert [result.stdout for result in results] == [f"{n * n}\n" for n in range(8)]
    assert all(result.ok for result in results)
    if all(result.separate_user for result in results):
        assert len({result.uid for result in results}) == 8


def test_asyncio_to_thread_callers_work():
    import asyncio

    async def main() -> list[SandboxResult]:
        runs = [asyncio.to_thread(run_python, f"print({n})") for n in range(3)]
        return await asyncio.gather(*runs)

    assert [result.stdout for result in asyncio.run(main())] == ["0\n", "1\n", "2\n"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"timeout_s": 0}, "timeout_s must be a finite number of seconds > 0, got 0"),
        ({"timeout_s": -1.5}, "timeout_s must be a finite number of seconds > 0, got -1.5"),
        ({"timeout_s": math.nan}, "timeout_s must be a finite number of seconds > 0, got nan"),
        ({"timeout_s": math.inf}, "timeout_s must be a finite number of seconds > 0, got inf"),
        ({"timeout_s": "5"}, "timeout_s must be a finite number of seconds > 0, got '5'"),
        ({"memory_mb": 1}, r"memory_mb must be a whole number >= 32 \(Python needs it to start\), got 1"),
        ({"memory_mb": math.inf}, "memory_mb must be a whole number >= 32 .*, got inf"),
        ({"memory_mb": math.nan}, "memory_mb must be a whole number >= 32 .*, got nan"),
        ({"memory_mb": 512.0}, "memory_mb must be a whole number >= 32 .*, got 512.0"),
        ({"max_output_bytes": 0}, "max_output_bytes must be a whole number >= 1, got 0"),
        ({"max_output_bytes": math.inf}, "max_output_bytes must be a whole number >= 1, got inf"),
        ({"max_file_mb": -1}, "max_file_mb must be a whole number >= 1, got -1"),
        ({"max_file_mb": math.nan}, "max_file_mb must be a whole number >= 1, got nan"),
        ({"max_processes": math.inf}, "max_processes must be a whole number >= 1, got inf"),
        ({"max_processes": 2.5}, "max_processes must be a whole number >= 1, got 2.5"),
        ({"scratch_mb": math.inf}, "scratch_mb must be a whole number >= 1, got inf"),
        ({"scratch_mb": 0}, "scratch_mb must be a whole number >= 1, got 0"),
    ],
)
def test_bad_limits_are_rejected_before_anything_runs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        run_python("print(1)", **kwargs)


def test_huge_limits_mean_no_limit():
    """Regression: a finite limit too large for setrlimit made the launcher fail."""
    result = run_python("print(1)", timeout_s=1e300, memory_mb=10**30, max_file_mb=10**30, max_processes=10**30)
    assert result.ok and result.stdout == "1\n", result.stderr


def test_reports_what_isolation_it_got(isolation):
    if os.geteuid() != 0:
        assert not isolation.separate_user and isolation.uid == os.getuid()
    else:  # root switches uid unless the interpreter is hidden and no mount namespace can expose it
        reachable = isolation.private_tmp or not sandbox._interpreter_exposures()
        assert isolation.separate_user == reachable
        assert (isolation.uid != 0) == reachable


@pytest.mark.slow
def test_a_collector_whose_venv_lives_under_tmp_can_still_run_programs(tmp_path):
    """Regression: the private /tmp mount hid a venv made in /tmp (a fresh clone there), so
    every program failed with 'No such file or directory: .../.venv/bin/python'."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    repo = Path(__file__).resolve().parent.parent
    import site

    path = os.pathsep.join([str(repo), *site.getsitepackages()])
    probe = (
        "from pettingllms.sandbox import run_python\n"
        "result = run_python('import sys; print(sys.prefix)')\n"
        "print(result.returncode, result.stdout.strip(), result.private_tmp)\n"
    )
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": path},
    )
    returncode, prefix, private_tmp = out.stdout.split()
    assert (returncode, prefix) == ("0", str(venv)), out.stderr
    assert str(tmp_path).startswith("/tmp/") or private_tmp == "False"
