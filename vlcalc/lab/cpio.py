"""A writer for the ``newc`` cpio format the Linux kernel unpacks as an initramfs.

Written in Python rather than piped through ``cpio -o`` so that owners, modes and device nodes
(``/dev/console``, the setuid ``sudo``, ``/home/probe`` owned by uid 1000) are set exactly as the
node needs them, without running the build as root.  Pure: entries in, bytes out.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from dataclasses import dataclass

_MAGIC = b"070701"
_TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class Entry:
    """One archive member.  ``path`` has no leading slash; ``mode`` includes the file type bits.

    Example: ``Entry("etc/hostname", stat.S_IFREG | 0o644, data=b"node\\n")``.
    For a symlink ``data`` is the link target; ``rdev`` is ``(major, minor)`` for device nodes.
    """

    path: str
    mode: int
    uid: int = 0
    gid: int = 0
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)
    mtime: int = 0


def directory(path: str, perm: int = 0o755, uid: int = 0, gid: int = 0) -> Entry:
    return Entry(path, stat.S_IFDIR | perm, uid, gid)


def regular(path: str, data: bytes, perm: int = 0o644, uid: int = 0, gid: int = 0) -> Entry:
    return Entry(path, stat.S_IFREG | perm, uid, gid, data)


def symlink(path: str, target: str) -> Entry:
    return Entry(path, stat.S_IFLNK | 0o777, data=target.encode())


def char_device(path: str, major: int, minor: int, perm: int = 0o600) -> Entry:
    return Entry(path, stat.S_IFCHR | perm, rdev=(major, minor))


def _pad4(length: int) -> bytes:
    return b"\0" * (-length % 4)


def _header(ino: int, entry: Entry, name: bytes) -> bytes:
    fields = (
        ino,
        entry.mode,
        entry.uid,
        entry.gid,
        2 if stat.S_ISDIR(entry.mode) else 1,
        entry.mtime,
        len(entry.data),
        0,
        0,
        entry.rdev[0],
        entry.rdev[1],
        len(name) + 1,
        0,
    )
    return _MAGIC + b"".join(b"%08x" % value for value in fields)


def archive(entries: Iterable[Entry]) -> bytes:
    """The newc archive of ``entries`` in the order given, with the trailer.

    Parents must come before children: the kernel creates members in archive order.  The result
    can be concatenated with another archive; the kernel unpacks both, later members winning.
    """
    chunks: list[bytes] = []
    for ino, entry in enumerate([*entries, Entry(_TRAILER, 0)], start=1):
        name = entry.path.encode()
        header = _header(ino if entry.path != _TRAILER else 0, entry, name)
        chunks.append(header + name + b"\0")
        chunks.append(_pad4(len(header) + len(name) + 1))
        chunks.append(entry.data)
        chunks.append(_pad4(len(entry.data)))
    return b"".join(chunks)
