"""Inner KVM guests on the lab's QEMU nodes: command lines, QMP plans and answers, as data.

A node booted from the QEMU image variant (``NodeSpec(..., qemu=True)``) runs Debian's arm64
``qemu-system-aarch64`` with ``-accel kvm``: nested KVM inside the emulated node, whose kernel
runs at EL2.  The node-side work is done by :mod:`vlcalc.lab.qmp_driver`, sent to the node's
``python3 -`` with a plan appended (:func:`driver_plan`, :func:`driver_script`); this module
builds the plans and reads the answers, and builds the tiny assembly guest that prints its SVE
vector lengths.

>>> qmp_props({"sve": "on", "sve384": "off", "sve-max-vq": "4"})
{'sve': True, 'sve384': False, 'sve-max-vq': 4}
>>> str(expanded_set({"return": {"model": {"name": "host", "props": {"sve": True,
...     "sve128": True, "sve256": True, "sve384": False}}}}))
'128,256'
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vlcalc.lab.errors import CommandError, LabError
from vlcalc.vl import VLSet

DRIVER = Path(__file__).with_name("qmp_driver.py")
INNER_QEMU = "qemu-system-aarch64"
INNER_MEMORY_MIB = 64
# Where the driver keeps its socket, serial log and migration files on a node (tmpfs).
NODE_DIR = "/tmp/vlcalc-inner"
CROSS_PREFIX = "aarch64-linux-gnu-"
# The guest's line: "VLS 128,256,384" or "VLS sve-off".
GUEST_LINE = "VLS "
_GUEST_RE = re.compile(r"^VLS (sve-off|\d+(?:,\d+)*)\s*$")
# QEMU's keyval bools (qapi_bool_parse); over QMP a property takes a JSON bool instead.
_BOOLS = {"on": True, "yes": True, "true": True, "y": True}
_BOOLS.update({"off": False, "no": False, "false": False, "n": False})


def inner_qemu_argv(
    cpu: str,
    *,
    kernel: str | None = None,
    incoming: str | None = None,
    paused: bool = False,
    memory_mib: int = INNER_MEMORY_MIB,
) -> list[str]:
    """The inner QEMU's command line on a node: KVM, ``virt``, ``-cpu CPU``, no devices but the
    PL011 (on the driver's stdin/stdout) and QMP on the driver's socket.

    ``inner_qemu_argv("host", paused=True)`` is the QMP-only form (``-S``, no guest).
    """
    argv = [
        INNER_QEMU,
        "-accel", "kvm",
        "-M", "virt",
        "-cpu", cpu,
        "-m", str(memory_mib),
        "-nodefaults", "-no-user-config",
        "-display", "none",
        "-serial", "stdio",
        "-qmp", f"unix:{NODE_DIR}/qmp.sock,server=on,wait=off",
    ]  # fmt: skip
    if paused:
        argv.append("-S")
    if kernel is not None:
        argv += ["-kernel", kernel]
    if incoming is not None:
        argv += ["-incoming", incoming]
    return argv


def driver_plan(
    qemu_argv: Sequence[str], steps: Sequence[Mapping[str, Any]], timeout_s: float = 120.0
) -> dict[str, Any]:
    """A plan for :mod:`vlcalc.lab.qmp_driver`: files under :data:`NODE_DIR`."""
    return {
        "qemu": list(qemu_argv),
        "qmp": f"{NODE_DIR}/qmp.sock",
        "serial": f"{NODE_DIR}/serial.log",
        "timeout_s": timeout_s,
        "steps": [dict(step) for step in steps],
    }


DRIVER_COMMAND = f"mkdir -p {NODE_DIR} && python3 -"


def driver_script(plan: Mapping[str, Any]) -> bytes:
    """The driver's source with the plan appended, for :data:`DRIVER_COMMAND`'s stdin.  The plan
    travels on stdin, not in the command: dropbear refuses commands over 9000 bytes, and a few
    hundred QMP commands are more."""
    call = f"\nsys.exit(main({json.dumps(json.dumps(plan))}))\n"
    return DRIVER.read_bytes() + call.encode()


def qmp_props(props: Mapping[str, str]) -> dict[str, Any]:
    """``-cpu`` style properties as QMP wants them: bools for on/off words, ints for digits;
    anything else stays a string (QEMU then refuses it, as it refuses it on a command line)."""
    result: dict[str, Any] = {}
    for name, value in props.items():
        if value in _BOOLS:
            result[name] = _BOOLS[value]
        elif value.isdigit():
            result[name] = int(value)
        else:
            result[name] = value
    return result


def expansion_step(props: Mapping[str, str]) -> dict[str, Any]:
    """The QMP ``query-cpu-model-expansion`` (type full, model host) for these properties."""
    model: dict[str, Any] = {"name": "host"}
    if props:
        model["props"] = qmp_props(props)
    return {"execute": "query-cpu-model-expansion", "arguments": {"type": "full", "model": model}}


def expanded_set(reply: Mapping[str, Any]) -> VLSet | str:
    """QEMU's answer to :func:`expansion_step`: the guest's VL set (empty: SVE off), or QEMU's
    error text when it refused the properties."""
    if "error" in reply:
        return str(reply["error"].get("desc", reply["error"]))
    props = reply["return"]["model"]["props"]
    if not props.get("sve", False):
        return VLSet()
    on = [int(name[3:]) for name, value in props.items() if re.fullmatch(r"sve\d+", name) and value]
    return VLSet.from_vls(on)


def guest_sets(serial: str) -> list[VLSet]:
    """The sets the guest printed, one per complete ``VLS`` line, in order (``sve-off``: empty).

    ``guest_sets("VLS 128,256\\nVLS sve-off\\nVLS 12")`` -> ``[VLSet(0x3), VLSet(0x0)]``: a
    last line without its newline is a round cut short (QEMU stopped, or the guest migrated
    away mid-line) and is left out.  A complete line that starts like a guest line but does not
    parse raises :class:`LabError` (a garbled UART).
    """
    result = []
    complete = serial[: serial.rfind("\n") + 1]
    for line in complete.splitlines():
        if not line.startswith(GUEST_LINE):
            continue
        match = _GUEST_RE.match(line)
        if match is None:
            raise LabError(f"garbled guest line: {line!r}")
        body = match.group(1)
        result.append(VLSet() if body == "sve-off" else VLSet.from_vls(map(int, body.split(","))))
    return result


def cpu_from_report(text: str) -> str:
    """The ``-cpu`` value in ``vlcalc report -f qemu`` output (``-cpu host,sve=on,...``)."""
    for line in text.splitlines():
        if line.startswith("-cpu "):
            return line.split(None, 1)[1].strip()
    raise LabError(f"no -cpu line in the qemu report:\n{text}")


def cpu_from_argv(argv: str) -> str:
    """The ``-cpu`` value of a QEMU command line (``virsh domxml-to-native`` output)."""
    match = re.search(r"(?:^|\s)-cpu\s+(\S+)", argv)
    if match is None:
        raise LabError(f"no -cpu in the QEMU command line:\n{argv}")
    return match.group(1)


def build_guest(source: Path, workdir: Path, prefix: str = CROSS_PREFIX) -> Path:
    """Assemble the guest (``as``, ``ld``, ``objcopy -O binary``): the raw image QEMU boots as
    ``-kernel``.  Raises :class:`CommandError` with the tool's output when a step fails."""
    workdir.mkdir(parents=True, exist_ok=True)
    obj, elf_file, raw = workdir / "guest.o", workdir / "guest.elf", workdir / "guest.bin"
    for argv in (
        [f"{prefix}as", "-o", str(obj), str(source)],
        [f"{prefix}ld", "-Ttext=0", "-o", str(elf_file), str(obj)],
        [f"{prefix}objcopy", "-O", "binary", str(elf_file), str(raw)],
    ):
        try:
            done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
        except FileNotFoundError as exc:
            raise LabError(f"{argv[0]} not found; install gcc-aarch64-linux-gnu") from exc
        if done.returncode != 0:
            raise CommandError(argv, done.returncode, done.stdout + done.stderr)
    return raw
