"""Errors of the lab harness.  Each carries the data an operator needs to act on it."""

from __future__ import annotations

from collections.abc import Sequence

from vlcalc.errors import VlcalcError


class LabError(VlcalcError):
    """The lab could not build an image or run a node."""


class CommandError(LabError):
    """A host command (apt-get, dpkg, qemu-system-aarch64) failed.

    ``argv`` is what ran, ``returncode`` its exit status and ``output_tail`` the last lines it
    printed, so the message is enough to reproduce the failure by hand.
    """

    def __init__(self, argv: Sequence[str], returncode: int, output_tail: str):
        self.argv = list(argv)
        self.returncode = returncode
        self.output_tail = output_tail
        super().__init__(
            f"{' '.join(self.argv)} exited with status {returncode}:\n{output_tail}".rstrip()
        )


class NodeBootError(LabError):
    """An emulated node did not come up.  ``console_tail`` is the end of its serial console."""

    def __init__(self, node: str, message: str, console_tail: str):
        self.node = node
        self.message = message
        self.console_tail = console_tail
        super().__init__(f"{node}: {message}\n--- console tail ---\n{console_tail}".rstrip())
