"""Single-use workers started ahead of time, so that a caller finds one ready instead of
waiting for one to start.

The sandbox keeps its launchers here (`pettingllms.sandbox`): each is a fresh process, already
isolated, that waits for one program and becomes it. A worker is handed out once and never
comes back; the pool only ever holds workers that nobody has used.

- Sized by use: a caller who finds none ready gets None (and starts one itself, as without a
  pool), and the pool then keeps one more ready, up to `max_idle`. A worker idle for
  `idle_s` is ended and the pool keeps one fewer: a collector that stops running programs
  ends up holding nothing. A leased worker is replaced when its lease ends.
- One thread, the keeper, starts every worker and lives until no worker it started is in
  use. That matters for the sandbox: a launcher's PDEATHSIG fires when the *thread* that
  started it ends, not the process, so launchers must not be started by short-lived threads
  (an asyncio.to_thread worker) that could end while a launcher waits or its program runs.
- Thread-safe; `close()` ends every idle worker; the pool starts again if used afterwards,
  except once the interpreter is exiting (every pool is closed then).
- Fork-safe: a forked child closes its copies of the workers' file descriptors (a copy of a
  uid lock would keep that uid claimed for as long as the child lives) and starts with an
  empty pool of its own.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import functools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Generic, Protocol, TypeVar

logger = logging.getLogger(__name__)

_JOIN_S = 10.0  # how long `close()` waits for the keeper to end what it is starting


class Worker(Protocol):
    """What the pool needs of a worker."""

    def alive(self) -> bool:
        """It has not ended (by itself, or killed from outside) while it waited."""

    def discard(self) -> None:
        """End it and free all it holds; it was never used."""

    def forget(self) -> None:
        """In a forked child: close this process's copies of its file descriptors, nothing more."""


W = TypeVar("W", bound=Worker)


class WorkerPool(Generic[W]):
    """Keeps up to `max_idle` workers from `start` ready; `lease()` hands out one at a time."""

    def __init__(self, start: Callable[[], W], *, max_idle: int, idle_s: float, name: str = "worker-pool"):
        self._start = start
        self._max_idle = max_idle
        self._idle_s = idle_s
        self._name = name
        self._reset()
        _pools.add(self)

    def _reset(self) -> None:
        """The state of a new pool: nothing started, nothing wanted."""
        self._lock = threading.Condition()
        self._idle: collections.deque[tuple[W, float]] = collections.deque()  # (worker, ready since)
        self._leased: list[W] = []
        self._wanted = 0  # how many idle workers to keep
        self._closed = False
        self._keeper: threading.Thread | None = None

    @contextlib.contextmanager
    def lease(self) -> Iterator[W | None]:
        """A ready worker for the caller to use up, or None if none is ready (start your own)."""
        worker = self._take()
        try:
            yield worker
        finally:
            if worker is not None:
                with self._lock:
                    self._leased.remove(worker)
                    # Its replacement starts now, not when it was taken: starting it then
                    # competed with the caller's program for the CPU and for our GIL (the
                    # sandbox measured 2.2x a bare interpreter start instead of 1.2x).
                    self._lock.notify_all()

    def idle_count(self) -> int:
        """How many workers wait now (for tests and benchmarks)."""
        with self._lock:
            return len(self._idle)

    def close(self) -> None:
        """End every idle worker, and the keeper once no leased worker is in use."""
        with self._lock:
            self._closed = True
            self._wanted = 0
            self._lock.notify_all()
            keeper, in_use = self._keeper, bool(self._leased)
        if keeper is not None and not in_use and keeper is not threading.current_thread():
            keeper.join(_JOIN_S)

    def _take(self) -> W | None:
        dead = []
        with self._lock:
            if _exiting:
                return None
            self._closed = False
            while self._idle:
                worker, _ = self._idle.popleft()
                if worker.alive():
                    self._leased.append(worker)
                    self._ensure_keeper()  # it replaces the worker once the lease ends, see lease()
                    break
                dead.append(worker)
            else:
                worker = None
                self._wanted = min(self._max_idle, self._wanted + 1)
                self._ensure_keeper()
                self._lock.notify_all()
        _discard_all(dead)
        return worker

    def _ensure_keeper(self) -> None:
        if self._keeper is None:
            self._keeper = threading.Thread(target=self._keep, name=self._name, daemon=True)
            self._keeper.start()

    # ------------------------------------------------------------ the keeper thread

    def _keep(self) -> None:
        """Start workers while fewer than wanted are idle, end those idle too long."""
        while (action := self._next_action()) is not None:
            action()

    def _next_action(self) -> Callable[[], None] | None:
        """Wait until there is something to do and say what; None when the keeper should end."""
        with self._lock:
            while True:
                if self._closed and self._idle:
                    closing, self._idle = [worker for worker, _ in self._idle], collections.deque()
                    return functools.partial(_discard_all, closing)
                if self._closed and not self._leased:
                    self._keeper = None
                    return None
                expired = self._pop_expired()
                if expired:
                    return functools.partial(_discard_all, expired)
                if not self._closed and len(self._idle) < self._wanted:
                    return self._start_one
                self._lock.wait(self._seconds_to_next_expiry())

    def _pop_expired(self) -> list[W]:
        """Remove the idle workers that died, and those idle for `idle_s`: keep one fewer for each."""
        now, kept, expired = time.monotonic(), collections.deque(), []
        for worker, since in self._idle:
            if now - since >= self._idle_s:
                self._wanted = max(0, self._wanted - 1)
                expired.append(worker)
            elif not worker.alive():
                expired.append(worker)
            else:
                kept.append((worker, since))
        self._idle = kept
        return expired

    def _seconds_to_next_expiry(self) -> float | None:
        if not self._idle:
            return None
        return max(0.0, self._idle[0][1] + self._idle_s - time.monotonic())

    def _start_one(self) -> None:
        try:
            worker = self._start()
        except Exception as error:  # the caller's own start will raise it where it can be seen
            logger.debug("could not start a worker ahead of time: %s", error)
            with self._lock:
                self._wanted = 0  # try again when a caller next finds none ready
            return
        with self._lock:
            if not self._closed:
                self._idle.append((worker, time.monotonic()))
                return
        worker.discard()

    def _forget_after_fork(self) -> None:
        """In a forked child: drop the parent's workers without touching them.

        Runs with only the forking thread alive, so the lock may be held by a thread that no
        longer exists: it is replaced, not taken.
        """
        for worker in [entry[0] for entry in self._idle] + self._leased:
            worker.forget()
        self._reset()


def _discard_all(workers: list[W]) -> None:
    for worker in workers:
        try:
            worker.discard()
        except Exception:  # one worker that cannot be ended must not stop the others
            logger.exception("could not end a pooled worker")


_pools: weakref.WeakSet[WorkerPool] = weakref.WeakSet()
_exiting = False


def _forget_pools_after_fork() -> None:
    for pool in list(_pools):
        pool._forget_after_fork()


def _close_pools_at_exit() -> None:
    global _exiting
    _exiting = True
    for pool in list(_pools):
        pool.close()


os.register_at_fork(after_in_child=_forget_pools_after_fork)
atexit.register(_close_pools_at_exit)
