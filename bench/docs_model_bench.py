"""Decode + validate a synthetic N-node scan document: msgspec (vlcalc's model) against pydantic v2.

    python bench/docs_model_bench.py [--nodes 100000] [--runs 5]

The document is the one ``bench/report_bench.py`` times end to end (``synthetic_scan``), written
as ``vlcalc scan --save`` writes it (indent=1).  Timed in this process, best of ``--runs``, with
the garbage collector off (as ``vlcalc report`` runs):

* ``json.loads`` alone, the floor of the old reader (which then ran its own validator);
* msgspec: ``decode(data, ScanDocument)``, i.e. JSON parsing, validation against the model, and
  the duplicate-key check; then the whole reader (``files.parse_bytes``: also the cross-checks,
  the text patterns and the 100,000 NodeRecords);
* pydantic v2: ``TypeAdapter(Scan).validate_json(data)`` over an equivalent model, with the
  text and word patterns in the model (pydantic checks them in Rust) and without them.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from report_bench import synthetic_scan  # noqa: E402

from vlcalc.documents import ScanDocument, decode  # noqa: E402
from vlcalc.files import parse_bytes  # noqa: E402


def pydantic_model(patterns: bool) -> Any:
    from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

    text: Any = Annotated[
        str,
        Field(max_length=1024, pattern="^[^\u0000-\u001f\u007f-\u009f]*$" if patterns else None),
    ]
    word: Any = Annotated[str, Field(pattern="^0x[0-9a-fA-F]{1,16}$" if patterns else None)]
    vl = Annotated[int, Field(ge=128, le=65536, multiple_of=128)]
    kind = Annotated[str, Field(pattern="^[a-z0-9][a-z0-9-]{0,39}$")]

    class Strict(BaseModel):
        model_config = ConfigDict(strict=True, frozen=True)

    class Sve(Strict):
        vls: Annotated[tuple[vl, ...], Field(max_length=512)]
        words: Annotated[tuple[word, ...], Field(min_length=8, max_length=8)]

    class Cpu(Strict):
        midr: text | None = None
        model: text | None = None

    class Kvm(Strict):
        api_version: int | None = None
        ipa_bits: int | None = None
        sve_cap: int | None = None

    class Trial(Strict):
        vls: Annotated[tuple[vl, ...], Field(max_length=512)]
        accepted: bool
        spec: text | None = None
        words: tuple[word, ...] | None = None
        errno: text | None = None
        finalize_errno: text | None = None
        reason: text | None = None

    class ProbeError(Strict):
        kind: kind
        message: text
        ioctl: text | None = None
        errno: text | None = None

    class Probe(Strict):
        schema_: Literal["vlcalc.probe/1"] = Field(alias="schema")
        hostname: text
        kernel: text
        arch: text
        sve: Sve | None
        error: ProbeError | None
        probe_version: Annotated[int, Field(ge=1)] | None = None
        python: text | None = None
        kvm: Kvm | None = None
        cpu: Cpu | None = None
        trials: Annotated[tuple[Trial, ...], Field(max_length=4096)] = ()
        timing_ms: dict[str, Any] | None = None

    class Failure(Strict):
        kind: kind
        message: str

    class Node(Strict):
        name: Annotated[str, Field(min_length=1, max_length=255)]
        outcome: Literal["ok", "error"]
        probe: Probe | None
        error: Failure | None
        groups: tuple[str, ...] = ()
        target: dict[str, Any] | None = None
        elapsed_ms: float | None = None

    class Scan(Strict):
        schema_: Literal["vlcalc.scan/1"] = Field(alias="schema")
        started: str
        inventory: str | None
        nodes: list[Node]
        vlcalc_version: str | None = None
        finished: str | None = None
        limit: str | None = None
        interrupted: bool | None = None

    return TypeAdapter(Scan)


def best(runs: int, func: Callable[[], object]) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - start)
        del result
    return min(times), statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    data = json.dumps(synthetic_scan(args.nodes), indent=1).encode()
    gc.disable()
    with_patterns, without_patterns = pydantic_model(True), pydantic_model(False)
    cases: list[tuple[str, Callable[[], object]]] = [
        ("json.loads (floor of the old reader)", lambda: json.loads(data)),
        ("msgspec decode+validate (vlcalc)", lambda: decode(data, ScanDocument, source="b")),
        ("msgspec whole reader -> NodeRecords", lambda: parse_bytes(data, source="b")),
        ("pydantic v2 validate_json, patterns", lambda: with_patterns.validate_json(data)),
        ("pydantic v2 validate_json, no patterns", lambda: without_patterns.validate_json(data)),
    ]
    print(f"{args.nodes} nodes, {len(data) / 1e6:.0f} MB, best/median of {args.runs} runs\n")
    print("| what | best s | median s |\n|---|---|---|")
    for label, func in cases:
        low, mid = best(args.runs, func)
        print(f"| {label} | {low:.3f} | {mid:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
