"""Just enough ELF to find which shared libraries a binary needs (its ``DT_NEEDED`` entries).

The QEMU image variant copies ``qemu-system-aarch64`` into the node with only the libraries its
dynamic loader will actually open, so the image stays as small as the closure of ``DT_NEEDED``
over sonames, not as big as the closure of apt's ``Depends`` (which drags in debconf, PAM, GStreamer
and more).  Pure: bytes in, names out; the host needs no arm64 readelf.

>>> needed(Path("/usr/bin/qemu-system-aarch64").read_bytes())[:2]   # doctest: +SKIP
('libfdt.so.1', 'libz.so.1')
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from vlcalc.lab.errors import LabError

_ELF_MAGIC = b"\x7fELF"
_ELFCLASS64 = 2
_ELFDATA2LSB = 1
_SHT_DYNAMIC = 6
_DT_NULL = 0
_DT_NEEDED = 1
_DT_SONAME = 14


@dataclass(frozen=True)
class DynamicInfo:
    """The dynamic section of one ELF file: its own soname (if a library) and what it needs.

    Example: ``DynamicInfo("libfdt.so.1", ("libc.so.6",))``.
    """

    soname: str | None
    needed: tuple[str, ...]


def is_elf(data: bytes) -> bool:
    return data[:4] == _ELF_MAGIC


def dynamic_info(data: bytes) -> DynamicInfo:
    """Read ``DT_SONAME`` and ``DT_NEEDED`` of a 64-bit little-endian ELF file (arm64, x86-64).

    A static binary (no dynamic section) gives ``DynamicInfo(None, ())``; anything that is not
    a well-formed ELF64 LE file raises :class:`LabError`.
    """
    if not is_elf(data) or len(data) < 64:
        raise LabError("not an ELF file")
    if data[4] != _ELFCLASS64 or data[5] != _ELFDATA2LSB:
        raise LabError("only 64-bit little-endian ELF files are supported")
    try:
        (shoff,) = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
        sections = [
            struct.unpack_from("<IIQQQQIIQQ", data, shoff + index * shentsize)
            for index in range(shnum)
        ]
        for _name, sh_type, _flags, _addr, offset, size, link, *_rest in sections:
            if sh_type != _SHT_DYNAMIC:
                continue
            strtab_offset = sections[link][4]
            soname: str | None = None
            wanted: list[str] = []
            for entry in range(size // 16):
                tag, value = struct.unpack_from("<qQ", data, offset + entry * 16)
                if tag == _DT_NULL:
                    break
                if tag in (_DT_NEEDED, _DT_SONAME):
                    end = data.index(b"\0", strtab_offset + value)
                    name = data[strtab_offset + value : end].decode()
                    if tag == _DT_NEEDED:
                        wanted.append(name)
                    else:
                        soname = name
            return DynamicInfo(soname, tuple(wanted))
    except (struct.error, IndexError, ValueError, UnicodeDecodeError) as exc:
        raise LabError(f"malformed ELF file: {exc}") from exc
    return DynamicInfo(None, ())


def needed(data: bytes) -> tuple[str, ...]:
    """The ``DT_NEEDED`` sonames of an ELF file, in file order."""
    return dynamic_info(data).needed


def closure(
    roots: Iterable[str], needs: Callable[[str], Iterable[str] | None]
) -> tuple[set[str], set[str]]:
    """Every soname reachable from ``roots``, and those ``needs`` could not resolve.

    ``needs(soname)`` returns the sonames that library needs, or ``None`` when no file provides
    it.  Example: with ``a -> b -> c`` and ``c`` unknown, ``closure(["a"], ...)`` is
    ``({"a", "b"}, {"c"})``.
    """
    found: set[str] = set()
    missing: set[str] = set()
    pending = list(roots)
    while pending:
        name = pending.pop()
        if name in found or name in missing:
            continue
        more = needs(name)
        if more is None:
            missing.add(name)
            continue
        found.add(name)
        pending.extend(more)
    return found, missing


def resolve(
    roots: Iterable[str], index: Mapping[str, tuple[str, ...]]
) -> tuple[set[str], set[str]]:
    """:func:`closure` over an index ``{soname: needed sonames}``."""
    return closure(roots, index.get)
