"""Names every layer shares: document schema tags, node statuses, error kinds, verdicts and limit
kinds, and :func:`printable` for untrusted text.  The bottom layer: it imports nothing of vlcalc's.

The enums mix in ``str`` so that they are their own JSON value and compare equal to the strings the
documents carry (``Status.OK == "ok"``); Python 3.9 has no ``StrEnum``.
"""

from __future__ import annotations

import stat
from enum import Enum, IntEnum

PROBE_SCHEMA = "vlcalc.probe/1"  # written by the probe itself (vlcalc/probe/probe.py)
SCAN_SCHEMA = "vlcalc.scan/1"
REPORT_SCHEMA = "vlcalc.report/1"
CHECK_SCHEMA = "vlcalc.check/1"
GROUPS_SCHEMA = "vlcalc.groups/1"
DIFF_SCHEMA = "vlcalc.diff/1"


class ExitCode(IntEnum):
    """vlcalc's exit codes, documented in the README, the same for every command (``vlcalc lab``
    too); derived from result objects, turned into the process's exit status by the CLI only."""

    OK = 0
    NOT_MET = 1  # the answer falls short: a requirement is not met, some node rejects the set
    INVALID_INPUT = 2  # usage error, bad file, bad schema, bad VL syntax
    FAILED = 2  # the same code: the command could not run (e.g. a lab node did not boot)
    INCOMPLETE = 4  # some nodes could not be probed, so the answer may be optimistic
    INTERRUPTED = 130  # Ctrl-C: what was collected is still reported


class _Name(str, Enum):
    def __str__(self) -> str:
        return str(self.value)

    # Enum hashes a member by its name ("OK"); hash it as its value, so that a member and its
    # string are the same dict key, as they are equal (Status.OK == "ok").  str's own slot, not
    # a Python method: a 100,000-node report hashes a member per node, and a Python __hash__
    # cost 30 ms of it.
    __hash__ = str.__hash__


class Status(_Name):
    """What vlcalc knows of one node's KVM set."""

    OK = "ok"  # probed, SVE offered: the node's set is known
    NO_SVE = "no-sve"  # probed, KVM offers no SVE: the set is known to be empty
    ERROR = "error"  # not probed: the set is unknown


class ErrorKind(_Name):
    """Why a node's set is unknown.  The first group comes from vlcalc's side of the connection,
    the second from the probe's own document.  A probe document may carry a kind not listed here
    (a newer probe); readers keep it as its plain string."""

    UNREACHABLE = "unreachable"
    AUTH_FAILED = "auth-failed"
    HOST_KEY_UNKNOWN = "host-key-unknown"
    HOST_KEY_CHANGED = "host-key-changed"
    TIMEOUT = "timeout"
    SUDO_FAILED = "sudo-failed"
    NO_PYTHON = "no-python"
    PROBE_FAILED = "probe-failed"
    BAD_OUTPUT = "bad-output"
    INTERRUPTED = "interrupted"
    # the probe's own kinds
    NOT_ARM64 = "not-arm64"
    NO_KVM = "no-kvm"
    PERMISSION_DENIED = "permission-denied"
    KVM_API = "kvm-api"
    KVM_IOCTL = "kvm-ioctl"
    USAGE = "usage"
    INTERNAL = "internal"


_ERROR_KINDS = {kind.value: kind for kind in ErrorKind}


def error_kind(text: str) -> ErrorKind | str:
    """The :class:`ErrorKind` called ``text``, or ``text`` itself for a kind this vlcalc does not
    know (a newer probe's): kept, not refused.

    >>> error_kind("no-kvm") is ErrorKind.NO_KVM, error_kind("kvm-sme")
    (True, 'kvm-sme')
    """
    return _ERROR_KINDS.get(text, text)


class Verdict(_Name):
    """One node's verdict on a requested VL set (``vlcalc check``)."""

    ACCEPT = "accept"
    REJECT = "reject"
    UNKNOWN = "unknown"  # the node was not probed


class LimitKind(_Name):
    """Why the cluster set is not larger."""

    MAX_VL = "max-vl"
    DIVERGENCE = "divergence"
    NO_SVE = "no-sve"
    UNPROBED = "unprobed"


# Printable by Unicode's rule but invisible: a name made of them looks empty or like another name.
_INVISIBLE = "\u034f\u115f\u1160\u17b4\u17b5\u3164\uffa0"


def printable(text: str, keep: str = "") -> str:
    """Node text goes into messages, terminals and pages: replace control and format characters
    (escape sequences, newlines, bidi overrides, zero-width characters) and invisible fillers with
    ``?``, except those in ``keep``.  Clean text is returned as it is (the same object).

    >>> printable("a\\x1b[31mb\\u200bc\\nd")
    'a?[31mb?c?d'
    """
    # The usual case at C speed (a one-character `in` is a memchr, and instant when the text
    # has no character that large).
    if text.isprintable() and not any(ch in text for ch in _INVISIBLE):
        return text
    return "".join(
        ch if (ch.isprintable() and ch not in _INVISIBLE) or ch in keep else "?" for ch in text
    )


def file_kind(mode: int) -> str:
    """What a file that is not a regular file is, in words, for refusing it (``st_mode``)."""
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "a special file")
