"""Ansible inventories -> hosts with connection settings, honoured exactly as Ansible would or
refused per host with a one-line reason.

The inventory is what operators already pass to ``ansible -i``: a YAML or INI file, Ansible's
JSON (an inventory script's ``--list``, or ``ansible-inventory --list`` on stdin), an executable
script, or a directory of them, with ``group_vars/`` and ``host_vars/`` beside it::

    all:
      vars: {ansible_user: ops}
      children:
        rack1:
          hosts:
            node[01:04].example:
    >>> inv = parse_inventory(text, "fleet.yaml")
    >>> inv.hosts["node01.example"].target
    Target(name='node01.example', host='node01.example', port=None, user='ops', ...)

The package's modules, bottom to top: ``graph`` (groups, hosts, ranges, variable precedence;
pure), ``yamlfile`` and ``ini`` (the two text formats; pure), ``connect`` (variables -> Target,
Jinja2 templates, ssh arguments; pure), ``sources`` (files, directories, scripts, stdin,
group_vars/host_vars: the I/O edge) and ``limit`` (``--limit``).  Every problem is an
:class:`vlcalc.errors.InventoryError` that names the file and, when known, the line.

Where Ansible only *warns* about something that would make vlcalc scan the wrong set of hosts or
connect to the wrong place (a group written as a list, an unknown key such as ``host:`` inside a
group, a name used for both a host and a group, a numeric range that expands to nothing), vlcalc
refuses with an error instead.  A duplicate mapping key and a ``--limit`` pattern that matches
nothing are the exceptions: Ansible warns and goes on, and so does vlcalc (through the ``warn``
callback), so that both act on the same hosts and variables.

Input is untrusted and capped (``MAX_*``, README "Limits and bad input"): file size, YAML
nodes, aliases, nesting, integer digits, hosts per range and per inventory, files, templates.
Each cap is checked before the thing it limits is built, so a hostile file costs little time and
memory.
"""

from __future__ import annotations

from vlcalc.inventory.connect import COLLECT_PLAYBOOK, make_target, parse_ssh_args
from vlcalc.inventory.graph import (
    MAX_GROUP_DEPTH,
    MAX_GROUPS,
    MAX_HOST_ENTRIES,
    MAX_HOSTS,
    MAX_HOSTS_PER_RANGE,
    MAX_INTEGER_DIGITS,
    MAX_INVENTORY_BYTES,
    MAX_YAML_DEPTH,
    MAX_YAML_EXPANDED_NODES,
    MAX_YAML_NODES,
    Host,
    Inventory,
)
from vlcalc.inventory.limit import select
from vlcalc.inventory.sources import load_inventory, parse_inventory

__all__ = [
    "COLLECT_PLAYBOOK",
    "MAX_GROUPS",
    "MAX_GROUP_DEPTH",
    "MAX_HOSTS",
    "MAX_HOSTS_PER_RANGE",
    "MAX_HOST_ENTRIES",
    "MAX_INTEGER_DIGITS",
    "MAX_INVENTORY_BYTES",
    "MAX_YAML_DEPTH",
    "MAX_YAML_EXPANDED_NODES",
    "MAX_YAML_NODES",
    "Host",
    "Inventory",
    "load_inventory",
    "make_target",
    "parse_inventory",
    "parse_ssh_args",
    "select",
]
