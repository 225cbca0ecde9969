"""Compliance evidence: figures per control from the store's ledger, rendered for auditors.

``build`` reads the figures of a period (``Filters``) from the store; ``WRITERS`` render
them as HTML, Markdown, JSON or CSV.
"""

from checker.evidence.figures import Filters, Report, build
from checker.evidence.render import WRITERS

__all__ = ["WRITERS", "Filters", "Report", "build"]
