"""The transport interface: run one command on one node, with stdin, under deadlines.

The scan builds the command line; a transport only moves bytes and reports failures as
:class:`vlcalc.errors.NodeError` with a documented ``kind``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from vlcalc.errors import NodeError

T = TypeVar("T")


@dataclass(frozen=True)
class Target:
    """Where and how to reach one inventory node.

    Example: ``Target(name="node01", host="10.0.0.11", port=22, user="ops")``.
    ``host``/``port``/``user``/``key_file`` of ``None`` mean "let ~/.ssh/config or the default
    decide".
    """

    name: str
    host: str
    port: int | None = None
    user: str | None = None
    key_file: str | None = None
    connection: str = "ssh"  # "ssh" or "local"
    python: str = "python3"
    become: bool = False
    become_user: str | None = None
    # ssh options from the inventory (ansible_ssh_common_args / ansible_ssh_extra_args), as
    # (lower-cased ssh_config keyword, value): ``(("proxyjump", "bastion"),)``.  Like ``ssh -o``
    # they override ~/.ssh/config; for a keyword given twice, the first wins (as in ssh).
    ssh_options: tuple[tuple[str, str], ...] = ()
    # False for Ansible's paramiko connection, which reads no ssh_config at all: neither
    # ~/.ssh/config nor --ssh-config applies to the host (its defaults: port 22, the local user).
    read_ssh_config: bool = True


@dataclass(frozen=True)
class Timeouts:
    """Per-phase limits in seconds, and the overall per-node deadline that caps them all."""

    connect_s: float = 10.0
    banner_s: float = 10.0
    auth_s: float = 10.0
    exec_s: float = 30.0
    node_s: float = 60.0
    retries: int = 2  # extra attempts, for connection failures only


@dataclass(frozen=True)
class RunResult:
    """What a command printed and how it ended.  ``stderr_tail`` is the last bytes of stderr."""

    exit_status: int
    stdout: bytes
    stderr_tail: bytes


class Transport(Protocol):
    def run(
        self,
        target: Target,
        command: str,
        stdin: bytes,
        *,
        timeouts: Timeouts,
        max_stdout: int,
    ) -> RunResult:
        """Run ``command`` (a shell command line) on ``target`` with ``stdin``; closes stdin after
        writing it.  Raises :class:`vlcalc.errors.NodeError` (``unreachable``, ``auth-failed``,
        ``host-key-unknown``, ``host-key-changed``, ``timeout``, ``bad-output`` when stdout
        exceeds ``max_stdout`` bytes).  A non-zero exit status is *not* an error here."""
        ...

    def close(self) -> None:
        """Release pooled connections and caches."""
        ...


def with_retries(
    connect: Callable[[], T],
    *,
    retries: int,
    remaining: Callable[[], float],
    backoff_s: float,
    jitter: random.Random,
) -> T:
    """Call ``connect`` until it succeeds, a failure is not ``retryable``, ``retries`` extra
    attempts are used, or the next wait would not fit in the node's ``remaining()`` seconds: the
    one retry policy of every transport.  Waits double from ``backoff_s`` with +-50 % jitter, so
    a fleet whose nodes all failed at once does not retry in lock step.  The final failure
    records its ``attempts`` and says so in its message.
    """
    tries = 1 + max(0, retries)
    for number in range(1, tries + 1):
        try:
            return connect()
        except NodeError as failure:
            failure.attempts = number
            if not failure.retryable or number == tries:
                if number > 1:
                    failure.message += f" (after {number} attempts)"
                raise
            delay = backoff_s * (2 ** (number - 1)) * jitter.uniform(0.5, 1.5)
            if delay >= remaining() - 0.05:
                failure.message += f" (after {number} attempts; no time left to retry)"
                raise
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
