"""Session-wide hooks: the conformance counts in every run's terminal summary."""

from __future__ import annotations

import pytest
from inventory_conformance import SUMMARY


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """What the generated-inventory conformance suite measured (CI's output included)."""
    if SUMMARY:
        terminalreporter.section("inventory conformance against the real ansible")
        for line in SUMMARY:
            terminalreporter.write_line(line)
