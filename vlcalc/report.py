"""From node records to answers: the cluster report and the migration check, as data.

Pure code: :func:`build_report` and :func:`build_check` compute, ``*_json`` turn the result into
the documented JSON documents (``vlcalc.report/1``, ``vlcalc.check/1``).  Rendering for people is in
``vlcalc.render``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from fnmatch import fnmatchcase
from typing import Any

from vlcalc.compat import ClusterAnswer, DrainPlan, Verdict, cluster, drain_for, judge
from vlcalc.documents import NodeRecord
from vlcalc.errors import InputError
from vlcalc.model import CHECK_SCHEMA, DIFF_SCHEMA, GROUPS_SCHEMA, REPORT_SCHEMA

__all__ = ["GROUPS_SCHEMA", "ExitCode", "Report", "build_check", "build_report"]
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
    """A cluster answer over ``nodes`` (in input order), the optional ``--require-vl``, and the
    optional ``--target-vl`` drain plan."""

    nodes: tuple[NodeRecord, ...]
    answer: ClusterAnswer
    require_vl: int | None = None
    plan: DrainPlan | None = None
    excluded: tuple[str, ...] = ()

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
        return combined_exit_code(
            [
                ExitCode.OK if self.requirement_met else ExitCode.NOT_MET,
                ExitCode.OK if self.answer.complete else ExitCode.INCOMPLETE,
            ]
        )


def build_report(
    nodes: Sequence[NodeRecord],
    require_vl: int | None = None,
    *,
    target_vl: int | None = None,
    excluded: Sequence[str] = (),
) -> Report:
    pairs = [(node.name, node.vls) for node in nodes]
    plan = drain_for(pairs, target_vl) if target_vl is not None else None
    return Report(tuple(nodes), cluster(pairs), require_vl, plan, tuple(excluded))


def exclude(
    nodes: Sequence[NodeRecord], patterns: Sequence[str]
) -> tuple[list[NodeRecord], list[str]]:
    """What-if: drop the nodes whose name or one of whose groups matches a glob in ``patterns``.
    Returns the remaining nodes and the names dropped; a pattern that matches nothing is an
    error (a typo would otherwise silently change nothing)."""
    kept, dropped = [], []
    used = set()
    for node in nodes:
        hit = [
            p
            for p in patterns
            if fnmatchcase(node.name, p) or any(fnmatchcase(group, p) for group in node.groups)
        ]
        used.update(hit)
        if hit:
            dropped.append(node.name)
        else:
            kept.append(node)
    unused = [p for p in patterns if p not in used]
    if unused:
        raise InputError(f"{unused[0]!r} matches no node or group", source="--exclude")
    return kept, dropped


def profiles(nodes: Sequence[NodeRecord]) -> list[dict[str, Any]]:
    """Nodes grouped by identical KVM VL set, kernel and CPU model, largest group first."""
    groups: dict[tuple[str, int, str | None, str | None], list[str]] = {}
    for node in nodes:
        mask = -1 if node.vls is None else node.vls.mask
        key = (node.status, mask, node.kernel, node.cpu_model)
        groups.setdefault(key, []).append(node.name)
    ordered = sorted(groups.items(), key=lambda item: -len(item[1]))
    return [
        {
            "status": status,
            "vls": None if mask < 0 else VLSet(mask).vls(),
            "kernel": kernel,
            "cpu_model": cpu_model,
            "count": len(names),
            "nodes": names,
        }
        for (status, mask, kernel, cpu_model), names in ordered
    ]


def group_reports(
    nodes: Sequence[NodeRecord],
    require_vl: int | None = None,
    *,
    target_vl: int | None = None,
    excluded: Sequence[str] = (),
) -> list[tuple[str, Report]]:
    """One report per inventory group (a group is often a migration domain), then ``all``."""
    names = sorted({group for node in nodes for group in node.groups} - {"all"})
    members = [[node for node in nodes if name in node.groups] for name in names]
    return [
        (name, build_report(group, require_vl, target_vl=target_vl, excluded=excluded))
        for name, group in [*zip(names, members), ("all", list(nodes))]
    ]


def combined_exit_code(codes: Sequence[ExitCode]) -> ExitCode:
    """Several answers, one exit code: a failed requirement wins, then incompleteness."""
    for code in (ExitCode.NOT_MET, ExitCode.INCOMPLETE):
        if code in codes:
            return code
    return ExitCode.OK


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
        "profiles": profiles(report.nodes),
        "excluded": list(report.excluded),
        "target": None
        if report.plan is None
        else {
            "vl": report.plan.vl,
            "reachable": bool(report.plan.keep),
            "keep": list(report.plan.keep),
            "drain": list(report.plan.drain),
            "unknown": list(report.plan.unknown),
            "vls_after": report.plan.vls_after.vls(),
        },
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
    """``verdict`` is ``accept``, ``reject`` or ``unknown`` (node not probed).

    ``kernel`` is the node's own kernel verdict from an acceptance trial (``check --verify``), or
    ``None`` without one; when it disagrees with vlcalc's model, the kernel's verdict is used.
    """

    node: NodeRecord
    verdict: str
    reason: str
    kernel: str | None = None
    model: str | None = None

    @property
    def disagrees(self) -> bool:
        return self.kernel is not None and self.kernel != self.model


@dataclass(frozen=True)
class CheckResult:
    requested: VLSet
    verdicts: tuple[NodeVerdict, ...]

    def count(self, verdict: str) -> int:
        return sum(1 for item in self.verdicts if item.verdict == verdict)

    def exit_code(self) -> ExitCode:
        return combined_exit_code(
            [
                ExitCode.NOT_MET if self.count("reject") else ExitCode.OK,
                ExitCode.INCOMPLETE if self.count("unknown") else ExitCode.OK,
            ]
        )


def verdict_for(host: VLSet, requested: VLSet) -> Verdict:
    """A guest saved with SVE off needs no VL set at all: it runs on every node.  Anything else
    is the kernel's rule."""
    if not requested:
        return Verdict(True, "SVE off: the guest needs no vector length")
    return judge(host, requested)


def kernel_trial(node: NodeRecord, requested: VLSet) -> str | None:
    """The node kernel's own verdict on ``requested`` from the probe's acceptance trials."""
    wanted = tuple(requested.vls())
    for trial in node.trials:
        if trial.vls == wanted:
            return "accept" if trial.accepted else "reject"
    return None


def build_check(nodes: Sequence[NodeRecord], requested: VLSet) -> CheckResult:
    verdicts = []
    for node in nodes:
        if node.vls is None:
            reason = f"not probed ({node.error_kind}): {node.error_message}"
            verdicts.append(NodeVerdict(node, "unknown", reason))
            continue
        verdict = verdict_for(node.vls, requested)
        model = "accept" if verdict.accepted else "reject"
        # An SVE-off guest needs no trial: KVM is never asked for a VL set.
        kernel = kernel_trial(node, requested) if requested else None
        reason = verdict.reason
        if kernel is not None and kernel != model:
            reason = (
                f"vlcalc's model says {model} but this node's kernel says {kernel} (the kernel "
                f"wins; please report this): {verdict.reason}"
            )
        verdicts.append(NodeVerdict(node, kernel or model, reason, kernel, model))
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
        "disagreements": sum(1 for item in result.verdicts if item.disagrees),
        "nodes": [
            {
                "name": item.node.name,
                "verdict": item.verdict,
                "reason": item.reason,
                "vls": None if item.node.vls is None else item.node.vls.vls(),
                "model": item.model,
                "kernel": item.kernel,
                "disagrees": item.disagrees,
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


# -- drift between two scans -----------------------------------------------------------------------
@dataclass(frozen=True)
class Drift:
    """What changed between an old and a new view of a fleet (``vlcalc diff``)."""

    old: Report
    new: Report
    added: tuple[NodeRecord, ...]
    removed: tuple[NodeRecord, ...]
    changed: tuple[tuple[NodeRecord, NodeRecord], ...]

    @property
    def lost(self) -> VLSet:
        """VLs the cluster set had before and has no more."""
        return VLSet(self.old.answer.vls.mask & ~self.new.answer.vls.mask)

    @property
    def shrank(self) -> bool:
        return bool(self.lost)

    def exit_code(self) -> ExitCode:
        return ExitCode.NOT_MET if self.shrank else ExitCode.OK


def build_diff(old: Sequence[NodeRecord], new: Sequence[NodeRecord]) -> Drift:
    before = {node.name: node for node in old}
    after = {node.name: node for node in new}
    changed = tuple(
        (before[name], node)
        for name, node in after.items()
        if name in before and (before[name].status, before[name].vls) != (node.status, node.vls)
    )
    return Drift(
        build_report(old),
        build_report(new),
        tuple(node for name, node in after.items() if name not in before),
        tuple(node for name, node in before.items() if name not in after),
        changed,
    )


def _vls_or_none(node: NodeRecord) -> list[int] | None:
    return None if node.vls is None else node.vls.vls()


def diff_json(drift: Drift) -> dict[str, Any]:
    return {
        "schema": DIFF_SCHEMA,
        "cluster": {
            "old": drift.old.answer.vls.vls(),
            "new": drift.new.answer.vls.vls(),
            "lost": drift.lost.vls(),
            "gained": VLSet(drift.new.answer.vls.mask & ~drift.old.answer.vls.mask).vls(),
            "shrank": drift.shrank,
            "complete": {"old": drift.old.answer.complete, "new": drift.new.answer.complete},
        },
        "added": [
            {"name": n.name, "status": n.status, "vls": _vls_or_none(n)} for n in drift.added
        ],
        "removed": [
            {"name": n.name, "status": n.status, "vls": _vls_or_none(n)} for n in drift.removed
        ],
        "changed": [
            {
                "name": new.name,
                "old": {"status": old.status, "vls": _vls_or_none(old), "kernel": old.kernel},
                "new": {"status": new.status, "vls": _vls_or_none(new), "kernel": new.kernel},
            }
            for old, new in drift.changed
        ],
    }
