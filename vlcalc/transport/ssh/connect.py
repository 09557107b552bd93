"""Getting to an SSH server: the TCP connect, the banner and key exchange, and the algorithm
preferences, each within its phase deadline.

Example::

    sock = tcp_connect("10.0.0.11", 22, deadline)                  # or a jump host's channel
    transport = new_transport(sock, disabled_algorithms={}, known_types=["ssh-ed25519"])
    start(transport, endpoint, attempt)                            # banner + key exchange
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import select
import socket
import subprocess
import threading
import time

from vlcalc.errors import (
    ConnectError,
    ConnectionClosedError,
    ConnectionLostError,
    ConnectTimeoutError,
    NameLookupError,
    NameLookupRetryError,
    NodeError,
)
from vlcalc.transport.ssh._paramiko import PARAMIKO_LOGGER, paramiko
from vlcalc.transport.ssh.config import Endpoint
from vlcalc.transport.ssh.deadlines import Attempt

#: Offered before paramiko's default aes128-ctr.  With a MAC cipher paramiko checks every
#: incoming packet's MAC in a pure-Python byte loop (``util.constant_time_bytes_eq``, ~12 % of a
#: scan's CPU in a profile); GCM authenticates inside OpenSSL.  Against OpenSSH sshd (200-node
#: loopback scan, 16 forks, in-process, 2 alternations): 4.2 -> 3.45 ms of client CPU per node.
#: (Against a paramiko server the two were within the noise: that server pays the same loop.)
#: OpenSSH has offered these since 6.2; a server without them still negotiates aes-ctr.
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")

#: paramiko's own algorithm preferences are kept, except that the AEAD ciphers come first
#: (:data:`PREFERRED_CIPHERS`).  Measured against a paramiko server (client CPU per run, 60 runs x
#: 2 rounds): mlkem768x25519 2.9-3.2 ms, curve25519 2.8-3.2 ms, ecdh-nistp256 3.3-3.4 ms.
#: Disabling "slow" algorithms buys nothing measurable, so ``disabled_algorithms`` defaults to none.
DEFAULT_DISABLED_ALGORITHMS: dict[str, list[str]] = {}

_TCP_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


class QuickAckSocket(socket.socket):
    """A TCP socket that acknowledges every segment at once.

    sshd runs non-interactive sessions with Nagle's algorithm on, so its second small packet of a
    burst (channel-open confirmation then window adjust; output, exit-status, EOF, close) waits
    for our ACK of the first -- which Linux delays by 40 ms.  Re-arming TCP_QUICKACK before each
    read (it is not sticky) took a sequential run against a loopback sshd from ~100 ms to ~60 ms
    of wall time (measured), at ~1 us of CPU per read.
    """

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if _TCP_QUICKACK is not None:
            try:  # noqa: SIM105 (suppress() costs 0.7 us more per read, ~30 reads per node)
                self.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
            except OSError:
                pass
        return super().recv(bufsize, flags)


def _describe_os_error(exc: OSError) -> str:
    code = exc.errno
    if isinstance(exc, ConnectionRefusedError) or code == errno.ECONNREFUSED:
        return "connection refused (is sshd running and listening on this port?)"
    if code == errno.EHOSTUNREACH:
        return "no route to host"
    if code == errno.ENETUNREACH:
        return "network is unreachable"
    if isinstance(exc, ConnectionResetError) or code == errno.ECONNRESET:
        return "connection reset by peer"
    return f"connection failed: {exc.strerror or exc}"


def _tcp_connect(host: str, port: int, deadline: float) -> socket.socket:
    """Like ``socket.create_connection`` with a deadline, returning a :class:`QuickAckSocket`
    with TCP_NODELAY set (our own small packets go out at once)."""
    last: OSError | None = None
    for family, kind, proto, _, address in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
        sock = QuickAckSocket(family, kind, proto)
        try:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("timed out")
            sock.settimeout(left)
            sock.connect(address)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(None)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
            if isinstance(exc, TimeoutError):
                break
    raise last if last is not None else OSError(f"no address for {host}")


def connect_phase_s(endpoint: Endpoint, phase_s: float) -> float:
    """``phase_s``, or ssh_config's shorter ``ConnectTimeout`` (which OpenSSH applies to the TCP
    connect and to the wait for the banner)."""
    limit = endpoint.connect_timeout_s
    return phase_s if limit is None or limit <= 0 else min(phase_s, float(limit))


def tcp_connect(endpoint: Endpoint, attempt: Attempt) -> socket.socket:
    """A TCP connection to ``endpoint`` within ``connect_s`` (or ``ConnectTimeout``); raises a
    retryable :class:`ConnectError`/:class:`ConnectTimeoutError` or a :class:`NameLookupError`."""
    phase_s = connect_phase_s(endpoint, attempt.timeouts.connect_s)
    deadline = attempt.phase_deadline(phase_s)
    host, port = endpoint.hostname, endpoint.port
    try:
        return _tcp_connect(host, port, deadline)
    except socket.gaierror as exc:
        lookup = NameLookupRetryError if exc.errno == socket.EAI_AGAIN else NameLookupError
        raise lookup(
            f"DNS lookup of {host!r} failed: {exc.strerror or exc}",
            host=host,
            port=port,
            gai_errno=exc.errno,
        ) from exc
    except TimeoutError as exc:
        raise attempt.timeout(
            "TCP connect",
            phase_s,
            deadline,
            f"to {host}:{port}",
            cls=ConnectTimeoutError,
            host=host,
            port=port,
        ) from exc
    except OSError as exc:
        raise ConnectError(
            f"{host}:{port}: {_describe_os_error(exc)}", host=host, port=port, errno=exc.errno
        ) from exc


class ShellProxyCommand:
    """ssh_config's ``ProxyCommand``, run as OpenSSH runs it -- ``/bin/sh -c "exec COMMAND"`` --
    with its stdin and stdout as the connection: the socket-like object paramiko's Transport
    needs (``send``, ``recv`` with ``settimeout``, ``close``).  ``recv`` returns ``b""`` when the
    command closes its stdout, so paramiko sees the end at once (paramiko's own ProxyCommand
    splits the command with shlex, runs no shell, and keeps polling after the end).  Its
    stderr is drained by a thread, the last 2 KiB kept for the error message; ``close`` ends
    the process.

    Example: ``ShellProxyCommand("nc 10.0.0.11 22")``.
    """

    STDERR_TAIL = 2048

    def __init__(self, command: str):
        self.command = command
        self.timeout: float | None = None
        self._stderr: collections.deque[bytes] = collections.deque()
        self._stderr_size = 0
        self.process = subprocess.Popen(
            ["/bin/sh", "-c", f"exec {command}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
        )
        assert self.process.stdin and self.process.stdout and self.process.stderr
        self._in = self.process.stdin.fileno()
        self._out = self.process.stdout.fileno()
        self._drain = threading.Thread(
            target=self._read_stderr, name="vlcalc-ssh-proxy-stderr", daemon=True
        )
        self._drain.start()

    def _read_stderr(self) -> None:
        stream = self.process.stderr
        assert stream is not None
        with contextlib.suppress(OSError, ValueError):
            while chunk := stream.read(4096):
                self._stderr.append(chunk)
                self._stderr_size += len(chunk)
                while self._stderr_size - len(self._stderr[0]) >= self.STDERR_TAIL:
                    self._stderr_size -= len(self._stderr.popleft())

    def stderr_tail(self) -> str:
        text = b"".join(self._stderr)[-self.STDERR_TAIL :]
        return text.decode("utf-8", "replace").strip()

    def settimeout(self, timeout: float | None) -> None:
        self.timeout = timeout

    def send(self, data: bytes) -> int:
        try:
            return os.write(self._in, data)
        except OSError as exc:
            raise OSError(exc.errno, f"ProxyCommand stopped reading: {exc.strerror}") from exc

    def recv(self, size: int) -> bytes:
        ready, _, _ = select.select([self._out], [], [], self.timeout)
        if not ready:
            raise socket.timeout("timed out")
        return os.read(self._out, size)

    @property
    def closed(self) -> bool:
        return self.process.returncode is not None

    @property
    def _closed(self) -> bool:
        # paramiko's Transport.stop_thread reads ``sock._closed`` (sockets and its own
        # ProxyCommand have it).
        return self.closed

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                self.process.terminate()
            try:
                self.process.wait(0.5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    self.process.kill()
                self.process.wait()
        # The process has ended: its stderr reaches EOF unless a child of it still holds it.
        self._drain.join(0.5)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def proxy_command(endpoint: Endpoint) -> ShellProxyCommand:
    """Start ``endpoint.proxy_command``; a retryable :class:`ConnectError` if it cannot start."""
    command = endpoint.proxy_command
    assert command is not None
    try:
        return ShellProxyCommand(command)
    except OSError as exc:
        raise ConnectError(
            f"cannot run ProxyCommand {command!r}: {exc.strerror or exc}",
            host=endpoint.hostname,
            port=endpoint.port,
            errno=exc.errno,
        ) from exc


def describe_proxy_failure(failure: NodeError, proxy: ShellProxyCommand) -> None:
    """Add what the ProxyCommand said and how it ended to ``failure``'s message."""
    status = proxy.process.poll()
    tail = proxy.stderr_tail()
    parts = [f"ProxyCommand `{proxy.command}`"]
    if status is not None:
        parts.append(f"exited with status {status}")
    if tail:
        parts.append(f"stderr: {tail.splitlines()[-1][:300]}")
    failure.message += f" ({', '.join(parts)})"


def new_transport(
    sock: socket.socket | paramiko.Channel | ShellProxyCommand,
    *,
    disabled_algorithms: dict[str, list[str]],
    known_types: list[str],
) -> paramiko.Transport:
    """A client Transport over ``sock`` that asks first for the host key types known_hosts has
    (as OpenSSH does, so a host with an ed25519 and an rsa key is not reported unknown just
    because we know only one of them) and offers :data:`PREFERRED_CIPHERS` first."""
    # paramiko types ``sock`` as a socket, Channel or its own ProxyCommand; it only uses the
    # socket methods ShellProxyCommand has (send, recv, settimeout, close).
    transport = paramiko.Transport(
        sock,  # type: ignore[arg-type]
        disabled_algorithms=disabled_algorithms,
    )
    transport.set_log_channel(PARAMIKO_LOGGER)
    options = transport.get_security_options()
    offered = list(options.key_types)
    wanted: list[str] = []
    for key_type in known_types:
        names = ["rsa-sha2-512", "rsa-sha2-256"] if key_type == "ssh-rsa" else [key_type]
        wanted += [name for name in names if name in offered and name not in wanted]
    if wanted:
        options.key_types = tuple(wanted + [name for name in offered if name not in wanted])
    ciphers = list(options.ciphers)
    first = [name for name in PREFERRED_CIPHERS if name in ciphers]
    if first:
        options.ciphers = tuple(first + [name for name in ciphers if name not in first])
    return transport


def start(transport: paramiko.Transport, endpoint: Endpoint, attempt: Attempt) -> None:
    """The SSH banner and key exchange within ``banner_s`` (or ``ConnectTimeout``)."""
    phase_s = connect_phase_s(endpoint, attempt.timeouts.banner_s)
    deadline = attempt.phase_deadline(phase_s)
    budget = max(0.001, deadline - time.monotonic())
    host, port = endpoint.hostname, endpoint.port
    transport.banner_timeout = budget
    transport.handshake_timeout = budget
    # With an event, start_client returns at once and the wait below ends exactly at the
    # deadline (without one it polls every 0.1 s and gives no sign of a timeout but its state).
    negotiated = threading.Event()
    try:
        transport.start_client(event=negotiated)
        negotiated.wait(budget)
        failure = None if transport.is_active() else transport.get_exception()
        if failure is None and not transport.is_active():
            failure = paramiko.SSHException("Negotiation failed.")
        if failure is not None:
            raise failure
    except (paramiko.SSHException, EOFError, OSError) as exc:
        cause = exc.__context__ or exc
        if isinstance(cause, (TimeoutError, socket.timeout)):
            raise attempt.timeout(
                "waiting for the SSH banner",
                phase_s,
                deadline,
                f"{host}:{port} accepted TCP but sent no SSH banner",
                host=host,
                port=port,
            ) from exc
        if isinstance(cause, (EOFError, ConnectionError)) or isinstance(exc, EOFError):
            phase = "the SSH banner" if not transport.remote_version else "key exchange"
            raise ConnectionClosedError(
                f"{host}:{port} closed the connection before {phase}"
                " (sshd MaxStartups reached, or not an SSH server)",
                host=host,
                port=port,
                phase=phase,
            ) from exc
        raise ConnectionLostError(
            f"SSH handshake with {host}:{port} failed: {exc}",
            host=host,
            port=port,
            phase="the SSH handshake",
        ) from exc
    if not negotiated.is_set():
        phase = "waiting for the SSH banner" if not transport.remote_version else "key exchange"
        what = (
            f"{host}:{port} accepted TCP but sent no SSH banner"
            if not transport.remote_version
            else f"{host}:{port} ({transport.remote_version})"
        )
        raise attempt.timeout(phase, phase_s, deadline, what, host=host, port=port)
    if not transport.is_active():  # pragma: no cover - start_client raises in this case
        raise ConnectionClosedError(
            "the SSH handshake failed", host=host, port=port, phase="the SSH handshake"
        )


__all__ = [
    "DEFAULT_DISABLED_ALGORITHMS",
    "PREFERRED_CIPHERS",
    "QuickAckSocket",
    "ShellProxyCommand",
    "connect_phase_s",
    "describe_proxy_failure",
    "new_transport",
    "proxy_command",
    "start",
    "tcp_connect",
]
