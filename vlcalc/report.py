"""From node records to answers: the cluster report and the migration check, as data.

Pure code: :func:`build_report` and :func:`build_check` compute, ``*_json`` turn the result into
the documented JSON documents (``vlcalc.report/1``, ``vlcalc.check/1``).  Rendering for people is in
``vlcalc.render``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from vlcalc.compat import ClusterAnswer, Verdict, cluster, judge
from vlcalc.documents import CHECK_SCHEMA, REPORT_SCHEMA, STATUS_ERROR, NodeRecord
from vlcalc.vl import VLSet


class ExitCode(IntEnum):
    """vlcalc's exit codes, documented in the README; derived from results in one place each."""

    OK = 0
    NOT_MET = 1  # a requirement is not met, or some node rejects the set
    INVALID_INPUT = 2  # usage error, bad file, bad schema, bad VL syntax
    INCOMPLETE = 4  # some nodes could not be probed, so the answer may be optimistic
    INTERRUPTED = 130  # Ctrl-C: what was collected is still reported


@dataclass(frozen=True)
class Report:
    """A cluster answer over ``nodes`` (in input order), and the optional ``--require-vl``."""

    nodes: tuple[NodeRecord, ...]
    answer: ClusterAnswer
    require_vl: int | None = None

    @property
    def requirement_met(self) -> bool:
        return self.require_vl is None or self.require_vl in self.answer.vls

    def limiting(self) -> dict[str, list[str]]:
        """Node name -> the kinds of limit that name it."""
        blamed: dict[str, list[str]] = {}
        for limit in self.answer.limits:
            for name in limit.nodes:
                blamed.setdefault(name, []).append(limit.kind)
        return blamed

    def exit_code(self) -> ExitCode:
        # A failed requirement wins over incompleteness: more nodes can only shrink the set.
        if not self.requirement_met:
            return ExitCode.NOT_MET
        return ExitCode.OK if self.answer.complete else ExitCode.INCOMPLETE


def build_report(nodes: Sequence[NodeRecord], require_vl: int | None = None) -> Report:
    answer = cluster([(node.name, node.vls) for node in nodes])
    return Report(tuple(nodes), answer, require_vl)


def words_json(vls: VLSet) -> list[str]:
    return vls.hex_words()


def report_json(report: Report) -> dict[str, Any]:
    """The ``vlcalc.report/1`` document (see the README for every field)."""
    answer = report.answer
    blamed = report.limiting()
    return {
        "schema": REPORT_SCHEMA,
        "complete": answer.complete,
        "requirement": None
        if report.require_vl is None
        else {"vl": report.require_vl, "met": report.requirement_met},
        "nodes": [
            {
                "name": node.name,
                "status": node.status,
                "vls": None if node.vls is None else node.vls.vls(),
                "error": None
                if node.error_kind is None
                else {"kind": node.error_kind, "message": node.error_message},
                "groups": list(node.groups),
                "kernel": node.kernel,
                "cpu_model": node.cpu_model,
                "limits": blamed.get(node.name, []),
            }
            for node in report.nodes
        ],
        "cluster": {
            "vls": answer.vls.vls(),
            "max_vl": answer.vls.max_vl,
            "kvm_words": answer.vls.hex_words(),
            "qemu": answer.vls.qemu_cpu(),
            "libvirt": answer.vls.libvirt_xml(),
            "naive_intersection": answer.naive_intersection.vls(),
            "naive_differs": answer.naive_differs,
            "probed": answer.probed,
            "unprobed": len(answer.unprobed),
        },
        "limits": [
            {
                "kind": limit.kind,
                "vl": limit.vl,
                "nodes": list(limit.nodes),
                "message": limit.message,
                "binding": limit.binding,
                **({"have": list(limit.have), "lack": list(limit.lack)} if limit.have else {}),
            }
            for limit in answer.limits
        ],
        "ladder": [
            {
                "vls": rung.vls.vls(),
                "max_vl": rung.vls.max_vl,
                "count": len(rung.nodes),
                "nodes": list(rung.nodes),
            }
            for rung in answer.ladder
        ],
    }


# -- the migration check ---------------------------------------------------------------------------
@dataclass(frozen=True)
class NodeVerdict:
    """``verdict`` is ``accept``, ``reject`` or ``unknown`` (node not probed)."""

    node: NodeRecord
    verdict: str
    reason: str


@dataclass(frozen=True)
class CheckResult:
    requested: VLSet
    verdicts: tuple[NodeVerdict, ...]

    def count(self, verdict: str) -> int:
        return sum(1 for item in self.verdicts if item.verdict == verdict)

    def exit_code(self) -> ExitCode:
        if self.count("reject"):
            return ExitCode.NOT_MET
        return ExitCode.INCOMPLETE if self.count("unknown") else ExitCode.OK


def verdict_for(host: VLSet, requested: VLSet) -> Verdict:
    """A guest saved with SVE off needs no VL set at all: it runs on every node.  Anything else
    is the kernel's rule."""
    if not requested:
        return Verdict(True, "SVE off: the guest needs no vector length")
    return judge(host, requested)


def build_check(nodes: Sequence[NodeRecord], requested: VLSet) -> CheckResult:
    verdicts = []
    for node in nodes:
        if node.vls is None:
            reason = f"not probed ({node.error_kind}): {node.error_message}"
            verdicts.append(NodeVerdict(node, "unknown", reason))
        else:
            verdict = verdict_for(node.vls, requested)
            verdicts.append(
                NodeVerdict(node, "accept" if verdict.accepted else "reject", verdict.reason)
            )
    return CheckResult(requested, tuple(verdicts))


def check_json(result: CheckResult) -> dict[str, Any]:
    requested = result.requested
    return {
        "schema": CHECK_SCHEMA,
        "requested": {
            "vls": requested.vls(),
            "kvm_words": requested.hex_words(),
            "qemu": requested.qemu_cpu(),
        },
        "complete": result.count("unknown") == 0,
        "accepted": result.count("accept"),
        "rejected": result.count("reject"),
        "unknown": result.count("unknown"),
        "nodes": [
            {
                "name": item.node.name,
                "verdict": item.verdict,
                "reason": item.reason,
                "vls": None if item.node.vls is None else item.node.vls.vls(),
            }
            for item in result.verdicts
        ],
    }


def vl_columns(nodes: Sequence[NodeRecord]) -> list[int]:
    """The VLs worth a column in a node x VL matrix: every VL any node has."""
    mask = 0
    for node in nodes:
        if node.vls is not None:
            mask |= node.vls.mask
    return VLSet(mask).vls()


def error_nodes(nodes: Sequence[NodeRecord]) -> list[NodeRecord]:
    return [node for node in nodes if node.status == STATUS_ERROR]
