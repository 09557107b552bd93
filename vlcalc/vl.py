"""SVE vector-length sets: the KVM bitmap and the user syntaxes for one set.

A :class:`VLSet` is a set of vector lengths, each a multiple of 128 bits.  Internally it is one
Python integer whose bit ``vq - 1`` is set when VL ``vq * 128`` is in the set: exactly the layout of
``KVM_REG_ARM64_SVE_VLS`` (8 little-endian u64 words, bit ``(vq-1) % 64`` of word ``(vq-1) // 64``),
so set algebra and the kernel's prefix rule are single bit operations.

>>> VLSet.from_vls([128, 256, 512]).words()[0]
11
>>> str(parse_vls("0xb"))
'128,256,512'

QEMU ``-cpu`` properties and libvirt XML are read in :mod:`vlcalc.qemu`, which knows their rules.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from vlcalc.errors import SpecError

VQ_BITS = 128
VQ_MAX = 512  # KVM_ARM64_SVE_VQ_MAX: the ABI leaves room for vq up to 512 (VL 65536 bits)
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

    # -- renderings (kept here for callers; the rules live in vlcalc.qemu) ----------------------


# A fleet has a handful of distinct sets and many nodes: compute each set's members once.
@lru_cache(maxsize=4096)
def _vqs(mask: int) -> tuple[int, ...]:
    return tuple(bit + 1 for bit in range(mask.bit_length()) if mask >> bit & 1)


@lru_cache(maxsize=4096)
def _vls(mask: int) -> tuple[int, ...]:
    return tuple(vq * VQ_BITS for vq in _vqs(mask))


# -- parsing user input ---------------------------------------------------------------------------
def parse_vls(text: str, *, source: str = "--vls") -> VLSet:
    """One VL set as bits (``128,256``, ``none``) or KVM bitmap words (``0xb``)."""
    stripped = text.strip()
    if not stripped:
        raise SpecError("empty VL set: write e.g. 128,256 or none", source=source)
    if stripped.lower() in ("none", "off"):
        return VLSet()
    parts = [part.strip() for part in re.split(r"[,\s]+", stripped) if part.strip()]
    if all(part.lower().startswith("0x") for part in parts):
        return _parse_words(parts, source)
    return _parse_bits(parts, source)


def _parse_bits(parts: list[str], source: str) -> VLSet:
    vls = []
    for part in parts:
        if not (part.isascii() and part.isdigit() and len(part) <= 6):  # not "¹": int() fails
            raise SpecError(
                f"{part!r} is not a VL in bits (write 128,256 or 0xb or host,sve128=on)",
                source=source,
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
