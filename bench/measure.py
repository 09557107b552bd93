"""Run one command and account for the controller side of it, like ``/usr/bin/time -v``.

``run_measured(argv)`` starts ``argv`` in its own session, waits for it with ``os.wait4`` and
returns its wall time, user+system CPU time and peak RSS *including every descendant it waited
for* (that is what the kernel folds into a child's rusage: for ``xargs ssh`` all the ssh
processes, for ansible its forked workers and their ssh children).  The bench process makes
itself a child subreaper first, so a descendant that daemonises (an ssh ControlPersist master,
say) is re-parented to it and is found, reported and reaped rather than silently left out.

``ru_maxrss`` of a process tree is the largest single process, not the sum of processes alive at
once, so a sampler also walks ``/proc/PID/task/*/children`` every ``sample_s`` and records the
largest sum of RSS over the tree (shared pages counted once per process: an upper bound).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_PR_SET_CHILD_SUBREAPER = 36
_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def become_subreaper() -> bool:
    """Make orphaned descendants of this process its children (Linux), so they can be reaped."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


@dataclass(frozen=True)
class Measurement:
    wall_s: float
    user_s: float
    sys_s: float
    maxrss_kb: int  # the largest single process of the tree (rusage)
    tree_rss_kb: int  # the largest sampled sum of RSS over the live tree (0 if not sampled)
    exit_code: int
    load_1m: float  # the 1-minute load average just before the run
    strays: int  # descendants that outlived the command (reaped and counted)

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as handle:
                found += [int(word) for word in handle.read().split()]
        except OSError:
            continue
    return found


def _tree(root: int) -> list[int]:
    pids, frontier = [root], [root]
    while frontier:
        nxt: list[int] = []
        for pid in frontier:
            nxt += _children(pid)
        pids += nxt
        frontier = nxt
    return pids


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * _PAGE_KB
    except (OSError, IndexError, ValueError):
        return 0


class _TreeSampler(threading.Thread):
    def __init__(self, root: int, interval_s: float):
        super().__init__(name="rss-sampler", daemon=True)
        self.root = root
        self.interval_s = interval_s
        self.peak_kb = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.interval_s):
            total = sum(_rss_kb(pid) for pid in _tree(self.root))
            self.peak_kb = max(self.peak_kb, total)


def _session_members(sid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # state ppid pgrp session
            members.append(int(entry))
    return members


def run_measured(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    stdin: Path | None = None,
    stdout: Path,
    stderr: Path,
    sample_s: float = 0.25,
    timeout_s: float = 3600.0,
) -> Measurement:
    """Run ``argv`` with stdout/stderr to files; see the module docstring."""
    load = os.getloadavg()[0]
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(stdout, "wb"))
        err = stack.enter_context(open(stderr, "wb"))
        inp = stack.enter_context(open(stdin or os.devnull, "rb"))
        started = time.monotonic()
        proc = subprocess.Popen(
            list(argv),
            stdin=inp,
            stdout=out,
            stderr=err,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    sampler = _TreeSampler(proc.pid, sample_s) if sample_s > 0 else None
    if sampler is not None:
        sampler.start()
    killer = threading.Timer(timeout_s, lambda: _kill_group(proc.pid))
    killer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        killer.cancel()
    wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if sampler is not None:
        sampler.stop.set()
        sampler.join()
    user, system, maxrss = usage.ru_utime, usage.ru_stime, usage.ru_maxrss
    # Descendants that outlived the command were re-parented to us (subreaper): end and count them.
    strays = [pid for pid in _session_members(proc.pid) if pid != proc.pid]
    for pid in strays:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 15)
    for pid in strays:
        with contextlib.suppress(ChildProcessError):
            _, _, extra = os.wait4(pid, 0)
            user, system = user + extra.ru_utime, system + extra.ru_stime
            maxrss = max(maxrss, extra.ru_maxrss)
    return Measurement(
        wall_s=wall,
        user_s=user,
        sys_s=system,
        maxrss_kb=maxrss,
        tree_rss_kb=sampler.peak_kb if sampler is not None else 0,
        exit_code=proc.returncode,
        load_1m=load,
        strays=len(strays),
    )


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, 9)
