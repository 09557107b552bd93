"""The lab's command line: ``build``, ``up`` and ``down``.

    python -m vlcalc.lab build [--kernel 6.1 --kernel 6.12] [--refresh] [--no-sudo] [--qemu]
        [--libvirt]
    python -m vlcalc.lab up --node n1=128,256,384,512 --node n2=128,256,512 --node n3=none \\
        [--kernel 6.1] [--append kvm-arm.mode=nvhe] --dir DIR
    python -m vlcalc.lab down --dir DIR

``up`` prints the inventory and known_hosts paths on stdout (progress goes to stderr) and keeps
the fleet running until Ctrl-C, SIGTERM or ``down --dir DIR``.  Per-node options go after the
VLs: ``--node n4=128,256,kernel=6.12,append=kvm-arm.mode=nvhe``; ``qemu`` boots a node with
arm64 QEMU inside: ``--node n5=128,256,qemu``.  The image cache is
``$VLCALC_LAB_CACHE`` or ``~/.cache/vlcalc-lab`` unless ``--cache`` says otherwise.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import NoReturn, TextIO

from vlcalc.errors import VlcalcError
from vlcalc.lab import cluster, image
from vlcalc.model import ExitCode, printable

# vlcalc's one exit-code scheme: 1 would mean "the answer falls short", which a lab never says.
EXIT_OK = ExitCode.OK
EXIT_ERROR = ExitCode.FAILED
EXIT_USAGE = ExitCode.INVALID_INPUT
EXIT_INTERRUPTED = ExitCode.INTERRUPTED


class _Parser(argparse.ArgumentParser):
    """argparse with vlcalc's usage errors: one ``vlcalc: error:`` line, exit 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"vlcalc: error: {printable(message)} (see '{self.prog} --help')\n")
        raise SystemExit(EXIT_USAGE)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vlcalc lab",
        description="Emulated arm64 KVM nodes for testing vlcalc.",
        epilog=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--cache", type=Path, help="image cache (default: $VLCALC_LAB_CACHE)")
    sub = parser.add_subparsers(dest="command", required=True)

    build = sub.add_parser("build", help="fetch Debian arm64 packages and build boot images")
    build.add_argument(
        "--kernel",
        action="append",
        choices=sorted(image.KERNEL_META_PACKAGES),
        help="kernel line to build (repeatable; default: all)",
    )
    build.add_argument("--refresh", action="store_true", help="re-read the archive, re-download")
    build.add_argument("--no-sudo", action="store_true", help="leave sudo out of the image")
    build.add_argument(
        "--qemu", action="store_true", help="also build the variant with arm64 QEMU inside"
    )
    build.add_argument(
        "--libvirt", action="store_true", help="also build the variant with QEMU and libvirt"
    )

    up = sub.add_parser("up", help="boot a fleet and keep it running until Ctrl-C or down")
    up.add_argument(
        "--node",
        action="append",
        required=True,
        metavar="NAME=VLS[,kernel=K][,append=ARG][,qemu|libvirt]",
        help="a node and its SVE VLs in bits, or 'none' for sve=off (repeatable)",
    )
    up.add_argument(
        "--kernel",
        default=image.DEFAULT_KERNEL,
        choices=sorted(image.KERNEL_META_PACKAGES),
        help="default kernel line",
    )
    up.add_argument("--append", action="append", default=[], help="kernel argument for every node")
    up.add_argument("--dir", type=Path, required=True, help="where the fleet's files go")
    up.add_argument(
        "--timeout", type=float, default=cluster.DEFAULT_BOOT_TIMEOUT_S, help="boot timeout, s"
    )

    down = sub.add_parser("down", help="stop the fleet started with up --dir DIR")
    down.add_argument("--dir", type=Path, required=True)
    return parser


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM (from `down` or a CI timeout) and SIGHUP take the same teardown path as Ctrl-C.
    raise KeyboardInterrupt


def _up(args: argparse.Namespace, out: TextIO) -> int:
    specs = []
    for text in args.node:
        spec = cluster.parse_node(text, default_kernel=args.kernel)
        specs.append(replace(spec, cmdline=(*args.append, *spec.cmdline)))
    # Explicit handlers: a shell starts background jobs with SIGINT ignored, and a closed
    # terminal sends SIGHUP; every way of ending `up` must stop the QEMUs.
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _raise_interrupt)
    with cluster.Fleet(specs, args.dir, cache=args.cache, boot_timeout_s=args.timeout) as fleet:
        print(f"inventory: {fleet.inventory_path}", file=out)
        print(f"known_hosts: {fleet.known_hosts_path}", file=out)
        print(f"key: {fleet.key_path}", file=out)
        out.flush()
        print("vlcalc-lab: up; Ctrl-C or `down --dir` stops the fleet", file=sys.stderr)
        try:
            while fleet.nodes and all(cluster.node_running(n) for n in fleet.nodes):
                time.sleep(1.0)
        except KeyboardInterrupt:
            return EXIT_OK
        print("vlcalc-lab: a node stopped; tearing the fleet down", file=sys.stderr)
        return EXIT_ERROR


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the lab command line; returns the exit code (0 ok, 2 error or usage, 130 ^C)."""
    stdout = out or sys.stdout
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return EXIT_OK if exc.code == 0 else EXIT_USAGE
    try:
        if args.command == "build":
            started = time.monotonic()
            lines = args.kernel or sorted(image.KERNEL_META_PACKAGES)
            images = list(
                image.build(
                    lines, cache=args.cache, refresh=args.refresh, sudo=not args.no_sudo
                ).values()
            )
            if args.qemu:
                images += image.build(
                    lines, cache=args.cache, sudo=not args.no_sudo, qemu=True
                ).values()
            if args.libvirt:
                images += image.build(
                    lines, cache=args.cache, sudo=not args.no_sudo, libvirt=True
                ).values()
            for img in images:
                name = image.image_name(img.line, img.qemu, img.libvirt)
                print(f"{name}\t{img.release}\t{img.vmlinuz}\t{img.initramfs}", file=stdout)
            print(f"vlcalc-lab: built in {time.monotonic() - started:.1f} s", file=sys.stderr)
            return EXIT_OK
        if args.command == "up":
            return _up(args, stdout)
        stopped = cluster.down(args.dir)
        print(f"vlcalc-lab: stopped {stopped} node(s)", file=sys.stderr)
        return EXIT_OK
    except VlcalcError as exc:
        print(f"vlcalc: error: {printable(str(exc))}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
