"""An evidence report as an OSCAL 1.1.3 assessment-results document, for GRC tools that read OSCAL.

The same figures as every other format (``figures.py``), mapped onto OSCAL: one result for the
period, one observation per control (its coverage line, its rules and their versions, and every
violation as relevant evidence linking to the trace), one finding per control with violations,
and the ledger's head hash in the back matter. Built with compliance-trestle's models, which
validate the document as it is made: the trestle 3.x line models OSCAL 1.1.3 (4.x and later
model 1.2).

Identifiers are uuid5 over what the report is about (the store, named by its first ledger record,
the period and the filters), so a report run again has the same UUIDs; like the other formats it
carries its generation time (``metadata.last-modified``), the one thing that differs.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import TYPE_CHECKING, Any

from trestle.oscal import assessment_results as ar
from trestle.oscal import common

from checker.evidence.render import (
    NEVER_APPLIED,
    ledger_sentence,
    pct,
    stamp,
    totals_sentence,
    verdict_sentence,
    violation_note,
)

if TYPE_CHECKING:
    from typing import TextIO

    from checker.evidence.figures import ControlFigures, Report, RuleFigures

OSCAL_VERSION = "1.1.3"
NS = "https://betrace.dev/ns/oscal"  # names BeTrace's props; OSCAL requires a URI, never fetched
# Fixed, not derived from NS: documents keep their UUIDs if the props' namespace is ever renamed.
_NAMESPACE = uuid.UUID("514c1e39-d7ba-5bea-bb97-52008cbbc8f5")
_NOT_TOKEN = re.compile(r"[^A-Za-z0-9._-]")
# A control's totals named as the CSV names them, so that they read apart from a rule's own props.
_TOTALS = {"late": "late-violations", "retracted": "retracted-violations", "confirmed": "confirmed-by-final",
           "never_applied": "rules-never-applied"}


def token(text: str) -> str:
    """An OSCAL token for a control or rule id: ``SOC2:CC6.7`` becomes ``SOC2_CC6.7``.

    Tokens allow letters, digits, ``.``, ``-`` and ``_`` and start with a letter or ``_``;
    the id as written stays in the titles and in a ``control`` or ``rule-id`` prop.
    """
    cleaned = _NOT_TOKEN.sub("_", text)
    return cleaned if re.match(r"[A-Za-z_]", cleaned) else "_" + cleaned


class _Ids:
    """Deterministic UUIDs: the same store, period and filters give the same document."""

    def __init__(self, report: Report) -> None:
        f = report.filters
        self.document = self._uuid(_NAMESPACE, report.origin, stamp(f.start), stamp(f.end), f.framework,
                                   f.control, f.rule)

    def of(self, *parts: str) -> str:
        """The UUID of one part of the document."""
        return str(self._uuid(self.document, *parts))

    @staticmethod
    def _uuid(namespace: uuid.UUID, *parts: str | None) -> uuid.UUID:
        return uuid.uuid5(namespace, json.dumps(parts))


def _prop(name: str, value: object, group: str | None = None) -> common.Property:
    text = str(value).lower() if isinstance(value, bool) else str(value)  # JSON's true and false
    return common.Property(name=name, value=text, ns=NS, group=group)


def write_oscal(report: Report, out: TextIO) -> None:
    """Indented OSCAL JSON, validated against the OSCAL models as it is built."""
    out.write(assessment_results(report).oscal_serialize_json(pretty=True))
    out.write("\n")


def assessment_results(report: Report) -> ar.AssessmentResults:
    """The whole document."""
    ids = _Ids(report)
    f = report.filters
    title = f"Compliance evidence: {stamp(f.start)} to {stamp(f.end)}"
    observations = [_observation(control, report, ids) for control in report.controls]
    findings = [_finding(control, ids) for control in report.controls if control.totals["violations"]]
    scope = [_prop(name, value) for name, value in (("framework", f.framework), ("control", f.control),
                                                    ("rule", f.rule)) if value]
    result = ar.Result(
        uuid=ids.of("result"), title=title,
        description=f"Behavioural rules checked over OpenTelemetry traces by BeTrace Checker "
                    f"{report.checker_version}. {ledger_sentence(report)}",
        start=f.start, end=f.end, props=scope or None,
        reviewed_controls=_reviewed(report),
        observations=observations or None, findings=findings or None)
    metadata = common.Metadata(
        title=title, last_modified=report.generated_at, version=report.ledger.head,
        oscal_version=OSCAL_VERSION, props=[_prop("checker-version", report.checker_version)],
        remarks="The document version is the ledger's head hash: the store state it was computed from.")
    return ar.AssessmentResults(
        uuid=str(ids.document), metadata=metadata,
        import_ap=ar.ImportAp(href=f"#{ids.of('plan')}"), results=[result],
        back_matter=common.BackMatter(resources=[_plan(ids), _ledger(report, ids)]))


def _reviewed(report: Report) -> common.ReviewedControls:
    if not report.controls:
        return common.ReviewedControls(control_selections=[common.ControlSelection(
            description="No rule matches these filters: no control was reviewed.")])
    return common.ReviewedControls(control_selections=[common.ControlSelection(
        description="The controls named by the rules evaluated in the period.",
        include_controls=[common.SelectControlById(control_id=token(c.control)) for c in report.controls])])


def _observation(control: ControlFigures, report: Report, ids: _Ids) -> common.Observation:
    """What was checked for a control: the report's coverage line, and each rule's figures."""
    totals = [_prop(_TOTALS.get(key, key.replace("_", "-")), value) for key, value in control.totals.items()]
    props = [_prop("control", control.control), _prop("coverage", control.coverage), *totals]
    evidence: list[common.RelevantEvidence] = []
    for rule in control.rules:
        group = token(rule.rule_id)
        props += [_prop("rule-id", rule.rule_id, group),
                  *(_prop("rule-version", v["version"], group) for v in rule.versions),
                  _prop("coverage", rule.coverage, group),
                  _prop("windows-evaluated", rule.windows_evaluated, group),
                  _prop("gaps", len(rule.gaps), group),
                  _prop("never-applied", rule.never_applied, group)]
        if rule.traces_in_scope is not None:
            props.append(_prop("traces-in-scope", rule.traces_in_scope, group))
        evidence += _evidence(rule)
    return common.Observation(
        uuid=ids.of("observation", control.control), title=control.control,
        description="\n\n".join([totals_sentence(control), *(_rule_text(rule) for rule in control.rules)]),
        props=props, methods=["TEST"], relevant_evidence=evidence or None,
        collected=min(report.filters.end, report.generated_at))


def _rule_text(rule: RuleFigures) -> str:
    versions = ", ".join(f"`{v['version'][:12]}` from {v['source']}" for v in rule.versions) or "none"
    scope = "not measured" if rule.traces_in_scope is None else str(rule.traces_in_scope)
    gaps = "".join(f"\n- {stamp(g.start)} to {stamp(g.end)}: {g.reason}" for g in rule.gaps)
    never = f" {NEVER_APPLIED}" if rule.never_applied else ""
    return (f"Rule {rule.name} ({rule.rule_id}, {rule.severity}), versions {versions}: coverage "
            f"{pct(rule.coverage)}, {rule.windows_evaluated} windows evaluated, {rule.windows_skipped} "
            f"skipped, {rule.failed_attempts} failed attempts, traces in scope {scope}. "
            f"{verdict_sentence(rule)}{never}" + (f"\n\nGaps:\n{gaps}" if gaps else ""))


def _evidence(rule: RuleFigures) -> list[common.RelevantEvidence]:
    """Each violation (retracted ones too, marked so) as a link to its trace."""
    late = {(v["trace_id"], v["evaluation_id"]) for v in rule.late}
    listed: list[dict[str, Any]] = [*rule.violations, *rule.retracted]
    return [common.RelevantEvidence(
        href=v["trace_url"],
        description=f"Trace {v['trace_id']} ({rule.rule_id}): {violation_note(v)}",
        props=[_prop("rule-id", rule.rule_id), _prop("trace-id", v["trace_id"]),
               _prop("status", v["status"]), _prop("found-at", stamp(v["found_at"])),
               *([_prop("late", "true")] if (v["trace_id"], v["evaluation_id"]) in late else [])])
        for v in listed]


def _finding(control: ControlFigures, ids: _Ids) -> common.Finding:
    return common.Finding(
        uuid=ids.of("finding", control.control),
        title=f"{control.control}: {control.totals['violations']} violations",
        description=totals_sentence(control),
        target=common.FindingTarget(
            type=common.FindingTargetTypeValidValues.objective_id, target_id=token(control.control),
            title=control.control,
            status=common.ObjectiveStatus(state=common.ObjectiveStatusStateValidValues.not_satisfied)),
        related_observations=[common.RelatedObservation(observation_uuid=ids.of("observation",
                                                                                  control.control))])


def _plan(ids: _Ids) -> common.Resource:
    """What ``import-ap`` points at: there is no OSCAL assessment plan, the rules are the plan."""
    return common.Resource(
        uuid=ids.of("plan"), title="Assessment plan: the rules in force",
        description="No OSCAL assessment plan exists: the rules each observation lists, with their "
                    "versions (hashes of the rule as evaluated), are what was assessed.")


def _ledger(report: Report, ids: _Ids) -> common.Resource:
    """The ledger head: archive it with the report; a later verify must still reach it."""
    verdict = report.ledger
    props = [_prop("ledger-head", verdict.head), _prop("ledger-records", verdict.records),
             _prop("ledger-intact", verdict.ok), _prop("verify-command", report.verify_command),
             _prop("signed-checkpoints", len(report.checkpoints))]
    if verdict.broken_at is not None:
        props.append(_prop("ledger-broken-at", verdict.broken_at))
    return common.Resource(uuid=ids.of("ledger"), title="Ledger head", description=ledger_sentence(report),
                           props=props)
