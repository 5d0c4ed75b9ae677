"""Running plugin code within a time budget, and keeping the account of what each plugin's calls
cost: the mechanics behind ``PluginManager.guarded`` (the manager decides what to do about it).

Python cannot stop a thread, so a plain (non-``async``) plugin method runs in a worker thread of
its own and the caller stops *waiting* for it at the budget: a method that never returns costs one
daemon thread (never the event loop, never the process's exit), and the manager blocks its plugin
before such threads pile up. A coroutine method runs on the loop and is cancelled at the budget.

What a plugin's calls leave behind is counted per plugin (``CallRecord``): the calls still running
past their budget, and the threads they started that are still alive. Python does not record who
started a thread, so ``threading.Thread.start`` is wrapped once (``_start_attributed``): a thread
started while a plugin call runs (in its worker thread, or in its task on the loop) is charged to
that plugin. Threads of anyio's pool and of concurrent.futures executors (asyncio's default one
behind ``to_thread`` and ``getaddrinfo``) are not: they are shared and bounded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

# A call over its budget is a strike; the STRIKES-th strike among a plugin's last STRIKE_WINDOW
# calls blocks it. One slow call (a GC pause, a busy machine) costs one answer its plugin, never
# the plugin for the life of the process; a plugin slow often enough to matter is blocked within
# a few calls, and one that hangs within STRIKES calls.
STRIKES = 3
STRIKE_WINDOW = 20
# Threads started by one plugin's calls and still alive: beyond this the plugin is leaking them
# (a plugin may keep a worker or two of its own).
MAX_PLUGIN_THREADS = 8
_IDLE_S = 30.0  # an idle worker thread ends after this long


@dataclass(eq=False)
class CallRecord:
    """The account of one loaded plugin's calls."""

    recent: deque[bool] = field(default_factory=lambda: deque(maxlen=STRIKE_WINDOW))  # True: a strike
    running: dict[object, float] = field(default_factory=dict)  # call -> its deadline (monotonic)
    threads: weakref.WeakSet[threading.Thread] = field(default_factory=weakref.WeakSet)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, strike: bool) -> int:
        """Record one call's outcome; the strikes among the recent calls."""
        with self.lock:
            self.recent.append(strike)
            return sum(self.recent)

    def stuck(self) -> int:
        """Calls still running in their thread although their budget is over."""
        now = time.monotonic()
        with self.lock:
            return sum(1 for deadline in self.running.values() if deadline <= now)

    def live_threads(self) -> int:
        with self.lock:
            return sum(1 for t in list(self.threads) if t.is_alive())


_CALLER: contextvars.ContextVar[CallRecord | None] = contextvars.ContextVar("exlsp_plugin_call", default=None)
# The original, even if this module is imported twice (the wrapper keeps it as __wrapped__).
_thread_start = getattr(threading.Thread.start, "__wrapped__", threading.Thread.start)


def _shared_pool_thread(thread: threading.Thread) -> bool:
    """A worker of a shared, bounded pool (anyio's, or a concurrent.futures executor such as
    asyncio's default one behind ``to_thread``/``getaddrinfo``): started on a plugin's behalf but
    not its leak."""
    target = getattr(thread, "_target", None)
    return type(thread).__module__.startswith("anyio.") or getattr(target, "__module__", "") == "concurrent.futures.thread"


def _start_attributed(self: threading.Thread) -> None:
    record = _CALLER.get()
    if record is not None and not _shared_pool_thread(self):
        with record.lock:
            record.threads.add(self)
    _thread_start(self)


_start_attributed.__wrapped__ = _thread_start  # type: ignore[attr-defined]
threading.Thread.start = _start_attributed  # type: ignore[method-assign]


class _Workers:
    """Daemon threads for plain plugin calls. An idle one is reused; a busy one - maybe hung for
    good - is never waited for: a new thread takes the call instead."""

    def __init__(self) -> None:
        self._idle: list[queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future[Any]]]] = []
        self._lock = threading.Lock()

    def submit(self, fn: Callable[[], Any]) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
        if inbox is None:
            inbox = queue.SimpleQueue()
            token = _CALLER.set(None)  # our own thread: nobody's leak
            try:
                threading.Thread(target=self._work, args=(inbox,), name="exlsp-plugin-call", daemon=True).start()
            finally:
                _CALLER.reset(token)
        inbox.put((fn, future))
        return future

    def _work(self, inbox: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future[Any]]]) -> None:
        while True:
            try:
                fn, future = inbox.get(timeout=_IDLE_S)
            except queue.Empty:
                with self._lock:
                    if any(q is inbox for q in self._idle):
                        self._idle.remove(inbox)
                        return
                continue  # taken from the idle list just now: a call is on its way
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    future.set_exception(exc)
            del fn, future  # hold nothing of the call while idle
            with self._lock:
                self._idle.append(inbox)


_WORKERS = _Workers()


def _submit(record: CallRecord, method: Callable[..., Any], args: tuple[Any, ...], budget: float) -> concurrent.futures.Future[Any]:
    call = object()

    def run() -> Any:
        token = _CALLER.set(record)
        try:
            return method(*args)
        finally:
            _CALLER.reset(token)

    def forget(_: concurrent.futures.Future[Any]) -> None:
        with record.lock:
            record.running.pop(call, None)

    with record.lock:
        record.running[call] = time.monotonic() + budget
    future = _WORKERS.submit(run)
    future.add_done_callback(forget)
    return future


def call_in_thread(record: CallRecord, method: Callable[..., Any], args: tuple[Any, ...], budget: float) -> tuple[Any, bool]:
    """Run ``method(*args)`` in a worker thread, blocking the caller at most ``budget`` seconds:
    (result, True), or (None, False) when the budget ran out first. Re-raises what it raised."""
    future = _submit(record, method, args, budget)
    done, _ = concurrent.futures.wait([future], timeout=budget)
    if not done:
        return None, False
    return future.result(), True


async def call_in_thread_async(
    record: CallRecord, method: Callable[..., Any], args: tuple[Any, ...], budget: float
) -> tuple[Any, bool]:
    """``call_in_thread`` for a caller on the event loop: the loop runs on while it waits."""
    future = _submit(record, method, args, budget)
    with anyio.move_on_after(budget):
        return await asyncio.wrap_future(future), True
    return None, False


async def await_within(record: CallRecord, awaitable: Awaitable[Any], budget: float) -> tuple[Any, bool]:
    """Await a plugin's awaitable on the loop, cancelled at ``budget``: (result, in time)."""
    token = _CALLER.set(record)
    try:
        with anyio.move_on_after(max(budget, 0.0)):
            return await awaitable, True
    finally:
        _CALLER.reset(token)
    return None, False
