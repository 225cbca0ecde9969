"""The starter library in rules.d/ is valid, covers the promised controls, and its examples pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from checker.cli import demo_traces, main
from checker.engine import Scanner, run_examples
from checker.engine.examples import example_trace
from checker.rules.load import load_paths, load_text
from checker.traces.otlp import read_traces

RULES_D = Path(__file__).parent.parent / "rules.d"
RULESET = load_paths([RULES_D])

# What the bundled demo traces are built to break: trace id → rule ids.
DEMO_VIOLATIONS = {
    "16c7a92a3d54c209298011c22b49e984": {"gdpr-art-32-personal-data-access-audited",
                                         "hipaa-164-312-b-phi-audit", "soc2-cc6-7-pii-access-audited",
                                         "hipaa-164-312-b-audit-in-same-request"},
    "2652c2fe35cf6ef75fa563a8f485e7a2": {"gdpr-art-32-personal-data-access-audited",
                                         "hipaa-164-312-b-phi-audit", "soc2-cc6-7-pii-access-audited",
                                         "hipaa-164-312-b-audit-in-same-request"},
    "80a589352f557842fa1edabc57b85186": {"hipaa-164-312-b-audit-in-same-request"},  # audited elsewhere
    "a9669aea996f0e8f8f2ca4edaf438659": {"sre-server-errors-marked"},  # a 502 left unset
    "2014a167600ede8134fc59c5841fadff": {"soc2-cc8-1-approved-before-rollout"},  # approved too late
    "2331ff95957b1c1756179dbcb6233b1a": {"gdpr-art-32-personal-data-encrypted"},
    "3ec8012346a092ea77faa56eca7ac70d": {"hipaa-164-312-a-phi-access-attributed"},
    "4a20ab30c52e403017a255732c4a42c4": {"soc2-cc7-2-server-errors-logged", "sre-slow-database-query"},
    "54980bbb4cef888471de0a68be20f99a": {"pci-dss-high-value-fraud-check"},
    "81ee9dbef63ae925b9dfba88a3f58d95": {"sre-request-response-balance"},
    "bc2cafb8ffbb28ff466c464171fa0ee9": {"soc2-cc6-1-admin-endpoint-authz"},
    "bcffeb9a990b4257218fc9dbeba51d01": {"pci-dss-high-value-fraud-check"},
    "c814be407b705d380d487aa9f00d5afb": {"sre-retries-bounded"},
    "d7afaaea6b9e5ad74437f04491d487ca": {"pci-dss-10-2-payment-audit-trail"},
    "e384ed0bf4f3b752b7baf0b2b3b2e3a9": {"soc2-cc8-1-prod-deploy-approved",
                                         "soc2-cc8-1-approved-before-rollout"},
}


class TestStarterLibrary:
    """rules.d/ loads cleanly and documents the controls it evidences."""

    def test_no_errors_or_warnings(self) -> None:
        assert [] == [str(e) for e in RULESET.errors + RULESET.warnings]
        assert len(RULESET.rules) >= 12

    @pytest.mark.parametrize("control", [
        "SOC2:CC6.1", "SOC2:CC6.7", "SOC2:CC7.2", "SOC2:CC8.1", "HIPAA:164.312(b)",
        "PCI-DSS:10.2", "GDPR:Art.32", "SRE:retries", "SRE:request-response-balance", "SRE:error-status",
    ])
    def test_control_covered(self, control: str) -> None:
        assert any(control in r.controls for r in RULESET.rules)

    def test_every_rule_has_controls_and_both_kinds_of_example(self) -> None:
        for rule in RULESET.rules:
            assert rule.controls, rule.id
            assert {"pass", "violation"} == {e.expect for e in rule.examples}, rule.id

    def test_examples_pass(self) -> None:
        failures = [f"{r.rule.id}: {r.example.name}" for r in run_examples(RULESET.rules)
                    if not r.passed]
        assert [] == failures


class TestDemoTraces:
    """The bundled demo traces break exactly the rules they were built to break."""

    def test_violations(self) -> None:
        found: dict[str, set[str]] = {}
        for violation in Scanner(RULESET.rules).scan(read_traces([demo_traces()])):
            found.setdefault(violation.trace_id, set()).add(violation.rule_id)
        assert DEMO_VIOLATIONS == found


class TestExampleEvents:
    """An example span may carry ``events``, which reach the example trace."""

    RULE = """rules:
  - id: r
    condition: when { a } always { b }
    examples:
      - name: failing with an exception event
        expect: violation
        trace:
          - span: a
            events:
              - name: exception
                attributes: { exception.type: ValueError }
"""

    EVENT_RULE = """rules:
  - id: no-value-errors
    condition: |
      when  { span.where(span:kind == server) }
      never { span.where(event:name == exception and event.exception.type == ValueError) }
    examples:
      - name: a ValueError exception
        expect: violation
        trace:
          - span: GET /x
            kind: server
            events:
              - name: exception
                attributes: { exception.type: ValueError }
      - name: the type on another event than the exception
        expect: pass
        trace:
          - span: GET /x
            kind: server
            events:
              - name: exception
                attributes: { exception.type: KeyError }
              - name: log
                attributes: { exception.type: ValueError }
      - name: no events
        expect: pass
        trace:
          - span: GET /x
            kind: server
"""

    def test_event_rules_pass_their_examples(self, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
        loaded = load_text(self.EVENT_RULE, "r.yaml")
        assert ([], []) == (loaded.errors, loaded.warnings)
        assert [True, True, True] == [r.passed for r in run_examples(loaded.rules)]
        path = tmp_path / "r.yaml"
        path.write_text(self.EVENT_RULE)
        assert 0 == main(["test", str(path)])
        assert "3 passed" in capsys.readouterr().out

    def test_events_reach_the_trace(self) -> None:
        (rule,) = load_text(self.RULE, "r.yaml").rules
        (span,) = example_trace(rule.id, rule.examples[0]).spans
        assert [("exception", {"exception.type": "ValueError"})] == [
            (e.name, e.attributes) for e in span.events]

    def test_malformed_events_are_errors_at_their_line(self) -> None:
        text = self.RULE.replace("            events:\n              - name: exception\n"
                                 "                attributes: { exception.type: ValueError }\n",
                                 "            events: 3\n")
        (error,) = load_text(text, "r.yaml").errors
        assert "'events' must be a list" in str(error)
        assert (9, 21) == (error.location.line, error.location.column)
