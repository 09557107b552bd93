"""ssh_config for the paramiko transport: a host resolved into an :class:`Endpoint` exactly as
OpenSSH's ``ssh`` would resolve it (see :mod:`.ssh_config`), the options paramiko cannot serve
refused per host (:func:`refuse_unsupported`), and the ProxyJump route with OpenSSH's loop check.

Example::

    config = read_ssh_config("/home/ops/.ssh/config", None)
    endpoint = resolve(config, "node01", port=None, user=None, key_file=None)
    endpoint.hostname, endpoint.port, endpoint.proxy_jump    # ("10.0.0.11", 22, ("bastion",))
    check_jump_route(endpoint, lambda host, port, user: resolve(config, host, port, user, None))
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace

from vlcalc.errors import JumpLoopError, UnsupportedConfigError
from vlcalc.transport.ssh import ssh_config
from vlcalc.transport.ssh.ssh_config import Config, Line, Local, Options, Query

#: A longer route is refused: no real network needs it, and each hop is a connection.
MAX_JUMPS = 8
OPENSSH_WAY_OUT = "use --transport openssh for this host"


def read_ssh_config(
    user_config: str | None, system_config: str | None, local: Local | None = None
) -> Config:
    """Read the files as ``ssh`` does (``-F FILE``: ``user_config=FILE, system_config=None``;
    default: ``~/.ssh/config`` and ``/etc/ssh/ssh_config``).  Raises ``ConfigError``."""
    return ssh_config.load(user_config, system_config, local or Local.current())


def known_hosts_name(host: str, port: int) -> str:
    """The name OpenSSH looks up and writes: ``host`` on port 22, ``[host]:port`` otherwise.

    >>> known_hosts_name("node01", 2222)
    '[node01]:2222'
    """
    return host if port == 22 else f"[{host}]:{port}"


@dataclass(frozen=True)
class Endpoint:
    """A host after ssh_config: where to connect, as whom, with which keys, through what.

    ``identity_files``/``certificate_files`` are expanded paths; ``identity_agent`` the agent
    socket (``None``: no agent); ``proxy_command`` the expanded command (run by ``/bin/sh -c``);
    ``known_hosts_files`` the user known_hosts files (new keys go to the first) and
    ``global_known_hosts_files`` the read-only ones; ``connect_timeout_s`` ssh_config's
    ``ConnectTimeout``; ``strict_host_key_checking`` what ssh_config asked for (checking stays
    strict whatever it says: see the README).
    """

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
    known_hosts_files: tuple[str, ...] = ()
    global_known_hosts_files: tuple[str, ...] = ()
    certificate_files: tuple[str, ...] = ()
    identity_agent: str | None = None
    proxy_command: str | None = None
    connect_timeout_s: float | None = None
    strict_host_key_checking: str = "ask"

    @property
    def label(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"

    @property
    def user_known_hosts(self) -> str:
        """The known_hosts file named in messages and written by ``--accept-new``."""
        files = self.known_hosts_files or self.global_known_hosts_files
        return files[0] if files else "(no known_hosts file: UserKnownHostsFile none)"


def _kerberos_ticket(local: Local) -> bool:
    """Whether a Kerberos credential cache seems to exist, i.e. whether OpenSSH's GSSAPI login
    could succeed where vlcalc's public-key login would not."""
    cache = local.env("KRB5CCNAME")
    return bool(cache) or os.path.exists(f"/tmp/krb5cc_{local.uid}")


def _refuse(line: Line, what: str) -> UnsupportedConfigError:
    value = line.raw if line.keyword in ssh_config.RAW_KEYWORDS else " ".join(line.args)
    return UnsupportedConfigError(
        f"{line.where}: {line.keyword} {value}: {what}; {OPENSSH_WAY_OUT}",
        option=line.keyword,
        value=value,
        path=line.source,
    )


def refuse_unsupported(options: Options, local: Local) -> None:
    """Raise :class:`UnsupportedConfigError` for the first option (first value, as OpenSSH
    uses it) that changes where or how ssh would connect and that vlcalc cannot do the same
    way.  The README's table lists each with its reason."""
    lines = options.first_lines

    def value(keyword: str) -> str | None:
        line = lines.get(keyword)
        return line.args[0].lower() if line is not None and line.args else None

    checks: list[tuple[str, bool, str]] = [
        ("canonicalizehostname", value("canonicalizehostname") not in (None, "no", "false"),
         "vlcalc does not canonicalize host names (a DNS search and a second config pass)"),
        ("controlmaster", value("controlmaster") not in (None, "no", "false"),
         "vlcalc does not share connections through a ControlMaster socket"),
        ("controlpath", value("controlpath") not in (None, "none"),
         "vlcalc does not use ControlMaster sockets"),
        ("remotecommand", value("remotecommand") not in (None, "none"),
         "vlcalc runs its probe, not a RemoteCommand"),
        ("requesttty", value("requesttty") in ("yes", "true", "force"),
         "vlcalc runs its probe without a terminal"),
        ("sessiontype", value("sessiontype") not in (None, "default"),
         "vlcalc runs a command session"),
        ("stdinnull", value("stdinnull") in ("yes", "true"), "vlcalc sends the probe on stdin"),
        ("forkafterauthentication", value("forkafterauthentication") in ("yes", "true"),
         "vlcalc does not fork into the background"),
        ("securitykeyprovider", value("securitykeyprovider") not in (None, "internal"),
         "paramiko cannot use FIDO security keys"),
        ("pkcs11provider", value("pkcs11provider") not in (None, "none"),
         "paramiko cannot use PKCS#11 smartcards"),
        ("smartcarddevice", value("smartcarddevice") is not None,
         "paramiko cannot use smartcards"),
        ("gssapiauthentication",
         value("gssapiauthentication") in ("yes", "true") and _kerberos_ticket(local),
         "paramiko's GSSAPI login is not used (a Kerberos ticket cache exists)"),
        ("gssapikeyexchange", value("gssapikeyexchange") in ("yes", "true"),
         "paramiko's GSSAPI key exchange is not used"),
        ("hostbasedauthentication", value("hostbasedauthentication") in ("yes", "true"),
         "vlcalc logs in with public keys only"),
        ("pubkeyauthentication", value("pubkeyauthentication") in ("no", "false"),
         "vlcalc logs in with public keys only"),
        ("preferredauthentications",
         "preferredauthentications" in lines
         and "publickey" not in ",".join(lines["preferredauthentications"].args).split(","),
         "vlcalc logs in with public keys only"),
        ("hostkeyalgorithms", "hostkeyalgorithms" in lines,
         "vlcalc does not apply algorithm restrictions"),
        ("kexalgorithms", "kexalgorithms" in lines,
         "vlcalc does not apply algorithm restrictions"),
        ("ciphers", "ciphers" in lines, "vlcalc does not apply algorithm restrictions"),
        ("macs", "macs" in lines, "vlcalc does not apply algorithm restrictions"),
        ("pubkeyacceptedalgorithms", "pubkeyacceptedalgorithms" in lines,
         "vlcalc does not apply algorithm restrictions"),
        ("pubkeyacceptedkeytypes", "pubkeyacceptedkeytypes" in lines,
         "vlcalc does not apply algorithm restrictions"),
        ("casignaturealgorithms", "casignaturealgorithms" in lines,
         "vlcalc does not apply algorithm restrictions"),
        ("requiredrsasize", "requiredrsasize" in lines,
         "vlcalc does not apply a minimum RSA key size"),
        ("addressfamily", value("addressfamily") not in (None, "any"),
         "vlcalc does not restrict the address family"),
        ("bindaddress", "bindaddress" in lines, "vlcalc does not bind a local address"),
        ("bindinterface", "bindinterface" in lines, "vlcalc does not bind a local interface"),
        ("checkhostip", value("checkhostip") in ("yes", "true"),
         "vlcalc does not check the host's IP address in known_hosts"),
        ("knownhostscommand", "knownhostscommand" in lines,
         "vlcalc reads known_hosts files only"),
        ("revokedhostkeys", "revokedhostkeys" in lines,
         "vlcalc reads revoked keys only from @revoked lines in known_hosts"),
        ("proxyusefdpass", value("proxyusefdpass") in ("yes", "true"),
         "vlcalc speaks SSH over the ProxyCommand's stdio"),
        ("tunnel", value("tunnel") not in (None, "no", "false"), "vlcalc opens no tunnel"),
        ("localcommand",
         "localcommand" in lines and value("permitlocalcommand") in ("yes", "true"),
         "vlcalc does not run a LocalCommand"),
    ]  # fmt: skip
    for keyword, refused, why in checks:
        if refused:
            raise _refuse(lines[keyword], why)


def _agent_socket(resolved: ssh_config.Resolved, local: Local) -> str | None:
    agent = resolved.identity_agent
    if agent is None or agent == "SSH_AUTH_SOCK":
        return local.env("SSH_AUTH_SOCK") or None
    if agent.lower() == "none":
        return None
    if agent.startswith("$") and not agent.startswith("${"):
        return local.env(agent[1:]) or None
    return agent


def _jumps(text: str | None) -> tuple[str, ...]:
    if not text:
        return ()
    if "%" in text:
        raise UnsupportedConfigError(
            f"ProxyJump {text}: % tokens in ProxyJump are not expanded by vlcalc;"
            f" {OPENSSH_WAY_OUT}",
            option="proxyjump",
            value=text,
        )
    return tuple(part.strip() for part in text.split(",") if part.strip())


def resolve(
    config: Config,
    host: str,
    port: int | None,
    user: str | None,
    key_file: str | None,
    *,
    known_hosts_path: str | None = None,
    ssh_options: tuple[tuple[str, str], ...] = (),
    exec_timeout_s: float = 10.0,
) -> Endpoint:
    """``host`` as ``ssh [-o OPTION]... [-p port] [-l user] [-i key_file] host`` would see it,
    or :class:`UnsupportedConfigError`/``ConfigError``; ``known_hosts_path`` (vlcalc's
    ``--known-hosts``) replaces every known_hosts file of the config."""
    query = Query(host=host, user=user, port=port, key_file=key_file, options=ssh_options)
    options = ssh_config.evaluate(config, query, exec_timeout_s=exec_timeout_s)
    refuse_unsupported(options, config.local)
    resolved = ssh_config.resolve_options(options, config.local)
    known = resolved.user_known_hosts_files
    global_known = resolved.global_known_hosts_files
    if known_hosts_path is not None:
        known, global_known = (known_hosts_path,), ()
    return Endpoint(
        alias=host,
        hostname=resolved.hostname,
        port=resolved.port,
        user=resolved.user,
        identity_files=resolved.identity_files_expanded,
        explicit_identities=resolved.explicit_identities,
        identities_only=resolved.identities_only,
        proxy_jump=_jumps(resolved.proxy_jump),
        known_hosts_name=resolved.host_key_alias
        or known_hosts_name(resolved.hostname, resolved.port),
        hash_known_hosts=resolved.hash_known_hosts,
        known_hosts_files=known,
        global_known_hosts_files=global_known,
        certificate_files=resolved.certificate_files_expanded,
        identity_agent=_agent_socket(resolved, config.local),
        proxy_command=resolved.proxy_command_expanded,
        connect_timeout_s=resolved.connect_timeout_s,
        strict_host_key_checking=resolved.strict_host_key_checking,
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
        if rest.startswith(":") and rest[1:].isascii() and rest[1:].isdigit():
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = int(port_text) if port_text.isascii() and port_text.isdigit() else None
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
    "MAX_JUMPS",
    "Endpoint",
    "check_jump_route",
    "jump_endpoint",
    "known_hosts_name",
    "parse_jump",
    "read_ssh_config",
    "refuse_unsupported",
    "resolve",
]
