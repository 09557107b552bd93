"""The OpenSSH transport: run the system ``ssh`` client once per node, for configurations paramiko
cannot serve (FIDO ``sk-`` keys, GSSAPI, smartcards/PKCS#11, certificates from an agent, exotic
ssh_config options).  Same contract, documents and error kinds as the paramiko transport
(:class:`vlcalc.transport.ssh.SSHTransport`), which stays the faster default.

``OpenSSHTransport(known_hosts_path="kh").run(target, "python3 -", probe, timeouts=Timeouts(),
max_stdout=1 << 20)`` runs::

    ssh -F GENERATED -E LOG -o LogLevel=DEBUG1 -T -o BatchMode=yes -o StrictHostKeyChecking=yes
        -o ControlMaster=no -o ControlPath=none [-o K=V from the inventory...]
        -o ConnectTimeout=N [-p PORT] [-l USER] [-i KEY] -- HOST COMMAND

with the probe on stdin, and returns its stdout, exit status and stderr tail.

* ``GENERATED`` is a private ssh_config (mode 0600, in a temp directory removed by ``close``)
  that sets the policy first -- ``BatchMode yes``, ``StrictHostKeyChecking yes`` (``accept-new``
  with ``accept_new``), no connection sharing (``ControlMaster no``, ``ControlPath none``: an
  existing master would skip the host-key check, a new one would outlive vlcalc), and with
  ``known_hosts_path`` that file as the only known_hosts -- then
  ``Include``-s the user's configuration (``ssh_config_path``, or ``~/.ssh/config`` and
  ``/etc/ssh/ssh_config`` as ssh would read them).  In ssh_config the first value wins, so the
  policy holds for every host, and ssh hands ``-F`` to the ``ssh -W`` children it starts for
  ProxyJump: jump hosts get the same host-key policy (``-o`` options would not reach them).
* ``-- HOST``: a host can never be read as an option; ``-T``: no terminal, stdin is the probe.
* The inventory's ``ssh_options`` come before vlcalc's own ``-o``s (so, as in ssh, they win),
  except that nothing may weaken the policy: ``BatchMode=no``, ``StrictHostKeyChecking`` other
  than ``yes`` (``accept-new`` needs ``--accept-new``), a terminal (``RequestTTY``), or options
  that take stdin or the command away are refused for that node with a ``ConfigError``.
* ssh's own log (``-E``, at DEBUG1) goes to a private file, never mixed with the node's stderr;
  it says how far the connection got, the server's host key, the keys offered and the remote
  exit status.  Failures are read from it (and, before authentication, from the stderr of the
  ProxyJump children) and raised as the same :class:`vlcalc.errors.NodeError` subclasses, with
  their data, as the paramiko transport: host-key-unknown ("No ED25519 host key is known"),
  host-key-changed ("REMOTE HOST IDENTIFICATION HAS CHANGED"), auth-failed ("Permission
  denied"), unreachable ("Connection refused", "No route to host", "Could not resolve hostname",
  "jumphost loop", ...), timeout ("Connection timed out", the node deadline).
* Before connecting, ``ssh -G`` resolves the node (and each ProxyJump host, cached) and a route
  that leads back to itself is refused as :class:`vlcalc.errors.JumpLoopError`: OpenSSH does
  not detect ``Host *`` + ``ProxyJump bastion`` and forks jump clients until killed.
* Deadlines: ssh's ``ConnectTimeout`` (the connect and the banner) is ``connect_s``; the whole
  run, retries included, is bounded by ``node_s``: then ssh's process group is killed (jump
  clients included) and the error names the phase ssh had reached.  ``banner_s``/``auth_s``/
  ``exec_s`` are not enforced separately (ssh has no such limits).  Connection failures
  (refused, no route, connect timeout, closed before the handshake) are retried
  ``Timeouts.retries`` times with jittered exponential backoff, never past the node deadline.
"""

from __future__ import annotations

import base64
import contextlib
import errno as errno_codes
import hashlib
import math
import os
import pwd
import random
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from vlcalc.errors import (
    AuthError,
    ConfigError,
    ConnectError,
    ConnectionClosedError,
    ConnectionLostError,
    ConnectTimeoutError,
    HostKeyChangedError,
    HostKeyRevokedError,
    HostKeyUnknownError,
    JumpLoopError,
    NameLookupError,
    NameLookupRetryError,
    NodeError,
    NodeTimeoutError,
)
from vlcalc.model import ErrorKind
from vlcalc.transport.base import RunResult, Target, Timeouts, with_retries
from vlcalc.transport.local import STDERR_TAIL_BYTES, _close_pipes, _communicate, _kill

MAX_JUMPS = 8  # a longer ProxyJump route is refused (as the paramiko transport does)
_RESOLVE_OUTPUT_BYTES = 1 << 20  # `ssh -G` prints ~5 KB


class OpenSSHTransport:
    """Run commands on nodes with the system ``ssh`` client.  See the module docstring.

    ``ssh_config_path``: ``None`` reads ``~/.ssh/config`` then ``/etc/ssh/ssh_config`` (as ssh
    does); a path reads only that file.  ``known_hosts_path``: ``None`` leaves known_hosts to
    the configuration (ssh's default: ``~/.ssh/known_hosts`` and ``/etc/ssh/ssh_known_hosts``); a
    path is the only known_hosts file.  ``accept_new`` records the key of a host that has none in
    known_hosts yet; a *changed* key is always refused.  ``ssh_binary`` is the client to run.

    Example::

        with OpenSSHTransport(known_hosts_path="kh") as ssh:
            result = ssh.run(Target("node01", "10.0.0.11"), "python3 -", probe,
                             timeouts=Timeouts(), max_stdout=1 << 20)
    """

    def __init__(
        self,
        ssh_config_path: str | os.PathLike[str] | None = None,
        known_hosts_path: str | os.PathLike[str] | None = None,
        accept_new: bool = False,
        *,
        ssh_binary: str = "ssh",
        retry_backoff_s: float = 0.25,
    ) -> None:
        self.ssh_config_path = None if ssh_config_path is None else os.fspath(ssh_config_path)
        self.known_hosts_path = None if known_hosts_path is None else os.fspath(known_hosts_path)
        self.accept_new = accept_new
        self.ssh_binary = ssh_binary
        self.retry_backoff_s = retry_backoff_s
        self._lock = threading.Lock()
        self._directory: str | None = None
        self._config_path: str | None = None
        self._jumps: dict[str, Resolved] = {}  # `ssh -G` of jump hosts, by ProxyJump spec
        self._random = random.Random()
        self._processes = _Processes()

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
        deadline = time.monotonic() + timeouts.node_s
        try:
            check_target(target, accept_new=self.accept_new)
            config = self._config(timeouts)
            resolved = self._resolve(config, target, deadline, timeouts)
            self._check_route(config, resolved, deadline, timeouts)
            return with_retries(
                lambda: self._run_once(
                    config, target, resolved, command, stdin, deadline, timeouts, max_stdout
                ),
                retries=timeouts.retries,
                remaining=lambda: deadline - time.monotonic(),
                backoff_s=self.retry_backoff_s,
                jitter=self._random,
            )
        except NodeError as failure:
            failure.node = target.name
            raise

    def close(self) -> None:
        """Kill the ssh processes still running (a scan stopped by Ctrl-C does not wait for its
        nodes) and remove the generated ssh_config.  Runs started after ``close`` fail."""
        self._processes.close()
        with self._lock:
            directory, self._directory, self._config_path = self._directory, None, None
            self._jumps.clear()
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)

    def __enter__(self) -> OpenSSHTransport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ configuration

    def _config(self, timeouts: Timeouts) -> str:
        """The generated ssh_config's path, written on first use (see the module docstring)."""
        with self._lock:
            if self._config_path is not None:
                return self._config_path
            if self._processes.closed:  # a worker the stopped scan did not wait for
                raise NodeError(ErrorKind.INTERRUPTED, "the scan was stopped before this node ran")
            directory = tempfile.mkdtemp(prefix="vlcalc-openssh-")
            path = os.path.join(directory, "ssh_config")
            text = config_text(
                self.ssh_config_path,
                self.known_hosts_path,
                accept_new=self.accept_new,
                connect_timeout_s=_whole_seconds(timeouts.connect_s),
            )
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(text)
            self._directory, self._config_path = directory, path
            return path

    def _resolve(
        self, config: str, target: Target, deadline: float, timeouts: Timeouts
    ) -> Resolved:
        """``ssh -G``: what ssh will use for ``target`` (host name, port, user, ProxyJump)."""
        argv = [self.ssh_binary, "-G", "-F", config, *option_args(target.ssh_options)]
        argv += endpoint_args(target.port, target.user, None)
        return self._resolve_argv([*argv, "--", target.host], target.host, deadline, timeouts)

    def _resolve_jump(
        self, config: str, spec: str, deadline: float, timeouts: Timeouts
    ) -> Resolved:
        cached = self._jumps.get(spec)
        if cached is not None:
            return cached
        user, host, port = parse_jump(spec)
        if host.startswith("-") or (user or "").startswith("-"):
            raise ConfigError(f"ProxyJump host {spec!r} looks like an option; refused", host=host)
        argv = [self.ssh_binary, "-G", "-F", config, *endpoint_args(port, user, None)]
        resolved = self._resolve_argv([*argv, "--", host], host, deadline, timeouts)
        with self._lock:
            self._jumps[spec] = resolved
        return resolved

    def _resolve_argv(
        self, argv: list[str], host: str, deadline: float, timeouts: Timeouts
    ) -> Resolved:
        try:
            status, stdout, stderr = _run_process(
                argv, b"", deadline, _RESOLVE_OUTPUT_BYTES, self._processes
            )
        except NodeTimeoutError as exc:
            raise NodeTimeoutError(
                f"the node deadline ({timeouts.node_s:g} s) passed while `ssh -G` resolved"
                f" {host} (a `Match exec` that hangs?)",
                phase="resolving the ssh configuration",
                limit_s=timeouts.node_s,
                node_deadline=True,
            ) from exc
        except OSError as exc:
            raise ConfigError(f"cannot run {self.ssh_binary}: {exc.strerror or exc}") from exc
        if status != 0:
            lines = _printable_lines(stderr)
            why = lines[-1] if lines else f"exit status {status}"
            raise ConfigError(
                f"ssh cannot use its configuration for {host}: {why}",
                path=self.ssh_config_path,
                host=host,
            )
        return Resolved.parse(stdout.decode("utf-8", "replace"), host)

    def _check_route(
        self, config: str, resolved: Resolved, deadline: float, timeouts: Timeouts
    ) -> None:
        """Refuse a ProxyJump route that comes back to a host it went through: ssh would start
        ``ssh -W`` children through it forever."""
        route: list[str] = []

        def walk(jump: str | None) -> None:
            if jump is None:
                return
            hops = [hop.strip() for hop in jump.split(",") if hop.strip()]
            # "a,b": ssh starts `ssh -J a -W .. b`, whose child connects to a as a's config says.
            first, *rest = hops
            if first in route:
                raise jump_loop(first, [*route, first])
            route.append(first)
            if len(route) > MAX_JUMPS:
                raise JumpLoopError(
                    f"ProxyJump route longer than {MAX_JUMPS} hosts ({' -> '.join(route)})",
                    chain=tuple(route),
                )
            walk(self._resolve_jump(config, first, deadline, timeouts).proxy_jump)
            for hop in rest:
                if hop in route:
                    raise jump_loop(hop, [*route, hop])
                route.append(hop)

        walk(resolved.proxy_jump)

    def _first_jump(self, resolved: Resolved) -> Resolved | None:
        if resolved.proxy_jump is None:
            return None
        return self._jumps.get(resolved.proxy_jump.split(",")[0].strip())

    # ------------------------------------------------------------------ running ssh

    def _run_once(
        self,
        config: str,
        target: Target,
        resolved: Resolved,
        command: str,
        stdin: bytes,
        deadline: float,
        timeouts: Timeouts,
        max_stdout: int,
    ) -> RunResult:
        try:
            descriptor, log_path = tempfile.mkstemp(
                prefix="ssh-", suffix=".log", dir=self._directory or "/nonexistent"
            )
        except FileNotFoundError:  # close() removed the directory: the scan was stopped
            raise NodeError(
                ErrorKind.INTERRUPTED, "the scan was stopped before this node ran"
            ) from None
        os.close(descriptor)
        left = deadline - time.monotonic()
        connect_s = _whole_seconds(min(timeouts.connect_s, max(left, 1.0)))
        argv = ssh_argv(
            self.ssh_binary,
            target,
            command,
            config_path=config,
            log_path=log_path,
            accept_new=self.accept_new,
            connect_timeout_s=connect_s,
        )
        try:
            try:
                status, stdout, stderr = _run_process(
                    argv, stdin, deadline, max_stdout, self._processes
                )
            except NodeTimeoutError:
                log = _read_log(log_path)
                raise timeout_error(log, timeouts, resolved) from None
            except OSError as exc:
                raise ConfigError(f"cannot run {self.ssh_binary}: {exc.strerror or exc}") from exc
            log = _read_log(log_path)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(log_path)
        failure = classify(
            status,
            log,
            stderr,
            resolved,
            known_hosts_path=self.known_hosts_path,
            connect_timeout_s=connect_s,
            first_jump=self._first_jump(resolved),
        )
        if failure is not None:
            raise failure
        if status == 255 and killed_by_signal(log):
            status = -1  # no exit status, as the paramiko transport reports it
        return RunResult(exit_status=status, stdout=stdout, stderr_tail=stderr[-STDERR_TAIL_BYTES:])


# ---------------------------------------------------------------------- the command line


def config_text(
    ssh_config_path: str | None,
    known_hosts_path: str | None,
    *,
    accept_new: bool,
    connect_timeout_s: int,
) -> str:
    """The generated ssh_config: vlcalc's policy first (the first value wins in ssh_config),
    then the user's configuration.

    >>> print(config_text("/cfg", "/kh", accept_new=False, connect_timeout_s=10), end="")
    # written by vlcalc --transport openssh: its policy first, then the user's configuration
    BatchMode yes
    StrictHostKeyChecking yes
    ControlMaster no
    ControlPath none
    ConnectTimeout 10
    UserKnownHostsFile "/kh"
    GlobalKnownHostsFile /dev/null
    Include "/cfg"
    """
    lines = [
        "# written by vlcalc --transport openssh: its policy first, then the user's configuration",
        "BatchMode yes",
        f"StrictHostKeyChecking {'accept-new' if accept_new else 'yes'}",
        # No connection sharing: a master opened earlier (perhaps with other known_hosts) would
        # skip vlcalc's host-key check, and one started here would outlive vlcalc.
        "ControlMaster no",
        "ControlPath none",
        f"ConnectTimeout {connect_timeout_s}",
    ]
    if known_hosts_path is not None:
        lines += [
            f"UserKnownHostsFile {_config_quote(os.path.abspath(known_hosts_path))}",
            "GlobalKnownHostsFile /dev/null",
        ]
    if ssh_config_path is not None:
        if os.path.realpath(ssh_config_path) != os.devnull:  # "no configuration" (ssh would
            # refuse to Include /dev/null: its mode is 0666)
            lines.append(f"Include {_config_quote(os.path.abspath(ssh_config_path))}")
    else:
        # What ssh reads without -F.  ssh expands ~ from the password database, not $HOME.
        lines += [
            f"Include {_config_quote(os.path.join(_home(), '.ssh', 'config'))}",
            "Include /etc/ssh/ssh_config",
        ]
    return "\n".join(lines) + "\n"


def ssh_argv(
    ssh_binary: str,
    target: Target,
    command: str,
    *,
    config_path: str,
    log_path: str,
    accept_new: bool,
    connect_timeout_s: int,
) -> list[str]:
    """The ssh command line for one run (see the module docstring).

    >>> ssh_argv("ssh", Target("n1", "10.0.0.1", 2222, "ops", ssh_options=(("proxyjump", "b"),)),
    ...          "python3 -", config_path="C", log_path="L", accept_new=False,
    ...          connect_timeout_s=10)  # doctest: +NORMALIZE_WHITESPACE
    ['ssh', '-F', 'C', '-E', 'L', '-o', 'LogLevel=DEBUG1', '-T', '-o', 'BatchMode=yes',
     '-o', 'StrictHostKeyChecking=yes', '-o', 'ControlMaster=no', '-o', 'ControlPath=none',
     '-o', 'proxyjump=b', '-o', 'ConnectTimeout=10',
     '-p', '2222', '-l', 'ops', '--', '10.0.0.1', 'python3 -']
    """
    return [
        ssh_binary,
        "-F",
        config_path,
        "-E",
        log_path,
        # Before the inventory's options, so these win (the first value wins): the log is
        # vlcalc's to read, and the policy is not the inventory's to relax (check_target).
        "-o",
        "LogLevel=DEBUG1",
        "-T",
        "-o",
        "BatchMode=yes",
        "-o",
        f"StrictHostKeyChecking={'accept-new' if accept_new else 'yes'}",
        "-o",
        "ControlMaster=no",
        "-o",
        "ControlPath=none",
        *option_args(target.ssh_options),
        "-o",
        f"ConnectTimeout={connect_timeout_s}",
        *endpoint_args(target.port, target.user, target.key_file),
        "--",
        target.host,
        command,
    ]


def option_args(options: Sequence[tuple[str, str]]) -> list[str]:
    """``-o keyword=value`` for each inventory option, in order (ssh: the first one wins)."""
    args: list[str] = []
    for keyword, value in options:
        args += ["-o", f"{keyword}={value}"]
    return args


def endpoint_args(port: int | None, user: str | None, key_file: str | None) -> list[str]:
    args: list[str] = []
    if port is not None:
        args += ["-p", str(port)]
    if user is not None:
        args += ["-l", user]
    if key_file is not None:
        args += ["-i", key_file]
    return args


# Inventory options that would make ssh prompt, trust any host key, take the probe's stdin or
# command away, or share connections (see config_text): refused (with why), never passed and
# never ignored silently.  Keyword -> (the values allowed, why the others are refused).
_NO_PROMPT = "vlcalc runs ssh without prompts or a terminal, with the probe on stdin"
_NO_SHARING = (
    "vlcalc does not share connections (each node's is checked against vlcalc's host-key policy)"
)
_REFUSED_OPTIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "batchmode": (("yes", "true"), _NO_PROMPT),
    "requesttty": (("no", "false"), _NO_PROMPT),
    "stdinnull": (("no", "false"), _NO_PROMPT),
    "sessiontype": (("default",), _NO_PROMPT),
    "forkafterauthentication": (("no", "false"), _NO_PROMPT),
    "remotecommand": (("none",), _NO_PROMPT),
    "controlmaster": (("no", "false"), _NO_SHARING),
    "controlpath": (("none",), _NO_SHARING),
}


def check_target(target: Target, *, accept_new: bool) -> None:
    """Refuse what would let ssh weaken vlcalc's policy or misread the target.

    >>> check_target(Target("n", "h", ssh_options=(("stricthostkeychecking", "no"),)),
    ...              accept_new=False)
    Traceback (most recent call last):
    ...
    vlcalc.errors.ConfigError: the inventory's ssh option StrictHostKeyChecking=no would ...
    """
    if not target.host:
        raise ConfigError("empty host name", host=target.host)
    if not target.read_ssh_config:
        raise ConfigError(
            "ansible_connection: paramiko reads no ssh_config, and the system ssh always does:"
            " scan this host without --transport openssh",
            host=target.host,
        )
    for name, value in (("host", target.host), ("user", target.user or "")):
        if value.startswith("-"):  # ssh would read it as an option
            raise ConfigError(f"{name} {value!r} starts with '-'; refused", host=target.host)
    for keyword, value in target.ssh_options:
        key, setting = keyword.lower(), value.strip().strip('"').lower()
        if key == "stricthostkeychecking":
            if setting in ("yes", "true") or (setting == "accept-new" and accept_new):
                continue
            hint = " (use --accept-new to record NEW hosts' keys)" if setting != "yes" else ""
            raise ConfigError(
                f"the inventory's ssh option StrictHostKeyChecking={value} would weaken host-key"
                f" checking; vlcalc refuses it{hint}",
                host=target.host,
            )
        allowed, why = _REFUSED_OPTIONS.get(key, (None, ""))
        if allowed is not None and setting not in allowed:
            raise ConfigError(
                f"the inventory's ssh option {keyword}={value} is refused: {why}", host=target.host
            )


# ---------------------------------------------------------------------- ssh -G


@dataclass(frozen=True)
class Resolved:
    """What ``ssh -G`` says ssh will use for a host.

    >>> Resolved.parse("hostname 10.0.0.1\\nport 22\\nuser ops\\nproxyjump b\\n", "n1").port
    22
    """

    name: str
    hostname: str
    port: int
    user: str
    proxy_jump: str | None
    known_hosts: str | None  # the first UserKnownHostsFile

    @classmethod
    def parse(cls, text: str, name: str) -> Resolved:
        options: dict[str, str] = {}
        for line in text.splitlines():
            keyword, _, value = line.partition(" ")
            options.setdefault(keyword.lower(), value.strip())
        try:
            port = int(options.get("port", "22"))
        except ValueError:
            port = 22
        jump = options.get("proxyjump")
        known = options.get("userknownhostsfile", "").split()
        return cls(
            name=name,
            hostname=options.get("hostname", name),
            port=port,
            user=options.get("user", ""),
            proxy_jump=None if not jump or jump.lower() == "none" else jump,
            known_hosts=os.path.expanduser(known[0]) if known else None,
        )


def parse_jump(spec: str) -> tuple[str | None, str, int | None]:
    """``[user@]host[:port]`` or ``ssh://[user@]host[:port]`` of a ProxyJump hop.

    >>> parse_jump("ops@bastion:2222"), parse_jump("[::1]:22"), parse_jump("b")
    (('ops', 'bastion', 2222), (None, '::1', 22), (None, 'b', None))
    """
    text = spec.removeprefix("ssh://")
    user, _, host = text.rpartition("@")
    port: int | None = None
    if host.startswith("["):
        inside, _, after = host[1:].partition("]")
        host = inside
        if after.startswith(":") and after[1:].isdigit():
            port = int(after[1:])
    elif host.count(":") == 1:
        name, _, number = host.partition(":")
        if number.isdigit():
            host, port = name, int(number)
    return (user or None), host, port


def jump_loop(host: str, route: list[str]) -> JumpLoopError:
    return JumpLoopError(
        f"jumphost loop via {host} ({' -> '.join(route)}): ssh_config sends the jump host back"
        f" through itself; give it `ProxyJump none` (a `Host {parse_jump(host)[1]}` block with"
        " `ProxyJump none` before the `Host *` one)",
        chain=tuple(route),
    )


# ---------------------------------------------------------------------- reading ssh's log

_HOST_KEY = re.compile(r"^debug1: Server host key: (\S+) (SHA256:\S+)", re.M)
_UNKNOWN = re.compile(r"^No (\S+) host key is known for (\S+) and you have requested strict", re.M)
_CHANGED = re.compile(r"^Host key for (\S+) has changed and you have requested strict", re.M)
_CHANGED_BANNER = re.compile(r"^@ +WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED", re.M)
_REVOKED = re.compile(r"^\S+ host key for (\S+) was revoked and you have requested", re.M)
_OFFENDING = re.compile(r"^Offending \S+ key in (.+):(\d+)\s*$", re.M)
_AUTHENTICATING = re.compile(r"^debug1: Authenticating to (\S+) as '([^']*)'", re.M)
_OFFERING = re.compile(r"^debug1: Offering public key: (.+?)(?: explicit| agent)*\s*$", re.M)
_DENIED = re.compile(r"^(\S*): Permission denied \(([^)]*)\)\.", re.M)
_CONNECT = re.compile(r"^ssh: connect to host (\S+) port (\d+): (.+)$", re.M)
_RESOLVE = re.compile(r"^ssh: Could not resolve hostname (\S+): (.+)$", re.M)
_EXIT_STATUS = re.compile(r"^debug1: Exit status (-?\d+)\s*$", re.M)


def killed_by_signal(log: str) -> bool:
    """The remote command died of a signal: sshd sent exit-signal, no exit status (ssh then
    exits 255 and logs ``Exit status -1``)."""
    return "rtype exit-signal " in log and _EXIT_STATUS.findall(log)[-1:] == ["-1"]


_JUMP_LOOP = re.compile(r"^jumphost loop via (\S+)", re.M)

# ssh's words for a failed connect, and the errno each stands for (the data ConnectError keeps).
_CONNECT_ERRNOS = {
    "Connection refused": errno_codes.ECONNREFUSED,
    "No route to host": errno_codes.EHOSTUNREACH,
    "Network is unreachable": errno_codes.ENETUNREACH,
    "Connection reset by peer": errno_codes.ECONNRESET,
    "Permission denied": errno_codes.EACCES,
}


def classify(
    status: int,
    log: str,
    stderr: bytes,
    resolved: Resolved,
    *,
    known_hosts_path: str | None,
    connect_timeout_s: float = 0.0,
    first_jump: Resolved | None = None,
) -> NodeError | None:
    """The failure an ssh run reports, or ``None`` when the command ran (``status`` is then the
    command's own exit status).  ``log`` is ssh's ``-E`` log at DEBUG1; ``stderr`` is the node's
    stderr -- and, before ssh authenticated, that of the ProxyJump clients it started;
    ``first_jump`` is ``ssh -G`` of the first ProxyJump host, for the data of its failures.

    Only lines ssh writes itself are read: server text in the log comes prefixed (``debug1:
    Remote:``, ``Received disconnect from``), and the node's stderr is read only when ssh never
    authenticated to it (then it holds the jump clients' messages).

    >>> classify(0, "Authenticated to h ([h]:22) using \\"publickey\\".\\n", b"",
    ...          Resolved("n", "h", 22, "ops", None, None), known_hosts_path=None) is None
    True
    """
    host, port = resolved.hostname, resolved.port
    if "\nAuthenticated to " in "\n" + log:
        statuses = _EXIT_STATUS.findall(log)
        if status != 255 or (statuses and int(statuses[-1]) == 255) or killed_by_signal(log):
            return None
        return ConnectionLostError(
            f"{host}:{port}: the connection was lost while the command ran: "
            + _last_words(log, "ssh exited with status 255"),
            host=host,
            port=port,
            phase="running the command",
        )
    jump = resolved.proxy_jump
    if jump is not None and "debug1: Executing proxy command" in log:
        failure = _jump_failure(stderr.decode("utf-8", "replace"), jump, resolved, first_jump)
        if failure is not None:
            return failure
    failure = _host_key_failure(log, resolved, known_hosts_path)
    if failure is not None:
        return failure
    denied = _DENIED.search(log)
    if denied is not None:
        return _auth_failure(log, denied, resolved)
    connect = _CONNECT.search(log)
    if connect is not None:
        why, where = connect.group(3).strip(), connect.group(1)
        return _connect_failure(why, where, int(connect.group(2)), connect_timeout_s)
    lookup = _RESOLVE.search(log)
    if lookup is not None:
        why = lookup.group(2).strip()
        cls = NameLookupRetryError if "Temporary failure" in why else NameLookupError
        return cls(
            f"cannot resolve host name {lookup.group(1)}: {why}",
            host=lookup.group(1),
            port=port,
            gai_errno=None,
        )
    if "\nConnection timed out during banner exchange" in "\n" + log:
        return NodeTimeoutError(
            f"waiting for the SSH banner timed out after {connect_timeout_s:g} s: from"
            f" {host}:{port} (is it an SSH server?)",
            phase="waiting for the SSH banner",
            limit_s=connect_timeout_s,
            node_deadline=False,
            host=host,
            port=port,
        )
    if re.search(r"^kex_exchange_identification: |^Connection (closed|reset) by ", log, re.M):
        return ConnectionClosedError(
            f"{host}:{port} closed the connection before the SSH handshake ended"
            f" ({_last_words(log, 'closed')}; sshd MaxStartups reached, or not an SSH server)",
            host=host,
            port=port,
            phase="the SSH handshake",
        )
    if status == 255:
        return ConnectionLostError(
            f"ssh could not connect to {host}:{port}: " + _last_words(log, "exit status 255"),
            host=host,
            port=port,
            phase=_phase(log),
        )
    # ssh exited before authenticating without saying why (a LocalCommand, a broken ssh).
    return ConnectionLostError(
        f"ssh exited with status {status} before running the command: "
        + _last_words(log + stderr.decode("utf-8", "replace"), "no message"),
        host=host,
        port=port,
        phase=_phase(log),
    )


def _host_key_failure(
    log: str, resolved: Resolved, known_hosts_path: str | None
) -> NodeError | None:
    offered = _HOST_KEY.search(log)
    key_type, fingerprint = offered.groups() if offered else ("unknown", "SHA256:?")
    host, port = resolved.hostname, resolved.port
    default_name = host if port == 22 else f"[{host}]:{port}"
    path = known_hosts_path or resolved.known_hosts or "~/.ssh/known_hosts"
    revoked = _REVOKED.search(log)
    if revoked is not None:
        return HostKeyRevokedError(
            host=host,
            port=port,
            known_hosts_name=revoked.group(1),
            known_hosts_path=path,
            key_type=key_type,
            offered_fingerprint=fingerprint,
        )
    changed = _CHANGED.search(log)
    if changed is not None or _CHANGED_BANNER.search(log):
        offending = _OFFENDING.search(log)
        expected: tuple[str, ...] = ()
        if offending is not None:
            path = offending.group(1)
            expected = _fingerprint_at(path, int(offending.group(2)))
        return HostKeyChangedError(
            host=host,
            port=port,
            known_hosts_name=changed.group(1) if changed else default_name,
            known_hosts_path=path,
            key_type=key_type,
            offered_fingerprint=fingerprint,
            expected_fingerprints=expected,
        )
    unknown = _UNKNOWN.search(log)
    if unknown is not None or "\nHost key verification failed." in "\n" + log:
        return HostKeyUnknownError(
            host=host,
            port=port,
            known_hosts_name=unknown.group(2) if unknown else default_name,
            known_hosts_path=path,
            key_type=key_type,
            offered_fingerprint=fingerprint,
        )
    return None


def _auth_failure(log: str, denied: re.Match[str], resolved: Resolved) -> AuthError:
    authenticating = _AUTHENTICATING.search(log)
    user = authenticating.group(2) if authenticating else resolved.user
    tried = tuple(dict.fromkeys(match.strip() for match in _OFFERING.findall(log)))
    methods = tuple(method for method in denied.group(2).split(",") if method)
    listed = ", ".join(tried) if tried else "no keys"
    return AuthError(
        f"{resolved.hostname}:{resolved.port} refused public-key login for {user}; tried"
        f" {listed} (the server accepts: {', '.join(methods) or 'nothing'})",
        host=resolved.hostname,
        port=resolved.port,
        user=user,
        tried=tried,
        allowed_methods=methods,
    )


def _connect_failure(why: str, host: str, port: int, limit_s: float) -> NodeError:
    if why.startswith(("Connection timed out", "Operation timed out")):
        return ConnectTimeoutError(
            f"TCP connect timed out after {limit_s:g} s: to {host}:{port}",
            phase="TCP connect",
            limit_s=limit_s,
            node_deadline=False,
            host=host,
            port=port,
        )
    return ConnectError(
        f"{host}:{port}: {why[:1].lower()}{why[1:]}",
        host=host,
        port=port,
        errno=_CONNECT_ERRNOS.get(why),
    )


def _jump_failure(
    stderr: str, jump: str, resolved: Resolved, first_jump: Resolved | None
) -> NodeError | None:
    """A failure at or through the first jump host, from its ``ssh -W`` client's stderr."""
    first = jump.split(",")[0].strip()
    _, jump_host, jump_port = parse_jump(first)
    stand_in = first_jump or Resolved(first, jump_host, jump_port or 22, "", None, None)
    loop = _JUMP_LOOP.search(stderr)
    failure: NodeError | None
    if loop is not None:
        failure = jump_loop(loop.group(1), [first, loop.group(1)])
    else:
        failure = classify(255, stderr, b"", stand_in, known_hosts_path=None)
        if isinstance(failure, ConnectionLostError) and not stderr.strip():
            return None  # the jump client said nothing: read the main log instead
        if failure is None:
            return None
        if "channel 0: open failed" in stderr or "stdio forwarding failed" in stderr:
            failure = ConnectError(
                f"jump host {first} could not connect to {resolved.hostname}:{resolved.port}"
                f" ({_last_words(stderr, 'open failed')})",
                host=resolved.hostname,
                port=resolved.port,
                jump_host=first,
            )
    failure.message = f"jump host {first}: {failure.message}"
    failure.jump_host = first
    return failure


def timeout_error(log: str, timeouts: Timeouts, resolved: Resolved) -> NodeTimeoutError:
    """The node deadline passed while ssh ran: name the phase its log had reached."""
    phase = _phase(log)
    cls = ConnectTimeoutError if phase == "TCP connect" else NodeTimeoutError
    return cls(
        f"the node deadline ({timeouts.node_s:g} s) passed during {phase}"
        f" ({resolved.hostname}:{resolved.port}); ssh was killed",
        phase=phase,
        limit_s=timeouts.node_s,
        node_deadline=True,
        host=resolved.hostname,
        port=resolved.port,
    )


def _phase(log: str) -> str:
    """How far ssh got, by its log, in the paramiko transport's phase names."""
    if "\nAuthenticated to " in "\n" + log:
        return "running the command"
    if "debug1: SSH2_MSG_SERVICE_ACCEPT received" in log or "Server host key:" in log:
        return "authentication"
    if "debug1: Remote protocol version" in log:
        return "the SSH handshake"
    if "debug1: Connection established." in log or "Executing proxy command" in log:
        return "waiting for the SSH banner"
    return "TCP connect"


def _last_words(text: str, default: str) -> str:
    """ssh's last message that is not debug chatter, for a failure's text."""
    for line in reversed(_printable_lines(text.encode("utf-8", "replace"))):
        if not line.startswith(("debug", "OpenSSH_", "Transferred:", "Bytes per second")):
            return line
    return default


def _printable_lines(data: bytes) -> list[str]:
    text = data.decode("utf-8", "replace")
    lines = ["".join(ch for ch in line if ch.isprintable()).strip() for line in text.splitlines()]
    return [line[:300] for line in lines if line]


def _fingerprint_at(path: str, line_number: int) -> tuple[str, ...]:
    """The ``SHA256:`` fingerprint of the key on ``path``'s line ``line_number`` (ssh's
    "Offending key"), or nothing if it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, 1):
                if number == line_number:
                    fields = line.split()
                    if fields and fields[0].startswith("@"):
                        fields = fields[1:]
                    blob = base64.b64decode(fields[2])
                    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode()
                    return ("SHA256:" + digest.rstrip("="),)
    except (OSError, IndexError, ValueError):
        pass
    return ()


# ---------------------------------------------------------------------- processes and files


class _Processes:
    """The ssh processes running now, so that ``close`` can kill them: after Ctrl-C the scan
    returns without waiting for its workers, and each ssh runs in its own session, out of reach
    of the terminal's SIGINT.  Once closed, a new process is killed as soon as it starts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: set[subprocess.Popen[bytes]] = set()
        self.closed = False

    def add(self, process: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._live.add(process)
            closed = self.closed
        if closed:
            raise NodeError(ErrorKind.INTERRUPTED, "the scan was stopped before this node ran")

    def discard(self, process: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._live.discard(process)

    def close(self) -> None:
        with self._lock:
            self.closed = True
            live, self._live = list(self._live), set()
        for process in live:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        for process in live:  # gone before the caller goes on (the CLI may exit right after)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=1.0)


def _run_process(
    argv: list[str],
    stdin: bytes,
    deadline: float,
    max_stdout: int,
    processes: _Processes,
) -> tuple[int, bytes, bytes]:
    """Run ``argv`` in its own session (no terminal to prompt on; a timeout kills its jump
    clients too) with ``stdin``, stdout capped, until ``deadline``.  Raises
    :class:`NodeTimeoutError`, :class:`vlcalc.errors.OutputTooLargeError` or ``OSError``."""
    env = dict(os.environ)
    env["SSH_ASKPASS_REQUIRE"] = "never"  # belt and braces: BatchMode already never prompts
    process = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        close_fds=True,
        env=env,
    )
    limit = Timeouts(exec_s=max(0.0, deadline - time.monotonic()))
    try:
        processes.add(process)
        stdout, stderr = _communicate(process, stdin, deadline, limit, max_stdout)
        try:
            status = process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise NodeTimeoutError(
                "ssh closed its output but did not exit",
                phase="running the command",
                limit_s=limit.exec_s,
                node_deadline=True,
            ) from None
        _close_pipes(process)
    except BaseException:
        _kill(process)
        raise
    finally:
        processes.discard(process)
    return status, stdout, stderr


def _read_log(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            return handle.read(1 << 20).decode("utf-8", "replace")
    except OSError:
        return ""


def _whole_seconds(seconds: float) -> int:
    """ssh's timeouts are whole seconds: round up, at least 1."""
    return max(1, math.ceil(seconds))


def _config_quote(path: str) -> str:
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _home() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:  # pragma: no cover - a uid without a passwd entry
        return os.path.expanduser("~")


def ssh_available(ssh_binary: str = "ssh") -> bool:
    """Whether the ``ssh`` client can be found on ``PATH``."""
    return shutil.which(ssh_binary) is not None


__all__ = [
    "OpenSSHTransport",
    "Resolved",
    "check_target",
    "classify",
    "config_text",
    "parse_jump",
    "ssh_argv",
    "ssh_available",
]
