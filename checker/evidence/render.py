"""An evidence report as JSON, CSV (the same figures, for GRC tools), Markdown or one HTML file.

The HTML page is self-contained (inline CSS, an inline SVG chart, nothing fetched) and
prints well: an auditor can file it as it is.
"""

from __future__ import annotations

import csv
import json
import re
from html import escape
from importlib import resources
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import quote

from checker.output import safe_csv_row

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from checker.evidence.figures import ControlFigures, Day, Report, RuleFigures


def stamp(moment: datetime) -> str:
    """A time as every format writes it: RFC 3339 in UTC, ``Z`` rather than ``+00:00``."""
    return moment.isoformat().replace("+00:00", "Z")


def pct(share: float | None) -> str:
    """A share as people read it, two decimals so that a short gap never rounds to 100 %."""
    return "n/a" if share is None else f"{share * 100:.2f} %"


def _day(day: Day) -> dict[str, Any]:
    return {"day": day.day, "windows": day.windows, "traces_in_scope": day.in_scope,
            "violations": day.violations, "compliance_rate": day.rate}


def _rule(rule: RuleFigures) -> dict[str, Any]:
    return {
        "rule_id": rule.rule_id, "name": rule.name, "severity": rule.severity,
        "frameworks": rule.frameworks, "controls": rule.controls,
        "versions": [{**v, "first_seen_at": stamp(v["first_seen_at"])} for v in rule.versions],
        "expected_seconds": rule.expected_seconds, "covered_seconds": rule.covered_seconds,
        "coverage": rule.coverage, "windows_evaluated": rule.windows_evaluated,
        "windows_incomplete": rule.windows_incomplete, "windows_skipped": rule.windows_skipped,
        "failed_attempts": rule.failed_attempts, "backfilled_windows": rule.backfilled_windows,
        "traces_in_scope": rule.traces_in_scope, "never_applied": rule.never_applied,
        "gaps": [{"start": stamp(g.start), "end": stamp(g.end), "reason": g.reason} for g in rule.gaps],
        "windows_provisional": rule.windows_provisional,
        "violations": [_violation(v) for v in rule.violations],
        "provisional_violations": rule.provisional_violations,
        "amendments": {"late": [_violation(v) for v in rule.late],
                       "retracted": [_violation(v) for v in rule.retracted],
                       "totals": rule.amendment_totals},
        "daily": [_day(d) for d in rule.days],
    }


def _violation(violation: dict[str, Any]) -> dict[str, Any]:
    return {k: stamp(v) if k in {"found_at", "amended_at"} and v is not None else v
            for k, v in violation.items()}


def as_json(report: Report) -> dict[str, Any]:
    """Every figure, machine-readable."""
    f = report.filters
    return {
        "report": {"from": stamp(f.start), "to": stamp(f.end), "framework": f.framework, "control": f.control,
                   "rule": f.rule, "generated_at": stamp(report.generated_at),
                   "checker_version": report.checker_version},
        "ledger": {"records": report.ledger.records, "head": report.ledger.head, "intact": report.ledger.ok,
                   "broken_at": report.ledger.broken_at, "problem": report.ledger.problem,
                   "verify_command": report.verify_command, "checkpoints": report.checkpoints,
                   "checkpoints_checked": report.checkpoints_checked,
                   "checkpoint_problems": report.checkpoint_problems,
                   "pruned_through": report.ledger.pruned_through},
        "controls": [{"control": c.control, "coverage": c.coverage, "totals": c.totals,
                      "daily": [_day(d) for d in c.days],
                      "rules": [_rule(r) for r in c.rules]} for c in report.controls],
    }


def write_json(report: Report, out: TextIO) -> None:
    """Indented JSON."""
    json.dump(as_json(report), out, indent=2, ensure_ascii=False)
    out.write("\n")


CSV_COLUMNS = ("control", "rule_id", "rule_name", "day", "coverage", "covered_seconds", "expected_seconds",
               "windows_evaluated", "windows_skipped", "failed_attempts", "gaps", "traces_in_scope",
               "violations", "compliance_rate", "ledger_head", "provisional_violations",
               "windows_provisional", "late_violations", "retracted_violations", "confirmed_by_final",
               "never_applied")


def write_csv(report: Report, out: TextIO) -> None:
    """One summary row per control and rule (``day`` empty), then one row per day.

    The verdict columns (provisional violations and windows, amendments) come last and are
    filled on summary rows only, so older consumers that read columns by name are unaffected.
    """
    writer = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for control in report.controls:
        for rule in control.rules:
            base = {"control": control.control, "rule_id": rule.rule_id, "rule_name": rule.name}
            writer.writerow(safe_csv_row({
                **base, "day": "", "coverage": rule.coverage, "covered_seconds": rule.covered_seconds,
                "expected_seconds": rule.expected_seconds, "windows_evaluated": rule.windows_evaluated,
                "windows_skipped": rule.windows_skipped, "failed_attempts": rule.failed_attempts,
                "gaps": len(rule.gaps), "traces_in_scope": rule.traces_in_scope,
                "violations": len(rule.violations), "compliance_rate": _overall_rate(rule),
                "ledger_head": report.ledger.head, "provisional_violations": rule.provisional_violations,
                "windows_provisional": rule.windows_provisional, "late_violations": len(rule.late),
                "retracted_violations": len(rule.retracted), "confirmed_by_final": rule.confirmed_by_final,
                "never_applied": rule.never_applied}))
            for day in rule.days:
                writer.writerow(safe_csv_row({**base, "day": day.day, "windows_evaluated": day.windows,
                                              "traces_in_scope": day.in_scope,
                                              "violations": day.violations, "compliance_rate": day.rate}))


def _overall_rate(rule: RuleFigures) -> float | None:
    if rule.traces_in_scope:
        return max(0.0, 1 - len(rule.violations) / rule.traces_in_scope)
    clean = sum(d.clean_windows for d in rule.days)
    windows = sum(d.windows for d in rule.days)
    return clean / windows if windows else None


# Markdown and HTML that text from traces or rules could start; a newline would end a cell.
_MARKDOWN = str.maketrans({c: "\\" + c for c in "\\`*[]|~#"} | {
    "&": "&amp;", "<": "&lt;", ">": "&gt;", "\n": " ", "\r": " "})
# Inside a word (max_catchup) an underscore is never emphasis, and stays readable.
_EMPHASIS_UNDERSCORE = re.compile(r"(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")


def _md(text: object) -> str:
    """Text shown as it is in Markdown: span names reach reports through reasons."""
    return _EMPHASIS_UNDERSCORE.sub(r"\_", str(text).translate(_MARKDOWN))


def _md_url(url: str) -> str:
    """A link target that cannot end the link early."""
    return quote(url, safe=":/?#[]@!$&'*+,;=%~")


def _fence(code: str) -> str:
    """A code fence longer than any run of backticks in ``code``."""
    longest = max((len(run) for run in re.findall("`+", code)), default=0)
    return "`" * max(3, longest + 1)


def write_markdown(report: Report, out: TextIO) -> None:
    """For a wiki or a ticket."""
    f = report.filters
    out.write(f"# Compliance evidence: {stamp(f.start)} to {stamp(f.end)}\n\n")
    out.write(f"Generated {stamp(report.generated_at)} by BeTrace Checker {_md(report.checker_version)}. "
              f"{ledger_sentence(report)}\n")
    for control in report.controls:
        out.write(f"\n## {_md(control.control)}\n\n{_md(totals_sentence(control))}\n")
        for rule in control.rules:
            out.write(f"\n### {_md(rule.name)} ({_md(rule.rule_id)}, {_md(rule.severity)})\n\n")
            out.writelines(_version_md(v) for v in rule.versions)
            out.write(f"\n| coverage | windows evaluated | skipped | failed attempts | traces in scope | "
                      f"violations | compliance |\n|---|---|---|---|---|---|---|\n"
                      f"| {pct(rule.coverage)} | {rule.windows_evaluated} | {rule.windows_skipped} | "
                      f"{rule.failed_attempts} | {_count(rule.traces_in_scope)} | {len(rule.violations)} | "
                      f"{pct(_overall_rate(rule))} |\n")
            if rule.never_applied:
                out.write(f"\n**{NEVER_APPLIED}**\n")
            if rule.gaps:
                out.write("\nGaps:\n\n")
                out.writelines(f"- {stamp(g.start)} to {stamp(g.end)}: {_md(g.reason)}\n" for g in rule.gaps)
            out.write(f"\n{_md(verdict_sentence(rule))}\n")
            for title, listed in (("Violations", rule.violations),
                                  ("Late violations (amendments)", rule.late),
                                  ("Retracted (amendments, not violations)", rule.retracted)):
                if listed:
                    out.write(f"\n{title}:\n\n")
                    out.writelines(f"- {_md_trace(v)} {_md(violation_note(v))}\n" for v in listed)


def _md_trace(violation: dict[str, Any]) -> str:
    trace = _md(violation["trace_id"])
    return f"[{trace}]({_md_url(violation['trace_url'])})" if violation["trace_url"] else trace


def violation_note(violation: dict[str, Any]) -> str:
    """The reason, with the verdict where it is not plainly a confirmed violation."""
    status = violation.get("status", "confirmed")
    if status == "retracted":
        return f"{violation['reason']} (retracted: {violation.get('retraction_reason', '')})"
    if status == "provisional":
        return f"{violation['reason']} (provisional: not final yet)"
    return str(violation["reason"])


def verdict_sentence(rule: RuleFigures) -> str:
    """A rule's verdicts in words: what is not final yet, and what final passes amended."""
    totals = rule.amendment_totals
    return (f"Verdicts: {len(rule.violations)} violations, {rule.provisional_violations} of them provisional "
            f"(not final yet); {rule.windows_provisional} windows not settled yet. Amendments by final "
            f"passes: {totals['late']} late violations, {totals['retracted']} retracted, "
            f"{totals['confirmed']} provisional violations confirmed.")


NEVER_APPLIED = ("No evidence: the rule never applied. No trace was in its scope in the period, "
                 "which looks exactly like a pass; check that its span names and attributes are "
                 "what the instrumentation emits (betrace validate warns about the usual mistakes).")


def totals_sentence(control: ControlFigures) -> str:
    """The control's coverage line, amendments included."""
    totals = control.totals
    return (f"Coverage {pct(control.coverage)}: {totals['windows_evaluated']} windows evaluated "
            f"({totals['windows_provisional']} not settled yet); {totals['violations']} violations "
            f"({totals['provisional_violations']} provisional); amendments: {totals['late']} late "
            f"violations, {totals['retracted']} retracted, {totals['confirmed']} confirmed."
            + (f" {totals['never_applied']} of its rules never applied: no evidence from them."
               if totals["never_applied"] else ""))


def _version_md(version: dict[str, Any]) -> str:
    condition = version["condition"].strip()
    fence = _fence(condition)
    return (f"- version `{version['version'][:12]}` from {_md(version['source'])}:\n\n  {fence}\n"
            + "".join(f"  {line}\n" for line in condition.splitlines()) + f"  {fence}\n")


def _count(value: int | None) -> str:
    return "not measured" if value is None else str(value)


def ledger_sentence(report: Report) -> str:
    """The ledger's state, with the command that lets a reader check it."""
    verdict = report.ledger
    if not verdict.ok:
        return f"LEDGER BROKEN: {verdict.problem}." + checkpoints_sentence(report)
    return (f"Ledger of {verdict.records} records intact; head hash `{verdict.head}` "
            f"(check it: `{report.verify_command}`)." + checkpoints_sentence(report))


def checkpoints_sentence(report: Report) -> str:
    """Which signed checkpoints vouch for the period, whether they were checked, and how to check them."""
    broken = "".join(f" CHECKPOINT BROKEN: {problem}." for problem in report.checkpoint_problems)
    pruned = report.ledger.pruned_through
    start = ("" if pruned is None else f" The chain starts after record {pruned}, pruned under "
             "evidence.retention; the signed retention checkpoint keeps the pruned records' daily counts.")
    found = report.checkpoints
    if not found:
        return (f"{broken}{start} No signed checkpoint covers the period: its records are vouched for by "
                "the hash chain alone (evidence.signing_key).")
    last = found[-1]
    checked = ("checked with the signing key" if report.checkpoints_checked else
               f"not checked here: `{report.verify_command} --public-key KEY.pub`")
    return (f"{broken}{start} {len(found)} signed checkpoints cover the period, the last at record "
            f"{last['last_record']} (head `{last['head']}`), signed {last['signed_at']} by key "
            f"{last['key_id']}; {checked}.")


def _style() -> str:
    """The page's CSS, shipped beside this module and inlined into every report."""
    return (resources.files("checker.evidence") / "report.css").read_text(encoding="utf-8")


def _chart(days: list[Day]) -> str:
    """Compliance rate per day as an inline SVG line chart (0 to 100 %)."""
    width, height, left, bottom, top = 640, 170, 44, 28, 10
    plotted = [(i, d.rate) for i, d in enumerate(days) if d.rate is not None]
    span = max(1, len(days) - 1)

    def x(i: int) -> float:
        return left + (width - left - 10) * i / span

    def y(rate: float) -> float:
        return top + (height - top - bottom) * (1 - rate)

    parts = [(f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="Compliance rate per day" '
              'xmlns="http://www.w3.org/2000/svg">')]
    for rate in (0, 0.5, 1):
        parts.append(f'<line x1="{left}" x2="{width - 10}" y1="{y(rate):.1f}" y2="{y(rate):.1f}" '
                     'stroke="#d0d7de"/>')
        parts.append(f'<text x="{left - 6}" y="{y(rate) + 4:.1f}" font-size="11" text-anchor="end" '
                     f'fill="#57606a">{int(rate * 100)}%</text>')
    if plotted:
        points = " ".join(f"{x(i):.1f},{y(r):.1f}" for i, r in plotted)
        parts.append(f'<polyline points="{points}" fill="none" stroke="#0969da" stroke-width="2"/>')
        parts.extend(f'<circle cx="{x(i):.1f}" cy="{y(r):.1f}" r="3" fill="#0969da">'
                     f"<title>{escape(days[i].day)}: {r * 100:.2f}%</title></circle>" for i, r in plotted)
    ends = sorted({0, len(days) - 1}) if days else []
    parts.extend(f'<text x="{x(i):.1f}" y="{height - 8}" font-size="11" text-anchor="middle" '
                 f'fill="#57606a">{escape(days[i].day)}</text>' for i in ends)
    parts.append("</svg>")
    return "".join(parts)


def _rule_html(rule: RuleFigures) -> str:
    versions = "".join(f"<li><code>{escape(v['version'][:12])}</code> from {escape(v['source'])}:"
                       f"<pre>{escape(v['condition'].strip())}</pre></li>" for v in rule.versions)
    coverage_class = "ok" if rule.coverage >= 1 else "bad"
    gaps = "".join(f'<tr class="gap"><td>{stamp(g.start)}</td><td>{stamp(g.end)}</td>'
                   f"<td>{escape(g.reason)}</td></tr>" for g in rule.gaps)
    found = _violations_html(rule.violations)
    return (
        f'<section class="rule"><h3>{escape(rule.name)} <span class="muted">({escape(rule.rule_id)}, '
        f"{escape(rule.severity)})</span></h3><ul>{versions}</ul>"
        "<table><tr><th>Coverage</th><th>Windows evaluated</th><th>Skipped</th><th>Failed attempts</th>"
        "<th>Traces in scope</th><th>Violations</th><th>Compliance</th></tr>"
        f'<tr><td class="{coverage_class}">{pct(rule.coverage)}</td><td>{rule.windows_evaluated}</td>'
        f"<td>{rule.windows_skipped}</td><td>{rule.failed_attempts}</td><td>{_count(rule.traces_in_scope)}</td>"
        f"<td>{len(rule.violations)}</td><td>{pct(_overall_rate(rule))}</td></tr></table>"
        + (f'<p class="bad"><strong>{escape(NEVER_APPLIED)}</strong></p>' if rule.never_applied else "")
        + (f"<h4>Gaps</h4><table><tr><th>From</th><th>To</th><th>Why</th></tr>{gaps}</table>" if gaps
           else '<p class="ok">No gaps: every window of the period was evaluated.</p>')
        + (f"<h4>Violations</h4>{found}" if found else "<p>No violations.</p>")
        + f"<p>{escape(verdict_sentence(rule))}</p>"
        + (f"<h4>Late violations (amendments)</h4>{_violations_html(rule.late)}" if rule.late else "")
        + (f"<h4>Retracted (amendments, not violations)</h4>{_violations_html(rule.retracted)}"
           if rule.retracted else "")
        + "</section>")


def _violations_html(listed: list[dict[str, Any]]) -> str:
    if not listed:
        return ""
    rows = "".join(
        f"<tr><td>{_link(v)}</td><td>{escape(v['severity'])}</td><td>{stamp(v['found_at'])}</td>"
        f"<td>{escape(v.get('status', 'confirmed'))}</td><td>{escape(violation_note(v))}</td></tr>"
        for v in listed)
    return ("<table><tr><th>Trace</th><th>Severity</th><th>Found</th><th>Status</th><th>Reason</th></tr>"
            f"{rows}</table>")


def _link(violation: dict[str, Any]) -> str:
    trace = escape(violation["trace_id"])
    url = violation.get("trace_url")
    return f'<a href="{escape(url)}"><code>{trace}</code></a>' if url else f"<code>{trace}</code>"


def _control_html(control: ControlFigures) -> str:
    return (f"<h2>{escape(control.control)}</h2><p>{escape(totals_sentence(control))}</p>"
            '<p class="muted">Compliance rate per day</p>'
            f"{_chart(control.days)}" + "".join(_rule_html(r) for r in control.rules))


def write_html(report: Report, out: TextIO) -> None:
    """One self-contained page."""
    f = report.filters
    scope = ", ".join(f"{k} {escape(v)}" for k, v in (("framework", f.framework), ("control", f.control),
                                                      ("rule", f.rule)) if v) or "all rules"
    ledger_class = "ok" if report.ledger.ok else "bad"
    out.write(
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Compliance evidence {stamp(f.start)} to {stamp(f.end)}</title>"
        f"<style>{_style()}</style></head><body>"
        f"<h1>Compliance evidence</h1><p>{stamp(f.start)} to {stamp(f.end)} · {scope}</p>"
        f'<p class="{ledger_class}">{escape(ledger_sentence(report))}</p>'
        f'<p class="muted">Generated {stamp(report.generated_at)} by BeTrace Checker '
        f"{escape(report.checker_version)}.</p>"
        + ("".join(_control_html(c) for c in report.controls) or "<p>No rule matches these filters.</p>")
        + "</body></html>\n")


WRITERS: dict[str, Callable[[Report, TextIO], None]] = {
    "html": write_html, "md": write_markdown, "json": write_json, "csv": write_csv}
