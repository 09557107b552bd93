"""Public-key authentication: key files loaded once, ssh-agent connections, the order keys are
offered in, and the login itself with its deadline.

Example::

    keys = KeyFiles()
    agents = AgentPool(enabled=True)
    with agents.borrow(attempt, endpoint.identity_agent) as agent_keys:
        authenticate(transport, endpoint, attempt, keys, agent_keys, use_agent=True)
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator

from vlcalc.errors import AuthError, ConnectionLostError, UnsupportedConfigError
from vlcalc.transport.ssh._paramiko import SocketAgent, paramiko
from vlcalc.transport.ssh.config import Endpoint
from vlcalc.transport.ssh.deadlines import Attempt

#: The reason :func:`_load_key` gives for a FIDO key, which paramiko cannot use.
SECURITY_KEY = "a FIDO security key (sk-), which paramiko cannot use"


class KeyFiles:
    """Private key files, each read once (a scan offers the same few keys to every node), and
    the same keys with a certificate (``CertificateFile``, or ``KEY-cert.pub`` beside the key
    as OpenSSH finds it), each loaded once too."""

    def __init__(self) -> None:
        self._keys: dict[str, paramiko.PKey | str] = {}  # path -> key, or why it is unusable
        self._certified: dict[tuple[str, str], paramiko.PKey | None] = {}
        self._lock = threading.Lock()

    def certified(self, path: str, certificate: str) -> paramiko.PKey | None:
        """The key at ``path`` carrying the certificate at ``certificate``, or ``None`` when
        either is unusable or the certificate is for another key."""
        cached = self._certified.get((path, certificate), False)
        if cached is not False:
            return cached  # type: ignore[return-value]
        with self._lock:
            key: paramiko.PKey | None
            try:
                key = paramiko.PKey.from_path(path)
                key.load_certificate(certificate)
            except (paramiko.SSHException, OSError, ValueError):
                key = None
            self._certified[(path, certificate)] = key
            return key

    def get(self, path: str) -> paramiko.PKey | str:
        """The key at ``path``, or a short reason it cannot be used (``"missing"``...)."""
        cached = self._keys.get(path)
        if cached is not None:
            return cached
        with self._lock:  # file reads only: never blocks for long
            cached = self._keys.get(path)
            if cached is None:
                cached = _load_key(path)
                self._keys[path] = cached
            return cached


def _is_security_key(path: str) -> bool:
    """Whether the key at ``path`` is a FIDO key: its ``.pub`` (or, for an unencrypted
    OpenSSH key, the file itself) names an ``sk-`` type."""
    try:
        with open(path + ".pub", encoding="utf-8", errors="replace") as handle:
            return handle.read(64).startswith("sk-")
    except OSError:
        pass
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    import base64

    body = b"".join(line for line in head.splitlines() if not line.startswith(b"-----"))
    with contextlib.suppress(ValueError):
        return b"sk-" in base64.b64decode(body + b"=" * (-len(body) % 4))[:200]
    return False


def _load_key(path: str) -> paramiko.PKey | str:
    try:
        return paramiko.PKey.from_path(path)
    except FileNotFoundError:
        return "missing"
    except paramiko.PasswordRequiredException:
        return "encrypted; add it to ssh-agent (ssh-add) to use it"
    except (paramiko.SSHException, OSError, ValueError) as exc:
        if _is_security_key(path):
            return SECURITY_KEY
        return f"unreadable ({type(exc).__name__})"


class AgentPool:
    """Connections to ssh-agent sockets (``$SSH_AUTH_SOCK`` or ``IdentityAgent``), one per
    authentication in progress.

    paramiko's ``Agent`` speaks over one socket without a lock, and signing happens on each
    transport's own thread: concurrent logins must not share one.  Instead of patching a lock into
    it, each login borrows a connection of its own (at most one per concurrent login, reused
    after).  Opening one waits no longer than the node deadline: a stuck agent costs that node
    its agent keys, not the scan its progress.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._idle: dict[str, list[SocketAgent]] = {}
        self._open: list[SocketAgent] = []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def borrow(
        self, attempt: Attempt, path: str | None = None
    ) -> Iterator[tuple[paramiko.PKey, ...]]:
        """The keys of the agent at ``path`` (``None``: no agent; the endpoint's
        ``identity_agent`` is ``$SSH_AUTH_SOCK`` unless ssh_config says otherwise), on a
        connection this login has to itself until the block ends."""
        if not self.enabled or not path:
            yield ()
            return
        with self._lock:
            idle = self._idle.get(path)
            agent = idle.pop() if idle else None
        if agent is None:
            agent = self._connect(attempt, path)
            if agent is None:
                yield ()
                return
        try:
            yield tuple(agent.get_keys())
        except AuthError:
            self._release(agent, path)  # every key offered was answered: the connection is idle
            raise
        except BaseException:
            # A login cut short may leave a signing request in flight on this connection.
            self._discard(agent)
            raise
        self._release(agent, path)

    def _release(self, agent: SocketAgent, path: str) -> None:
        with self._lock:
            self._idle.setdefault(path, []).append(agent)

    def _connect(self, attempt: Attempt, path: str) -> SocketAgent | None:
        result: list[SocketAgent] = []

        def connect() -> None:
            with contextlib.suppress(paramiko.SSHException, OSError):
                result.append(SocketAgent(path))

        thread = threading.Thread(target=connect, name="vlcalc-ssh-agent", daemon=True)
        thread.start()
        thread.join(max(0.0, attempt.remaining()))
        if not result:
            return None  # no agent, or none answering in time
        with self._lock:
            self._open.append(result[0])
        return result[0]

    def _discard(self, agent: SocketAgent) -> None:
        with self._lock:
            if agent in self._open:
                self._open.remove(agent)
        agent.close()

    def close(self) -> None:
        with self._lock:
            agents, self._open, self._idle = self._open, [], {}
        for agent in agents:
            agent.close()


def candidates(
    endpoint: Endpoint,
    keys: KeyFiles,
    agent_keys: tuple[paramiko.PKey, ...],
    notes: list[str],
) -> Iterator[tuple[paramiko.PKey, str]]:
    """Keys to offer, in order: the explicit identities (key_file, then IdentityFile), the
    agent's keys, then -- only when nothing explicit was configured -- the default files.  A
    key file with a certificate (``CertificateFile``, or ``KEY-cert.pub``) is offered with the
    certificate first, then without.  Unusable key files are described in ``notes``; an
    explicit FIDO (``sk-``) key raises :class:`UnsupportedConfigError`."""
    seen: set[bytes] = set()
    explicit = endpoint.identity_files if endpoint.explicit_identities else ()
    defaults = () if endpoint.explicit_identities else endpoint.identity_files
    for path in explicit:
        key = keys.get(path)
        if key == SECURITY_KEY:
            raise UnsupportedConfigError(
                f"IdentityFile {path} is {SECURITY_KEY}; use --transport openssh for this host",
                option="identityfile",
                value=path,
                host=endpoint.hostname,
            )
        if isinstance(key, str):
            notes.append(f"{path}: {key}")
            continue
        seen.add(key.asbytes())
        yield from _with_certificates(path, key, endpoint, keys)
        yield key, f"{path} ({key.get_name()} {key.fingerprint})"
    explicit_blobs = set(seen)
    for key in agent_keys:
        blob = key.asbytes()
        if blob in seen or (endpoint.identities_only and blob not in explicit_blobs):
            continue
        seen.add(blob)
        comment = getattr(key, "comment", "") or ""
        yield key, f"agent key {comment!r} ({key.get_name()} {key.fingerprint})"
    for path in defaults:
        key = keys.get(path)
        if isinstance(key, str):
            if key != "missing":
                notes.append(f"{path}: {key}")
            continue
        if key.asbytes() in seen:
            continue
        seen.add(key.asbytes())
        yield from _with_certificates(path, key, endpoint, keys)
        yield key, f"{path} ({key.get_name()} {key.fingerprint})"


def _with_certificates(
    path: str, key: paramiko.PKey, endpoint: Endpoint, keys: KeyFiles
) -> Iterator[tuple[paramiko.PKey, str]]:
    for certificate in (*endpoint.certificate_files, f"{path}-cert.pub"):
        if not os.path.exists(certificate):
            continue
        certified = keys.certified(path, certificate)
        if certified is not None:
            yield certified, f"{path} with certificate {certificate} ({key.get_name()})"


def _tried(tried: list[str]) -> str:
    return "tried " + (", ".join(tried) if tried else "no keys")


def authenticate(
    transport: paramiko.Transport,
    endpoint: Endpoint,
    attempt: Attempt,
    keys: KeyFiles,
    agent_keys: tuple[paramiko.PKey, ...],
    *,
    use_agent: bool,
) -> None:
    """Log in as ``endpoint.user`` with the first key the server accepts, all tries within
    ``auth_s``; raises :class:`AuthError`, :class:`ConnectionLostError` or a timeout."""
    phase_s = attempt.timeouts.auth_s
    deadline = attempt.phase_deadline(phase_s)
    host, port = endpoint.hostname, endpoint.port
    tried: list[str] = []
    skipped: list[str] = []
    allowed: list[str] | None = None
    for key, label in candidates(endpoint, keys, agent_keys, skipped):
        budget = deadline - time.monotonic()
        if budget <= 0:
            raise attempt.timeout(
                "authentication", phase_s, deadline, _tried(tried), host=host, port=port
            )
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
                    "authentication", phase_s, deadline, _tried(tried), host=host, port=port
                ) from exc
            if not transport.is_active():
                # After a rejected key this is sshd's MaxAuthTries; on the first key it is a
                # server that dropped us for some other reason.
                message = (
                    f"{endpoint.label} closed the connection during authentication"
                    f" ({_tried(tried)}; too many keys for sshd's MaxAuthTries?"
                    " set IdentityFile/IdentitiesOnly for this host)"
                )
                if len(tried) > 1:
                    raise AuthError(
                        message, user=endpoint.user, tried=tuple(tried), host=host, port=port
                    ) from exc
                raise ConnectionLostError(
                    message, phase="authentication", host=host, port=port
                ) from exc
            continue
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise ConnectionLostError(
                f"{endpoint.label}: connection lost during authentication: {exc}",
                phase="authentication",
                host=host,
                port=port,
            ) from exc
        if transport.is_authenticated():
            return
        if remaining_methods:
            allowed = list(remaining_methods)
            break
    notes = "; ".join(skipped)

    def refused(message: str) -> AuthError:
        return AuthError(
            message,
            host=host,
            port=port,
            user=endpoint.user,
            tried=tuple(tried),
            skipped=tuple(skipped),
            allowed_methods=None if allowed is None else tuple(allowed),
        )

    if not tried:
        sources = "the key file" if endpoint.explicit_identities else "the default key files"
        agent = "ssh-agent" if use_agent else "ssh-agent (disabled)"
        raise refused(
            f"no usable key to log in as {endpoint.user}@{endpoint.hostname}: nothing in"
            f" {sources} or {agent}" + (f" ({notes})" if notes else "")
        )
    text = f"{endpoint.label} refused public-key login for {endpoint.user}; {_tried(tried)}"
    if allowed is not None:
        text += f"; the server allows only: {', '.join(allowed) or 'nothing'}"
    if notes:
        text += f"; skipped: {notes}"
    raise refused(text)


__all__ = ["AgentPool", "KeyFiles", "authenticate", "candidates"]
