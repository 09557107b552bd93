"""Boot a fleet of emulated arm64 KVM nodes and describe it as an Ansible inventory.

Each node is one ``qemu-system-aarch64`` (TCG, EL2 on) with its own SVE vector-length set and
kernel line, reachable only through a forwarded port on 127.0.0.1.  The node prints its SSH host
key and a ready line on the serial console; the fleet writes that key into a ``known_hosts`` file
so whoever connects keeps strict host-key checking on.

Every QEMU is stopped by its pid when the fleet ends, also on errors and at interpreter exit::

    with Fleet([NodeSpec("n1", frozenset({128, 256})), NodeSpec("n2", None)], Path("lab")) as f:
        print(f.inventory_path, f.known_hosts_path)
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from vlcalc.lab import image
from vlcalc.lab.errors import CommandError, LabError, NodeBootError

# Every VL QEMU has a property for (sve128 .. sve2048); each is set explicitly on or off so a
# node's set never depends on QEMU's defaults.
QEMU_VL_BITS = tuple(range(128, 2049, 128))
STATE_FILE = "lab.json"
DEFAULT_BOOT_TIMEOUT_S = 180.0
LOOPBACK = "127.0.0.1"
NODE_MEMORY_MIB = 256
# A node with QEMU inside unpacks an initramfs about 50 MB larger and runs an inner guest.
QEMU_NODE_MEMORY_MIB = 768


@dataclass(frozen=True)
class NodeSpec:
    """What one node emulates.

    Example: ``NodeSpec("n3", frozenset({128, 256}), kernel="6.12",
    cmdline=("kvm-arm.mode=nvhe",))``.  ``vls`` of ``None`` or empty means ``sve=off``: the
    node's KVM offers no SVE at all.  ``qemu=True`` boots the image variant with arm64 QEMU
    inside (``/usr/bin/qemu-system-aarch64``) and more memory, for inner KVM guests;
    ``libvirt=True`` the variant with QEMU and libvirt's ``virsh`` with its QEMU driver.
    """

    name: str
    vls: frozenset[int] | None
    kernel: str = image.DEFAULT_KERNEL
    cmdline: tuple[str, ...] = ()
    qemu: bool = False
    libvirt: bool = False

    @property
    def memory_mib(self) -> int:
        return QEMU_NODE_MEMORY_MIB if self.qemu or self.libvirt else NODE_MEMORY_MIB

    @property
    def image_name(self) -> str:
        """Which cached image the node boots (see :func:`vlcalc.lab.image.image_name`)."""
        return image.image_name(self.kernel, self.qemu, self.libvirt)

    @property
    def kvm_mode(self) -> str:
        """``vhe`` unless the command line asks for another ``kvm-arm.mode``."""
        for arg in self.cmdline:
            if arg.startswith("kvm-arm.mode="):
                return arg.split("=", 1)[1]
        return "vhe"


@dataclass(frozen=True)
class Node:
    """A started node: its spec, forwarded port, QEMU pid and file paths."""

    spec: NodeSpec
    port: int
    pid: int
    pidfile: Path
    console: Path
    host_key: str = ""


# ---------------------------------------------------------------------------------------------
# Pure helpers


def parse_node(text: str, default_kernel: str = image.DEFAULT_KERNEL) -> NodeSpec:
    """Read a ``--node`` argument.

    ``n1=128,256,384,512`` -> VLs {128,256,384,512} on the default kernel; ``n3=none`` (or
    ``off``) -> ``sve=off``; options may follow the VLs:
    ``n2=128,256,kernel=6.12,append=kvm-arm.mode=nvhe`` (``append`` may repeat), ``qemu``
    for the image with QEMU inside (``n4=128,256,qemu``) and ``libvirt`` for QEMU and libvirt.
    """
    name, sep, rest = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise LabError(f"bad --node {text!r}: expected NAME=VLS, e.g. n1=128,256 or n2=none")
    vls: set[int] = set()
    kernel = default_kernel
    cmdline: list[str] = []
    qemu = libvirt = False
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, has_value, value = item.partition("=")
        if has_value and key == "kernel":
            kernel = value
        elif has_value and key == "append":
            cmdline.append(value)
        elif item.lower() in ("none", "off"):
            continue
        elif item == "qemu":
            qemu = True
        elif item == "libvirt":
            libvirt = True
        elif item.isdigit():
            vls.add(int(item))
        else:
            raise LabError(f"bad --node {text!r}: {item!r} is not a VL in bits or an option")
    spec = NodeSpec(name, frozenset(vls) or None, kernel, tuple(cmdline), qemu, libvirt)
    sve_cpu_properties(spec.vls)  # validate now, not when QEMU starts
    return spec


def sve_cpu_properties(vls: Iterable[int] | None) -> str:
    """The ``-cpu`` SVE properties for a VL set.

    ``{128, 256}`` -> ``sve=on,sve128=on,sve256=on,sve384=off,...,sve2048=off``; ``None`` or an
    empty set -> ``sve=off``.
    """
    wanted = set(vls or ())
    if not wanted:
        return "sve=off"
    bad = sorted(v for v in wanted if v not in QEMU_VL_BITS)
    if bad:
        raise LabError(f"VLs {bad} cannot be emulated: QEMU offers multiples of 128 up to 2048")
    flags = [f"sve{v}={'on' if v in wanted else 'off'}" for v in QEMU_VL_BITS]
    return ",".join(["sve=on", *flags])


def qemu_argv(
    spec: NodeSpec,
    *,
    vmlinuz: Path,
    initrd: Path,
    port: int,
    console: Path,
    pidfile: Path,
    qemu: str = "qemu-system-aarch64",
) -> list[str]:
    """The command line of one node.

    ``virtualization=on`` gives the guest EL2 so its kernel brings up KVM; ``pauth-impdef=on``
    makes TCG much faster; ``restrict=on`` keeps the node off every network but the forwarded
    loopback port.
    """
    append = " ".join(["console=ttyAMA0", "panic=-1", *spec.cmdline])
    return [
        qemu,
        "-name", f"vlcalc-lab-{spec.name}",
        "-M", "virt,virtualization=on,gic-version=3",
        "-cpu", f"max,pauth-impdef=on,{sve_cpu_properties(spec.vls)}",
        "-smp", "1",
        "-m", str(spec.memory_mib),
        "-accel", "tcg,tb-size=64",
        "-nodefaults", "-no-user-config",
        "-display", "none",
        "-monitor", "none",
        "-serial", f"file:{console}",
        "-pidfile", str(pidfile),
        "-daemonize",
        "-no-reboot",
        "-kernel", str(vmlinuz),
        "-initrd", str(initrd),
        "-append", append,
        "-nic", (
            "user,model=virtio-net-pci,restrict=on,"
            f"hostfwd=tcp:{LOOPBACK}:{port}-:22"
        ),
    ]  # fmt: skip


@dataclass(frozen=True)
class ConsoleState:
    """What a node's serial console has said so far."""

    host_key: str | None
    ready: bool


def parse_console(text: str) -> ConsoleState:
    """Find the host key and ready lines the node's ``/init`` prints.

    Kernel messages may share the console, so markers are searched anywhere in a line; the last
    host key wins (a node that rebooted printed a new one).
    """
    keys = re.findall(rf"{image.HOSTKEY_MARKER} (ssh-ed25519 [A-Za-z0-9+/=]+)", text)
    return ConsoleState(keys[-1] if keys else None, image.READY_MARKER in text)


def known_hosts_line(port: int, host_key: str) -> str:
    """``[127.0.0.1]:2222 ssh-ed25519 AAAA...``: the form OpenSSH and paramiko use for ports."""
    return f"[{LOOPBACK}]:{port} {host_key}"


def inventory(nodes: Sequence[Node], key_file: Path, known_hosts: Path) -> dict[str, Any]:
    """The Ansible YAML inventory of a fleet, with a group per kernel line and KVM mode.

    Host variables ``vlcalc_lab_*`` record what each node emulates, so tests can compare.
    """
    hosts: dict[str, Any] = {}
    groups: dict[str, dict[str, Any]] = {}
    for node in nodes:
        spec = node.spec
        hosts[spec.name] = {
            "ansible_host": LOOPBACK,
            "ansible_port": node.port,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(key_file),
            "ansible_python_interpreter": "/usr/bin/python3",
            # Dropbear has no sftp/scp: Ansible must send modules over stdin.
            "ansible_pipelining": True,
            "ansible_ssh_common_args": (
                f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes"
            ),
            "vlcalc_lab_vls": sorted(spec.vls) if spec.vls else [],
            "vlcalc_lab_kernel": spec.kernel,
            "vlcalc_lab_kvm_mode": spec.kvm_mode,
            "vlcalc_lab_qemu": spec.qemu or spec.libvirt,
            "vlcalc_lab_libvirt": spec.libvirt,
        }
        kernel_group = "kernel_" + spec.kernel.replace(".", "_")
        mode_group = "kvm_" + re.sub(r"\W", "_", spec.kvm_mode)
        for group in (kernel_group, mode_group, "sve" if spec.vls else "sve_off"):
            groups.setdefault(group, {"hosts": {}})["hosts"][spec.name] = None
    return {"all": {"hosts": hosts, "children": dict(sorted(groups.items()))}}


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


# ---------------------------------------------------------------------------------------------
# I/O


def _say(message: str) -> None:
    print(f"vlcalc-lab: {message}", file=sys.stderr, flush=True)


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports.  All sockets stay bound until every port is
    chosen, so the kernel cannot hand the same port out twice."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((LOOPBACK, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def generate_user_key(private_path: Path) -> str:
    """Write a new ed25519 key pair (OpenSSH format, mode 0600) and return the public line."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
        + " vlcalc-lab"
    )
    with contextlib.suppress(FileNotFoundError):
        private_path.unlink()
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(private)
    private_path.with_name(private_path.name + ".pub").write_text(public + "\n")
    return public


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _is_our_qemu(pid: int, pidfile: Path) -> bool:
    """Whether ``pid`` is still the QEMU that wrote ``pidfile`` (pids get reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return str(pidfile).encode() in cmdline


def node_running(node: Node) -> bool:
    """Whether the node's QEMU is still running."""
    return _is_our_qemu(node.pid, node.pidfile)


def stop_pid(pid: int, pidfile: Path, grace_s: float = 5.0) -> None:
    """Stop one QEMU: SIGTERM, then SIGKILL after ``grace_s``.  Never touches a foreign pid."""
    if not _is_our_qemu(pid, pidfile):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not _is_our_qemu(pid, pidfile):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _ssh_banner(port: int, timeout_s: float) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout_s) as sock:
            return sock.recv(64).startswith(b"SSH-")
    except OSError:
        return False


_LIVE_FLEETS: set[Fleet] = set()


@atexit.register
def _stop_all_fleets() -> None:
    for fleet in list(_LIVE_FLEETS):
        fleet.stop()


@dataclass(eq=False)
class Fleet:
    """N nodes booted concurrently, files under ``workdir``.  Use as a context manager."""

    specs: Sequence[NodeSpec]
    workdir: Path
    cache: Path | None = None
    boot_timeout_s: float = DEFAULT_BOOT_TIMEOUT_S
    qemu: str = "qemu-system-aarch64"
    nodes: list[Node] = field(default_factory=list)

    @property
    def key_path(self) -> Path:
        return self.workdir / "id_ed25519"

    @property
    def known_hosts_path(self) -> Path:
        return self.workdir / "known_hosts"

    @property
    def inventory_path(self) -> Path:
        return self.workdir / "inventory.yml"

    def __enter__(self) -> Fleet:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        names = [spec.name for spec in self.specs]
        if len(set(names)) != len(names):
            raise LabError(f"node names must be unique: {names}")
        self.workdir = self.workdir.resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        if running_nodes(self.workdir):
            raise LabError(
                f"a fleet is already running in {self.workdir}; stop it with"
                f" `python -m vlcalc.lab down --dir {self.workdir}` or use another --dir"
            )
        images: dict[str, image.Image] = {}
        for qemu, libvirt in ((False, False), (True, False), (True, True)):
            lines = sorted(
                {
                    spec.kernel
                    for spec in self.specs
                    if (spec.qemu or spec.libvirt, spec.libvirt) == (qemu, libvirt)
                }
            )
            if lines:
                built = image.build(lines, cache=self.cache, qemu=qemu, libvirt=libvirt)
                images.update(
                    (image.image_name(line, qemu, libvirt), img) for line, img in built.items()
                )
        public_key = generate_user_key(self.key_path)
        overlay = image.key_overlay(public_key)
        initrds: dict[str, Path] = {}
        for name, img in images.items():
            # The cached image plus a small archive with this fleet's key: the kernel unpacks
            # both, so the cached image never holds a key.
            initrds[name] = self.workdir / f"initrd-{name}.cpio"
            initrds[name].write_bytes(img.initramfs.read_bytes() + overlay)
        _LIVE_FLEETS.add(self)
        started = time.monotonic()
        try:
            for spec, port in zip(self.specs, free_ports(len(self.specs))):
                name = spec.image_name
                self.nodes.append(self._launch(spec, port, images[name], initrds[name]))
                self._write_state()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.known_hosts_path.write_text(
            "".join(known_hosts_line(n.port, n.host_key) + "\n" for n in self.nodes)
        )
        self.inventory_path.write_text(
            yaml.safe_dump(
                inventory(self.nodes, self.key_path, self.known_hosts_path), sort_keys=False
            )
        )
        self._write_state()
        _say(f"{len(self.nodes)} nodes ready in {time.monotonic() - started:.1f} s")

    def _launch(self, spec: NodeSpec, port: int, img: image.Image, initrd: Path) -> Node:
        console = self.workdir / f"{spec.name}.console.log"
        pidfile = self.workdir / f"{spec.name}.pid"
        for path in (console, pidfile):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        argv = qemu_argv(
            spec,
            vmlinuz=img.vmlinuz,
            initrd=initrd,
            port=port,
            console=console,
            pidfile=pidfile,
            qemu=self.qemu,
        )
        try:
            # -daemonize: QEMU returns once the machine is set up, errors on stderr.
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        except FileNotFoundError as exc:
            raise LabError(f"{self.qemu} not found; install qemu-system-arm") from exc
        if done.returncode != 0:
            output = tail(done.stdout + done.stderr)
            if "romfile" in output:
                # virtio-net-pci loads efi-virtio.rom, which Debian ships in ipxe-qemu, a mere
                # Recommends of qemu-system-arm.
                output += "\nhint: install ipxe-qemu (apt-get install ipxe-qemu)"
            raise CommandError(argv, done.returncode, output)
        return Node(spec, port, int(pidfile.read_text().strip()), pidfile, console)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.boot_timeout_s
        pending = dict(enumerate(self.nodes))
        while pending:
            for index, node in list(pending.items()):
                text = _read(node.console)
                state = parse_console(text)
                if not _is_our_qemu(node.pid, node.pidfile):
                    raise NodeBootError(node.spec.name, "QEMU exited while booting", tail(text))
                if state.ready and state.host_key and _ssh_banner(node.port, 2.0):
                    self.nodes[index] = Node(
                        node.spec, node.port, node.pid, node.pidfile, node.console,
                        state.host_key,
                    )  # fmt: skip
                    del pending[index]
            if pending and time.monotonic() > deadline:
                node = next(iter(pending.values()))
                raise NodeBootError(
                    node.spec.name,
                    f"not ready within {self.boot_timeout_s:.0f} s",
                    tail(_read(node.console)),
                )
            if pending:
                time.sleep(0.1)

    def _write_state(self) -> None:
        state = {
            "up_pid": os.getpid(),
            "inventory": str(self.inventory_path),
            "known_hosts": str(self.known_hosts_path),
            "key": str(self.key_path),
            "nodes": [
                {
                    "name": n.spec.name,
                    "port": n.port,
                    "pid": n.pid,
                    "pidfile": str(n.pidfile),
                    "console": str(n.console),
                    "kernel": n.spec.kernel,
                    "vls": sorted(n.spec.vls or ()),
                    "cmdline": list(n.spec.cmdline),
                    "qemu": n.spec.qemu,
                    "libvirt": n.spec.libvirt,
                }
                for n in self.nodes
            ],
        }
        (self.workdir / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")

    def stop(self) -> None:
        """Stop every QEMU of this fleet by pid.  Safe to call twice."""
        for node in self.nodes:
            stop_pid(node.pid, node.pidfile)
        self.nodes = []
        _LIVE_FLEETS.discard(self)
        with contextlib.suppress(FileNotFoundError):
            (self.workdir / STATE_FILE).unlink()


def _state(workdir: Path) -> dict[str, Any]:
    try:
        state: dict[str, Any] = json.loads((workdir / STATE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return state


def running_nodes(workdir: Path) -> list[str]:
    """Names of the nodes recorded in ``workdir`` whose QEMU still runs."""
    return [
        str(entry["name"])
        for entry in _state(workdir).get("nodes", [])
        if _is_our_qemu(int(entry["pid"]), Path(entry["pidfile"]))
    ]


def _is_lab_up(pid: int) -> bool:
    """Whether ``pid`` is a running ``up`` of the lab (never, say, a pytest holding a fleet)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"up" in args and (b"vlcalc.lab" in args or b"lab" in args)


def down(workdir: Path, grace_s: float = 15.0) -> int:
    """Stop the fleet recorded in ``workdir``.

    The ``up`` process holding it is asked first (SIGTERM), so it tears down its own fleet and
    exits cleanly; whatever QEMU is still running after ``grace_s`` is stopped by pid.  Returns
    the number of nodes that were running.
    """
    state = _state(workdir)
    running = running_nodes(workdir)
    up_pid = int(state.get("up_pid", 0))
    if up_pid and up_pid != os.getpid() and _is_lab_up(up_pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(up_pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while _is_lab_up(up_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    for entry in state.get("nodes", []):
        stop_pid(int(entry["pid"]), Path(entry["pidfile"]))
    with contextlib.suppress(FileNotFoundError):
        (workdir / STATE_FILE).unlink()
    return len(running)
