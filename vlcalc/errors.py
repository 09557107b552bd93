"""The one exception root of vlcalc, and its subclasses.

Every error a user can cause is a :class:`VlcalcError`; the CLI turns it into one line on stderr and
an exit code.  Per-node failures during a scan are *not* exceptions: they are values (see
``vlcalc.scan``).
"""

from __future__ import annotations


class VlcalcError(Exception):
    """Root of every error vlcalc raises on purpose."""


class InputError(VlcalcError):
    """Invalid user input: a bad file, a bad document, a bad VL spec.  Exit code 2.

    ``source`` names where the input came from (a file path, ``--vls``, ``<stdin>``) and
    ``field`` the part that is wrong (a JSON path such as ``nodes[3].probe.sve.vls``), if known.
    """

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None):
        self.message = message
        self.source = source
        self.field = field
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ": ".join(part for part in (self.source, self.field) if part)
        return f"{where}: {self.message}" if where else self.message


class SpecError(InputError):
    """A VL set written in a syntax vlcalc cannot read (``--vls``, ``--try``, ``--require-vl``)."""


class DocumentError(InputError):
    """A probe, scan or report document that is not valid JSON or does not match its schema."""


class InventoryError(InputError):
    """An inventory file that cannot be read; ``line`` is 1-based when known."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        field: str | None = None,
        line: int | None = None,
    ):
        self.line = line
        super().__init__(message, source=source, field=field)

    def __str__(self) -> str:
        base = f"{self.source}:{self.line}" if self.source and self.line else self.source
        where = ": ".join(part for part in (base, self.field) if part)
        return f"{where}: {self.message}" if where else self.message


class NodeError(VlcalcError):
    """One node could not be probed.  Raised inside the transport, caught by the scan and stored as
    a value; it never aborts a scan.

    ``kind`` is one of the documented node error kinds (``unreachable``, ``auth-failed``,
    ``host-key-unknown``, ``host-key-changed``, ``timeout``, ``sudo-failed``, ``no-python``,
    ``probe-failed``, ``bad-output``, ``interrupted``, or a kind from the probe document itself).
    """

    def __init__(self, kind: str, message: str, *, node: str | None = None):
        self.kind = kind
        self.message = message
        self.node = node
        super().__init__(f"{node}: {message}" if node else message)
