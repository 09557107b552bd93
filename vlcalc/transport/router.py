"""One transport for a whole inventory: each target goes by its ``connection``."""

from __future__ import annotations

from vlcalc.errors import NodeError
from vlcalc.transport.base import RunResult, Target, Timeouts, Transport


class RoutingTransport:
    """Sends ``connection: local`` targets to ``local`` and everything else to ``ssh``."""

    def __init__(self, ssh: Transport, local: Transport):
        self._by_connection = {"ssh": ssh, "local": local}

    def run(
        self,
        target: Target,
        command: str,
        stdin: bytes,
        *,
        timeouts: Timeouts,
        max_stdout: int,
    ) -> RunResult:
        transport = self._by_connection.get(target.connection)
        if transport is None:
            raise NodeError(
                "unreachable", f"unsupported connection {target.connection!r}", node=target.name
            )
        return transport.run(target, command, stdin, timeouts=timeouts, max_stdout=max_stdout)

    def close(self) -> None:
        for transport in self._by_connection.values():
            transport.close()
