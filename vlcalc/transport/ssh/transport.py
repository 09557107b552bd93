""":class:`SSHTransport`: the steps of one node run put together (see the package docstring)."""

from __future__ import annotations

import os
import random
import socket
import threading
import time

from vlcalc.errors import ConfigError, ConnectError, ConnectTimeoutError, NodeError
from vlcalc.model import ErrorKind
from vlcalc.transport.base import RunResult, Target, Timeouts, with_retries
from vlcalc.transport.ssh import auth, connect, known_hosts
from vlcalc.transport.ssh._paramiko import paramiko
from vlcalc.transport.ssh.config import (
    MAX_JUMPS,
    Endpoint,
    check_jump_route,
    jump_endpoint,
    read_ssh_config,
    resolve,
)
from vlcalc.transport.ssh.connect import ShellProxyCommand
from vlcalc.transport.ssh.deadlines import REAPER, Attempt, acquire
from vlcalc.transport.ssh.session import execute
from vlcalc.transport.ssh.ssh_config import Config


class SSHTransport:
    """Run commands on nodes over SSH with paramiko.  See the package docstring.

    ``ssh_config_path``: ``None`` reads ``~/.ssh/config`` then ``/etc/ssh/ssh_config`` (either may
    be missing); a path reads only that file, as ``ssh -F`` does.  ``known_hosts_path``: ``None``
    uses the config's ``UserKnownHostsFile``s (default ``~/.ssh/known_hosts``,
    ``~/.ssh/known_hosts2``) and the read-only ``GlobalKnownHostsFile``s (default
    ``/etc/ssh/ssh_known_hosts``, ``/etc/ssh/ssh_known_hosts2``); a path uses only that file.
    ``accept_new`` records the key of a host that has no key in known_hosts yet (OpenSSH
    ``StrictHostKeyChecking=accept-new``); a *changed* key is always refused.  ``use_agent``
    offers the keys of the agent at ``IdentityAgent`` (default ``$SSH_AUTH_SOCK``).
    ``retry_backoff_s`` is the first retry's mean delay (doubling, +-50 % jitter).
    ``disabled_algorithms`` goes to paramiko (default: ``DEFAULT_DISABLED_ALGORITHMS``).

    Example::

        with SSHTransport(accept_new=True) as ssh:
            result = ssh.run(Target("node01", "10.0.0.11"), "python3 -", probe,
                             timeouts=Timeouts(), max_stdout=1 << 20)
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
            connect.DEFAULT_DISABLED_ALGORITHMS
            if disabled_algorithms is None
            else disabled_algorithms
        )
        # Guards the lazily built caches; held only for in-memory work and local file reads.
        self._lock = threading.Lock()
        self._config: Config | None = None
        self._config_failure: ConfigError | None = None
        self._known: dict[str, known_hosts.KnownHostsFile] = {}
        self._known_write_lock = threading.Lock()
        self._keys = auth.KeyFiles()
        self._agents = auth.AgentPool(use_agent)
        self._routes_checked: set[tuple[str, ...]] = set()
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
        attempt = Attempt(timeouts)
        try:
            endpoint = self._resolve(
                target.host,
                target.port,
                target.user,
                target.key_file,
                ssh_options=target.ssh_options,
                attempt=attempt,
                read_config=target.read_ssh_config,
            )
            self._check_route(endpoint, attempt)
            client = self._connect_with_retries(endpoint, attempt)
        except NodeError as exc:
            exc.node = target.name
            raise
        try:
            return execute(
                client, command, stdin, attempt, max_stdout=max_stdout, endpoint=endpoint
            )
        except NodeError as exc:
            exc.node = target.name
            raise
        finally:
            client.close()

    def close(self) -> None:
        """Close the cached jump-host connections and the ssh-agent connections."""
        with self._lock:
            jumps, self._jumps = list(self._jumps.values()), {}
        for transport in jumps:
            transport.close()
        self._agents.close()

    def __enter__(self) -> SSHTransport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ configuration

    def _ssh_config(self) -> Config:
        config = self._config
        if config is not None:
            return config
        with self._lock:
            if self._config is None and self._config_failure is None:
                try:
                    if self.ssh_config_path is not None:
                        self._config = read_ssh_config(self.ssh_config_path, None)
                    else:
                        self._config = read_ssh_config(
                            os.path.expanduser("~/.ssh/config"), "/etc/ssh/ssh_config"
                        )
                except ConfigError as exc:
                    self._config_failure = exc
            if self._config is None:
                failure = self._config_failure
                assert failure is not None
                # A new error per node: the scan fills in each one's node name.
                raise ConfigError(failure.message, path=failure.path)
            return self._config

    def _resolve(
        self,
        host: str,
        port: int | None,
        user: str | None,
        key_file: str | None = None,
        *,
        ssh_options: tuple[tuple[str, str], ...] = (),
        attempt: Attempt | None = None,
        read_config: bool = True,
    ) -> Endpoint:
        config = self._ssh_config()
        return resolve(
            config if read_config else Config([], config.local),
            host,
            port,
            user,
            key_file,
            known_hosts_path=self.known_hosts_path,
            ssh_options=ssh_options,
            exec_timeout_s=10.0 if attempt is None else max(0.001, attempt.remaining()),
        )

    def _check_route(self, endpoint: Endpoint, attempt: Attempt) -> None:
        """Refuse a jump loop before connecting (see ``config.check_jump_route``); a route is
        checked once per transport."""
        if not endpoint.proxy_jump or endpoint.proxy_jump in self._routes_checked:
            return
        check_jump_route(
            endpoint,
            lambda host, port, user: self._resolve(host, port, user, attempt=attempt),
        )
        with self._lock:
            self._routes_checked.add(endpoint.proxy_jump)

    def _known_hosts(self, endpoint: Endpoint) -> list[known_hosts.KnownHostsFile]:
        """The indexes of the endpoint's known_hosts files: the user files first (new keys go
        to the first of them), then the global ones."""
        result = []
        for one in (*endpoint.known_hosts_files, *endpoint.global_known_hosts_files):
            index = self._known.get(one)
            if index is None:
                with self._lock:
                    index = self._known.get(one)
                    if index is None:
                        index = known_hosts.KnownHostsFile.load(one)
                        self._known[one] = index
            result.append(index)
        return result

    # ------------------------------------------------------------------ connecting

    def _connect_with_retries(self, endpoint: Endpoint, attempt: Attempt) -> paramiko.Transport:
        return with_retries(
            lambda: self._connect(endpoint, attempt, depth=0),
            retries=attempt.timeouts.retries,
            remaining=attempt.remaining,
            backoff_s=self.retry_backoff_s,
            jitter=self._random,
        )

    def _connect(self, endpoint: Endpoint, attempt: Attempt, *, depth: int) -> paramiko.Transport:
        """An authenticated paramiko Transport to ``endpoint`` (through its jump hosts)."""
        sock: socket.socket | paramiko.Channel | ShellProxyCommand
        if endpoint.proxy_jump:
            sock = self._jump_channel(endpoint, attempt, depth)
        elif endpoint.proxy_command is not None:
            sock = connect.proxy_command(endpoint)
        else:
            sock = connect.tcp_connect(endpoint, attempt)
        try:
            return self._handshake(sock, endpoint, attempt)
        except NodeError as failure:
            sock.close()
            if isinstance(sock, ShellProxyCommand):
                connect.describe_proxy_failure(failure, sock)
            raise
        except BaseException:
            sock.close()
            raise

    def _jump_channel(self, endpoint: Endpoint, attempt: Attempt, depth: int) -> paramiko.Channel:
        """A ``direct-tcpip`` channel to ``endpoint`` through the last of its jump hosts (which
        is reached through the ones before it)."""
        chain = endpoint.proxy_jump
        if depth >= MAX_JUMPS:  # pragma: no cover - check_jump_route refuses such routes first
            raise NodeError(ErrorKind.UNREACHABLE, f"ProxyJump chain longer than {MAX_JUMPS}")
        jump = self._jump_transport(chain, attempt, depth)
        phase_s = attempt.timeouts.connect_s
        deadline = attempt.phase_deadline(phase_s)
        host, port = endpoint.hostname, endpoint.port
        try:
            return jump.open_channel(
                "direct-tcpip",
                (host, port),
                ("127.0.0.1", 0),
                timeout=max(0.001, deadline - time.monotonic()),
            )
        except paramiko.ChannelException as exc:
            raise ConnectError(
                f"jump host {chain[-1]} could not connect to {host}:{port}"
                f" ({exc.text or exc.code})",
                host=host,
                port=port,
                jump_host=chain[-1],
            ) from exc
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if not jump.is_active():
                # Only a dead connection is dropped: other nodes' sessions run through it (a
                # channel that was slow to open, under load, once took all of them down).
                self._drop_jump(chain, jump)
            if "Timeout opening channel" in str(exc):
                failure: NodeError = attempt.timeout(
                    "TCP connect",
                    phase_s,
                    deadline,
                    f"through jump host {chain[-1]}",
                    cls=ConnectTimeoutError,
                    host=host,
                    port=port,
                )
            else:
                failure = ConnectError(
                    f"lost the connection to jump host {chain[-1]}: {exc}",
                    host=host,
                    port=port,
                )
            failure.jump_host = chain[-1]
            raise failure from exc

    def _jump_transport(
        self, chain: tuple[str, ...], attempt: Attempt, depth: int
    ) -> paramiko.Transport:
        """The cached connection to jump host ``chain[-1]``, made by one thread while the others
        wait for it -- no longer than their node deadline."""
        with self._lock:
            cached = self._jumps.get(chain)
            if cached is not None and cached.is_active():
                return cached
            lock = self._jump_locks.setdefault(chain, threading.Lock())
        with acquire(lock, attempt, f"the connection to jump host {chain[-1]}"):
            with self._lock:
                cached = self._jumps.get(chain)
                if cached is not None and cached.is_active():
                    return cached
            try:
                endpoint = jump_endpoint(
                    chain,
                    lambda host, port, user: self._resolve(host, port, user, attempt=attempt),
                )
                transport = self._connect(endpoint, attempt, depth=depth + 1)
            except NodeError as failure:
                failure.message = f"jump host {chain[-1]}: {failure.message}"
                failure.jump_host = failure.jump_host or chain[-1]
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
        sock: socket.socket | paramiko.Channel | ShellProxyCommand,
        endpoint: Endpoint,
        attempt: Attempt,
    ) -> paramiko.Transport:
        indexes = self._known_hosts(endpoint)
        known = [found for index in indexes for found in index.lookup(endpoint.known_hosts_name)]
        transport = connect.new_transport(
            sock,
            disabled_algorithms=self.disabled_algorithms,
            known_types=[key_type for key_type, _ in known],
        )
        # The phases below have their own timeouts; the alarm (a little after the node deadline,
        # so those fire first and name their phase) only catches a server stuck mid-handshake.
        alarm = REAPER.arm(attempt.deadline + 0.25, transport.close)
        phase = "the SSH handshake"
        try:
            connect.start(transport, endpoint, attempt)
            phase = "authentication"
            offered = transport.get_remote_server_key()
            if known_hosts.check_host_key(
                offered, endpoint, indexes, known, accept_new=self.accept_new
            ):
                known_hosts.record_host_key(
                    indexes[0] if endpoint.known_hosts_files else None,
                    endpoint,
                    offered.get_name(),
                    offered.asbytes(),
                    self._known_write_lock,
                    attempt,
                )
            agent_socket = endpoint.identity_agent if self.use_agent else None
            with self._agents.borrow(attempt, agent_socket) as agent_keys:
                auth.authenticate(
                    transport,
                    endpoint,
                    attempt,
                    self._keys,
                    agent_keys,
                    use_agent=self.use_agent,
                )
        except NodeError as failure:
            transport.close()
            if alarm.fired or (failure.kind == ErrorKind.UNREACHABLE and attempt.remaining() <= 0):
                raise attempt.timeout(
                    phase,
                    attempt.timeouts.node_s,
                    attempt.deadline,
                    host=endpoint.hostname,
                    port=endpoint.port,
                ) from None
            raise
        except BaseException:
            transport.close()
            raise
        finally:
            REAPER.cancel(alarm)
        if alarm.fired:  # pragma: no cover - the phases above raise first
            transport.close()
            raise attempt.timeout(phase, attempt.timeouts.node_s, attempt.deadline)
        return transport


__all__ = ["SSHTransport"]
