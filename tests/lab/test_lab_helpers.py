"""The lab harness's pure helpers: fast, no QEMU, no network (not marked ``lab``)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from vlcalc.errors import VlcalcError
from vlcalc.lab import cluster, cpio, image
from vlcalc.lab.cli import main


def _unpack(data: bytes) -> list[tuple[str, int, int, bytes]]:
    """A minimal newc reader: (name, mode, uid, data) per member, trailer excluded."""
    members = []
    offset = 0
    while True:
        header = data[offset : offset + 110]
        assert header[:6] == b"070701"
        fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        mode, uid, size, namesize = fields[1], fields[2], fields[6], fields[11]
        name_start = offset + 110
        name = data[name_start : name_start + namesize - 1].decode()
        data_start = name_start + namesize + (-(110 + namesize) % 4)
        body = data[data_start : data_start + size]
        offset = data_start + size + (-size % 4)
        if name == "TRAILER!!!":
            return members
        members.append((name, mode, uid, body))


def test_cpio_archive_round_trips_modes_owners_and_data() -> None:
    entries = [
        cpio.directory("home/probe", 0o755, uid=1000, gid=1000),
        cpio.regular("usr/bin/sudo", b"\x7fELF", 0o4755),
        cpio.symlink("bin", "usr/bin"),
        cpio.char_device("dev/console", 5, 1),
    ]
    members = _unpack(cpio.archive(entries))
    assert [m[0] for m in members] == ["home/probe", "usr/bin/sudo", "bin", "dev/console"]
    assert members[0][1] == stat.S_IFDIR | 0o755 and members[0][2] == 1000
    assert members[1][1] == stat.S_IFREG | 0o4755 and members[1][3] == b"\x7fELF"
    assert members[2][3] == b"usr/bin"
    assert stat.S_ISCHR(members[3][1])


def test_key_overlay_authorises_root_and_probe() -> None:
    members = {m[0]: m for m in _unpack(image.key_overlay("ssh-ed25519 AAAA test"))}
    assert members["root/.ssh/authorized_keys"][3] == b"ssh-ed25519 AAAA test\n"
    probe_keys = members["home/probe/.ssh/authorized_keys"]
    assert probe_keys[2] == image.PROBE_UID and stat.S_IMODE(probe_keys[1]) == 0o600


def test_kernel_package_from_apt_cache_depends() -> None:
    output = "linux-image-arm64\n  Depends: linux-image-6.1.0-56-arm64\n"
    assert image.kernel_package_from_depends(output) == "linux-image-6.1.0-56-arm64"
    assert image.kernel_release("linux-image-6.12.117+deb12-arm64") == "6.12.117+deb12-arm64"
    with pytest.raises(VlcalcError):
        image.kernel_package_from_depends("linux-image-arm64\n")


@pytest.mark.parametrize(
    ("package", "path", "kept"),
    [
        ("libc6", "usr/lib/aarch64-linux-gnu/libc.so.6", True),
        ("libc6", "usr/lib/aarch64-linux-gnu/gconv/IBM880.so", False),
        ("busybox-static", "usr/share/doc/busybox-static/copyright", False),
        ("libpython3.11-stdlib", "usr/lib/python3.11/json/decoder.py", True),
        ("libpython3.11-stdlib", "usr/lib/python3.11/lib-dynload/_json.cpython-311.so", True),
        ("libpython3.11-stdlib", "usr/lib/python3.11/ctypes/__init__.py", False),
        ("libpython3.11-stdlib", "usr/lib/python3.11/jsonish.py", False),
        ("libpam-modules", "usr/lib/aarch64-linux-gnu/security/pam_permit.so", True),
        ("libpam-modules", "usr/lib/aarch64-linux-gnu/security/pam_unix.so", False),
    ],
)
def test_keep_file(package: str, path: str, kept: bool) -> None:
    assert image.keep_file(package, path) is kept


def test_normalise_path_merges_usr() -> None:
    assert image.normalise_path("lib/ld-linux-aarch64.so.1") == "usr/lib/ld-linux-aarch64.so.1"
    assert image.normalise_path("bin") == "usr/bin"
    assert image.normalise_path("etc/passwd") == "etc/passwd"


def test_init_script_loads_modules_in_order_and_announces() -> None:
    script = image.init_script(["failover", "virtio_net"])
    assert script.index("failover.ko") < script.index("virtio_net.ko")
    assert image.HOSTKEY_MARKER in script and image.READY_MARKER in script
    assert "chmod 0660 /dev/kvm" in script


def test_sve_cpu_properties_are_explicit_for_every_vl() -> None:
    props = cluster.sve_cpu_properties({128, 256, 512})
    assert props.startswith("sve=on,sve128=on,sve256=on,sve384=off,sve512=on,sve640=off")
    assert props.endswith("sve2048=off")
    assert cluster.sve_cpu_properties(None) == "sve=off"
    assert cluster.sve_cpu_properties(set()) == "sve=off"
    with pytest.raises(VlcalcError):
        cluster.sve_cpu_properties({100})
    with pytest.raises(VlcalcError):
        cluster.sve_cpu_properties({2176})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("n1=128,256,384,512", cluster.NodeSpec("n1", frozenset({128, 256, 384, 512}))),
        ("n3=none", cluster.NodeSpec("n3", None)),
        ("n4=", cluster.NodeSpec("n4", None)),
        (
            "n2=128,256,kernel=6.12,append=kvm-arm.mode=nvhe",
            cluster.NodeSpec("n2", frozenset({128, 256}), "6.12", ("kvm-arm.mode=nvhe",)),
        ),
    ],
)
def test_parse_node(text: str, expected: cluster.NodeSpec) -> None:
    assert cluster.parse_node(text) == expected


@pytest.mark.parametrize("text", ["n1", "=128", "n1=128,abc", "n1=100", "bad name=128"])
def test_parse_node_rejects(text: str) -> None:
    with pytest.raises(VlcalcError):
        cluster.parse_node(text)


def test_qemu_argv_forwards_only_loopback() -> None:
    argv = cluster.qemu_argv(
        cluster.NodeSpec("n1", frozenset({128}), cmdline=("kvm-arm.mode=nvhe",)),
        vmlinuz=Path("/c/vmlinuz"),
        initrd=Path("/w/initrd"),
        port=2222,
        console=Path("/w/n1.log"),
        pidfile=Path("/w/n1.pid"),
    )
    nic = argv[argv.index("-nic") + 1]
    assert "restrict=on" in nic and "hostfwd=tcp:127.0.0.1:2222-:22" in nic
    assert argv[argv.index("-append") + 1].endswith("panic=-1 kvm-arm.mode=nvhe")
    assert "virtualization=on" in argv[argv.index("-M") + 1]


def test_parse_console_finds_key_and_ready_among_kernel_lines() -> None:
    text = (
        "[    1.6] Run /init as init process\n"
        "VLCALC-LAB-HOSTKEY ssh-ed25519 AAAAC3Nz+/abc=\n"
        "[    1.9] virtio-pci 0000:00:01.0: enabling device\n"
    )
    assert cluster.parse_console(text) == cluster.ConsoleState("ssh-ed25519 AAAAC3Nz+/abc=", False)
    done = cluster.parse_console(text + "VLCALC-LAB-READY\n")
    assert done.ready and done.host_key == "ssh-ed25519 AAAAC3Nz+/abc="
    assert cluster.parse_console("") == cluster.ConsoleState(None, False)


def test_inventory_groups_and_connection_vars() -> None:
    nodes = [
        cluster.Node(
            cluster.NodeSpec("a", frozenset({128, 256}), "6.12", ("kvm-arm.mode=nvhe",)),
            2201,
            1,
            Path("a.pid"),
            Path("a.log"),
        ),
        cluster.Node(cluster.NodeSpec("b", None), 2202, 2, Path("b.pid"), Path("b.log")),
    ]
    inv = cluster.inventory(nodes, Path("/w/id_ed25519"), Path("/w/known_hosts"))
    host = inv["all"]["hosts"]["a"]
    assert host["ansible_host"] == "127.0.0.1" and host["ansible_port"] == 2201
    assert host["ansible_user"] == "root"
    assert host["ansible_ssh_private_key_file"] == "/w/id_ed25519"
    assert host["ansible_python_interpreter"] == "/usr/bin/python3"
    assert "StrictHostKeyChecking=yes" in host["ansible_ssh_common_args"]
    children = inv["all"]["children"]
    assert set(children["kernel_6_12"]["hosts"]) == {"a"}
    assert set(children["kvm_nvhe"]["hosts"]) == {"a"}
    assert set(children["sve_off"]["hosts"]) == {"b"}
    assert cluster.known_hosts_line(2201, "ssh-ed25519 AAAA") == "[127.0.0.1]:2201 ssh-ed25519 AAAA"


def test_generate_user_key_is_private(tmp_path: Path) -> None:
    public = cluster.generate_user_key(tmp_path / "id_ed25519")
    assert public.startswith("ssh-ed25519 ")
    assert stat.S_IMODE((tmp_path / "id_ed25519").stat().st_mode) == 0o600
    assert (tmp_path / "id_ed25519.pub").read_text().strip() == public


def test_down_without_a_fleet_is_a_no_op(tmp_path: Path) -> None:
    assert cluster.down(tmp_path) == 0
    assert main(["down", "--dir", str(tmp_path)]) == 0


def test_cli_usage_errors_exit_2() -> None:
    assert main(["up", "--dir", "x"]) == 2
    assert main(["nonsense"]) == 2


@pytest.mark.parametrize(
    ("member", "wanted"),
    [
        ("./boot/vmlinuz-6.1.0-56-arm64", True),
        ("./boot/System.map-6.1.0-56-arm64", False),
        ("./lib/modules/6.1.0-56-arm64/kernel/drivers/net/virtio_net.ko", True),
        ("./lib/modules/6.12.117+deb12-arm64/kernel/net/core/failover.ko.xz", True),
        ("./lib/modules/6.1.0-56-arm64/kernel/drivers/net/virtio_net_extra.ko", False),
        ("./lib/modules/6.1.0-56-arm64/kernel/fs/ext4/ext4.ko", False),
        ("./usr/share/doc/virtio_net.ko", False),
    ],
)
def test_kernel_member_wanted(member: str, wanted: bool) -> None:
    assert image.kernel_member_wanted(member) is wanted


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "deb [arch=amd64 signed-by=/k.gpg] http://deb.debian.org/debian bookworm main",
            "deb [signed-by=/k.gpg] http://deb.debian.org/debian bookworm main\n",
        ),
        (
            "deb [arch=amd64,i386] http://deb.debian.org/debian bookworm main",
            "deb  http://deb.debian.org/debian bookworm main\n",
        ),
        (
            "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\n"
            "Architectures: amd64\nComponents: main\n",
            "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\n",
        ),
    ],
)
def test_arm64_source_text_drops_architecture_pins(text: str, expected: str) -> None:
    assert image.arm64_source_text(text) == expected


def test_only_debian_bookworm_sources_are_reused() -> None:
    assert image.is_debian_source("debian.sources", "URIs: http://deb.debian.org/debian\nbookworm")
    assert not image.is_debian_source("nodesource.sources", "URIs: https://deb.nodesource.com")
    assert not image.is_debian_source("debian.sources.disabled", "debian bookworm")


def test_precompiled_bytecode_is_unchecked_hash_based_and_runs() -> None:
    import importlib.util
    import marshal

    source = b"from typing import List\nx: List[int] = [1]\nVALUE = 6 * 7\n"
    pyc = image.compile_pyc(source, "/usr/lib/python3.11/example.py")
    assert pyc is not None
    assert pyc[:4] == importlib.util.MAGIC_NUMBER
    assert int.from_bytes(pyc[4:8], "little") == 0b01  # hash-based, unchecked
    assert pyc[8:16] == importlib.util.source_hash(source)
    namespace: dict[str, object] = {}
    exec(marshal.loads(pyc[16:]), namespace)
    assert namespace["VALUE"] == 42
    # No __future__ flag leaks in from the builder's own module: annotations are evaluated.
    annotations = namespace["__annotations__"]
    assert isinstance(annotations, dict) and not isinstance(annotations["x"], str)
    assert image.compile_pyc(b"def broken(:\n", "/x.py") is None


def test_bytecode_entries_cover_python_modules_only() -> None:
    entries = [
        cpio.regular("usr/lib/python3.11/os.py", b"X = 1\n"),
        cpio.regular("usr/lib/python3.11/json/__init__.py", b"Y = 2\n"),
        cpio.regular("usr/bin/python3.11", b"\x7fELF"),
        cpio.regular("etc/python3.11/sitecustomize.py", b"Z = 3\n"),
    ]
    paths = {e.path for e in image.bytecode_entries(entries)}
    if not paths:
        pytest.skip("host Python is not 3.11: no bytecode is precompiled")
    assert paths == {
        "usr/lib/python3.11/__pycache__",
        "usr/lib/python3.11/__pycache__/os.cpython-311.pyc",
        "usr/lib/python3.11/json/__pycache__",
        "usr/lib/python3.11/json/__pycache__/__init__.cpython-311.pyc",
    }
