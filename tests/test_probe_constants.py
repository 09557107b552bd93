"""The probe's KVM numbers against the real arm64 kernel uapi headers.

The probe cannot run here (no arm64 KVM), so the check is at compile time: a generated C file
assigns each header macro to an initialised 64-bit global, ``aarch64-linux-gnu-gcc -S`` turns them
into ``.xword`` directives, and the values read back must equal the probe's module-level names.
Needs ``gcc-aarch64-linux-gnu`` and ``linux-libc-dev-arm64-cross`` (``.ci/run`` installs them).
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

import vlcalc.probe.probe as probe

CROSS_GCC = "aarch64-linux-gnu-gcc"

# Probe name -> the C expression that defines it in <linux/kvm.h> / <asm/kvm.h>.
C_EXPRESSIONS = {
    "KVM_API_VERSION": "KVM_API_VERSION",
    "KVM_GET_API_VERSION": "KVM_GET_API_VERSION",
    "KVM_CREATE_VM": "KVM_CREATE_VM",
    "KVM_CHECK_EXTENSION": "KVM_CHECK_EXTENSION",
    "KVM_CREATE_VCPU": "KVM_CREATE_VCPU",
    "KVM_GET_ONE_REG": "KVM_GET_ONE_REG",
    "KVM_SET_ONE_REG": "KVM_SET_ONE_REG",
    "KVM_ARM_VCPU_INIT": "KVM_ARM_VCPU_INIT",
    "KVM_ARM_PREFERRED_TARGET": "KVM_ARM_PREFERRED_TARGET",
    "KVM_ARM_VCPU_FINALIZE": "KVM_ARM_VCPU_FINALIZE",
    "KVM_CAP_ARM_VM_IPA_SIZE": "KVM_CAP_ARM_VM_IPA_SIZE",
    "KVM_CAP_ARM_SVE": "KVM_CAP_ARM_SVE",
    "KVM_ARM_VCPU_SVE": "KVM_ARM_VCPU_SVE",
    "KVM_REG_ARM64_SVE_VLS": "KVM_REG_ARM64_SVE_VLS",
    "KVM_ARM64_SVE_VQ_MAX": "KVM_ARM64_SVE_VQ_MAX",
    "KVM_ARM64_SVE_VLS_WORDS": "KVM_ARM64_SVE_VLS_WORDS",
    "SIZEOF_KVM_VCPU_INIT": "sizeof(struct kvm_vcpu_init)",
    "SIZEOF_KVM_ONE_REG": "sizeof(struct kvm_one_reg)",
    "SIZEOF_SVE_VLS": "KVM_ARM64_SVE_VLS_WORDS * sizeof(__u64)",
}
# Struct layouts the probe packs by hand, with the size the kernel expects.
STRUCT_FORMATS = {
    "KVM_VCPU_INIT_FORMAT": "SIZEOF_KVM_VCPU_INIT",
    "KVM_ONE_REG_FORMAT": "SIZEOF_KVM_ONE_REG",
    "SVE_VLS_FORMAT": "SIZEOF_SVE_VLS",
}


def c_source(expressions: dict[str, str]) -> str:
    """``{"KVM_CAP_ARM_SVE": "KVM_CAP_ARM_SVE"}`` -> a C file with
    ``const unsigned long long vlcalc_KVM_CAP_ARM_SVE = (KVM_CAP_ARM_SVE);``."""
    lines = ["#include <linux/kvm.h>", "#include <asm/kvm.h>", ""]
    lines += [
        f"const unsigned long long vlcalc_{name} = (unsigned long long)({expr});"
        for name, expr in expressions.items()
    ]
    return "\n".join(lines) + "\n"


def parse_globals(assembly: str) -> dict[str, int]:
    """The 64-bit initialised globals in aarch64 gcc ``-S`` output:
    ``"vlcalc_X:\\n\\t.xword\\t44544"`` -> ``{"X": 44544}``."""
    values = {}
    pattern = r"^vlcalc_(\w+):\s*\n\s*\.(?:xword|dword|8byte|quad)\s+(-?(?:0x[0-9a-fA-F]+|\d+))\s*$"
    for match in re.finditer(pattern, assembly, re.MULTILINE):
        values[match.group(1)] = int(match.group(2), 0) % 2**64  # gcc may print it signed
    return values


def header_values(tmp_path: Path, expressions: dict[str, str]) -> dict[str, int]:
    source = tmp_path / "kvm_constants.c"
    source.write_text(c_source(expressions))
    done = subprocess.run(
        [CROSS_GCC, "-S", "-O0", "-o", "-", str(source)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"the arm64 headers do not compile:\n{done.stderr}"
    return parse_globals(done.stdout)


def mismatches(probe_values: dict[str, int], headers: dict[str, int]) -> list[str]:
    """``["KVM_CAP_ARM_SVE: probe 171, headers 170", ...]``; a name the headers lack is one too."""
    problems = []
    for name, value in probe_values.items():
        if name not in headers:
            problems.append(f"{name}: not read from the headers")
        elif headers[name] != value:
            problems.append(f"{name}: probe {value:#x}, headers {headers[name]:#x}")
    return problems


def probe_values() -> dict[str, int]:
    return {name: getattr(probe, name) for name in C_EXPRESSIONS}


needs_cross_gcc = pytest.mark.skipif(
    shutil.which(CROSS_GCC) is None,
    reason=f"{CROSS_GCC} is missing (apt-get install gcc-aarch64-linux-gnu "
    "linux-libc-dev-arm64-cross)",
)


@needs_cross_gcc
def test_constants_match_arm64_headers(tmp_path: Path) -> None:
    headers = header_values(tmp_path, C_EXPRESSIONS)
    assert mismatches(probe_values(), headers) == []


@needs_cross_gcc
def test_a_deliberate_mismatch_is_caught(tmp_path: Path) -> None:
    headers = header_values(tmp_path, C_EXPRESSIONS)
    wrong = dict(probe_values(), KVM_CAP_ARM_SVE=171, KVM_GET_ONE_REG=0x4010AEAC)
    assert mismatches(wrong, headers) == [
        "KVM_GET_ONE_REG: probe 0x4010aeac, headers 0x4010aeab",
        "KVM_CAP_ARM_SVE: probe 0xab, headers 0xaa",
    ]
    assert mismatches({"KVM_NOT_A_THING": 1}, headers) == [
        "KVM_NOT_A_THING: not read from the headers"
    ]


@needs_cross_gcc
def test_an_unknown_macro_fails_to_compile(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="do not compile"):
        header_values(tmp_path, {"X": "KVM_NO_SUCH_MACRO"})


def test_parse_globals() -> None:
    assembly = "vlcalc_A:\n\t.xword\t44544\n\t.global\tvlcalc_B\nvlcalc_B:\n\t.xword\t-1\n"
    assert parse_globals(assembly) == {"A": 44544, "B": 2**64 - 1}


def test_every_kvm_constant_is_checked() -> None:
    """A new KVM number in the probe must be added to C_EXPRESSIONS, so it gets checked."""
    names = {
        name
        for name, value in vars(probe).items()
        if isinstance(value, int) and name.startswith(("KVM_", "SIZEOF_"))
    }
    assert names == set(C_EXPRESSIONS)


@pytest.mark.parametrize(("format_name", "size_name"), sorted(STRUCT_FORMATS.items()))
def test_struct_formats_have_the_kernel_sizes(format_name: str, size_name: str) -> None:
    assert struct.calcsize(getattr(probe, format_name)) == getattr(probe, size_name)


def test_ioctl_sizes_agree_with_structs() -> None:
    """_IOC encodes the argument size in bits 16..29: a second look at the same numbers."""

    def size(request: int) -> int:
        return (request >> 16) & 0x3FFF

    assert size(probe.KVM_ARM_VCPU_INIT) == probe.SIZEOF_KVM_VCPU_INIT
    assert size(probe.KVM_ARM_PREFERRED_TARGET) == probe.SIZEOF_KVM_VCPU_INIT
    assert size(probe.KVM_GET_ONE_REG) == probe.SIZEOF_KVM_ONE_REG
    assert size(probe.KVM_SET_ONE_REG) == probe.SIZEOF_KVM_ONE_REG
    assert size(probe.KVM_ARM_VCPU_FINALIZE) == struct.calcsize("=i")
    # KVM_REG_SIZE_U512: log2(64 bytes) = 6 in bits 52..55 of the register id.
    assert (probe.KVM_REG_ARM64_SVE_VLS >> 52) & 0xF == 6
    assert probe.SIZEOF_SVE_VLS == 8 * probe.KVM_ARM64_SVE_VLS_WORDS
