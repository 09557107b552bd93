"""A host's merged variables -> where and how to connect (:class:`Target`), or why not.

Every variable that changes where or how Ansible connects is honoured as Ansible's ssh
connection plugin reads it, or the host is refused with a one-line reason that names the way
out (the collect playbook, or ``--transport openssh``)::

    >>> make_target("web1", ("web",), {"ansible_host": "{{ inventory_hostname }}.example",
    ...     "ansible_ssh_common_args": "-J bastion -o ServerAliveInterval=5"}, {})
    Target(name='web1', host='web1.example', ..., ssh_options=(('proxyjump', 'bastion'),
    ('serveraliveinterval', '5')))

Templated values (``{{ ... }}``) are rendered with Jinja2 in a sandbox against the host's own
variables and the magic variables ``inventory_hostname``, ``inventory_hostname_short`` and
``group_names``; anything else (``hostvars``, ``lookup()``, Ansible's own filters) refuses the
host.  Pure: no I/O.
"""

from __future__ import annotations

import functools
import operator
import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from vlcalc.errors import InventoryError
from vlcalc.inventory.graph import Unsafe, Vaulted, Where
from vlcalc.transport.base import Target

if TYPE_CHECKING:  # Jinja2 loads only for an inventory with a template (~20 ms of every scan)
    import jinja2

__all__ = ["COLLECT_PLAYBOOK", "make_target", "parse_ssh_args"]

COLLECT_PLAYBOOK = "inventories/ansible/collect.yml"
_WAY_OUT_ANSIBLE = f"use the Ansible collect playbook ({COLLECT_PLAYBOOK})"
_WAY_OUT_OPENSSH = "use --transport openssh"

_CONNECTIONS = {
    "ssh": "ssh",
    "paramiko": "ssh",
    "paramiko_ssh": "ssh",
    "smart": "ssh",
    "ansible.builtin.ssh": "ssh",
    "ansible.builtin.paramiko_ssh": "ssh",
    "local": "local",
    "ansible.builtin.local": "local",
}
_AUTO_INTERPRETERS = ("auto", "auto_silent", "auto_legacy", "auto_legacy_silent")
_TRUE = frozenset(("y", "yes", "on", "1", "true", "t"))
_FALSE = frozenset(("n", "no", "off", "0", "false", "f"))
_TEMPLATE_MARKERS = ("{{", "{%", "{#")

# Variables that change how Ansible connects and that vlcalc cannot honour: set (not null) on a
# selected host, they refuse it rather than being ignored.
_UNSUPPORTED = {
    "ansible_password": "password authentication",
    "ansible_ssh_pass": "password authentication",
    "ansible_ssh_password": "password authentication",
    "ansible_private_key": "a private key given as text",
    "ansible_ssh_private_key": "a private key given as text",
    "ansible_private_key_passphrase": "a key passphrase",
    "ansible_ssh_private_key_passphrase": "a key passphrase",
    "ansible_ssh_pkcs11_provider": "a PKCS#11 provider",
    "ansible_host_key_checking": "turning host key checking off",
    "ansible_ssh_host_key_checking": "turning host key checking off",
    "ansible_ssh_executable": "another ssh executable",
}
# The same, only when the host uses become.
_UNSUPPORTED_BECOME = {
    "ansible_become_password": "a become password",
    "ansible_become_pass": "a become password",
    "ansible_become_exe": "another become executable",
    "ansible_become_flags": "become flags",
    "ansible_sudo_pass": "a become password",
    "ansible_sudo_exe": "another become executable",
    "ansible_sudo_flags": "become flags",
}
_SSH_ARGS = ("ansible_ssh_args", "ansible_ssh_common_args", "ansible_ssh_extra_args")
_PARAMIKO_ONLY = (
    "ansible_paramiko_host",
    "ansible_paramiko_port",
    "ansible_paramiko_user",
    "ansible_paramiko_private_key_file",
    "ansible_paramiko_proxy_command",
    "ansible_paramiko_pass",
    "ansible_paramiko_password",
)

# Caps on templates (hostile input): the text, the result, the chain of variables one template
# may pull in, and the size of a string or list that "*" may build.
MAX_TEMPLATE_CHARS = 64 * 1024
MAX_TEMPLATE_DEPTH = 20
_MAX_PRODUCT = 64 * 1024


@functools.cache
def _environment() -> jinja2.sandbox.ImmutableSandboxedEnvironment:
    """Jinja2's immutable sandbox, with ``*`` and ``**`` capped so that ``{{ 'x' * 10**9 }}``
    cannot take the machine's memory; built on first use."""
    import jinja2.sandbox

    class Environment(jinja2.sandbox.ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset(("*", "**", "%"))

        def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
            if operator_name == "%":  # '%*s' % (10**9, 'a')
                _check_sizes(right if isinstance(right, tuple) else (right,), {})
                return operator.mod(left, right)
            if operator_name == "**":
                if isinstance(right, (int, float)) and abs(right) > 64:
                    raise jinja2.exceptions.SecurityError("'**' with an exponent above 64")
                return operator.pow(left, right)
            for sized, count in ((left, right), (right, left)):
                if (
                    isinstance(sized, (str, list, tuple))
                    and isinstance(count, int)
                    and len(sized) * count > _MAX_PRODUCT
                ):
                    raise jinja2.exceptions.SecurityError(
                        f"'*' building more than {_MAX_PRODUCT} items"
                    )
            return operator.mul(left, right)

        def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
            _check_sizes(args, kwargs)  # 'a'.ljust(2**40), 'x'.center(...), lipsum(10**9)
            return super().call(__context, __obj, *args, **kwargs)

    environment = Environment(undefined=jinja2.StrictUndefined, autoescape=False)
    environment.filters = {  # center(10**9), indent(10**9), format, ...: the same cap
        name: _guarded(function) for name, function in environment.filters.items()
    }
    return environment


def _check_sizes(args: Sequence[Any], kwargs: dict[str, Any]) -> None:
    import jinja2.exceptions

    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and value > _MAX_PRODUCT:
            raise jinja2.exceptions.SecurityError(f"a size above {_MAX_PRODUCT} ({value})")


def _guarded(function: Any) -> Any:
    @functools.wraps(function)  # keeps Jinja2's pass_context/pass_environment marks
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _check_sizes(args, kwargs)
        return function(*args, **kwargs)

    return guarded


@functools.lru_cache(maxsize=1024)
def _compile(text: str) -> tuple[jinja2.Template, tuple[str, ...]]:
    """The compiled template and the variables it reads; cached, since one group's template is
    rendered for each of its hosts (compiling is ~1 ms: 100,000 hosts took 65 s uncached)."""
    import jinja2.meta

    environment = _environment()
    parsed = environment.parse(text)
    references = tuple(sorted(jinja2.meta.find_undeclared_variables(parsed)))
    return environment.from_string(parsed), references


class _Refused(Exception):
    """One variable of one host that vlcalc will not use; becomes an InventoryError."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.message = message


class _Vars:
    """Reads (and renders) the connection variables of one host."""

    def __init__(
        self, host: str, groups: tuple[str, ...], variables: dict[str, Any], where: dict[str, Where]
    ) -> None:
        self.host = host
        self.variables = variables
        self.where = where
        self.magic = {
            "inventory_hostname": host,
            "inventory_hostname_short": host.split(".")[0],
            "group_names": list(groups),
        }
        self.rendered: dict[str, Any] = {}

    def error(self, name: str, message: str) -> InventoryError:
        source, line = self.where.get(name, ("", None))
        return InventoryError(f"host {self.host!r}: {name} {message}", source=source, line=line)

    def value(self, name: str, stack: tuple[str, ...] = ()) -> Any:
        """The value of ``name``, templates rendered (magic variables beat inventory ones)."""
        if name in self.magic:
            return self.magic[name]
        if name in self.rendered:
            return self.rendered[name]
        value = self.variables.get(name)
        if isinstance(value, Vaulted):
            raise _Refused(name, f"is vault-encrypted; {_WAY_OUT_ANSIBLE}")
        if (
            isinstance(value, str)
            and not isinstance(value, Unsafe)
            and any(marker in value for marker in _TEMPLATE_MARKERS)
        ):
            value = self._render(name, value, (*stack, name))
        self.rendered[name] = value
        return value

    def _render(self, name: str, text: str, stack: tuple[str, ...]) -> Any:
        import jinja2

        why = f"is templated ({_short(text)}) and cannot be rendered"
        if len(text) > MAX_TEMPLATE_CHARS or len(stack) > MAX_TEMPLATE_DEPTH:
            raise _Refused(name, f"{why}: too long or too deeply nested; {_WAY_OUT_ANSIBLE}")
        try:
            template, references = _compile(text)
            context: dict[str, Any] = {}
            for reference in references:
                if reference in stack:
                    raise _Refused(
                        name, f"{why}: {reference!r} refers to itself; {_WAY_OUT_ANSIBLE}"
                    )
                if reference in self.magic or reference in self.variables:
                    context[reference] = self.value(reference, stack)
            result = template.render(context)
        except _Refused:
            raise
        except jinja2.UndefinedError as exc:
            raise _Refused(
                name,
                f"{why}: {exc.message}; vlcalc renders only the host's own variables, "
                f"inventory_hostname, inventory_hostname_short and group_names: write the "
                f"literal value or {_WAY_OUT_ANSIBLE}",
            ) from exc
        except (jinja2.TemplateError, ArithmeticError, TypeError, ValueError) as exc:
            raise _Refused(name, f"{why}: {_one_line(str(exc))}; {_WAY_OUT_ANSIBLE}") from exc
        except MemoryError:
            raise _Refused(name, f"{why}: it needs too much memory") from None
        if len(result) > MAX_TEMPLATE_CHARS:
            raise _Refused(name, f"{why}: the result is too long")
        if any(marker in result for marker in _TEMPLATE_MARKERS):
            # A template inside a list or dict (Ansible renders those too; vlcalc does not).
            raise _Refused(
                name, f"{why}: it gives another template ({_short(result)}); {_WAY_OUT_ANSIBLE}"
            )
        if result == "None":  # Ansible: no value (e.g. "{{ none }}"), not the text "None"
            raise _Refused(name, f"{why}: it gives no value (None); {_WAY_OUT_ANSIBLE}")
        return result

    def pick(self, *names: str) -> tuple[str, Any]:
        """The variable that ansible-core's connection plugins use: the *last* of ``names`` that
        is set and not null (``ansible_ssh_host`` beats ``ansible_host`` wherever each is set)."""
        chosen: tuple[str, Any] = (names[0], None)
        for name in names:
            if self.variables.get(name) is not None:
                # Ansible renders every name of the option, the ones it then overrides too: a
                # template that fails in any of them fails the host.
                chosen = (name, self.value(name))
        return chosen

    def text(self, *names: str) -> str | None:
        name, value = self.pick(*names)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise _Refused(name, f"must be a string, not {value!r}")
        return str(value)

    def port(self) -> int | None:
        name, value = self.pick("ansible_port", "ansible_ssh_port")
        if value is None:
            return None
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            raise _Refused(name, f"is not a valid TCP port (1-65535): {value!r}")
        return value

    def boolean(self, name: str) -> bool:
        _, value = self.pick(name)
        if value is None:
            return False
        if isinstance(value, bool):
            return value
        normalized = value.strip().lower() if isinstance(value, str) else value
        if normalized in _TRUE or normalized in (1, 1.0):
            return True
        if normalized in _FALSE or normalized in (0, 0.0):
            return False
        raise _Refused(name, f"must be a boolean (true/false, yes/no, 1/0), not {value!r}")


def _short(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:77] + "...")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def make_target(
    host: str, groups: tuple[str, ...], variables: dict[str, Any], where: dict[str, Where]
) -> Target | InventoryError:
    """Where and how to connect to ``host`` given its merged ``variables`` (``where`` says the
    file and line each was set at), or the :class:`InventoryError` that refuses it.

    Example: ``make_target("n1", (), {"ansible_connection": "winrm"}, {})`` returns
    ``InventoryError("host 'n1': ansible_connection is 'winrm'; vlcalc connects with ssh ...")``.
    """
    read = _Vars(host, groups, variables, where)
    try:
        return _target(read)
    except _Refused as refused:
        return read.error(refused.name, refused.message)


def _target(read: _Vars) -> Target:
    connection_name, connection = read.pick("ansible_connection")
    if connection is None:
        transport = "ssh"
    elif isinstance(connection, str) and connection in _CONNECTIONS:
        transport = _CONNECTIONS[connection]
    else:
        raise _Refused(
            connection_name,
            f"is {connection!r}; vlcalc connects with ssh, paramiko, smart and local only: "
            f"{_WAY_OUT_ANSIBLE}",
        )
    for name, what in _UNSUPPORTED.items():
        if read.variables.get(name) is None:
            continue
        if name.endswith("host_key_checking") and read.boolean(name) is not False:
            continue  # checking host keys is what vlcalc does anyway
        raise _Refused(name, f"is set: vlcalc does not support {what}; {_WAY_OUT_ANSIBLE}")
    python = read.text("ansible_python_interpreter") or "python3"
    if python in _AUTO_INTERPRETERS:
        python = "python3"
    become = read.boolean("ansible_become")
    if become:
        method_name, method = read.pick("ansible_become_method")
        if method not in (None, "sudo", "ansible.builtin.sudo"):
            raise _Refused(
                method_name,
                f"is {method!r}: vlcalc becomes root with sudo only; {_WAY_OUT_ANSIBLE}",
            )
        for name, what in _UNSUPPORTED_BECOME.items():
            if read.variables.get(name) is not None:
                raise _Refused(name, f"is set: vlcalc does not support {what}; {_WAY_OUT_ANSIBLE}")
    paramiko = connection in ("paramiko", "paramiko_ssh", "ansible.builtin.paramiko_ssh")
    if paramiko:
        for name in (*_PARAMIKO_ONLY, *_SSH_ARGS):
            if read.variables.get(name) is not None:
                # Ansible's paramiko plugin reads its own variables (ansible_paramiko_host, ...)
                # and, depending on the version, some of the ssh arguments (2.19: none of them).
                raise _Refused(
                    name,
                    "is set on a host with ansible_connection: paramiko, whose connection "
                    "settings vlcalc does not model: use ansible_connection: ssh, or "
                    + _WAY_OUT_ANSIBLE,
                )
    # Ansible's ssh command line: ssh_args, then -o Port/IdentityFile/User from the variables,
    # then ssh_common_args and ssh_extra_args.  ssh keeps the first Port and User it is given
    # and tries every IdentityFile in order.
    port: int | None = None
    user: str | None = None
    keys: list[str] = []
    options: list[tuple[str, str]] = []

    def apply(name: str, parsed: Sequence[tuple[str, str]]) -> None:
        nonlocal port, user
        for keyword, value in parsed:
            if keyword == "port":
                port = port or _ssh_port(name, value)
            elif keyword == "user":
                user = user or value
            elif keyword == "identityfile":
                keys.append(value)
            else:
                options.append((keyword, value))

    def ssh_args(name: str) -> None:
        text = read.text(name) if transport == "ssh" else None
        if text is None:
            return
        try:
            parsed = parse_ssh_args(text, ignore_sharing=name == "ansible_ssh_args")
        except ValueError as exc:
            raise _Refused(name, f"{exc}; {_WAY_OUT_OPENSSH}") from None
        apply(name, parsed)

    ssh_args("ansible_ssh_args")
    port_variable = read.port()  # read (and checked) even when ssh_args named the port first
    user_variable = read.text("ansible_user", "ansible_ssh_user")
    port, user = port or port_variable, user or user_variable
    key_file = read.text("ansible_private_key_file", "ansible_ssh_private_key_file")
    if key_file is not None:
        keys.append(key_file)
    ssh_args("ansible_ssh_common_args")
    ssh_args("ansible_ssh_extra_args")
    host_name, _ = read.pick("ansible_host", "ansible_ssh_host")
    host = read.text("ansible_host", "ansible_ssh_host")
    if host is not None:
        _check_host(host_name, host)
    return Target(
        name=read.host,
        host=host or read.host,
        port=port,
        user=user,
        key_file=keys[0] if keys else None,
        connection=transport,
        python=python,
        become=become,
        become_user=read.text("ansible_become_user", "ansible_sudo_user"),
        ssh_options=(*(("identityfile", key) for key in keys[1:]), *options),
        read_ssh_config=not paramiko,  # Ansible's paramiko plugin reads no ssh_config
    )


def _check_host(name: str, host: str) -> None:
    """ssh would read ``user@host`` and ``ssh://host:port`` as more than a host name."""
    if not host.strip():
        raise _Refused(name, "is empty: name the address to connect to")
    if "@" in host or host.startswith("ssh://"):
        raise _Refused(
            name,
            f"is {host!r}: write the user in ansible_user and the port in ansible_port",
        )


def _ssh_port(name: str, value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise _Refused(name, f"has a port that is not a TCP port (1-65535): {value!r}")
    return int(value)


# ssh's options that take an argument (OpenSSH's getopt string), to split "-p2222" like ssh does.
_SSH_WITH_ARGUMENT = frozenset("BbcDEeFIiJLlmOoPpQRSWw")
_SSH_FLAGS = frozenset("46AaCfGgKkMNnqsTtVvXxYy")
# Options of connection sharing and compression: they change neither where nor as whom vlcalc
# connects, and each connection of vlcalc is used once.  Ignored in ansible_ssh_args only, whose
# default ("-C -o ControlMaster=auto -o ControlPersist=60s") every Ansible user has.
_SHARING = frozenset(("controlmaster", "controlpersist", "controlpath", "compression"))


@functools.lru_cache(maxsize=1024)  # a fleet shares a few texts: shlex costs ~0.2 ms per call
def parse_ssh_args(text: str, *, ignore_sharing: bool = False) -> tuple[tuple[str, str], ...]:
    """``ansible_ssh_common_args``-style text -> ``(lower-cased ssh_config keyword, value)``, in
    order, as ssh reads its command line: ``-o Key=Value``, ``-o 'Key Value'``, ``-J``, ``-i``,
    ``-p`` and ``-l`` (also written attached: ``-p2222``).  Anything else raises ``ValueError``
    with a one-line reason.

    Example: ``parse_ssh_args("-o ProxyJump=b1 -p 2222")`` is
    ``(("proxyjump", "b1"), ("port", "2222"))``.
    """
    try:
        words = [word.strip() for word in shlex.split(text) if word.strip()]
    except ValueError as exc:
        raise ValueError(f"cannot be split like a shell line ({exc})") from None
    result: list[tuple[str, str]] = []
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if not word.startswith("-") or word == "-":
            raise ValueError(f"has {word!r}, which is not an ssh option")
        letters = word[1:]
        while letters:
            letter, letters = letters[0], letters[1:]
            if letter in _SSH_FLAGS:
                if ignore_sharing and letter == "C":
                    continue
                raise ValueError(f"has ssh option -{letter}, which vlcalc does not honour")
            if letter not in _SSH_WITH_ARGUMENT:
                raise ValueError(f"has {word!r}, which is not an ssh option")
            if letters:
                argument, letters = letters, ""
            elif index < len(words):
                argument = words[index]
                index += 1
            else:
                raise ValueError(f"has -{letter} without its argument")
            if letter == "o":
                keyword, value = _config_line(argument)
                if not (ignore_sharing and keyword in _SHARING):
                    result.append((keyword, value))
            elif letter in "Jipl":
                keyword = {"J": "proxyjump", "i": "identityfile", "p": "port", "l": "user"}[letter]
                result.append((keyword, argument))
            else:
                raise ValueError(f"has ssh option -{letter}, which vlcalc does not honour")
    return tuple(result)


def _config_line(argument: str) -> tuple[str, str]:
    """``"ProxyCommand=ssh -W %h:%p b"`` or ``"Port 2222"`` -> ``(keyword, value)`` as ssh
    reads an ``-o`` argument: a keyword, then ``=`` or whitespace, then the value (unquoted)."""
    text = argument.strip()
    keyword_end = next((i for i, c in enumerate(text) if c in "= \t"), len(text))
    keyword, rest = text[:keyword_end], text[keyword_end:].lstrip(" \t")
    if rest.startswith("="):
        rest = rest[1:].lstrip(" \t")
    if not keyword or not rest:
        raise ValueError(f"has -o {argument!r}, which is not 'Keyword=value'")
    if len(rest) >= 2 and rest[0] == rest[-1] == '"':
        rest = rest[1:-1]
    return keyword.lower(), rest
