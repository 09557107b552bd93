"""The SSH transport: one paramiko connection per node run, strict host keys, phase deadlines.

``SSHTransport().run(target, "python3 -", probe_source, timeouts=Timeouts(), max_stdout=1 << 20)``
connects to ``target`` as OpenSSH's ``ssh`` would (ssh_config read by :mod:`.ssh_config` with
OpenSSH's semantics: Include, Host/Match in one pass, first value wins, % tokens; HostName, User,
Port, IdentityFile, IdentitiesOnly, CertificateFile, IdentityAgent, ProxyJump, ProxyCommand,
ConnectTimeout, HostKeyAlias, HashKnownHosts, User/GlobalKnownHostsFile; the target's
``ssh_options`` act like ``ssh -o``), refuses a host whose config asks for what paramiko cannot
do (``UnsupportedConfigError``, naming ``--transport openssh``), checks the server's host key
against ``known_hosts`` *before* authenticating, authenticates with public keys only, runs the
command, writes stdin, and drains stdout and stderr until the command ends.

Everything that is the same for every node -- the parsed ssh_config, the known_hosts index, the
loaded private keys, the ssh-agent connections, the connections to jump hosts -- is built once per
transport, lazily, because a scan runs ``run`` from a thread pool for hundreds of nodes.

Phases and their limits (each capped by ``node_s``, counted from the start of ``run`` and
including retries): ``connect_s`` for the TCP connect (or the ``direct-tcpip`` channel through a
jump host), ``banner_s`` for the SSH banner *and* the key exchange, ``auth_s`` for all key
attempts together, ``exec_s`` from opening the session to the exit status.  The host key is
checked between key exchange and authentication, so a refused host never sees a login attempt.
``StrictHostKeyChecking`` in ssh_config is ignored: checking cannot be turned off.  No wait
outlives the node deadline: waits for another thread's jump-host connection or for ssh-agent are
bounded by it too, and a ProxyJump route that loops is refused before connecting.

Failures are :class:`vlcalc.errors.NodeError` subclasses that carry their data (``host``,
``port``, ``errno``, offered and expected host key fingerprints, the keys tried...), with ``kind``
one of ``unreachable``, ``auth-failed``, ``host-key-unknown``, ``host-key-changed``, ``timeout``
or ``bad-output``.  Only failures to *connect* (refused, no route, reset or closed before the SSH
handshake, a TCP connect timeout: ``retryable`` classes) are retried, ``Timeouts.retries`` times
with jittered exponential backoff, and never past the node deadline.

The modules: ``ssh_config`` (OpenSSH's config language), ``config`` (endpoints, refusals, jump
routes), ``known_hosts``, ``auth`` (keys,
ssh-agent, login), ``connect`` (TCP, banner, key exchange), ``session`` (exec and drain),
``deadlines`` (phase clock, reaper), ``transport`` (:class:`SSHTransport`), and ``_paramiko``, the
only module that relies on paramiko beyond its public API.
"""

from __future__ import annotations

from vlcalc.transport.ssh.connect import DEFAULT_DISABLED_ALGORITHMS, PREFERRED_CIPHERS
from vlcalc.transport.ssh.transport import SSHTransport

__all__ = ["DEFAULT_DISABLED_ALGORITHMS", "PREFERRED_CIPHERS", "SSHTransport"]
