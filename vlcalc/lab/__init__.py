"""The lab: emulated arm64 nodes with real KVM, booted under QEMU TCG, for testing vlcalc.

``python -m vlcalc.lab build`` fetches Debian 12 arm64 packages and builds boot images
(:mod:`vlcalc.lab.image`); ``python -m vlcalc.lab up`` boots a fleet and writes an Ansible
inventory plus ``known_hosts`` for it (:mod:`vlcalc.lab.cluster`).
"""
