"""QEMU's SVE property resolution under KVM (vlcalc.qemu) against QEMU's documented rules, its
own qtest cases (tests/qtest/arm-cpu-features.c, KVM part) and the kernel's prefix rule."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vlcalc.compat import accepts
from vlcalc.errors import SpecError
from vlcalc.qemu import (
    ARM_MAX_VQ,
    QemuError,
    libvirt_props,
    libvirt_xml,
    parse_cpu_props,
    parse_guest_spec,
    pinned_props,
    pinned_set,
    qemu_cpu,
    resolve_kvm,
)
from vlcalc.vl import VLSet


def vls(*bits: int) -> VLSet:
    return VLSet.from_vls(bits)


A64FX = vls(128, 256, 512)
LAB = vls(128, 256, 384, 512)
GRAVITON3 = vls(128, 256)
NO_SVE = VLSet()

# Hosts as KVM can report them: every power of two up to the maximum (the architecture requires
# it), any other lengths below the maximum, and now and then lengths above QEMU's 2048.
powers = [1, 2, 4, 8, 16]


@st.composite
def hosts(draw: st.DrawFn) -> VLSet:
    if draw(st.integers(0, 9)) == 0:
        return VLSet()
    top = draw(st.sampled_from(powers))
    extra = draw(st.sets(st.integers(1, ARM_MAX_VQ)))
    vqs = {p for p in powers if p <= top} | {vq for vq in extra if vq < top}
    if draw(st.integers(0, 9)) == 0:
        vqs |= draw(st.sets(st.integers(17, 40), min_size=1, max_size=3))
    return VLSet.from_vqs(vqs)


sve_names = [f"sve{vq * 128}" for vq in range(1, ARM_MAX_VQ + 1)]
props_strategy = st.dictionaries(
    st.sampled_from(["sve", *sve_names]), st.sampled_from(["on", "off"]), max_size=8
)
qemu_sets = st.sets(st.integers(1, ARM_MAX_VQ)).map(VLSet.from_vqs)


def reference(props: dict[str, str], host: VLSet) -> VLSet | None:
    """docs/system/arm/cpu-features.rst, KVM rules, restated over sets (None: QEMU refuses)."""
    supported = {vq for vq in host.vqs() if vq <= ARM_MAX_VQ}
    on = {int(k[3:]) // 128 for k, v in props.items() if k != "sve" and v == "on"}
    off = {int(k[3:]) // 128 for k, v in props.items() if k != "sve" and v == "off"}
    if props.get("sve") == "on" and not host:
        return None  # "'sve' feature not supported by KVM on this host"
    sve = props.get("sve", "on" if host else "off") == "on"
    if on:
        top = max(on)
        built = on | {vq for vq in supported if vq < top and vq not in off}
        if not sve or built != {vq for vq in supported if vq <= top}:
            return None
        return VLSet.from_vqs(built)
    if not sve:
        return VLSet()
    first_off = min(off & supported, default=ARM_MAX_VQ + 1)
    built = {vq for vq in supported if vq < first_off}
    return VLSet.from_vqs(built) if built else None


def outcome(props: dict[str, str], host: VLSet) -> VLSet | None:
    try:
        return resolve_kvm(props, host)
    except QemuError:
        return None


# -- the model against the documented rules -----------------------------------------------------
@given(props_strategy, hosts())
def test_resolution_matches_the_documented_rules(props: dict[str, str], host: VLSet) -> None:
    assert outcome(props, host) == reference(props, host)


@given(st.sets(st.sampled_from(sve_names), min_size=1, max_size=6), hosts())
def test_disabling_only_matches_the_documented_rules(names: set[str], host: VLSet) -> None:
    props = {name: "off" for name in sorted(names)}
    assert outcome(props, host) == reference(props, host)


@given(props_strategy, hosts())
def test_qemu_never_builds_a_set_the_kernel_rejects(props: dict[str, str], host: VLSet) -> None:
    built = outcome(props, host)
    if built:
        assert accepts(host, built)


@given(hosts(), st.data())
def test_pinned_prefix_gives_exactly_that_prefix(host: VLSet, data: st.DataObject) -> None:
    prefixes = [p for p in host.prefixes() if p.max_vq <= ARM_MAX_VQ]
    if not prefixes:
        return
    prefix = data.draw(st.sampled_from(prefixes))
    assert resolve_kvm(pinned_props(prefix), host) == prefix
    model, props = parse_cpu_props(qemu_cpu(prefix))
    assert (model, props) == ("host", pinned_props(prefix))
    assert resolve_kvm(libvirt_props(libvirt_xml(prefix))[0], host) == prefix


@given(hosts(), qemu_sets)
def test_pinned_non_prefix_is_refused_by_qemu_and_the_kernel(host: VLSet, wanted: VLSet) -> None:
    if not wanted or wanted in host.prefixes():
        return
    with pytest.raises(QemuError):
        resolve_kvm(pinned_props(wanted), host)
    assert not accepts(host, wanted)


@given(props_strategy, hosts())
def test_order_of_properties_does_not_matter(props: dict[str, str], host: VLSet) -> None:
    items = list(props.items())[:5]
    results = {outcome(dict(order), host) for order in itertools.permutations(items)}
    assert len(results) == 1


@given(props_strategy, hosts())
def test_a_pinned_spec_gives_its_set_or_nothing(props: dict[str, str], host: VLSet) -> None:
    try:
        fixed = pinned_set(props)
    except QemuError:  # refused on every host (sve=off with a length on): QEMU refuses here too
        assert outcome(props, host) is None
        return
    if fixed is not None:
        assert outcome(props, host) in (fixed, None)


@given(qemu_sets)
def test_pinned_props_name_every_length_up_to_the_max(wanted: VLSet) -> None:
    props = pinned_props(wanted)
    if not wanted:
        assert props == {"sve": "off"}
        return
    assert list(props) == ["sve", *sve_names[: wanted.max_vq]]
    assert pinned_set(props) == wanted


# -- QEMU's own KVM test cases and wording -------------------------------------------------------
@pytest.mark.parametrize(
    ("host", "text", "expected"),
    [
        # query-cpu-model-expansion with no properties: the host's set
        (LAB, "host", "128,256,384,512"),
        (LAB, "max", "128,256,384,512"),
        (A64FX, "host,sve=on", "128,256,512"),
        # enabling the host's maximum is fine; disabling it leaves the lengths below
        (LAB, "sve512=on", "128,256,384,512"),
        (LAB, "sve512=off", "128,256,384"),
        # auto-enabled: every host length below the largest explicit one, not only powers of two
        (LAB, "sve256=on", "128,256"),
        (LAB, "sve384=on", "128,256,384"),
        (A64FX, "sve512=on", "128,256,512"),
        # disabling a length the host lacks changes nothing; disabling a host length cuts there
        (A64FX, "sve384=off", "128,256,512"),
        (LAB, "sve384=off", "128,256"),
        (LAB, "sve384=off,sve512=off", "128,256"),
        (LAB, "sve512=off,sve256=off", "128"),  # the smallest disabled host length cuts
        # SVE off
        (LAB, "sve=off", "none"),
        (LAB, "sve=off,sve128=off,sve256=off", "none"),
        (NO_SVE, "host", "none"),
        (NO_SVE, "sve128=off", "none"),
        (NO_SVE, "sve=off", "none"),
        # a repeated property keeps its last value
        (LAB, "sve256=off,sve256=on", "128,256"),
        # properties that are not about SVE are QEMU's business
        (A64FX, "host,pmu=on,sve=on", "128,256,512"),
        # QEMU reads only word 0, up to ARM_MAX_VQ
        (vls(128, 256, 2176), "host", "128,256"),
    ],
)
def test_resolution_examples(host: VLSet, text: str, expected: str) -> None:
    assert str(resolve_kvm(parse_cpu_props(text)[1], host)) == expected


@pytest.mark.parametrize(
    ("host", "text", "error", "hint"),
    [
        (LAB, "sve512=on,sve384=off", "cannot disable sve384", "smaller than 512 bits"),
        (LAB, "sve128=off", "cannot disable sve128", "results in all vector lengths"),
        (A64FX, "sve384=on", "cannot enable sve384", "not support the vector length 384-bits"),
        (GRAVITON3, "sve512=on", "cannot enable sve512", "vector length 512-bits"),
        (GRAVITON3, "sve128=on,sve256=on,sve512=on", "cannot enable sve512", "512-bits"),
        (NO_SVE, "sve=on", "'sve' feature not supported by KVM on this host", None),
        (NO_SVE, "sve128=on", "cannot enable sve128", "SVE not supported by KVM on this host"),
        (LAB, "sve=off,sve128=on", "cannot enable sve128", "Add sve=on to the CPU property"),
        # the unsupported length is found before SVE being off is
        (A64FX, "sve=off,sve384=on", "cannot enable sve384", "384-bits"),
        # QEMU names the largest offending length
        (A64FX, "sve128=on,sve256=off,sve384=on", "cannot enable sve384", None),
    ],
)
def test_refusals_in_qemus_words(host: VLSet, text: str, error: str, hint: str | None) -> None:
    with pytest.raises(QemuError) as caught:
        resolve_kvm(parse_cpu_props(text)[1], host)
    assert caught.value.error == error
    assert hint is None or hint in " ".join(caught.value.hints)
    assert "\n" not in str(caught.value)


# -- parsing ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "model", "props"),
    [
        ("host,sve=on,sve256=on", "host", {"sve": "on", "sve256": "on"}),
        ("-cpu host,sve=on", "host", {"sve": "on"}),
        ("sve128=off", None, {"sve128": "off"}),
        ("max", "max", {}),
        ("host,,sve=on", "host", {"sve": "on"}),  # strtok() skips empty parts
        ("sve256=on,sve256=off", None, {"sve256": "off"}),
        (
            "host,sve128=y,sve256=no,sve=true",
            "host",
            {"sve128": "y", "sve256": "no", "sve": "true"},
        ),
        ("host,pmu=on,kvm-steal-time=off", "host", {"pmu": "on", "kvm-steal-time": "off"}),
    ],
)
def test_parse_cpu_props(text: str, model: str | None, props: dict[str, str]) -> None:
    assert parse_cpu_props(text) == (model, props)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "empty -cpu value"),
        ("host,sve", "Expected key=value format, found sve."),
        ("host,sve4096=on", "Property 'host-arm-cpu.sve4096' not found"),
        ("host,sve0128=on", "Property 'host-arm-cpu.sve0128' not found"),
        ("host,sve-max-vq=4", "Property 'host-arm-cpu.sve-max-vq' not found"),
        ("max,sve-max-vq=4", "Property 'max-arm-cpu.sve-max-vq' not found"),
        ("host, sve128=on", "Property 'host-arm-cpu. sve128' not found"),  # QEMU keeps spaces
        ("host,sve128=On", "Parameter 'sve128' expects 'on' or 'off'"),
        ("host,sve=1", "Parameter 'sve' expects 'on' or 'off'"),
        ("a64fx,sve=on", "only -cpu host (or max, the same CPU)"),
    ],
)
def test_parse_cpu_props_refuses_what_qemu_refuses(text: str, error: str) -> None:
    with pytest.raises(QemuError) as caught:
        parse_cpu_props(text)
    assert error in str(caught.value)


def test_resolve_checks_properties_given_as_a_mapping() -> None:
    with pytest.raises(QemuError, match="sve4096"):
        resolve_kvm({"sve4096": "on"}, LAB)
    with pytest.raises(QemuError, match="expects 'on' or 'off'"):
        resolve_kvm({"sve128": "maybe"}, LAB)


@pytest.mark.parametrize(
    ("text", "fixed"),
    [
        ("host", None),
        ("sve=on", None),
        ("sve256=on", None),
        ("sve512=off", None),
        ("sve128=on,sve256=on", "128,256"),
        ("sve128=on,sve256=off,sve384=off,sve512=on", "128,512"),
        ("sve=off", "none"),
        ("sve=off,sve128=off", "none"),
        ("128,256", "128,256"),
        ("0xb", "128,256,512"),
        ("none", "none"),
    ],
)
def test_which_specs_pin_one_set(text: str, fixed: str | None) -> None:
    spec = parse_guest_spec(text)
    assert (None if spec.fixed is None else str(spec.fixed)) == fixed
    assert spec.host_dependent is (fixed is None)


def test_trial_set_for_verify() -> None:
    assert parse_guest_spec("128,256").trial_set() == vls(128, 256)
    assert parse_guest_spec("none").trial_set() is None
    assert parse_guest_spec("sve128=on,sve512=on").trial_set() == vls(128, 512)
    assert parse_guest_spec("host").trial_set() is None


# -- libvirt ------------------------------------------------------------------------------------
def test_libvirt_features_become_the_properties_libvirt_passes() -> None:
    # libvirt's own test (tests/qemuxmlconfdata/aarch64-features-sve.xml) gives
    # -cpu host,sve512=on,sve384=off,sve256=on,sve128=on,sve=on
    xml = (
        "<cpu mode='host-passthrough'><feature policy='require' name='sve512'/>"
        "<feature policy='disable' name='sve384'/><feature policy='require' name='sve256'/>"
        "<feature policy='require' name='sve128'/><feature policy='require' name='pmu'/></cpu>"
    )
    props, model, notes = libvirt_props(xml)
    assert list(props.items()) == [
        ("sve512", "on"),
        ("sve384", "off"),
        ("sve256", "on"),
        ("sve128", "on"),
        ("sve", "on"),
    ]
    assert (model, notes) == ("host", ())
    forbid = libvirt_props("<cpu mode='maximum'><feature policy='forbid' name='sve'/></cpu>")
    assert forbid[:2] == ({"sve": "off"}, "max")
    optional = libvirt_props("<cpu><feature policy='optional' name='sve256'/></cpu>")
    assert optional[0] == {} and optional[2] == ("no <cpu mode>: read as host-passthrough",)


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        ("<cpu mode='host-model'/>", "host-passthrough or maximum"),
        ("<cpu><feature policy='sometimes' name='sve128'/></cpu>", "unknown policy"),
        ("<cpu><feature policy='require' name='sve4096'/></cpu>", "sve4096' not found"),
        ('<!DOCTYPE x [<!ENTITY a "b">]><cpu/>', "DOCTYPE or ENTITY"),
    ],
)
def test_libvirt_refusals(xml: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        libvirt_props(xml)


# -- settings -----------------------------------------------------------------------------------
def test_pinned_settings() -> None:
    assert qemu_cpu(A64FX) == "host,sve=on,sve128=on,sve256=on,sve384=off,sve512=on"
    assert qemu_cpu(VLSet()) == "host,sve=off"
    assert libvirt_xml(A64FX).splitlines() == [
        "<cpu mode='host-passthrough' check='none'>",
        "  <feature policy='require' name='sve128'/>",
        "  <feature policy='require' name='sve256'/>",
        "  <feature policy='disable' name='sve384'/>",
        "  <feature policy='require' name='sve512'/>",
        "</cpu>",
    ]
    assert "name='sve'" in libvirt_xml(VLSet())
    full = VLSet.from_vqs(range(1, 17))
    assert qemu_cpu(full).endswith(",sve2048=on")
    with pytest.raises(QemuError, match="VL 2176 is above QEMU's largest vector length"):
        qemu_cpu(VLSet.from_vqs(range(1, 18)))
    with pytest.raises(QemuError):
        libvirt_xml(vls(128, 2176))


def test_sve_off_with_a_length_on_pins_nothing() -> None:
    """QEMU refuses sve=off,sve128=on on every host: not "the set {128}" (--try, --vls)."""
    with pytest.raises(QemuError, match="SVE must be enabled to enable vector lengths"):
        pinned_set({"sve": "off", "sve128": "on"})


def test_sve_given_twice_with_different_values_is_refused() -> None:
    """QEMU applies -cpu properties in order and sve=on fails at once on a host without SVE,
    even when a later sve=off undoes it: a dict of last values would call that guest fine."""
    with pytest.raises(QemuError, match=r"sve given twice \(on, then off\)"):
        parse_cpu_props("host,sve=on,sve=off")
    assert parse_cpu_props("host,sve=on,sve=on") == ("host", {"sve": "on"})
