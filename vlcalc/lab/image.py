"""Build the boot images of the lab's emulated arm64 nodes from Debian 12 packages.

Everything comes from the Debian archive through ``apt-get`` with a private state (its own lists,
cache and sources under the lab cache), so the host's dpkg database is never read or written and
the host can be any Debian-like amd64 machine.  The result per kernel line is a ``vmlinuz`` and an
uncompressed newc initramfs holding busybox, dropbear, a minimal Python 3.11 and the virtio network
modules.  SSH keys are not baked in: :func:`key_overlay` makes a small second archive per fleet
that the kernel unpacks on top, so one cached image serves every fleet.

Layout of the cache (``$VLCALC_LAB_CACHE`` or ``~/.cache/vlcalc-lab``)::

    apt/      private apt lists, cache and sources
    debs/     downloaded .deb files
    staging/  one ``dpkg -x`` tree per .deb
    images/   <kernel line>/{vmlinuz, initramfs.cpio, manifest.json}
              <kernel line>-qemu/  the same plus arm64 QEMU (see :data:`QEMU_PACKAGE`)
"""

from __future__ import annotations

import functools
import importlib.util
import json
import lzma
import marshal
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vlcalc.lab import cpio, elf
from vlcalc.lab.errors import CommandError, LabError

# Bump when the image contents change, so cached images are rebuilt.
BUILDER_VERSION = 8

# The kernel lines a node can boot, each named by the meta package that points at its newest
# build.  6.1 is bookworm's own kernel; 6.12 comes from bookworm's backported line.
KERNEL_META_PACKAGES = {"6.1": "linux-image-arm64", "6.12": "linux-image-6.12-arm64"}
DEFAULT_KERNEL = "6.1"

# Order matters: busybox insmod does not resolve dependencies.  Modules a kernel line builds in
# (6.12 has virtio_pci built in) are simply absent from its package and skipped.
NETWORK_MODULES = (
    "failover",
    "net_failover",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "virtio_net",
)

USERLAND_PACKAGES = (
    "busybox-static",
    "dropbear-bin",
    "libtomcrypt1",
    "libtommath1",
    "libgmp10",
    "libcrypt1",
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "libc6",
    "zlib1g",
    "libexpat1",
)

# sudo lets the unprivileged ``probe`` user test vlcalc's become path (``sudo -n``).
SUDO_PACKAGES = (
    "sudo",
    "libaudit1",
    "libcap-ng0",
    "libselinux1",
    "libpcre2-8-0",
    "libpam0g",
    "libpam-modules",
)

# The QEMU variant: Debian 12's arm64 QEMU 7.2 inside a node, to run inner KVM guests.  Only the
# binary and the libraries of its DT_NEEDED closure go into the image: firmware, keymaps and
# helpers (qemu-system-common, qemu-system-data) are not needed to boot a raw ``-kernel`` with
# ``-nodefaults``, and apt's Depends closure would add debconf, PAM and GStreamer.
QEMU_PACKAGE = "qemu-system-arm"
QEMU_BINARY = "usr/bin/qemu-system-aarch64"
QEMU_SKIPPED_PACKAGES = frozenset({"qemu-system-common", "qemu-system-data"})
QEMU_SUFFIX = "-qemu"
# The libvirt variant adds libvirt 9.0's virsh and QEMU driver (loaded by virsh itself with the
# embedded driver, ``qemu:///embed``: no daemon) to the QEMU variant, for checking vlcalc's
# ``<cpu>`` XML with real libvirt and real KVM.  About 45 MB more (libxml2 pulls in ICU), so only
# nodes that ask for it get it.
LIBVIRT_SUFFIX = "-libvirt"
LIBVIRT_QEMU_DRIVER = "usr/lib/aarch64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so"
LIBVIRT_CPU_MAP = "usr/share/libvirt/cpu_map"
# (package, file) whose DT_NEEDED closure goes into an image.
QEMU_ROOTS = ((QEMU_PACKAGE, QEMU_BINARY),)
LIBVIRT_ROOTS = (
    ("libvirt-clients", "usr/bin/virsh"),
    ("libvirt-daemon-driver-qemu", LIBVIRT_QEMU_DRIVER),
)
LIBVIRT_DATA_PACKAGE = "libvirt0"
# The user a privileged libvirt runs QEMU as (also for probing its capabilities), in group kvm.
LIBVIRT_QEMU_UID = 64055
# Enough layers of Depends for any library chain in bookworm; stops a runaway resolution.
MAX_DEPENDS_ROUNDS = 8

# From libpython3.11-stdlib only what the probe needs beyond python3.11-minimal: json.
STDLIB_EXTRAS = ("json",)

# What Ansible's AnsiballZ modules (ping, setup) import beyond that.  Kept off python3's path, in
# their own directory behind /usr/bin/python3-ansible, so the probe is still tested against a
# python3-minimal interpreter and cannot come to depend on them unnoticed.
ANSIBLE_STDLIB = ("shutil", "dataclasses", "shlex", "decimal", "numbers")
ANSIBLE_LIB_DIR = "usr/lib/vlcalc-ansible"
ANSIBLE_PYTHON = "/usr/bin/python3-ansible"

# importlib.util.MAGIC_NUMBER of CPython 3.11 (bytecode 3495), the node's python3.11-minimal.
GUEST_PYTHON_MAGIC = (3495).to_bytes(2, "little") + b"\r\n"

PROBE_UID = 1000
KVM_GID = 993
READY_MARKER = "VLCALC-LAB-READY"
HOSTKEY_MARKER = "VLCALC-LAB-HOSTKEY"

# Never needed on a node; gconv alone is 20 MB.
_EXCLUDED_PREFIXES = (
    "usr/share/",
    "usr/lib/aarch64-linux-gnu/gconv/",
    "etc/init.d/",
    "etc/default/",
    "usr/lib/systemd/",
    "usr/lib/tmpfiles.d/",
    "etc/sudoers",
    "etc/pam.d/",
    "usr/sbin/visudo",
    "usr/bin/sudoreplay",
    "usr/sbin/sudo_",
)


def cache_dir() -> Path:
    """``$VLCALC_LAB_CACHE``, else ``~/.cache/vlcalc-lab``: outside the repository on purpose."""
    configured = os.environ.get("VLCALC_LAB_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "vlcalc-lab"


# ---------------------------------------------------------------------------------------------
# Pure helpers


def apt_options(apt_dir: Path) -> list[str]:
    """apt options for a private arm64 state under ``apt_dir``; the host's dpkg is never used."""
    return [
        "-oAPT::Architecture=arm64",
        "-oAPT::Architectures=arm64",
        f"-oDir::State::Lists={apt_dir / 'lists'}",
        f"-oDir::Cache={apt_dir / 'cache'}",
        "-oDir::State::Status=/dev/null",
        f"-oDir::Etc::SourceList={apt_dir / 'sources.list'}",
        f"-oDir::Etc::SourceParts={apt_dir / 'sources.list.d'}",
        # Downloads land in dirs owned by the caller; the _apt sandbox user could not write them.
        "-oAPT::Sandbox::User=root",
        "-oDebug::NoLocking=1",
        "-qq",
    ]


def is_debian_source(name: str, text: str) -> bool:
    """Whether a host apt source file is a Debian 12 archive worth reusing for arm64.

    Third-party repositories (cloud SDKs, node) are skipped: they may have no arm64 index and the
    lab must only talk to the Debian archive.
    """
    if not (name.endswith(".list") or name.endswith(".sources")):
        return False
    return "bookworm" in text and "debian" in text


def arm64_source_text(text: str) -> str:
    """A host apt source with its architecture restriction removed (an amd64 host may pin
    ``Architectures: amd64`` or ``[arch=amd64]``; the private state asks for arm64 only).

    ``deb [arch=amd64 signed-by=/k.gpg] http://deb.debian.org/debian bookworm main`` ->
    ``deb [signed-by=/k.gpg] http://deb.debian.org/debian bookworm main``.
    """
    lines = []
    for line in text.splitlines():
        if re.match(r"\s*Architectures\s*:", line, re.IGNORECASE):
            continue
        line = re.sub(r"\barch=\S+?(?=[\s\]])\s*", "", line)
        lines.append(line.replace("[]", "").replace("[ ]", ""))
    return "\n".join(lines) + "\n"


def kernel_package_from_depends(output: str) -> str:
    """The versioned kernel package a meta package depends on.

    ``apt-cache depends linux-image-arm64`` prints ``  Depends: linux-image-6.1.0-56-arm64``;
    the answer is ``linux-image-6.1.0-56-arm64``.
    """
    for line in output.splitlines():
        key, _, value = line.strip().partition(":")
        value = value.strip()
        if key == "Depends" and value.startswith("linux-image-") and value.endswith("-arm64"):
            return value
    raise LabError(f"no versioned linux-image package in apt-cache output:\n{output}")


def depends_from_apt_cache(output: str) -> set[str]:
    """The real packages named in ``Depends``/``PreDepends`` lines of ``apt-cache depends``.

    Alternatives (``|Depends:``) are all kept; virtual packages (``<debconf-2.0>``) are dropped.
    ``"qemu-system-arm\n  Depends: libfdt1\n |Depends: a\n  Depends: <b>\n"`` ->
    ``{"libfdt1", "a"}``.
    """
    result: set[str] = set()
    for line in output.splitlines():
        key, _, value = line.strip().lstrip("|").partition(":")
        value = value.strip()
        if key in ("Depends", "PreDepends") and value and not value.startswith("<"):
            result.add(value)
    return result


def image_name(line: str, qemu: bool, libvirt: bool = False) -> str:
    """The cache folder of an image: ``6.12``; with QEMU inside ``6.12-qemu``; with QEMU and
    libvirt ``6.12-libvirt``."""
    if libvirt:
        return line + LIBVIRT_SUFFIX
    return line + QEMU_SUFFIX if qemu else line


def kernel_release(package: str) -> str:
    """``linux-image-6.12.117+deb12-arm64`` -> ``6.12.117+deb12-arm64`` (the modules dir name)."""
    return package.removeprefix("linux-image-")


def package_of_deb(filename: str) -> str:
    """``libc6_2.36-9+deb12u14_arm64.deb`` -> ``libc6``."""
    return filename.split("_", 1)[0]


def normalise_path(relpath: str) -> str:
    """Map a package path into the merged-/usr layout of the image (``lib/x`` -> ``usr/lib/x``).

    Bookworm packages still ship files under /lib and /bin; the image has /lib -> usr/lib etc.
    """
    head, _, rest = relpath.partition("/")
    if head in ("bin", "sbin", "lib"):
        return f"usr/{head}/{rest}" if rest else f"usr/{head}"
    return relpath


def keep_file(package: str, path: str, stdlib_extras: Sequence[str] = STDLIB_EXTRAS) -> bool:
    """Whether ``path`` (normalised) of ``package`` belongs in the image."""
    if any(path == prefix.rstrip("/") or path.startswith(prefix) for prefix in _EXCLUDED_PREFIXES):
        return False
    if package == "libpython3.11-stdlib":
        base = "usr/lib/python3.11"
        if path in ("usr/lib", base, f"{base}/lib-dynload"):
            return True
        return any(
            path in (f"{base}/{name}", f"{base}/{name}.py")
            or path.startswith((f"{base}/{name}/", f"{base}/lib-dynload/_{name}."))
            for name in stdlib_extras
        )
    if package == "libpam-modules":
        # Only pam_permit: sudo's PAM stack on a node permits everything (no passwords exist).
        arch_dir = "usr/lib/aarch64-linux-gnu"
        return path in (arch_dir, f"{arch_dir}/security", f"{arch_dir}/security/pam_permit.so")
    return True


def kernel_member_wanted(name: str) -> bool:
    """Whether a kernel package member is needed: the kernel and the network modules.

    ``./boot/vmlinuz-6.1.0-56-arm64`` and ``./lib/modules/6.12.117+deb12-arm64/kernel/drivers/
    net/virtio_net.ko.xz`` are; every other module is not.
    """
    path = name.removeprefix("./")
    if path.startswith("boot/vmlinuz-"):
        return True
    base = path.rsplit("/", 1)[-1]
    return (
        path.startswith("lib/modules/")
        and base.split(".ko", 1)[0] in NETWORK_MODULES
        and (base.endswith((".ko", ".ko.xz")))
    )


def init_script(modules: Sequence[str]) -> str:
    """The busybox ``/init`` of a node.

    It prints the dropbear host key and then the ready line on the console: the harness reads
    both from the serial log, which is faster and safer than polling SSH with checking off.
    """
    insmods = "\n".join(
        f'insmod /lib/modules/vlcalc/{name}.ko || echo "vlcalc-lab: insmod {name} failed"'
        for name in modules
    )
    return f"""#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/usr/sbin:/usr/bin
export HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
hostname vlcalc-lab
{insmods}
# The unprivileged probe user must get EACCES, exactly like a user outside the kvm group.
if [ -e /dev/kvm ]; then chown root:kvm /dev/kvm; chmod 0660 /dev/kvm; fi
ip link set lo up
n=0
while [ ! -e /sys/class/net/eth0 ] && [ $n -lt 200 ]; do sleep 0.05; n=$((n+1)); done
ip addr add 10.0.2.15/24 dev eth0
ip link set eth0 up
ip route add default via 10.0.2.2
dropbearkey -t ed25519 -f /etc/dropbear/dropbear_ed25519_host_key >/run/hostkey.txt 2>&1
echo "{HOSTKEY_MARKER} $(grep '^ssh-ed25519 ' /run/hostkey.txt | cut -d' ' -f1,2)"
dropbear -r /etc/dropbear/dropbear_ed25519_host_key -p 22 -s -P /run/dropbear.pid
# Dropbear opens its socket after forking: announce ready only once port 22 (0016) listens.
n=0
while ! grep -q ':0016 00000000:0000 0A' /proc/net/tcp /proc/net/tcp6 2>/dev/null \\
      && [ $n -lt 200 ]; do sleep 0.05; n=$((n+1)); done
echo "{READY_MARKER}"
# init must never exit: that would panic the node.
while :; do sleep 3600; done
"""


def config_files(with_sudo: bool, libvirt: bool = False) -> list[cpio.Entry]:
    """/etc of a node: users ``root`` and ``probe`` (uid 1000, not in ``kvm``), sudo for probe;
    with ``libvirt`` also ``libvirt-qemu`` (in ``kvm``), the user libvirt runs QEMU as."""
    passwd = (
        "root:*:0:0:root:/root:/bin/sh\n"
        f"probe:*:{PROBE_UID}:{PROBE_UID}:vlcalc probe:/home/probe:/bin/sh\n"
    )
    # "*" rather than "!": dropbear refuses keys for accounts whose password starts with "!".
    group = f"root:x:0:\ntty:x:5:\nkvm:x:{KVM_GID}:\nprobe:x:{PROBE_UID}:\n"
    if libvirt:
        uid = LIBVIRT_QEMU_UID
        passwd += f"libvirt-qemu:*:{uid}:{uid}:libvirt:/nonexistent:/bin/false\n"
        group = group.replace(f"kvm:x:{KVM_GID}:", f"kvm:x:{KVM_GID}:libvirt-qemu")
        group += f"libvirt-qemu:x:{uid}:\n"
    entries = [
        cpio.regular("etc/passwd", passwd.encode()),
        cpio.regular("etc/group", group.encode()),
        cpio.regular("etc/shells", b"/bin/sh\n"),
        cpio.regular("etc/hostname", b"vlcalc-lab\n"),
        cpio.regular("etc/hosts", b"127.0.0.1 localhost vlcalc-lab\n"),
        cpio.regular(
            "etc/nsswitch.conf",
            b"passwd: files\ngroup: files\nshadow: files\nhosts: files\n",
        ),
    ]
    if with_sudo:
        sudoers = (
            "Defaults !fqdn, !lecture, !syslog, env_reset\n"
            "root ALL=(ALL:ALL) ALL\n"
            "probe ALL=(ALL:ALL) NOPASSWD: ALL\n"
        )
        # No password exists anywhere on the node: every PAM stage simply permits.
        pam = "auth sufficient pam_permit.so\naccount required pam_permit.so\n"
        pam += "session required pam_permit.so\n"
        entries += [
            cpio.regular("etc/sudoers", sudoers.encode(), perm=0o440),
            cpio.directory("etc/pam.d"),
            cpio.regular("etc/pam.d/sudo", pam.encode()),
            cpio.regular("etc/pam.d/other", pam.encode()),
        ]
    return entries


def skeleton() -> list[cpio.Entry]:
    """The directories and links every node needs before any package file."""
    entries = [cpio.directory(d) for d in ("usr", "usr/bin", "usr/sbin", "usr/lib")]
    entries += [cpio.symlink(d, f"usr/{d}") for d in ("bin", "sbin", "lib")]
    entries += [cpio.directory(d) for d in ("dev", "proc", "sys", "run", "var", "etc", "home")]
    entries += [
        cpio.char_device("dev/console", 5, 1),
        cpio.directory("tmp", 0o1777),
        cpio.symlink("var/run", "../run"),
        cpio.directory("etc/dropbear", 0o700),
        cpio.directory("root", 0o700),
        cpio.directory("root/.ssh", 0o700),
        cpio.directory("home/probe", 0o755, PROBE_UID, PROBE_UID),
        cpio.directory("home/probe/.ssh", 0o700, PROBE_UID, PROBE_UID),
        cpio.directory("usr/lib/modules"),
        cpio.directory("usr/lib/modules/vlcalc"),
    ]
    return entries


def key_overlay(public_key: str) -> bytes:
    """A small archive to append to an image: ``public_key`` authorised for root and probe."""
    line = (public_key.strip() + "\n").encode()
    return cpio.archive(
        [
            cpio.directory("root/.ssh", 0o700),
            cpio.regular("root/.ssh/authorized_keys", line, 0o600),
            cpio.directory("home/probe/.ssh", 0o700, PROBE_UID, PROBE_UID),
            cpio.regular("home/probe/.ssh/authorized_keys", line, 0o600, PROBE_UID, PROBE_UID),
        ]
    )


# ---------------------------------------------------------------------------------------------
# I/O


def _run(argv: Sequence[str], cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(
            list(argv), cwd=cwd, capture_output=True, text=True, check=False, timeout=900
        )
    except FileNotFoundError as exc:
        raise LabError(f"{argv[0]} not found; install it (see the README's lab section)") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
        raise CommandError(argv, done.returncode, tail)
    return done.stdout


def ansible_python_entries(stdlib_root: Path) -> list[cpio.Entry]:
    """:data:`ANSIBLE_STDLIB` from the unpacked libpython3.11-stdlib, and the interpreter
    wrapper that puts them on the path."""
    source = stdlib_root / "usr" / "lib" / "python3.11"
    entries = [cpio.directory(ANSIBLE_LIB_DIR)]
    for name in ANSIBLE_STDLIB:
        for path in [source / f"{name}.py", *source.glob(f"lib-dynload/_{name}.*.so")]:
            if path.is_file():
                entries.append(
                    cpio.regular(f"{ANSIBLE_LIB_DIR}/{path.name}", path.read_bytes(), 0o644)
                )
    wrapper = (
        "#!/bin/sh\n"
        f"PYTHONPATH=/{ANSIBLE_LIB_DIR}${{PYTHONPATH:+:$PYTHONPATH}}"
        ' exec /usr/bin/python3.11 "$@"\n'
    )
    entries.append(cpio.regular(ANSIBLE_PYTHON.lstrip("/"), wrapper.encode(), 0o755))
    return entries


def compile_pyc(source: bytes, runtime_path: str) -> bytes | None:
    """The unchecked hash-based ``.pyc`` of a module, or ``None`` if it does not compile.

    Only valid for the node's interpreter when the host's bytecode magic is the node's, which
    holds within one Python minor version (3.11 here).  Unchecked: the node never re-reads the
    source to validate it, so file times in the archive do not matter.
    """
    try:
        # dont_inherit: this module's own __future__ flags must not leak into the node's code.
        code = compile(source, runtime_path, "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return None
    flags = 0b01  # hash-based, do not check the source (PEP 552)
    header = importlib.util.MAGIC_NUMBER + flags.to_bytes(4, "little")
    return header + importlib.util.source_hash(source) + marshal.dumps(code)


def bytecode_entries(entries: Iterable[cpio.Entry]) -> list[cpio.Entry]:
    """Precompiled ``__pycache__`` members for the node's Python modules.

    Without them the first ``python3`` on a fresh node compiles every stdlib module it imports,
    which under TCG made the first probe per node take 5-15 s instead of about 1 s.  Empty when
    the host Python is not a 3.11 (its bytecode would not load on the node).
    """
    if importlib.util.MAGIC_NUMBER != GUEST_PYTHON_MAGIC:
        return []
    result: list[cpio.Entry] = []
    cache_dirs: set[str] = set()
    for entry in entries:
        roots = ("usr/lib/python3.11/", f"{ANSIBLE_LIB_DIR}/")
        if not (entry.path.endswith(".py") and entry.path.startswith(roots)):
            continue
        if not stat.S_ISREG(entry.mode):
            continue
        pyc = compile_pyc(entry.data, "/" + entry.path)
        if pyc is None:
            continue
        folder, _, name = entry.path.rpartition("/")
        cache_dir = f"{folder}/__pycache__"
        if cache_dir not in cache_dirs:
            cache_dirs.add(cache_dir)
            result.append(cpio.directory(cache_dir))
        module = name.removesuffix(".py")
        result.append(cpio.regular(f"{cache_dir}/{module}.cpython-311.pyc", pyc))
    return result


def _extract_kernel(deb: Path, target: Path) -> None:
    """Stream ``dpkg-deb --fsys-tarfile`` and write only the members the lab needs."""
    argv = ["dpkg-deb", "--fsys-tarfile", str(deb)]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                if not (member.isfile() and kernel_member_wanted(member.name)):
                    continue
                source = tar.extractfile(member)
                if source is None:
                    continue
                out = target / member.name.removeprefix("./")
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(source.read())
        # Drain the rest so dpkg-deb never blocks on a full pipe before we wait for it.
        while proc.stdout.read(1 << 20):
            pass
        error = proc.stderr.read().decode(errors="replace")
    if proc.returncode != 0:
        raise CommandError(argv, proc.returncode, error)


def _needed_by(
    libraries: dict[str, Library], seen: dict[Path, tuple[str, ...]], soname: str
) -> tuple[str, ...] | None:
    """What the library file named ``soname`` needs (``None``: no package provides it)."""
    library = libraries.get(soname)
    if library is None:
        return None
    source = library.source.resolve()
    if source not in seen:
        seen[source] = elf.needed(source.read_bytes())
    return seen[source]


def _say(message: str) -> None:
    print(f"vlcalc-lab: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Image:
    """One bootable kernel line: ``Image("6.1", "6.1.0-56-arm64", vmlinuz, initramfs)``.

    ``qemu`` images also hold ``/usr/bin/qemu-system-aarch64`` for inner KVM guests.
    """

    line: str
    release: str
    vmlinuz: Path
    initramfs: Path
    qemu: bool = False
    libvirt: bool = False


@dataclass(frozen=True)
class Library:
    """A shared library found in an unpacked package: ``path`` in the image, ``source`` on disk."""

    package: str
    path: str
    source: Path


class Builder:
    """Fetches packages into the cache and composes images.  ``refresh`` re-reads the archive."""

    def __init__(self, cache: Path | None = None, *, refresh: bool = False, sudo: bool = True):
        self.cache = cache or cache_dir()
        self.refresh = refresh
        self.sudo = sudo
        self.apt_dir = self.cache / "apt"
        self.debs_dir = self.cache / "debs"
        self.staging_dir = self.cache / "staging"
        self.images_dir = self.cache / "images"
        self._kernel_packages: dict[str, str] = {}

    # -- apt -----------------------------------------------------------------------------------

    def _write_sources(self) -> None:
        """Copy the host's Debian 12 sources into the private state (arm64 uses the same URIs)."""
        parts = self.apt_dir / "sources.list.d"
        parts.mkdir(parents=True, exist_ok=True)
        (self.apt_dir / "sources.list").write_text("")
        candidates = [Path("/etc/apt/sources.list")]
        host_parts = Path("/etc/apt/sources.list.d")
        if host_parts.is_dir():
            candidates += sorted(host_parts.iterdir())
        copied = 0
        for path in candidates:
            if not path.is_file():
                continue
            text = path.read_text(errors="replace")
            name = path.name if path.parent == host_parts else "host-sources.list"
            if is_debian_source(name, text):
                (parts / name).write_text(arm64_source_text(text))
                copied += 1
        if not copied:
            raise LabError(
                "no Debian 12 (bookworm) apt source found in /etc/apt; the lab fetches its arm64"
                " packages from the same Debian mirror the host uses"
            )

    def _apt(self, tool: str, *args: str, cwd: Path | None = None) -> str:
        return _run([tool, *apt_options(self.apt_dir), *args], cwd=cwd)

    def update(self) -> None:
        """``apt-get update`` unless lists are cached (or ``refresh``); sources are always set."""
        for sub in ("lists/partial", "cache/archives/partial"):
            (self.apt_dir / sub).mkdir(parents=True, exist_ok=True)
        self._write_sources()
        lists = self.apt_dir / "lists"
        if not self.refresh and any(lists.glob("*Packages*")):
            return
        _say("apt-get update (arm64, private state)")
        self._apt("apt-get", "update")

    def userland_packages(self) -> list[str]:
        return [*USERLAND_PACKAGES, *(SUDO_PACKAGES if self.sudo else ())]

    def kernel_package(self, line: str) -> str:
        meta = KERNEL_META_PACKAGES.get(line)
        if meta is None:
            known = ", ".join(KERNEL_META_PACKAGES)
            raise LabError(f"unknown kernel line {line!r}; known: {known}")
        if line not in self._kernel_packages:
            output = self._apt("apt-cache", "depends", meta)
            self._kernel_packages[line] = kernel_package_from_depends(output)
        return self._kernel_packages[line]

    def download(self, packages: Iterable[str]) -> dict[str, Path]:
        """The cached .deb of each package, downloading the missing ones in one apt call."""
        self.debs_dir.mkdir(parents=True, exist_ok=True)
        wanted = list(dict.fromkeys(packages))

        def cached() -> dict[str, Path]:
            found: dict[str, Path] = {}
            for deb in sorted(self.debs_dir.glob("*.deb")):
                found[package_of_deb(deb.name)] = deb
            return found

        have = cached()
        missing = [p for p in wanted if p not in have or self.refresh]
        if missing:
            for package in missing:
                if package in have:
                    # One .deb per package in the cache, so a stale version can never win.
                    have[package].unlink()
            _say(f"downloading {len(missing)} arm64 packages")
            self._apt("apt-get", "download", *missing, cwd=self.debs_dir)
            have = cached()
        lost = [p for p in wanted if p not in have]
        if lost:
            raise LabError(f"apt-get download did not produce: {', '.join(lost)}")
        return {p: have[p] for p in wanted}

    def unpack(self, deb: Path, *, kernel: bool = False) -> Path:
        """Unpack a .deb into the staging tree once; a marker makes an interrupted unpack redo.

        A kernel package is 60-90 MB of modules of which the lab needs six files, so only
        :func:`kernel_member_wanted` members are taken from it.
        """
        target = self.staging_dir / deb.name.removesuffix(".deb")
        marker = target / ".vlcalc-unpacked"
        if marker.exists():
            return target
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        if kernel:
            _extract_kernel(deb, target)
        else:
            _run(["dpkg-deb", "-x", str(deb), str(target)])
        marker.touch()
        return target

    # -- the QEMU variant ------------------------------------------------------------------------

    def _library_index(self, roots: dict[str, Path]) -> dict[str, Library]:
        """Every file a dynamic loader could open by name, first package wins."""
        index: dict[str, Library] = {}
        for package, root in roots.items():
            for raw_dir in ("usr/lib/aarch64-linux-gnu", "lib/aarch64-linux-gnu", "usr/lib", "lib"):
                folder = root / raw_dir
                if not folder.is_dir():
                    continue
                for entry in sorted(folder.iterdir()):
                    if ".so" in entry.name and (entry.is_file() or entry.is_symlink()):
                        index.setdefault(
                            entry.name,
                            Library(package, normalise_path(f"{raw_dir}/{entry.name}"), entry),
                        )
        return index

    def library_closure(
        self, roots: Sequence[tuple[str, str]]
    ) -> tuple[dict[str, Path], dict[str, Library]]:
        """The debs that hold the library closure of ``roots`` (package, file), and the closure
        itself (soname -> file).

        Starts from the roots' packages and the node's userland, and adds one layer of
        ``Depends`` of the packages that provide needed libraries until every ``DT_NEEDED`` name
        resolves, so only packages on a real library chain are fetched.
        """
        packages = list(dict.fromkeys([*(p for p, _ in roots), *self.userland_packages()]))
        expanded: set[str] = set()
        infos: dict[Path, tuple[str, ...]] = {}
        for _ in range(MAX_DEPENDS_ROUNDS):
            debs = self.download(packages)
            unpacked = {p: self.unpack(deb) for p, deb in debs.items()}
            libraries = self._library_index(unpacked)
            needs = functools.partial(_needed_by, libraries, infos)
            start = [name for p, f in roots for name in elf.needed((unpacked[p] / f).read_bytes())]
            found, missing = elf.closure(start, needs)
            if not missing:
                return debs, {name: libraries[name] for name in found}
            providers = {p for p, _ in roots} | {libraries[name].package for name in found}
            fresh = sorted(providers - expanded)
            expanded.update(fresh)
            output = self._apt(
                "apt-cache", "depends", "--no-recommends", "--no-suggests", "--no-conflicts",
                "--no-breaks", "--no-replaces", "--no-enhances", *fresh,
            )  # fmt: skip
            more = sorted(depends_from_apt_cache(output) - set(packages) - QEMU_SKIPPED_PACKAGES)
            if not more:
                break
            packages += more
        raise LabError(f"no arm64 package provides {', '.join(sorted(missing))}")

    def _closure_entries(
        self,
        roots: Sequence[tuple[str, str]],
        debs: dict[str, Path],
        libraries: dict[str, Library],
    ) -> list[cpio.Entry]:
        """The root files and their libraries, each soname link with the file it points to."""
        entries = []
        for package, path in roots:
            # The kernel's initramfs unpacker makes no missing parents: name every folder.
            parts = path.split("/")[:-1]
            entries += [cpio.directory("/".join(parts[:i])) for i in range(1, len(parts) + 1)]
            data = (self.unpack(debs[package]) / path).read_bytes()
            entries.append(cpio.regular(path, data, 0o644 if ".so" in path else 0o755))
        for library in libraries.values():
            source = library.source
            path = library.path
            # Follow the soname link chain (libz.so.1 -> libz.so.1.2.13) inside the package.
            for _ in range(8):
                if not source.is_symlink():
                    break
                target = os.readlink(source)
                entries.append(cpio.symlink(path, target))
                source = source.parent / target
                path = normalise_path(
                    os.path.normpath(f"{path.rsplit('/', 1)[0]}/{target}").lstrip("/")
                )
            entries.append(cpio.regular(path, source.read_bytes(), 0o644))
        return entries

    def _libvirt_data(self) -> list[cpio.Entry]:
        """libvirt's CPU map (``/usr/share`` is otherwise left out of images)."""
        root = self.unpack(self.download([LIBVIRT_DATA_PACKAGE])[LIBVIRT_DATA_PACKAGE])
        entries = [cpio.directory("usr/share"), cpio.directory("usr/share/libvirt")]
        entries.append(cpio.directory(LIBVIRT_CPU_MAP))
        for path in sorted((root / LIBVIRT_CPU_MAP).iterdir()):
            entries.append(cpio.regular(f"{LIBVIRT_CPU_MAP}/{path.name}", path.read_bytes()))
        return entries

    # -- composing -----------------------------------------------------------------------------

    def _package_entries(self, package: str, root: Path) -> list[cpio.Entry]:
        entries: list[cpio.Entry] = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(dirnames) + sorted(filenames):
                full = Path(dirpath) / name
                rel = full.relative_to(root).as_posix()
                if rel == ".vlcalc-unpacked":
                    continue
                path = normalise_path(rel)
                if path in ("usr", "usr/bin", "usr/sbin", "usr/lib") or not keep_file(
                    package, path
                ):
                    continue
                info = full.lstat()
                perm = stat.S_IMODE(info.st_mode)
                if stat.S_ISLNK(info.st_mode):
                    entries.append(cpio.symlink(path, os.readlink(full)))
                elif stat.S_ISDIR(info.st_mode):
                    entries.append(cpio.directory(path, perm))
                elif stat.S_ISREG(info.st_mode):
                    entries.append(cpio.regular(path, full.read_bytes(), perm))
        return entries

    def _module_entries(self, kernel_root: Path, release: str) -> list[tuple[str, cpio.Entry]]:
        """The network modules present as files, decompressed, in insmod order."""
        modules_dir = kernel_root / "lib" / "modules" / release
        index = {path.name.split(".ko", 1)[0]: path for path in modules_dir.rglob("*.ko*")}
        result: list[tuple[str, cpio.Entry]] = []
        for name in NETWORK_MODULES:
            module = index.get(name)
            if module is None:
                continue  # built into this kernel
            data = module.read_bytes()
            if module.name.endswith(".xz"):
                # busybox insmod cannot read compressed modules.
                data = lzma.decompress(data)
            result.append((name, cpio.regular(f"usr/lib/modules/vlcalc/{name}.ko", data)))
        return result

    def build(self, line: str, *, qemu: bool = False, libvirt: bool = False) -> Image:
        """The image of one kernel line, from cache when its manifest is unchanged.

        ``qemu=True`` gives the variant with arm64 QEMU inside (``images/<line>-qemu``),
        ``libvirt=True`` the one with QEMU and libvirt (``images/<line>-libvirt``).
        """
        qemu = qemu or libvirt
        elf_roots = QEMU_ROOTS + (LIBVIRT_ROOTS if libvirt else ())
        self.update()
        kernel_pkg = self.kernel_package(line)
        release = kernel_release(kernel_pkg)
        packages = [kernel_pkg, *self.userland_packages()]
        debs = self.download(packages)
        qemu_debs: dict[str, Path] = {}
        libraries: dict[str, Library] = {}
        if qemu:
            qemu_debs, libraries = self.library_closure(elf_roots)
        out = self.images_dir / image_name(line, qemu, libvirt)
        manifest = {
            "builder": BUILDER_VERSION,
            "kernel_line": line,
            "kernel_release": release,
            "debs": sorted(deb.name for deb in debs.values()),
            # QEMU's deb and those of the libraries it loads: a new version of any rebuilds.
            "qemu_debs": sorted(
                {qemu_debs[package].name for package, _ in elf_roots}
                | {qemu_debs[lib.package].name for lib in libraries.values()}
            )
            if qemu
            else [],
            "libvirt": libvirt,
        }
        image = Image(line, release, out / "vmlinuz", out / "initramfs.cpio", qemu, libvirt)
        manifest_path = out / "manifest.json"
        if (
            not self.refresh
            and image.vmlinuz.exists()
            and image.initramfs.exists()
            and manifest_path.exists()
            and json.loads(manifest_path.read_text()) == manifest
        ):
            return image
        _say(f"composing the {line} image ({release})")
        roots = {p: self.unpack(deb, kernel=p == kernel_pkg) for p, deb in debs.items()}
        entries: dict[str, cpio.Entry] = {e.path: e for e in skeleton()}
        for package in packages[1:]:
            for entry in self._package_entries(package, roots[package]):
                entries.setdefault(entry.path, entry)
        if self.sudo:
            sudo = entries["usr/bin/sudo"]
            # dpkg -x as non-root drops the setuid bit; sudo cannot work without it.
            entries["usr/bin/sudo"] = cpio.regular(sudo.path, sudo.data, 0o4755)
        entries["usr/bin/python3"] = cpio.symlink("usr/bin/python3", "python3.11")
        for entry in ansible_python_entries(roots["libpython3.11-stdlib"]):
            entries[entry.path] = entry
        modules = self._module_entries(roots[kernel_pkg], release)
        entries.update((entry.path, entry) for _, entry in modules)
        for entry in config_files(self.sudo, libvirt):
            entries[entry.path] = entry
        if qemu:
            for entry in self._closure_entries(elf_roots, qemu_debs, libraries):
                entries.setdefault(entry.path, entry)
        if libvirt:
            for entry in self._libvirt_data():
                entries.setdefault(entry.path, entry)
        entries.update((entry.path, entry) for entry in bytecode_entries(entries.values()))
        entries["init"] = cpio.regular(
            "init", init_script([name for name, _ in modules]).encode(), 0o755
        )
        out.mkdir(parents=True, exist_ok=True)
        vmlinuz = roots[kernel_pkg] / "boot" / f"vmlinuz-{release}"
        shutil.copyfile(vmlinuz, image.vmlinuz)
        # Parents before children: sort by path components.
        ordered = sorted(entries.values(), key=lambda e: e.path.split("/"))
        tmp = image.initramfs.with_suffix(".tmp")
        tmp.write_bytes(cpio.archive(ordered))
        tmp.replace(image.initramfs)
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
        return image


def build(
    lines: Sequence[str] = tuple(KERNEL_META_PACKAGES),
    *,
    cache: Path | None = None,
    refresh: bool = False,
    sudo: bool = True,
    qemu: bool = False,
    libvirt: bool = False,
) -> dict[str, Image]:
    """Fetch what is missing and build the image of every kernel line in ``lines``
    (with ``qemu``, the variant with arm64 QEMU inside; with ``libvirt``, QEMU and libvirt)."""
    builder = Builder(cache, refresh=refresh, sudo=sudo)
    builder.update()
    # One apt-get download for every line: apt fetches in parallel, once.
    kernels = [builder.kernel_package(line) for line in lines]
    builder.download([*kernels, *builder.userland_packages(), *([QEMU_PACKAGE] if qemu else [])])
    builder.refresh = False  # lists and debs are fresh now; build() must not fetch again
    return {line: builder.build(line, qemu=qemu, libvirt=libvirt) for line in lines}
