"""SVE vector-length sets: the KVM bitmap, user syntaxes, and the QEMU/libvirt forms.

A :class:`VLSet` is a set of vector lengths, each a multiple of 128 bits.  Internally it is one
Python integer whose bit ``vq - 1`` is set when VL ``vq * 128`` is in the set: exactly the layout of
``KVM_REG_ARM64_SVE_VLS`` (8 little-endian u64 words, bit ``(vq-1) % 64`` of word ``(vq-1) // 64``),
so set algebra and the kernel's prefix rule are single bit operations.

>>> VLSet.from_vls([128, 256, 512]).words()[0]
11
>>> str(parse_spec("sve128=on,sve256=on"))
'128,256'
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from vlcalc.errors import SpecError

VQ_BITS = 128
VQ_MAX = 512  # KVM_ARM64_SVE_VQ_MAX: the ABI leaves room for vq up to 512 (VL 65536 bits)
QEMU_VQ_MAX = 16  # QEMU (and the architecture today) stop at VL 2048
WORDS = 8
WORD_BITS = 64
_WORD_MASK = (1 << WORD_BITS) - 1


@dataclass(frozen=True, order=False)
class VLSet:
    """An immutable set of SVE vector lengths.  ``mask`` bit ``vq-1`` means VL ``vq*128``.

    Example: ``VLSet.from_vls([128, 256, 384, 512]).mask == 0xF``.
    """

    mask: int = 0

    def __post_init__(self) -> None:
        if self.mask < 0 or self.mask >> VQ_MAX:
            raise ValueError(f"VL mask out of range: {self.mask:#x}")

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_vqs(cls, vqs: Iterable[int]) -> VLSet:
        mask = 0
        for vq in vqs:
            if not 1 <= vq <= VQ_MAX:
                raise ValueError(f"vq {vq} outside 1..{VQ_MAX}")
            mask |= 1 << (vq - 1)
        return cls(mask)

    @classmethod
    def from_vls(cls, vls_bits: Iterable[int]) -> VLSet:
        """From VLs in bits; raises ``ValueError`` for a VL that is not a multiple of 128."""
        vqs = []
        for vl in vls_bits:
            if vl <= 0 or vl % VQ_BITS:
                raise ValueError(f"{vl} is not a positive multiple of {VQ_BITS} bits")
            vqs.append(vl // VQ_BITS)
        return cls.from_vqs(vqs)

    @classmethod
    def from_words(cls, words: Iterable[int]) -> VLSet:
        """From the 8 u64 words of ``KVM_REG_ARM64_SVE_VLS`` (fewer words: the rest are zero)."""
        mask = 0
        for index, word in enumerate(words):
            if index >= WORDS:
                raise ValueError(f"more than {WORDS} bitmap words")
            if not 0 <= word <= _WORD_MASK:
                raise ValueError(f"bitmap word {index} is not a u64: {word:#x}")
            mask |= word << (WORD_BITS * index)
        return cls(mask)

    @classmethod
    def prefix_mask(cls, vq: int) -> int:
        """The mask of every vq from 1 to ``vq`` inclusive."""
        return (1 << vq) - 1

    # -- views ----------------------------------------------------------------------------------
    def vqs(self) -> list[int]:
        return list(_vqs(self.mask))

    def vls(self) -> list[int]:
        """VLs in bits, ascending: ``[128, 256, 512]``."""
        return list(_vls(self.mask))

    def words(self) -> list[int]:
        return [(self.mask >> (WORD_BITS * i)) & _WORD_MASK for i in range(WORDS)]

    def hex_words(self) -> list[str]:
        """The bitmap as the probe document writes it: ``['0xb', '0x0', ...]`` (8 words)."""
        return [format(word, "#x") for word in self.words()]

    @property
    def max_vq(self) -> int:
        return self.mask.bit_length()

    @property
    def max_vl(self) -> int | None:
        return self.mask.bit_length() * VQ_BITS if self.mask else None

    def __bool__(self) -> bool:
        return bool(self.mask)

    def __len__(self) -> int:
        return bin(self.mask).count("1")

    def __contains__(self, vl_bits: object) -> bool:
        if not isinstance(vl_bits, int) or vl_bits <= 0 or vl_bits % VQ_BITS:
            return False
        return bool(self.mask >> (vl_bits // VQ_BITS - 1) & 1)

    def __and__(self, other: VLSet) -> VLSet:
        return VLSet(self.mask & other.mask)

    def __or__(self, other: VLSet) -> VLSet:
        return VLSet(self.mask | other.mask)

    def up_to(self, vq: int) -> VLSet:
        """The members with vq <= ``vq``: a prefix of this set."""
        return VLSet(self.mask & self.prefix_mask(vq))

    def prefixes(self) -> list[VLSet]:
        """Every set KVM can give a guest on a host with this set, largest first."""
        return [self.up_to(vq) for vq in reversed(self.vqs())]

    def __str__(self) -> str:
        return ",".join(str(vl) for vl in self.vls()) or "none"

    # -- renderings -----------------------------------------------------------------------------
    def qemu_cpu(self, model: str = "host") -> str:
        """The QEMU ``-cpu`` value that gives a guest exactly this set under KVM.

        Every VL is named explicitly (``sveN=on``), since QEMU does not migrate the VL set and a
        plain ``-cpu host`` silently takes each host's own set.  Example:
        ``host,sve=on,sve128=on,sve256=on``; the empty set gives ``host,sve=off``.
        """
        if not self.mask:
            return f"{model},sve=off"
        return ",".join([model, "sve=on", *(f"sve{vl}=on" for vl in self.vls())])

    def libvirt_xml(self) -> str:
        """A libvirt ``<cpu>`` element pinning exactly this set (libvirt adds ``sve`` itself)."""
        lines = ["<cpu mode='host-passthrough' check='none'>"]
        if not self.mask:
            lines.append("  <feature policy='disable' name='sve'/>")
        lines.extend(f"  <feature policy='require' name='sve{vl}'/>" for vl in self.vls())
        lines.append("</cpu>")
        return "\n".join(lines)


# A fleet has a handful of distinct sets and many nodes: compute each set's members once.
@lru_cache(maxsize=4096)
def _vqs(mask: int) -> tuple[int, ...]:
    return tuple(bit + 1 for bit in range(mask.bit_length()) if mask >> bit & 1)


@lru_cache(maxsize=4096)
def _vls(mask: int) -> tuple[int, ...]:
    return tuple(vq * VQ_BITS for vq in _vqs(mask))


# -- parsing user input ---------------------------------------------------------------------------
_QEMU_TOKEN = re.compile(r"^(sve(\d+)|sve|sve-max-vq)=(on|off|true|false|\d+)$")
_ON = {"on": True, "true": True, "off": False, "false": False}


def parse_spec(text: str, *, source: str = "--vls") -> VLSet:
    """Parse a VL set in any syntax vlcalc accepts; raise :class:`SpecError` naming the bad part.

    - VL bits: ``128,256,512`` (spaces allowed); ``none`` is the empty set;
    - the KVM bitmap: ``0xb`` (word 0) or all eight words ``0xb,0x0,0x0,0x0,0x0,0x0,0x0,0x0``;
    - QEMU ``-cpu`` properties: ``sve128=on,sve256=on``, optionally after a model name
      (``host,sve=on,...``), ``sve=off``, or ``sve-max-vq=4`` (every VL up to 512);
    - a libvirt ``<cpu>`` element with ``<feature policy='require' name='sveN'/>`` children.
    """
    stripped = text.strip()
    if not stripped:
        raise SpecError("empty VL set: write e.g. 128,256 or none", source=source)
    if stripped.startswith("<"):
        return _parse_libvirt(stripped, source)
    if stripped.lower() in ("none", "off", "sve=off"):
        return VLSet()
    parts = [part.strip() for part in re.split(r"[,\s]+", stripped) if part.strip()]
    if all(part.lower().startswith("0x") for part in parts):
        return _parse_words(parts, source)
    if any("=" in part for part in parts):
        return _parse_qemu(parts, source)
    return _parse_bits(parts, source)


def _parse_bits(parts: list[str], source: str) -> VLSet:
    vls = []
    for part in parts:
        if not part.isdigit():
            raise SpecError(
                f"{part!r} is not a VL in bits (write 128,256 or 0xb or sve128=on)", source=source
            )
        vl = int(part)
        if vl == 0 or vl % VQ_BITS or vl // VQ_BITS > VQ_MAX:
            raise SpecError(
                f"{vl} is not a vector length: VLs are multiples of {VQ_BITS} bits up to "
                f"{VQ_BITS * VQ_MAX}",
                source=source,
            )
        vls.append(vl)
    return VLSet.from_vls(vls)


def _parse_words(parts: list[str], source: str) -> VLSet:
    if len(parts) not in (1, WORDS):
        raise SpecError(
            f"a KVM bitmap is 1 word (word 0) or all {WORDS} words, got {len(parts)}", source=source
        )
    words = []
    for part in parts:
        try:
            words.append(int(part, 16))
        except ValueError:
            raise SpecError(f"{part!r} is not a hexadecimal bitmap word", source=source) from None
    for index, word in enumerate(words):
        if word > _WORD_MASK:
            raise SpecError(f"bitmap word {index} ({parts[index]}) exceeds 64 bits", source=source)
    return VLSet.from_words(words)


def _parse_qemu(parts: list[str], source: str) -> VLSet:
    if "=" not in parts[0]:
        parts = parts[1:]  # a CPU model name such as "host" or "max"
    on: set[int] = set()
    off: set[int] = set()
    sve_enabled: bool | None = None
    for part in parts:
        match = _QEMU_TOKEN.match(part.lower())
        if not match:
            raise SpecError(
                f"{part!r} is not an SVE property (sveN=on|off, sve=on|off, sve-max-vq=N)",
                source=source,
            )
        name, vl_text, value = match.groups()
        if name == "sve-max-vq":
            if not value.isdigit() or not 1 <= int(value) <= QEMU_VQ_MAX:
                raise SpecError(f"{part!r}: sve-max-vq takes 1..{QEMU_VQ_MAX}", source=source)
            on.update(vq * VQ_BITS for vq in range(1, int(value) + 1))
            continue
        if value not in _ON:
            raise SpecError(f"{part!r}: the value must be on or off", source=source)
        if vl_text is None:
            sve_enabled = _ON[value]
            continue
        vl = int(vl_text)
        if vl % VQ_BITS or not 1 <= vl // VQ_BITS <= VQ_MAX:
            raise SpecError(f"{part!r}: {vl} is not a multiple of {VQ_BITS} bits", source=source)
        (on if _ON[value] else off).add(vl)
    both = on & off
    if both:
        raise SpecError(f"sve{min(both)} is both on and off", source=source)
    if sve_enabled is False:
        if on:
            raise SpecError(f"sve=off together with sve{min(on)}=on", source=source)
        return VLSet()
    return VLSet.from_vls(on)


def _parse_libvirt(text: str, source: str) -> VLSet:
    # Entity declarations are how XML bombs work; a <cpu> element never needs them.
    if "<!" in text:
        raise SpecError("libvirt XML with DOCTYPE or ENTITY declarations is refused", source=source)
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as exc:
        raise SpecError(f"libvirt XML does not parse: {exc}", source=source) from None
    cpu = root if root.tag == "cpu" else root.find(".//cpu")
    if cpu is None:
        raise SpecError("libvirt XML has no <cpu> element", source=source)
    on: set[int] = set()
    sve_disabled = False
    for feature in cpu.findall("feature"):
        name = feature.get("name", "")
        policy = feature.get("policy", "require")
        match = re.fullmatch(r"sve(\d*)", name)
        if not match:
            continue
        enabled = policy in ("require", "force")
        if policy not in ("require", "force", "disable", "forbid", "optional"):
            raise SpecError(f"feature {name}: unknown policy {policy!r}", source=source)
        if not match.group(1):
            sve_disabled = not enabled
            continue
        vl = int(match.group(1))
        if vl % VQ_BITS or not 1 <= vl // VQ_BITS <= VQ_MAX:
            raise SpecError(f"feature {name}: not a multiple of {VQ_BITS} bits", source=source)
        if enabled:
            on.add(vl)
    if sve_disabled:
        return VLSet()
    if not on:
        raise SpecError("libvirt <cpu> requires no sveN feature", source=source)
    return VLSet.from_vls(on)
