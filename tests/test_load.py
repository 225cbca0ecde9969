"""Loading rule files: every error collected, each at its file line and column."""

from __future__ import annotations

from pathlib import Path

import pytest

from checker.errors import RuleSemanticError, RuleSyntaxError
from checker.notify.policy import rule_info
from checker.rules.load import load_paths, load_text


def one_error(text: str) -> str:
    ruleset = load_text(text, "r.yaml")
    assert len(ruleset.errors) == 1, [str(e) for e in ruleset.errors]
    return str(ruleset.errors[0])


class TestPositionsInFile:
    """Condition errors point at the file position, whatever the YAML scalar style."""

    def test_literal_block(self) -> None:
        text = "rules:\n  - id: r\n    condition: |\n      when { a }\n      always { b == }\n"
        message = one_error(text)
        assert message.startswith("r.yaml:5:21: rule r: unexpected '}'")
        assert "    5 |       always { b == }\n      |                     ^" in message

    def test_plain_scalar(self) -> None:
        message = one_error("rules:\n  - id: r\n    condition: when { a } always { b = 1 }\n")
        assert message.startswith("r.yaml:3:38: rule r: unexpected character '='")
        assert message.splitlines()[2].index("^") == message.splitlines()[1].index("= 1")

    def test_double_quoted_scalar(self) -> None:
        text = 'rules:\n  - id: r\n    condition: "when { a.where(x == \\"q\\" and y = 1) } always { b }"\n'
        assert one_error(text).startswith("r.yaml:3:49: rule r: unexpected character '='")

    def test_folded_block(self) -> None:
        text = ("rules:\n  - id: r\n    condition: >\n      when { a }\n"
                '      always { b.where(x matches "(") }\n')
        message = one_error(text)
        assert message.startswith("r.yaml:5:24: rule r: invalid regular expression '('")

    def test_yaml_syntax_error(self) -> None:
        message = one_error("rules:\n  - id: r\n    condition: [unclosed\n")
        assert message.startswith("r.yaml:4:1: invalid YAML")


class TestSemanticErrors:
    """Lint errors name what is wrong and where; one rule's errors never hide another's."""

    @pytest.mark.parametrize(("condition", "message"), [
        ('when { a.where(x matches "(?=y)") } always { b }', "invalid regular expression"),
        ("when { a.where(x in []) } always { b }", "'in []' with an empty list"),
        ("when { a.where(x not in []) } always { b }", "'not in []' with an empty list"),
        ('never { count(a) > "three" }', "count(a) compared with 'three'"),
        ("never { count(a) == true }", "count(a) compared with True"),
        ("when { a.where(flag > true) } always { b }", "'>' on a boolean"),
        ("when { a.where(x > 5ms) } always { b }", "duration 5ms compared with x"),
        ("when { a.where(span:duration > 5) } always { b }", "span:duration compared with 5"),
        ("when { a.where(span:status == broken) } always { b }", "span:status compared with 'broken'"),
        ("when { a.where(span:kind > server) } always { b }", "'>' on span:kind"),
        ("when { a.where(span:colour == red) } always { b }", "unknown intrinsic span:colour"),
        ("when { a }", "'when' needs an 'always' or a 'never' block"),
        ("A or B", "a condition without when must be one check"),
    ])
    def test_error(self, condition: str, message: str) -> None:
        text = f"rules:\n  - id: r\n    condition: '{condition}'\n"
        error = load_text(text, "r.yaml").errors[0]
        assert isinstance(error, RuleSemanticError)
        assert message in str(error)
        assert str(error).startswith("r.yaml:3:")

    def test_all_errors_collected(self) -> None:
        text = (
            "rules:\n"
            "  - id: one\n    condition: 'when { a } always { '\n"
            "  - id: two\n    condition: 'when { a.where(x in []) } always { b.where(y matches \"[\") }'\n"
            "  - id: three\n    condition: when { a } always { b }\n"
        )
        ruleset = load_text(text, "r.yaml")
        assert ["three"] == [r.id for r in ruleset.rules]
        assert 3 == len(ruleset.errors)
        assert isinstance(ruleset.errors[0], RuleSyntaxError)
        assert ["one", "two", "two"] == [e.rule_id for e in ruleset.errors]

    def test_duplicate_ids_name_both_places(self, tmp_path: Path) -> None:
        rule = "rules:\n  - id: same\n    condition: never { x }\n"
        (tmp_path / "a.yaml").write_text(rule)
        (tmp_path / "sub").mkdir()
        (tmp_path / "sub" / "b.yml").write_text(rule)
        ruleset = load_paths([tmp_path])
        assert 1 == len(ruleset.rules)
        message = str(ruleset.errors[0])
        assert f"{tmp_path / 'sub' / 'b.yml'}:2:5: rule same: duplicate rule id" in message
        assert f"first defined at {tmp_path / 'a.yaml'}:2:5" in message

    @pytest.mark.parametrize(("field", "message"), [
        ("severity: urgent", "unknown severity 'urgent'"),
        ("every: soon", "'every' is not a duration"),
        ('cron: "* *"', "needs 5 fields, got 2"),
        ('cron: "61 * * * *"', "higher than the maximum value (59)"),
        ("enabled: maybe", "'enabled' must be a bool"),
        ("controls: {a: b}", "'controls' must be a list of strings"),
        ("examples: [{expect: maybe, trace: []}]", "'expect' must be violation or pass"),
        ("examples: [{expect: pass, trace: [{attributes: {}}]}]", "needs 'span: <name>'"),
        ("examples: [{expect: pass, trace: [{span: a, status: broken}]}]", "unknown status 'broken'"),
        ("id: 'bad id!'", "invalid rule id 'bad id!'"),
        ("runbook_url: wiki/pii", "'runbook_url' must be an http:// or https:// URL, not 'wiki/pii'"),
        ("runbook_url: [a]", "'runbook_url' must be a str"),
    ])
    def test_field_errors(self, field: str, message: str) -> None:
        rule_id = "" if field.startswith("id:") else "id: r\n    "
        text = f"rules:\n  - {rule_id}condition: never {{ x }}\n    {field}\n"
        errors = [str(e) for e in load_text(text, "r.yaml").errors]
        assert any(message in e and e.startswith("r.yaml:") for e in errors), errors

    def test_runbook_url_reaches_the_rule_and_its_messages(self) -> None:
        text = "rules:\n  - id: r\n    runbook_url: https://wiki.example.com/pii\n    condition: never { x }"
        [rule] = load_text(text, "r.yaml").rules
        assert "https://wiki.example.com/pii" == rule_info(rule)["runbook_url"]
        assert "runbook_url" not in rule_info(load_text(text.replace("runbook", "x"), "r.yaml").rules[0])

    def test_missing_condition(self) -> None:
        assert one_error("rules:\n  - id: r\n").startswith(
            "r.yaml:2:5: rule r: missing required key 'condition'")


class TestBeTraceFormat:
    """Files written for BeTrace load unchanged; unknown keys only warn."""

    BETRACE = """\
rules:
- id: soc2-cc7-2-pii-access-audit-log
  name: 'SOC2 CC7.2: PII Access Must Be Audited'
  description: 'Ensures all PII access generates audit log.

    SOC2 CC7.2: System Monitoring

    '
  severity: high
  compliance_frameworks:
  - SOC2
  - HIPAA
  condition: trace.has(pii.access) and trace.has(audit.log)
  tags: [privacy]
  example_violation:
    description: PII accessed without generating audit log
    trace:
    - span: pii.access
      attributes:
        resource: patient_records
        user_id: user123
"""

    def test_loads_with_warning(self) -> None:
        ruleset = load_text(self.BETRACE, "betrace.yaml")
        assert [] == ruleset.errors
        assert ["betrace.yaml:14:9: rule soc2-cc7-2-pii-access-audit-log: unknown key 'tags' ignored"] == [
            str(w).splitlines()[0] for w in ruleset.warnings]
        rule = ruleset.rules[0]
        assert rule.legacy
        assert ("SOC2", "HIPAA") == rule.frameworks
        assert "high" == rule.severity
        assert 1 == len(rule.examples)
        assert "violation" == rule.examples[0].expect
        assert rule.description.startswith("Ensures all PII access")

    def test_unknown_example_keys_warn(self) -> None:
        """``expect`` is read in ``examples`` only: example_violation is a violation whatever it says."""
        text = self.BETRACE.replace("  example_violation:\n", "  example_violation:\n    expect: pass\n") + (
            "  examples:\n  - {name: a, expect: pass, trace: [], exepct: violation}\n")
        ruleset = load_text(text, "betrace.yaml")
        assert [] == ruleset.errors
        assert ["unknown key 'tags' ignored", "unknown example key 'exepct' ignored",
                "unknown example key 'expect' ignored"] == [
            str(w).splitlines()[0].partition(": rule soc2-cc7-2-pii-access-audit-log: ")[2]
            for w in ruleset.warnings]

    def test_version_changes_with_content(self) -> None:
        first = load_text(self.BETRACE, "a.yaml").rules[0].version
        again = load_text(self.BETRACE, "b.yaml").rules[0].version
        changed = load_text(self.BETRACE.replace("severity: high", "severity: low"), "a.yaml")
        assert first == again
        assert first != changed.rules[0].version


def test_a_kubernetes_configmap_volume_loads_each_rule_once(tmp_path) -> None:
    """Kubernetes mounts a ConfigMap as symlinks into a hidden ``..<timestamp>`` copy."""
    rules_d = Path(__file__).resolve().parents[1] / "rules.d"
    data = tmp_path / "..2026_11_27_06_00_00.123456789"
    data.mkdir()
    for source in rules_d.glob("*.yaml"):
        (data / source.name).write_text(source.read_text())
    (tmp_path / "..data").symlink_to(data.name)
    for source in rules_d.glob("*.yaml"):
        (tmp_path / source.name).symlink_to(f"..data/{source.name}")
    ruleset = load_paths([tmp_path])
    assert [] == ruleset.errors
    assert len(load_paths([rules_d]).rules) == len(ruleset.rules)
