"""The QEMU image variant's pure helpers: ELF ``DT_NEEDED`` reading, the soname closure, apt's
Depends, and the node options that pick the variant (fast; no QEMU, not marked ``lab``)."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from vlcalc.lab import cluster, elf, image
from vlcalc.lab.errors import LabError


def _cross_gcc() -> str:
    gcc = shutil.which("aarch64-linux-gnu-gcc")
    if gcc is None:
        pytest.skip(
            "aarch64-linux-gnu-gcc is not installed (apt-get install gcc-aarch64-linux-gnu)"
        )
    return gcc


def test_dynamic_info_reads_soname_and_needed_of_a_real_arm64_library(tmp_path: Path) -> None:
    gcc = _cross_gcc()
    source = tmp_path / "lib.c"
    source.write_text("#include <math.h>\ndouble f(double x) { return sqrt(x) + cos(x); }\n")
    library = tmp_path / "libvlcalctest.so.3"
    subprocess.run(
        [gcc, "-shared", "-fPIC", "-Wl,-soname,libvlcalctest.so.3", "-o", str(library),
         str(source), "-lm", "-Wl,--no-as-needed"],
        check=True,
    )  # fmt: skip
    info = elf.dynamic_info(library.read_bytes())
    assert info.soname == "libvlcalctest.so.3"
    assert "libm.so.6" in info.needed and "libc.so.6" in info.needed


def test_a_static_binary_needs_nothing(tmp_path: Path) -> None:
    gcc = _cross_gcc()
    source = tmp_path / "main.c"
    source.write_text("int main(void) { return 0; }\n")
    binary = tmp_path / "main"
    subprocess.run([gcc, "-static", "-o", str(binary), str(source)], check=True)
    assert elf.dynamic_info(binary.read_bytes()) == elf.DynamicInfo(None, ())


def _elf64_header(shoff: int, shnum: int) -> bytes:
    header = bytearray(b"\x7fELF\x02\x01\x01" + bytes(57))
    header[0x28:0x30] = shoff.to_bytes(8, "little")
    header[0x3A:0x3C] = (64).to_bytes(2, "little")
    header[0x3C:0x3E] = shnum.to_bytes(2, "little")
    return bytes(header)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"#!/bin/sh\n" + bytes(64),
        b"\x7fELF\x01\x01\x01" + bytes(57),  # 32-bit
        b"\x7fELF\x02\x02\x01" + bytes(57),  # big-endian
        _elf64_header(shoff=10_000, shnum=3),  # section table past the end of the file
    ],
    ids=["empty", "script", "elf32", "big-endian", "sections-past-end"],
)
def test_malformed_or_foreign_files_raise_lab_error(data: bytes) -> None:
    with pytest.raises(LabError):
        elf.dynamic_info(data)


def test_closure_follows_needed_names_and_reports_the_missing_ones() -> None:
    index = {"a": ("b", "libc"), "b": ("c", "libc"), "libc": ()}
    found, missing = elf.resolve(["a"], index)
    assert found == {"a", "b", "libc"} and missing == {"c"}
    # Cycles end: each name is visited once.
    assert elf.resolve(["x"], {"x": ("y",), "y": ("x",)}) == ({"x", "y"}, set())


def test_depends_from_apt_cache_keeps_real_packages_and_alternatives() -> None:
    output = (
        "qemu-system-arm\n"
        "  Depends: libfdt1\n"
        " |Depends: libjpeg62-turbo\n"
        "  Depends: libjpeg8\n"
        "  PreDepends: libc6\n"
        "  Depends: <debconf-2.0>\n"
        "  Recommends: qemu-utils\n"
        "libfdt1\n"
        "  Depends: libc6\n"
    )
    assert image.depends_from_apt_cache(output) == {
        "libfdt1", "libjpeg62-turbo", "libjpeg8", "libc6",
    }  # fmt: skip


def test_image_name_of_the_variant() -> None:
    assert image.image_name("6.12", qemu=False) == "6.12"
    assert image.image_name("6.12", qemu=True) == "6.12-qemu"


def test_qemu_option_picks_the_variant_and_more_memory(tmp_path: Path) -> None:
    spec = cluster.parse_node("n1=128,256,kernel=6.12,qemu")
    assert spec.qemu and spec.kernel == "6.12" and spec.vls == frozenset({128, 256})
    plain = cluster.parse_node("n2=128")
    assert not plain.qemu
    argv = cluster.qemu_argv(
        spec,
        vmlinuz=tmp_path / "v",
        initrd=tmp_path / "i",
        port=2222,
        console=tmp_path / "c",
        pidfile=tmp_path / "p",
    )
    plain_argv = cluster.qemu_argv(
        plain,
        vmlinuz=tmp_path / "v",
        initrd=tmp_path / "i",
        port=2222,
        console=tmp_path / "c",
        pidfile=tmp_path / "p",
    )
    assert argv[argv.index("-m") + 1] == str(cluster.QEMU_NODE_MEMORY_MIB)
    assert plain_argv[plain_argv.index("-m") + 1] == str(cluster.NODE_MEMORY_MIB) == "256"


def test_libvirt_variant_names_and_users() -> None:
    assert image.image_name("6.1", qemu=True, libvirt=True) == "6.1-libvirt"
    spec = cluster.parse_node("n1=128,libvirt")
    assert spec.libvirt and spec.image_name == "6.1-libvirt"
    assert spec.memory_mib == cluster.QEMU_NODE_MEMORY_MIB
    files = {entry.path: entry.data.decode() for entry in image.config_files(True, libvirt=True)}
    # libvirt runs QEMU as libvirt-qemu, which must reach /dev/kvm; probe still must not.
    assert "libvirt-qemu:*:" in files["etc/passwd"]
    kvm = next(line for line in files["etc/group"].splitlines() if line.startswith("kvm:"))
    assert kvm.endswith(":libvirt-qemu")
    plain = {entry.path: entry.data.decode() for entry in image.config_files(True)}
    assert "libvirt" not in plain["etc/passwd"] + plain["etc/group"]


def _staged(builder: image.Builder, deb: str, files: dict[str, bytes | str]) -> Path:
    """A package as Builder.unpack leaves it (marker included); str values are symlinks."""
    root = builder.staging_dir / deb.removesuffix(".deb")
    for path, content in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            target.symlink_to(content)
        else:
            target.write_bytes(content)
    (root / ".vlcalc-unpacked").touch()
    return builder.debs_dir / deb


def test_closure_entries_name_parent_folders_and_follow_soname_links(tmp_path: Path) -> None:
    builder = image.Builder(tmp_path)
    driver = "usr/lib/aarch64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so"
    debs = {
        "drv": _staged(builder, "drv_1_arm64.deb", {driver: b"\x7fELF driver"}),
        "libz": _staged(
            builder,
            "libz_1_arm64.deb",
            {
                "lib/aarch64-linux-gnu/libz.so.1": "libz.so.1.2.13",
                "lib/aarch64-linux-gnu/libz.so.1.2.13": b"\x7fELF zlib",
            },
        ),
    }
    index = builder._library_index({p: builder.unpack(d) for p, d in debs.items()})
    assert index["libz.so.1"].path == "usr/lib/aarch64-linux-gnu/libz.so.1"
    entries = builder._closure_entries([("drv", driver)], debs, {"libz.so.1": index["libz.so.1"]})
    by_path = {entry.path: entry for entry in entries}
    # The initramfs unpacker creates no parents, so each folder of the driver is an entry.
    for folder in ("usr", "usr/lib", "usr/lib/aarch64-linux-gnu/libvirt/connection-driver"):
        assert stat.S_ISDIR(by_path[folder].mode)
    assert by_path[driver].data == b"\x7fELF driver"
    assert stat.S_IMODE(by_path[driver].mode) == 0o644
    link = by_path["usr/lib/aarch64-linux-gnu/libz.so.1"]
    assert stat.S_ISLNK(link.mode) and link.data == b"libz.so.1.2.13"
    assert by_path["usr/lib/aarch64-linux-gnu/libz.so.1.2.13"].data == b"\x7fELF zlib"
