"""Real small disks for the full-disk and read-only tests: a tmpfs mounted on a folder, and a way to fill it.

Mounting needs root (CI and the development machine run as root); elsewhere the test is skipped
with the reason, never faked.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def mounted_tmpfs(folder: Path, options: str) -> Iterator[Path]:
    """A tmpfs with mount `options` (e.g. "size=200k", "size=1m,ro") at `folder`, made here; unmounted after."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def fill(directory: Path) -> None:
    """Write zeros into `directory` until its disk is full."""
    descriptor = os.open(directory / "filler", os.O_CREAT | os.O_WRONLY)
    try:
        while os.write(descriptor, b"\0" * 4096):
            pass
    except OSError as error:
        assert error.errno == errno.ENOSPC
    finally:
        os.close(descriptor)
