"""ssh_config: reading it, an index for big configs, resolving a host into an :class:`Endpoint`,
and the ProxyJump route with OpenSSH's loop check.

Example::

    config = read_ssh_config(["/home/ops/.ssh/config"])
    endpoint = resolve(config, "node01", port=None, user=None, key_file=None)
    endpoint.hostname, endpoint.port, endpoint.proxy_jump    # ("10.0.0.11", 22, ("bastion",))
    check_jump_route(endpoint, lambda host, port, user: resolve(config, host, port, user, None))
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from vlcalc.errors import ConfigError, JumpLoopError
from vlcalc.transport.ssh._paramiko import (
    config_entries,
    config_from_entries,
    enable_match_exec,
    has_match_exec,
    paramiko,
)

DEFAULT_KEY_NAMES = ("id_ed25519", "id_ecdsa", "id_rsa")
#: A longer route is refused: no real network needs it, and each hop is a connection.
MAX_JUMPS = 8


class IndexedSSHConfig:
    """paramiko's ``SSHConfig.lookup`` with an index in front of it.

    paramiko matches a host against every block in order: with one ``Host`` block per node, a
    1,000-node ssh_config cost 23 ms of CPU per lookup (measured), more than the whole SSH run.
    Blocks whose patterns are all literal names can only match those names, so a lookup hands
    paramiko just the literal blocks for this host plus every wildcard, negated and ``Match``
    block, in file order -- the same answer.  With ``CanonicalizeHostname`` a second lookup uses
    another name, so then the index is bypassed (as it is when :mod:`._paramiko` cannot see the
    blocks).
    """

    def __init__(self, config: paramiko.SSHConfig):
        self.config = config
        entries = config_entries(config)
        self.entries: list[dict[str, Any]] = entries or []
        self.literal: dict[str, list[int]] = {}
        self.always: list[int] = []
        self.indexed = entries is not None
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
        return config_from_entries([self.entries[i] for i in positions]).lookup(host)


def read_ssh_config(paths: Sequence[str]) -> IndexedSSHConfig:
    """Parse the files that exist among ``paths``, in order, into one config."""
    parsed = paramiko.SSHConfig()
    for path in paths:
        try:
            with open(path, encoding="utf-8") as handle:
                parsed.parse(handle)
        except FileNotFoundError:
            continue
        except (OSError, UnicodeError, paramiko.ConfigParseError) as exc:
            raise ConfigError(f"cannot read ssh config {path}: {exc}", path=path) from exc
    if has_match_exec(parsed):
        enable_match_exec()
    return IndexedSSHConfig(parsed)


def known_hosts_name(host: str, port: int) -> str:
    """The name OpenSSH looks up and writes: ``host`` on port 22, ``[host]:port`` otherwise.

    >>> known_hosts_name("node01", 2222)
    '[node01]:2222'
    """
    return host if port == 22 else f"[{host}]:{port}"


@dataclass(frozen=True)
class Endpoint:
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


def resolve(
    config: IndexedSSHConfig,
    host: str,
    port: int | None,
    user: str | None,
    key_file: str | None,
    *,
    known_hosts_path: str | None = None,
) -> Endpoint:
    """``host`` as OpenSSH would see it: explicit ``port``/``user``/``key_file`` win over the
    config, as ``ssh -p/-l/-i`` do; ``known_hosts_path`` overrides ``UserKnownHostsFile``."""
    try:
        options = config.lookup(host)
    except Exception as exc:  # paramiko raises e.g. ImportError for 'Match exec' w/o invoke
        raise ConfigError(f"cannot evaluate ssh config for {host!r}: {exc}", host=host) from exc
    hostname = str(options.get("hostname", host))
    try:
        real_port = port if port is not None else int(options.get("port", 22))
    except ValueError as exc:
        raise ConfigError(
            f"ssh config has a bad Port for {host!r}: {options.get('port')!r}", host=host
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
    user_known = str(options.get("userknownhostsfile", "") or "").split()
    known_path = known_hosts_path or os.path.expanduser(
        user_known[0] if user_known else "~/.ssh/known_hosts"
    )
    return Endpoint(
        alias=host,
        hostname=hostname,
        port=real_port,
        user=real_user,
        identity_files=identities,
        explicit_identities=explicit,
        identities_only=str(options.get("identitiesonly", "no")).lower() == "yes",
        proxy_jump=jumps,
        known_hosts_name=alias or known_hosts_name(hostname, real_port),
        hash_known_hosts=str(options.get("hashknownhosts", "no")).lower() == "yes",
        user_known_hosts=known_path,
    )


def parse_jump(spec: str) -> tuple[str | None, str, int | None]:
    """``[user@]host[:port]`` (or ``ssh://[user@]host[:port]``) -> (user, host, port).

    >>> parse_jump("ops@bastion:2222")
    ('ops', 'bastion', 2222)
    """
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


Resolver = Callable[[str, "int | None", "str | None"], Endpoint]


def jump_endpoint(chain: tuple[str, ...], resolver: Resolver) -> Endpoint:
    """The endpoint of the jump host ``chain[-1]``: reached through ``chain[:-1]`` when that is
    not empty (as ``ssh -J a,b`` reaches ``b`` with ``-J a``), else through its own ProxyJump."""
    user, host, port = parse_jump(chain[-1])
    endpoint = resolver(host, port, user)
    if len(chain) > 1:
        endpoint = replace(endpoint, proxy_jump=chain[:-1])
    return endpoint


def check_jump_route(endpoint: Endpoint, resolver: Resolver) -> None:
    """Refuse a ProxyJump route that never ends, before any connection is made.

    A route is a tree of jump chains: ``endpoint`` is reached through its chain, whose last host
    is reached through the chain before it, or, for a first hop, through that host's own
    ProxyJump.  A chain that comes back on its own path would be connected forever (OpenSSH
    stops the simplest case, ``Host *`` / ``ProxyJump bastion`` reaching ``bastion`` itself,
    with "jumphost loop via bastion"); one longer than :data:`MAX_JUMPS` hops is refused too.
    Raises :class:`JumpLoopError` (kind ``unreachable``).
    """

    def walk(chain: tuple[str, ...], path: tuple[tuple[str, ...], ...]) -> None:
        if chain in path:
            hops = [c[-1] for c in (*path, chain)]
            raise JumpLoopError(
                f"jumphost loop via {chain[-1]} ({' -> '.join(hops)}): ssh_config sends the"
                " jump host back through itself; give it `ProxyJump none` (a"
                f" `Host {parse_jump(chain[-1])[1]}` block with `ProxyJump none` before"
                " `Host *`)",
                chain=tuple(hops),
            )
        if len(path) >= MAX_JUMPS:
            raise JumpLoopError(
                f"ProxyJump route longer than {MAX_JUMPS} hosts"
                f" ({' -> '.join(c[-1] for c in (*path, chain))})",
                chain=tuple(c[-1] for c in (*path, chain)),
            )
        hop = jump_endpoint(chain, resolver)
        if hop.proxy_jump:
            walk(hop.proxy_jump, (*path, chain))

    if endpoint.proxy_jump:
        walk(endpoint.proxy_jump, ())


__all__ = [
    "DEFAULT_KEY_NAMES",
    "MAX_JUMPS",
    "Endpoint",
    "IndexedSSHConfig",
    "check_jump_route",
    "jump_endpoint",
    "parse_jump",
    "read_ssh_config",
    "resolve",
]
