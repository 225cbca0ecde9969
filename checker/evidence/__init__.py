"""Compliance evidence: figures per control from the store's ledger, rendered for auditors.

``build`` reads the figures of a period (``Filters``) from the store; ``writer`` renders them
as HTML, Markdown, JSON, CSV or OSCAL (``FORMATS``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from checker.errors import UsageError
from checker.evidence.figures import Filters, Report, build
from checker.evidence.render import WRITERS

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TextIO

FORMATS = (*WRITERS, "oscal")


def writer(name: str) -> Callable[[Report, TextIO], None]:
    """The function writing one format; OSCAL's needs the ``oscal`` extra, checked before any work."""
    if name != "oscal":
        return WRITERS[name]
    try:
        from checker.evidence.oscal import write_oscal  # noqa: PLC0415  (an optional extra)
    except ModuleNotFoundError as err:
        if not (err.name or "").startswith("trestle"):
            raise
        raise UsageError("--format oscal needs compliance-trestle, which is not installed",
                         hint="pip install 'betrace-checker[oscal]'") from None
    return write_oscal


__all__ = ["FORMATS", "Filters", "Report", "build", "writer"]
