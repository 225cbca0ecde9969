"""Where the real Tempo's recorded answers are: shared/ beside the repository (as CI lays it out)."""

from __future__ import annotations

from pathlib import Path

import pytest

_CANDIDATES = (Path(__file__).resolve().parents[2] / "shared" / "tempo-recordings",
               Path("/work/shared/tempo-recordings"))
RECORDINGS: Path | None = next((p for p in _CANDIDATES if p.is_dir()), None)
needs_recordings = pytest.mark.skipif(
    RECORDINGS is None, reason="shared/tempo-recordings (the real Tempo's answers) is absent")
