"""A watchdog for long work: ``with WorkGuard(seconds, memory_mb, on_limit): ...`` interrupts the block when
it runs too long or grows the process's memory too much (building torch-pruning's graph of a huge model, a model
whose forward never returns), and raises ``on_limit(why)`` in the thread that ran it."""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable

import psutil


def _rss_bytes() -> int:
    return psutil.Process().memory_info().rss


class _LimitHit(BaseException):
    """Raised asynchronously in the guarded thread (a BaseException: ``except Exception`` does not catch it)."""


def _async_raise(thread_id: int, exc: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc else None)


class WorkGuard:
    """``with WorkGuard(seconds, memory_mb, on_limit): ...`` raises ``on_limit(why)`` when the block runs longer
    than ``seconds`` or grows resident memory by more than ``memory_mb``.

    A watchdog thread polls time and RSS and interrupts pure-Python work in the guarded thread (torch-pruning's
    graph walks) with an asynchronous exception; long C calls are interrupted when they return. The limits are
    also checked when the block ends, so a fast overrun is still refused. Guards nest.
    """

    def __init__(self, seconds: float | None, memory_mb: float | None, on_limit: Callable[[str], Exception],
                 poll: float = 0.02) -> None:
        self.seconds, self.memory_mb, self.on_limit, self.poll = seconds, memory_mb, on_limit, poll
        self._hit = type("_LimitHit", (_LimitHit,), {})  # this guard's own interrupt
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._active = False
        self.fired: str | None = None

    def _over(self) -> str | None:
        spent = time.perf_counter() - self._t0
        if self.seconds is not None and spent > self.seconds:
            return f"took more than {self.seconds:g} s"
        grown = (_rss_bytes() - self._rss0) / 2**20
        if self.memory_mb is not None and grown > self.memory_mb:
            return f"grew the process's memory by {grown:.0f} MB (limit {self.memory_mb:g} MB)"
        return None

    def _watch(self) -> None:
        while not self._stop.wait(self.poll):
            reason = self._over()
            if reason is None:
                continue
            with self._lock:
                if not self._active:
                    return
                self.fired = self.fired or reason
                _async_raise(self._tid, self._hit)

    def __enter__(self) -> WorkGuard:
        self._tid = threading.get_ident()
        self._t0, self._rss0 = time.perf_counter(), _rss_bytes()
        self._active = True
        if self.seconds is not None or self.memory_mb is not None:
            threading.Thread(target=self._watch, name="pruneviz-work-guard", daemon=True).start()
        return self

    def _disarm(self) -> None:
        while True:  # an interrupt already on its way may land here: retry until disarmed
            try:
                with self._lock:
                    self._active = False
                    self._stop.set()
                    _async_raise(self._tid, None)  # drop a pending interrupt (an outer guard fires again)
                return
            except _LimitHit:
                continue

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._disarm()
        if exc_type is not None and issubclass(exc_type, _LimitHit) and exc_type is not self._hit:
            return False  # an outer guard's interrupt: let it through
        if self.fired is None and exc_type is None:
            self.fired = self._over()
        if self.fired is not None or exc_type is self._hit:
            raise self.on_limit(self.fired or "went over its limit") from None
        return False
