"""Shared pytest options and fixtures."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true",
                     help="rewrite tests/golden expectations from the current output, and the "
                          "Kubernetes manifests that embed a file from deploy/ (tests/manifests.py)")


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture(autouse=True, scope="session")
def _logs_to_stderr() -> None:
    """Logs as the CLI writes them (JSON lines on stderr), also from code called directly."""
    from checker.log import configure  # noqa: PLC0415

    configure(json=True)
