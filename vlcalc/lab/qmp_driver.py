"""Run one inner QEMU on a lab node and drive it through QMP: sent to the node's ``python3 -``.

Standard library only, for the node's python3.11-minimal.  The plan (JSON: the first argument,
or appended to this source as ``sys.exit(main(PLAN_JSON))``) names the QEMU command line and a
list of steps; the driver starts QEMU with QMP on a unix socket and the serial port on its
stdin/stdout (stdout goes to a file), runs the steps in order, always stops QEMU at the end, and
prints one JSON document::

    {"replies": [...], "serial": "VLS 128,256\\n", "returncode": 0, "stderr": "", "error": null}

Steps (``timeout_s`` is the plan's deadline for the whole run):

- ``{"execute": "stop", "arguments": {...}}``: one QMP command; its reply is appended to
  ``replies`` (an ``id`` is added so events are never mistaken for replies);
- ``{"until": "query-migrate", "key": "status", "values": ["completed", "failed"]}``: repeat a
  query until ``return[key]`` is one of ``values`` (the last reply is appended);
- ``{"wait_serial": "VLS ", "count": 2}``: wait until the serial output holds ``count`` lines
  starting with that text;
- ``{"serial_input": "q"}``: write to the guest's UART;
- ``{"wait_exit": true}``: wait for QEMU to exit on its own (the guest powered off).

A step that fails or times out ends the run with ``error`` set; the replies so far are kept.
QEMU may also refuse to start or exit during the run (``-incoming`` with a state it cannot
load): the driver then reports its exit status and stderr.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from typing import IO, Any

POLL_S = 0.05
# After the last step QEMU gets this long to exit by itself (after "quit") before it is killed.
EXIT_GRACE_S = 5.0


class StepError(Exception):
    pass


class Qmp:
    """A QMP client on a unix socket that gives up when QEMU exits or the deadline passes."""

    def __init__(self, path: str, deadline: float, process: subprocess.Popen[bytes]):
        self.deadline = deadline
        self.process = process
        self.buffer = b""
        self.next_id = 0
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)
                break
            except OSError:
                sock.close()
                self.check_alive()
                self.check_deadline("QMP socket")
                time.sleep(POLL_S)
        self.sock = sock
        self.sock.settimeout(1.0)
        self._read_message()  # the greeting
        self.command("qmp_capabilities")

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise StepError(f"QEMU exited with status {self.process.returncode}")

    def check_deadline(self, what: str) -> None:
        if time.monotonic() > self.deadline:
            raise StepError("timed out waiting for " + what)

    def _read_message(self) -> dict[str, Any]:
        while b"\n" not in self.buffer:
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                self.check_alive()
                self.check_deadline("a QMP reply")
                continue
            if not chunk:
                raise StepError("QMP connection closed")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        message: dict[str, Any] = json.loads(line.decode())
        return message

    def command(self, name: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        self.next_id += 1
        message: dict[str, Any] = {"execute": name, "id": self.next_id}
        if arguments is not None:
            message["arguments"] = arguments
        self.sock.sendall(json.dumps(message).encode() + b"\n")
        while True:
            reply = self._read_message()
            if reply.get("id") == self.next_id:
                return reply


def serial_lines(path: str, prefix: str) -> int:
    try:
        with open(path, "rb") as handle:
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return 0
    return sum(1 for line in text.splitlines() if line.startswith(prefix))


def _read(path: str) -> str:
    with open(path, "rb") as handle:
        return handle.read().decode("utf-8", "replace")


def _send(stdin: IO[bytes] | None, text: str) -> None:
    if stdin is None:
        raise StepError("QEMU has no stdin")
    stdin.write(text.encode())
    stdin.flush()


def run(plan: dict[str, Any]) -> dict[str, Any]:
    """Start QEMU, run the plan's steps, stop QEMU; the result document (see the module)."""
    serial = str(plan["serial"])
    deadline = time.monotonic() + float(plan.get("timeout_s", 120))
    replies: list[dict[str, Any]] = []
    error: str | None = None
    stderr_path = serial + ".stderr"
    with open(serial, "wb") as out, open(stderr_path, "wb") as err:
        process = subprocess.Popen(plan["qemu"], stdin=subprocess.PIPE, stdout=out, stderr=err)
    try:
        qmp = Qmp(plan["qmp"], deadline, process)
        for step in plan["steps"]:
            if "execute" in step:
                replies.append(qmp.command(step["execute"], step.get("arguments")))
            elif "until" in step:
                while True:
                    reply = qmp.command(step["until"])
                    if reply.get("return", {}).get(step["key"]) in step["values"]:
                        replies.append(reply)
                        break
                    qmp.check_deadline(step["until"])
                    time.sleep(0.1)
            elif "wait_serial" in step:
                while serial_lines(serial, step["wait_serial"]) < step.get("count", 1):
                    qmp.check_alive()
                    qmp.check_deadline("serial output " + repr(step["wait_serial"]))
                    time.sleep(POLL_S)
            elif "serial_input" in step:
                _send(process.stdin, step["serial_input"])
            elif "wait_exit" in step:
                while process.poll() is None:
                    qmp.check_deadline("QEMU to exit")
                    time.sleep(POLL_S)
            else:
                raise StepError("unknown step " + json.dumps(step))
    except (StepError, OSError, ValueError) as exc:
        # A socket error is usually QEMU exiting under the driver: say that instead.
        time.sleep(0.2)
        exited = process.poll()
        error = str(exc)
        if exited is not None and "QEMU exited" not in error:
            error = f"QEMU exited with status {exited} ({exc})"
    finally:
        try:
            process.wait(timeout=0 if error is not None else EXIT_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    serial_text = _read(serial)
    stderr_text = _read(stderr_path)
    return {
        "replies": replies,
        "serial": serial_text,
        "returncode": process.returncode,
        "stderr": stderr_text[-4000:],
        "error": error,
    }


def main(plan_json: str) -> int:
    plan = json.loads(plan_json)
    if os.path.exists(plan["qmp"]):
        os.unlink(plan["qmp"])  # a stale socket from an earlier run would accept nothing
    sys.stdout.write(json.dumps(run(plan)) + "\n")
    return 0


# By hand: ``python3 qmp_driver.py PLAN_JSON``.  Sent over SSH the plan is appended to the
# source instead (see vlcalc.lab.inner.driver_script): dropbear caps a command at 9000 bytes.
if __name__ == "__main__" and len(sys.argv) > 1:
    sys.exit(main(sys.argv[1]))
