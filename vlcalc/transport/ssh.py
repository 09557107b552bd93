"""The SSH transport: one paramiko connection per node run, strict host keys, phase deadlines.

``SSHTransport().run(target, "python3 -", probe_source, timeouts=Timeouts(), max_stdout=1 << 20)``
connects to ``target`` as OpenSSH would (``~/.ssh/config``: HostName, User, Port, IdentityFile,
IdentitiesOnly, ProxyJump, HostKeyAlias, HashKnownHosts, UserKnownHostsFile), checks the server's
host key against ``known_hosts`` *before* authenticating, authenticates with public keys only,
runs the command, writes stdin, and drains stdout and stderr until the command ends.

Everything that is the same for every node -- the parsed ssh_config, the known_hosts index, the
loaded private keys, the ssh-agent key list, the connections to jump hosts -- is built once per
transport, lazily and under a lock, because a scan runs ``run`` from a thread pool for hundreds of
nodes.

Phases and their limits (each capped by ``node_s``, counted from the start of ``run`` and
including retries): ``connect_s`` for the TCP connect (or the ``direct-tcpip`` channel through a
jump host), ``banner_s`` for the SSH banner *and* the key exchange, ``auth_s`` for all key
attempts together, ``exec_s`` from opening the session to the exit status.  The host key is
checked between key exchange and authentication, so a refused host never sees a login attempt.
``StrictHostKeyChecking`` in ssh_config is ignored: checking cannot be turned off.

Failures are :class:`vlcalc.errors.NodeError` with ``kind`` one of ``unreachable``,
``auth-failed``, ``host-key-unknown``, ``host-key-changed``, ``timeout`` or ``bad-output``.
Only failures to *connect* (refused, no route, reset or closed before the SSH handshake, a TCP
connect timeout) are retried, ``Timeouts.retries`` times with jittered exponential backoff, and
never past the node deadline.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import getpass
import hashlib
import heapq
import hmac
import itertools
import logging
import os
import random
import select
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from vlcalc.errors import NodeError
from vlcalc.transport.base import RunResult, Target, Timeouts

# paramiko.config imports ``invoke`` (when it is installed) only to run ``Match exec`` lines; that
# import pulls in asyncio, unittest.mock and a vendored YAML: ~55 ms of CPU at every start
# (measured: `import paramiko` 160 -> 105 ms).  Keep it out while paramiko loads and import it
# when an ssh_config actually has ``Match exec`` (:func:`_enable_match_exec`).
_BLOCK_INVOKE = "invoke" not in sys.modules
if _BLOCK_INVOKE:
    sys.modules["invoke"] = None  # type: ignore[assignment]
try:
    import paramiko
    import paramiko.config
finally:
    if _BLOCK_INVOKE:
        del sys.modules["invoke"]

STDERR_TAIL_BYTES = 4096
DEFAULT_KEY_NAMES = ("id_ed25519", "id_ecdsa", "id_rsa")
_READ_CHUNK = 65536
#: paramiko logs every failed handshake at ERROR with a traceback from its own thread; with no
#: handler configured that reaches stderr through logging's last resort.  The failure is reported
#: as a NodeError instead, so paramiko's records go to this logger, silent unless configured.
PARAMIKO_LOGGER = "vlcalc.transport.ssh.paramiko"
logging.getLogger(PARAMIKO_LOGGER).addHandler(logging.NullHandler())
_MAX_JUMPS = 8

#: paramiko's own algorithm preferences are kept, except that the AEAD ciphers come first
#: (:data:`PREFERRED_CIPHERS`).  Measured against a paramiko server (client CPU per run, 60 runs x
#: 2 rounds): mlkem768x25519 2.9-3.2 ms, curve25519 2.8-3.2 ms, ecdh-nistp256 3.3-3.4 ms.
#: Disabling "slow" algorithms buys nothing measurable, so ``disabled_algorithms`` defaults to none.
DEFAULT_DISABLED_ALGORITHMS: dict[str, list[str]] = {}

#: Offered before paramiko's default aes128-ctr.  With a MAC cipher paramiko checks every
#: incoming packet's MAC in a pure-Python byte loop (``util.constant_time_bytes_eq``, ~12 % of a
#: scan's CPU in a profile); GCM authenticates inside OpenSSL.  Against OpenSSH sshd (200-node
#: loopback scan, 16 forks, in-process, 2 alternations): 4.2 -> 3.45 ms of client CPU per node.
#: (Against a paramiko server the two were within the noise: that server pays the same loop.)
#: OpenSSH has offered these since 6.2; a server without them still negotiates aes-ctr.
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


# ----------------------------------------------------------------------------- small helpers


class _Failure(Exception):
    """Internal: a NodeError in the making, plus whether a new connection attempt may help."""

    def __init__(self, kind: str, message: str, *, retryable: bool = False):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retryable = retryable


def _fingerprint(blob: bytes) -> str:
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def _known_hosts_name(host: str, port: int) -> str:
    """The name OpenSSH looks up and writes: ``host`` on port 22, ``[host]:port`` otherwise."""
    return host if port == 22 else f"[{host}]:{port}"


def _hash_name(name: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else os.urandom(20)
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


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


# ----------------------------------------------------------------------------- known_hosts


@dataclass
class _KnownHostsFile:
    """An index of one OpenSSH known_hosts file: plain names, hashed names, wildcard patterns.

    paramiko's ``HostKeys.load`` re-checks every line against all earlier ones (quadratic in the
    file size, with an HMAC per hashed line); this index parses each line once and compares raw
    key blobs, so a 1,000-host file costs milliseconds.
    """

    path: str
    plain: dict[str, list[tuple[str, bytes]]] = field(default_factory=dict)
    hashed: list[tuple[Any, Any, bytes, str, bytes]] = field(default_factory=list)
    patterns: list[tuple[str, str, bytes]] = field(default_factory=list)
    revoked: set[bytes] = field(default_factory=set)

    @classmethod
    def load(cls, path: str) -> _KnownHostsFile:
        index = cls(path)
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                lines = handle.read().splitlines()
        except FileNotFoundError:
            return index
        for line in lines:
            index._add_line(line)
        return index

    def _add_line(self, line: str) -> None:
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            return
        marker = None
        if fields[0].startswith("@"):
            marker, fields = fields[0], fields[1:]
        if len(fields) < 3:
            return
        names, key_type, key_b64 = fields[0], fields[1], fields[2]
        try:
            blob = base64.b64decode(key_b64, validate=True)
        except ValueError:
            return
        if marker == "@revoked":
            self.revoked.add(blob)
            return
        if marker is not None:  # @cert-authority: host certificates are not supported
            return
        self._add(names, key_type, blob)

    def _add(self, names: str, key_type: str, blob: bytes) -> None:
        if names.startswith("|1|"):
            try:
                _, _, salt_b64, digest_b64 = names.split("|", 3)
                salt, digest = base64.b64decode(salt_b64), base64.b64decode(digest_b64)
            except ValueError:
                return
            # HMAC-SHA1 with its key pads hashed once: a lookup must try every hashed line, and
            # this is 0.9 us a line instead of hmac.new's 3.3 us (1,000 hosts: 0.9 ms a node).
            key = (salt if len(salt) <= 64 else hashlib.sha1(salt).digest()).ljust(64, b"\0")
            inner = hashlib.sha1(bytes(byte ^ 0x36 for byte in key))
            outer = hashlib.sha1(bytes(byte ^ 0x5C for byte in key))
            self.hashed.append((inner, outer, digest, key_type, blob))
            return
        for name in names.split(","):
            if name.startswith("!"):
                continue  # negated patterns only ever remove matches; rare in practice
            if any(ch in name for ch in "*?"):
                self.patterns.append((name, key_type, blob))
            else:
                self.plain.setdefault(name, []).append((key_type, blob))

    def lookup(self, name: str) -> list[tuple[str, bytes]]:
        found = list(self.plain.get(name, ()))
        encoded = name.encode()
        for inner, outer, digest, key_type, blob in self.hashed:
            first = inner.copy()
            first.update(encoded)
            second = outer.copy()
            second.update(first.digest())
            if second.digest() == digest:
                found.append((key_type, blob))
        if self.patterns:
            import fnmatch

            for pattern, key_type, blob in self.patterns:
                if fnmatch.fnmatchcase(name, pattern):
                    found.append((key_type, blob))
        return found


# ----------------------------------------------------------------------------- ssh_config


class _IndexedSSHConfig:
    """paramiko's ``SSHConfig.lookup`` with an index in front of it.

    paramiko matches a host against every block in order: with one ``Host`` block per node, a
    1,000-node ssh_config cost 23 ms of CPU per lookup (measured), more than the whole SSH run.
    Blocks whose patterns are all literal names can only match those names, so a lookup hands
    paramiko just the literal blocks for this host plus every wildcard, negated and ``Match``
    block, in file order -- the same answer.  With ``CanonicalizeHostname`` a second lookup uses
    another name, so then the index is bypassed.
    """

    def __init__(self, config: paramiko.SSHConfig):
        self.config = config
        self.entries: list[dict[str, Any]] = list(config.__dict__["_config"])
        self.literal: dict[str, list[int]] = {}
        self.always: list[int] = []
        self.indexed = True
        for position, entry in enumerate(self.entries):
            if "canonicalizehostname" in entry.get("config", {}):
                self.indexed = False
            patterns = entry.get("host")
            if patterns and not any(ch in p for p in patterns for ch in "*?!"):
                for pattern in patterns:
                    self.literal.setdefault(pattern, []).append(position)
            else:
                self.always.append(position)

    def lookup(self, host: str) -> paramiko.SSHConfigDict:
        if not self.indexed:
            return self.config.lookup(host)
        positions = sorted({*self.literal.get(host, ()), *self.always})
        subset = paramiko.SSHConfig()
        subset.__dict__["_config"] = [self.entries[i] for i in positions]
        return subset.lookup(host)


# ----------------------------------------------------------------------------- agent


class _LockedAgent(paramiko.Agent):
    """paramiko's Agent speaks to ssh-agent over one socket with no lock; transports sign from
    their own threads concurrently, so serialise the request/response pairs."""

    def __init__(self) -> None:
        self._request_lock = threading.Lock()
        super().__init__()

    def _send_message(self, msg: Any) -> Any:
        with self._request_lock:
            return super()._send_message(msg)  # type: ignore[misc]


# ----------------------------------------------------------------------------- deadline reaper


class _Alarm:
    __slots__ = ("action", "cancelled", "deadline", "fired")

    def __init__(self, deadline: float, action: Callable[[], None]):
        self.deadline = deadline
        self.action = action
        self.cancelled = False
        self.fired = False


class _Reaper:
    """One daemon thread that closes connections whose deadline passed.

    Every blocking paramiko call has its own timeout except a few (``exec_command`` waits for the
    server's reply forever); closing the transport at the deadline unblocks all of them.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Alarm]] = []
        self._cv = threading.Condition()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, deadline: float, action: Callable[[], None]) -> _Alarm:
        alarm = _Alarm(deadline, action)
        with self._cv:
            heapq.heappush(self._heap, (deadline, next(self._seq), alarm))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="vlcalc-ssh-reaper", daemon=True
                )
                self._thread.start()
            self._cv.notify()
        return alarm

    def cancel(self, alarm: _Alarm) -> None:
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


_REAPER = _Reaper()


# ----------------------------------------------------------------------------- endpoints


@dataclass(frozen=True)
class _Endpoint:
    """A host after ssh_config: where to connect, as whom, with which keys, through what."""

    alias: str
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...]
    explicit_identities: bool
    identities_only: bool
    proxy_jump: tuple[str, ...]
    known_hosts_name: str
    hash_known_hosts: bool
    user_known_hosts: str

    @property
    def label(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"


class _Attempt:
    """Per-run state: the deadline and the phase clock."""

    def __init__(self, node: str, timeouts: Timeouts):
        self.node = node
        self.timeouts = timeouts
        self.started = time.monotonic()
        self.deadline = self.started + timeouts.node_s

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def phase_deadline(self, phase_s: float) -> float:
        return min(time.monotonic() + phase_s, self.deadline)

    def timeout(self, phase: str, phase_s: float, deadline: float, what: str = "") -> _Failure:
        """A ``timeout`` failure naming the phase, and the node deadline when that cut it short."""
        if deadline == self.deadline:
            text = f"the node deadline ({self.timeouts.node_s:g} s) passed during {phase}"
        else:
            text = f"{phase} timed out after {phase_s:g} s"
        return _Failure("timeout", f"{text}: {what}" if what else text)


# ----------------------------------------------------------------------------- the transport


class SSHTransport:
    """Run commands on nodes over SSH with paramiko.  See the module docstring.

    ``ssh_config_path``: ``None`` reads ``~/.ssh/config`` then ``/etc/ssh/ssh_config`` (either may
    be missing); a path reads only that file.  ``known_hosts_path``: ``None`` uses the config's
    ``UserKnownHostsFile`` or ``~/.ssh/known_hosts`` (plus the read-only
    ``/etc/ssh/ssh_known_hosts``); a path uses only that file.  ``accept_new`` records the key of a
    host that has no key in known_hosts yet (OpenSSH ``StrictHostKeyChecking=accept-new``); a
    *changed* key is always refused.  ``use_agent`` offers the keys of ``$SSH_AUTH_SOCK``.
    ``retry_backoff_s`` is the first retry's mean delay (doubling, +-50 % jitter).
    ``disabled_algorithms`` goes to paramiko (default: :data:`DEFAULT_DISABLED_ALGORITHMS`).
    """

    def __init__(
        self,
        ssh_config_path: str | os.PathLike[str] | None = None,
        known_hosts_path: str | os.PathLike[str] | None = None,
        accept_new: bool = False,
        use_agent: bool = True,
        *,
        retry_backoff_s: float = 0.25,
        disabled_algorithms: dict[str, list[str]] | None = None,
    ) -> None:
        self.ssh_config_path = None if ssh_config_path is None else os.fspath(ssh_config_path)
        self.known_hosts_path = None if known_hosts_path is None else os.fspath(known_hosts_path)
        self.accept_new = accept_new
        self.use_agent = use_agent
        self.retry_backoff_s = retry_backoff_s
        self.disabled_algorithms = (
            DEFAULT_DISABLED_ALGORITHMS if disabled_algorithms is None else disabled_algorithms
        )
        self._lock = threading.RLock()
        self._config: _IndexedSSHConfig | None = None
        self._known: dict[str, _KnownHostsFile] = {}
        self._known_write_lock = threading.Lock()
        self._keys: dict[str, paramiko.PKey | str] = {}  # path -> key, or why it is unusable
        self._agent: _LockedAgent | None = None
        self._agent_keys: tuple[paramiko.PKey, ...] | None = None
        self._jumps: dict[tuple[str, ...], paramiko.Transport] = {}
        self._jump_locks: dict[tuple[str, ...], threading.Lock] = {}
        self._random = random.Random()

    # ------------------------------------------------------------------ public API

    def run(
        self,
        target: Target,
        command: str,
        stdin: bytes,
        *,
        timeouts: Timeouts,
        max_stdout: int,
    ) -> RunResult:
        attempt = _Attempt(target.name, timeouts)
        try:
            endpoint = self._endpoint(target.host, target.port, target.user, target.key_file)
            client = self._connect_with_retries(endpoint, attempt)
        except _Failure as failure:
            raise NodeError(failure.kind, failure.message, node=target.name) from failure.__cause__
        try:
            return self._exec(client, command, stdin, attempt, max_stdout, endpoint)
        except _Failure as failure:
            raise NodeError(failure.kind, failure.message, node=target.name) from failure.__cause__
        finally:
            client.close()

    def close(self) -> None:
        """Close the cached jump-host connections and the ssh-agent connection."""
        with self._lock:
            jumps, self._jumps = list(self._jumps.values()), {}
            agent, self._agent, self._agent_keys = self._agent, None, None
        for transport in jumps:
            transport.close()
        if agent is not None:
            agent.close()

    def __enter__(self) -> SSHTransport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ configuration

    def _ssh_config(self) -> _IndexedSSHConfig:
        config = self._config
        if config is not None:
            return config
        with self._lock:
            if self._config is None:
                paths = (
                    [self.ssh_config_path]
                    if self.ssh_config_path is not None
                    else [os.path.expanduser("~/.ssh/config"), "/etc/ssh/ssh_config"]
                )
                parsed = paramiko.SSHConfig()
                for path in paths:
                    try:
                        with open(path, encoding="utf-8") as handle:
                            parsed.parse(handle)
                    except FileNotFoundError:
                        continue
                    except (OSError, UnicodeError, paramiko.ConfigParseError) as exc:
                        raise _Failure(
                            "unreachable", f"cannot read ssh config {path}: {exc}"
                        ) from exc
                if any(
                    match.get("type") == "exec"
                    for entry in parsed.__dict__["_config"]
                    for match in entry.get("matches", ())
                ):
                    _enable_match_exec()
                self._config = _IndexedSSHConfig(parsed)
            return self._config

    def _endpoint(
        self,
        host: str,
        port: int | None,
        user: str | None,
        key_file: str | None,
    ) -> _Endpoint:
        try:
            options = self._ssh_config().lookup(host)
        except Exception as exc:  # paramiko raises e.g. ImportError for 'Match exec' w/o invoke
            raise _Failure(
                "unreachable", f"cannot evaluate ssh config for {host!r}: {exc}"
            ) from exc
        hostname = str(options.get("hostname", host))
        try:
            real_port = port if port is not None else int(options.get("port", 22))
        except ValueError as exc:
            raise _Failure(
                "unreachable", f"ssh config has a bad Port for {host!r}: {options.get('port')!r}"
            ) from exc
        real_user = user or str(options.get("user") or getpass.getuser())
        config_identities = [os.path.expanduser(str(p)) for p in options.get("identityfile", [])]
        if key_file:
            identities: tuple[str, ...] = (os.path.expanduser(key_file),)
        else:
            identities = tuple(config_identities)
        explicit = bool(identities)
        if not explicit:
            home = os.path.expanduser("~/.ssh")
            identities = tuple(os.path.join(home, name) for name in DEFAULT_KEY_NAMES)
        jump = str(options.get("proxyjump", "") or "")
        jumps = (
            ()
            if jump.lower() in ("", "none")
            else tuple(part.strip() for part in jump.split(",") if part.strip())
        )
        alias = str(options.get("hostkeyalias", "") or "")
        known_name = alias or _known_hosts_name(hostname, real_port)
        user_known = str(options.get("userknownhostsfile", "") or "").split()
        known_path = self.known_hosts_path or os.path.expanduser(
            user_known[0] if user_known else "~/.ssh/known_hosts"
        )
        return _Endpoint(
            alias=host,
            hostname=hostname,
            port=real_port,
            user=real_user,
            identity_files=identities,
            explicit_identities=explicit,
            identities_only=str(options.get("identitiesonly", "no")).lower() == "yes",
            proxy_jump=jumps,
            known_hosts_name=known_name,
            hash_known_hosts=str(options.get("hashknownhosts", "no")).lower() == "yes",
            user_known_hosts=known_path,
        )

    def _known_hosts(self, path: str) -> list[_KnownHostsFile]:
        files = [path]
        if self.known_hosts_path is None:
            files.append("/etc/ssh/ssh_known_hosts")
        result = []
        for one in files:
            index = self._known.get(one)
            if index is None:
                with self._lock:
                    index = self._known.get(one)
                    if index is None:
                        index = _KnownHostsFile.load(one)
                        self._known[one] = index
            result.append(index)
        return result

    # ------------------------------------------------------------------ keys

    def _key(self, path: str) -> paramiko.PKey | str:
        cached = self._keys.get(path)
        if cached is not None:
            return cached
        with self._lock:
            cached = self._keys.get(path)
            if cached is None:
                cached = self._load_key(path)
                self._keys[path] = cached
            return cached

    @staticmethod
    def _load_key(path: str) -> paramiko.PKey | str:
        try:
            return paramiko.PKey.from_path(path)
        except FileNotFoundError:
            return "missing"
        except paramiko.PasswordRequiredException:
            return "encrypted; add it to ssh-agent (ssh-add) to use it"
        except (paramiko.SSHException, OSError, ValueError) as exc:
            return f"unreadable ({type(exc).__name__})"

    def _agent_key_list(self) -> tuple[paramiko.PKey, ...]:
        if not self.use_agent or not os.environ.get("SSH_AUTH_SOCK"):
            return ()
        keys = self._agent_keys
        if keys is not None:
            return keys
        with self._lock:
            if self._agent_keys is None:
                try:
                    agent = _LockedAgent()
                    self._agent = agent
                    self._agent_keys = tuple(agent.get_keys())
                except (paramiko.SSHException, OSError):
                    self._agent_keys = ()
            return self._agent_keys

    def _auth_candidates(
        self, endpoint: _Endpoint, notes: list[str]
    ) -> Iterator[tuple[paramiko.PKey, str]]:
        """Keys to offer, in order: the explicit identity (key_file, else IdentityFile), the
        agent's keys, then -- only when nothing explicit was configured -- the default files."""
        seen: set[bytes] = set()
        explicit = endpoint.identity_files if endpoint.explicit_identities else ()
        defaults = () if endpoint.explicit_identities else endpoint.identity_files
        for path in explicit:
            key = self._key(path)
            if isinstance(key, str):
                notes.append(f"{path}: {key}")
                continue
            seen.add(key.asbytes())
            yield key, f"{path} ({key.get_name()} {key.fingerprint})"
        explicit_blobs = set(seen)
        for key in self._agent_key_list():
            blob = key.asbytes()
            if blob in seen or (endpoint.identities_only and blob not in explicit_blobs):
                continue
            seen.add(blob)
            comment = getattr(key, "comment", "") or ""
            yield key, f"agent key {comment!r} ({key.get_name()} {key.fingerprint})"
        for path in defaults:
            key = self._key(path)
            if isinstance(key, str):
                if key != "missing":
                    notes.append(f"{path}: {key}")
                continue
            if key.asbytes() in seen:
                continue
            seen.add(key.asbytes())
            yield key, f"{path} ({key.get_name()} {key.fingerprint})"

    # ------------------------------------------------------------------ connecting

    def _connect_with_retries(self, endpoint: _Endpoint, attempt: _Attempt) -> paramiko.Transport:
        tries = 1 + max(0, attempt.timeouts.retries)
        for number in range(1, tries + 1):
            try:
                return self._connect(endpoint, attempt, jump_depth=0)
            except _Failure as failure:
                if not failure.retryable or number == tries:
                    if number > 1:
                        failure.message += f" (after {number} attempts)"
                    raise
                delay = self.retry_backoff_s * (2 ** (number - 1))
                delay *= self._random.uniform(0.5, 1.5)
                if delay >= attempt.remaining() - 0.05:
                    failure.message += f" (after {number} attempts; no time left to retry)"
                    raise
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _connect(
        self, endpoint: _Endpoint, attempt: _Attempt, *, jump_depth: int
    ) -> paramiko.Transport:
        """An authenticated paramiko Transport to ``endpoint`` (through its jump hosts)."""
        sock = self._open_socket(endpoint, attempt, jump_depth)
        try:
            transport = self._handshake(sock, endpoint, attempt)
        except BaseException:
            sock.close()
            raise
        return transport

    def _open_socket(
        self, endpoint: _Endpoint, attempt: _Attempt, jump_depth: int
    ) -> socket.socket | paramiko.Channel:
        if endpoint.proxy_jump:
            return self._jump_channel(endpoint.proxy_jump, endpoint, attempt, jump_depth)
        phase_s = attempt.timeouts.connect_s
        deadline = attempt.phase_deadline(phase_s)
        try:
            sock = _tcp_connect(endpoint.hostname, endpoint.port, deadline)
        except socket.gaierror as exc:
            retry = exc.errno == socket.EAI_AGAIN
            raise _Failure(
                "unreachable",
                f"DNS lookup of {endpoint.hostname!r} failed: {exc.strerror or exc}",
                retryable=retry,
            ) from exc
        except TimeoutError as exc:
            failure = attempt.timeout(
                "TCP connect", phase_s, deadline, f"to {endpoint.hostname}:{endpoint.port}"
            )
            failure.retryable = True
            raise failure from exc
        except OSError as exc:
            raise _Failure(
                "unreachable",
                f"{endpoint.hostname}:{endpoint.port}: {_describe_os_error(exc)}",
                retryable=True,
            ) from exc
        return sock

    def _jump_channel(
        self,
        jumps: Sequence[str],
        endpoint: _Endpoint,
        attempt: _Attempt,
        jump_depth: int,
    ) -> paramiko.Channel:
        """A ``direct-tcpip`` channel to ``endpoint`` through the last of ``jumps`` (which is
        reached through the ones before it)."""
        if jump_depth >= _MAX_JUMPS:
            raise _Failure("unreachable", f"ProxyJump chain longer than {_MAX_JUMPS} hosts")
        jump = self._jump_transport(tuple(jumps), attempt, jump_depth)
        phase_s = attempt.timeouts.connect_s
        deadline = attempt.phase_deadline(phase_s)
        try:
            return jump.open_channel(
                "direct-tcpip",
                (endpoint.hostname, endpoint.port),
                ("127.0.0.1", 0),
                timeout=max(0.001, deadline - time.monotonic()),
            )
        except paramiko.ChannelException as exc:
            raise _Failure(
                "unreachable",
                f"jump host {jumps[-1]} could not connect to {endpoint.hostname}:{endpoint.port}"
                f" ({exc.text or exc.code})",
                retryable=True,
            ) from exc
        except (paramiko.SSHException, EOFError, OSError) as exc:
            self._drop_jump(tuple(jumps), jump)
            if "Timeout opening channel" in str(exc):
                raise attempt.timeout(
                    "TCP connect", phase_s, deadline, f"through jump host {jumps[-1]}"
                ) from exc
            raise _Failure(
                "unreachable",
                f"lost the connection to jump host {jumps[-1]}: {exc}",
                retryable=True,
            ) from exc

    def _jump_transport(
        self, chain: tuple[str, ...], attempt: _Attempt, jump_depth: int
    ) -> paramiko.Transport:
        with self._lock:
            cached = self._jumps.get(chain)
            if cached is not None and cached.is_active():
                return cached
            lock = self._jump_locks.setdefault(chain, threading.Lock())
        with lock:  # one thread connects to a jump host, the others wait for its connection
            with self._lock:
                cached = self._jumps.get(chain)
                if cached is not None and cached.is_active():
                    return cached
            spec = chain[-1]
            user, host, port = _parse_jump(spec)
            endpoint = self._endpoint(host, port, user, None)
            if len(chain) > 1:
                endpoint = _replace_jumps(endpoint, chain[:-1])
            try:
                transport = self._connect(endpoint, attempt, jump_depth=jump_depth + 1)
            except _Failure as failure:
                failure.message = f"jump host {spec}: {failure.message}"
                raise
            transport.set_keepalive(30)
            with self._lock:
                self._jumps[chain] = transport
            return transport

    def _drop_jump(self, chain: tuple[str, ...], transport: paramiko.Transport) -> None:
        with self._lock:
            if self._jumps.get(chain) is transport:
                del self._jumps[chain]
        transport.close()

    def _handshake(
        self,
        sock: socket.socket | paramiko.Channel,
        endpoint: _Endpoint,
        attempt: _Attempt,
    ) -> paramiko.Transport:
        transport = paramiko.Transport(sock, disabled_algorithms=self.disabled_algorithms)
        transport.set_log_channel(PARAMIKO_LOGGER)
        # The phases below have their own timeouts; the alarm (a little after the node deadline,
        # so those fire first and name their phase) only catches a server stuck mid-handshake.
        alarm = _REAPER.arm(attempt.deadline + 0.25, transport.close)
        phase = "the SSH handshake"
        try:
            known = self._known_keys(endpoint)
            if known:
                self._prefer_key_types(transport, [key_type for key_type, _ in known])
            _prefer_ciphers(transport)
            self._start(transport, endpoint, attempt)
            phase = "authentication"
            self._check_host_key(transport, endpoint, known)
            self._authenticate(transport, endpoint, attempt)
        except _Failure as failure:
            transport.close()
            if alarm.fired or (failure.kind == "unreachable" and attempt.remaining() <= 0):
                raise attempt.timeout(phase, attempt.timeouts.node_s, attempt.deadline) from None
            raise
        except BaseException:
            transport.close()
            raise
        finally:
            _REAPER.cancel(alarm)
        if alarm.fired:  # pragma: no cover - the phases above raise first
            transport.close()
            raise attempt.timeout(phase, attempt.timeouts.node_s, attempt.deadline)
        return transport

    @staticmethod
    def _prefer_key_types(transport: paramiko.Transport, known_types: list[str]) -> None:
        """Ask first for the host key types known_hosts has, as OpenSSH does, so a host with an
        ed25519 and an rsa key is not reported unknown just because we know only one of them."""
        options = transport.get_security_options()
        offered = list(options.key_types)
        wanted = []
        for key_type in known_types:
            names = ["rsa-sha2-512", "rsa-sha2-256"] if key_type == "ssh-rsa" else [key_type]
            wanted += [name for name in names if name in offered and name not in wanted]
        if wanted:
            options.key_types = tuple(wanted + [name for name in offered if name not in wanted])

    def _start(self, transport: paramiko.Transport, endpoint: _Endpoint, attempt: _Attempt) -> None:
        phase_s = attempt.timeouts.banner_s
        deadline = attempt.phase_deadline(phase_s)
        budget = max(0.001, deadline - time.monotonic())
        transport.banner_timeout = budget
        transport.handshake_timeout = budget
        try:
            transport.start_client(timeout=budget)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            cause = exc.__context__ or exc
            if isinstance(cause, (TimeoutError, socket.timeout)):
                raise attempt.timeout(
                    "waiting for the SSH banner",
                    phase_s,
                    deadline,
                    f"{endpoint.hostname}:{endpoint.port} accepted TCP but sent no SSH banner",
                ) from exc
            if isinstance(cause, (EOFError, ConnectionError)) or isinstance(exc, EOFError):
                phase = "the SSH banner" if not transport.remote_version else "key exchange"
                raise _Failure(
                    "unreachable",
                    f"{endpoint.hostname}:{endpoint.port} closed the connection before {phase}"
                    " (sshd MaxStartups reached, or not an SSH server)",
                    retryable=True,
                ) from exc
            raise _Failure(
                "unreachable",
                f"SSH handshake with {endpoint.hostname}:{endpoint.port} failed: {exc}",
            ) from exc
        if transport.completion_event is None or not transport.completion_event.is_set():
            phase = "waiting for the SSH banner" if not transport.remote_version else "key exchange"
            what = (
                f"{endpoint.hostname}:{endpoint.port} accepted TCP but sent no SSH banner"
                if not transport.remote_version
                else f"{endpoint.hostname}:{endpoint.port} ({transport.remote_version})"
            )
            raise attempt.timeout(phase, phase_s, deadline, what)
        if not transport.is_active():  # pragma: no cover - start_client raises in this case
            raise _Failure("unreachable", "the SSH handshake failed", retryable=True)

    def _known_keys(self, endpoint: _Endpoint) -> list[tuple[str, bytes]]:
        found: list[tuple[str, bytes]] = []
        for index in self._known_hosts(endpoint.user_known_hosts):
            found += index.lookup(endpoint.known_hosts_name)
        return found

    def _check_host_key(
        self,
        transport: paramiko.Transport,
        endpoint: _Endpoint,
        known: list[tuple[str, bytes]],
    ) -> None:
        key = transport.get_remote_server_key()
        key_type, blob = key.get_name(), key.asbytes()
        fingerprint = _fingerprint(blob)
        name = endpoint.known_hosts_name
        indexes = self._known_hosts(endpoint.user_known_hosts)
        if any(blob in index.revoked for index in indexes):
            raise _Failure(
                "host-key-changed",
                f"the {key_type} host key {fingerprint} of {name} is marked @revoked in"
                " known_hosts; refusing to connect",
            )
        if any(known_blob == blob for _, known_blob in known):
            return
        same_type = [b for t, b in known if _same_key_family(t, key_type)]
        if same_type:
            expected = ", ".join(_fingerprint(b) for b in same_type)
            raise _Failure(
                "host-key-changed",
                f"HOST KEY CHANGED for {name}: it offered {key_type} {fingerprint} but"
                f" {endpoint.user_known_hosts} has {expected}. This may be a"
                " man-in-the-middle attack, or the host was reinstalled. Verify the new key out of"
                f" band, then remove the old one (ssh-keygen -R '{name}' -f"
                f" {endpoint.user_known_hosts}) and add the new one; --accept-new does not"
                " replace changed keys",
            )
        if not self.accept_new:
            other = sorted({t for t, _ in known})
            also = f" (known_hosts has only {', '.join(other)} keys for it)" if other else ""
            port_flag = f"-p {endpoint.port} " if endpoint.port != 22 else ""
            raise _Failure(
                "host-key-unknown",
                f"the host key of {name} is not in {endpoint.user_known_hosts}{also}: it offered"
                f" {key_type} {fingerprint}. Verify that fingerprint, then add it with"
                f" `ssh-keyscan -t {key_type} {port_flag}{endpoint.hostname} >>"
                f" {endpoint.user_known_hosts}`, or trust new hosts on first use with"
                " --accept-new",
            )
        self._record_host_key(endpoint, key_type, blob)

    def _record_host_key(self, endpoint: _Endpoint, key_type: str, blob: bytes) -> None:
        path = endpoint.user_known_hosts
        name = endpoint.known_hosts_name
        index = self._known_hosts(path)[0]
        with self._known_write_lock:
            if any(b == blob for _, b in index.lookup(name)):
                return  # another thread recorded it meanwhile
            shown = _hash_name(name) if endpoint.hash_known_hosts else name
            line = f"{shown} {key_type} {base64.b64encode(blob).decode()}\n"
            directory = os.path.dirname(path)
            if directory:
                os.makedirs(directory, mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                try:
                    import fcntl

                    fcntl.flock(fd, fcntl.LOCK_EX)  # other vlcalc or ssh processes
                except ImportError:  # pragma: no cover - not POSIX
                    pass
                if os.fstat(fd).st_size > 0:
                    with open(path, "rb") as handle:
                        handle.seek(-1, os.SEEK_END)
                        if handle.read(1) != b"\n":
                            line = "\n" + line
                os.write(fd, line.encode())
            finally:
                os.close(fd)
            index._add(shown, key_type, blob)

    def _authenticate(
        self, transport: paramiko.Transport, endpoint: _Endpoint, attempt: _Attempt
    ) -> None:
        phase_s = attempt.timeouts.auth_s
        deadline = attempt.phase_deadline(phase_s)
        tried: list[str] = []
        skipped: list[str] = []
        allowed: list[str] | None = None
        for key, label in self._auth_candidates(endpoint, skipped):
            budget = deadline - time.monotonic()
            if budget <= 0:
                raise attempt.timeout("authentication", phase_s, deadline, _tried(tried))
            transport.auth_timeout = budget
            tried.append(label)
            try:
                remaining_methods = transport.auth_publickey(endpoint.user, key)
            except paramiko.BadAuthenticationType as exc:
                allowed = list(exc.allowed_types)
                break
            except paramiko.AuthenticationException as exc:
                if "timeout" in str(exc).lower():
                    raise attempt.timeout(
                        "authentication", phase_s, deadline, _tried(tried)
                    ) from exc
                if not transport.is_active():
                    # After a rejected key this is sshd's MaxAuthTries; on the first key it
                    # is a server that dropped us for some other reason.
                    raise _Failure(
                        "auth-failed" if len(tried) > 1 else "unreachable",
                        f"{endpoint.label} closed the connection during authentication"
                        f" ({_tried(tried)}; too many keys for sshd's MaxAuthTries?"
                        " set IdentityFile/IdentitiesOnly for this host)",
                    ) from exc
                continue
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise _Failure(
                    "unreachable",
                    f"{endpoint.label}: connection lost during authentication: {exc}",
                ) from exc
            if transport.is_authenticated():
                return
            if remaining_methods:
                allowed = list(remaining_methods)
                break
        notes = "; ".join(skipped)
        if not tried:
            sources = "the key file" if endpoint.explicit_identities else "the default key files"
            agent = "ssh-agent" if self.use_agent else "ssh-agent (disabled)"
            raise _Failure(
                "auth-failed",
                f"no usable key to log in as {endpoint.user}@{endpoint.hostname}: nothing in"
                f" {sources} or {agent}" + (f" ({notes})" if notes else ""),
            )
        text = f"{endpoint.label} refused public-key login for {endpoint.user}; {_tried(tried)}"
        if allowed is not None:
            text += f"; the server allows only: {', '.join(allowed) or 'nothing'}"
        if notes:
            text += f"; skipped: {notes}"
        raise _Failure("auth-failed", text)

    # ------------------------------------------------------------------ running

    def _exec(
        self,
        transport: paramiko.Transport,
        command: str,
        stdin: bytes,
        attempt: _Attempt,
        max_stdout: int,
        endpoint: _Endpoint,
    ) -> RunResult:
        phase_s = attempt.timeouts.exec_s
        deadline = attempt.phase_deadline(phase_s)
        alarm = _REAPER.arm(deadline, transport.close)
        try:
            return self._exec_inner(
                transport, command, stdin, deadline, max_stdout, endpoint, alarm
            )
        except _Failure:
            raise
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if alarm.fired or time.monotonic() >= deadline:
                raise attempt.timeout("running the command", phase_s, deadline) from exc
            raise _Failure(
                "unreachable",
                f"{endpoint.label}: the connection dropped while the command ran: {exc}",
            ) from exc
        except _ExecTimeout as exc:
            raise attempt.timeout("running the command", phase_s, deadline, str(exc)) from None
        finally:
            _REAPER.cancel(alarm)

    def _exec_inner(
        self,
        transport: paramiko.Transport,
        command: str,
        stdin: bytes,
        deadline: float,
        max_stdout: int,
        endpoint: _Endpoint,
        alarm: _Alarm,
    ) -> RunResult:
        channel = transport.open_session(timeout=max(0.001, deadline - time.monotonic()))
        try:
            channel.exec_command(command)
            return _drain(channel, stdin, deadline, max_stdout, endpoint, transport, alarm)
        finally:
            channel.close()


def _enable_match_exec() -> None:
    """Give paramiko the ``invoke`` module that was kept out of its import (see the top)."""
    if getattr(paramiko.config, "invoke", None) is not None:
        return
    try:
        import invoke
    except ImportError as exc:  # paramiko then raises this when it evaluates ``Match exec``
        paramiko.config.invoke_import_error = exc
    else:
        paramiko.config.invoke = invoke  # type: ignore[attr-defined]


def _prefer_ciphers(transport: paramiko.Transport) -> None:
    """Move :data:`PREFERRED_CIPHERS` that this paramiko knows to the front of its offer."""
    options = transport.get_security_options()
    offered = list(options.ciphers)
    first = [name for name in PREFERRED_CIPHERS if name in offered]
    if first:
        options.ciphers = tuple(first + [name for name in offered if name not in first])


class _QuickAckSocket(socket.socket):
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


_TCP_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


def _tcp_connect(host: str, port: int, deadline: float) -> socket.socket:
    """Like ``socket.create_connection`` with a deadline, returning a :class:`_QuickAckSocket`
    with TCP_NODELAY set (our own small packets go out at once)."""
    last: OSError | None = None
    for family, kind, proto, _, address in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
        sock = _QuickAckSocket(family, kind, proto)
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


class _ExecTimeout(Exception):
    pass


def _drain(
    channel: paramiko.Channel,
    stdin: bytes,
    deadline: float,
    max_stdout: int,
    endpoint: _Endpoint,
    transport: paramiko.Transport,
    alarm: _Alarm,
) -> RunResult:
    """Write stdin and read stdout and stderr together until both end, then take the exit
    status -- reading before ``recv_exit_status`` so a command that prints more than the channel
    window never deadlocks."""
    stdout = bytearray()
    stderr = bytearray()
    view = memoryview(stdin)
    sent = 0
    writing = True
    if not stdin:
        channel.shutdown_write()
        writing = False
    poller = select.poll()
    poller.register(channel.fileno(), select.POLLIN)
    channel.settimeout(0.0)
    while True:
        if writing:
            try:
                while sent < len(view) and channel.send_ready():
                    sent += channel.send(bytes(view[sent : sent + 32768]))
            except (OSError, paramiko.SSHException):
                sent = len(view)  # the command exited without reading all of stdin
            if sent >= len(view):
                writing = False
                with contextlib.suppress(OSError, paramiko.SSHException, EOFError):
                    channel.shutdown_write()
        ended = channel.eof_received or channel.closed
        while channel.recv_ready():
            chunk = channel.recv(_READ_CHUNK)
            if not chunk:
                break
            stdout += chunk
            if len(stdout) > max_stdout:
                channel.close()
                raise _Failure(
                    "bad-output",
                    f"the command printed more than {max_stdout} bytes on stdout; stopped"
                    " reading and closed the channel",
                )
        while channel.recv_stderr_ready():
            chunk = channel.recv_stderr(_READ_CHUNK)
            if not chunk:
                break
            stderr += chunk
            if len(stderr) > 4 * STDERR_TAIL_BYTES:
                del stderr[: len(stderr) - STDERR_TAIL_BYTES]
        if ended:
            break
        left = deadline - time.monotonic()
        if left <= 0 or alarm.fired:
            raise _ExecTimeout(
                f"{len(stdout)} bytes of stdout so far"
                + ("" if not writing else f", {sent} of {len(view)} stdin bytes written")
            )
        poll_ms = min(left, 0.01 if writing else 1.0) * 1000
        poller.poll(max(1, int(poll_ms)))
    tail = bytes(stderr[-STDERR_TAIL_BYTES:])
    if alarm.fired:  # the reaper closed the connection at the exec deadline
        raise _ExecTimeout(f"{len(stdout)} bytes of stdout so far")
    left = deadline - time.monotonic()
    if not channel.status_event.wait(max(0.0, left)) and (alarm.fired or transport.is_active()):
        raise _ExecTimeout("the command closed its output but did not exit")
    if not transport.is_active() and channel.exit_status == -1:
        if alarm.fired:
            raise _ExecTimeout(f"{len(stdout)} bytes of stdout so far")
        raise _Failure(
            "unreachable",
            f"{endpoint.label}: the connection dropped while the command ran"
            f" ({len(stdout)} bytes of stdout received, no exit status)",
        )
    # -1: the channel closed without an exit status (e.g. killed by a signal); the caller decides.
    return RunResult(exit_status=channel.recv_exit_status(), stdout=bytes(stdout), stderr_tail=tail)


def _tried(tried: list[str]) -> str:
    return "tried " + (", ".join(tried) if tried else "no keys")


def _same_key_family(a: str, b: str) -> bool:
    rsa = {"ssh-rsa", "rsa-sha2-256", "rsa-sha2-512"}
    return a == b or (a in rsa and b in rsa)


def _parse_jump(spec: str) -> tuple[str | None, str, int | None]:
    """``[user@]host[:port]`` (or ``ssh://[user@]host[:port]``) -> (user, host, port)."""
    text = spec[len("ssh://") :] if spec.startswith("ssh://") else spec
    user = None
    if "@" in text:
        user, text = text.rsplit("@", 1)
    port = None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = int(port_text) if port_text.isdigit() else None
    else:
        host = text
    return user, host, port


def _replace_jumps(endpoint: _Endpoint, jumps: tuple[str, ...]) -> _Endpoint:
    from dataclasses import replace

    return replace(endpoint, proxy_jump=jumps)


__all__ = ["DEFAULT_DISABLED_ALGORITHMS", "PREFERRED_CIPHERS", "SSHTransport"]
