"""The kernel's acceptance rule and the cluster answer, by table and by property."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlcalc.compat import accepts, cluster, judge
from vlcalc.vl import VLSet

from fleet_fixtures import HARDWARE


def S(*vls: int) -> VLSet:
    return VLSet.from_vls(vls)


def kernel_rule(host: VLSet, req: VLSet) -> bool:
    """set_sve_vls() transcribed loop by loop, as an independent oracle for accepts()."""
    max_vq = 0
    for vq in range(1, 513):
        if req.mask >> (vq - 1) & 1:
            max_vq = vq
    if max_vq > host.max_vq:
        return False
    for vq in range(1, max_vq + 1):
        if (req.mask >> (vq - 1) & 1) != (host.mask >> (vq - 1) & 1):
            return False
    return max_vq >= 1


HOST = S(128, 256, 384, 512)


@pytest.mark.parametrize(
    ("requested", "accepted"),
    [  # seen on the emulated nodes (domain.md)
        (S(128), True),
        (S(128, 256), True),
        (S(128, 256, 384), True),
        (S(128, 256, 384, 512), True),
        (S(256, 384, 512), False),
        (S(512), False),
        (S(128, 256, 512), False),
        (S(128, 256, 384, 512, 640), False),
        (VLSet(), False),
    ],
)
def test_accepts_matches_the_kernel_as_seen(requested: VLSet, accepted: bool) -> None:
    assert accepts(HOST, requested) is accepted
    assert judge(HOST, requested).accepted is accepted


masks = st.integers(min_value=0, max_value=(1 << 24) - 1).map(VLSet)


@given(masks, masks)
def test_accepts_equals_transcribed_kernel_loop(host: VLSet, req: VLSet) -> None:
    assert accepts(host, req) == kernel_rule(host, req) == judge(host, req).accepted


def test_judge_reasons() -> None:
    assert "above this node's KVM maximum" in judge(S(128, 256), S(128, 256, 384, 512)).reason
    assert "has VL 384, which the set lacks" in judge(HOST, S(128, 256, 512)).reason
    assert "does not offer VL 384" in judge(S(128, 256, 512), S(128, 256, 384)).reason
    assert "offers no SVE" in judge(VLSet(), S(128)).reason
    assert "sve=off" in judge(HOST, VLSet()).reason


# -- the cluster ----------------------------------------------------------------------------------
sve_hosts = st.integers(min_value=1, max_value=(1 << 20) - 1).map(VLSet)
fleets = st.lists(st.tuples(st.sampled_from("abcdefgh"), sve_hosts), min_size=1, max_size=8)


@settings(max_examples=300)
@given(fleets)
def test_cluster_set_is_accepted_everywhere_and_maximal(fleet: list[tuple[str, VLSet]]) -> None:
    answer = cluster(fleet)
    candidates = {p for _, host in fleet for p in host.prefixes()}
    everywhere = [c for c in candidates if all(accepts(host, c) for _, host in fleet)]
    if answer.vls:
        assert all(accepts(host, answer.vls) for _, host in fleet)
    # No larger candidate is accepted by every node, and the answer is the largest one.
    assert all(c.max_vq <= answer.vls.max_vq for c in everywhere)
    assert (max(everywhere, key=lambda c: c.max_vq) if everywhere else VLSet()) == answer.vls
    assert answer.complete


@settings(max_examples=200)
@given(fleets)
def test_ladder_lists_exactly_who_accepts_each_prefix(fleet: list[tuple[str, VLSet]]) -> None:
    named = [(f"{n}{i}", host) for i, (n, host) in enumerate(fleet)]
    answer = cluster(named)
    expected = {p for _, host in named for p in host.prefixes()}
    assert {rung.vls for rung in answer.ladder} == expected
    for rung in answer.ladder:
        assert set(rung.nodes) == {n for n, host in named if accepts(host, rung.vls)}
    assert [r.vls.max_vq for r in answer.ladder] == sorted(
        (r.vls.max_vq for r in answer.ladder), reverse=True
    )


def hw(kind: str) -> VLSet:
    return VLSet.from_vls(HARDWARE[kind][0])


@pytest.mark.parametrize(
    ("kinds", "expected", "naive"),
    [
        (["a64fx", "graviton3"], "128,256", "128,256"),
        (["a64fx", "graviton4"], "128", "128"),
        (["a64fx", "vl384"], "128,256", "128,256,512"),
        (["graviton3", "grace", "cobalt100"], "128", "128"),
        (["a64fx", "a64fx"], "128,256,512", "128,256,512"),
        (["a64fx", "altra"], "none", "none"),
    ],
)
def test_real_hardware_fixtures(kinds: list[str], expected: str, naive: str) -> None:
    answer = cluster([(f"{k}-{i}", hw(k)) for i, k in enumerate(kinds)])
    assert str(answer.vls) == expected
    assert str(answer.naive_intersection) == naive
    assert answer.naive_differs is (expected != naive)


def test_divergence_names_both_sides_and_blames_the_smaller() -> None:
    answer = cluster([("a1", hw("a64fx")), ("a2", hw("a64fx")), ("n1", hw("vl384"))])
    (limit,) = answer.limits
    assert (limit.kind, limit.vl) == ("divergence", 384)
    assert limit.have == ("n1",) and limit.lack == ("a1", "a2")
    assert limit.nodes == ("n1",)


def test_max_vl_limit_names_the_capping_nodes_only_when_others_go_higher() -> None:
    answer = cluster([("a", hw("a64fx")), ("g", hw("graviton3")), ("g4", hw("graviton4"))])
    (limit,) = answer.limits
    assert (limit.kind, limit.vl, limit.nodes) == ("max-vl", 128, ("g4",))
    assert cluster([("a", hw("a64fx")), ("b", hw("a64fx"))]).limits == ()


def test_no_sve_forces_off_and_tells_what_the_rest_could_run() -> None:
    answer = cluster([("alt", VLSet()), ("a", hw("a64fx")), ("g", hw("graviton3"))])
    assert not answer.vls
    kinds = [(limit.kind, limit.binding) for limit in answer.limits]
    assert kinds == [("no-sve", True), ("max-vl", False)]
    assert "SVE nodes alone could run 128,256" in answer.limits[0].message


def test_unprobed_nodes_make_the_answer_incomplete() -> None:
    answer = cluster([("a", hw("a64fx")), ("x", None)])
    assert str(answer.vls) == "128,256,512"
    assert not answer.complete
    assert answer.limits[-1].kind == "unprobed" and answer.limits[-1].nodes == ("x",)
    nothing = cluster([("x", None)])
    assert not nothing.vls and nothing.probed == 0


def test_divergence_at_128_leaves_nothing() -> None:
    # Architecturally impossible (every SVE CPU has 128), but documents can say anything.
    answer = cluster([("a", S(128, 256)), ("b", S(256))])
    assert not answer.vls
    assert answer.limits[0].kind == "divergence" and answer.limits[0].vl == 128


def test_large_fleet_is_computed_per_profile() -> None:
    fleet = [(f"n{i}", hw("a64fx") if i % 3 else hw("vl384")) for i in range(30000)]
    answer = cluster(fleet)
    assert str(answer.vls) == "128,256"
    assert answer.probed == 30000
    assert len(answer.ladder) == 5
