"""known_hosts: an index of OpenSSH's file, the host-key check, and accept-new recording.

Example::

    index = KnownHostsFile.load("~/.ssh/known_hosts")   # path already expanded
    index.lookup(known_hosts_name("10.0.0.1", 2222))   # [("ssh-ed25519", b"...blob...")]
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from vlcalc.errors import (
    ConfigError,
    HostKeyChangedError,
    HostKeyRevokedError,
    HostKeyUnknownError,
)
from vlcalc.transport.ssh._paramiko import paramiko
from vlcalc.transport.ssh.config import Endpoint, known_hosts_name
from vlcalc.transport.ssh.deadlines import Attempt, acquire
from vlcalc.transport.ssh.ssh_config import match_pattern_list


def fingerprint(key_type: str, blob: bytes) -> str:
    """OpenSSH's ``SHA256:...`` fingerprint of a public key blob, by paramiko's
    ``PKey.fingerprint``; for a key type this paramiko cannot load, its type and a note."""
    try:
        return str(paramiko.PKey.from_type_string(key_type, blob).fingerprint)
    except (paramiko.SSHException, ValueError, TypeError):
        return f"({key_type} key paramiko cannot read)"


@dataclass
class KnownHostsFile:
    """An index of one OpenSSH known_hosts file: plain names, hashed names, and the lines with
    ``*``/``?`` wildcards or ``!negations`` (matched as OpenSSH's ``match_hostname``: a negated
    pattern that matches takes the whole line away).

    paramiko's ``HostKeys.load`` re-checks every line against all earlier ones (quadratic in the
    file size, with an HMAC per hashed line); this index parses each line once and compares raw
    key blobs, so a 1,000-host file costs milliseconds.
    """

    path: str
    plain: dict[str, list[tuple[str, bytes]]] = field(default_factory=dict)
    hashed: list[tuple[Any, Any, bytes, str, bytes]] = field(default_factory=list)
    patterns: list[tuple[str, str, bytes]] = field(default_factory=list)
    revoked: set[bytes] = field(default_factory=set)
    cert_authorities: int = 0  # @cert-authority lines, which this transport does not read

    @classmethod
    def load(cls, path: str) -> KnownHostsFile:
        index = cls(path)
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                lines = handle.read().splitlines()
        except OSError:  # missing or unreadable: no keys, as ssh reads it
            return index
        for line in lines:
            index.add_line(line)
        return index

    def add_line(self, line: str) -> None:
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
            self.cert_authorities += marker == "@cert-authority"
            return
        self.add(names, key_type, blob)

    def add(self, names: str, key_type: str, blob: bytes) -> None:
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
        # OpenSSH compares host names case-insensitively (it looks up a lower-cased name).
        lowered = names.lower()
        if any(ch in lowered for ch in "*?!"):
            self.patterns.append((lowered, key_type, blob))
            return
        for name in lowered.split(","):
            self.plain.setdefault(name, []).append((key_type, blob))

    def lookup(self, name: str) -> list[tuple[str, bytes]]:
        name = name.lower()
        found = list(self.plain.get(name, ()))
        encoded = name.encode()
        for inner, outer, digest, key_type, blob in self.hashed:
            first = inner.copy()
            first.update(encoded)
            second = outer.copy()
            second.update(first.digest())
            if second.digest() == digest:
                found.append((key_type, blob))
        for patterns, key_type, blob in self.patterns:  # only * and ?, no [classes]
            if match_pattern_list(name, patterns) == 1:
                found.append((key_type, blob))
        return found


def check_host_key(
    offered: paramiko.PKey,
    endpoint: Endpoint,
    indexes: list[KnownHostsFile],
    known: list[tuple[str, bytes]],
    *,
    accept_new: bool,
) -> bool:
    """Judge the key a server ``offered`` against ``known`` (its known_hosts entries).

    Returns ``False`` when the key is known, ``True`` when it is new and ``accept_new`` allows
    recording it; raises :class:`HostKeyRevokedError`, :class:`HostKeyChangedError` or
    :class:`HostKeyUnknownError` otherwise.
    """
    key_type, blob = offered.get_name(), offered.asbytes()
    offered_fingerprint = str(offered.fingerprint)
    name = endpoint.known_hosts_name
    fields: dict[str, Any] = {
        "host": endpoint.hostname,
        "port": endpoint.port,
        "known_hosts_name": name,
        "known_hosts_path": endpoint.user_known_hosts,
        "key_type": key_type,
        "offered_fingerprint": offered_fingerprint,
    }
    if any(blob in index.revoked for index in indexes):
        raise HostKeyRevokedError(**fields)
    if any(known_blob == blob for _, known_blob in known):
        return False
    if known:
        # Known under any key type and this key is not among them: changed, as OpenSSH says
        # (vlcalc, like ssh, asks for the known types first, so the server lacks all of them);
        # --accept-new never adds a second key type to a known host.
        expected = tuple(fingerprint(t, b) for t, b in known)
        raise HostKeyChangedError(expected_fingerprints=expected, **fields)
    if not accept_new or not endpoint.known_hosts_files:
        strict = endpoint.strict_host_key_checking
        ignored = (
            f" (ssh_config's StrictHostKeyChecking {strict} is not honoured: vlcalc checks"
            " host keys strictly unless --accept-new is given)"
            if strict in ("no", "off", "false", "accept-new") and not accept_new
            else ""
        )
        if any(index.cert_authorities for index in indexes):
            ignored += (
                " (known_hosts has @cert-authority lines, which the paramiko transport does not"
                " read: for hosts with certificates use --transport openssh)"
            )
        raise HostKeyUnknownError(hint=ignored, **fields)
    return True


def record_host_key(
    index: KnownHostsFile | None,
    endpoint: Endpoint,
    key_type: str,
    blob: bytes,
    lock: threading.Lock,
    attempt: Attempt,
) -> None:
    """Append the key to ``endpoint.user_known_hosts`` (``index`` is that file's index), hashed
    when ssh_config says ``HashKnownHosts yes``; once, however many threads ask.  Waiting for
    the file lock (other threads, other vlcalc or ssh processes) ends at the node deadline."""
    if index is None:  # pragma: no cover - check_host_key refuses then
        return
    path = endpoint.user_known_hosts
    name = endpoint.known_hosts_name
    waiting_for = f"the lock of {path}"
    with acquire(lock, attempt, waiting_for):
        if any(b == blob for _, b in index.lookup(name)):
            return  # another thread recorded it meanwhile
        shown = paramiko.HostKeys.hash_host(name) if endpoint.hash_known_hosts else name
        line = f"{shown} {key_type} {base64.b64encode(blob).decode()}\n"
        try:
            _append(path, line, attempt, waiting_for)
        except OSError as exc:  # a read-only or immutable file, a full disk, ...
            raise ConfigError(
                f"--accept-new cannot add the host key of {name} to {path}:"
                f" {exc.strerror or exc}; the node was not probed",
                path=path,
                host=endpoint.hostname,
            ) from None
        index.add(shown, key_type, blob)


def _append(path: str, line: str, attempt: Attempt, waiting_for: str) -> None:
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        _lock_file(fd, attempt, waiting_for)
        if os.fstat(fd).st_size > 0:
            with open(path, "rb") as handle:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    line = "\n" + line
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _lock_file(fd: int, attempt: Attempt, waiting_for: str) -> None:
    """``flock`` the file against other processes, polling so the wait ends at the deadline."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if attempt.remaining() <= 0:
                raise attempt.timeout(
                    f"waiting for {waiting_for}", attempt.timeouts.node_s, attempt.deadline
                ) from None
            time.sleep(0.01)


__all__ = [
    "KnownHostsFile",
    "check_host_key",
    "fingerprint",
    "known_hosts_name",
    "record_host_key",
]
