"""Judging what one node answered: its probe document, or why its set is unknown.

Pure: a :class:`~vlcalc.transport.base.RunResult` (exit status, stdout, stderr tail) in, a
:class:`~vlcalc.documents.NodeRecord` out.  ``vlcalc scan`` judges what its transport brought back
and the Ansible reader judges a registered result with the same rules, so a node is ``ok``,
``no-sve`` or the same error kind whichever way its answer came.  What a node prints is untrusted:
anything that is not exactly one valid probe document is that node's ``bad-output``.
"""

from __future__ import annotations

from typing import Any

from vlcalc.documents import NodeRecord, decode, error_node, parse_probe
from vlcalc.errors import CommandFailedError, DocumentError, NodeError
from vlcalc.model import ErrorKind, printable
from vlcalc.transport.base import RunResult, Target

MAX_PROBE_OUTPUT = 256 * 1024  # a probe document is ~1 KiB; trials add ~200 bytes each
_SUDO_FAILURES = (
    "a password is required",
    "a terminal is required",
    "is not in the sudoers",
    "may not run sudo",
    "not allowed to execute",
)
_NO_SUDO = ("sudo: command not found", "sudo: not found")


def interpret(target: Target, result: RunResult) -> dict[str, Any]:
    """What the node sent, as a parsed (not yet validated) probe document, or :class:`NodeError`.

    >>> interpret(Target("n1", "n1"), RunResult(0, b'{"schema": "vlcalc.probe/1"}', b""))
    {'schema': 'vlcalc.probe/1'}
    """
    stderr = result.stderr_tail.decode("utf-8", "replace").strip()
    tail = printable(stderr[-300:])
    if result.exit_status != 0:
        raise _failure(target, result, stderr, tail)
    if not result.stdout.strip():
        raise NodeError(
            ErrorKind.BAD_OUTPUT,
            f"the node printed nothing (exit 0): {tail or 'no error output'}",
            node=target.name,
        )
    if len(result.stdout) > MAX_PROBE_OUTPUT:  # a transport caps it already; Ansible does not
        raise NodeError(
            ErrorKind.BAD_OUTPUT,
            f"the node printed {len(result.stdout)} bytes, more than a probe document "
            f"({MAX_PROBE_OUTPUT})",
            node=target.name,
        )
    try:
        document: Any = decode(result.stdout, Any, source=target.name)
    except DocumentError as exc:
        raise NodeError(
            ErrorKind.BAD_OUTPUT,
            "the node did not answer with a probe document: "
            f"{printable(repr(result.stdout[:80]))} ({printable(exc.message)})",
            node=target.name,
        ) from None
    if not isinstance(document, dict):
        raise NodeError(
            ErrorKind.BAD_OUTPUT, "the node's answer is not a JSON object", node=target.name
        )
    return document


def _failure(target: Target, result: RunResult, stderr: str, tail: str) -> CommandFailedError:
    """Why a probe that did not exit 0 gave no answer: sudo, Python, or the probe itself."""
    lowered = stderr.lower()
    python = target.python.lower()
    if target.become and any(text in lowered for text in _NO_SUDO):
        kind = ErrorKind.SUDO_FAILED
        message = (
            f"sudo is not installed on the node: {tail}; install it, or add the user to group "
            "kvm and drop become"
        )
    elif target.become and any(text in lowered for text in _SUDO_FAILURES):
        kind = ErrorKind.SUDO_FAILED
        message = (
            f"sudo refused to run the probe without a password: {tail}; allow "
            f"'{target.python}' with NOPASSWD for this user, or add it to group kvm and drop "
            "become"
        )
    elif (
        result.exit_status == 127
        or f"{python}: not found" in lowered
        or f"{python}: command not found" in lowered  # sudo's own words
    ):
        kind = ErrorKind.NO_PYTHON
        message = (
            f"'{target.python}' was not found on the node (exit {result.exit_status}); "
            "install python3 or set ansible_python_interpreter"
        )
    else:
        kind = ErrorKind.PROBE_FAILED
        ended = (
            "ended without an exit status (killed by a signal, or the session was cut)"
            if result.exit_status < 0
            else f"exited with status {result.exit_status}"
        )
        message = f"the probe {ended}: {tail or 'no error output'}"
    return CommandFailedError(
        kind,
        message,
        node=target.name,
        exit_status=None if result.exit_status < 0 else result.exit_status,
        stderr_tail=result.stderr_tail,
    )


def record_answer(
    target: Target,
    result: RunResult,
    *,
    groups: tuple[str, ...] = (),
    source: str | None = None,
) -> tuple[NodeRecord, dict[str, Any] | None]:
    """What a node answered, as its record and (when valid) its probe document as it was sent
    (fields this vlcalc does not know included, for ``--save``); every way the answer can be
    wrong becomes an error record."""
    name = target.name
    try:
        probe = interpret(target, result)
        record = parse_probe(probe, source=source or name, name=name, groups=groups)
    except NodeError as exc:
        return error_node(name, exc.kind, exc.message, groups=groups, source=source), None
    except DocumentError as exc:
        message = f"the probe document is invalid: {printable(str(exc))}"
        return error_node(name, ErrorKind.BAD_OUTPUT, message, groups=groups, source=source), None
    return record, probe
