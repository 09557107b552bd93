"""The kernel's acceptance rule and what it means for a cluster.

Linux ``set_sve_vls()`` (``arch/arm64/kvm/guest.c``, unchanged from 5.2 on) accepts a requested set
S on a host whose KVM offers H iff S is not empty, ``max(S) <= max(H)`` and, for every vq from 1 to
``max(S)``, S and H agree.  A guest can only get a *prefix* of H, so the largest set that every node
of a cluster accepts is the longest common prefix of the nodes' sets, capped at the smallest maximum
— not their intersection.

>>> h1, h2 = VLSet.from_vls([128, 256, 384, 512]), VLSet.from_vls([128, 256, 512])
>>> str(cluster([("a", h1), ("b", h2)]).vls)
'128,256'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from vlcalc.model import LimitKind
from vlcalc.vl import VQ_BITS, VLSet


def accepts(host: VLSet, requested: VLSet) -> bool:
    """Exactly ``set_sve_vls()``: would ``KVM_SET_ONE_REG(KVM_REG_ARM64_SVE_VLS)`` succeed?"""
    top = requested.max_vq
    if top == 0 or top > host.max_vq:
        return False
    return requested.mask == host.mask & VLSet.prefix_mask(top)


@dataclass(frozen=True)
class Verdict:
    """One node's answer to a requested set, with the reason in words."""

    accepted: bool
    reason: str


def judge(host: VLSet, requested: VLSet) -> Verdict:
    """:func:`accepts` with the reason the kernel would have, for humans."""
    if not host:
        return Verdict(False, "this node's KVM offers no SVE; only an SVE-off guest runs here")
    if not requested:
        return Verdict(False, "KVM rejects an empty VL set; start the guest with sve=off instead")
    if requested.max_vq > host.max_vq:
        return Verdict(
            False,
            f"VL {requested.max_vl} is above this node's KVM maximum of {host.max_vl}",
        )
    diff = (requested.mask ^ host.mask) & VLSet.prefix_mask(requested.max_vq)
    if diff:
        vq = (diff & -diff).bit_length()
        vl = vq * VQ_BITS
        if host.mask >> (vq - 1) & 1:
            return Verdict(
                False,
                f"this node has VL {vl}, which the set lacks: KVM cannot hide a VL below the "
                f"maximum ({requested.max_vl})",
            )
        return Verdict(False, f"this node's KVM does not offer VL {vl}")
    return Verdict(True, f"a prefix of this node's set (up to VL {requested.max_vl})")


@dataclass(frozen=True)
class Limit:
    """Why the cluster set is not larger.

    ``kind`` is ``max-vl`` (these nodes' maximum is the cap), ``divergence`` (at ``vl`` the nodes
    in ``have`` offer a VL that those in ``lack`` do not; removing either side lifts the cap),
    ``no-sve`` (these nodes offer no SVE at all) or ``unprobed`` (these nodes' sets are unknown,
    so the answer may be optimistic).  ``nodes`` are the nodes this limit blames: for a
    divergence, the smaller side.
    """

    kind: LimitKind
    vl: int | None
    nodes: tuple[str, ...]
    message: str
    have: tuple[str, ...] = ()
    lack: tuple[str, ...] = ()
    binding: bool = True  # false: applies only once the no-SVE nodes are gone


@dataclass(frozen=True)
class Rung:
    """One candidate set on the capacity ladder and the nodes that accept it."""

    vls: VLSet
    nodes: tuple[str, ...]


@dataclass(frozen=True)
class ClusterAnswer:
    """The result of :func:`cluster`.  ``complete`` is false when some node is unprobed."""

    vls: VLSet
    complete: bool
    limits: tuple[Limit, ...]
    naive_intersection: VLSet
    ladder: tuple[Rung, ...]
    probed: int
    unprobed: tuple[str, ...] = field(default=())

    @property
    def naive_differs(self) -> bool:
        return self.naive_intersection != self.vls


def _names(groups: dict[int, list[str]], masks: Sequence[int]) -> tuple[str, ...]:
    return tuple(name for mask in masks for name in groups[mask])


def cluster(nodes: Sequence[tuple[str, VLSet | None]]) -> ClusterAnswer:
    """The largest set every probed node accepts, the limits, and the ladder.

    ``nodes`` pairs each node name with its KVM set, or ``None`` when the node could not be probed.
    An empty set means the node's KVM offers no SVE.  Work is done per distinct set, so a fleet of
    100,000 nodes with a handful of hardware profiles costs little more than the profiles.
    """
    profiles: dict[int, list[str]] = {}
    unprobed: list[str] = []
    for name, vls in nodes:
        if vls is None:
            unprobed.append(name)
        else:
            profiles.setdefault(vls.mask, []).append(name)
    limits: list[Limit] = []
    answer, intersection, sve_limits = _common_prefix(profiles)
    if 0 in profiles:
        no_sve = tuple(profiles[0])
        alone = f"; the SVE nodes alone could run {answer}" if answer else ""
        limits.append(
            Limit(
                LimitKind.NO_SVE,
                None,
                no_sve,
                f"{_count(no_sve)} {_verb(no_sve, 'offers', 'offer')} no SVE to guests: a VM "
                f"that may run there needs sve=off{alone}",
            )
        )
        limits += [replace(limit, binding=False) for limit in sve_limits]
        answer, intersection = VLSet(), VLSet()
    else:
        limits += sve_limits
    if unprobed:
        limits.append(
            Limit(
                LimitKind.UNPROBED,
                None,
                tuple(unprobed),
                f"{_count(unprobed)} could not be probed: the answer covers only the others and "
                "may be too large",
            )
        )
    return ClusterAnswer(
        vls=answer,
        complete=not unprobed,
        limits=tuple(limits),
        naive_intersection=intersection,
        ladder=tuple(ladder(profiles)),
        probed=sum(len(names) for names in profiles.values()),
        unprobed=tuple(unprobed),
    )


def _common_prefix(profiles: dict[int, list[str]]) -> tuple[VLSet, VLSet, list[Limit]]:
    """Over the nodes that offer SVE: the longest common prefix capped at the smallest maximum,
    the plain intersection, and what limits the prefix."""
    sve_masks = [mask for mask in profiles if mask]
    if not sve_masks:
        return VLSet(), VLSet(), []
    and_mask, or_mask = sve_masks[0], 0
    for mask in sve_masks:
        and_mask &= mask
        or_mask |= mask
    cap_vq = min(mask.bit_length() for mask in sve_masks)
    diff = (and_mask ^ or_mask) & VLSet.prefix_mask(cap_vq)
    if diff:
        vq = (diff & -diff).bit_length()  # the lowest VL where the nodes disagree
        prefix = VLSet(and_mask & VLSet.prefix_mask(vq - 1))
        return prefix, VLSet(and_mask), [_divergence(profiles, sve_masks, vq)]
    prefix = VLSet(and_mask & VLSet.prefix_mask(cap_vq))
    capped = [mask for mask in sve_masks if mask.bit_length() == cap_vq]
    if len(capped) == len(sve_masks):
        return prefix, VLSet(and_mask), []
    blamed = _names(profiles, capped)
    vl = cap_vq * VQ_BITS
    message = f"{_count(blamed)} {_verb(blamed, 'stops', 'stop')} at VL {vl}; the others go higher"
    return prefix, VLSet(and_mask), [Limit(LimitKind.MAX_VL, vl, blamed, message)]


def _divergence(profiles: dict[int, list[str]], sve_masks: list[int], vq: int) -> Limit:
    have = [mask for mask in sve_masks if mask >> (vq - 1) & 1]
    lack = [mask for mask in sve_masks if not mask >> (vq - 1) & 1]
    have_names, lack_names = _names(profiles, have), _names(profiles, lack)
    vl = vq * VQ_BITS
    blamed = have_names if len(have_names) <= len(lack_names) else lack_names
    return Limit(
        LimitKind.DIVERGENCE,
        vl,
        blamed,
        f"VL {vl}: {_count(have_names)} {_verb(have_names, 'offers', 'offer')} it and "
        f"{_count(lack_names)} {_verb(lack_names, 'does', 'do')} not; KVM cannot hide "
        f"single VLs, so every VM set must stop below {vl} (remove either side to lift this)",
        have=have_names,
        lack=lack_names,
    )


def ladder(profiles: dict[int, list[str]]) -> list[Rung]:
    """Every prefix set that at least one node accepts, with its nodes: largest VL first, then the
    set that more nodes accept first.  ``profiles`` maps a set's mask to the nodes that have it."""
    # A node accepts a set exactly when that set is one of its prefixes (accepts(): the set is
    # the node's own, cut at the set's largest VL, which the node has), so each profile adds
    # itself to its prefixes' rungs: linear in the profiles, where testing every candidate
    # against every profile was quadratic (5,000 distinct sets: 33 s).
    accepting: dict[int, list[int]] = {}
    for mask in profiles:
        for prefix in VLSet(mask).prefixes():
            accepting.setdefault(prefix.mask, []).append(mask)
    rungs = [
        Rung(VLSet(candidate), _names(profiles, masks)) for candidate, masks in accepting.items()
    ]
    rungs.sort(key=lambda rung: (-rung.vls.max_vq, -len(rung.nodes), rung.vls.mask))
    return rungs


def _verb(names: Sequence[str], singular: str, plural: str) -> str:
    return singular if len(names) == 1 else plural


def _count(names: Sequence[str]) -> str:
    if len(names) == 1:
        return f"node {names[0]}"
    if len(names) <= 4:
        return "nodes " + ", ".join(names)
    return f"{len(names)} nodes ({', '.join(names[:3])}, ...)"


@dataclass(frozen=True)
class DrainPlan:
    """The fewest nodes to drain (or move to another pool) so that the rest reach VL ``vl``.

    The nodes kept must agree on every VL up to ``vl`` and offer ``vl`` itself; the largest such
    class of nodes is kept.  ``vls_after`` is the cluster set of the kept nodes (empty when no
    node offers ``vl``).  Unprobed nodes are neither kept nor drained: they are ``unknown``.
    """

    vl: int
    keep: tuple[str, ...]
    drain: tuple[str, ...]
    unknown: tuple[str, ...]
    vls_after: VLSet


def drain_for(nodes: Sequence[tuple[str, VLSet | None]], vl: int) -> DrainPlan:
    vq = vl // VQ_BITS
    below = VLSet.prefix_mask(vq)
    classes: dict[int, list[str]] = {}
    lacking: list[str] = []
    unknown: list[str] = []
    for name, vls in nodes:
        if vls is None:
            unknown.append(name)
        elif vls.mask >> (vq - 1) & 1:
            classes.setdefault(vls.mask & below, []).append(name)
        else:
            lacking.append(name)
    best = max(classes.values(), key=len, default=[])
    keep = set(best)
    drain = tuple(name for name, vls in nodes if vls is not None and name not in keep)
    kept_sets = [(name, vls) for name, vls in nodes if name in keep]
    after = cluster(kept_sets).vls if kept_sets else VLSet()
    return DrainPlan(vl, tuple(best), drain, tuple(unknown), after)
