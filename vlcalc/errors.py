"""The one exception root of vlcalc, and its subclasses.

Every error a user can cause is a :class:`VlcalcError`; the CLI turns it into one line on stderr and
an exit code.  Per-node failures during a scan are *not* exceptions: they are values (see
``vlcalc.scan``).
"""

from __future__ import annotations

from typing import ClassVar

from vlcalc.model import ErrorKind


class VlcalcError(Exception):
    """Root of every error vlcalc raises on purpose."""


class InputError(VlcalcError):
    """Invalid user input: a bad file, a bad document, a bad VL spec.  Exit code 2.

    ``source`` names where the input came from (a file path, ``--vls``, ``<stdin>``) and
    ``field`` the part that is wrong (a JSON path such as ``nodes[3].probe.sve.vls``), if known.
    """

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None):
        self.message = message
        self.source = source
        self.field = field
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ": ".join(part for part in (self.source, self.field) if part)
        return f"{where}: {self.message}" if where else self.message


class SpecError(InputError):
    """A VL set written in a syntax vlcalc cannot read (``--vls``, ``--try``, ``--require-vl``)."""


class DocumentError(InputError):
    """A probe, scan or report document that is not valid JSON or does not match its schema."""


class InventoryError(InputError):
    """An inventory file that cannot be read; ``line`` is 1-based when known."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        field: str | None = None,
        line: int | None = None,
    ):
        self.line = line
        super().__init__(message, source=source, field=field)

    def __str__(self) -> str:
        base = f"{self.source}:{self.line}" if self.source and self.line else self.source
        where = ": ".join(part for part in (base, self.field) if part)
        return f"{where}: {self.message}" if where else self.message


class NodeError(VlcalcError):
    """One node could not be probed.  Raised inside the transport, caught by the scan and stored as
    a value (``kind`` and ``message`` go into the node's error record); it never aborts a scan.

    ``kind`` is one of :class:`vlcalc.model.ErrorKind` (or a kind from the probe document itself,
    kept as its string).  ``node`` is the inventory name; ``host``/``port`` where vlcalc tried to
    connect, when known.  The subclasses below carry the data of their failure as fields, the way
    paramiko's ``BadHostKeyException`` carries ``hostname``, ``key`` and ``expected_key``, so
    callers and tests read fields instead of parsing messages.  ``retryable`` (a class attribute)
    says whether a new connection attempt may help; ``attempts`` is how many were made;
    ``jump_host`` is the ProxyJump host the failure happened at or through (``host``/``port`` then
    say which machine).

    Example: ``NodeError("unreachable", "connection refused", node="node01")``;
    ``str(exc) == "node01: connection refused"``.
    """

    retryable: ClassVar[bool] = False

    def __init__(
        self,
        kind: ErrorKind | str,
        message: str,
        *,
        node: str | None = None,
        host: str | None = None,
        port: int | None = None,
    ):
        self.kind = kind
        self.message = message
        self.node = node
        self.host = host
        self.port = port
        self.jump_host: str | None = None
        self.attempts = 1
        super().__init__(message)

    def __str__(self) -> str:
        # ``node`` is often filled in after the fact (the transport knows the inventory name only
        # at its top), so the text is composed when asked for.
        return f"{self.node}: {self.message}" if self.node else self.message


class ConfigError(NodeError):
    """The SSH client configuration for this node cannot be used (unreadable ssh_config, a bad
    ``Port``, a ``Match exec`` that fails).  ``path`` is the file, when one is to blame."""

    def __init__(self, message: str, *, path: str | None = None, host: str | None = None):
        super().__init__(ErrorKind.UNREACHABLE, message, host=host)
        self.path = path


class JumpLoopError(ConfigError):
    """ProxyJump hosts that lead back to themselves (OpenSSH: "jumphost loop via X").  ``chain``
    is the route from the first jump host to the one that repeats, e.g. ``("bastion",
    "bastion")``."""

    def __init__(self, message: str, *, chain: tuple[str, ...]):
        super().__init__(message, host=chain[-1] if chain else None)
        self.chain = chain


class ConnectError(NodeError):
    """No TCP connection (refused, no route, reset), or a jump host could not open the forwarded
    connection.  ``errno`` is the OS error number when there was one.  Retryable."""

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        host: str,
        port: int,
        errno: int | None = None,
        jump_host: str | None = None,
    ):
        super().__init__(ErrorKind.UNREACHABLE, message, host=host, port=port)
        self.errno = errno
        self.jump_host = jump_host


class NameLookupError(NodeError):
    """The host name does not resolve.  ``gai_errno`` is ``getaddrinfo``'s error number."""

    def __init__(self, message: str, *, host: str, port: int, gai_errno: int | None):
        super().__init__(ErrorKind.UNREACHABLE, message, host=host, port=port)
        self.gai_errno = gai_errno


class NameLookupRetryError(NameLookupError):
    """A temporary name lookup failure (``EAI_AGAIN``): worth another attempt."""

    retryable = True


class ConnectionClosedError(NodeError):
    """The server accepted TCP and closed it before the SSH handshake ended (sshd's MaxStartups,
    not an SSH server).  ``phase`` names what was awaited.  Retryable."""

    retryable = True

    def __init__(self, message: str, *, host: str, port: int, phase: str):
        super().__init__(ErrorKind.UNREACHABLE, message, host=host, port=port)
        self.phase = phase


class ConnectionLostError(NodeError):
    """An established connection failed (handshake error, dropped during authentication or
    while the command ran).  ``phase`` names what was going on.  Not retried: the node may have
    started the command."""

    def __init__(self, message: str, *, host: str | None, port: int | None, phase: str):
        super().__init__(ErrorKind.UNREACHABLE, message, host=host, port=port)
        self.phase = phase


class NodeTimeoutError(NodeError):
    """A phase or the whole node ran out of time.  ``phase`` names it (``"TCP connect"``,
    ``"authentication"``...), ``limit_s`` is the limit that expired and ``node_deadline`` says
    whether that was the node deadline rather than the phase's own limit."""

    def __init__(
        self,
        message: str,
        *,
        phase: str,
        limit_s: float,
        node_deadline: bool,
        host: str | None = None,
        port: int | None = None,
    ):
        super().__init__(ErrorKind.TIMEOUT, message, host=host, port=port)
        self.phase = phase
        self.limit_s = limit_s
        self.node_deadline = node_deadline


class ConnectTimeoutError(NodeTimeoutError):
    """The TCP connect (or the forwarded connection through a jump host) timed out.  Retryable."""

    retryable = True


class HostKeyError(NodeError):
    """The server's host key is not the one known_hosts expects.  ``key_type`` and
    ``offered_fingerprint`` (``SHA256:...``) describe what the server offered, ``known_hosts_name``
    is the name looked up (``[host]:port``) and ``known_hosts_path`` the file to fix.  The
    subclass says which: its ``error_kind``, and its message (the same for both transports;
    ``hint`` adds a transport's own note to it)."""

    error_kind: ClassVar[ErrorKind] = ErrorKind.HOST_KEY_CHANGED

    def __init__(
        self,
        *,
        host: str,
        port: int,
        known_hosts_name: str,
        known_hosts_path: str,
        key_type: str,
        offered_fingerprint: str,
        expected_fingerprints: tuple[str, ...] = (),
        hint: str = "",
    ):
        self.known_hosts_name = known_hosts_name
        self.known_hosts_path = known_hosts_path
        self.key_type = key_type
        self.offered_fingerprint = offered_fingerprint
        self.expected_fingerprints = expected_fingerprints
        super().__init__(self.error_kind, self._describe(host, port) + hint, host=host, port=port)

    def _describe(self, host: str, port: int) -> str:
        name, path = self.known_hosts_name, self.known_hosts_path
        has = ", ".join(self.expected_fingerprints) or "another key"
        return (
            f"HOST KEY CHANGED for {name}: it offered {self.key_type} {self.offered_fingerprint}"
            f" but {path} has {has}. This may be a man-in-the-middle attack, or the host was"
            " reinstalled. Verify the new key out of band, then replace the old one"
            f" (`ssh-keygen -R '{name}' -f {path}`); --accept-new does not replace changed keys"
        )

    @property
    def expected_fingerprint(self) -> str | None:
        """The first expected fingerprint (known_hosts usually has one key per type)."""
        return self.expected_fingerprints[0] if self.expected_fingerprints else None


class HostKeyUnknownError(HostKeyError):
    """known_hosts has no key for the host."""

    error_kind = ErrorKind.HOST_KEY_UNKNOWN

    def _describe(self, host: str, port: int) -> str:
        port_flag = f"-p {port} " if port != 22 else ""
        return (
            f"the host key of {self.known_hosts_name} is not in {self.known_hosts_path}: it"
            f" offered {self.key_type} {self.offered_fingerprint}. Verify that fingerprint, then"
            f" add it with `ssh-keyscan -t {self.key_type} {port_flag}{host} >>"
            f" {self.known_hosts_path}`, or trust new hosts on first use with --accept-new"
        )


class HostKeyChangedError(HostKeyError):
    """known_hosts has other keys for the host, of any type (OpenSSH's rule: the server offered
    none of them): ``expected_fingerprints`` (for a ``@revoked`` key: none)."""


class HostKeyRevokedError(HostKeyChangedError):
    """The offered key is marked ``@revoked`` in known_hosts."""

    def _describe(self, host: str, port: int) -> str:
        return (
            f"the {self.key_type} host key {self.offered_fingerprint} of {self.known_hosts_name}"
            " is marked @revoked in known_hosts; refusing to connect"
        )


class AuthError(NodeError):
    """Public-key login failed.  ``user`` is the login name, ``tried`` the keys offered (path or
    agent comment with type and fingerprint, never key material), ``allowed_methods`` what the
    server said it accepts (``None``: it did not say), ``skipped`` the key files that could not be
    used and why."""

    def __init__(
        self,
        message: str,
        *,
        host: str,
        port: int,
        user: str,
        tried: tuple[str, ...],
        allowed_methods: tuple[str, ...] | None = None,
        skipped: tuple[str, ...] = (),
    ):
        super().__init__(ErrorKind.AUTH_FAILED, message, host=host, port=port)
        self.user = user
        self.tried = tried
        self.allowed_methods = allowed_methods
        self.skipped = skipped


class OutputTooLargeError(NodeError):
    """The command printed more than ``limit_bytes`` on stdout; reading stopped there."""

    def __init__(self, message: str, *, limit_bytes: int):
        super().__init__(ErrorKind.BAD_OUTPUT, message)
        self.limit_bytes = limit_bytes


class CommandFailedError(NodeError):
    """The command ran but its answer is unusable: ``exit_status`` (``None`` when it never
    reported one) and the last bytes of its stderr, ``stderr_tail``.  For judges of a node's
    answer (``sudo-failed``, ``no-python``, ``probe-failed``)."""

    def __init__(
        self,
        kind: ErrorKind | str,
        message: str,
        *,
        node: str | None = None,
        exit_status: int | None,
        stderr_tail: bytes = b"",
    ):
        super().__init__(kind, message, node=node)
        self.exit_status = exit_status
        self.stderr_tail = stderr_tail


class UnsupportedConfigError(ConfigError):
    """The ssh_config of this host asks for something the paramiko transport cannot do exactly
    as OpenSSH would (a smartcard, a security key, GSSAPI, connection sharing, a restricted
    algorithm list...), so the host is refused rather than reached some other way.  ``option``
    is the ssh_config keyword (lower case), ``value`` its value, ``path`` the file that set it
    (``"command line"`` for the inventory's ``-o`` options).  The message names the way out:
    ``--transport openssh``.

    Example: ``UnsupportedConfigError("...", option="pkcs11provider", value="/usr/lib/p11.so",
    path="/home/ops/.ssh/config")``.
    """

    def __init__(
        self,
        message: str,
        *,
        option: str,
        value: str,
        path: str | None = None,
        host: str | None = None,
    ):
        super().__init__(message, path=path, host=host)
        self.option = option
        self.value = value
