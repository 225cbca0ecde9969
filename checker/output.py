"""What the CLI prints: violations and rule problems as text, JSON Lines or CSV.

Not the evidence report (``checker/evidence``), which the ``evidence`` command builds from the store.
"""

from __future__ import annotations

import csv
import json
import shutil
import textwrap
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from checker.engine import Violation
    from checker.errors import RuleError
    from checker.store import StoredViolation

from checker.errors import visible
from checker.rules.rule import SEVERITY_RANK

# Spreadsheets run a cell starting with these as a formula (OWASP "CSV injection").
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> object:
    """A value safe to open in a spreadsheet: text that could start a formula gets a ``'``."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def safe_csv_row(row: dict[str, Any]) -> dict[str, Any]:
    """Every cell of ``row`` through ``csv_cell``."""
    return {key: csv_cell(value) for key, value in row.items()}


def write_json_lines(violations: Iterable[Violation], out: TextIO,
                     status: Callable[[Violation], str]) -> int:
    """One JSON object per line, each with its ``status`` (``scan``: provisional or final).

    Returns how many were written.
    """
    count = 0
    for violation in violations:
        row = {**violation.to_json(), "status": status(violation)}
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
        count += 1
    return count


def stored_json(stored: StoredViolation) -> dict[str, Any]:
    """A recorded violation: ``scan --format json``'s fields plus when and by what it was found.

    ``status`` is provisional (late spans may still withdraw it), confirmed or retracted (with
    ``retraction_reason``).
    """
    return {**stored.violation.to_json(), "status": stored.status,
            **({"retraction_reason": stored.retraction_reason} if stored.retraction_reason else {}),
            "found_at": stored.found_at.isoformat(),
            "evaluation_id": stored.evaluation_id, "notifications": list(stored.notifications)}


def write_stored_json_lines(found: Iterable[StoredViolation], out: TextIO) -> None:
    """One JSON object per recorded violation."""
    out.writelines(json.dumps(stored_json(s), ensure_ascii=False) + "\n" for s in found)


CSV_COLUMNS = ("found_at", "severity", "rule_id", "rule_name", "trace_id", "reason", "frameworks",
               "controls", "root_service", "root_name", "start_time_unix_nano", "evaluation_id",
               "notifications", "status", "retraction_reason")


def write_stored_csv(found: Iterable[StoredViolation], out: TextIO) -> None:
    """One row per recorded violation; list fields joined with ``;``."""
    writer = csv.DictWriter(out, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for stored in found:
        row = stored_json(stored)
        undelivered = ";".join(f"{n['route']}={n['state']}" for n in row["notifications"])
        writer.writerow(safe_csv_row({**row, "frameworks": ";".join(row["frameworks"]),
                                      "controls": ";".join(row["controls"]),
                                      "notifications": undelivered}))


def listing_order(violation: Violation) -> tuple[int, str, str]:
    """Most severe first, then by rule and trace: the same output whatever order the source gave."""
    return SEVERITY_RANK.get(violation.severity, 9), violation.rule_id, violation.trace_id


def write_table(violations: list[Violation], out: TextIO,
                status: Callable[[Violation], str] | None = None) -> None:
    """A readable table, most severe first, the reason wrapped to the terminal width.

    With ``status``, a STATUS column says each violation's (provisional, confirmed, retracted).
    """
    if not violations:
        return
    rows = sorted(violations, key=listing_order)
    rule_width = max(len("RULE"), *(len(v.rule_id) for v in rows))
    shown = "STATUS      " if status else ""
    head = f"{shown}{'SEVERITY':<9} {'RULE':<{rule_width}} {'TRACE':<32}  REASON"
    out.write(head + "\n")
    width = max(60, shutil.get_terminal_size((160, 24)).columns)
    indent = len(head) - len("REASON")
    for v in rows:
        lines = textwrap.wrap(visible(v.reason), max(30, width - indent)) or [""]
        first = f"{status(v):<12}" if status else ""
        out.write(f"{first}{v.severity:<9} {v.rule_id:<{rule_width}} {v.trace_id:<32}  {lines[0]}\n")
        out.writelines(" " * indent + more + "\n" for more in lines[1:])


def write_problems(errors: Iterable[RuleError], warnings: Iterable[RuleError], out: TextIO) -> None:
    """Every rule error and warning, each with its location, source line and hint."""
    out.writelines(f"error: {error}\n" for error in errors)
    out.writelines(f"warning: {warning}\n" for warning in warnings)
