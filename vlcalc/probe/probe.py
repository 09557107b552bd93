"""vlcalc probe: ask this node's KVM which SVE vector lengths (VLs) it gives guests.

vlcalc sends this file over SSH to ``python3 - [--try SPEC]...``; it also runs as
``python3 probe.py [--try SPEC]...``.  It prints exactly one JSON document (``vlcalc.probe/1``) on
one line to stdout and exits 0 whenever it printed one, whatever it found: a failure is a value in
the document (``error``), never an exit status.

It is a contract with hypervisors that have whatever ``python3`` they have, so it uses the standard
library only, with Python 3.6 syntax, and only modules that Debian's ``python3-minimal`` ships (no
``ctypes``; ``json`` is optional).  It writes nothing on the node, needs no install, never prompts,
and closes every file descriptor it opens.

``--try SPEC`` (repeatable) also asks KVM whether it accepts a candidate set, on a fresh VM each:
SPEC is comma-separated VLs in bits (``128,256,384``) or the empty string for the empty set.

Example (an AWS Graviton3 node, words shortened here)::

    $ python3 - --try 128 --try 256 < probe.py
    {"schema":"vlcalc.probe/1","probe_version":1,"hostname":"node01","kernel":"6.1.0-27-arm64",
     "arch":"aarch64","python":"3.11.2","kvm":{"api_version":12,"ipa_bits":48,"sve_cap":1},
     "cpu":{"midr":"0x411fd401","model":"Arm Neoverse-V1","implementer":"0x41","part":"0xd40"},
     "sve":{"vls":[128,256],"words":["0x3","0x0",...]},
     "trials":[{"spec":"128","vls":[128],"words":["0x1",...],"accepted":true,"errno":null,
                "finalize_errno":null,"reason":null},
               {"spec":"256","vls":[256],"words":["0x2",...],"accepted":false,"errno":"EINVAL",
                "finalize_errno":null,"reason":null}],
     "timing_ms":{"query":14.2,"total":71.9},"error":null}
"""

import array
import errno
import fcntl
import os
import struct
import sys
import time

MYPY = False
if MYPY:  # type-checking only: typing is not worth an import on the node
    from collections.abc import Sequence  # noqa: F401 (used in type comments)
    from typing import IO  # noqa: F401 (used in type comments)

    JsonObject = dict[str, object]  # a section of the document
    TrialSpecs = list[tuple[str, list[int]]]  # (--try SPEC as given, its vq set)

SCHEMA_TAG = "vlcalc.probe/1"
PROBE_VERSION = 1

# The KVM ABI, from <linux/kvm.h> and <asm/kvm.h> for arm64 (asm-generic ioctl encoding).
# tests/test_probe_constants.py compiles these names against the real arm64 uapi headers.
KVM_API_VERSION = 12
KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01
KVM_CHECK_EXTENSION = 0xAE03
KVM_CREATE_VCPU = 0xAE41
KVM_GET_ONE_REG = 0x4010AEAB
KVM_SET_ONE_REG = 0x4010AEAC
KVM_ARM_VCPU_INIT = 0x4020AEAE
KVM_ARM_PREFERRED_TARGET = 0x8020AEAF
KVM_ARM_VCPU_FINALIZE = 0x4004AEC2
KVM_CAP_ARM_VM_IPA_SIZE = 165
KVM_CAP_ARM_SVE = 170
KVM_ARM_VCPU_SVE = 4  # a bit number in kvm_vcpu_init.features[0], and FINALIZE's feature id
KVM_REG_ARM64_SVE_VLS = 0x606000000015FFFF
KVM_ARM64_SVE_VQ_MAX = 512
KVM_ARM64_SVE_VLS_WORDS = 8

# Struct layouts in native byte order, as the kernel reads them ("=": standard sizes, no padding).
KVM_VCPU_INIT_FORMAT = "=8I"  # struct kvm_vcpu_init {__u32 target; __u32 features[7];}
KVM_ONE_REG_FORMAT = "=QQ"  # struct kvm_one_reg {__u64 id; __u64 addr;}
SVE_VLS_FORMAT = "=8Q"  # the value of KVM_REG_ARM64_SVE_VLS: __u64[8], word 0 first
SIZEOF_KVM_VCPU_INIT = 32
SIZEOF_KVM_ONE_REG = 16
SIZEOF_SVE_VLS = 64

VL_BITS_PER_VQ = 128
KVM_PATH = "/dev/kvm"
MIDR_PATH = "/sys/devices/system/cpu/cpu0/regs/identification/midr_el1"
CPUINFO_PATH = "/proc/cpuinfo"
CREATE_VM_EINTR_RETRIES = 100  # QEMU retries forever; a bound keeps a broken node from hanging us
MAX_TRIALS = 256  # each trial is a VM; keeps a typo in a loop from tying up a hypervisor
# The VLs all trials name together: keeps the document under the 256 KiB a reader takes.
MAX_TRIAL_VLS = 16384
MAX_TEXT = 1024  # readers reject longer strings (schemas/probe-1.schema.json)
MAX_FILE_BYTES = 65536

# CPU names for the implementer/part pairs of arm64 servers that vlcalc's fleets run on, because
# /proc/cpuinfo on arm64 has no "model name".  An unknown pair gives model null.
CPU_MODELS = {
    (0x41, 0xD0C): "Arm Neoverse-N1",
    (0x41, 0xD40): "Arm Neoverse-V1",
    (0x41, 0xD49): "Arm Neoverse-N2",
    (0x41, 0xD4F): "Arm Neoverse-V2",
    (0x41, 0xD84): "Arm Neoverse-V3",
    (0x41, 0xD8E): "Arm Neoverse-N3",
    (0x46, 0x001): "Fujitsu A64FX",
    (0xC0, 0xAC3): "Ampere AmpereOne",
}

ERROR_HINTS = {
    ("KVM_ARM_VCPU_INIT", "EINVAL"): (
        "KVM refuses a vcpu with SVE: the kernel is older than Linux 5.2, runs KVM without VHE "
        "before Linux 5.13, or has SVE disabled for guests; upgrade the kernel or check its "
        "kvm-arm.* and arm64.nosve boot options"
    ),
    ("KVM_GET_ONE_REG", "ENOENT"): (
        "the vcpu has no SVE although KVM reports KVM_CAP_ARM_SVE; check dmesg on the node and "
        "report this with the kernel version"
    ),
    ("KVM_CREATE_VM", "EINVAL"): (
        "KVM refused the VM type built from KVM_CAP_ARM_VM_IPA_SIZE; check dmesg on the node and "
        "report this with the kernel version"
    ),
}
RESOURCE_ERRNOS = ("EMFILE", "ENFILE", "ENOMEM", "EAGAIN")


class ProbeError(Exception):
    """A failure that becomes the document's ``error``: the node's VL set is unknown.

    Example: ``ProbeError("kvm-ioctl", "KVM_CREATE_VM failed ...", "KVM_CREATE_VM", "ENOMEM")``.
    """

    def __init__(self, kind, message, ioctl=None, errno_name=None):
        # type: (str, str, str | None, str | None) -> None
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.ioctl = ioctl
        self.errno_name = errno_name

    def as_dict(self):
        # type: () -> JsonObject
        return {
            "kind": self.kind,
            "message": clean_text(self.message),
            "ioctl": self.ioctl,
            "errno": self.errno_name,
        }


class System:
    """The operating system as the probe sees it.  Tests pass a subclass that fakes KVM.

    Example: ``System().uname()`` -> ``("node01", "6.1.0-27-arm64", "aarch64")``.
    """

    def uname(self):
        # type: () -> tuple[str, str, str]
        """(hostname, kernel release, machine)."""
        info = os.uname()
        return info.nodename, info.release, info.machine

    def python_version(self):
        # type: () -> str
        return "{}.{}.{}".format(*sys.version_info[:3])

    def monotonic(self):
        # type: () -> float
        return time.monotonic()

    def open(self, path, flags):
        # type: (str, int) -> int
        return os.open(path, flags)

    def close(self, fd):
        # type: (int) -> None
        os.close(fd)

    def ioctl_int(self, fd, request, arg):
        # type: (int, int, int) -> int
        """An ioctl whose argument is an integer; returns the ioctl's result (e.g. a new fd)."""
        return fcntl.ioctl(fd, request, arg)

    def ioctl_struct(self, fd, request, arg):
        # type: (int, int, bytes) -> bytes
        """An ioctl whose argument points to a struct; returns the struct as the kernel left it."""
        return fcntl.ioctl(fd, request, arg)

    def buffer(self, data):
        # type: (bytes) -> array.array[int]
        """Memory whose address (``buffer_info()[0]``) can go into a struct for the kernel."""
        return array.array("B", data)

    def read_file(self, path):
        # type: (str) -> str | None
        """The first MAX_FILE_BYTES of a text file, or None when it cannot be read."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            chunks = []
            size = 0
            while size < MAX_FILE_BYTES:
                chunk = os.read(fd, MAX_FILE_BYTES - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            return b"".join(chunks).decode("utf-8", "replace")
        except OSError:
            return None
        finally:
            os.close(fd)


def errno_name(number):
    # type: (int | None) -> str
    """``errno_name(22)`` -> ``"EINVAL"``."""
    if number is None:
        return "unknown"
    return errno.errorcode.get(number, str(number))


def clean_text(value):
    # type: (str) -> str
    """Text that readers accept: control characters replaced by "?", at most MAX_TEXT characters.

    Example: ``clean_text("a\\x1b[2Jb")`` -> ``"a?[2Jb"``.
    """
    # Surrogates too: Python 3.6 in the C locale (or a non-UTF-8 byte) decodes a host name with
    # surrogateescape, and a lone surrogate is not valid JSON text for any reader.
    chars = [
        "?" if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or 0xD800 <= ord(c) <= 0xDFFF else c
        for c in value[:MAX_TEXT]
    ]
    return "".join(chars)


def words_from_vqs(vqs):
    # type: (Sequence[int]) -> list[int]
    """The KVM_REG_ARM64_SVE_VLS words for a set of vq: ``[1, 2, 4]`` -> ``[0xb, 0, ... 0]``."""
    words = [0] * KVM_ARM64_SVE_VLS_WORDS
    for vq in vqs:
        words[(vq - 1) // 64] |= 1 << ((vq - 1) % 64)
    return words


def vls_from_words(words):
    # type: (Sequence[int]) -> list[int]
    """VLs in bits, ascending, for register words: ``[0xb, 0, ...]`` -> ``[128, 256, 512]``."""
    return [
        (index * 64 + bit + 1) * VL_BITS_PER_VQ
        for index, word in enumerate(words)
        for bit in range(64)
        if (word >> bit) & 1
    ]


def hex_words(words):
    # type: (Sequence[int]) -> list[str]
    """``[11, 0]`` -> ``["0xb", "0x0"]``."""
    return [format(word, "#x") for word in words]


def sve_section(words):
    # type: (Sequence[int]) -> JsonObject
    return {"vls": vls_from_words(words), "words": hex_words(words)}


def usage_error(problem):
    # type: (str) -> ProbeError
    return ProbeError(
        "usage",
        problem + "; usage: python3 - [--try SPEC]... where SPEC is comma-separated vector "
        "lengths in bits, multiples of 128 up to 65536 (such as 128,256), or '' for the empty set",
    )


def parse_spec(spec):
    # type: (str) -> list[int]
    """The vq set of a ``--try`` SPEC, ascending: ``"256,128,384"`` -> ``[1, 2, 3]``; ``""`` -> [].

    Raises a ``usage`` ProbeError for anything that is not a VL in bits.
    """
    if not spec.strip():
        return []
    vqs = set()
    for part in spec.split(","):
        text = part.strip()
        # Not str.isdigit(): it accepts digits such as "²" that int() rejects.
        # At most 6 digits before int(): Python refuses to convert 4,301 digits or more.
        digits = text and len(text) <= 6 and all(c in "0123456789" for c in text)
        bits = int(text) if digits else 0
        if bits <= 0 or bits % VL_BITS_PER_VQ or bits // VL_BITS_PER_VQ > KVM_ARM64_SVE_VQ_MAX:
            raise usage_error(f"--try {spec[:40]!r}: {text[:40]!r} is not a vector length")
        vqs.add(bits // VL_BITS_PER_VQ)
    return sorted(vqs)


def parse_args(argv):
    # type: (Sequence[str]) -> TrialSpecs
    """``["--try", "128", "--try="]`` -> ``[("128", [1]), ("", [])]``."""
    trials = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--try":
            if index + 1 >= len(argv):
                raise usage_error("--try needs a value")
            spec = argv[index + 1]
            index += 2
        elif arg.startswith("--try="):
            spec = arg[len("--try=") :]
            index += 1
        else:
            raise usage_error(f"unknown argument {arg!r}")
        trials.append((spec, parse_spec(spec)))
    if len(trials) > MAX_TRIALS:
        raise usage_error(f"{len(trials)} trials, at most {MAX_TRIALS} are allowed")
    named = sum(len(vqs) for _, vqs in trials)
    if named > MAX_TRIAL_VLS:
        raise usage_error(
            f"the trials name {named} vector lengths, at most {MAX_TRIAL_VLS} in one run"
        )
    return trials


def read_cpu(system):
    # type: (System) -> JsonObject | None
    """What identifies CPU 0, from MIDR_EL1 and /proc/cpuinfo; None when neither is readable.

    Example: ``{"midr": "0x411fd401", "model": "Arm Neoverse-V1", "implementer": "0x41",
    "part": "0xd40"}``.  Never raises for a missing or odd file: this is decoration.
    """
    midr = None
    midr_text = system.read_file(MIDR_PATH)
    if midr_text is not None:
        midr = _parse_int(midr_text)
    fields = {}  # type: dict[str, str]
    cpuinfo = system.read_file(CPUINFO_PATH) or ""
    for line in cpuinfo.splitlines():
        if not line.strip():
            break  # the first processor's block is enough
        name, _, value = line.partition(":")
        fields.setdefault(name.strip().lower(), value.strip())
    if midr is not None:
        implementer = (midr >> 24) & 0xFF  # type: int | None
        part = (midr >> 4) & 0xFFF  # type: int | None
    else:
        implementer = _parse_int(fields.get("cpu implementer", ""))
        part = _parse_int(fields.get("cpu part", ""))
    model = fields.get("model name") or CPU_MODELS.get((implementer or 0, part or 0))
    if midr is None and implementer is None and part is None and not model:
        return None
    return {
        "midr": None if midr is None else format(midr, "#x"),
        "model": clean_text(model) if model else None,
        "implementer": None if implementer is None else format(implementer, "#x"),
        "part": None if part is None else format(part, "#x"),
    }


def _parse_int(text):
    # type: (str) -> int | None
    try:
        return int(text.strip(), 0)
    except ValueError:
        return None


def _ioctl_failure(name, exc):
    # type: (str, OSError) -> ProbeError
    code = errno_name(exc.errno)
    hint = ERROR_HINTS.get((name, code))
    if hint is None and code in RESOURCE_ERRNOS:
        hint = "the node is short of memory or file descriptors; retry when it has more room"
    if hint is None:
        hint = "check dmesg on the node and report this with the kernel version"
    reason = os.strerror(exc.errno) if exc.errno is not None else str(exc)
    return ProbeError("kvm-ioctl", f"{name} failed with {code} ({reason}): {hint}", name, code)


def ioctl_int(system, fd, name, request, arg):
    # type: (System, int, str, int, int) -> int
    try:
        return system.ioctl_int(fd, request, arg)
    except OSError as exc:
        raise _ioctl_failure(name, exc) from exc


def ioctl_struct(system, fd, name, request, arg):
    # type: (System, int, str, int, bytes) -> bytes
    try:
        return system.ioctl_struct(fd, request, arg)
    except OSError as exc:
        raise _ioctl_failure(name, exc) from exc


def create_vm(system, kvm_fd, vm_type):
    # type: (System, int, int) -> int
    """KVM_CREATE_VM, retried on EINTR as QEMU does (it can be interrupted while it allocates)."""
    for _ in range(CREATE_VM_EINTR_RETRIES):
        try:
            return system.ioctl_int(kvm_fd, KVM_CREATE_VM, vm_type)
        except OSError as exc:
            if exc.errno != errno.EINTR:
                raise _ioctl_failure("KVM_CREATE_VM", exc) from exc
    raise _ioctl_failure("KVM_CREATE_VM", OSError(errno.EINTR, os.strerror(errno.EINTR)))


class SveVcpu:
    """A fresh VM with vcpu 0 initialised with SVE, as a context manager that closes both fds.

    Example: ``with SveVcpu(system, kvm_fd, 48) as vcpu: read_vls(system, vcpu.fd)``.
    """

    def __init__(self, system, kvm_fd, vm_type):
        # type: (System, int, int) -> None
        self.system = system
        self.kvm_fd = kvm_fd
        self.vm_type = vm_type
        self.vm_fd = -1
        self.fd = -1

    def __enter__(self):
        # type: () -> SveVcpu
        system = self.system
        self.vm_fd = create_vm(system, self.kvm_fd, self.vm_type)
        try:
            self.fd = ioctl_int(system, self.vm_fd, "KVM_CREATE_VCPU", KVM_CREATE_VCPU, 0)
            # The preferred target comes from the VM fd, not /dev/kvm (as in QEMU since 2014).
            init = ioctl_struct(
                system,
                self.vm_fd,
                "KVM_ARM_PREFERRED_TARGET",
                KVM_ARM_PREFERRED_TARGET,
                bytes(SIZEOF_KVM_VCPU_INIT),
            )
            fields = list(struct.unpack(KVM_VCPU_INIT_FORMAT, init))
            fields[1] |= 1 << KVM_ARM_VCPU_SVE  # features[0]
            request = struct.pack(KVM_VCPU_INIT_FORMAT, *fields)
            ioctl_struct(system, self.fd, "KVM_ARM_VCPU_INIT", KVM_ARM_VCPU_INIT, request)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        # type: (object, object, object) -> None
        self.close()

    def close(self):
        # type: () -> None
        for fd in (self.fd, self.vm_fd):
            if fd >= 0:
                self.system.close(fd)
        self.fd = self.vm_fd = -1


def read_vls_words(system, vcpu_fd):
    # type: (System, int) -> list[int]
    """KVM_GET_ONE_REG(KVM_REG_ARM64_SVE_VLS) on an unfinalised vcpu: the host's full set."""
    buf = system.buffer(bytes(SIZEOF_SVE_VLS))
    reg = struct.pack(KVM_ONE_REG_FORMAT, KVM_REG_ARM64_SVE_VLS, buf.buffer_info()[0])
    ioctl_struct(system, vcpu_fd, "KVM_GET_ONE_REG", KVM_GET_ONE_REG, reg)
    return list(struct.unpack(SVE_VLS_FORMAT, buf.tobytes()))


def run_trial(system, kvm_fd, vm_type, spec, vqs):
    # type: (System, int, int, str, list[int]) -> JsonObject
    """Whether KVM accepts the set ``vqs``, judged by KVM_SET_ONE_REG on a fresh vcpu.

    FINALIZE is recorded too, but it succeeds even after a rejected SET (it keeps the full set).
    """
    words = words_from_vqs(vqs)
    trial = new_trial(spec, words)
    with SveVcpu(system, kvm_fd, vm_type) as vcpu:
        buf = system.buffer(struct.pack(SVE_VLS_FORMAT, *words))
        reg = struct.pack(KVM_ONE_REG_FORMAT, KVM_REG_ARM64_SVE_VLS, buf.buffer_info()[0])
        try:
            system.ioctl_struct(vcpu.fd, KVM_SET_ONE_REG, reg)
            trial["accepted"] = True
        except OSError as exc:
            trial["errno"] = errno_name(exc.errno)
        feature = struct.pack("=i", KVM_ARM_VCPU_SVE)
        try:
            system.ioctl_struct(vcpu.fd, KVM_ARM_VCPU_FINALIZE, feature)
        except OSError as exc:
            trial["finalize_errno"] = errno_name(exc.errno)
    return trial


def new_trial(spec, words, reason=None):
    # type: (str, list[int], str | None) -> JsonObject
    return {
        "spec": clean_text(spec),
        "vls": vls_from_words(words),
        "words": hex_words(words),
        "accepted": False,
        "errno": None,
        "finalize_errno": None,
        "reason": reason,
    }


def open_kvm(system):
    # type: (System) -> int
    try:
        return system.open(KVM_PATH, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        code = errno_name(exc.errno)
        if exc.errno in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
            raise ProbeError(
                "no-kvm",
                f"{KVM_PATH} is not there ({code}): this node has no KVM; boot a kernel with KVM "
                "on a CPU that starts in EL2 (virtualisation enabled in firmware), or remove the "
                "node from the inventory",
                None,
                code,
            ) from exc
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise ProbeError(
                "permission-denied",
                f"cannot open {KVM_PATH} ({code}) as uid {os.geteuid()}: "
                "add the user to group kvm, or use become/sudo",
                None,
                code,
            ) from exc
        raise ProbeError(
            "kvm-ioctl",
            f"cannot open {KVM_PATH} ({code}): check the device node and dmesg on the node",
            "open",
            code,
        ) from exc


def query_kvm(system, trials):
    # type: (System, TrialSpecs) -> tuple[JsonObject, list[int], list[JsonObject], float]
    """Ask KVM: ``(kvm section, VLS register words, trial results, query ms)``.

    Raises ProbeError when the node's set cannot be known.
    """
    started = system.monotonic()
    kvm_fd = open_kvm(system)
    try:
        api_version = ioctl_int(system, kvm_fd, "KVM_GET_API_VERSION", KVM_GET_API_VERSION, 0)
        if api_version != KVM_API_VERSION:
            raise ProbeError(
                "kvm-api",
                f"KVM API version is {api_version}, not {KVM_API_VERSION}: this kernel's KVM is "
                "not one vlcalc can ask; check the kernel on the node",
                "KVM_GET_API_VERSION",
            )
        sve_cap = ioctl_int(
            system, kvm_fd, "KVM_CHECK_EXTENSION", KVM_CHECK_EXTENSION, KVM_CAP_ARM_SVE
        )
        ipa_bits = ioctl_int(
            system, kvm_fd, "KVM_CHECK_EXTENSION", KVM_CHECK_EXTENSION, KVM_CAP_ARM_VM_IPA_SIZE
        )
        kvm = {
            "api_version": api_version,
            "ipa_bits": ipa_bits,
            "sve_cap": sve_cap,
        }  # type: JsonObject
        if not sve_cap:
            no_sve = [new_trial(spec, words_from_vqs(vqs), "no-sve") for spec, vqs in trials]
            return kvm, [0] * KVM_ARM64_SVE_VLS_WORDS, no_sve, _elapsed_ms(system, started)
        # Type 0 means a 40-bit IPA, which hosts with a smaller limit refuse (QEMU does the same).
        vm_type = ipa_bits if ipa_bits > 0 else 0
        with SveVcpu(system, kvm_fd, vm_type) as vcpu:
            words = read_vls_words(system, vcpu.fd)
        query_ms = _elapsed_ms(system, started)
        results = [run_trial(system, kvm_fd, vm_type, spec, vqs) for spec, vqs in trials]
        return kvm, words, results, query_ms
    finally:
        system.close(kvm_fd)


def _elapsed_ms(system, started):
    # type: (System, float) -> float
    return round((system.monotonic() - started) * 1000.0, 3)


def collect(argv, system):
    # type: (Sequence[str], System) -> JsonObject
    """The probe document for this node, as a dict.  Never raises for a node's condition.

    Example: on an x86 machine, ``collect([], System())["error"]["kind"]`` is ``"not-arm64"``.
    """
    started = system.monotonic()
    hostname, kernel, arch = system.uname()
    timing = {"query": 0.0, "total": 0.0}
    doc = {
        "schema": SCHEMA_TAG,
        "probe_version": PROBE_VERSION,
        "hostname": clean_text(hostname),
        "kernel": clean_text(kernel),
        "arch": clean_text(arch),
        "python": clean_text(system.python_version()),
        "kvm": None,
        "cpu": None,
        "sve": None,
        "trials": [],
        "timing_ms": timing,
        "error": None,
    }  # type: JsonObject
    try:
        trials = parse_args(argv)
        try:
            doc["cpu"] = read_cpu(system)
        except Exception:  # the CPU name is decoration: never lose the VL set over it
            doc["cpu"] = None
        if arch != "aarch64":
            raise ProbeError(
                "not-arm64",
                f"this node is {arch or 'unknown'}, not aarch64: only arm64 KVM hosts have SVE "
                "vector lengths; remove the node from the inventory or the group you scan",
            )
        kvm, words, results, query_ms = query_kvm(system, trials)
        doc.update(kvm=kvm, sve=sve_section(words), trials=results)
        timing["query"] = query_ms
    except ProbeError as exc:
        doc.update(sve=None, trials=[], error=exc.as_dict())
    except Exception as exc:  # the contract is one document, even when the probe has a bug
        doc.update(sve=None, trials=[], error=internal_error(exc))
    timing["total"] = _elapsed_ms(system, started)
    return doc


def internal_error(exc):
    # type: (BaseException) -> JsonObject
    """The ``error`` for a bug in the probe: the exception, and where it was raised."""
    where = ""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None:
        where = f" in {tb.tb_frame.f_code.co_name}() line {tb.tb_lineno}"
    message = (
        f"the probe failed unexpectedly{where}: {type(exc).__name__}: {exc}; this is a bug in the "
        "vlcalc probe, report it with this document"
    )
    return ProbeError("internal", message).as_dict()


def dumps(doc, use_json=True):
    # type: (object, bool) -> str
    """One line of ASCII JSON, as ``json.dumps(doc, separators=(",", ":"))`` gives.

    Debian's python3-minimal has no json module, hence the small encoder for the probe's own
    types (dict with str keys, list, str, int, float, bool, None).
    Example: ``dumps({"a": [1, None]})`` -> ``'{"a":[1,null]}'``.
    """
    if use_json:
        try:
            import json
        except ImportError:
            pass
        else:
            return json.dumps(doc, separators=(",", ":"))
    return _encode(doc)


_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
}


def _encode(value):
    # type: (object) -> str
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("JSON has no NaN or infinity")
        return float.__repr__(value)
    if isinstance(value, str):
        return '"' + "".join(_escape(c) for c in value) + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_encode(item) for item in value) + "]"
    if isinstance(value, dict):
        items = []
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"JSON keys must be str, not {type(key).__name__}")
            items.append(_encode(key) + ":" + _encode(item))
        return "{" + ",".join(items) + "}"
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _escape(char):
    # type: (str) -> str
    if char in _ESCAPES:
        return _ESCAPES[char]
    code = ord(char)
    if 0x20 <= code < 0x7F:
        return char
    if code > 0xFFFF:  # outside the BMP: a UTF-16 surrogate pair, as json does
        code -= 0x10000
        return f"\\u{0xD800 | (code >> 10):04x}\\u{0xDC00 | (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


def fallback_document(exc):
    # type: (BaseException) -> JsonObject
    """The document when even the node's identity could not be read (a bug, or a strange OS)."""
    return {
        "schema": SCHEMA_TAG,
        "probe_version": PROBE_VERSION,
        "hostname": "",
        "kernel": "",
        "arch": "",
        "python": "{}.{}.{}".format(*sys.version_info[:3]),
        "kvm": None,
        "cpu": None,
        "sve": None,
        "trials": [],
        "timing_ms": {"query": 0.0, "total": 0.0},
        "error": internal_error(exc),
    }


def main(argv=None, system=None, stdout=None):
    # type: (Sequence[str] | None, System | None, IO[str] | None) -> int
    """Print the document for this node and return 0: ``python3 probe.py --try 128,256``."""
    try:
        doc = collect(sys.argv[1:] if argv is None else argv, system or System())
        text = dumps(doc)
    except Exception as exc:  # the contract is one document, even when the probe has a bug
        text = dumps(fallback_document(exc))
    out = sys.stdout if stdout is None else stdout
    out.write(text + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
