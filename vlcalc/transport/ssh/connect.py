"""Getting to an SSH server: the TCP connect, the banner and key exchange, and the algorithm
preferences, each within its phase deadline.

Example::

    sock = tcp_connect("10.0.0.11", 22, deadline)                  # or a jump host's channel
    transport = new_transport(sock, disabled_algorithms={}, known_types=["ssh-ed25519"])
    start(transport, endpoint, attempt)                            # banner + key exchange
"""

from __future__ import annotations

import contextlib
import errno
import socket
import threading
import time

from vlcalc.errors import (
    ConnectError,
    ConnectionClosedError,
    ConnectionLostError,
    ConnectTimeoutError,
    NameLookupError,
    NameLookupRetryError,
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
            with contextlib.suppress(OSError):
                self.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
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


def tcp_connect(endpoint: Endpoint, attempt: Attempt) -> socket.socket:
    """A TCP connection to ``endpoint`` within ``connect_s``; raises a retryable
    :class:`ConnectError`/:class:`ConnectTimeoutError` or a :class:`NameLookupError`."""
    phase_s = attempt.timeouts.connect_s
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


def new_transport(
    sock: socket.socket | paramiko.Channel,
    *,
    disabled_algorithms: dict[str, list[str]],
    known_types: list[str],
) -> paramiko.Transport:
    """A client Transport over ``sock`` that asks first for the host key types known_hosts has
    (as OpenSSH does, so a host with an ed25519 and an rsa key is not reported unknown just
    because we know only one of them) and offers :data:`PREFERRED_CIPHERS` first."""
    transport = paramiko.Transport(sock, disabled_algorithms=disabled_algorithms)
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
    """The SSH banner and key exchange within ``banner_s``."""
    phase_s = attempt.timeouts.banner_s
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
    "new_transport",
    "start",
    "tcp_connect",
]
