"""From node records to answers: the cluster report and the migration check, as data.

Pure code: :func:`build_report` and :func:`build_check` compute; :func:`build_view` turns a report
into the one :class:`ReportView` that every output format only formats (the table and Markdown in
``vlcalc.render``, the page in ``vlcalc.html``, the JSON document here in :func:`report_json`):
one headline wording, one completeness label, one grouping threshold, one name-shortening rule.

Node text (names, groups, kernels, CPU models, messages) is untrusted: :func:`clean_nodes` passes
it through :func:`vlcalc.model.printable` once, as the nodes enter the report, so no output of a
report, a check or a diff carries an escape sequence, newline, bidi override or zero-width
character that a node or inventory sent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from itertools import count, repeat
from operator import attrgetter
from typing import Any

from msgspec.structs import replace

from vlcalc.compat import (
    ClusterAnswer,
    DrainPlan,
    Limit,
    Rung,
    cluster,
    drain_for,
    judge,
)
from vlcalc.compat import Verdict as Judgement
from vlcalc.documents import NodeRecord
from vlcalc.errors import InputError
from vlcalc.model import (
    CHECK_SCHEMA,
    DIFF_SCHEMA,
    GROUPS_SCHEMA,
    REPORT_SCHEMA,
    ExitCode,
    Verdict,
    printable,
)
from vlcalc.qemu import ARM_MAX_VQ, GuestSpec, QemuError, libvirt_xml, qemu_cpu
from vlcalc.vl import VLSet

__all__ = [
    "GROUPS_SCHEMA",
    "ExitCode",
    "Report",
    "ReportView",
    "build_check",
    "build_report",
    "build_view",
]


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
        """False too when no node was probed (then the requirement is unknown, exit 4)."""
        return self.require_vl is None or self.require_vl in self.answer.vls

    def limiting(self) -> dict[str, tuple[str, ...]]:
        """Node name -> the kinds of limit that name it (equal tuples are one object, so that
        grouping 100,000 nodes by them hashes a handful of tuples)."""
        blamed: dict[str, tuple[str, ...]] = {}
        shared: dict[tuple[str, ...], tuple[str, ...]] = {}
        for limit in self.answer.limits:
            names = set(limit.nodes)
            if len(names) < len(limit.nodes):  # a name twice: blamed twice, name by name
                for name in limit.nodes:
                    kinds = (*blamed.get(name, ()), limit.kind)
                    blamed[name] = shared.setdefault(kinds, kinds)
                continue
            # Dict and set operations at C speed; only the names some earlier limit blamed
            # too (few: a node is mostly blamed by one limit) are merged one by one.
            earlier = {name: blamed[name] for name in names & blamed.keys()}
            alone = (limit.kind,)
            blamed.update(dict.fromkeys(limit.nodes, shared.setdefault(alone, alone)))
            for name, kinds in earlier.items():
                kinds = (*kinds, limit.kind)
                blamed[name] = shared.setdefault(kinds, kinds)
        return blamed

    def exit_code(self) -> ExitCode:
        # A failed requirement wins over incompleteness: more nodes can only shrink the set of
        # the nodes probed.  With no node probed there is no set, so the requirement is unknown.
        return combined_exit_code(
            [
                ExitCode.OK if self.requirement_met or not self.answer.probed else ExitCode.NOT_MET,
                ExitCode.OK if self.answer.complete else ExitCode.INCOMPLETE,
            ]
        )


def require_nodes(nodes: Sequence[NodeRecord], what: str = "report") -> None:
    """Zero nodes is an input error, never an answer: an empty scan or an ``--exclude`` that
    matched every node would otherwise be a "complete" report that approves anything."""
    if not nodes:
        raise InputError(f"no nodes to {what} (an empty scan, or --exclude matched every node)")


def _clean(text: str | None) -> str | None:
    return None if text is None else printable(text)


def clean_nodes(nodes: Sequence[NodeRecord]) -> tuple[NodeRecord, ...]:
    """The one sanitising path: every text field of every node that an output shows (not the
    ``hostname``, which none does) through :func:`printable`.

    >>> clean_nodes([NodeRecord("a\\x1b[2Jb", "ok", VLSet(1))])[0].name
    'a?[2Jb'
    """
    # C-speed tests over joined text: the names and messages, and the distinct combinations of
    # the fields a fleet has few values of.  Milliseconds for 100,000 nodes, where a Python call
    # per string would cost a tenth of a second.
    few = set(map(attrgetter("error_kind", "kernel", "cpu_model", "groups"), nodes))
    texts = [
        "".join(map(attrgetter("name"), nodes)),
        "".join(filter(None, map(attrgetter("error_message"), nodes))),
        "".join(text for *fields, groups in few for text in (*fields, *groups) if text),
    ]
    if all(printable(text) is text for text in texts):
        return tuple(nodes)
    cleaned = tuple(
        replace(
            node,
            name=printable(node.name),
            groups=tuple(printable(group) for group in node.groups),
            error_kind=_clean(node.error_kind),
            error_message=_clean(node.error_message),
            kernel=_clean(node.kernel),
            cpu_model=_clean(node.cpu_model),
        )
        for node in nodes
    )
    _refuse_merged("node", [node.name for node in nodes])
    _refuse_merged("group", sorted({group for node in nodes for group in node.groups}))
    return cleaned


def shared_hostnames(nodes: Sequence[NodeRecord]) -> str | None:
    """A warning when several nodes answered with the same host name (two inventory names for
    one machine count it twice in the ladder and the profiles), else ``None``.

    >>> a, b = (NodeRecord(n, "ok", VLSet(1), hostname="kvm1") for n in ("a", "b"))
    >>> shared_hostnames([a, b])
    "nodes a, b answered with the same host name 'kvm1': one machine under two names counts twice"
    """
    names = list(filter(None, map(attrgetter("hostname"), nodes)))
    if len(set(names)) == len(names):  # the usual case, at C speed
        return None
    by_host: dict[str, list[str]] = {}
    for node in nodes:
        if node.hostname:
            by_host.setdefault(node.hostname, []).append(node.name)
    shared = [(host, who) for host, who in by_host.items() if len(who) > 1]
    host, who = shared[0]
    more = f" (and {len(shared) - 1} more host names)" if len(shared) > 1 else ""
    return (
        f"nodes {shorten(who)} answered with the same host name {printable(host)!r}{more}: one"
        " machine under two names counts twice"
    )


def _refuse_merged(what: str, names: Iterable[str]) -> None:
    """Two names that differ only in characters shown as ``?`` would become one node or group
    in every output (and in ``diff``'s matching): refuse them."""
    shown: dict[str, str] = {}
    for name in names:
        first = shown.setdefault(printable(name), name)
        if first != name:
            raise InputError(
                f"{what}s {first!a} and {name!a} are both shown as {printable(name)!r}: rename one"
            )


def build_report(
    nodes: Sequence[NodeRecord],
    require_vl: int | None = None,
    *,
    target_vl: int | None = None,
    excluded: Sequence[str] = (),
) -> Report:
    """The cluster answer over ``nodes``; raises :class:`InputError` for zero nodes.

    >>> report = build_report([NodeRecord("a", "ok", VLSet.from_vls([128, 256]))])
    >>> str(report.answer.vls), report.exit_code().name
    ('128,256', 'OK')
    """
    require_nodes(nodes)
    nodes = clean_nodes(nodes)
    pairs = list(zip(map(attrgetter("name"), nodes), map(attrgetter("vls"), nodes)))
    plan = drain_for(pairs, target_vl) if target_vl is not None else None
    dropped = tuple(printable(name) for name in excluded)
    return Report(nodes, cluster(pairs), require_vl, plan, dropped)


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
        raise InputError(
            f"{printable(repr(unused[0]))} matches no node or group", source="--exclude"
        )
    return kept, dropped


def group_reports(
    nodes: Sequence[NodeRecord],
    require_vl: int | None = None,
    *,
    target_vl: int | None = None,
    excluded: Sequence[str] = (),
) -> list[tuple[str, Report]]:
    """One report per inventory group (a group is often a migration domain), then ``all``."""
    require_nodes(nodes)
    nodes = clean_nodes(nodes)
    names = sorted({group for node in nodes for group in node.groups} - {"all"})
    members: dict[str, list[NodeRecord]] = {name: [] for name in names}
    for node in nodes:
        for group in node.groups:
            if group in members:
                members[group].append(node)
    return [
        (name, build_report(group, require_vl, target_vl=target_vl, excluded=excluded))
        for name, group in [*members.items(), ("all", list(nodes))]
    ]


def combined_exit_code(codes: Sequence[ExitCode]) -> ExitCode:
    """Several answers, one exit code: an answer that could not be given at all (2: e.g. a
    group's set has no QEMU syntax) wins, then a failed requirement, then incompleteness."""
    for code in (ExitCode.INVALID_INPUT, ExitCode.NOT_MET, ExitCode.INCOMPLETE):
        if code in codes:
            return code
    return ExitCode.OK


# -- the one view every output format formats ---------------------------------------------------
GROUP_THRESHOLD = 40  # above this many nodes, identical nodes share one matrix row
NAMES_SHOWN = 4  # names listed for a group of nodes before "… (+N more)"
LADDER_SHOWN = 16  # ladder rungs shown for people (the JSON document has every one)
PROFILES_SHOWN = 12  # profile rows shown for people
ERRORS_SHOWN = 100  # per-node error rows shown for people
MATRIX_ROWS_SHOWN = 200  # matrix rows shown for people (a degenerate fleet: a set per node)


def shorten(names: Sequence[str], most: int = NAMES_SHOWN) -> str:
    """The one rule for a list of node names that may be long.

    >>> shorten(["a", "b", "c"], 2)
    'a, b, … (+1 more)'
    """
    shown = ", ".join(names[:most])
    return shown + (f", … (+{len(names) - most} more)" if len(names) > most else "")


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


@dataclass(frozen=True)
class Completeness:
    """How much of the fleet the answer stands on.  ``state``: ``complete`` (every node probed),
    ``partial`` (some not: a set derived from the rest may be too large) or ``none`` (no node
    probed: there is no answer, and no settings are given)."""

    total: int
    probed: int

    @property
    def unprobed(self) -> int:
        return self.total - self.probed

    @property
    def complete(self) -> bool:
        return self.probed == self.total

    @property
    def state(self) -> str:
        return "complete" if self.complete else "partial" if self.probed else "none"

    @property
    def text(self) -> str:
        """E.g. ``5 of 6 nodes probed; 1 not probed: the set may be too large``."""
        if self.complete:
            return f"{self.probed} of {self.total} nodes probed"
        if not self.probed:
            return f"0 of {self.total} nodes probed: the cluster set is unknown"
        return (
            f"{self.probed} of {self.total} nodes probed; {self.unprobed} not probed: "
            "the set may be too large"
        )

    @property
    def caveat(self) -> str | None:
        """The label for anything derived from incomplete data (settings, the set); ``None``
        when the answer is complete."""
        if self.complete:
            return None
        return (
            f"INCOMPLETE: {self.unprobed} of {self.total} nodes not probed; a node not probed "
            "may reject this set"
        )


@dataclass(frozen=True)
class Headline:
    """The answer in one line: ``title`` is the set, ``SVE off`` or ``unknown``."""

    vls: VLSet
    known: bool  # false when no node was probed
    naive_intersection: VLSet | None  # when it differs from the answer (and is therefore wrong)
    require_vl: int | None
    requirement_met: bool

    @property
    def title(self) -> str:
        return str(self.vls) if self.vls else "SVE off" if self.known else "unknown"

    @property
    def detail(self) -> str:
        if not self.known:
            return "no node was probed"
        if self.vls:
            return f"max VL {self.vls.max_vl} bits"
        return "no VL set runs on every node: start guests with sve=off"

    @property
    def naive_text(self) -> str | None:
        if self.naive_intersection is None:
            return None
        return (
            f"The plain intersection would be {self.naive_intersection}, which is wrong: KVM "
            "gives a guest only a prefix of each host's set (it cannot hide single VLs)"
        )

    @property
    def requirement_text(self) -> str | None:
        if self.require_vl is None:
            return None
        if not self.known:
            return f"Required VL {self.require_vl}: unknown (no node was probed)"
        return f"Required VL {self.require_vl}: {'met' if self.requirement_met else 'NOT met'}"


@dataclass(frozen=True)
class Settings:
    """What gives a guest exactly the cluster set on every node, in each tool's syntax.
    ``available`` is false when no node was probed: then nothing may be printed.  ``caveat`` is
    set when the set comes from incomplete data.  ``qemu_cpu`` and ``libvirt`` are ``None`` when
    QEMU cannot name the set (above VL 2048) or nothing may be printed."""

    vls: VLSet
    available: bool
    caveat: str | None
    qemu_cpu: str | None
    libvirt: str | None

    @property
    def qemu(self) -> str | None:
        return None if self.qemu_cpu is None else f"-cpu {self.qemu_cpu}"

    @property
    def kvm_words(self) -> list[str] | None:
        return self.vls.hex_words() if self.available else None

    @property
    def kvm(self) -> str:
        return "KVM_REG_ARM64_SVE_VLS = " + " ".join(self.vls.hex_words())


def settings_for(vls: VLSet, available: bool, caveat: str | None) -> Settings:
    pinned = settings_or_none(vls if available else None)
    return Settings(vls, available, caveat, pinned["qemu"], pinned["libvirt"])


@dataclass(frozen=True)
class MatrixRow:
    """One row of the node x VL matrix: one node, or (above :data:`GROUP_THRESHOLD` nodes) every
    node with the same status, set, limit kinds and error kind.  ``cells`` has one state per
    column: ``in`` (offered, in the cluster set), ``out`` (offered, not usable cluster-wide),
    ``no`` (not offered) or ``err`` (unknown: not probed)."""

    names: tuple[str, ...]
    status: str
    vls: VLSet | None
    cells: tuple[str, ...]
    limits: tuple[str, ...]
    error_kind: str | None
    error_message: str | None  # only on a one-node row
    hardware: str  # shared CPU model and kernel, or e.g. "3 kernels"

    @property
    def label(self) -> str:
        return self.names[0] if len(self.names) == 1 else f"{len(self.names)} nodes"

    @property
    def detail(self) -> str:
        """Limits or the error, in words (the table and Markdown)."""
        if self.error_kind is None:
            return ", ".join(self.limits)
        if self.error_message is None:
            return self.error_kind
        return f"{self.error_kind}: {self.error_message}"


@dataclass(frozen=True)
class Matrix:
    columns: tuple[int, ...]  # every VL any node offers
    in_cluster: frozenset[int]
    grouped: bool
    rows: tuple[MatrixRow, ...]
    total: int
    hidden_rows: int = 0  # rows past MATRIX_ROWS_SHOWN (the smallest groups), and their nodes
    hidden_nodes: int = 0

    @property
    def hidden_text(self) -> str | None:
        if not self.hidden_rows:
            return None
        return (
            f"... and {self.hidden_rows} more rows ({self.hidden_nodes} nodes) of sets fewer nodes"
            " share: every node is in -f json"
        )


@dataclass(frozen=True)
class Profile:
    """Nodes with the same status, KVM set, kernel and CPU model."""

    status: str
    vls: VLSet | None
    kernel: str | None
    cpu_model: str | None
    names: tuple[str, ...]


@dataclass(frozen=True)
class ReportView:
    """Everything any output of a report shows, computed once (see :func:`build_view`)."""

    nodes: tuple[NodeRecord, ...]
    limiting: dict[str, tuple[str, ...]]  # node name -> the kinds of limit that name it
    completeness: Completeness
    headline: Headline
    settings: Settings
    limits: tuple[Limit, ...]
    matrix: Matrix
    ladder: tuple[Rung, ...]  # every rung; people see LADDER_SHOWN
    profiles: tuple[Profile, ...]
    plan: DrainPlan | None
    excluded: tuple[str, ...]
    errors: tuple[NodeRecord, ...]  # the nodes not probed
    exit_code: ExitCode

    @property
    def title(self) -> str:
        return f"Cluster VL set: {self.headline.title}"

    @property
    def profiles_useful(self) -> bool:
        """Profiles say something only when some nodes share one."""
        return len(self.profiles) < len(self.nodes)

    @property
    def target_text(self) -> str | None:
        """The ``--target-vl`` answer in words."""
        plan = self.plan
        if plan is None:
            return None
        if not plan.keep:
            return f"No node offers VL {plan.vl}: no drain reaches it."
        text = (
            f"To reach VL {plan.vl}: keep {len(plan.keep)} nodes (set {plan.vls_after}) and "
            f"drain or move {len(plan.drain)}"
        )
        if plan.drain:
            text += f": {shorten(plan.drain, 12)}."
        else:
            text += " — none, it is reached already."
        if plan.unknown:
            text += f" Not counted, not probed: {shorten(plan.unknown)}."
        return text

    @property
    def excluded_text(self) -> str | None:
        if not self.excluded:
            return None
        return (
            f"What-if: {plural(len(self.excluded), 'node')} left out of this report: "
            f"{shorten(self.excluded, 8)}"
        )


# A node's place in the view: (status, mask, limit kinds, error kind, kernel, CPU model); the
# mask is -1 for an unknown set.  A fleet has a handful of these however many nodes it has.
_Key = tuple[str, int, tuple[str, ...], "str | None", "str | None", "str | None"]


@dataclass(frozen=True)
class _Classes:
    """Every node's index by :data:`_Key`, each list in input order, classes in order of first
    appearance; ``names`` are the node names by index."""

    names: list[str]
    members: dict[_Key, list[int]]

    def merged(
        self, fields: tuple[int, ...]
    ) -> dict[tuple[Any, ...], tuple[list[int], list[_Key]]]:
        """Classes merged on some key fields: their members (in input order) and keys."""
        merged: dict[tuple[Any, ...], tuple[list[int], list[_Key]]] = {}
        for key, members in self.members.items():
            indexes, keys = merged.setdefault(tuple(key[i] for i in fields), ([], []))
            indexes += members
            keys.append(key)
        for indexes, keys in merged.values():
            if len(keys) > 1:
                indexes.sort()  # a few sorted runs: timsort merges them in one pass
        return merged

    def names_of(self, indexes: list[int]) -> tuple[str, ...]:
        return tuple(map(self.names.__getitem__, indexes))


def _classes(nodes: Sequence[NodeRecord], limiting: dict[str, tuple[str, ...]]) -> _Classes:
    """The one pass over every node, at C speed but for one comprehension: key tuples by
    ``map``/``zip``, a number per distinct key, then a stable sort of the indexes by number.

    >>> a, b = NodeRecord("a", "ok", VLSet(1)), NodeRecord("b", "error", None, "timeout", "-")
    >>> list(_classes([a, b, a], {}).members.values())
    [[0, 2], [1]]
    """
    names = list(map(attrgetter("name"), nodes))
    masks = [-1 if vls is None else vls.mask for vls in map(attrgetter("vls"), nodes)]
    keys: list[_Key] = list(
        zip(
            map(attrgetter("status"), nodes),
            masks,
            map(limiting.get, names, repeat(())),
            map(attrgetter("error_kind"), nodes),
            map(attrgetter("kernel"), nodes),
            map(attrgetter("cpu_model"), nodes),
        )
    )
    # Each node's number is the index of the first node with its key: one hashing pass.
    first: dict[_Key, int] = {}
    of_node = list(map(first.setdefault, keys, count()))
    if len(first) <= 1:
        return _Classes(names, {key: list(range(len(keys))) for key in first})
    order = sorted(range(len(of_node)), key=of_node.__getitem__)
    sizes = Counter(of_node)
    members: dict[_Key, list[int]] = {}
    start = 0
    for key, number in first.items():  # in order of first appearance, as `order` is
        members[key] = order[start : start + sizes[number]]
        start += sizes[number]
    return _Classes(names, members)


def _profiles(classes: _Classes) -> tuple[Profile, ...]:
    merged = classes.merged((0, 1, 4, 5))
    ordered = sorted(merged.items(), key=lambda item: -len(item[1][0]))
    return tuple(
        Profile(
            status,
            None if mask < 0 else VLSet(mask),
            kernel,
            cpu_model,
            classes.names_of(indexes),
        )
        for (status, mask, kernel, cpu_model), (indexes, _) in ordered
    )


def profiles(nodes: Sequence[NodeRecord]) -> tuple[Profile, ...]:
    """Nodes grouped by identical status, KVM VL set, kernel and CPU model, largest first."""
    return _profiles(_classes(nodes, {}))


def _common(values: set[str | None], plural_word: str) -> str | None:
    """The members' shared value, or e.g. ``"3 kernels"`` when they differ."""
    if len(values) == 1:
        return next(iter(values))
    return f"{len(values - {None})} {plural_word}"


def _matrix(
    nodes: Sequence[NodeRecord],
    answer: ClusterAnswer,
    limiting: dict[str, tuple[str, ...]],
    classes: _Classes,
) -> Matrix:
    columns_mask = 0
    for key in classes.members:
        columns_mask |= max(key[1], 0)
    columns = tuple(VLSet(columns_mask).vls())
    in_cluster = frozenset(answer.vls.vls())
    grouped = len(nodes) > GROUP_THRESHOLD
    if grouped:
        rows_of = list(classes.merged((0, 1, 2, 3)).values())
    else:
        rows_of = [([index], [_key_of(node, limiting)]) for index, node in enumerate(nodes)]
    hidden: list[tuple[list[int], list[_Key]]] = []
    if len(rows_of) > MATRIX_ROWS_SHOWN:  # show the largest groups, in their order
        by_size = sorted(range(len(rows_of)), key=lambda i: -len(rows_of[i][0]))
        shown = set(by_size[:MATRIX_ROWS_SHOWN])
        hidden = [row for i, row in enumerate(rows_of) if i not in shown]
        rows_of = [row for i, row in enumerate(rows_of) if i in shown]
    rows = []
    for indexes, keys in rows_of:
        first = nodes[indexes[0]]
        vls = first.vls
        cells = tuple(
            "err" if vls is None else "no" if vl not in vls else "in" if vl in in_cluster else "out"
            for vl in columns
        )
        hardware = " · ".join(
            value
            for value in (
                _common({key[5] for key in keys}, "CPU models"),
                _common({key[4] for key in keys}, "kernels"),
            )
            if value is not None
        )
        rows.append(
            MatrixRow(
                names=classes.names_of(indexes),
                status=first.status,
                vls=vls,
                cells=cells,
                limits=keys[0][2],
                error_kind=first.error_kind,
                error_message=first.error_message if len(indexes) == 1 else None,
                hardware=hardware,
            )
        )
    hidden_nodes = sum(len(indexes) for indexes, _ in hidden)
    return Matrix(columns, in_cluster, grouped, tuple(rows), len(nodes), len(hidden), hidden_nodes)


def _key_of(node: NodeRecord, limiting: dict[str, tuple[str, ...]]) -> _Key:
    mask = -1 if node.vls is None else node.vls.mask
    kinds = limiting.get(node.name, ())
    return (node.status, mask, kinds, node.error_kind, node.kernel, node.cpu_model)


def build_view(report: Report) -> ReportView:
    """The one view of a report that the table, Markdown, HTML and JSON renderers format.

    >>> view = build_view(build_report([NodeRecord("a", "error", None, "timeout", "no answer")]))
    >>> view.headline.title, view.completeness.state, view.settings.available
    ('unknown', 'none', False)
    """
    answer = report.answer
    nodes = report.nodes
    limiting = report.limiting()
    classes = _classes(nodes, limiting)
    completeness = Completeness(len(nodes), answer.probed)
    naive = answer.naive_intersection if answer.naive_differs else None
    headline = Headline(
        answer.vls, answer.probed > 0, naive, report.require_vl, report.requirement_met
    )
    return ReportView(
        nodes=nodes,
        limiting=limiting,
        completeness=completeness,
        headline=headline,
        settings=settings_for(answer.vls, answer.probed > 0, completeness.caveat),
        limits=answer.limits,
        matrix=_matrix(nodes, answer, limiting, classes),
        ladder=answer.ladder,
        profiles=_profiles(classes),
        plan=report.plan,
        excluded=report.excluded,
        errors=tuple(node for node in nodes if node.vls is None),
        exit_code=report.exit_code(),
    )


def _vls_list(vls: VLSet | None) -> list[int] | None:
    return None if vls is None else vls.vls()


def report_json(view: ReportView) -> dict[str, Any]:
    """The ``vlcalc.report/1`` document (see the README for every field)."""
    settings = view.settings
    completeness = view.completeness
    blamed = view.limiting
    headline = view.headline
    no_limits: tuple[str, ...] = ()
    vls_lists: dict[int, list[int]] = {}  # a few distinct sets: one list each, shared

    def vls_of(node: NodeRecord) -> list[int] | None:
        if node.vls is None:
            return None
        found = vls_lists.get(node.vls.mask)
        if found is None:
            found = vls_lists[node.vls.mask] = node.vls.vls()
        return found

    return {
        "schema": REPORT_SCHEMA,
        "complete": completeness.complete,
        "completeness": {
            "state": completeness.state,
            "total": completeness.total,
            "probed": completeness.probed,
            "unprobed": completeness.unprobed,
            "caveat": completeness.caveat,
        },
        "requirement": None
        if headline.require_vl is None
        else {
            "vl": headline.require_vl,
            "met": headline.requirement_met if headline.known else None,  # None: unknown
        },
        "nodes": [
            {
                "name": node.name,
                "status": node.status,
                "vls": vls_of(node),
                "error": None
                if node.error_kind is None
                else {"kind": node.error_kind, "message": node.error_message},
                "groups": node.groups,  # encoded as the list it is in JSON
                "kernel": node.kernel,
                "cpu_model": node.cpu_model,
                "limits": blamed.get(node.name, no_limits),
            }
            for node in view.nodes
        ],
        "cluster": {
            "vls": settings.vls.vls(),
            "max_vl": settings.vls.max_vl,
            "kvm_words": settings.kvm_words,
            "qemu": settings.qemu_cpu,
            "libvirt": settings.libvirt,
            "naive_intersection": (headline.naive_intersection or headline.vls).vls(),
            "naive_differs": headline.naive_intersection is not None,
            "probed": completeness.probed,
            "unprobed": completeness.unprobed,
            "known": headline.known,
            "caveat": completeness.caveat,
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
            for limit in view.limits
        ],
        "profiles": [
            {
                "status": profile.status,
                "vls": _vls_list(profile.vls),
                "kernel": profile.kernel,
                "cpu_model": profile.cpu_model,
                "count": len(profile.names),
                "nodes": list(profile.names),
            }
            for profile in view.profiles
        ],
        "excluded": list(view.excluded),
        "target": None
        if view.plan is None
        else {
            "vl": view.plan.vl,
            "reachable": bool(view.plan.keep),
            "keep": list(view.plan.keep),
            "drain": list(view.plan.drain),
            "unknown": list(view.plan.unknown),
            "vls_after": view.plan.vls_after.vls(),
        },
        "ladder": [
            {
                "vls": rung.vls.vls(),
                "max_vl": rung.vls.max_vl,
                "count": len(rung.nodes),
                "nodes": list(rung.nodes),
            }
            for rung in view.ladder
        ],
    }


# -- the migration check ---------------------------------------------------------------------------
@dataclass(frozen=True)
class NodeVerdict:
    """``verdict`` is ``accept``, ``reject`` or ``unknown`` (node not probed).

    ``guest`` is the set a guest started with the spec gets on this node (for QEMU properties,
    QEMU's resolution against this node's set), ``None`` when QEMU refuses to start here or the
    node is unknown.  ``kernel`` is the node's own kernel verdict from an acceptance trial
    (``check --verify``), or ``None`` without one; when it disagrees with vlcalc's model, the
    kernel's verdict is used.
    """

    node: NodeRecord
    verdict: Verdict
    reason: str
    kernel: Verdict | None = None
    model: Verdict | None = None
    guest: VLSet | None = None

    @property
    def disagrees(self) -> bool:
        return self.kernel is not None and self.kernel != self.model


@dataclass(frozen=True)
class CheckResult:
    """Every node's verdict on a guest spec.  ``pin`` is the cluster set over the probed nodes,
    offered when the spec is not migration-safe."""

    spec: GuestSpec
    verdicts: tuple[NodeVerdict, ...]
    pin: VLSet | None = None

    @property
    def requested(self) -> VLSet | None:
        """The one set the spec asks for, ``None`` when it depends on the node."""
        return self.spec.fixed

    def count(self, verdict: Verdict) -> int:
        return sum(1 for item in self.verdicts if item.verdict == verdict)

    def guest_sets(self) -> list[tuple[VLSet, tuple[str, ...]]]:
        """The distinct sets the accepting nodes would give the guest, with their nodes."""
        groups: dict[int, list[str]] = {}
        for item in self.verdicts:
            if item.verdict == Verdict.ACCEPT and item.guest is not None:
                groups.setdefault(item.guest.mask, []).append(item.node.name)
        return [(VLSet(mask), tuple(names)) for mask, names in groups.items()]

    @property
    def migration_safe(self) -> bool:
        return len(self.guest_sets()) <= 1

    def divergence(self) -> str | None:
        """The not-migration-safe finding in words, or ``None``."""
        sets = self.guest_sets()
        if len(sets) <= 1:
            return None
        sides = " vs ".join(f"{_nodes(names)} ({vls})" for vls, names in sets)
        return f"accepted, but the guest gets a different set on {sides}: not migration-safe"

    def exit_code(self) -> ExitCode:
        return combined_exit_code(
            [
                ExitCode.OK
                if self.migration_safe and not self.count(Verdict.REJECT)
                else ExitCode.NOT_MET,
                ExitCode.INCOMPLETE if self.count(Verdict.UNKNOWN) else ExitCode.OK,
            ]
        )


def _nodes(names: Sequence[str]) -> str:
    word = "node" if len(names) == 1 else "nodes"
    shown = ", ".join(names[:4]) + (f", ... (+{len(names) - 4})" if len(names) > 4 else "")
    return f"{word} {shown}"


def verdict_for(host: VLSet, requested: VLSet) -> Judgement:
    """A guest saved with SVE off needs no VL set at all: it runs on every node.  Anything else
    is the kernel's rule."""
    if not requested:
        return Judgement(True, "SVE off: the guest needs no vector length")
    return judge(host, requested)


def kernel_trial(node: NodeRecord, requested: VLSet) -> Verdict | None:
    """The node kernel's own verdict on ``requested`` from the probe's acceptance trials."""
    wanted = tuple(requested.vls())
    for trial in node.trials:
        if trial.vls == wanted:
            return Verdict.ACCEPT if trial.accepted else Verdict.REJECT
    return None


def build_check(nodes: Sequence[NodeRecord], spec: GuestSpec | VLSet) -> CheckResult:
    """Judge ``spec`` on every node: QEMU properties are resolved against each node's own set
    first (:mod:`vlcalc.qemu`), then the kernel's rule judges the set that node would build."""
    require_nodes(nodes, "check")  # zero nodes would approve any set
    if isinstance(spec, VLSet):
        spec = GuestSpec(str(spec), "vls", spec)
    verdicts = []
    for node in clean_nodes(nodes):
        if node.vls is None:
            reason = f"not probed ({node.error_kind}): {node.error_message}"
            verdicts.append(NodeVerdict(node, Verdict.UNKNOWN, reason))
            continue
        try:
            guest = spec.on(node.vls)
        except QemuError as exc:
            reason = f"QEMU refuses to start here: {exc.message}"
            verdicts.append(NodeVerdict(node, Verdict.REJECT, reason, None, Verdict.REJECT))
            continue
        verdict = verdict_for(node.vls, guest)
        model = Verdict.ACCEPT if verdict.accepted else Verdict.REJECT
        # An SVE-off guest needs no trial: KVM is never asked for a VL set.
        kernel = kernel_trial(node, guest) if guest else None
        reason = verdict.reason
        if spec.props is not None:
            reason = f"QEMU builds {guest or 'SVE off'} here; {reason}"
        if kernel is not None and kernel != model:
            reason = (
                f"vlcalc's model says {model} but this node's kernel says {kernel} (the kernel "
                f"wins; please report this): {reason}"
            )
        verdicts.append(NodeVerdict(node, kernel or model, reason, kernel, model, guest))
    result = CheckResult(spec, tuple(verdicts))
    if result.migration_safe:
        return result
    pin = cluster([(node.name, node.vls) for node in nodes if node.vls is not None]).vls
    return CheckResult(spec, result.verdicts, pin)


def settings_or_none(vls: VLSet | None) -> dict[str, str | None]:
    """The pinned QEMU and libvirt settings for ``vls``; ``None`` where they cannot be written
    (no set, or a VL above QEMU's 2048)."""
    if vls is None or vls.max_vq > ARM_MAX_VQ:
        return {"qemu": None, "libvirt": None}
    return {"qemu": qemu_cpu(vls), "libvirt": libvirt_xml(vls)}


def check_json(result: CheckResult) -> dict[str, Any]:
    spec = result.spec
    requested = spec.fixed
    sets = result.guest_sets()
    return {
        "schema": CHECK_SCHEMA,
        "requested": {
            "spec": spec.text,
            "syntax": spec.syntax,
            "props": spec.props,
            "host_dependent": spec.host_dependent,
            "notes": list(spec.notes),
            "vls": None if requested is None else requested.vls(),
            "kvm_words": None if requested is None else requested.hex_words(),
            **settings_or_none(requested),
        },
        "complete": result.count(Verdict.UNKNOWN) == 0,
        "accepted": result.count(Verdict.ACCEPT),
        "rejected": result.count(Verdict.REJECT),
        "unknown": result.count(Verdict.UNKNOWN),
        "disagreements": sum(1 for item in result.verdicts if item.disagrees),
        # Unknown (null) while a node not probed could still give the guest another set.
        "migration_safe": result.migration_safe
        and (None if result.count(Verdict.UNKNOWN) else True),
        "divergence": result.divergence(),
        "guest_sets": [{"vls": vls.vls(), "nodes": list(names)} for vls, names in sets],
        "pin": None
        if result.pin is None
        else {"vls": result.pin.vls(), **settings_or_none(result.pin)},
        "nodes": [
            {
                "name": item.node.name,
                "verdict": item.verdict,
                "reason": item.reason,
                "vls": None if item.node.vls is None else item.node.vls.vls(),
                "guest_vls": None if item.guest is None else item.guest.vls(),
                "model": item.model,
                "kernel": item.kernel,
                "disagrees": item.disagrees,
            }
            for item in result.verdicts
        ],
    }


# -- drift between two scans -----------------------------------------------------------------------
@dataclass(frozen=True)
class Drift:
    """What changed between an old and a new view of a fleet (``vlcalc diff``).

    ``common`` compares like with like: the cluster sets of the nodes probed in both views
    (``common_nodes`` of them), which an unreachable node on either side cannot move.
    """

    old: Report
    new: Report
    added: tuple[NodeRecord, ...]
    removed: tuple[NodeRecord, ...]
    changed: tuple[tuple[NodeRecord, NodeRecord], ...]
    common_old: VLSet
    common_new: VLSet
    common_nodes: int

    @property
    def known(self) -> bool:
        """Both views have a set: a view where no node was probed has none (not "SVE off")."""
        return self.old.answer.probed > 0 and self.new.answer.probed > 0

    @property
    def lost(self) -> VLSet:
        """VLs the cluster set had before and has no more (none when either set is unknown)."""
        if not self.known:
            return VLSet()
        return VLSet(self.old.answer.vls.mask & ~self.new.answer.vls.mask)

    @property
    def gained(self) -> VLSet:
        if not self.known:
            return VLSet()
        return VLSet(self.new.answer.vls.mask & ~self.old.answer.vls.mask)

    @property
    def shrank(self) -> bool:
        return bool(self.lost)

    @property
    def complete(self) -> bool:
        return self.old.answer.complete and self.new.answer.complete

    @property
    def certain_loss(self) -> bool:
        """A loss is certain when the old set was complete and some node was probed now: nodes
        not probed now can only shrink the new set further (a larger fleet's set is a prefix of
        a smaller one's).  With no node probed now there is no new set to have lost anything."""
        return self.shrank and self.old.answer.complete

    def completeness(self) -> tuple[Completeness, Completeness]:
        return (
            Completeness(len(self.old.nodes), self.old.answer.probed),
            Completeness(len(self.new.nodes), self.new.answer.probed),
        )

    def exit_code(self) -> ExitCode:
        """1 for a certain loss; 4 when either side is incomplete (a set from incomplete data
        may be too large, so neither "grew" nor "shrank" is known); else 1 if it shrank."""
        if self.certain_loss:
            return ExitCode.NOT_MET
        if not self.complete:
            return ExitCode.INCOMPLETE
        return ExitCode.NOT_MET if self.shrank else ExitCode.OK


def build_diff(old: Sequence[NodeRecord], new: Sequence[NodeRecord]) -> Drift:
    """Raises :class:`InputError` when either side has no node."""
    old_report, new_report = build_report(old), build_report(new)
    before = {node.name: node for node in old_report.nodes}
    after = {node.name: node for node in new_report.nodes}
    changed = tuple(
        (before[name], node)
        for name, node in after.items()
        if name in before and (before[name].status, before[name].vls) != (node.status, node.vls)
    )
    both = [
        (before[name], node)
        for name, node in after.items()
        if name in before and node.vls is not None and before[name].vls is not None
    ]
    common_old = cluster([(o.name, o.vls) for o, _ in both]).vls if both else VLSet()
    common_new = cluster([(n.name, n.vls) for _, n in both]).vls if both else VLSet()
    return Drift(
        old_report,
        new_report,
        tuple(node for name, node in after.items() if name not in before),
        tuple(node for name, node in before.items() if name not in after),
        changed,
        common_old,
        common_new,
        len(both),
    )


def _vls_or_none(node: NodeRecord) -> list[int] | None:
    return None if node.vls is None else node.vls.vls()


def diff_json(drift: Drift) -> dict[str, Any]:
    old_state, new_state = drift.completeness()
    return {
        "schema": DIFF_SCHEMA,
        "complete": drift.complete,
        "cluster": {
            "old": drift.old.answer.vls.vls() if drift.old.answer.probed else None,
            "new": drift.new.answer.vls.vls() if drift.new.answer.probed else None,
            "lost": drift.lost.vls(),
            "gained": drift.gained.vls(),
            "shrank": drift.shrank,
            "certain": drift.certain_loss or (drift.complete and not drift.shrank),
            "complete": {"old": old_state.complete, "new": new_state.complete},
            "caveat": {"old": old_state.caveat, "new": new_state.caveat},
        },
        "common": {
            "nodes": drift.common_nodes,
            "old": drift.common_old.vls() if drift.common_nodes else None,
            "new": drift.common_new.vls() if drift.common_nodes else None,
            "lost": VLSet(drift.common_old.mask & ~drift.common_new.mask).vls(),
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
