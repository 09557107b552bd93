"""A fake arm64 /dev/kvm for the probe's tests, and the runner for the cases in this folder.

The fake answers the ioctls the probe uses with the kernel's behaviour: the acceptance rule of
``set_sve_vls()`` (arch/arm64/kvm/guest.c), EPERM for SET after FINALIZE, the VM type rule of
KVM_CREATE_VM, and which fd each ioctl belongs to.  It counts open fds and injects failures.
Its ioctl numbers are written out here from domain.md, not taken from the probe, so a wrong number
in the probe fails the cases instead of agreeing with itself.

Python 3.6 syntax and standard library only, like the probe, so the same cases also run under an
old interpreter: ``python3.6 fake_kvm.py PROBE_PY CASES_DIR`` prints every case's result as JSON.

A case file (``*.json`` here) is ``{"description": str, "fake": CONFIG, "argv": [...],
"expect": {top-level key: exact value, ...}}``; CONFIG keys are those read in FakeKvm.__init__.
"""

import array
import errno
import importlib.util
import json
import os
import struct
import sys

NAMES = {
    0xAE00: "KVM_GET_API_VERSION",
    0xAE01: "KVM_CREATE_VM",
    0xAE03: "KVM_CHECK_EXTENSION",
    0xAE41: "KVM_CREATE_VCPU",
    0x4010AEAB: "KVM_GET_ONE_REG",
    0x4010AEAC: "KVM_SET_ONE_REG",
    0x4020AEAE: "KVM_ARM_VCPU_INIT",
    0x8020AEAF: "KVM_ARM_PREFERRED_TARGET",
    0x4004AEC2: "KVM_ARM_VCPU_FINALIZE",
}
FD_KIND = {  # which fd each ioctl is valid on (others give ENOTTY, as in the kernel)
    "KVM_GET_API_VERSION": "kvm",
    "KVM_CHECK_EXTENSION": "kvm",
    "KVM_CREATE_VM": "kvm",
    "KVM_CREATE_VCPU": "vm",
    "KVM_ARM_PREFERRED_TARGET": "vm",
    "KVM_ARM_VCPU_INIT": "vcpu",
    "KVM_GET_ONE_REG": "vcpu",
    "KVM_SET_ONE_REG": "vcpu",
    "KVM_ARM_VCPU_FINALIZE": "vcpu",
}
CAP_ARM_VM_IPA_SIZE = 165
CAP_ARM_SVE = 170
REG_SVE_VLS = 0x606000000015FFFF
TARGET_GENERIC_V8 = 5
FEATURE_SVE = 4


def kernel_accepts(requested, host):
    """set_sve_vls(): S is accepted on host H iff S is not empty, max(S) <= max(H), and every vq
    up to max(S) is in S exactly when it is in H.  ``kernel_accepts({1, 2}, {1, 2, 4})`` -> True.
    """
    if not requested:
        return False
    top = max(requested)
    if top > max(host, default=0):
        return False
    return all((vq in requested) == (vq in host) for vq in range(1, top + 1))


def words_of(vqs):
    words = [0] * 8
    for vq in vqs:
        words[(vq - 1) // 64] |= 1 << ((vq - 1) % 64)
    return words


def vqs_of(words):
    return {
        index * 64 + bit + 1
        for index, word in enumerate(words)
        for bit in range(64)
        if (word >> bit) & 1
    }


def os_error(name):
    code = getattr(errno, name)
    return OSError(code, os.strerror(code))


class FakeKvm:
    """The probe's System, with a KVM whose host SVE set is ``host_vls`` (bits)."""

    def __init__(self, config):
        self.machine = config.get("machine", "aarch64")
        self.hostname = config.get("hostname", "node01")
        self.kernel = config.get("kernel", "6.1.0-27-arm64")
        self.host_vqs = {vl // 128 for vl in config.get("host_vls", [])}
        self.sve_cap = config.get("sve_cap", 1 if self.host_vqs else 0)
        self.ipa_bits = config.get("ipa_bits", 48)
        self.api_version = config.get("api_version", 12)
        self.open_errno = config.get("open_errno")  # e.g. "EACCES"
        self.fail = config.get("fail", {})  # {"KVM_CREATE_VCPU": "ENOMEM", "KVM_CREATE_VM#2": ...}
        self.crash = config.get("crash")  # an ioctl name that raises RuntimeError (a probe bug)
        self.eintr_left = config.get("create_vm_eintr", 0)
        self.files = config.get("files", {})
        self.fds = {}
        self.next_fd = 3
        self.peak_fds = 0
        self.calls = []
        self.counts = {}
        self.buffers = {}
        self.clock = 100.0
        self.open_flags = None

    # The System interface ------------------------------------------------------------------
    def uname(self):
        return self.hostname, self.kernel, self.machine

    def python_version(self):
        return "3.11.2"

    def monotonic(self):
        self.clock += 0.001  # deterministic timings: 1 ms per look at the clock
        return self.clock

    def read_file(self, path):
        return self.files.get(path)

    def buffer(self, data):
        buf = array.array("B", data)
        self.buffers[buf.buffer_info()[0]] = buf
        return buf

    def open(self, path, flags):
        if path != "/dev/kvm":
            raise os_error("ENOENT")
        if self.open_errno:
            raise os_error(self.open_errno)
        self.open_flags = flags
        return self._new_fd({"kind": "kvm"})

    def close(self, fd):
        if fd not in self.fds:
            raise os_error("EBADF")
        del self.fds[fd]

    def ioctl_int(self, fd, request, arg):
        name, state = self._enter(fd, request)
        if not isinstance(arg, int):
            raise os_error("EFAULT")
        if name == "KVM_GET_API_VERSION":
            return self.api_version
        if name == "KVM_CHECK_EXTENSION":
            return {CAP_ARM_SVE: self.sve_cap, CAP_ARM_VM_IPA_SIZE: self.ipa_bits}.get(arg, 0)
        if name == "KVM_CREATE_VM":
            return self._create_vm(arg)
        if name == "KVM_CREATE_VCPU":
            if arg != 0 or state["vcpus"]:
                raise os_error("EINVAL" if arg != 0 else "EEXIST")
            state["vcpus"] += 1
            vcpu = {"kind": "vcpu", "sve": False, "vqs": set(), "finalized": False}
            return self._new_fd(vcpu)
        raise os_error("EFAULT")  # a struct ioctl called with an int

    def ioctl_struct(self, fd, request, arg):
        name, state = self._enter(fd, request)
        if not isinstance(arg, bytes):
            raise os_error("EFAULT")
        if name == "KVM_ARM_PREFERRED_TARGET":
            if len(arg) != 32:
                raise os_error("EFAULT")
            return struct.pack("=8I", TARGET_GENERIC_V8, 0, 0, 0, 0, 0, 0, 0)
        if name == "KVM_ARM_VCPU_INIT":
            fields = struct.unpack("=8I", arg)
            if fields[0] != TARGET_GENERIC_V8:
                raise os_error("EINVAL")
            if fields[1] & (1 << FEATURE_SVE):
                if not self.sve_cap:
                    raise os_error("EINVAL")
                state["sve"] = True
                state["vqs"] = set(self.host_vqs)
            return arg
        if name == "KVM_ARM_VCPU_FINALIZE":
            (feature,) = struct.unpack("=i", arg)
            if feature != FEATURE_SVE or not state["sve"]:
                raise os_error("EINVAL")
            if state["finalized"]:
                raise os_error("EPERM")
            state["finalized"] = True
            return arg
        reg_id, addr = struct.unpack("=QQ", arg)
        if reg_id != REG_SVE_VLS or not state["sve"]:
            raise os_error("ENOENT")
        buf = self.buffers.get(addr)
        if buf is None or len(buf) != 64:
            raise os_error("EFAULT")
        if name == "KVM_GET_ONE_REG":
            buf[:] = array.array("B", struct.pack("=8Q", *words_of(state["vqs"])))
            return arg
        if state["finalized"]:
            raise os_error("EPERM")
        requested = vqs_of(struct.unpack("=8Q", buf.tobytes()))
        if not kernel_accepts(requested, self.host_vqs):
            raise os_error("EINVAL")
        state["vqs"] = requested
        return arg

    # Internals ------------------------------------------------------------------------------
    def _new_fd(self, state):
        fd = self.next_fd
        self.next_fd += 1
        self.fds[fd] = state
        self.peak_fds = max(self.peak_fds, len(self.fds))
        return fd

    def _enter(self, fd, request):
        name = NAMES.get(request)
        if name is None:
            raise os_error("ENOTTY")
        self.calls.append(name)
        self.counts[name] = self.counts.get(name, 0) + 1
        state = self.fds.get(fd)
        if state is None:
            raise os_error("EBADF")
        if state["kind"] != FD_KIND[name]:
            raise os_error("ENOTTY")
        injected = self.fail.get(name) or self.fail.get(f"{name}#{self.counts[name]}")
        if injected:
            raise os_error(injected)
        if self.crash == name:
            raise RuntimeError("injected crash in " + name)
        return name, state

    def _create_vm(self, vm_type):
        if self.eintr_left:
            self.eintr_left -= 1
            raise os_error("EINTR")
        # arch/arm64/kvm/mmu.c: the type's low byte is the IPA size, 0 meaning 40 bits.
        limit = self.ipa_bits if self.ipa_bits > 0 else 40
        ipa = (vm_type & 0xFF) or 40
        if vm_type & ~0xFF or ipa > limit or ipa < 32:
            raise os_error("EINVAL")
        return self._new_fd({"kind": "vm", "vcpus": 0})


def load_probe(path):
    """The probe file as a module (by path, as the interpreter under test sees it)."""
    spec = importlib.util.spec_from_file_location("vlcalc_probe_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_case(probe, case):
    """Run one case: the document, and what the fake saw."""
    fake = FakeKvm(case.get("fake", {}))
    doc = probe.collect(case.get("argv", []), fake)
    return {
        "doc": doc,
        "open_fds": sorted(state["kind"] for state in fake.fds.values()),
        "peak_fds": fake.peak_fds,
        "calls": fake.calls,
        "open_flags": fake.open_flags,
    }


def load_cases(folder):
    cases = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".json"):
            with open(os.path.join(folder, name)) as stream:
                cases[name[: -len(".json")]] = json.load(stream)
    return cases


def main(argv):
    probe = load_probe(argv[1])
    results = {name: run_case(probe, case) for name, case in load_cases(argv[2]).items()}
    sys.stdout.write(json.dumps(results, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
