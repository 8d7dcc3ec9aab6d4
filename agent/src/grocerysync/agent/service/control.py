"""How a service manager asks the running agent to stop, the same way on every platform.

systemd sends SIGTERM; the Windows service host (:mod:`grocerysync.agent.service.winhost`) calls
:func:`request_stop` from the service control handler; Ctrl+C in a console sends SIGINT. The ``run``
loop checks :func:`stop_requested` (or awaits :func:`wait_for_stop` in a thread) and finishes the
current step before it returns, so a stop never leaves a half-written spool or delta store.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

_stop = threading.Event()


def request_stop() -> None:
    """Ask the agent to stop after its current step (safe from any thread or signal handler)."""
    _stop.set()


def stop_requested() -> bool:
    """Whether a stop has been asked for."""
    return _stop.is_set()


def wait_for_stop(timeout: float | None = None) -> bool:
    """Block until a stop is asked for (True) or ``timeout`` seconds pass (False)."""
    return _stop.wait(timeout)


def reset() -> None:
    """Forget an earlier stop request (a new run loop in the same process, and tests)."""
    _stop.clear()


def install_signal_handlers() -> None:
    """Turn SIGTERM, SIGINT (and SIGBREAK on Windows) into :func:`request_stop`; main thread only."""

    def handler(signum: int, frame: FrameType | None) -> None:
        request_stop()

    for name in ("SIGTERM", "SIGINT", "SIGBREAK"):
        sig = getattr(signal, name, None)
        if sig is not None:
            signal.signal(sig, handler)
