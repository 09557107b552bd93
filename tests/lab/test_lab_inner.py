"""Inner-guest helpers as data, and the QMP driver against a fake QEMU on this machine (fast; no
emulated node, not marked ``lab``)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vlcalc.lab import inner
from vlcalc.lab.errors import LabError
from vlcalc.vl import VLSet

GUEST_SOURCE = Path(__file__).resolve().parent / "guest" / "vlguest.S"


def test_inner_qemu_argv_has_kvm_the_cpu_and_the_driver_socket() -> None:
    argv = inner.inner_qemu_argv("host,sve=on,sve128=on", kernel="/g.bin", incoming="exec:cat s")
    assert argv[:3] == ["qemu-system-aarch64", "-accel", "kvm"]
    assert argv[argv.index("-cpu") + 1] == "host,sve=on,sve128=on"
    assert argv[argv.index("-kernel") + 1] == "/g.bin"
    assert argv[argv.index("-incoming") + 1] == "exec:cat s"
    assert argv[argv.index("-qmp") + 1] == f"unix:{inner.NODE_DIR}/qmp.sock,server=on,wait=off"
    assert "-S" not in argv and "-S" in inner.inner_qemu_argv("host", paused=True)


def test_qmp_props_use_json_types_and_keep_what_qemu_must_refuse() -> None:
    assert inner.qmp_props({"sve": "on", "sve256": "no", "sve-max-vq": "4", "sve128": "maybe"}) == {
        "sve": True,
        "sve256": False,
        "sve-max-vq": 4,
        "sve128": "maybe",
    }
    assert inner.expansion_step({}) == {
        "execute": "query-cpu-model-expansion",
        "arguments": {"type": "full", "model": {"name": "host"}},
    }


def test_expanded_set_reads_sven_or_the_error() -> None:
    props = {"sve": True, "sve128": True, "sve256": False, "sve384": True, "pmu": True}
    reply = {"return": {"model": {"name": "host", "props": props}}}
    assert inner.expanded_set(reply) == VLSet.from_vls([128, 384])
    off = {"return": {"model": {"name": "host", "props": {**props, "sve": False}}}}
    assert inner.expanded_set(off) == VLSet()
    error = {"error": {"class": "GenericError", "desc": "cannot disable sve128"}}
    assert inner.expanded_set(error) == "cannot disable sve128"


def test_guest_sets_skip_partial_lines_and_refuse_garbled_ones() -> None:
    serial = ",512\nVLS 128,256,512\nVLS sve-off\nVLS 128,2"
    assert inner.guest_sets(serial) == [VLSet.from_vls([128, 256, 512]), VLSet()]
    with pytest.raises(LabError, match="garbled"):
        inner.guest_sets("VLS 12x8\n")


def test_cpu_from_report() -> None:
    assert inner.cpu_from_report("-cpu host,sve=on,sve128=on\n") == "host,sve=on,sve128=on"
    with pytest.raises(LabError):
        inner.cpu_from_report("<cpu mode='host-passthrough'/>\n")


def test_guest_assembles_to_a_raw_arm64_image(tmp_path: Path) -> None:
    if shutil.which("aarch64-linux-gnu-as") is None:
        pytest.skip("aarch64-linux-gnu binutils are not installed (gcc-aarch64-linux-gnu)")
    image = inner.build_guest(GUEST_SOURCE, tmp_path)
    data = image.read_bytes()
    # The arm64 Linux Image header QEMU looks for, and a guest of a few hundred bytes.
    assert data[56:60] == b"ARM\x64"
    assert int.from_bytes(data[16:24], "little") == len(data) < 1024


def test_guest_build_failure_names_the_tool(tmp_path: Path) -> None:
    if shutil.which("aarch64-linux-gnu-as") is None:
        pytest.skip("aarch64-linux-gnu binutils are not installed (gcc-aarch64-linux-gnu)")
    bad = tmp_path / "bad.S"
    bad.write_text("not_an_instruction x0\n")
    with pytest.raises(LabError, match="aarch64-linux-gnu-as"):
        inner.build_guest(bad, tmp_path / "out")


# A stand-in for QEMU: serves QMP on the socket given as unix:PATH,..., echoes its stdin (the
# guest's UART) to stdout until it reads "q", then exits 0; "fail" as the first argument exits 1.
FAKE_QEMU = textwrap.dedent(
    """
    import json, os, socket, sys, threading
    if sys.argv[1] == "fail":
        sys.stderr.write("fake: refusing to start\\n")
        sys.exit(1)
    path = sys.argv[2].split(":", 1)[1].split(",", 1)[0]
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)
    def qmp():
        conn, _ = server.accept()
        conn.sendall(b'{"QMP": {}}\\n')
        for line in conn.makefile():
            message = json.loads(line)
            reply = {"return": {"status": "completed"}, "id": message["id"]}
            conn.sendall(b'{"event": "NOISE"}\\n' + json.dumps(reply).encode() + b"\\n")
            if message["execute"] == "quit":
                os._exit(0)
    threading.Thread(target=qmp, daemon=True).start()
    sys.stdout.write("VLS 128,256\\n")
    sys.stdout.flush()
    while sys.stdin.read(1) != "q":
        pass
    sys.exit(0)
    """
)


def _run_driver(
    tmp_path: Path, first_arg: str, steps: list[dict[str, object]], timeout_s: float = 30
) -> dict[str, object]:
    fake = tmp_path / "fake_qemu.py"
    fake.write_text(FAKE_QEMU)
    plan = {
        "qemu": [sys.executable, str(fake), first_arg, f"unix:{tmp_path}/q.sock,server=on"],
        "qmp": str(tmp_path / "q.sock"),
        "serial": str(tmp_path / "serial.log"),
        "timeout_s": timeout_s,
        "steps": steps,
    }
    done = subprocess.run(
        [sys.executable, "-"],
        input=inner.driver_script(plan),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_driver_runs_steps_and_matches_replies_by_id(tmp_path: Path) -> None:
    result = _run_driver(
        tmp_path,
        "ok",
        [
            {"wait_serial": "VLS "},
            {"execute": "stop"},
            {"until": "query-migrate", "key": "status", "values": ["completed"]},
            {"serial_input": "q"},
            {"wait_exit": True},
        ],
    )
    assert result["error"] is None and result["returncode"] == 0
    assert result["serial"] == "VLS 128,256\n"
    replies = result["replies"]
    assert isinstance(replies, list) and [r["id"] for r in replies] == [2, 3]


def test_driver_reports_a_qemu_that_refuses_to_start(tmp_path: Path) -> None:
    result = _run_driver(tmp_path, "fail", [{"execute": "quit"}])
    assert result["returncode"] == 1
    assert "exited with status 1" in str(result["error"])
    assert "refusing to start" in str(result["stderr"])


def test_driver_times_out_and_kills_qemu(tmp_path: Path) -> None:
    result = _run_driver(tmp_path, "ok", [{"wait_serial": "never"}], timeout_s=2)
    assert "timed out" in str(result["error"])
    assert result["returncode"] == -9  # killed: the fake never exits by itself
