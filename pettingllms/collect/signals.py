"""Stopping a run cleanly on SIGINT / SIGTERM: abandon the episodes in flight, keep everything finished."""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def run_until_signal(coroutine: Coroutine[Any, Any, None], threads: int, finish: Callable[[], None]) -> int | None:
    """Run `coroutine` to its end, then `finish()`; return the signal that cancelled it, if one did.

    The first signal cancels it; later ones are ignored until `finish` is done, while the
    episodes' threads (model code in the sandbox, a generate call) wind down, so a second
    Ctrl-C cannot tear the stop itself. Our own loop rather than `asyncio.run`, whose
    handler would turn that second Ctrl-C into a KeyboardInterrupt. When the coroutine
    failed, a failure of `finish` too (a full disk fails both) is not allowed to hide the first.
    """
    loop = asyncio.new_event_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=threads))
    task = loop.create_task(coroutine)
    stopping: list[int] = []

    def stop(signum, frame):
        if stopping or task.done():
            return  # already stopping, or nothing left to stop
        stopping.append(signum)
        print("\nStopping: abandoning the episodes in flight...", file=sys.stderr)
        loop.call_soon_threadsafe(task.cancel)

    previous = _install_handlers(stop)
    failed = False
    try:
        loop.run_until_complete(task)
    except asyncio.CancelledError:
        pass
    except BaseException:
        failed = True
        raise
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
        try:
            finish()
        except Exception:
            if not failed:
                raise
        finally:
            _restore_handlers(previous)
    return stopping[0] if stopping else None


def _install_handlers(handler) -> dict[int, Any]:
    """Point SIGINT and SIGTERM at `handler`; return the handlers they had."""
    if threading.current_thread() is not threading.main_thread():
        return {}  # only the main thread may handle signals; a caller elsewhere keeps its own
    return {number: signal.signal(number, handler) for number in STOP_SIGNALS}


def _restore_handlers(previous: dict[int, Any]) -> None:
    for number, handler in previous.items():
        signal.signal(number, handler)
