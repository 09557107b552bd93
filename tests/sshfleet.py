"""A fleet of real OpenSSH ``sshd`` processes on 127.0.0.1, for transport tests and benchmarks.

Every node is its own ``sshd -D -e -f CONFIG`` child process with its own ed25519 host key and a
free port.  The client side gets one generated user key pair, an ssh_config with one ``Host``
block per node and a ``known_hosts``.  Each node's ``authorized_keys`` holds the user key with a
*forced command* (``command="..."``): a POSIX shell script that ignores what the client asked to
run, reads stdin, checks its sha256 against the expected probe source and prints the node's own
fixture document, so every node answers with a different document.  A node can also be told to
misbehave (:data:`BEHAVIOURS`), be something other than an sshd (:data:`KINDS`), or have a host
key the client does not know or knows differently (:data:`HOST_KEY_MODES`).

Example::

    specs = [NodeSpec("node01", document=b'{"vq": 1}'),
             NodeSpec("node02", behaviour="garbage"),
             NodeSpec("node03", host_key="changed"),
             NodeSpec("silent", kind="silent"),
             NodeSpec("closed", kind="closed")]
    with SSHFleet(tmp_path, specs, expected_stdin=PROBE, bastion=True) as fleet:
        node = fleet.node("node01")      # FleetNode: name, port, host_key_fingerprint, log(), ...
        fleet.ssh_config_path, fleet.known_hosts_path, fleet.user_key_path, fleet.other_key_path
        # ssh -F fleet.ssh_config_path node01           (ssh_config: Host, HostName, Port, ...)
        # ssh -F fleet.ssh_config_path node01-via-bastion  (ProxyJump bastion)

Without a context manager call :meth:`SSHFleet.start` and :meth:`SSHFleet.stop` (``stop`` is
idempotent; ``start`` stops what it started when it fails).  The sshds start concurrently; the
fleet waits until each port accepts (50 nodes: 0.3-1.1 s, 1,000 nodes: ~7 s on 2 CPUs).

Notes for benchmarks:

* Each node's sshd sets ``SetEnv SHLVL=1``: bash runs ``~/.bashrc`` for commands started by sshd
  when it is a top-level shell, and a pyenv/conda init there added ~300 ms to every run.
* ``sshd_flags=("-r",)`` turns off sshd's re-exec per connection (OpenSSH < 9.8): ~30 % less
  wall time for a fleet run on a small machine.  The server side, not the client, bounds the
  wall time of a big fleet run on one machine.

The fleet needs ``/usr/sbin/sshd`` and, when run as root, the privilege-separation directory
``/run/sshd`` (created if missing).  Nothing in it is vlcalc-specific.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

SSHD = "/usr/sbin/sshd"

#: What the forced command does on a node, after (or instead of) reading stdin.
BEHAVIOURS = (
    "ok",  # check stdin, print the node's document, exit 0
    "fail",  # check stdin, print ``stderr`` text to stderr, exit ``exit_status``
    "garbage",  # check stdin, print text that is not JSON, exit 0
    "oversized",  # check stdin, print ``oversized_bytes`` bytes (10 MB default), exit 0
    "hang",  # read stdin, then sleep ``hang_s`` (never answers in time)
    "sudo-fail",  # do not read stdin: "sudo: a password is required", exit 1
    "no-python",  # do not read stdin: "python3: not found", exit 127
    "echo-stdin",  # print stdin back (no sha256 check), exit 0
    "ok-ignore-stdin",  # do not read stdin: print the node's document, exit 0 (ansible -m raw)
    "ok-slow",  # like ok, but sleep ``delay_s`` first (a probe that takes time on a real node)
    "killed",  # check stdin, print half a document, then die of SIGKILL (no exit status)
)

#: ``kind`` of a node: a real sshd, a TCP listener that never speaks SSH, a TCP listener that
#: closes every connection at once (like sshd over MaxStartups), a listener whose accept queue is
#: full so new SYNs are dropped (a TCP connect timeout, without leaving loopback), or a closed port.
KINDS = ("sshd", "silent", "drop", "blackhole", "closed")

#: How the client's known_hosts treats a node's host key.
HOST_KEY_MODES = ("known", "unknown", "changed")

_NODE_SCRIPT = r"""#!/bin/sh
# Forced command of a vlcalc test-fleet node.  $1 is the node's directory.
d="$1"
mode=$(cat "$d/mode")
printf '%s' "$SSH_ORIGINAL_COMMAND" > "$d/last_command"
case "$mode" in
  no-python) echo "sh: 1: python3: not found" >&2; exit 127 ;;
  sudo-fail) echo "sudo: a password is required" >&2; exit 1 ;;
  echo-stdin) exec cat ;;
  ok-ignore-stdin) exec cat "$d/document" ;;
  hang) cat > /dev/null; echo $$ >> "$d/hang.pids"; exec sleep "$(cat "$d/hang_s")" ;;
esac
got=$(sha256sum | cut -d' ' -f1)
want=$(cat "$d/../../probe.sha256")
if [ "$got" != "$want" ]; then
  echo "sshfleet: stdin is not the expected probe (sha256 $got, want $want)"
  echo "sshfleet: stdin is not the expected probe (sha256 $got, want $want)" >&2
  exit 3
fi
case "$mode" in
  ok) cat "$d/document" ;;
  ok-slow) sleep "$(cat "$d/delay_s")"; cat "$d/document" ;;
  fail) cat "$d/stderr" >&2; exit "$(cat "$d/exit_status")" ;;
  garbage) echo "Traceback (most recent call last): this is not JSON {" ;;
  oversized) head -c "$(cat "$d/oversized_bytes")" /dev/zero ;;
  killed) printf '{"schema": '; kill -9 $$ ;;
  *) echo "sshfleet: unknown mode $mode" >&2; exit 99 ;;
esac
"""


@dataclass(frozen=True)
class NodeSpec:
    """What one fleet node is and how it behaves.  ``document`` is printed by ``ok`` nodes."""

    name: str
    document: bytes = b"{}\n"
    behaviour: str = "ok"
    kind: str = "sshd"
    host_key: str = "known"
    exit_status: int = 1
    stderr: bytes = b"probe: something went wrong\n"
    oversized_bytes: int = 10 * 1024 * 1024
    hang_s: float = 600.0
    delay_s: float = 0.1  # ok-slow
    authorized: bool = True  # False: the fleet user key is not in authorized_keys

    def __post_init__(self) -> None:
        if self.behaviour not in BEHAVIOURS:
            raise ValueError(f"{self.name}: unknown behaviour {self.behaviour!r}")
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: unknown kind {self.kind!r}")
        if self.host_key not in HOST_KEY_MODES:
            raise ValueError(f"{self.name}: unknown host_key mode {self.host_key!r}")


@dataclass
class FleetNode:
    """A running node: connect to ``127.0.0.1:port`` (or use ``name`` with the fleet ssh_config)."""

    spec: NodeSpec
    port: int
    directory: Path
    host_key_fingerprint: str | None = None  # "SHA256:..." of the real host key
    host_public_key: str | None = None  # "ssh-ed25519 AAAA..."
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def log_path(self) -> Path:
        return self.directory / "sshd.log"

    def log(self) -> str:
        """The sshd's stderr so far (``-e``), for debugging a failed test."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def last_command(self) -> str | None:
        """The command line the client asked for (``SSH_ORIGINAL_COMMAND``), if any ran."""
        try:
            return (self.directory / "last_command").read_text()
        except FileNotFoundError:
            return None


@dataclass
class KeyPair:
    private_path: Path
    public_line: str  # "ssh-ed25519 AAAA... comment"
    fingerprint: str


def generate_ed25519(private_path: Path, comment: str = "sshfleet") -> KeyPair:
    """Write an unencrypted OpenSSH ed25519 private key (mode 0600) and its ``.pub`` next to it.

    In-process (no ``ssh-keygen`` fork) so a 1,000-node fleet gets its host keys in milliseconds.
    """
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    line = f"{public} {comment}"
    Path(str(private_path) + ".pub").write_text(line + "\n")
    return KeyPair(private_path, line, fingerprint_of(public))


def fingerprint_of(public_line: str) -> str:
    """``SHA256:...`` fingerprint of ``"ssh-ed25519 AAAA..."``, as ``ssh-keygen -l`` prints it."""
    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def sshd_version() -> tuple[int, int]:
    """(major, minor) of the installed OpenSSH server, e.g. (9, 2)."""
    out = subprocess.run([SSHD, "-V"], capture_output=True, text=True, check=False)
    text = (out.stderr or out.stdout).strip()  # "OpenSSH_9.2p1 Debian-2, OpenSSL ..."
    version = text.split("_", 1)[1].split("p", 1)[0].split(",", 1)[0].split(" ", 1)[0]
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


class _Blackhole:
    """A listening socket with a full accept queue: the kernel drops new SYNs, so connecting
    times out (as to a firewalled host) while everything stays on 127.0.0.1."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port: int = self.sock.getsockname()[1]
        self.accepted = 0
        self._fillers: list[socket.socket] = []
        for _ in range(4):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", self.port))
            self._fillers.append(filler)
        time.sleep(0.05)

    def close(self) -> None:
        for filler in self._fillers:
            filler.close()
        self.sock.close()


class _SilentServer:
    """Accepts TCP connections and never sends a byte (an SSH banner timeout), or with
    ``drop=True`` closes each one at once."""

    def __init__(self, drop: bool = False) -> None:
        self.drop = drop
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port: int = self.sock.getsockname()[1]
        self.accepted = 0
        self._clients: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="sshfleet-silent", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            if self.drop:
                client.close()
            else:
                self._clients.append(client)  # keep it open, say nothing

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for client in self._clients:
            client.close()
        self.sock.close()


@dataclass
class SSHFleet:
    """Start real sshd nodes on 127.0.0.1 under ``base_dir``.  See the module docstring.

    ``expected_stdin`` is the probe source every ``ok``/``fail``/``garbage``/``oversized`` node
    expects on stdin (compared by sha256; a mismatch prints a message and exits 3).
    ``bastion=True`` adds a node named ``bastion`` that allows TCP forwarding, and for every
    sshd node ``N`` an ssh_config alias ``N-via-bastion`` with ``ProxyJump bastion``.
    ``user`` is the login name written to ssh_config (default: the current user).
    """

    base_dir: Path
    specs: Sequence[NodeSpec]
    expected_stdin: bytes = b""
    bastion: bool = False
    user: str | None = None
    start_timeout_s: float = 30.0
    max_startups: str = "2000:100:4000"
    extra_sshd_options: Sequence[str] = ()
    sshd_flags: Sequence[str] = ()  # e.g. ("-r",): no re-exec per connection (OpenSSH < 9.8)
    nodes: dict[str, FleetNode] = field(default_factory=dict)
    startup_s: float = 0.0  # wall time the last start() took

    def __post_init__(self) -> None:
        self.base_dir = Path(self.base_dir).absolute()
        names = [spec.name for spec in self.specs]
        if len(set(names)) != len(names) or (self.bastion and "bastion" in names):
            raise ValueError("fleet node names must be unique (and 'bastion' is reserved)")
        self.user = self.user or _current_user()
        self._silent: list[_SilentServer | _Blackhole] = []
        self._listeners: dict[str, _SilentServer | _Blackhole] = {}
        self._started = False

    # ----- paths of the client side ---------------------------------------------------------
    @property
    def ssh_config_path(self) -> Path:
        return self.base_dir / "client" / "ssh_config"

    @property
    def known_hosts_path(self) -> Path:
        return self.base_dir / "client" / "known_hosts"

    @property
    def user_key_path(self) -> Path:
        return self.base_dir / "client" / "id_ed25519"

    @property
    def user_ca_path(self) -> Path:
        """A user certificate authority every sshd node trusts for ``user`` (an
        ``authorized_keys`` ``cert-authority`` line with the node's forced command): sign a key
        with :func:`sign_user_key` to log in with a certificate."""
        return self.base_dir / "client" / "user_ca"

    @property
    def other_key_path(self) -> Path:
        """A second user key that no node authorises (for auth-failed tests)."""
        return self.base_dir / "client" / "id_other"

    def node(self, name: str) -> FleetNode:
        return self.nodes[name]

    def sshd_nodes(self) -> list[FleetNode]:
        return [n for n in self.nodes.values() if n.spec.kind == "sshd" and n.name != "bastion"]

    # ----- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> SSHFleet:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> SSHFleet:
        """Generate keys and configs, start every sshd concurrently, wait until all accept."""
        began = time.monotonic()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - began
        return self

    def _start(self) -> None:
        if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        client = self.base_dir / "client"
        client.mkdir(parents=True, exist_ok=True)
        (self.base_dir / "nodes").mkdir(exist_ok=True)
        user_key = generate_ed25519(self.user_key_path, "sshfleet-user")
        generate_ed25519(self.other_key_path, "sshfleet-other")
        self._user_ca = generate_ed25519(self.user_ca_path, "sshfleet-user-ca")
        (self.base_dir / "probe.sha256").write_text(
            hashlib.sha256(self.expected_stdin).hexdigest() + "\n"
        )
        script = self.base_dir / "node.sh"
        script.write_text(_NODE_SCRIPT)
        script.chmod(0o755)
        self._penalties = sshd_version() >= (9, 8)

        specs = list(self.specs)
        if self.bastion:
            specs.append(NodeSpec("bastion"))
        ports = iter(free_ports(len(specs)))
        for spec in specs:
            directory = self.base_dir / "nodes" / spec.name
            directory.mkdir(parents=True, exist_ok=True)
            if spec.kind in ("silent", "drop", "blackhole"):
                server: _SilentServer | _Blackhole = (
                    _Blackhole() if spec.kind == "blackhole" else _SilentServer(spec.kind == "drop")
                )
                self._silent.append(server)
                self._listeners[spec.name] = server
                self.nodes[spec.name] = FleetNode(spec, server.port, directory)
                continue
            node = FleetNode(spec, next(ports), directory)
            self.nodes[spec.name] = node
            if spec.kind == "closed":
                continue
            self._write_node(node, user_key, bastion=spec.name == "bastion" and self.bastion)
            node.process = self._spawn(node)
        self._wait_all()
        self._write_client_files()
        self._started = True

    def _write_node(self, node: FleetNode, user_key: KeyPair, *, bastion: bool) -> None:
        spec, d = node.spec, node.directory
        host_key = generate_ed25519(d / "ssh_host_ed25519_key", f"host-{spec.name}")
        node.host_key_fingerprint = host_key.fingerprint
        node.host_public_key = " ".join(host_key.public_line.split()[:2])
        (d / "mode").write_text(spec.behaviour)
        (d / "document").write_bytes(spec.document)
        (d / "stderr").write_bytes(spec.stderr)
        (d / "exit_status").write_text(str(spec.exit_status))
        (d / "oversized_bytes").write_text(str(spec.oversized_bytes))
        (d / "hang_s").write_text(str(spec.hang_s))
        (d / "delay_s").write_text(str(spec.delay_s))
        if bastion:
            options = 'command="echo bastion"'
        else:
            command = f"{self.base_dir / 'node.sh'} {d}"
            options = f"command={_quote_option(command)},no-pty,no-agent-forwarding"
            options += ",no-port-forwarding,no-X11-forwarding"
        authorized = f"{options} {user_key.public_line}\n" if spec.authorized else ""
        if spec.authorized and not bastion:
            principals = _quote_option(str(self.user))
            authorized += (
                f"cert-authority,principals={principals},{options} {self._user_ca.public_line}\n"
            )
        (d / "authorized_keys").write_text(authorized)
        lines = [
            f"Port {node.port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {d / 'ssh_host_ed25519_key'}",
            f"PidFile {d / 'sshd.pid'}",
            f"AuthorizedKeysFile {d / 'authorized_keys'}",
            "StrictModes no",
            "UsePAM no",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "HostbasedAuthentication no",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            "X11Forwarding no",
            "PermitTTY no",
            f"AllowTcpForwarding {'yes' if bastion else 'no'}",
            "AllowAgentForwarding no",
            f"MaxStartups {self.max_startups}",
            "LoginGraceTime 60",
            "LogLevel VERBOSE" if bastion else "LogLevel INFO",
            "Subsystem sftp internal-sftp",
            # bash sources ~/.bashrc for commands run by sshd when it is a top-level shell
            # (SSH_SOURCE_BASHRC); a pyenv/conda init there costs ~300 ms per run.  SHLVL=1
            # makes the forced command's shell level 2, so the fleet measures sshd, not .bashrc.
            "SetEnv SHLVL=1",
        ]
        if self._penalties:
            lines.append("PerSourcePenalties no")  # 9.8+: do not punish loopback test clients
        lines.extend(self.extra_sshd_options)
        (d / "sshd_config").write_text("\n".join(lines) + "\n")

    def _spawn(self, node: FleetNode) -> subprocess.Popen[bytes]:
        log = open(node.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            return subprocess.Popen(
                [SSHD, "-D", "-e", *self.sshd_flags, "-f", str(node.directory / "sshd_config")],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        finally:
            log.close()

    def _wait_all(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        pending = [n for n in self.nodes.values() if n.process is not None]
        while pending:
            still: list[FleetNode] = []
            for node in pending:
                assert node.process is not None
                if node.process.poll() is not None:
                    if node.restarts >= 3 or "Address already in use" not in node.log():
                        raise RuntimeError(
                            f"sshd for {node.name} exited with {node.process.returncode}:\n"
                            + node.log()
                        )
                    # Lost a port race with another process: take a new port and retry.
                    node.restarts += 1
                    node.port = free_ports(1)[0]
                    config = node.directory / "sshd_config"
                    lines = config.read_text().splitlines()
                    lines[0] = f"Port {node.port}"
                    config.write_text("\n".join(lines) + "\n")
                    node.process = self._spawn(node)
                    still.append(node)
                elif not _accepts(node.port):
                    still.append(node)
            pending = still
            if pending:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{len(pending)} sshd did not start within {self.start_timeout_s} s: "
                        + ", ".join(n.name for n in pending[:10])
                    )
                time.sleep(0.02)

    def _write_client_files(self) -> None:
        config: list[str] = []
        known: list[str] = []
        for node in self.nodes.values():
            config += [
                f"Host {node.name}",
                "    HostName 127.0.0.1",
                f"    Port {node.port}",
                f"    User {self.user}",
                f"    IdentityFile {self.user_key_path}",
                "",
            ]
            if node.host_public_key is None or node.spec.host_key == "unknown":
                continue
            public = node.host_public_key
            if node.spec.host_key == "changed":
                other = generate_ed25519(node.directory / "other_host_key", "changed")
                public = " ".join(other.public_line.split()[:2])
            known.append(f"[127.0.0.1]:{node.port} {public}")
        if self.bastion:
            for node in self.sshd_nodes():
                config += [
                    f"Host {node.name}-via-bastion",
                    "    HostName 127.0.0.1",
                    f"    Port {node.port}",
                    f"    User {self.user}",
                    f"    IdentityFile {self.user_key_path}",
                    "    ProxyJump bastion",
                    "",
                ]
        self.ssh_config_path.write_text("\n".join(config))
        self.known_hosts_path.write_text("\n".join(known) + "\n")

    def set_behaviour(self, name: str, behaviour: str) -> None:
        """Change what a running node's forced command does from its next connection on."""
        if behaviour not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {behaviour!r}")
        (self.nodes[name].directory / "mode").write_text(behaviour)

    def known_hosts_line(self, name: str) -> str:
        """The correct known_hosts line for a node (``[127.0.0.1]:PORT ssh-ed25519 AAAA...``)."""
        node = self.nodes[name]
        assert node.host_public_key is not None
        return f"[127.0.0.1]:{node.port} {node.host_public_key}"

    def connections(self, name: str) -> int:
        """How many TCP connections a ``silent`` or ``drop`` node has accepted so far."""
        return self._listeners[name].accepted

    def kill_sessions(self, name: str) -> int:
        """SIGKILL the per-connection children of a node's sshd (drops its clients' connections
        mid-session); returns how many were killed."""
        node = self.nodes[name]
        assert node.process is not None
        killed = 0
        for pid in _children(node.process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
        return killed

    def stop(self) -> None:
        """Stop every sshd (and the sessions a ``hang`` node left sleeping).  Idempotent."""
        processes = [n.process for n in self.nodes.values() if n.process is not None]
        for proc in processes:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        for node in self.nodes.values():
            for pid in _read_pids(node.directory / "hang.pids"):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        for proc in processes:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for server in self._silent:
            server.close()
        self._silent.clear()
        self._listeners.clear()
        for node in self.nodes.values():
            node.process = None
        self._started = False


def _children(parent: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == parent:
            children.append(int(entry))
    return children


def _read_pids(path: Path) -> Iterable[int]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [int(line) for line in text.split() if line.isdigit()]


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _quote_option(value: str) -> str:
    """A double-quoted authorized_keys option value."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _current_user() -> str:
    import getpass

    return getpass.getuser()


def start_ssh_agent(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start a private ``ssh-agent -D`` bound to ``directory/agent.sock``; returns (process,
    socket path).  Stop it with ``process.terminate()``."""
    sock = directory / "agent.sock"
    with contextlib.suppress(FileNotFoundError):
        sock.unlink()
    agent = shutil.which("ssh-agent") or "/usr/bin/ssh-agent"
    proc = subprocess.Popen(
        [agent, "-D", "-a", str(sock)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("ssh-agent did not start")
        time.sleep(0.01)
    return proc, str(sock)


def sign_user_key(ca_path: Path, key_path: Path, principal: str) -> Path:
    """``ssh-keygen -s CA -n PRINCIPAL KEY.pub``: a user certificate for ``key_path``, valid
    for an hour, written as ``KEY-cert.pub``; returns its path."""
    subprocess.run(
        [
            shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen",
            "-q",
            "-s",
            str(ca_path),
            "-I",
            "sshfleet",
            "-n",
            principal,
            "-V",
            "-5m:+1h",
            f"{key_path}.pub",
        ],
        check=True,
        capture_output=True,
    )
    return Path(f"{key_path}-cert.pub")


def ssh_add(agent_socket: str, key_path: Path) -> None:
    """``ssh-add KEY`` into the agent at ``agent_socket``."""
    env = dict(os.environ, SSH_AUTH_SOCK=agent_socket)
    subprocess.run(
        [shutil.which("ssh-add") or "/usr/bin/ssh-add", str(key_path)],
        env=env,
        check=True,
        capture_output=True,
    )


__all__ = [
    "BEHAVIOURS",
    "HOST_KEY_MODES",
    "KINDS",
    "FleetNode",
    "KeyPair",
    "NodeSpec",
    "SSHFleet",
    "fingerprint_of",
    "free_ports",
    "generate_ed25519",
    "sign_user_key",
    "ssh_add",
    "sshd_version",
    "start_ssh_agent",
]
