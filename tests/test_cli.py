"""The ``betrace`` command line: validate, explain, test and scan, their output and exit codes."""

# The suite writes `assert expected == actual`, which ruff's SIM300 calls a Yoda condition.

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from checker.cli import demo_traces, main
from checker.traces.otlp import read_traces

if TYPE_CHECKING:
    from collections.abc import Sequence

PROJECT = Path(__file__).resolve().parents[1]
STARTER_RULES = PROJECT / "rules.d"

VIOLATING = "abcdef0123456789abcdef0123456789"  # written upper case in the trace file
COMPLIANT = "0123456789abcdef0123456789abcdef"
OUT_OF_SCOPE = "fedcba9876543210fedcba9876543210"

AUDIT_RULE = """\
rules:
  - id: pii-audited
    name: "PII access is audited"
    severity: high
    compliance_frameworks: [SOC2, HIPAA]
    controls: ["SOC2:CC6.7", "HIPAA:164.312(b)"]
    condition: |
      when { pii.access } always { audit.log } never { debug.dump }
"""

LEGACY_RULES = """\
rules:
  - id: modern
    name: "Modern rule"
    condition: when { pii.access } always { audit.log }
  - id: legacy-pair
    name: "Legacy pair"
    condition: trace.has(pii.access) and trace.has(audit.log)
  - id: legacy-single
    name: "Legacy single check"
    condition: oversight.evasion_attempt
"""

BROKEN_RULES = """\
rules:
  - id: r1
    name: one
    condition: |
      when { a.where(x == ) } always { b }
  - id: r2
    name: two
    condition: "A or B"
  - id: r3
    name: three
    condition: when { a }
"""

EXAMPLE_RULES = """\
rules:
  - id: audited
    name: "Audited"
    condition: when { pii.access } always { audit.log }
    examples:
      - name: audited access
        expect: pass
        trace:
          - span: pii.access
          - span: audit.log
      - name: unaudited access
        expect: violation
        trace:
          - span: pii.access
    example_violation:
      description: a bare access
      trace:
        - span: pii.access
"""

WRONG_EXAMPLE_RULES = """\
rules:
  - id: audited
    name: "Audited"
    condition: when { pii.access } always { audit.log }
    examples:
      - name: audited access
        expect: pass
        trace:
          - span: pii.access
          - span: audit.log
      - name: wrongly expected to pass
        expect: pass
        trace:
          - span: pii.access
"""


# ------------------------------------------------------------------ helpers


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def otlp_line(trace_id: str, *spans: tuple[str, str]) -> str:
    """One JSON Lines record: a request holding (span_id, name) spans of one trace."""
    doc = {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "api"}}]},
        "scopeSpans": [{"spans": [
            {"traceId": trace_id, "spanId": span_id, "name": name} for span_id, name in spans
        ]}],
    }]}
    return json.dumps(doc) + "\n"


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    """``main`` in-process: exit code, stdout, stderr."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:  # argparse usage errors
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def subprocess_run(argv: Sequence[str | Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    return subprocess.run([sys.executable, "-m", "checker", *map(str, argv)], cwd=cwd, env=env,  # noqa: S603
                          capture_output=True, text=True, timeout=60, check=False)


def json_lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]


@pytest.fixture
def audit_rules(tmp_path: Path) -> Path:
    """A rules directory holding only the pii-audited rule."""
    write(tmp_path / "rules" / "audit.yaml", AUDIT_RULE)
    return tmp_path / "rules"


@pytest.fixture
def traces(tmp_path: Path) -> Path:
    """Three traces: one violating pii-audited, one compliant, one out of its scope."""
    return write(tmp_path / "traces.jsonl", "".join([
        otlp_line(VIOLATING.upper(), ("A000000000000001", "GET /patients"),
                  ("A000000000000002", "pii.access"), ("A000000000000003", "debug.dump")),
        otlp_line(COMPLIANT, ("b000000000000001", "pii.access"), ("b000000000000002", "audit.log")),
        otlp_line(OUT_OF_SCOPE, ("c000000000000001", "GET /health")),
    ]))


@pytest.fixture
def clean_traces(tmp_path: Path) -> Path:
    """Traces on which pii-audited finds nothing."""
    return write(tmp_path / "clean.jsonl", "".join([
        otlp_line(COMPLIANT, ("b000000000000001", "pii.access"), ("b000000000000002", "audit.log")),
        otlp_line(OUT_OF_SCOPE, ("c000000000000001", "GET /health")),
    ]))


# ------------------------------------------------------------------ tests


class TestValidate:
    """``validate`` exits 0 on valid rules and 1 otherwise, printing every error with file:line:col."""

    def test_starter_library_is_valid(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, _ = run(capsys, "validate", STARTER_RULES)

        assert 0 == code
        assert re.search(r"^\d+ valid rules, 0 errors", out, re.MULTILINE), out

    def test_every_error_is_printed_with_its_position(self, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
        bad = write(tmp_path / "bad.yaml", BROKEN_RULES)

        code, out, _ = run(capsys, "validate", bad)

        assert 1 == code
        located = re.findall(r"^error: (\S+?:\d+:\d+): rule (\S+):", out, re.MULTILINE)
        assert [(f"{bad}:5:27", "r1"), (f"{bad}:8:17", "r2"), (f"{bad}:11:16", "r3")] == located
        assert "0 valid rules, 3 errors" in out

    def test_a_broken_file_does_not_hide_a_good_one(self, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
        write(tmp_path / "a-good.yaml", AUDIT_RULE)
        write(tmp_path / "b-bad.yaml", BROKEN_RULES)

        code, out, _ = run(capsys, "validate", tmp_path)

        assert 1 == code
        assert "1 valid rules, 3 errors" in out


class TestExplain:
    """``explain`` prints each rule's when/always/never reading, noting legacy bare conditions."""

    @staticmethod
    def _blocks(out: str) -> dict[str, str]:
        """Rule ID → its paragraph of output."""
        return {block.split()[0]: block for block in out.strip().split("\n\n")}

    def test_readings_and_legacy_note(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        path = write(tmp_path / "rules.yaml", LEGACY_RULES)

        code, out, _ = run(capsys, "explain", path)

        assert 0 == code
        blocks = self._blocks(out)
        assert ["modern", "legacy-pair", "legacy-single"] == list(blocks)
        assert "when { pii.access } always { audit.log }" in blocks["modern"]
        assert "legacy condition" not in blocks["modern"]
        assert "when { pii.access } always { audit.log }" in blocks["legacy-pair"]
        assert "(legacy condition without when: trace.has(pii.access) and trace.has(audit.log))" in (
            blocks["legacy-pair"])
        assert "never { oversight.evasion_attempt }" in blocks["legacy-single"]
        assert "legacy condition without when: oversight.evasion_attempt" in blocks["legacy-single"]

    def test_rule_option_filters(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        path = write(tmp_path / "rules.yaml", LEGACY_RULES)

        code, out, _ = run(capsys, "explain", path, "--rule", "legacy-pair")

        assert 0 == code
        assert ["legacy-pair"] == list(self._blocks(out))

    def test_unknown_rule_is_exit_2(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        path = write(tmp_path / "rules.yaml", LEGACY_RULES)

        code, out, err = run(capsys, "explain", path, "--rule", "no-such-rule")

        assert (2, "") == (code, out)
        assert "no-such-rule" in err

    def test_invalid_rules_are_exit_2(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        path = write(tmp_path / "bad.yaml", BROKEN_RULES)

        code, _, err = run(capsys, "explain", path)

        assert 2 == code
        assert f"{path}:5:27" in err


class TestTestCommand:
    """``test`` runs every example, one PASS/FAIL line each and a summary, exit 1 on a failure."""

    @staticmethod
    def _verdicts(out: str) -> list[str]:
        return [line for line in out.splitlines() if line.startswith(("PASS ", "FAIL "))]

    def test_all_examples_pass(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        path = write(tmp_path / "rules.yaml", EXAMPLE_RULES)

        code, out, _ = run(capsys, "test", path)

        assert 0 == code
        assert ["PASS audited: audited access", "PASS audited: unaudited access",
                "PASS audited: a bare access"] == self._verdicts(out)
        assert "3 passed, 0 failed" == out.splitlines()[-1]

    def test_a_wrong_expectation_fails(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        path = write(tmp_path / "rules.yaml", WRONG_EXAMPLE_RULES)

        code, out, _ = run(capsys, "test", path)

        assert 1 == code
        verdicts = self._verdicts(out)
        assert 2 == len(verdicts)
        assert "PASS audited: audited access" == verdicts[0]
        assert verdicts[1].startswith(
            "FAIL audited: wrongly expected to pass: expected pass, got a violation")
        assert "lacks audit.log" in verdicts[1]
        assert f"{path}:11:" in verdicts[1]
        assert "1 passed, 1 failed" == out.splitlines()[-1]

    def test_invalid_rule_file_is_exit_2(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        write(tmp_path / "a.yaml", EXAMPLE_RULES)
        bad = write(tmp_path / "b.yaml", BROKEN_RULES)

        code, out, err = run(capsys, "test", tmp_path)

        assert 2 == code
        assert f"{bad}:8:17" in err
        assert "3 passed, 0 failed" == out.splitlines()[-1]

    def test_starter_library_examples_pass(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, _ = run(capsys, "test", STARTER_RULES)

        assert [] == [line for line in self._verdicts(out) if line.startswith("FAIL")]
        assert 0 == code


class TestScanJson:
    """``scan --format json`` writes one JSON object per violation on stdout and the summary on stderr."""

    def test_one_precise_violation(self, audit_rules: Path, traces: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
        code, out, err = run(capsys, "scan", "--rules", audit_rules, "--traces", traces, "--format", "json")

        assert 1 == code
        (violation,) = json_lines(out)
        assert {
            "rule_id": "pii-audited",
            "rule_name": "PII access is audited",
            "severity": "high",
            "trace_id": VIOLATING,
            "frameworks": ["SOC2", "HIPAA"],
            "controls": ["SOC2:CC6.7", "HIPAA:164.312(b)"],
            "trigger_spans": [{"name": "pii.access", "span_id": "a000000000000002"}],
            "missing": ["audit.log"],
            "forbidden": [{"check": "debug.dump",
                           "spans": [{"name": "debug.dump", "span_id": "a000000000000003"}]}],
        } == {k: violation[k] for k in ("rule_id", "rule_name", "severity", "trace_id", "frameworks",
                                        "controls", "trigger_spans", "missing", "forbidden")}
        assert re.fullmatch(r"[A-Z].*\.", violation["reason"]), violation["reason"]
        assert "a000000000000002" in violation["reason"]
        assert "scanned 3 traces with 1 rules: 2 in scope, 1 violations" in err
        assert "scanned" not in out

    def test_every_line_follows_the_contract(self, tmp_path: Path, traces: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
        write(tmp_path / "rules" / "audit.yaml", AUDIT_RULE)
        write(tmp_path / "rules" / "never.yaml", textwrap.dedent("""\
            rules:
              - id: no-debug-dumps
                name: "No debug dumps"
                condition: never { debug.dump }
              - id: no-health-checks
                name: "No health checks"
                severity: low
                condition: never { "GET /health" }
            """))

        code, out, _ = run(capsys, "scan", "--rules", tmp_path / "rules", "--traces", traces,
                           "--format", "json")

        assert 1 == code
        found = json_lines(out)
        assert {("pii-audited", VIOLATING), ("no-debug-dumps", VIOLATING),
                ("no-health-checks", OUT_OF_SCOPE)} == {(v["rule_id"], v["trace_id"]) for v in found}
        assert len(out.splitlines()) == len(found)
        for v in found:
            assert re.fullmatch(r"[0-9a-f]{32}", v["trace_id"])
            assert isinstance(v["reason"], str)
            assert re.fullmatch(r"[A-Z].*\.", v["reason"]), v["reason"]
            assert all(isinstance(v[k], list) for k in ("frameworks", "controls", "trigger_spans",
                                                        "missing", "forbidden"))
            assert all({"name", "span_id"} == set(s) for s in v["trigger_spans"])
            assert {"rule_name", "severity"} <= set(v)
        health = next(v for v in found if v["rule_id"] == "no-health-checks")
        assert ("low", [], []) == (health["severity"], health["trigger_spans"], health["missing"])
        assert [{"check": '"GET /health"', "spans": [{"name": "GET /health", "span_id": "c000000000000001"}]},
                ] == health["forbidden"]

    def test_exit_zero_keeps_the_output(self, audit_rules: Path, traces: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
        code, out, _ = run(capsys, "scan", "--rules", audit_rules, "--traces", traces, "--format", "json",
                           "--exit-zero")

        assert 0 == code
        assert [VIOLATING] == [v["trace_id"] for v in json_lines(out)]

    def test_nothing_found_is_exit_0(self, audit_rules: Path, clean_traces: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
        code, out, err = run(capsys, "scan", "--rules", audit_rules, "--traces", clean_traces,
                             "--format", "json")

        assert (0, "") == (code, out)
        assert "scanned 2 traces with 1 rules: 1 in scope, 0 violations" in err

    def test_traces_from_a_directory_and_a_file(self, tmp_path: Path, audit_rules: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
        # The violating trace's spans are split across two files: only together do they violate.
        write(tmp_path / "dir" / "part1.jsonl", otlp_line(VIOLATING, ("a000000000000002", "pii.access")))
        part2 = write(tmp_path / "part2.jsonl", otlp_line(VIOLATING, ("a000000000000003", "debug.dump")))

        code, out, _ = run(capsys, "scan", "--rules", audit_rules, "--traces", tmp_path / "dir", part2,
                           "--format", "json")

        assert 1 == code
        (violation,) = json_lines(out)
        assert (["audit.log"], "debug.dump") == (violation["missing"], violation["forbidden"][0]["check"])


class TestScanExitCodes:
    """``scan`` exits 2 on invalid rules or usage and 3 when the trace source cannot be read."""

    def test_invalid_rules(self, tmp_path: Path, traces: Path, capsys: pytest.CaptureFixture[str]) -> None:
        bad = write(tmp_path / "rules" / "bad.yaml", BROKEN_RULES)

        code, out, err = run(capsys, "scan", "--rules", tmp_path / "rules", "--traces", traces,
                             "--format", "json")

        assert (2, "") == (code, out)
        assert f"{bad}:5:27" in err

    def test_missing_rules_path(self, tmp_path: Path, traces: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
        missing = tmp_path / "no-rules-here"

        code, out, err = run(capsys, "scan", "--rules", missing, "--traces", traces, "--format", "json")

        assert (2, "") == (code, out)
        assert str(missing) in err

    def test_malformed_trace_file(self, tmp_path: Path, audit_rules: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
        path = write(tmp_path / "bad.jsonl", otlp_line(COMPLIANT, ("b000000000000001", "a")) + "{oops\n")

        code, out, err = run(capsys, "scan", "--rules", audit_rules, "--traces", path, "--format", "json")

        assert (3, "") == (code, out)
        assert f"{path}:2: invalid JSON" in err

    def test_bad_trace_id(self, tmp_path: Path, audit_rules: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
        path = write(tmp_path / "bad.jsonl", otlp_line("not-a-trace-id", ("b000000000000001", "a")))

        code, out, err = run(capsys, "scan", "--rules", audit_rules, "--traces", path)

        assert (3, "") == (code, out)
        assert f"{path}:1: " in err

    def test_missing_path(self, tmp_path: Path, audit_rules: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
        missing = tmp_path / "no-such-traces"

        code, out, err = run(capsys, "scan", "--rules", audit_rules, "--traces", missing)

        assert (3, "") == (code, out)
        assert str(missing) in err

    @pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                        reason="root reads files whatever their permissions")
    def test_unreadable_file(self, tmp_path: Path, audit_rules: Path, traces: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
        traces.chmod(0)
        try:
            code, out, err = run(capsys, "scan", "--rules", audit_rules, "--traces", traces)
        finally:
            traces.chmod(0o644)

        assert (3, "") == (code, out)
        assert str(traces) in err

    def test_non_utf8_trace_file(self, tmp_path: Path, audit_rules: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
        path = tmp_path / "latin1.jsonl"
        path.write_bytes(b'{"resourceSpans": [], "x": "caf\xe9"}\n')

        code, out, err = run(capsys, "scan", "--rules", audit_rules, "--traces", path)

        assert (3, "") == (code, out)
        assert str(path) in err

    def test_usage_error(self, audit_rules: Path, traces: Path, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, err = run(capsys, "scan", "--rules", audit_rules, "--traces", traces, "--format", "xml")

        assert (2, "") == (code, out)
        assert "--format" in err


class TestScanText:
    """The text format is a table headed SEVERITY, RULE, TRACE, REASON, one row per violation."""

    def test_table(self, audit_rules: Path, traces: Path, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, err = run(capsys, "scan", "--rules", audit_rules, "--traces", traces)

        assert 1 == code
        header, *rows = out.splitlines()
        assert ["SEVERITY", "RULE", "TRACE", "REASON"] == header.split()
        assert 1 == sum(1 for row in rows if VIOLATING in row)
        assert re.match(rf"high\s+pii-audited\s+{VIOLATING}\s+Triggered by", rows[0]), rows[0]
        assert COMPLIANT not in out
        assert "scanned 3 traces" in err

    def test_most_severe_first(self, tmp_path: Path, traces: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
        write(tmp_path / "rules" / "a.yaml", textwrap.dedent("""\
            rules:
              - id: a-low
                name: low
                severity: low
                condition: never { debug.dump }
              - id: b-critical
                name: critical
                severity: critical
                condition: never { debug.dump }
            """))

        code, out, _ = run(capsys, "scan", "--rules", tmp_path / "rules", "--traces", traces)

        assert 1 == code
        rows = [line.split()[:2] for line in out.splitlines()[1:] if line.split()[0] in {"low", "critical"}]
        assert [["critical", "b-critical"], ["low", "a-low"]] == rows


class TestScanDemo:
    """Without ``--traces``, scan reads the bundled demo traces and says so on stderr."""

    def test_bundled_demo_traces(self, capsys: pytest.CaptureFixture[str]) -> None:
        demo = demo_traces()
        demo_ids = {t.trace_id for t in read_traces([demo])}

        code, out, err = run(capsys, "scan", "--rules", STARTER_RULES, "--format", "json")

        assert str(demo) in err
        assert "bundled demo traces" in err
        assert f"scanned {len(demo_ids)} traces" in err
        assert 1 == code
        found = json_lines(out)
        assert found
        assert {v["trace_id"] for v in found} <= demo_ids


class TestSubprocess:
    """``python -m checker`` behaves the same as a real process: streams separated, exit codes kept."""

    def test_scan_json(self, tmp_path: Path, audit_rules: Path, traces: Path) -> None:
        result = subprocess_run(["scan", "--rules", audit_rules, "--traces", traces, "--format", "json"],
                                cwd=tmp_path)

        assert 1 == result.returncode, result.stderr
        assert [("pii-audited", VIOLATING)] == [(v["rule_id"], v["trace_id"])
                                                 for v in json_lines(result.stdout)]
        assert "scanned 3 traces with 1 rules" in result.stderr

    def test_quick_start_scan_in_the_project(self) -> None:
        result = subprocess_run(["scan"], cwd=PROJECT)

        assert 1 == result.returncode, result.stderr
        assert "bundled demo traces" in result.stderr
        assert result.stdout.splitlines()[0].split() == ["SEVERITY", "RULE", "TRACE", "REASON"]

    def test_validate_broken_file(self, tmp_path: Path) -> None:
        bad = write(tmp_path / "bad.yaml", BROKEN_RULES)

        result = subprocess_run(["validate", bad], cwd=tmp_path)

        assert 1 == result.returncode
        assert 3 == len(re.findall(rf"^error: {re.escape(str(bad))}:\d+:\d+: ", result.stdout, re.MULTILINE))
