"""QEMU's SVE properties under KVM: which VL set a guest really gets on a given host, and the
settings that pin one set on every host.

Pure code.  :func:`resolve_kvm` is QEMU's ``arm_cpu_sve_finalize()`` (``target/arm/cpu64.c``,
the same logic from QEMU 7.1 to 10.x) for ``-accel kvm -cpu host`` (``-cpu max`` is the same CPU
under KVM), with the host's ``KVM_REG_ARM64_SVE_VLS`` as QEMU's ``kvm_arm_sve_get_vls()`` reads
it.  The rules, from ``docs/system/arm/cpu-features.rst``:

- no ``sveN`` property: every VL the host offers (``-cpu host`` is host-dependent);
- some ``sveN=on``: those, plus every host VL below the largest one that was not explicitly
  turned off (KVM cannot hide a VL below the maximum);
- only ``sveN=off``: the host's VLs below the smallest host VL that was turned off;
- then the set must be a prefix of the host's set, or QEMU refuses to start;
- ``sve=off`` with no ``sveN=on`` is SVE off; ``sve-max-vq`` exists only for TCG.

>>> host = VLSet.from_vls([128, 256, 512])
>>> str(resolve_kvm({"sve256": "on"}, host))
'128,256'
>>> str(resolve_kvm({}, host))
'128,256,512'
>>> qemu_cpu(VLSet.from_vls([128, 256]))
'host,sve=on,sve128=on,sve256=on'
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping
from dataclasses import dataclass, field

from vlcalc.errors import SpecError
from vlcalc.vl import VQ_BITS, VLSet, parse_vls

ARM_MAX_VQ = 16  # QEMU's ARM_MAX_VQ: properties sve128 ... sve2048, nothing above
QEMU_MAX_VL = ARM_MAX_VQ * VQ_BITS
_VQ_MASK = (1 << ARM_MAX_VQ) - 1
SVE_PROPERTIES = ("sve", *(f"sve{vq * VQ_BITS}" for vq in range(1, ARM_MAX_VQ + 1)))

# qapi_bool_parse(): what QEMU's -cpu option parser takes for a bool property (case-sensitive).
_TRUE = frozenset({"on", "yes", "true", "y"})
_FALSE = frozenset({"off", "no", "false", "n"})
# Under KVM these two models are the same CPU (QEMU 7.1 on: "-cpu max is identical to -cpu host").
KVM_MODELS = ("host", "max")


class QemuError(SpecError):
    """QEMU refuses these ``-cpu`` properties (on this host, or on any host).

    ``error`` is QEMU's own error line (what ``query-cpu-model-expansion`` returns as ``desc``),
    ``hints`` the lines QEMU prints after it on the command line; ``message`` joins them into one
    line.  Example: ``QemuError("cannot enable sve512", "This CPU does not support the vector
    length 512-bits.")``.
    """

    def __init__(
        self, error: str, *hints: str, source: str | None = None, field: str | None = None
    ):
        self.error = error
        self.hints = hints
        message = error + (": " + " ".join(hints) if hints else "")
        super().__init__(message, source=source, field=field)


def parse_cpu_props(text: str) -> tuple[str | None, dict[str, str]]:
    """Split a QEMU ``-cpu`` value into the model (``None`` when the text starts with a property)
    and its properties, in order; a repeated property keeps its last value, as in QEMU.

    A leading ``-cpu`` is allowed, so ``vlcalc report -f qemu`` output pastes back.  Raises
    :class:`QemuError` for what QEMU refuses on every host: a part without ``=``, a model other
    than ``host``/``max``, an SVE property QEMU does not have (``sve4096``, ``sve-max-vq`` under
    KVM) or a value that is not a bool.  Properties that are not about SVE (``pmu=on``) are kept
    and left to QEMU.

    >>> parse_cpu_props("host,sve=on,sve256=on")
    ('host', {'sve': 'on', 'sve256': 'on'})
    >>> parse_cpu_props("sve128=off")
    (None, {'sve128': 'off'})
    """
    stripped = text.strip()
    if stripped.startswith("-cpu"):
        stripped = stripped[len("-cpu") :].strip()
    if not stripped:
        raise QemuError("empty -cpu value: write e.g. host,sve=on,sve128=on")
    # QEMU splits with strtok(): empty parts ("host,,sve=on") are skipped, spaces are kept.
    parts = [part for part in stripped.split(",") if part]
    model: str | None = None
    if parts and "=" not in parts[0]:
        model = parts.pop(0)
        if model not in KVM_MODELS:
            raise QemuError(
                f"CPU model {model!r}: under KVM only -cpu host (or max, the same CPU) takes "
                "SVE properties"
            )
    props: dict[str, str] = {}
    for part in parts:
        name, sep, value = part.partition("=")
        if not sep:
            raise QemuError(f"Expected key=value format, found {part}.")
        if name == "sve" and name in props and props[name] != value:
            # QEMU applies properties in order, and sve=on fails at once on a host without
            # SVE even when a later sve=off would undo it: one value, or no guessing.
            raise QemuError(f"sve given twice ({props[name]}, then {value}): give it once")
        props[name] = value
    check_props(props, model)
    return model, props


def check_props(props: Mapping[str, str], model: str | None = None) -> None:
    """Raise :class:`QemuError` for what QEMU refuses whatever the host: an SVE property that
    ``-cpu host`` does not have under KVM, or a bool property whose value QEMU cannot read."""
    type_name = f"{model or 'host'}-arm-cpu"
    for name, value in props.items():
        if name == "sve-max-vq":
            raise QemuError(
                f"Property '{type_name}.sve-max-vq' not found",
                "Under KVM, -cpu host and max have no sve-max-vq (it is TCG only); name the "
                "lengths with sveN=on|off.",
            )
        # No QEMU property has an empty name or spaces: "host, sve128=on" is refused.
        bare = name.strip()
        if not bare or bare != name or (name.startswith("sve") and name not in SVE_PROPERTIES):
            raise QemuError(
                f"Property '{type_name}.{name}' not found",
                f"QEMU's SVE lengths are sve128 ... sve{QEMU_MAX_VL} in steps of {VQ_BITS}.",
            )
        if name in SVE_PROPERTIES and value not in _TRUE | _FALSE:
            raise QemuError(f"Parameter '{name}' expects 'on' or 'off'")


def _is_on(value: str) -> bool:
    return value in _TRUE


def resolve_kvm(props: Mapping[str, str], host: VLSet) -> VLSet:
    """The VL set QEMU (``-accel kvm -cpu host``) gives a vcpu on a host whose KVM offers
    ``host`` (an empty set: KVM offers no SVE), for these ``-cpu`` properties.  An empty result
    is SVE off.  Raises :class:`QemuError` with QEMU's wording when QEMU refuses to start.

    >>> host = VLSet.from_vls([128, 256, 384, 512])
    >>> str(resolve_kvm({"sve384": "off"}, host))
    '128,256'
    >>> resolve_kvm({"sve128": "on", "sve512": "on", "sve384": "off"}, host)
    Traceback (most recent call last):
    ...
    vlcalc.qemu.QemuError: cannot disable sve384: The KVM host requires all supported vector \
lengths smaller than 512 bits to also be enabled.
    """
    check_props(props)
    kvm_sve = bool(host)  # KVM_CAP_ARM_SVE
    # kvm_arm_sve_get_vls(): word 0 only, and nothing above ARM_MAX_VQ.
    supported = host.mask & _VQ_MASK
    sve = kvm_sve  # -cpu host starts from the host's ID registers
    vq_map = vq_init = 0
    for name, value in props.items():
        if name == "sve":
            # cpu_arm_set_sve(): refused at once, before any other check.
            if _is_on(value) and not kvm_sve:
                raise QemuError("'sve' feature not supported by KVM on this host")
            sve = _is_on(value)
        elif name in SVE_PROPERTIES:
            bit = 1 << (int(name[3:]) // VQ_BITS - 1)
            vq_map = vq_map | bit if _is_on(value) else vq_map & ~bit
            vq_init |= bit
    return VLSet(_finalize(sve, vq_map, vq_init, supported))


def _finalize(sve: bool, vq_map: int, vq_init: int, supported: int) -> int:
    """``arm_cpu_sve_finalize()`` under KVM, without sve-max-vq (``-cpu host`` has none)."""
    if vq_map:
        max_vq = vq_map.bit_length()
        mask = (1 << max_vq) - 1
        # Under KVM every supported length below the maximum is on unless explicitly off.
        vq_map |= supported & ~vq_init & mask
    else:
        if not sve:
            return 0
        # Disabling a supported length disables all larger ones.
        disabled = vq_init & supported
        vq = (disabled & -disabled).bit_length() if disabled else 33  # ctz32(0) + 1
        max_vq = vq - 1 if vq <= ARM_MAX_VQ else ARM_MAX_VQ
        mask = (1 << max_vq) - 1
        vq_map = supported & ~vq_init & mask
        if not vq_map:
            raise QemuError(
                f"cannot disable sve{vq * VQ_BITS}",
                f"Disabling sve{vq * VQ_BITS} results in all vector lengths being disabled.",
                "With SVE enabled, at least one vector length must be enabled.",
            )
        max_vq = vq_map.bit_length()
        mask = (1 << max_vq) - 1
    vq_map &= mask
    wrong = vq_map ^ (supported & mask)
    if wrong:
        vq = wrong.bit_length()  # QEMU names the largest offending length
        vl = vq * VQ_BITS
        if vq_map >> (vq - 1) & 1:
            hint = (
                f"This CPU does not support the vector length {vl}-bits."
                if supported
                else "SVE not supported by KVM on this host"
            )
            raise QemuError(f"cannot enable sve{vl}", hint)
        raise QemuError(
            f"cannot disable sve{vl}",
            f"The KVM host requires all supported vector lengths smaller than "
            f"{max_vq * VQ_BITS} bits to also be enabled.",
        )
    if not sve:
        raise QemuError(
            f"cannot enable sve{max_vq * VQ_BITS}",
            "SVE must be enabled to enable vector lengths.",
            "Add sve=on to the CPU property list.",
        )
    return vq_map


# -- pinned settings --------------------------------------------------------------------------
def _expressible(vls: VLSet) -> None:
    if vls.max_vq > ARM_MAX_VQ:
        raise QemuError(
            f"VL {vls.max_vl} is above QEMU's largest vector length ({QEMU_MAX_VL} bits): "
            "QEMU and libvirt cannot express this set; use the kvm format"
        )


def pinned_props(vls: VLSet) -> dict[str, str]:
    """The ``-cpu`` properties that give a guest exactly ``vls`` on any host that accepts it
    and make QEMU refuse to start on any other: ``sve=on`` and ``sveN=on`` or ``sveN=off`` for
    every VL up to the maximum (QEMU's own advice for migration).  The empty set is
    ``sve=off``.  Raises :class:`QemuError` for a VL above 2048.

    >>> pinned_props(VLSet.from_vls([128, 256, 512]))
    {'sve': 'on', 'sve128': 'on', 'sve256': 'on', 'sve384': 'off', 'sve512': 'on'}
    """
    _expressible(vls)
    if not vls:
        return {"sve": "off"}
    props = {"sve": "on"}
    for vq in range(1, vls.max_vq + 1):
        props[f"sve{vq * VQ_BITS}"] = "on" if vls.mask >> (vq - 1) & 1 else "off"
    return props


def qemu_cpu(vls: VLSet, model: str = "host") -> str:
    """The ``-cpu`` value pinning ``vls``: ``host,sve=on,sve128=on,sve256=on,sve384=off,...``.

    >>> qemu_cpu(VLSet())
    'host,sve=off'
    """
    return ",".join([model, *(f"{name}={value}" for name, value in pinned_props(vls).items())])


def libvirt_xml(vls: VLSet) -> str:
    """A libvirt ``<cpu>`` element pinning ``vls``: ``policy='require'`` or ``'disable'`` for
    every ``sveN`` up to the maximum (libvirt passes them to QEMU as ``sveN=on|off`` and adds
    ``sve=on`` itself); the empty set disables ``sve``."""
    lines = ["<cpu mode='host-passthrough' check='none'>"]
    for name, value in pinned_props(vls).items():
        if name == "sve" and value == "on":
            continue
        policy = "require" if value == "on" else "disable"
        lines.append(f"  <feature policy='{policy}' name='{name}'/>")
    lines.append("</cpu>")
    return "\n".join(lines)


def pinned_set(props: Mapping[str, str]) -> VLSet | None:
    """The set these properties give on *every* host that accepts them, or ``None`` when the set
    depends on the host.  That is the case unless SVE is off or every VL up to the largest
    ``sveN=on`` is named.

    >>> str(pinned_set({"sve128": "on", "sve256": "on"}))
    '128,256'
    >>> pinned_set({"sve256": "on"}) is None
    True
    """
    check_props(props)
    on = off = 0
    sve: bool | None = None
    for name, value in props.items():
        if name == "sve":
            sve = _is_on(value)
        elif name in SVE_PROPERTIES:
            bit = 1 << (int(name[3:]) // VQ_BITS - 1)
            on, off = (on | bit, off & ~bit) if _is_on(value) else (on & ~bit, off | bit)
    if not on:
        return VLSet() if sve is False else None
    if sve is False:  # QEMU refuses this on every host (resolve_kvm's last check)
        max_vl = on.bit_length() * VQ_BITS
        raise QemuError(
            f"cannot enable sve{max_vl}",
            "SVE must be enabled to enable vector lengths.",
            "Add sve=on to the CPU property list.",
        )
    below = (1 << on.bit_length()) - 1
    return VLSet(on) if (on | off) & below == below else None


# -- what a guest was started with ------------------------------------------------------------
@dataclass(frozen=True)
class GuestSpec:
    """A ``--vls`` SPEC: either one VL set for every node (``syntax`` ``vls``: bits, bitmap words,
    ``none``) or QEMU ``-cpu host`` properties (``syntax`` ``qemu``, or ``libvirt`` for a
    ``<cpu>`` element, read as the properties libvirt passes to QEMU), resolved per node.

    ``fixed`` is the set the guest gets on every node that accepts it, ``None`` when that set
    depends on the node (plain ``host``, ``sve=on``, ``sve256=on``).
    """

    text: str
    syntax: str
    fixed: VLSet | None
    props: dict[str, str] | None = None
    model: str | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def host_dependent(self) -> bool:
        return self.fixed is None

    def on(self, host: VLSet) -> VLSet:
        """The set a guest started with this spec gets on ``host``; raises :class:`QemuError`
        when QEMU refuses to start there.  A plain VL set is passed through unchanged (the
        kernel's rule judges it)."""
        if self.props is None:
            assert self.fixed is not None
            return self.fixed
        return resolve_kvm(self.props, host)

    def trial_set(self) -> VLSet | None:
        """A set worth an acceptance trial on every node (``check --verify``): the fixed set, or
        for a host-dependent spec the lengths it turns on explicitly (the set on the nodes
        where nothing is auto-enabled); ``None`` when there is none."""
        if self.fixed is not None:
            return self.fixed or None
        on = [name for name, value in (self.props or {}).items() if name != "sve" and _is_on(value)]
        explicit = VLSet.from_vls(int(name[3:]) for name in on if name in SVE_PROPERTIES)
        return explicit or None


def parse_guest_spec(text: str, *, source: str = "--vls") -> GuestSpec:
    """Read a ``--vls`` SPEC in any syntax (see :class:`GuestSpec`); raise :class:`SpecError`
    (a :class:`QemuError` for QEMU properties QEMU refuses on every host) naming the bad part.

    >>> parse_guest_spec("128,256").fixed == VLSet.from_vls([128, 256])
    True
    >>> parse_guest_spec("host,sve=on").host_dependent
    True
    """
    stripped = text.strip()
    if stripped.startswith("<"):
        props, libvirt_model, notes = libvirt_props(stripped, source=source)
        return GuestSpec(stripped, "libvirt", _fixed(props, source), props, libvirt_model, notes)
    if _is_qemu_syntax(stripped):
        try:
            model, cpu_props = parse_cpu_props(stripped)
        except QemuError as exc:
            raise QemuError(exc.error, *exc.hints, source=source) from None
        return GuestSpec(stripped, "qemu", _fixed(cpu_props, source), cpu_props, model)
    return GuestSpec(stripped, "vls", parse_vls(stripped, source=source))


def _fixed(props: Mapping[str, str], source: str) -> VLSet | None:
    try:
        return pinned_set(props)
    except QemuError as exc:
        raise QemuError(exc.error, *exc.hints, source=source) from None


def _is_qemu_syntax(text: str) -> bool:
    body = text[len("-cpu") :].strip() if text.startswith("-cpu") else text
    first = body.split(",", 1)[0]
    return "=" in body or first in KVM_MODELS


_LIBVIRT_ON = ("require", "force")
_LIBVIRT_OFF = ("disable", "forbid")
_LIBVIRT_MODES = {"host-passthrough": "host", "maximum": "max"}


def libvirt_props(
    text: str, *, source: str = "--vls"
) -> tuple[dict[str, str], str, tuple[str, ...]]:
    """The ``-cpu`` properties libvirt gives QEMU for a ``<cpu>`` element (alone or inside a
    ``<domain>``): each ``sve*`` feature in order, ``require``/``force`` as ``=on`` and
    ``disable``/``forbid`` as ``=off`` (``optional`` passes nothing), and ``sve=on`` appended
    when some ``sveN`` is required and ``sve`` is not named, as libvirt does.  Returns the
    properties, the QEMU model (``host`` for ``host-passthrough``, ``max`` for ``maximum``) and
    notes for the reader.  Non-SVE features are left out: libvirt and QEMU judge those.
    """
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
    mode = cpu.get("mode", "host-passthrough")
    if mode not in _LIBVIRT_MODES:
        raise SpecError(
            f"<cpu mode={mode!r}>: vlcalc reads host-passthrough or maximum CPUs (the ones whose "
            "SVE lengths come from the host)",
            source=source,
        )
    notes: list[str] = []
    if "mode" not in cpu.attrib:
        notes.append("no <cpu mode>: read as host-passthrough")
    props: dict[str, str] = {}
    for feature in cpu.findall("feature"):
        name = feature.get("name", "")
        policy = feature.get("policy", "require")
        if not re.fullmatch(r"sve\d*", name):
            continue
        if policy in _LIBVIRT_ON:
            props[name] = "on"
        elif policy in _LIBVIRT_OFF:
            props[name] = "off"
        elif policy != "optional":
            raise SpecError(f"feature {name}: unknown policy {policy!r}", source=source)
    if "sve" not in props and any(value == "on" for value in props.values()):
        props["sve"] = "on"
    model = _LIBVIRT_MODES[mode]
    try:
        check_props(props, model)
    except QemuError as exc:
        raise QemuError(exc.error, *exc.hints, source=source) from None
    return props, model, tuple(notes)


def parse_spec(text: str, *, source: str = "--vls") -> VLSet:
    """Parse one VL set in any syntax vlcalc accepts; raise :class:`SpecError` naming the bad part.

    - VL bits: ``128,256,512`` (spaces allowed); ``none`` is the empty set;
    - the KVM bitmap: ``0xb`` (word 0) or all eight words ``0xb,0x0,0x0,0x0,0x0,0x0,0x0,0x0``;
    - QEMU ``-cpu`` properties or a libvirt ``<cpu>`` element that pin one set on every host
      (``sve128=on,sve256=on``, ``host,sve=on,sve128=on,sve256=on,sve384=off,sve512=on``,
      ``sve=off``).  Properties whose set depends on the host (``host``, ``sve=on``,
      ``sve256=on``) are refused here: ``vlcalc check`` resolves those per node.
    """
    spec = parse_guest_spec(text, source=source)
    if spec.fixed is None:
        raise SpecError(
            f"{spec.text!r} gives each host its own set (QEMU fills in the host's lengths); "
            "write the VLs (128,256) or name every sveN up to the largest as on or off",
            source=source,
        )
    return spec.fixed
