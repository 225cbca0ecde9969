"""The trace readers' own failures; the caller adds the file and line."""

from __future__ import annotations


class DecodeError(ValueError):
    """A JSON value that is not valid OTLP; the caller adds file and line.

    ``anchors`` are texts of the offending span (its spanId first), so that an error in a
    pretty-printed file can point at the span's line.
    """

    def __init__(self, message: str, anchors: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.anchors = anchors
