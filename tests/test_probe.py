"""The probe as a contract: documents for every node condition, fd hygiene, the syntax floor, and
real runs of the file (as a script and as ``python3 -`` with the source on stdin).

The node conditions are data: ``tests/probe_cases/*.json``, run against the fake KVM in
``tests/probe_cases/fake_kvm.py``, which also runs them under an old Python when one is installed.
"""

from __future__ import annotations

import ast
import errno
import glob
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import vlcalc.probe.probe as probe
from vlcalc.errors import NodeError
from vlcalc.probe import PROBE_PATH, SCHEMA_TAG, probe_args, probe_source, run_local

CASES_DIR = Path(__file__).parent / "probe_cases"
SCHEMA_FILE = Path(probe.__file__).parent.parent / "schemas" / "probe-1.schema.json"
REQUIRED_KEYS = [
    "schema",
    "probe_version",
    "hostname",
    "kernel",
    "arch",
    "python",
    "kvm",
    "cpu",
    "sve",
    "trials",
    "timing_ms",
    "error",
]
TRIAL_KEYS = ["spec", "vls", "words", "accepted", "errno", "finalize_errno", "reason"]
ERROR_KINDS = {
    "not-arm64",
    "no-kvm",
    "permission-denied",
    "kvm-api",
    "kvm-ioctl",
    "usage",
    "internal",
}
# What the probe may import: modules that Debian's python3-minimal has (json is optional there).
IMPORT_ALLOW_LIST = {"array", "errno", "fcntl", "os", "struct", "sys", "time", "json"}
TYPE_CHECKING_ONLY = {"collections.abc", "typing"}


def _load_fake() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fake_kvm", CASES_DIR / "fake_kvm.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fake_kvm = _load_fake()
CASES: dict[str, dict[str, Any]] = fake_kvm.load_cases(str(CASES_DIR))


def fake(**config: Any) -> Any:
    return fake_kvm.FakeKvm(config)


def check_document(doc: dict[str, Any]) -> None:
    """The invariants of every vlcalc.probe/1 document."""
    assert list(doc) == REQUIRED_KEYS
    assert doc["schema"] == SCHEMA_TAG == probe.SCHEMA_TAG
    assert doc["probe_version"] == 1
    assert (doc["sve"] is None) != (doc["error"] is None)
    if doc["error"] is not None:
        assert list(doc["error"]) == ["kind", "message", "ioctl", "errno"]
        assert doc["error"]["kind"] in ERROR_KINDS
        assert doc["error"]["message"]
        assert doc["trials"] == []
    else:
        assert doc["kvm"] is not None
        assert len(doc["sve"]["words"]) == 8
        assert doc["sve"]["vls"] == sorted(set(doc["sve"]["vls"]))
    for trial in doc["trials"]:
        assert list(trial) == TRIAL_KEYS
        assert len(trial["words"]) == 8
    assert set(doc["timing_ms"]) == {"query", "total"}
    assert doc["timing_ms"]["total"] >= doc["timing_ms"]["query"] >= 0.0
    # The reader's schema (generated from vlcalc/documents.py): a missing file fails, not skips.
    jsonschema.validate(doc, json.loads(SCHEMA_FILE.read_text()))


# The node conditions, as data ------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_case(name: str) -> None:
    case = CASES[name]
    result = fake_kvm.run_case(probe, case)
    doc = result["doc"]
    check_document(doc)
    for key, expected in case["expect"].items():
        if key == "error" and expected is not None:
            assert doc["error"] is not None, doc
            assert {k: doc["error"][k] for k in expected} == expected
        else:
            assert doc[key] == expected, key
    for text in case.get("error_message_contains", []):
        assert text in doc["error"]["message"]
    if "calls" in case:
        assert result["calls"] == case["calls"]
    assert result["open_fds"] == [], "the probe left fds open"
    if result["open_flags"] is not None:
        assert result["open_flags"] & os.O_CLOEXEC
        assert result["open_flags"] & os.O_ACCMODE == os.O_RDWR


def test_cases_cover_every_error_kind() -> None:
    kinds = {c["expect"]["error"]["kind"] for c in CASES.values() if c["expect"].get("error")}
    assert kinds == ERROR_KINDS


@pytest.mark.parametrize(
    "name",
    [
        "KVM_GET_API_VERSION",
        "KVM_CHECK_EXTENSION",
        "KVM_CREATE_VM",
        "KVM_CREATE_VCPU",
        "KVM_ARM_PREFERRED_TARGET",
        "KVM_ARM_VCPU_INIT",
        "KVM_GET_ONE_REG",
    ],
)
@pytest.mark.parametrize("code", ["EINVAL", "ENOMEM", "EFAULT"])
def test_each_query_ioctl_failure_is_kvm_ioctl_and_closes_fds(name: str, code: str) -> None:
    system = fake(host_vls=[128, 256], fail={name: code})
    doc = probe.collect(["--try", "128"], system)
    check_document(doc)
    assert doc["error"]["kind"] == "kvm-ioctl"
    assert (doc["error"]["ioctl"], doc["error"]["errno"]) == (name, code)
    assert name in doc["error"]["message"] and code in doc["error"]["message"]
    assert system.fds == {}


@pytest.mark.parametrize(
    ("code", "kind", "ioctl"),
    [
        ("ENOENT", "no-kvm", None),
        ("ENODEV", "no-kvm", None),
        ("ENXIO", "no-kvm", None),
        ("EACCES", "permission-denied", None),
        ("EPERM", "permission-denied", None),
        ("EIO", "kvm-ioctl", "open"),
    ],
)
def test_open_errors(code: str, kind: str, ioctl: str | None) -> None:
    doc = probe.collect([], fake(host_vls=[128], open_errno=code))
    check_document(doc)
    assert doc["error"]["kind"] == kind
    assert (doc["error"]["ioctl"], doc["error"]["errno"]) == (ioctl, code)


def test_many_trials_keep_at_most_three_fds_open() -> None:
    system = fake(host_vls=[128, 256, 512])
    specs = ["128", "128,256", "256"] * 80
    doc = probe.collect([arg for spec in specs for arg in ("--try", spec)], system)
    check_document(doc)
    assert [t["accepted"] for t in doc["trials"]] == [True, True, False] * 80
    assert system.peak_fds == 3  # /dev/kvm, one VM, its vcpu
    assert system.fds == {}


def test_too_many_trials_is_usage() -> None:
    argv = ["--try", "128"] * (probe.MAX_TRIALS + 1)
    doc = probe.collect(argv, fake(host_vls=[128]))
    assert doc["error"]["kind"] == "usage"


def test_trials_that_would_outgrow_a_readers_cap_are_usage() -> None:
    """256 trials of every VL would print ~1 MB, four times what vlcalc reads from a node."""
    every = ",".join(str(128 * vq) for vq in range(1, 513))
    doc = probe.collect(["--try", every] * 40, fake(host_vls=[128]))
    assert doc["error"]["kind"] == "usage" and "at most 16384" in doc["error"]["message"]
    assert len(json.dumps(probe.collect(["--try", every] * 32, fake(host_vls=[128])))) < 256 * 1024


def test_a_try_with_thousands_of_digits_is_usage_not_a_probe_bug() -> None:
    doc = probe.collect(["--try", "1" * 5000], fake(host_vls=[128]))
    assert doc["error"]["kind"] == "usage", doc["error"]
    assert len(doc["error"]["message"]) < 400  # the spec is quoted shortened


def test_text_the_probe_prints_has_no_lone_surrogates() -> None:
    """Python 3.6 in the C locale decodes a host name 'nœud' as 'n\\udcc5\\udc93ud': a lone
    surrogate is not valid JSON text, so the node would be bad-output."""
    assert probe.clean_text("n\udcc5\udc93ud-01") == "n??ud-01"
    assert probe.clean_text("nœud-01") == "nœud-01"


def test_trials_are_independent_of_order() -> None:
    specs = ["512", "128,256", "", "128,256,512", "128"]
    forward = probe.collect(probe_args(specs), fake(host_vls=[128, 256, 512]))
    backward = probe.collect(probe_args(specs[::-1]), fake(host_vls=[128, 256, 512]))
    assert forward["trials"] == backward["trials"][::-1]


vq_sets = st.sets(st.integers(1, 512), max_size=12)


@settings(max_examples=200, deadline=None)
@given(host=vq_sets, requested=vq_sets)
def test_trial_follows_the_prefix_rule(host: set[int], requested: set[int]) -> None:
    """Accepted exactly when the set is a prefix {h in H : h <= m} of the host set, m in H."""
    spec = ",".join(str(vq * 128) for vq in sorted(requested))
    doc = probe.collect(["--try", spec], fake(host_vls=[vq * 128 for vq in host]))
    check_document(doc)
    prefixes = [{h for h in host if h <= top} for top in host]
    trial = doc["trials"][0]
    if not host:
        assert trial["reason"] == "no-sve" and trial["errno"] is None
    else:
        assert trial["accepted"] == (requested in prefixes)
        assert trial["errno"] == (None if trial["accepted"] else "EINVAL")
        assert trial["finalize_errno"] is None
    assert trial["vls"] == [vq * 128 for vq in sorted(requested)]


# Pieces ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "vqs"),
    [
        ("", []),
        ("  ", []),
        ("128", [1]),
        ("256,128,384", [1, 2, 3]),
        (" 128 , 256 ", [1, 2]),
        ("128,128", [1]),
        ("65536", [512]),
    ],
)
def test_parse_spec(spec: str, vqs: list[int]) -> None:
    assert probe.parse_spec(spec) == vqs


@pytest.mark.parametrize(
    "spec", ["0", "100", "-128", "+128", "12a8", "128,,256", "128,", "65664", "0x80", "²", "1e3"]
)
def test_parse_spec_rejects(spec: str) -> None:
    with pytest.raises(probe.ProbeError) as info:
        probe.parse_spec(spec)
    assert info.value.kind == "usage"
    assert "multiples of 128" in info.value.message


@pytest.mark.parametrize(
    "argv", [["--try"], ["--vls", "128"], ["128"], ["-t", "128"], ["--try=128", "--help"]]
)
def test_bad_arguments_are_usage(argv: list[str]) -> None:
    doc = probe.collect(argv, fake(host_vls=[128]))
    check_document(doc)
    assert doc["error"]["kind"] == "usage"


def test_parse_args_forms() -> None:
    assert probe.parse_args(["--try", "128", "--try=", "--try=256,128"]) == [
        ("128", [1]),
        ("", []),
        ("256,128", [1, 2]),
    ]
    assert probe_args(["128", ""]) == ["--try", "128", "--try", ""]


@given(st.sets(st.integers(1, 512)))
def test_words_round_trip(vqs: set[int]) -> None:
    words = probe.words_from_vqs(sorted(vqs))
    assert len(words) == 8 and all(0 <= w < 2**64 for w in words)
    assert probe.vls_from_words(words) == [vq * 128 for vq in sorted(vqs)]
    assert fake_kvm.words_of(vqs) == words


def test_words_examples_from_domain() -> None:
    assert probe.hex_words(probe.words_from_vqs([1, 2, 4]))[0] == "0xb"
    assert probe.hex_words(probe.words_from_vqs([1, 2, 3, 4]))[0] == "0xf"
    assert probe.hex_words(probe.words_from_vqs([1, 2, 4, 8, 16]))[0] == "0x808b"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_fallback_encoder_matches_json(value: Any) -> None:
    text = probe.dumps(value, use_json=False)
    assert text == json.dumps(value, separators=(",", ":"))
    assert text.isascii() and "\n" not in text


def test_clean_text() -> None:
    assert probe.clean_text("a\x1b[2Jb\x9bc\x7f") == "a?[2Jb?c?"
    assert probe.clean_text("é" * 2000) == "é" * 1024


def test_cpu_is_decoration_even_when_broken() -> None:
    system = fake(host_vls=[128], files={probe.MIDR_PATH: "garbage", probe.CPUINFO_PATH: ":::"})
    doc = probe.collect([], system)
    assert doc["error"] is None and doc["cpu"] is None


def test_main_prints_one_line_and_returns_zero() -> None:
    out = io.StringIO()
    assert probe.main(["--try", "128"], fake(host_vls=[128, 256]), out) == 0
    text = out.getvalue()
    assert text.endswith("\n") and text.count("\n") == 1
    check_document(json.loads(text))


def test_main_when_even_uname_fails() -> None:
    class Broken(fake_kvm.FakeKvm):  # type: ignore[misc,name-defined]
        def uname(self) -> tuple[str, str, str]:
            raise OSError(errno.EIO, "uname broke")

    out = io.StringIO()
    assert probe.main([], Broken({}), out) == 0
    doc = json.loads(out.getvalue())
    check_document(doc)
    assert doc["error"]["kind"] == "internal"
    assert "OSError" in doc["error"]["message"]


def test_real_system_reads_files_and_closes_them() -> None:
    system = probe.System()
    before = len(os.listdir("/proc/self/fd"))
    assert system.read_file(str(PROBE_PATH)) == PROBE_PATH.read_text()[: probe.MAX_FILE_BYTES]
    assert system.read_file("/nonexistent/vlcalc") is None
    assert len(os.listdir("/proc/self/fd")) == before
    buf = system.buffer(bytes(64))
    assert buf.buffer_info()[0] != 0 and buf.tobytes() == bytes(64)


# The file itself -------------------------------------------------------------------------------


def test_syntax_floor_is_python_3_6() -> None:
    source = PROBE_PATH.read_text()
    tree = ast.parse(source, feature_version=(3, 6))
    for node in ast.walk(tree):
        # Type comments only: annotations would tie the probe to a newer typing story.
        assert not isinstance(node, ast.AnnAssign), node.lineno
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            assert node.returns is None, node.name
            args = node.args
            every = args.posonlyargs + args.args + args.kwonlyargs
            every += [a for a in (args.vararg, args.kwarg) if a is not None]
            assert all(a.annotation is None for a in every), node.name
        if isinstance(node, ast.ImportFrom):
            assert node.module != "__future__", "from __future__ imports need a newer Python"


def test_imports_are_on_the_allow_list() -> None:
    tree = ast.parse(PROBE_PATH.read_text())
    imported: set[str] = set()
    type_only: set[str] = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0 and node.module is not None
            names = [node.module]
        imported.update(names)
    for node in tree.body:  # the `if MYPY:` block is never executed on a node
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "MYPY":
            for inner in node.body:  # imports for type comments, and type aliases
                assert isinstance(inner, (ast.ImportFrom, ast.Assign))
                if isinstance(inner, ast.ImportFrom) and inner.module is not None:
                    type_only.add(inner.module)
    assert probe.MYPY is False
    assert type_only <= TYPE_CHECKING_ONLY
    assert imported - type_only <= IMPORT_ALLOW_LIST
    assert "ctypes" not in imported


def test_probe_source_is_the_file_read_once() -> None:
    assert probe_source() == PROBE_PATH.read_bytes()
    assert probe_source() is probe_source()


def _run(command: list[str], stdin: bytes | None = None) -> dict[str, Any]:
    done = subprocess.run(command, input=stdin, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    text = done.stdout.decode("ascii")
    assert text.endswith("\n") and text.count("\n") == 1
    doc: dict[str, Any] = json.loads(text)
    check_document(doc)
    return doc


needs_x86 = pytest.mark.skipif(
    os.uname().machine == "aarch64", reason="expects a not-arm64 machine (this one is aarch64)"
)


@needs_x86
def test_real_run_as_script() -> None:
    doc = _run([sys.executable, str(PROBE_PATH), "--try", "128,256"])
    assert doc["error"]["kind"] == "not-arm64"
    assert doc["arch"] == os.uname().machine
    assert doc["hostname"] == os.uname().nodename
    assert doc["kernel"] == os.uname().release


@needs_x86
def test_real_run_from_stdin() -> None:
    doc = _run([sys.executable, "-", "--try", ""], stdin=probe_source())
    assert doc["error"]["kind"] == "not-arm64"
    assert doc["python"] == "{}.{}.{}".format(*sys.version_info[:3])


@needs_x86
def test_real_run_without_json_module() -> None:
    """Debian's python3-minimal has no json: same document from the probe's own encoder."""
    hide_json = (
        "import sys; sys.modules['json'] = None; sys.argv = ['-']; "
        f"exec(compile(open({str(PROBE_PATH)!r}).read(), 'probe.py', 'exec'))"
    )
    doc = _run([sys.executable, "-c", hide_json])
    assert doc["error"]["kind"] == "not-arm64"


@needs_x86
def test_real_run_bad_spec() -> None:
    doc = _run([sys.executable, "-", "--try", "96"], stdin=probe_source())
    assert doc["error"]["kind"] == "usage"


@needs_x86
def test_run_local() -> None:
    text = run_local(["128", ""])
    assert text.endswith("\n")
    doc = json.loads(text)
    check_document(doc)
    assert doc["error"]["kind"] == "not-arm64"


def test_run_local_timeout_is_a_node_error() -> None:
    with pytest.raises(NodeError) as info:
        run_local([], timeout_s=0.000001)
    assert info.value.kind == "timeout"


def _old_pythons() -> list[str]:
    """Interpreters older than 3.9 on this machine (pyenv, or VLCALC_OLD_PYTHONS=path:path)."""
    configured = os.environ.get("VLCALC_OLD_PYTHONS")
    if configured:
        return configured.split(os.pathsep)
    found = [shutil.which(f"python3.{minor}") for minor in (6, 7, 8)]
    pyenv = os.path.expanduser("~/.pyenv/versions")
    found += sorted(glob.glob(os.path.join(pyenv, "3.[678].*", "bin", "python3")))
    # pyenv's shims exist for every version but only run the selected one.
    return sorted({os.path.realpath(p) for p in found if p and "/shims/" not in p})


@pytest.mark.skipif(not _old_pythons(), reason="no Python 3.6-3.8 interpreter on this machine")
@pytest.mark.parametrize("python", _old_pythons())
def test_cases_under_old_python(python: str) -> None:
    """The whole probe, not just its syntax, on an old interpreter: same results as here."""
    done = subprocess.run(
        [python, str(CASES_DIR / "fake_kvm.py"), str(PROBE_PATH), str(CASES_DIR)],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    old = json.loads(done.stdout)
    here = {name: fake_kvm.run_case(probe, case) for name, case in CASES.items()}
    assert json.loads(json.dumps(here)) == old
    real = subprocess.run(
        [python, "-", "--try", "128"],
        input=probe_source(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert real.returncode == 0 and json.loads(real.stdout)["schema"] == SCHEMA_TAG
