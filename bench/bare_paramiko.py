"""The floor for a Python/paramiko controller: the least a paramiko client can do per node.

``python bench/bare_paramiko.py TARGETS KNOWN_HOSTS KEY USER PROBE FORKS`` where TARGETS has one
``PORT`` per line (host 127.0.0.1).  Per node, from a pool of FORKS threads: TCP connect,
``Transport.start_client``, compare the host key with known_hosts (a dict lookup), public-key
auth with a key loaded once, ``exec_command("python3 -")``, send the probe, read stdout to EOF,
exit status.  No ssh_config, no retries, no deadlines, no parsing of the answer beyond counting
the ones that look like JSON.  Prints ``ok N``; exit 1 if any node failed.
"""

from __future__ import annotations

import base64
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import paramiko


def main() -> int:
    targets, known_hosts, key_path, user, probe_path, forks = sys.argv[1:7]
    ports = [int(line) for line in Path(targets).read_text().split()]
    known: dict[str, bytes] = {}
    for line in Path(known_hosts).read_text().splitlines():
        fields = line.split()
        if len(fields) >= 3:
            known[fields[0]] = base64.b64decode(fields[2])
    key = paramiko.PKey.from_path(key_path)
    probe = Path(probe_path).read_bytes()

    def one(port: int) -> bool:
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport = paramiko.Transport(sock)
        try:
            transport.start_client(timeout=30)
            if transport.get_remote_server_key().asbytes() != known.get(f"[127.0.0.1]:{port}"):
                return False
            transport.auth_publickey(user, key)
            channel = transport.open_session(timeout=30)
            channel.exec_command("python3 -")
            channel.sendall(probe)
            channel.shutdown_write()
            out = bytearray()
            while True:
                chunk = channel.recv(65536)
                if not chunk:
                    break
                out += chunk
            return channel.recv_exit_status() == 0 and out.startswith(b"{")
        finally:
            transport.close()

    with ThreadPoolExecutor(int(forks)) as pool:
        results = list(pool.map(one, ports))
    print("ok", sum(results))
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
