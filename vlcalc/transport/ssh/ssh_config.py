"""OpenSSH's ssh_config language, read and evaluated the way OpenSSH 9.x ``ssh`` does it.

Pure apart from reading the files once (:func:`load`) and running ``Match exec`` commands (an
injected callable): a host is evaluated in one pass over the lines, in file order, with
``Include`` files spliced in where they appear, and the *first* value of each option wins
(``IdentityFile`` and ``CertificateFile`` accumulate).  Command-line options (``ssh -o``, ``-p``,
``-l``, ``-i``; for vlcalc the inventory's) come before every file, so they win.

Semantics followed (checked against ``ssh -G`` by ``tests/test_ssh_config.py``):

* Lines: leading/trailing white space ignored, ``#`` lines and empty lines skipped, the keyword
  is case-insensitive and separated from its arguments by white space or one ``=``; arguments
  are split like OpenSSH's ``argv_split`` (single and double quotes, backslash escapes, a ``#``
  at the start of an argument ends the line).  ``ProxyCommand``/``LocalCommand``/
  ``RemoteCommand``/``KnownHostsCommand`` take the rest of the line as it is.  An unknown
  keyword, a missing or extra argument or a bad value is an error anywhere in the file, even in
  a block that does not apply (as in ``ssh``).
* ``Host`` patterns (``*``, ``?``, ``!negated``; case-sensitive, one pattern per argument) are
  matched against the host name as given; ``Match`` criteria ``all``, ``host`` (the
  ``HostName`` so far, case-insensitive), ``originalhost``, ``user`` (the ``User`` so far, or
  ``-l``, or the local user), ``localuser`` and ``exec``, each optionally negated, all of them
  evaluated in the same single pass.  ``Match canonical``/``final`` need a second pass
  (:class:`UnsupportedConfigError`).
* ``Include``: each argument a glob, sorted; relative to ``~/.ssh`` for user configs and
  ``/etc/ssh`` for the system one; an ``Include`` in a block that does not apply reads its files
  but applies nothing; a ``Host``/``Match`` in an included file ends at the end of that file.
  Included files must not be writable by others (``Bad owner or permissions``).  Nesting is
  limited to 16 levels.
* ``%`` tokens and ``${ENV}``: see :func:`expand`.

Example::

    config = load(user_config="/home/ops/.ssh/config", system_config=None, local=Local.current())
    options = evaluate(config, Query(host="node01", user="ops", port=None))
    options.first("hostname"), options.identity_files      # ("10.0.0.11", ["~/.ssh/id_%h"])
"""

from __future__ import annotations

import functools
import glob as globbing
import hashlib
import os
import pwd
import re
import socket
import stat
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from vlcalc.errors import ConfigError, JumpLoopError, UnsupportedConfigError

#: OpenSSH's READCONF_MAX_DEPTH.
MAX_INCLUDE_DEPTH = 16
#: OpenSSH's SSH_MAX_IDENTITY_FILES / SSH_MAX_CERTIFICATE_FILES.
MAX_IDENTITY_FILES = 100

#: Keywords whose value is the rest of the line, quotes and all (OpenSSH's ``parse_command``).
RAW_KEYWORDS = frozenset({"proxycommand", "localcommand", "remotecommand", "knownhostscommand"})
#: Keywords that collect every value instead of keeping the first.
MULTI_KEYWORDS = frozenset(
    {"identityfile", "certificatefile", "localforward", "remoteforward", "dynamicforward",
     "sendenv", "setenv", "canonicaldomains", "canonicalizepermittedcnames"}
)  # fmt: skip
#: Keywords that take several arguments on one line (the first such line wins).
LIST_KEYWORDS = frozenset(
    {"userknownhostsfile", "globalknownhostsfile", "sendenv", "setenv", "canonicaldomains",
     "canonicalizepermittedcnames", "ignoreunknown", "localforward", "remoteforward",
     "permitremoteopen", "channeltimeout", "ipqos", "rekeylimit", "addkeystoagent",
     "hostkeyalgorithms", "preferredauthentications", "kexalgorithms", "ciphers", "macs"}
)  # fmt: skip
_YES_NO = frozenset({"yes", "no", "true", "false"})
#: Value checks OpenSSH makes at parse time (so also in blocks that do not apply).
_FLAG_VALUES: dict[str, frozenset[str]] = {
    "identitiesonly": _YES_NO,
    "hashknownhosts": _YES_NO,
    "batchmode": _YES_NO,
    "checkhostip": _YES_NO,
    "pubkeyauthentication": _YES_NO | {"unbound", "host-bound"},
    "hostbasedauthentication": _YES_NO,
    "gssapiauthentication": _YES_NO,
    "gssapidelegatecredentials": _YES_NO,
    "permitlocalcommand": _YES_NO,
    "proxyusefdpass": _YES_NO,
    "stdinnull": _YES_NO,
    "forkafterauthentication": _YES_NO,
    "stricthostkeychecking": _YES_NO | {"ask", "accept-new", "off"},
    "controlmaster": _YES_NO | {"ask", "auto", "autoask"},
    "requesttty": _YES_NO | {"force", "auto"},
    "canonicalizehostname": _YES_NO | {"always"},
    "addressfamily": frozenset({"any", "inet", "inet6"}),
    "sessiontype": frozenset({"none", "subsystem", "default"}),
    "tunnel": _YES_NO | {"point-to-point", "ethernet"},
}

#: Every keyword ssh 9.x accepts (lower case).  Others are "Bad configuration option" unless
#: ``IgnoreUnknown`` names them.
KNOWN_KEYWORDS = frozenset(
    """host match include ignoreunknown hostname port user identityfile identitiesonly
    certificatefile identityagent proxyjump proxycommand userknownhostsfile globalknownhostsfile
    stricthostkeychecking connecttimeout hostkeyalias hashknownhosts batchmode checkhostip
    addressfamily bindaddress bindinterface canonicaldomains canonicalizefallbacklocal
    canonicalizehostname canonicalizemaxdots canonicalizepermittedcnames casignaturealgorithms
    challengeresponseauthentication ciphers clearallforwardings compression connectionattempts
    controlmaster controlpath controlpersist dynamicforward enableescapecommandline
    enablesshkeysign escapechar exitonforwardfailure fingerprinthash forkafterauthentication
    forwardagent forwardx11 forwardx11timeout forwardx11trusted gatewayports
    gssapiauthentication gssapidelegatecredentials gssapikeyexchange gssapiclientidentity
    gssapiserveridentity gssapirenewalforcesrekey gssapitrustdns gssapikexalgorithms
    hostbasedacceptedalgorithms hostbasedkeytypes hostbasedauthentication hostkeyalgorithms
    ipqos kbdinteractiveauthentication kbdinteractivedevices kexalgorithms knownhostscommand
    localcommand localforward loglevel logverbose macs nohostauthenticationforlocalhost
    numberofpasswordprompts passwordauthentication permitlocalcommand permitremoteopen
    pkcs11provider preferredauthentications proxyusefdpass pubkeyacceptedalgorithms
    pubkeyacceptedkeytypes pubkeyauthentication rekeylimit remotecommand remoteforward
    requesttty requiredrsasize revokedhostkeys securitykeyprovider sendenv serveralivecountmax
    serveraliveinterval sessiontype setenv smartcarddevice stdinnull streamlocalbindmask
    streamlocalbindunlink syslogfacility tcpkeepalive keepalive tunnel tunneldevice
    updatehostkeys usekeychain verifyhostkeydns visualhostkey xauthlocation addkeystoagent
    protocol cipher fallbacktorsh globalknownhostsfile2 rhostsauthentication
    userknownhostsfile2 useroaming usersh useprivilegedport rsaauthentication
    rhostsrsaauthentication compressionlevel skeyauthentication tisauthentication
    kerberosauthentication kerberostgtpassing afstokenpassing dsaauthentication
    identityfile2""".split()  # noqa: SIM905 - a word list reads better as text
)

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_TIME_PART = re.compile(r"(\d+)([sSmMhHdDwW]?)")
_TIME_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


# ---------------------------------------------------------------------------- the local side


@dataclass(frozen=True)
class Local:
    """What ssh knows about this side: the home directory and name of the running user (from
    the password database, as ssh reads them, not ``$HOME``), the uid, the host name and the
    environment (for ``${VAR}``).

    Example: ``Local(home="/home/ops", user="ops", uid=1000, hostname="ctl.example.com")``.
    """

    home: str
    user: str
    uid: int
    hostname: str
    environ: tuple[tuple[str, str], ...] = ()

    @classmethod
    def current(cls) -> Local:
        try:
            entry = pwd.getpwuid(os.getuid())
            home, user = entry.pw_dir, entry.pw_name
        except KeyError:  # a container without a passwd entry (ssh itself refuses to run)
            home, user = os.path.expanduser("~"), str(os.getuid())
        return cls(
            home=home,
            user=user,
            uid=os.getuid(),
            hostname=socket.gethostname(),
            environ=tuple(os.environ.items()),
        )

    def env(self, name: str) -> str | None:
        for key, value in self.environ:
            if key == name:
                return value
        return None


# ---------------------------------------------------------------------------- lexing


def argv_split(text: str) -> list[str]:
    """OpenSSH's ``argv_split(s, ..., terminate_on_comment=1)``; ``ValueError`` on an open quote.

    >>> argv_split('"a b" c\\\\ d e#f # comment')
    ['a b', 'c d', 'e#f']
    """
    args: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] in " \t":
            i += 1
            continue
        if text[i] == "#":
            break
        quote = ""
        arg: list[str] = []
        while i < n:
            ch = text[i]
            if ch == "\\":
                following = text[i + 1] if i + 1 < n else ""
                if following in ("'", '"', "\\") or (not quote and following == " "):
                    arg.append(following)
                    i += 2
                    continue
                arg.append(ch)
            elif not quote and ch in " \t":
                break
            elif not quote and ch in "'\"":
                quote = ch
            elif quote and ch == quote:
                quote = ""
            else:
                arg.append(ch)
            i += 1
        if i >= n and quote:
            raise ValueError("invalid quotes")
        args.append("".join(arg))
    return args


@dataclass(frozen=True)
class Line:
    """One configuration line: ``keyword`` (lower case), its split ``args``, the ``raw`` rest of
    the line (for the command keywords), and where it came from (``source``: a path, or
    ``"command line"``)."""

    keyword: str
    args: tuple[str, ...]
    raw: str
    source: str
    number: int

    @property
    def where(self) -> str:
        return f"{self.source} line {self.number}"


def split_line(text: str, source: str, number: int) -> Line | None:
    """A line as OpenSSH's ``process_config_line`` cuts it, or ``None`` for blanks/comments."""
    text = text.strip(" \t\r\n\f")
    if not text or text.startswith("#"):
        return None
    match = re.match(r"[^ \t\r\n\"=]*", text)
    keyword = match.group(0) if match else ""
    rest = text[len(keyword) :]
    rest = rest.lstrip(" \t\r\n")
    if rest.startswith("="):
        rest = rest[1:].lstrip(" \t\r\n")
    keyword = keyword.lower()
    where = f"{source} line {number}"
    if not keyword:
        raise ConfigError(f"{where}: a line must start with a keyword", path=source)
    if not rest:
        raise ConfigError(f'{where}: no argument after keyword "{keyword}"', path=source)
    try:
        args = tuple(argv_split(rest))
    except ValueError:
        raise ConfigError(f"{where}: invalid quotes", path=source) from None
    raw = rest[len(rest) - len(rest.lstrip(" \t=")) :] if keyword in RAW_KEYWORDS else rest
    return Line(keyword, args, raw, source, number)


def convtime(text: str) -> int | None:
    """OpenSSH's time format (``90``, ``1m30s``, ``2h``) in seconds; ``None`` if malformed.

    >>> convtime("1m30s")
    90
    """
    if not text:
        return None
    total, position = 0, 0
    while position < len(text):
        part = _TIME_PART.match(text, position)
        if part is None:
            return None
        total += int(part.group(1)) * _TIME_UNITS[part.group(2).lower()]
        position = part.end()
    return total


def _validate(line: Line, ignore_unknown: Sequence[str]) -> None:
    """The checks ssh makes on every line, active or not."""
    keyword, args, where = line.keyword, line.args, line.where
    if keyword not in KNOWN_KEYWORDS:
        if any(match_pattern_list(keyword, pattern) == 1 for pattern in ignore_unknown):
            return
        raise ConfigError(f"{where}: Bad configuration option: {keyword}", path=line.source)
    if not args and keyword not in RAW_KEYWORDS:
        raise ConfigError(f'{where}: no argument after keyword "{keyword}"', path=line.source)
    if keyword in ("host", "match", "include") or keyword in RAW_KEYWORDS:
        return
    if keyword not in LIST_KEYWORDS and len(args) > 1 and keyword != "proxyjump":
        raise ConfigError(
            f"{where}: keyword {keyword} extra arguments at end of line", path=line.source
        )
    value = args[0]
    if keyword == "proxyjump":
        text = line.raw.split("#", 1)[0].rstrip()
        if text.lower() != "none" and not all(valid_jump(part) for part in text.split(",")):
            raise ConfigError(f'{where}: Invalid ProxyJump "{text}"', path=line.source)
        return
    if "" in args:  # `User ""`: ssh refuses the whole config (only ProxyJump/-Command may be)
        raise ConfigError(f"{where}: Missing argument.", path=line.source)
    if keyword == "port" and not _valid_port(value):
        raise ConfigError(f"{where}: Bad port '{value}'.", path=line.source)
    if keyword == "connecttimeout" and value.lower() != "none" and convtime(value) is None:
        raise ConfigError(f"{where}: invalid time value.", path=line.source)
    allowed = _FLAG_VALUES.get(keyword)
    if allowed is not None and value.lower() not in allowed:
        raise ConfigError(f'{where}: unsupported option "{value}".', path=line.source)
    if (
        keyword == "identityagent"
        and value.startswith("$")
        and not value.startswith("${")
        and not _ENV_NAME.match(value[1:])
    ):
        raise ConfigError(f"{where}: Invalid environment name {value}.", path=line.source)


def _valid_port(text: str) -> bool:
    # ASCII digits only: str.isdigit() accepts "²", which int() then rejects.
    return re.fullmatch(r"[0-9]{1,5}", text) is not None and 0 < int(text) <= 65535


def valid_jump(part: str) -> bool:
    """Whether ssh accepts ``part`` of a ProxyJump list: ``[user@]host[:port]``, ``host`` may
    be in brackets, or ``ssh://[user@]host[:port]``; the port decimal, 1-65535.

    >>> [valid_jump(p) for p in ("ops@jump:2222", "[::1]:22", '"ops@jump:22"', "h:0")]
    [True, True, False, False]
    """
    text = part[len("ssh://") :] if part.startswith("ssh://") else part
    if part.startswith("ssh://") and "/" in text:
        return False
    if "@" in text:
        text = text.rsplit("@", 1)[1]
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return False
        port = rest[1:] if rest else None
    else:
        host, colon, port_text = text.partition(":")
        port = port_text if colon else None
    if not host:
        return False
    return port is None or _valid_port(port)


# ---------------------------------------------------------------------------- patterns


def match_pattern(text: str, pattern: str) -> bool:
    """OpenSSH's ``match_pattern``: ``*`` and ``?`` wildcards, case-sensitive, whole string."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, text, re.DOTALL) is not None


def match_pattern_list(text: str, patterns: str, *, lower: bool = False) -> int:
    """OpenSSH's ``match_pattern_list``: 1 if a comma-separated pattern matches, -1 if a
    ``!negated`` one does (that wins), 0 otherwise."""
    found = 0
    for pattern in patterns.split(","):
        if lower:
            pattern = pattern.lower()
        negated = pattern.startswith("!")
        if negated:
            pattern = pattern[1:]
        if match_pattern(text, pattern):
            if negated:
                return -1
            found = 1
    return found


# ---------------------------------------------------------------------------- files


@dataclass
class Include:
    """An ``Include`` line and the files its globs named when the config was loaded."""

    line: Line
    files: list[ConfigFile]


@dataclass
class Block:
    """A ``Host``/``Match`` line (``None`` for the lines before the first) and what follows it,
    up to the next ``Host``/``Match`` of the same file."""

    head: Line | None
    items: list[Line | Include] = field(default_factory=list)


@dataclass
class ConfigFile:
    """A parsed file: its blocks, and an index of the blocks that only a few names can enter.

    A ``Host`` block whose patterns are all literal can only match those exact names, so
    evaluating a host skips the other literal blocks: with one ``Host`` block per node, a
    1,000-node ssh_config otherwise costs milliseconds per lookup.
    """

    path: str
    blocks: list[Block]
    literal: dict[str, list[int]] = field(default_factory=dict)
    always: list[int] = field(default_factory=list)

    def index(self) -> None:
        for position, block in enumerate(self.blocks):
            head = block.head
            if head is not None and head.keyword == "host":
                patterns = head.args
                if not any(ch in p for p in patterns for ch in "*?!"):
                    for pattern in patterns:
                        self.literal.setdefault(pattern, []).append(position)
                    continue
            self.always.append(position)

    def candidates(self, host: str) -> list[int]:
        named = self.literal.get(host)
        return sorted({*named, *self.always}) if named else self.always


@dataclass
class Config:
    """The loaded configuration: the files in the order ssh reads them (``-F`` file, or
    ``~/.ssh/config`` then ``/etc/ssh/ssh_config``), and the local side."""

    files: list[ConfigFile]
    local: Local


def _check_permissions(path: str, local: Local) -> None:
    try:
        info = os.stat(path)
    except OSError:
        return
    if (info.st_uid not in (0, local.uid)) or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(f"Bad owner or permissions on {path}", path=path)


def _tilde(path: str, local: Local) -> str:
    """OpenSSH's ``tilde_expand_filename`` (``~`` is the password database's home)."""
    if not path.startswith("~"):
        return path
    name, slash, rest = path[1:].partition("/")
    if not name:
        home = local.home
    else:
        try:
            home = pwd.getpwnam(name).pw_dir
        except KeyError:
            raise ConfigError(f"tilde expansion failed: no user {name!r} in {path}") from None
    return home.rstrip("/") + "/" + rest if slash else home


def parse_file(
    path: str, local: Local, *, user_config: bool, check_permissions: bool, depth: int = 0
) -> ConfigFile:
    """Read one file (and, recursively, what it includes) into a :class:`ConfigFile`."""
    if check_permissions:
        _check_permissions(path, local)
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError(
            f"cannot read ssh config {path}: {exc.strerror or exc}", path=path
        ) from exc
    return parse_text(text, path, local, user_config=user_config, depth=depth)


def parse_text(
    text: str, path: str, local: Local, *, user_config: bool = True, depth: int = 0
) -> ConfigFile:
    """Parse ``text`` (the content of ``path``) into a :class:`ConfigFile`; its ``Include``
    lines read their files.

    Example: ``parse_text("Host n1\n  Port 2222\n", "<test>", Local.current())``.
    """
    blocks = [Block(None)]
    ignore_unknown: list[str] = []
    for number, raw_line in enumerate(text.split("\n"), start=1):
        line = split_line(raw_line, path, number)
        if line is None:
            continue
        _validate(line, ignore_unknown)
        if line.keyword == "ignoreunknown" and not ignore_unknown:
            ignore_unknown = list(line.args)
        if line.keyword in ("host", "match"):
            if line.keyword == "match":
                _parse_match(line)
            blocks.append(Block(line))
        elif line.keyword == "include":
            files = []
            for pattern in line.args:
                files += [
                    parse_file(
                        found,
                        local,
                        user_config=user_config,
                        check_permissions=True,
                        depth=depth + 1,
                    )
                    for found in _include_paths(pattern, line, local, user_config, depth)
                ]
            blocks[-1].items.append(Include(line, files))
        else:
            blocks[-1].items.append(line)
    result = ConfigFile(path, blocks)
    result.index()
    return result


def _include_paths(
    pattern: str, line: Line, local: Local, user_config: bool, depth: int
) -> list[str]:
    if depth + 1 > MAX_INCLUDE_DEPTH:
        raise ConfigError(f"{line.where}: Include nested too deep", path=line.source)
    if pattern.startswith("~") and not user_config:
        raise ConfigError(f"{line.where}: bad include path {pattern}.", path=line.source)
    if not pattern.startswith(("/", "~")):
        pattern = ("~/.ssh/" if user_config else "/etc/ssh/") + pattern
    pattern = _tilde(pattern, local)
    # glob(3) sorts its matches; Python's does not.  ssh skips what it cannot read (e.g. a
    # directory) without an error only when it does not exist.
    return sorted(path for path in globbing.glob(pattern) if not os.path.isdir(path))


def load(user_config: str | None, system_config: str | None, local: Local) -> Config:
    """Read ssh's configuration files: ``user_config`` (``-F`` or ``~/.ssh/config``) then
    ``system_config`` (``/etc/ssh/ssh_config``); a missing file is skipped (``-F`` files are
    checked by the caller).  Raises :class:`ConfigError` with OpenSSH's wording."""
    files: list[ConfigFile] = []
    default_user = os.path.join(local.home, ".ssh", "config")
    if user_config is not None and os.path.exists(user_config):
        files.append(
            parse_file(
                user_config,
                local,
                user_config=True,
                check_permissions=os.path.abspath(user_config) == default_user,
            )
        )
    if system_config is not None and os.path.exists(system_config):
        files.append(parse_file(system_config, local, user_config=False, check_permissions=False))
    return Config(files, local)


# ---------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class Query:
    """What ssh is asked: ``ssh [-l user] [-p port] [-i key_file] [-o option]... host``.
    ``options`` are ``-o`` lines as (keyword, value), applied first."""

    host: str
    user: str | None = None
    port: int | None = None
    key_file: str | None = None
    options: tuple[tuple[str, str], ...] = ()


@dataclass
class Options:
    """The options of one host after evaluation: the first value of each keyword (as its
    :class:`Line`), the accumulated identity and certificate files (raw, as ``ssh -G`` prints
    them), and the proxy settings."""

    host_arg: str
    first_lines: dict[str, Line] = field(default_factory=dict)
    identity_files: list[str] = field(default_factory=list)
    certificate_files: list[str] = field(default_factory=list)
    proxy_command: str | None = None
    proxy_jump: str | None = None

    def first(self, keyword: str) -> str | None:
        line = self.first_lines.get(keyword)
        return line.args[0] if line is not None and line.args else None

    def all_args(self, keyword: str) -> tuple[str, ...] | None:
        line = self.first_lines.get(keyword)
        return None if line is None else line.args

    def apply(self, line: Line) -> None:
        keyword = line.keyword
        if keyword == "identityfile":
            value = line.args[0]
            if value not in self.identity_files and len(self.identity_files) < MAX_IDENTITY_FILES:
                self.identity_files.append(value)
            return
        if keyword == "certificatefile":
            value = line.args[0]
            if value not in self.certificate_files and (
                len(self.certificate_files) < MAX_IDENTITY_FILES
            ):
                self.certificate_files.append(value)
            return
        if keyword == "proxycommand":
            # As measured against ssh 9.2: a ProxyCommand (even "none") set first blocks every
            # later ProxyCommand and ProxyJump; ProxyJump host sets ProxyCommand "none".
            if self.proxy_command is None:
                self.proxy_command = line.raw
            return
        if keyword == "proxyjump":
            if self.proxy_command is None and self.proxy_jump is None:
                text = line.raw.split("#", 1)[0].rstrip()
                self.proxy_jump = text
                if text.lower() != "none":
                    self.proxy_command = "none"
            return
        self.first_lines.setdefault(keyword, line)


MatchExec = Callable[[str], bool]


def _run_match_exec(command: str, timeout_s: float) -> bool:
    shell = os.environ.get("SHELL") or "/bin/sh"
    try:
        done = subprocess.run(
            [shell, "-c", command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=max(0.001, timeout_s),
            check=False,
        )
    except OSError:
        return False  # ssh: a command that cannot run does not match
    except subprocess.TimeoutExpired:
        # Not "no match": that would quietly apply another block of the config.
        raise ConfigError(
            f"Match exec {command!r} did not finish within {timeout_s:.3g} s (the node deadline)"
        ) from None
    return done.returncode == 0


def _parse_match(line: Line) -> list[tuple[bool, str, str | None]]:
    """``Match`` criteria as (negated, attribute, argument); raises ConfigError when malformed."""
    criteria: list[tuple[bool, str, str | None]] = []
    args = list(line.args)
    while args:
        word = args.pop(0)
        negated = word.startswith("!")
        attribute = (word[1:] if negated else word).lower()
        if attribute in ("all", "canonical", "final"):
            criteria.append((negated, attribute, None))
            continue
        if attribute not in ("host", "originalhost", "user", "localuser", "exec"):
            raise ConfigError(
                f"{line.where}: Unsupported Match attribute {attribute}", path=line.source
            )
        if not args:
            raise ConfigError(
                f"{line.where}: Missing Match criteria for {attribute}", path=line.source
            )
        criteria.append((negated, attribute, args.pop(0)))
    if any(attribute == "all" for _, attribute, _ in criteria) and any(
        attribute not in ("all", "canonical", "final") for _, attribute, _ in criteria
    ):
        raise ConfigError(
            f"{line.where}: Match all must appear alone or with canonical/final", path=line.source
        )
    return criteria


@dataclass
class _State:
    options: Options
    query: Query
    local: Local
    match_exec: MatchExec


def _host_for_match(state: _State) -> str:
    hostname = state.options.first("hostname")
    if hostname is None:
        return state.query.host
    return expand(
        hostname, "h", {"h": state.query.host}, state.local, where="HostName", dollar=False
    )


def _current_user(state: _State) -> str:
    return state.options.first("user") or state.local.user


def _match(line: Line, state: _State) -> bool:
    result = True
    for negated, attribute, argument in _parse_match(line):
        if attribute in ("canonical", "final"):
            raise UnsupportedConfigError(
                f"{line.where}: `Match {attribute}` needs OpenSSH's second pass over the"
                " config; use --transport openssh",
                option=f"match {attribute}",
                value=attribute,
                path=line.source,
            )
        if attribute == "all":
            matched = True
        elif attribute == "exec":
            if not result:
                continue  # ssh does not run exec once the line cannot match any more
            assert argument is not None
            command = expand(
                argument,
                "CdhikLlnpru",
                token_values(state),
                state.local,
                where="Match exec",
                dollar=False,
            )
            matched = state.match_exec(command)
        else:
            assert argument is not None
            if attribute == "host":
                host = _host_for_match(state).lower()
                matched = match_pattern_list(host, argument, lower=True) == 1
            elif attribute == "originalhost":
                matched = match_pattern_list(state.query.host.lower(), argument, lower=True) == 1
            elif attribute == "user":
                matched = match_pattern_list(_current_user(state), argument) == 1
            else:
                matched = match_pattern_list(state.local.user, argument) == 1
        if matched == negated:
            result = False
    return result


def _host_matches(line: Line, host: str) -> bool:
    active = False
    for pattern in line.args:
        negated = pattern.startswith("!")
        if match_pattern(host, pattern[1:] if negated else pattern):
            if negated:
                return False
            active = True
    return active


def _walk(config_file: ConfigFile, state: _State) -> None:
    """Apply the lines of ``config_file`` that are active for the host.  A block that is not
    active applies nothing, and neither do the files it includes (ssh reads them with
    ``SSHCONF_NEVERMATCH``), so such blocks are skipped -- which is what lets the index skip
    the literal ``Host`` blocks of other names."""
    for position in config_file.candidates(state.query.host):
        block = config_file.blocks[position]
        head = block.head
        if head is None:
            active = True
        elif head.keyword == "host":
            active = _host_matches(head, state.query.host)
        else:
            active = _match(head, state)
        if not active:
            continue
        for item in block.items:
            if isinstance(item, Include):
                for included in item.files:
                    _walk(included, state)
            else:
                state.options.apply(item)


def evaluate(
    config: Config,
    query: Query,
    *,
    match_exec: MatchExec | None = None,
    exec_timeout_s: float = 10.0,
) -> Options:
    """The options ssh would use for ``query`` (before token expansion; see :func:`resolve`).

    ``match_exec`` runs a ``Match exec`` command and says whether it succeeded (default: the
    user's ``$SHELL -c``, as ssh does, within ``exec_timeout_s``).
    """
    options = Options(host_arg=query.host)
    local = config.local
    runner = match_exec or (lambda command: _run_match_exec(command, exec_timeout_s))
    state = _State(options, query, local, runner)
    # ``ssh -l USER -p PORT -i KEY -o ...`` in this order, as Ansible builds the command line
    # (its user, port and key options come before ssh_common_args): the first value wins.
    if query.user is not None:
        options.first_lines["user"] = Line("user", (query.user,), "", "-l", 0)
    if query.port is not None:
        options.first_lines["port"] = Line("port", (str(query.port),), "", "-p", 0)
    if query.key_file is not None:
        options.identity_files.append(query.key_file)
    for number, (keyword, value) in enumerate(query.options, start=1):
        line = _option_line(keyword, value, number)
        if line is not None:
            options.apply(line)
    for config_file in config.files:
        _walk(config_file, state)
    return options


@functools.lru_cache(maxsize=1024)  # a fleet's hosts share their -o options: parsed once
def _option_line(keyword: str, value: str, number: int) -> Line | None:
    """The ``-o keyword=value`` option number ``number`` as a config line (``None``: empty)."""
    line = split_line(f"{keyword} {value}", "command line", number)
    if line is None:
        return None
    _validate(line, ())
    if line.keyword in ("host", "match", "include"):
        raise ConfigError(f"{line.where}: {line.keyword} is not allowed in -o options")
    return line


# ---------------------------------------------------------------------------- tokens


def token_values(state: _State) -> dict[str, str]:
    """Tokens for ``Match exec`` (the values so far)."""
    options, query, local = state.options, state.query, state.local
    host = _host_for_match(state)
    port = options.first("port") or "22"
    user = _current_user(state)
    tokens = _tokens(local, host.lower(), query.host, port, user, options.first("hostkeyalias"))
    tokens["h"] = host  # as written: ssh lower-cases it only to match Host/Match host patterns
    return tokens


def _tokens(
    local: Local, host: str, original: str, port: str, user: str, alias: str | None
) -> dict[str, str]:
    connection = hashlib.sha1(f"{local.hostname}{host}{port}{user}".encode()).hexdigest()
    return {
        "C": connection,
        "d": local.home,
        "h": host,
        "i": str(local.uid),
        "k": alias.lower() if alias else original,
        "L": local.hostname.split(".", 1)[0],
        "l": local.hostname,
        "n": original,
        "p": port,
        "r": user,
        "u": local.user,
    }


def expand(
    text: str,
    allowed: str,
    values: dict[str, str],
    local: Local,
    *,
    where: str,
    dollar: bool = True,
) -> str:
    """OpenSSH's ``percent_dollar_expand`` (``dollar=False``: ``percent_expand``, for HostName,
    ProxyCommand and Match exec): in one pass, ``${VAR}`` from the environment (unset: error)
    and ``%x`` for each ``x`` in ``allowed`` (``%%`` is ``%``; any other ``%x``: error).

    >>> expand("%d/.ssh/id_%h", "dh", {"d": "/home/ops", "h": "node01"}, Local.current(),
    ...        where="IdentityFile")
    '/home/ops/.ssh/id_node01'
    """
    if "%" not in text and not (dollar and "${" in text):
        return text  # most paths: nothing to expand
    if dollar and re.search(r"\$\{[^}]*\Z", text):
        raise ConfigError(f"{where}: invalid environment variable in {text!r}")

    def replace(match: re.Match[str]) -> str:
        if match.group(0).startswith("$"):
            name = match.group(1)
            value = local.env(name)
            if not _ENV_NAME.match(name) or value is None:
                raise ConfigError(f"{where}: env var ${{{name}}} has no value")
            return value
        key = match.group(0)[1:]  # "%x" -> "x"; a lone "%" at the end -> ""
        if key == "%":
            return "%"
        if key and key in allowed and key in values:
            return values[key]
        raise ConfigError(f"{where}: unknown key %{key} in {text!r}")

    return (_DOLLAR_PERCENT if dollar else _PERCENT).sub(replace, text)


_DOLLAR_PERCENT = re.compile(r"\$\{([^}]*)\}|%(.?)", re.DOTALL)
_PERCENT = re.compile(r"%(.?)", re.DOTALL)


# ---------------------------------------------------------------------------- the result


@dataclass(frozen=True)
class Resolved:
    """A host after ssh_config, with the values ``ssh -G`` prints (``identity_files``,
    ``certificate_files`` and ``proxy_command`` unexpanded, as it prints them) and their
    expansions (``*_expanded``) as ssh uses them when connecting.

    Example: ``Resolved(hostname="10.0.0.11", port=22, user="ops", ...)``.
    """

    host_arg: str
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...]
    identity_files_expanded: tuple[str, ...]
    explicit_identities: bool
    certificate_files: tuple[str, ...]
    certificate_files_expanded: tuple[str, ...]
    identities_only: bool
    identity_agent: str | None
    proxy_jump: str | None
    proxy_command: str | None
    proxy_command_expanded: str | None
    user_known_hosts_files: tuple[str, ...]
    global_known_hosts_files: tuple[str, ...]
    host_key_alias: str | None
    hash_known_hosts: bool
    strict_host_key_checking: str
    connect_timeout_s: int | None
    options: Options


DEFAULT_IDENTITY_FILES = (
    "~/.ssh/id_rsa",
    "~/.ssh/id_ecdsa",
    "~/.ssh/id_ecdsa_sk",
    "~/.ssh/id_ed25519",
    "~/.ssh/id_ed25519_sk",
    "~/.ssh/id_xmss",
    "~/.ssh/id_dsa",
)
DEFAULT_USER_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
DEFAULT_GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
_BAD_HOST_CHARACTERS = set("'`\"$\\;&<>|(){},")


def _refuse_trivial_jump_loop(jump: str, hostname: str, port: int, user: str) -> None:
    """ssh's own check (as measured against 9.2): the last jump host is the host itself, with
    the same port (22 when not given) and user (the host's when not given)."""
    last = jump.split(",")[-1]
    text = last[len("ssh://") :] if last.startswith("ssh://") else last
    jump_user = None
    if "@" in text:
        jump_user, text = text.rsplit("@", 1)
    if text.startswith("["):
        jump_host, _, rest = text[1:].partition("]")
        jump_port = rest[1:] if rest.startswith(":") else ""
    else:
        jump_host, _, jump_port = text.partition(":")
    if (
        jump_host == hostname
        and int(jump_port or 22) == port
        and (jump_user is None or jump_user == user)
    ):
        raise JumpLoopError(
            f"jumphost loop via {jump_host} ({jump_host} -> {jump_host}): ssh_config sends the"
            " jump host back through itself; give it `ProxyJump none` (a"
            f" `Host {jump_host}` block with `ProxyJump none` before `Host *`)",
            chain=(jump_host, jump_host),
        )


def resolve_options(options: Options, local: Local) -> Resolved:
    """Expand and default what :func:`evaluate` found, as ssh does after reading its config."""
    host_arg = options.host_arg
    if (
        not host_arg
        or host_arg.startswith("-")
        or any(ch in _BAD_HOST_CHARACTERS or ch.isspace() or ord(ch) < 32 for ch in host_arg)
    ):
        raise ConfigError(f"hostname contains invalid characters: {host_arg!r}", host=host_arg)
    hostname_line = options.first_lines.get("hostname")
    hostname = host_arg
    if hostname_line is not None:
        hostname = expand(
            hostname_line.args[0], "h", {"h": host_arg}, local, where="HostName", dollar=False
        )
    hostname = hostname.lower()
    port = int(options.first("port") or 22)
    user = options.first("user") or local.user
    alias = options.first("hostkeyalias")
    values = _tokens(local, hostname, host_arg, str(port), user, alias)

    def path(text: str, where: str) -> str:
        return expand(_tilde(text, local), "CdhikLlnpru", values, local, where=where)

    explicit = bool(options.identity_files)
    identity_files = tuple(options.identity_files) or DEFAULT_IDENTITY_FILES
    certificate_files = tuple(options.certificate_files)
    user_known = options.all_args("userknownhostsfile") or DEFAULT_USER_KNOWN_HOSTS
    if len(user_known) == 1 and user_known[0].lower() == "none":
        user_known = ()
    global_known = options.all_args("globalknownhostsfile") or DEFAULT_GLOBAL_KNOWN_HOSTS
    if len(global_known) == 1 and global_known[0].lower() == "none":
        global_known = ()
    agent = options.first("identityagent")
    if agent is not None and agent.lower() != "none" and agent != "SSH_AUTH_SOCK":
        # "$NAME" names a variable that holds the socket path (read when connecting).
        is_variable = agent.startswith("$") and not agent.startswith("${")
        agent = agent if is_variable else path(agent, "IdentityAgent")
    proxy_command = options.proxy_command
    if proxy_command is not None and proxy_command.lower() == "none":
        proxy_command = None
    jump = options.proxy_jump
    if jump is not None and jump.lower() == "none":
        jump = None
    if jump is not None:
        _refuse_trivial_jump_loop(jump, hostname, port, user)
    proxy_values = {"h": hostname, "n": host_arg, "p": str(port), "r": user}
    timeout = options.first("connecttimeout")
    return Resolved(
        host_arg=host_arg,
        hostname=hostname,
        port=port,
        user=user,
        identity_files=identity_files,
        identity_files_expanded=tuple(path(p, "IdentityFile") for p in identity_files),
        explicit_identities=explicit,
        certificate_files=certificate_files,
        certificate_files_expanded=tuple(path(p, "CertificateFile") for p in certificate_files),
        identities_only=(options.first("identitiesonly") or "no").lower() in ("yes", "true"),
        identity_agent=agent,
        proxy_jump=jump,
        proxy_command=proxy_command,
        proxy_command_expanded=None
        if proxy_command is None
        else expand(proxy_command, "hnpr", proxy_values, local, where="ProxyCommand", dollar=False),
        user_known_hosts_files=tuple(path(p, "UserKnownHostsFile") for p in user_known),
        global_known_hosts_files=tuple(global_known),
        host_key_alias=alias.lower() if alias else None,
        hash_known_hosts=(options.first("hashknownhosts") or "no").lower() in ("yes", "true"),
        strict_host_key_checking=(options.first("stricthostkeychecking") or "ask").lower(),
        connect_timeout_s=None
        if timeout is None or timeout.lower() == "none"
        else convtime(timeout),
        options=options,
    )


__all__ = [
    "DEFAULT_GLOBAL_KNOWN_HOSTS",
    "DEFAULT_IDENTITY_FILES",
    "DEFAULT_USER_KNOWN_HOSTS",
    "KNOWN_KEYWORDS",
    "MAX_INCLUDE_DEPTH",
    "Config",
    "ConfigFile",
    "Line",
    "Local",
    "Options",
    "Query",
    "Resolved",
    "argv_split",
    "convtime",
    "evaluate",
    "expand",
    "load",
    "match_pattern",
    "match_pattern_list",
    "parse_text",
    "resolve_options",
    "split_line",
    "valid_jump",
]
