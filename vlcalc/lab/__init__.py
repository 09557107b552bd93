"""The lab: emulated arm64 nodes with real KVM, booted under QEMU TCG, for testing vlcalc.

An x86 machine cannot run arm64 KVM, but QEMU can emulate an arm64 machine with EL2
(``virtualization=on``); a stock Debian arm64 kernel then brings up KVM inside it, and that node's
``/dev/kvm`` answers the real ioctls for whatever SVE vector lengths the emulated CPU has.  Each
node gets its own set, so vlcalc's answers can be checked against a known truth.

Commands (``vlcalc lab ...`` once wired into the main CLI)::

    python -m vlcalc.lab build                   # fetch Debian 12 arm64 packages, build images
    python -m vlcalc.lab up --dir DIR \\
        --node n1=128,256,384,512 --node n2=128,256,512,kernel=6.12 \\
        --node n3=none --node n4=128,256,append=kvm-arm.mode=nvhe
    python -m vlcalc.lab down --dir DIR

``up`` prints ``inventory: DIR/inventory.yml``, ``known_hosts: DIR/known_hosts`` and
``key: DIR/id_ed25519`` on stdout and runs until Ctrl-C, SIGTERM or ``down``.  Every node is
``root`` (and an unprivileged ``probe`` user, uid 1000, not in group ``kvm``, who may
``sudo -n``) on ``127.0.0.1:PORT``; connect with strict host-key checking::

    ssh -o StrictHostKeyChecking=yes -o UserKnownHostsFile=DIR/known_hosts \\
        -i DIR/id_ed25519 -p PORT root@127.0.0.1 python3 - < vlcalc/probe/probe.py

Nodes run ``python3`` = Debian's python3.11-minimal plus ``json`` (what the probe may rely on).
Ansible modules need more of the standard library: point them at ``/usr/bin/python3-ansible``::

    ansible -i DIR/inventory.yml all -m ping -e ansible_python_interpreter=/usr/bin/python3-ansible

Host prerequisites (Debian 12): ``qemu-system-arm`` (QEMU 7.2) and ``ipxe-qemu`` (the
virtio-net option ROM; only recommended by qemu-system-arm), ``openssh-client``, ``apt`` and
``dpkg`` with a bookworm source in ``/etc/apt``; Python packages ``pyyaml`` and ``cryptography``
(a paramiko dependency).  Images are cached in ``$VLCALC_LAB_CACHE`` or ``~/.cache/vlcalc-lab``
(about 450 MB); nothing is written to the host's dpkg state.

Image variants: ``build --qemu`` adds Debian's arm64 QEMU 7.2 (and only the libraries of its
DT_NEEDED closure) for inner KVM guests, ``build --libvirt`` also libvirt's ``virsh`` with its QEMU
driver; a node asks for one with ``--node n1=128,256,qemu`` (or ``libvirt``) and gets 768 MiB.

Modules: :mod:`vlcalc.lab.image` (packages -> images), :mod:`vlcalc.lab.cpio` (initramfs writer),
:mod:`vlcalc.lab.elf` (DT_NEEDED reader), :mod:`vlcalc.lab.cluster` (QEMU fleet, inventory,
known_hosts), :mod:`vlcalc.lab.inner` and :mod:`vlcalc.lab.qmp_driver` (inner QEMU on a node,
driven over QMP), :mod:`vlcalc.lab.cli`.
"""
