"""vlcalc's ssh_config reader against the real OpenSSH client.

The conformance suite generates ssh_configs (Host and Match blocks, Include, % tokens, quoting,
``key=value``, trailing comments, ProxyJump/ProxyCommand, identities, certificates, agents,
known_hosts files) and inventory hosts with ports and users, and compares what vlcalc resolves
with what ``ssh -G -F CONFIG [-p PORT] [-l USER] HOST`` prints.  ``ssh -G`` prints
IdentityFile, CertificateFile and ProxyCommand unexpanded, so their expansions are checked by
ssh too: the identity paths go through a second ``ssh -G`` as ``-o UserKnownHostsFile=...``
(the same tokens, the same tilde), and a ProxyCommand is run by a real ``ssh`` (it only records
its expanded arguments; no network) and by vlcalc's expansion, and the records compared.
Nothing is resolved through DNS: no CanonicalizeHostname, no ``Match host`` needing a lookup.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from vlcalc.errors import ConfigError, UnsupportedConfigError
from vlcalc.transport.ssh.config import parse_jump, read_ssh_config, resolve
from vlcalc.transport.ssh.ssh_config import (
    Local,
    Query,
    argv_split,
    convtime,
    evaluate,
    expand,
    parse_text,
    resolve_options,
    split_line,
)

SSH = shutil.which("ssh")
CONFIGS = 200
SEED = 20261203
AGREEMENT: list[str] = []

needs_ssh = pytest.mark.skipif(SSH is None, reason="needs the OpenSSH client (ssh -G)")


@pytest.fixture(scope="module", autouse=True)
def _summary(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print the agreement counts in pytest's terminal summary (a plugin registered from here,
    so no conftest.py is needed)."""

    class Summary:
        def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
            if AGREEMENT:
                terminalreporter.section("ssh_config conformance: vlcalc against ssh -G")
                for line in AGREEMENT:
                    terminalreporter.write_line(line)

    plugin = Summary()
    if not request.config.pluginmanager.is_registered(plugin):
        request.config.pluginmanager.register(plugin, "vlcalc-ssh-config-summary")
    yield


# ------------------------------------------------------------------ the generator

HOSTS = ["web1", "web2", "db.prod", "DB.Prod", "jump", "10.0.0.5", "node-a", "Node-B"]
USERS = ["ops", "alice", "root", "deploy"]
HOST_PATTERNS = ["web1", "web*", "*.prod", "!web2", "node-?", "*", "DB.Prod", "10.0.0.*", "jump"]


@dataclass
class Case:
    """One generated ssh_config, its included files, and the inventory host to resolve."""

    number: int
    directory: Path
    lines: list[str]
    includes: dict[str, list[str]]
    host: str
    port: int | None
    user: str | None
    broken: str | None = None
    options: tuple[tuple[str, str], ...] = ()  # the inventory's ``-o`` options
    record: Path = field(init=False)

    def __post_init__(self) -> None:
        self.record = self.directory / "proxy.rec"

    @property
    def path(self) -> Path:
        return self.directory / "config"

    def write(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "inc").mkdir(exist_ok=True)
        for name, lines in self.includes.items():
            (self.directory / "inc" / name).write_text("\n".join(lines) + "\n")
        self.path.write_text("\n".join(self.lines) + "\n")

    def ssh_args(self) -> list[str]:
        args = ["-F", str(self.path)]
        if self.port is not None:
            args += ["-p", str(self.port)]
        if self.user is not None:
            args += ["-l", self.user]
        for keyword, value in self.options:
            args += ["-o", f"{keyword}={value}"]
        return args


def styled(rng: random.Random, keyword: str, value: str, *, comment: bool = True) -> str:
    """``keyword value`` in one of the spellings ssh accepts."""
    form = rng.randrange(6)
    if form == 1:
        line = f"{keyword}={value}"
    elif form == 2:
        line = f"{keyword} = {value}"
    elif form == 3:
        line = f"{keyword.upper()}\t{value}"
    elif form == 4 and " " not in value and '"' not in value and "'" not in value:
        line = f'{keyword.lower()} "{value}"'
    else:
        line = f"{keyword} {value}"
    if comment and rng.random() < 0.2:
        line += "   # a trailing comment"
    return ("  " if rng.random() < 0.7 else "\t") + line


def directive(rng: random.Random, case_dir: Path) -> tuple[str, str, bool]:
    """(keyword, value, may carry a trailing comment)."""
    record = case_dir / "proxy.rec"
    choices: list[tuple[str, list[str]]] = [
        (
            "HostName",
            ["10.1.2.3", "%h.example.com", "%h", "Real-%h.EXAMPLE", "h%%x", "127.0.0.1", "Z"],
        ),
        ("Port", [str(rng.randrange(1, 65536)), "22", "2222"]),
        ("User", USERS),
        (
            "IdentityFile",
            [
                "~/.ssh/id_%h",
                "%d/.ssh/key_%r_%p",
                "/keys/%C",
                "/keys/%n-%L-%l-%u-%i-%k",
                "${HOME}/k1",
                "~/.ssh/id_ed25519",
                "/keys/100%%",
            ],
        ),
        ("CertificateFile", ["/certs/%h-cert.pub", "~/c_%r", "%d/.ssh/%n-cert.pub"]),
        (
            "ProxyJump",
            [
                "jump",
                "ops@jump:2222",
                "a,b",
                "ssh://u@10.0.0.9:22",
                "none",
                "d@[10.0.0.8]:2200,jump",
            ],
        ),
        (
            "ProxyCommand",
            [
                # The record is written before the proxy's stdout closes (ssh kills it then).
                f'sh -c "echo %h:%p:%r:%n:%% > {record}"',
                f"sh -c 'echo \"$1 $2\" > {record}' x %h %p",
                # ssh leaves ${VAR} in a ProxyCommand to the shell (percent_expand only).
                f'sh -c "echo ${{HOME}} %r > {record}"',
                "none",
            ],
        ),
        (
            "UserKnownHostsFile",
            [
                " ".join(
                    rng.sample(
                        ["~/.ssh/kh_%h", "%d/kh2", "/etc/kh_%p_%r", "/tmp/%C", "~/.ssh/known"],
                        rng.randrange(1, 4),
                    )
                ),
                "none",
            ],
        ),
        ("GlobalKnownHostsFile", ["/etc/ssh/g1 /etc/ssh/g2", "/g/%h", "none"]),
        (
            "IdentityAgent",
            ["none", "SSH_AUTH_SOCK", "~/agent.%r", "/run/a-%C", "${HOME}/ag", "$SSH_AUTH_SOCK"],
        ),
        ("IdentitiesOnly", ["yes", "no"]),
        ("ConnectTimeout", ["5", "1m", "none", "1m30s"]),
        ("StrictHostKeyChecking", ["yes", "no", "accept-new", "ask"]),
        ("HostKeyAlias", ["alias-one", "Alias-Two"]),
        ("ServerAliveInterval", ["30"]),
        ("SendEnv", ["LANG LC_*"]),
    ]
    keyword, values = rng.choice(choices)
    value = rng.choice(values)
    return keyword, value, keyword not in ("ProxyCommand",)


def head(rng: random.Random) -> str:
    if rng.random() < 0.6:
        patterns = rng.sample(HOST_PATTERNS, rng.randrange(1, 4))
        return "Host " + " ".join(patterns)
    criteria = rng.choice(
        [
            f"user {rng.choice(USERS)}",
            f"!user {rng.choice(USERS)}",
            f"user {','.join(rng.sample(USERS, 2))}",
            f"originalhost {rng.choice(['web*', 'db.prod', '!jump,*', 'node-?'])}",
            f"host {rng.choice(['*.example.com', '10.1.*', 'real-*', 'web1'])}",
            "all",
            "localuser root",
            "exec true",
            "exec false",
            'exec "test %n = web1"',
            f"originalhost web* user {rng.choice(USERS)}",
        ]
    )
    return "Match " + criteria


def generate(rng: random.Random, number: int, directory: Path) -> Case:
    lines: list[str] = ["# generated by tests/test_ssh_config.py", ""]
    includes: dict[str, list[str]] = {}
    for _ in range(rng.randrange(0, 3)):
        keyword, value, comment = directive(rng, directory)
        lines.append(styled(rng, keyword, value, comment=comment))
    for block in range(rng.randrange(1, 6)):
        lines.append(head(rng))
        for _ in range(rng.randrange(1, 5)):
            if rng.random() < 0.12:
                name = f"part{block}.conf"
                included = []
                for _ in range(rng.randrange(0, 3)):
                    keyword, value, comment = directive(rng, directory)
                    included.append(styled(rng, keyword, value, comment=comment))
                if rng.random() < 0.6:
                    included.append(head(rng))
                    for _ in range(rng.randrange(1, 3)):
                        keyword, value, comment = directive(rng, directory)
                        included.append(styled(rng, keyword, value, comment=comment))
                includes[name] = included
                target = rng.choice([name, "part*.conf", "missing*.conf"])
                lines.append(f"  Include {directory / 'inc' / target}")
                continue
            keyword, value, comment = directive(rng, directory)
            lines.append(styled(rng, keyword, value, comment=comment))
        if rng.random() < 0.3:
            lines.append("")
    case = Case(
        number,
        directory,
        lines,
        includes,
        host=rng.choice(HOSTS),
        port=rng.choice([None, None, 2200, rng.randrange(1, 65536)]),
        user=rng.choice([None, None, *USERS]),
    )
    if rng.random() < 0.3:
        inventory_options = [
            ("port", "2201"),
            ("user", "inventory-user"),
            ("proxyjump", "none"),
            ("proxyjump", "ops@hop:2022"),
            ("identityfile", "/inv/key_%h_%r"),
            ("hostname", "inv-%h"),
            ("userknownhostsfile", "/inv/kh_%p"),
            ("identitiesonly", "yes"),
            ("proxycommand", "none"),
        ]
        case.options = tuple(rng.sample(inventory_options, rng.randrange(1, 3)))
    if rng.random() < 0.1:
        mutation = rng.choice(
            [
                "  Bogus yes",
                "  Port 0",
                '  HostName "unterminated',
                "  UserKnownHostsFile /k/%j",
                "Match bogus x",
                "  IdentityAgent $HOME/x",
                "  ConnectTimeout 5x",
                "  UserKnownHostsFile ${VLCALC_SURELY_UNSET}/k",
                "  Port 22 23",
            ]
        )
        case.lines.insert(rng.randrange(2, len(case.lines) + 1), mutation)
        case.broken = mutation
    return case


# ------------------------------------------------------------------ the two sides


def ssh_g(args: list[str], host: str) -> tuple[int, dict[str, list[str]], str]:
    assert SSH is not None
    done = subprocess.run(
        [SSH, "-G", *args, host],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=20,
        check=False,
    )
    fields: dict[str, list[str]] = {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition(" ")
        fields.setdefault(key, []).append(value)
    return done.returncode, fields, done.stderr.strip()


def jump_hops(text: str | None) -> list[tuple[str | None, str, int | None]]:
    if not text or text == "none":
        return []
    return [parse_jump(part) for part in text.split(",")]


def run_proxy(command: str, record: Path) -> str | None:
    record.unlink(missing_ok=True)
    subprocess.run(
        ["/bin/sh", "-c", f"exec {command}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=10,
        check=False,
    )
    return record.read_text() if record.exists() else None


def ssh_proxy_record(case: Case) -> str | None:
    """Run the real ssh with the config: it starts the ProxyCommand (which only records its
    arguments and exits), then fails.  The record, or None when none was written."""
    assert SSH is not None
    case.record.unlink(missing_ok=True)
    subprocess.run(
        [SSH, *case.ssh_args(), "-o", "BatchMode=yes", case.host, "true"],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=20,
        check=False,
    )
    return case.record.read_text() if case.record.exists() else None


@dataclass
class Tally:
    configs: int = 0
    fields: int = 0
    agreed: int = 0
    refused_both: int = 0
    proxies: int = 0
    proxy_records: int = 0
    mismatches: list[str] = field(default_factory=list)

    def check(self, case: Case, name: str, ours: object, theirs: object) -> None:
        self.fields += 1
        if ours == theirs:
            self.agreed += 1
        else:
            self.mismatches.append(
                f"config {case.number} ({case.path}) host {case.host} -p {case.port}"
                f" -l {case.user}: {name}: vlcalc {ours!r} != ssh {theirs!r}"
            )


def compare(case: Case, local: Local, tally: Tally) -> None:
    code, fields, stderr = ssh_g(case.ssh_args(), case.host)
    tally.configs += 1
    try:
        config = read_ssh_config(str(case.path), None, local)
        query = Query(case.host, case.user, case.port, options=case.options)
        options = evaluate(config, query)
        resolved = resolve_options(options, local)
        endpoint = resolve(config, case.host, case.port, case.user, None, ssh_options=case.options)
    except UnsupportedConfigError as exc:  # pragma: no cover - the generator avoids these
        tally.check(case, "refused as unsupported", str(exc), "resolved")
        return
    except ConfigError as exc:
        tally.check(case, "refused", True, code != 0)
        if code == 0:
            tally.mismatches[-1] += f" ({exc})"
        else:
            tally.refused_both += 1
        return
    if code != 0:
        tally.check(case, "refused", False, f"ssh -G failed: {stderr}")
        return

    def one(key: str) -> str | None:
        values = fields.get(key)
        return values[0] if values else None

    tally.check(case, "hostname", resolved.hostname, one("hostname"))
    tally.check(case, "port", str(resolved.port), one("port"))
    tally.check(case, "user", resolved.user, one("user"))
    tally.check(case, "identityfile", list(resolved.identity_files), fields.get("identityfile"))
    tally.check(
        case,
        "certificatefile",
        list(resolved.certificate_files),
        fields.get("certificatefile", []),
    )
    tally.check(case, "proxyjump", jump_hops(resolved.proxy_jump), jump_hops(one("proxyjump")))
    tally.check(case, "proxycommand", resolved.proxy_command, one("proxycommand"))
    tally.check(
        case,
        "userknownhostsfile",
        " ".join(resolved.user_known_hosts_files) or "none",
        one("userknownhostsfile"),
    )
    tally.check(
        case,
        "globalknownhostsfile",
        " ".join(resolved.global_known_hosts_files) or "none",
        one("globalknownhostsfile"),
    )
    tally.check(case, "identityagent", resolved.identity_agent, one("identityagent"))
    tally.check(
        case, "identitiesonly", "yes" if resolved.identities_only else "no", one("identitiesonly")
    )
    theirs_timeout = one("connecttimeout")
    tally.check(
        case,
        "connecttimeout",
        "none" if resolved.connect_timeout_s is None else str(resolved.connect_timeout_s),
        theirs_timeout,
    )
    tally.check(
        case,
        "stricthostkeychecking",
        {"no": "false", "off": "false", "yes": "true"}.get(
            resolved.strict_host_key_checking, resolved.strict_host_key_checking
        ),
        {"no": "false", "yes": "true"}.get(str(one("stricthostkeychecking")))
        or one("stricthostkeychecking"),
    )
    tally.check(case, "hostkeyalias", resolved.host_key_alias, one("hostkeyalias"))
    # The endpoint vlcalc connects to says the same.
    tally.check(
        case,
        "endpoint",
        (endpoint.hostname, endpoint.port, endpoint.user, endpoint.known_hosts_files),
        (resolved.hostname, resolved.port, resolved.user, resolved.user_known_hosts_files),
    )
    # Expanded identity and certificate paths: ssh expands UserKnownHostsFile with the same
    # tokens and tilde, and -o comes first, so it prints exactly these paths expanded.
    raw = [*resolved.identity_files, *resolved.certificate_files]
    if any("%" in path or "~" in path or "$" in path for path in raw):
        # First on the command line, so it wins over the inventory's own -o option.
        option = "UserKnownHostsFile " + " ".join(raw)
        code, expanded, stderr = ssh_g(["-o", option, *case.ssh_args()], case.host)
        tally.check(
            case,
            "identityfile+certificatefile expanded",
            " ".join([*endpoint.identity_files, *endpoint.certificate_files]),
            one_of(expanded, "userknownhostsfile") if code == 0 else stderr,
        )
    if endpoint.proxy_command is not None and not resolved.proxy_jump:
        tally.proxies += 1
        theirs_record = ssh_proxy_record(case)
        ours_record = run_proxy(endpoint.proxy_command, case.record)
        tally.check(case, "proxycommand as run", ours_record, theirs_record)
        tally.proxy_records += bool(theirs_record and ours_record == theirs_record)


def one_of(fields: dict[str, list[str]], key: str) -> str | None:
    values = fields.get(key)
    return values[0] if values else None


@needs_ssh
def test_vlcalc_resolves_generated_ssh_configs_like_ssh_g(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    local = Local.current()
    tally = Tally()
    with_options = 0
    for number in range(CONFIGS):
        case = generate(rng, number, tmp_path / f"c{number:03d}")
        case.write()
        with_options += bool(case.options)
        compare(case, local, tally)
    AGREEMENT.append(
        f"ssh_config conformance: vlcalc and ssh -G agree on {tally.agreed}/{tally.fields}"
        f" fields in {tally.configs} configs ({with_options} with inventory -o options,"
        f" {tally.refused_both} refused by both,"
        f" {tally.proxies} ProxyCommands run by both, {tally.proxy_records} recording the same"
        " expanded arguments)"
    )
    assert tally.configs >= 150
    assert tally.proxy_records >= 10  # the ProxyCommand comparison compared something
    assert not tally.mismatches, "\n".join(tally.mismatches[:15])


# ------------------------------------------------------------------ pure cases


def test_argv_split_follows_openssh() -> None:
    assert argv_split('"a b" c\\ d e#f # comment') == ["a b", "c d", "e#f"]
    assert argv_split("'x \"y\"' z") == ['x "y"', "z"]
    with pytest.raises(ValueError):
        argv_split('"open')


def test_split_line_accepts_the_equals_forms() -> None:
    for text in ("Port=22", "Port = 22", "  port\t22  ", "PORT =22 # c"):
        line = split_line(text, "t", 1)
        assert line is not None and (line.keyword, line.args) == ("port", ("22",))
    assert split_line("   # only a comment", "t", 1) is None
    command = split_line("ProxyCommand = nc %h %p # kept", "t", 1)
    assert command is not None and command.raw == "nc %h %p # kept"


def test_convtime() -> None:
    assert [convtime(t) for t in ("5", "1m", "1m30s", "2h", "x", "")] == [
        5,
        60,
        90,
        7200,
        None,
        None,
    ]


def local_for(home: Path) -> Local:
    return Local(home=str(home), user="ops", uid=os.getuid(), hostname="ctl.example.com")


def test_relative_include_is_read_from_the_user_ssh_directory(tmp_path: Path) -> None:
    local = local_for(tmp_path)
    (tmp_path / ".ssh" / "conf.d").mkdir(parents=True)
    (tmp_path / ".ssh" / "conf.d" / "b.conf").write_text("Host n1\n  Port 2202\n")
    (tmp_path / ".ssh" / "conf.d" / "a.conf").write_text("Host n1\n  User from-a\n  Port 2201\n")
    parsed = parse_text("Host n*\n  Include conf.d/*.conf\n  Port 9\n", "cfg", local)
    from vlcalc.transport.ssh.ssh_config import Config

    resolved = resolve_options(evaluate(Config([parsed], local), Query("n1")), local)
    # Sorted glob: a.conf first wins; the Host n1 inside the include does not end the outer
    # block, whose Port 9 comes after the include.
    assert (resolved.user, resolved.port) == ("from-a", 2201)
    other = resolve_options(evaluate(Config([parsed], local), Query("n2")), local)
    assert other.port == 9


def test_include_in_a_block_that_does_not_apply_applies_nothing(tmp_path: Path) -> None:
    local = local_for(tmp_path)
    (tmp_path / "inc.conf").write_text("Port 1111\nHost *\n  User inc\n")
    text = f"Host other\n  Include {tmp_path / 'inc.conf'}\nHost *\n  Port 22\n"
    from vlcalc.transport.ssh.ssh_config import Config

    config = Config([parse_text(text, "cfg", local)], local)
    resolved = resolve_options(evaluate(config, Query("n1")), local)
    assert (resolved.port, resolved.user) == (22, "ops")


def test_bad_permissions_on_an_included_file_are_refused(tmp_path: Path) -> None:
    local = local_for(tmp_path)
    included = tmp_path / "inc.conf"
    included.write_text("Port 2\n")
    included.chmod(0o666)
    with pytest.raises(ConfigError, match="Bad owner or permissions"):
        parse_text(f"Include {included}\n", "cfg", local)


def test_tokens_and_environment() -> None:
    local = Local(home="/h", user="me", uid=7, hostname="ctl.example.com", environ=(("X", "1"),))
    values = {"h": "node", "d": "/h", "L": "ctl", "i": "7"}
    assert expand("${X}/%d/%h/%L/%i/%%", "dhLi", values, local, where="t") == "1//h/node/ctl/7/%"
    with pytest.raises(ConfigError, match="unknown key %j"):
        expand("%j", "dh", values, local, where="t")
    with pytest.raises(ConfigError, match="no value"):
        expand("${NOPE}", "", values, local, where="t")


@pytest.mark.parametrize(
    ("line", "option"),
    [
        ("PKCS11Provider /usr/lib/p11.so", "pkcs11provider"),
        ("SecurityKeyProvider /usr/lib/sk.so", "securitykeyprovider"),
        ("CanonicalizeHostname yes", "canonicalizehostname"),
        ("ControlMaster auto", "controlmaster"),
        ("ControlPath ~/.ssh/cm-%C", "controlpath"),
        ("RemoteCommand uptime", "remotecommand"),
        ("RequestTTY force", "requesttty"),
        ("HostKeyAlgorithms ssh-ed25519", "hostkeyalgorithms"),
        ("KexAlgorithms curve25519-sha256", "kexalgorithms"),
        ("PubkeyAuthentication no", "pubkeyauthentication"),
        ("PreferredAuthentications password", "preferredauthentications"),
        ("AddressFamily inet6", "addressfamily"),
        ("KnownHostsCommand /bin/true", "knownhostscommand"),
        ("ProxyUseFdpass yes", "proxyusefdpass"),
        ("Match final", "match final"),
    ],
)
def test_options_paramiko_cannot_serve_refuse_the_host(line: str, option: str) -> None:
    local = Local(home="/h", user="me", uid=os.getuid(), hostname="ctl")
    from vlcalc.transport.ssh.ssh_config import Config

    text = f"Host refused\n  {line}\n" if not line.startswith("Match") else f"{line}\n  Port 2\n"
    config = Config([parse_text(text, "cfg", local)], local)
    with pytest.raises(UnsupportedConfigError) as caught:
        resolve(config, "refused", None, None, None)
    assert caught.value.option == option
    assert "--transport openssh" in caught.value.message
    assert caught.value.kind == "unreachable"
    if not line.startswith("Match"):
        assert resolve(config, "fine", None, None, None).hostname == "fine"


def test_inventory_ssh_options_come_first_like_ssh_o() -> None:
    local = Local(home="/h", user="me", uid=os.getuid(), hostname="ctl")
    from vlcalc.transport.ssh.ssh_config import Config

    config = Config(
        [parse_text("Host n1\n  Port 2\n  ProxyJump bastion\n  User cfg\n", "cfg", local)],
        local,
    )
    endpoint = resolve(
        config, "n1", None, None, None, ssh_options=(("port", "2200"), ("proxyjump", "none"))
    )
    assert (endpoint.port, endpoint.proxy_jump, endpoint.user) == (2200, (), "cfg")
    with pytest.raises(UnsupportedConfigError) as caught:
        resolve(config, "n1", None, None, None, ssh_options=(("controlmaster", "auto"),))
    assert caught.value.path == "command line"


WORDS = st.sampled_from(
    ["Host", "Match", "HostName", "Port", "User", "IdentityFile", "ProxyJump", "ProxyCommand",
     "UserKnownHostsFile", "IdentityAgent", "CertificateFile", "ConnectTimeout", "all", "user",
     "exec", "host", "!", "=", '"', "'", "\\", "#", "%", "%h", "%j", "${HOME}", "${", "~",
     "*", "?", ",", "none", "22", "0", "²", "n1", " ", "\t", "\n", "é"]
)  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.lists(WORDS | st.text(max_size=4), max_size=40).map("".join))
def test_any_text_resolves_or_is_a_config_error(text: str) -> None:
    """ssh_config is user input: whatever it holds, the answer is an endpoint or a
    ConfigError (one line, a NodeError of kind unreachable), never another exception."""
    assume("include" not in text.lower())  # no reading of arbitrary files
    local = Local(home="/nonexistent", user="me", uid=os.getuid(), hostname="ctl")
    try:
        parsed = parse_text(text, "fuzz", local)
        from vlcalc.transport.ssh.ssh_config import Config

        options = evaluate(Config([parsed], local), Query("n1"), match_exec=lambda _: False)
        resolve_options(options, local)
    except ConfigError as exc:
        assert exc.kind == "unreachable" and "\n" not in exc.message.strip("\n")


def test_match_exec_runs_with_the_values_so_far(tmp_path: Path) -> None:
    from vlcalc.transport.ssh.ssh_config import Config

    local = local_for(tmp_path)
    text = (
        "Host n1\n  HostName Real.Example\n  User app\n"
        'Match exec "check %h %n %p %r %u"\n  Port 2222\n'
    )
    config = Config([parse_text(text, "cfg", local)], local)
    commands: list[str] = []
    options = evaluate(config, Query("n1"), match_exec=lambda c: commands.append(c) or True)
    # %h as written (ssh -G runs `check Real.Example ...`): lower-cased only to match patterns.
    assert commands == ["check Real.Example n1 22 app ops"]
    assert resolve_options(options, local).port == 2222


def test_a_match_exec_that_outlives_the_deadline_is_an_error(tmp_path: Path) -> None:
    from vlcalc.transport.ssh.ssh_config import Config

    local = local_for(tmp_path)
    config = Config([parse_text("Match exec 'sleep 5'\n  Port 2\n", "cfg", local)], local)
    with pytest.raises(ConfigError, match=r"did not finish within 0\.2 s"):
        evaluate(config, Query("n1"), exec_timeout_s=0.2)


@needs_ssh
@pytest.mark.parametrize(
    "line",
    ['User ""', 'HostName ""', 'IdentityFile ""', 'HostKeyAlias ""', 'UserKnownHostsFile a ""'],
)
def test_an_empty_argument_refuses_the_config_as_ssh_does(tmp_path: Path, line: str) -> None:
    """``User ""`` is not "no user" (falling back to the local one): ssh refuses the file."""
    config = tmp_path / "cfg"
    config.write_text(f"Host *\n  {line}\n")
    ssh = subprocess.run(
        [str(SSH), "-G", "-F", str(config), "n1"], capture_output=True, text=True, check=False
    )
    assert ssh.returncode == 255 and "line 2" in ssh.stderr
    with pytest.raises(ConfigError, match="line 2: Missing argument"):
        parse_text(config.read_text(), str(config), local_for(tmp_path))
