"""Golden files: compare with the recorded text, or record it (``--update-golden``, or a new case)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path


def assert_golden(expected_file: Path, actual: str, *, update: bool) -> None:
    """``actual`` equals the recorded file; with ``update`` or no file yet, it is recorded first."""
    if update or not expected_file.exists():
        expected_file.parent.mkdir(exist_ok=True)
        expected_file.write_text(actual)
    assert expected_file.read_text() == actual
