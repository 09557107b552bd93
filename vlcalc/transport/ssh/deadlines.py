"""Deadlines of one node run: the phase clock (:class:`Attempt`), a reaper thread that closes a
connection when its deadline passes (:data:`REAPER`), and lock waits bounded by the node deadline
(:func:`acquire`).

Every wait of a run is bounded by ``Attempt.deadline``: sockets and paramiko calls get the time
left as their timeout, calls without one (``exec_command`` waits for the server's reply forever)
are cut by the reaper closing the transport, and waits for another thread's work (a jump host
being connected) use :func:`acquire`.

Example::

    attempt = Attempt(Timeouts(connect_s=2, node_s=10))
    deadline = attempt.phase_deadline(attempt.timeouts.connect_s)   # now + 2 s, capped at 10 s
    raise attempt.timeout("TCP connect", 2, deadline, "to 10.0.0.1:22")
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import threading
import time
from collections.abc import Callable, Iterator

from vlcalc.errors import NodeTimeoutError
from vlcalc.transport.base import Timeouts


class Attempt:
    """Per-run state: the node deadline (``node_s`` from now) and the phase clock."""

    def __init__(self, timeouts: Timeouts):
        self.timeouts = timeouts
        self.started = time.monotonic()
        self.deadline = self.started + timeouts.node_s

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def phase_deadline(self, phase_s: float) -> float:
        return min(time.monotonic() + phase_s, self.deadline)

    def timeout(
        self,
        phase: str,
        phase_s: float,
        deadline: float,
        what: str = "",
        *,
        cls: type[NodeTimeoutError] = NodeTimeoutError,
        host: str | None = None,
        port: int | None = None,
    ) -> NodeTimeoutError:
        """A timeout naming the phase, and the node deadline when that cut it short."""
        node_deadline = deadline >= self.deadline
        if node_deadline:
            text = f"the node deadline ({self.timeouts.node_s:g} s) passed during {phase}"
        else:
            text = f"{phase} timed out after {phase_s:g} s"
        return cls(
            f"{text}: {what}" if what else text,
            phase=phase,
            limit_s=self.timeouts.node_s if node_deadline else phase_s,
            node_deadline=node_deadline,
            host=host,
            port=port,
        )


@contextlib.contextmanager
def acquire(lock: threading.Lock, attempt: Attempt, waiting_for: str) -> Iterator[None]:
    """Hold ``lock``, waiting no longer than the node deadline; a ``timeout`` error otherwise.

    Example: ``with acquire(jump_lock, attempt, "the connection to jump host bastion"): ...``
    """
    if not lock.acquire(timeout=max(0.0, attempt.remaining())):
        raise attempt.timeout(
            f"waiting for {waiting_for}", attempt.timeouts.node_s, attempt.deadline
        )
    try:
        yield
    finally:
        lock.release()


class Alarm:
    __slots__ = ("action", "cancelled", "deadline", "fired")

    def __init__(self, deadline: float, action: Callable[[], None]):
        self.deadline = deadline
        self.action = action
        self.cancelled = False
        self.fired = False


class Reaper:
    """One daemon thread that runs an action (closing a connection) when its deadline passes.

    Every blocking paramiko call has its own timeout except a few (``exec_command`` waits for the
    server's reply forever); closing the transport at the deadline unblocks all of them.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Alarm]] = []
        self._cv = threading.Condition()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, deadline: float, action: Callable[[], None]) -> Alarm:
        alarm = Alarm(deadline, action)
        with self._cv:
            heapq.heappush(self._heap, (deadline, next(self._seq), alarm))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="vlcalc-ssh-reaper", daemon=True
                )
                self._thread.start()
            self._cv.notify()
        return alarm

    def cancel(self, alarm: Alarm) -> None:
        with self._cv:
            alarm.cancelled = True

    def _loop(self) -> None:
        while True:
            with self._cv:
                while self._heap and self._heap[0][2].cancelled:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cv.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._cv.wait(wait)
                    continue
                alarm = heapq.heappop(self._heap)[2]
                alarm.fired = True
            with contextlib.suppress(Exception):  # best effort: the connection is abandoned
                alarm.action()


REAPER = Reaper()

__all__ = ["REAPER", "Alarm", "Attempt", "Reaper", "acquire"]
