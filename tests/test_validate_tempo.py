"""``betrace validate --tempo``: what rules use and Tempo never saw, as warnings with suggestions.

Against the Tempo double over real HTTP on loopback; a Tempo that is down or refuses the tag
API gives one warning, and the exit code stays what the rule files make it.
"""

from __future__ import annotations

import re
import socket
import time
from typing import TYPE_CHECKING, Any

import pytest
from tempo_double import Fault, TempoDouble

from checker.cli import main
from checker.rules import load_text
from checker.rules.usage import usage
from checker.traceql.syntax import tag_identifier

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

RULE = """\
rules:
  - id: {rule_id}
    name: "{rule_id}"
    condition: |
      when   {{ {when} }}
      always {{ audit.log }}
"""
CORRECT = "pii.access.where(order.total >= 500 and currency in [EUR, USD] and service.name == checkout)"


def _attr(key: str, value: Any) -> dict[str, Any]:
    kind = "intValue" if isinstance(value, int) else "stringValue"
    return {"key": key, "value": {kind: str(value) if kind == "intValue" else value}}


def _push(double: TempoDouble) -> None:
    """One trace a minute old: pii.access and audit.log, with attributes, in service checkout."""
    start = (int(time.time()) - 60) * 1_000_000_000
    spans = [{"traceId": "ab" * 16, "spanId": f"{n:016x}", "name": name, "kind": 1,
              "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + 1000),
              "attributes": attributes, "events": [{"name": "exception", "timeUnixNano": str(start),
                                                    "attributes": [_attr("exception.type", "ValueError")]}]}
             for n, (name, attributes) in enumerate([
                 ("pii.access", [_attr("http.response.status_code", 503), _attr("order.total", 900),
                                 _attr("currency", "EUR")]),
                 ("audit.log", [_attr("currency", "USD")])], start=1)]
    double.push({"resourceSpans": [{
        "resource": {"attributes": [_attr("service.name", "checkout")]},
        "scopeSpans": [{"scope": {"name": "test"}, "spans": spans}]}]})


@pytest.fixture
def tempo() -> Iterator[TempoDouble]:
    with TempoDouble() as double:
        _push(double)
        yield double


def _rules(tmp_path: Path, **rules: str) -> Path:
    text = "rules:\n" + "".join(RULE.format(rule_id=rule_id, when=when).removeprefix("rules:\n")
                                for rule_id, when in rules.items())
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _validate(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["validate", *map(str, argv), "--retries", "0", "--timeout", "5s"])
    return code, capsys.readouterr().out


def _warnings(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("warning:")]


def _unseen(out: str) -> list[str]:
    """Only the warnings from Tempo, not lint's (a renamed twin, a resource attribute on spans)."""
    return [line for line in _warnings(out) if "never seen" in line]


class TestAgainstTempo:
    """Warnings name the rule, what was never seen, and the closest seen spelling."""

    def test_correct_rule_gets_no_warning(self, tempo: TempoDouble, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
        code, out = _validate(capsys, _rules(tmp_path, good=CORRECT), "--tempo", tempo.url)

        assert (0, []) == (code, _warnings(out))
        assert f"checked 1 rules against Tempo at {tempo.url} in the last 24h: 0 warnings" in out
        # span names, span and resource tags, values of currency (span) and service.name (resource)
        assert 5 == tempo.count("tags")

    def test_misspelt_span_name_gets_did_you_mean(self, tempo: TempoDouble, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
        rules = _rules(tmp_path, typo="pii.acess")

        code, out = _validate(capsys, rules, "--tempo", tempo.url)

        assert 0 == code
        assert [(f'warning: {rules}:2:5: rule typo: span name "pii.acess" never seen in Tempo in the '
                'last 24h; did you mean "pii.access"?')] == _warnings(out)

    def test_renamed_attribute_gets_the_seen_name(self, tempo: TempoDouble, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
        rules = _rules(tmp_path, renamed="pii.access.where(http.status_code >= 500)")

        _, out = _validate(capsys, rules, "--tempo", tempo.url, "--since", "1h")

        assert [(f"warning: {rules}:2:5: rule renamed: attribute http.status_code never seen on spans or "
                "resources in the last 1h; seen: http.response.status_code")] == _unseen(out)

    def test_scoped_attribute_counts_only_in_its_scope(self, tempo: TempoDouble, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
        rules = _rules(tmp_path, scoped="pii.access.where(span.service.name == checkout)",
                       unscoped="pii.access.where(service.name == checkout)")

        _, out = _validate(capsys, rules, "--tempo", tempo.url)

        assert 1 == len(_unseen(out))
        assert "rule scoped: attribute span.service.name never seen on spans in" in _unseen(out)[0]

    def test_event_attributes_are_looked_for_among_events(self, tempo: TempoDouble, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
        rules = _rules(tmp_path, seen='pii.access.where(event:name == exception and '
                                      'event.exception.type == "ValueError")',
                       typo='pii.access.where(event.exception.typ == "ValueError")',
                       value='pii.access.where(event.exception.type == "ValueErr")',
                       span="pii.access.where(span.exception.type == ValueError)")

        _, out = _validate(capsys, rules, "--tempo", tempo.url)

        assert [("rule typo: attribute event.exception.typ never seen on span events in the last 24h; "
                 "seen: exception.type"),
                ('rule value: value "ValueErr" of event.exception.type never seen in Tempo in the last '
                 '24h; did you mean "ValueError"?'),
                "rule span: attribute span.exception.type never seen on spans in the last 24h"] == [
            warning.partition(": ")[2].partition(": ")[2] for warning in _warnings(out)]

    def test_unseen_value_gets_did_you_mean(self, tempo: TempoDouble, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
        rules = _rules(tmp_path, value='pii.access.where(currency == "EUX" and currency != "GBP")')

        _, out = _validate(capsys, rules, "--tempo", tempo.url)

        assert [(f'warning: {rules}:2:5: rule value: value "EUX" of currency never seen in Tempo in the '
                'last 24h; did you mean "EUR"?')] == _warnings(out)


class TestTempoUnavailable:
    """Tempo down or refusing: one warning naming the URL, the normal checks, the same exit code."""

    def test_tempo_down(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        with socket.socket() as free:
            free.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{free.getsockname()[1]}"
        rules = _rules(tmp_path, typo="pii.acess")

        code, out = _validate(capsys, rules, "--tempo", url)

        assert 0 == code
        assert "1 valid rules, 0 errors, 0 warnings" in out
        # Whichever tag request failed first: span names and tag names are asked together.
        assert 1 == len(_warnings(out))
        assert re.fullmatch(rf"warning: rules not checked against Tempo: {url}/api/v2/search/tag\S+: "
                            "cannot connect: ConnectError", _warnings(out)[0])

    def test_old_tempo_404(self, tempo: TempoDouble, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
        tempo.inject(Fault(route="tags", status=404, body="404 page not found\n", times=10))
        broken = _rules(tmp_path, typo="pii.acess", broken="pii.access.where(")

        code, out = _validate(capsys, broken, "--tempo", tempo.url)

        assert 1 == code  # the broken rule, as without --tempo
        assert re.search(rf"^warning: rules not checked against Tempo: {tempo.url}/api/v2/search/tag\S+ "
                         "answered 404", out, re.MULTILINE)
        assert "hint: an older Tempo has no v2 tag API" in out


class TestUsage:
    """What a rule relies on: span names, attributes, and only the values equality can check."""

    def test_names_attributes_and_equality_values(self) -> None:
        condition = ('when { pii.access.where(span:name == "x" and currency in [EUR] and '
                     'currency != GBP and resource.tier == "gold" and amount > 10) } '
                     "always { count(audit.log) > 0 }")
        text = RULE.format(rule_id="r", when="").replace("when   {  }\n      always { audit.log }", condition)
        rule = load_text(text, "r.yaml").rules[0]

        used = usage(rule.invariant)

        assert ["pii.access", "x", "audit.log"] == used.span_names
        assert ["currency", "tier", "amount"] == [a.name for a in used.attributes]
        assert [["EUR"], ["gold"]] == list(used.values.values())

    @pytest.mark.parametrize(("scope", "name", "expected"), [
        ("span", "http.method", "span.http.method"),
        ("resource", "user id", 'resource."user id"'),
        ("span", 'va"l', 'span."va\\"l"'),
    ])
    def test_tag_identifier(self, scope: str, name: str, expected: str) -> None:
        assert expected == tag_identifier(scope, name)
