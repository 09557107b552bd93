"""VL sets: the KVM bitmap layout, every input syntax, and the renderings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vlcalc.errors import SpecError
from vlcalc.qemu import libvirt_xml, parse_spec, qemu_cpu
from vlcalc.vl import VQ_MAX, VLSet

vq_sets = st.sets(st.integers(min_value=1, max_value=VQ_MAX), max_size=40)


@pytest.mark.parametrize(
    ("vls", "word0"),
    [
        ([128, 256, 512], 0xB),  # A64FX, domain.md
        ([128, 256, 384, 512], 0xF),
        ([128, 256, 384], 0x7),
        ([128, 256, 512, 1024, 2048], 0x808B),  # seen in the lab
        ([128 * vq for vq in range(1, 17)], 0xFFFF),
    ],
)
def test_word0_matches_kvm_layout(vls: list[int], word0: int) -> None:
    assert VLSet.from_vls(vls).words() == [word0, 0, 0, 0, 0, 0, 0, 0]


def test_high_vqs_land_in_later_words() -> None:
    # vq 65 is bit 0 of word 1; vq 512 is bit 63 of word 7 (KVM_ARM64_SVE_VQ_MAX).
    assert VLSet.from_vqs([65]).words()[1] == 1
    assert VLSet.from_vqs([512]).words()[7] == 1 << 63
    assert VLSet.from_vqs([512]).max_vl == 65536


@given(vq_sets)
def test_words_and_vls_round_trip(vqs: set[int]) -> None:
    vls = VLSet.from_vqs(vqs)
    assert VLSet.from_words(vls.words()) == vls
    assert VLSet.from_vls(vls.vls()) == vls
    assert vls.vqs() == sorted(vqs)
    assert parse_spec(",".join(vls.hex_words())) == vls


@given(st.sets(st.integers(min_value=1, max_value=16)))
def test_qemu_and_libvirt_renderings_parse_back(vqs: set[int]) -> None:
    vls = VLSet.from_vqs(vqs)
    assert parse_spec(qemu_cpu(vls)) == vls
    assert parse_spec("-cpu " + qemu_cpu(vls)) == vls
    assert parse_spec(libvirt_xml(vls)) == vls
    assert parse_spec(str(vls)) == vls


@pytest.mark.parametrize(
    ("text", "vls"),
    [
        ("128,256,512", [128, 256, 512]),
        (" 512, 128 ,256 ", [128, 256, 512]),
        ("128 256", [128, 256]),
        ("0xb", [128, 256, 512]),
        ("0XF", [128, 256, 384, 512]),
        ("0xb,0,0,0,0,0,0,0".replace(",0", ",0x0"), [128, 256, 512]),
        ("0x0,0x1,0x0,0x0,0x0,0x0,0x0,0x0", [65 * 128]),
        ("sve128=on,sve256=on", [128, 256]),  # every length up to the max named: pinned
        ("host,sve=on,sve128=on,sve256=on,sve512=off", [128, 256]),
        ("max,sve128=on,sve256=off,sve384=off,sve512=on", [128, 512]),
        ("sve=off", []),
        ("sve=off,sve128=off", []),
        ("none", []),
        ("host,sve=off", []),
        (
            "<cpu mode='host-passthrough'><feature policy='require' name='sve128'/>"
            "<feature policy='require' name='sve256'/><feature policy='disable' name='sve512'/>"
            "<feature policy='require' name='pmu'/></cpu>",
            [128, 256],
        ),
        (
            "<cpu mode='maximum'><feature policy='require' name='sve128'/>"
            "<feature name='sve256'/><feature policy='optional' name='sve384'/></cpu>",
            [128, 256],
        ),
        ("<domain><cpu><feature policy='disable' name='sve'/></cpu></domain>", []),
    ],
)
def test_parse_spec_syntaxes(text: str, vls: list[int]) -> None:
    assert parse_spec(text).vls() == vls


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty VL set"),
        ("100", "100 is not a vector length"),
        ("128,abc", "'abc' is not a VL in bits"),
        ("0", "0 is not a vector length"),
        (str(128 * 513), "is not a vector length"),
        ("0xb,0x0", "1 word (word 0) or all 8 words"),
        ("0xzz", "not a hexadecimal bitmap word"),
        ("0x10000000000000000", "exceeds 64 bits"),
        ("sve128=maybe", "Parameter 'sve128' expects 'on' or 'off'"),
        ("sve128=ON", "Parameter 'sve128' expects 'on' or 'off'"),  # QEMU is case-sensitive
        ("sve100=on", "Property 'host-arm-cpu.sve100' not found"),
        ("sve4096=on", "Property 'host-arm-cpu.sve4096' not found"),
        ("max,sve-max-vq=4", "Property 'max-arm-cpu.sve-max-vq' not found"),
        ("host,sve128", "Expected key=value format, found sve128."),
        ("cortex-a57,sve=on", "only -cpu host (or max, the same CPU)"),
        ("host", "gives each host its own set"),
        ("sve=on", "gives each host its own set"),
        ("sve256=on", "gives each host its own set"),
        ("sve128=off", "gives each host its own set"),
        ("<cpu><feature", "does not parse"),
        ("<domain/>", "no <cpu> element"),
        ("<cpu><feature policy='require' name='pmu'/></cpu>", "gives each host its own set"),
        ("<cpu mode='custom'><model>a64fx</model></cpu>", "host-passthrough or maximum"),
        ("<cpu><feature policy='sometimes' name='sve128'/></cpu>", "unknown policy"),
        ('<!DOCTYPE x [<!ENTITY a "b">]><cpu/>', "DOCTYPE or ENTITY"),
        ("¹", "'¹' is not a VL in bits"),  # a digit to str.isdigit(), not to int() (fuzz)
        ("9" * 5001, "is not a VL in bits"),
    ],
)
def test_parse_spec_errors_name_the_bad_part(text: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(text, source="--vls")
    assert message in str(caught.value)
    assert str(caught.value).startswith("--vls: ")
    assert "\n" not in str(caught.value)


def test_prefixes_are_what_kvm_can_give() -> None:
    host = VLSet.from_vls([128, 256, 384, 512])
    assert [str(p) for p in host.prefixes()] == ["128,256,384,512", "128,256,384", "128,256", "128"]


def test_renderings() -> None:
    vls = VLSet.from_vls([128, 256])
    assert qemu_cpu(vls) == "host,sve=on,sve128=on,sve256=on"
    assert qemu_cpu(VLSet()) == "host,sve=off"
    assert "<feature policy='require' name='sve256'/>" in libvirt_xml(vls)
    assert "name='sve'" in libvirt_xml(VLSet())
    gap = VLSet.from_vls([128, 256, 512])
    assert qemu_cpu(gap) == "host,sve=on,sve128=on,sve256=on,sve384=off,sve512=on"
    assert "<feature policy='disable' name='sve384'/>" in libvirt_xml(gap)
    assert vls.hex_words() == ["0x3"] + ["0x0"] * 7
    assert str(VLSet()) == "none"
    assert 256 in vls and 384 not in vls and 100 not in vls


def test_out_of_range_values_are_refused() -> None:
    with pytest.raises(ValueError):
        VLSet(1 << VQ_MAX)
    with pytest.raises(ValueError):
        VLSet.from_vls([192])
    with pytest.raises(ValueError):
        VLSet.from_words([0] * 9)
