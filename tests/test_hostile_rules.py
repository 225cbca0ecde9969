"""Hostile rule files: each is refused with its place in the file, and never costs another rule.

Every case here once crashed ``validate`` or the daemon (issue 11): a NUL byte, deep nesting,
an alias bomb, duplicate keys, numbers and durations no datetime or JSON can hold, surrogate
escapes, invisible characters; and one rule's internal error aborted ``run --once``.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import time
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from daemon_kit import write_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tempo_double import TempoDouble

from checker.cli import main
from checker.config import load_settings
from checker.daemon.factory import open_daemon
from checker.daemon.ruleset import LiveRules
from checker.engine import CompiledInvariant
from checker.engine.examples import example_trace, run_examples
from checker.errors import ConfigError, RuleError, UsageError, visible
from checker.rules.bounded_yaml import MAX_ALIAS_NODES, MAX_DEPTH
from checker.rules.load import MAX_FILE_BYTES, RuleSet, load_paths, load_text
from checker.rules.parse import MAX_CONDITION_CHARS, MAX_NESTING, MAX_TERMS
from checker.rules.printer import invariant as print_invariant
from checker.rules.rule import Example, ExampleSpan, Rule
from checker.timeparse import duration_seconds
from checker.traceql import compile_rule

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

VALID = "rules:\n  - id: fine\n    condition: when { a } always { b }\n"
BIDI = "\u202e"


def rule_file(condition: str, extra: str = "", rule_id: str = "r") -> str:
    return f"rules:\n  - id: {rule_id}\n    condition: {json.dumps(condition)}\n{extra}"


def loaded(text: str) -> RuleSet:
    return load_text(text, "r.yaml")


def only_error(text: str) -> str:
    result = loaded(text)
    assert not result.rules
    assert len(result.errors) == 1, [str(e) for e in result.errors]
    return str(result.errors[0])


def trace_of(*names: str, **attributes: Any) -> Any:
    spans = tuple(ExampleSpan(name, attributes=dict(attributes)) for name in names)
    return example_trace("t", Example("e", "pass", spans, loaded(VALID).rules[0].location))


def works_everywhere(rule: Rule) -> None:
    """Compiles, explains, prints and evaluates: every command that walks the rule."""
    compile_rule(rule.invariant).describe()
    print_invariant(rule.invariant)
    compiled = CompiledInvariant.build(rule.invariant)
    for trace in (trace_of("a"), trace_of("a", "b", x=1), trace_of("x", "s7", a=999)):
        compiled.violated_by(trace)


# ------------------------------------------------------------------ the YAML layer


class TestYamlLimits:
    def test_a_nul_byte_is_an_error_at_its_place(self) -> None:
        message = only_error("rules:\n  - id: a\n    condition: never { x\x00 }\n")
        assert message.startswith("r.yaml:3:25: invalid YAML: control character U+0000 is not allowed")
        assert "\x00" not in message

    @pytest.mark.parametrize(("content", "code"), [
        (VALID.replace("a }", "a\x00 }"), 2),
        (VALID + "    labels: " + "[" * 5000 + "]" * 5000 + "\n", 2),
        (VALID.replace("always", "alwayz"), 1),
    ], ids=["nul", "deep-yaml", "rule-error"])
    def test_validate_exits_2_for_a_refused_file_and_1_for_invalid_rules(
            self, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, code: int) -> None:
        (tmp_path / "bad.yaml").write_text(content)
        (tmp_path / "good.yaml").write_text(VALID.replace("fine", "good"))

        assert code == main(["validate", str(tmp_path)])
        out = capsys.readouterr().out
        assert "1 valid rules, 1 errors" in out
        assert f"error: {tmp_path / 'bad.yaml'}:" in out

    def test_5000_deep_nesting_is_refused(self) -> None:
        text = VALID + "    labels: " + "[" * 5000 + "]" * 5000 + "\n"
        message = only_error(text)
        assert message.startswith(f"r.yaml:4:{13 + MAX_DEPTH - 3}: nesting deeper than {MAX_DEPTH} levels")

    def test_deep_block_nesting_too(self) -> None:
        text = VALID + "    labels:\n" + "".join("      " + "  " * i + f"k{i}:\n" for i in range(400))
        assert f"nesting deeper than {MAX_DEPTH} levels" in only_error(text)

    def test_billion_laughs_is_refused_without_expanding(self) -> None:
        levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"] + [
            f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]" for p, c in zip("abcdefgh", "bcdefghi", strict=True)]
        text = "\n".join(levels) + "\n" + VALID + "    labels: {boom: *i}\n"
        started = time.monotonic()
        message = only_error(text)
        assert time.monotonic() - started < 2
        assert f"aliases expand to more than {MAX_ALIAS_NODES} nodes" in message
        assert message.startswith("r.yaml:5:")

    def test_a_recursive_alias_is_refused(self) -> None:
        assert "a recursive alias" in only_error(VALID + "    labels: &l {self: *l}\n")

    def test_small_anchors_still_work(self) -> None:
        text = ("shared: &team {team: payments}\nrules:\n"
                "  - id: a\n    condition: never { x }\n    labels: *team\n"
                "  - id: b\n    condition: never { y }\n    labels: *team\n")
        result = loaded(text)
        assert not result.errors
        assert [r.labels for r in result.rules] == [{"team": "payments"}] * 2

    def test_an_oversize_file_is_refused_unread(self, tmp_path: Path) -> None:
        big = tmp_path / "big.yaml"
        big.write_text(VALID + "# " + "x" * MAX_FILE_BYTES + "\n")
        (tmp_path / "ok.yaml").write_text(VALID.replace("fine", "other"))
        result = load_paths([tmp_path])
        assert [r.id for r in result.rules] == ["other"]
        assert [str(e).splitlines()[0] for e in result.errors] == [
            f"{big}: file larger than 256 KiB, not loaded"]

    def test_invalid_utf8_names_its_line(self, tmp_path: Path) -> None:
        path = tmp_path / "latin1.yaml"
        path.write_bytes(b"rules:\n  - id: a\n    name: caf\xe9\n    condition: never { x }\n")
        assert str(load_paths([path]).errors[0]).startswith(f"{path}:3:14: not UTF-8: byte 0xe9")

    def test_the_column_counts_characters_not_bytes(self, tmp_path: Path) -> None:
        path = tmp_path / "mixed.yaml"
        path.write_bytes("rules:\n  - id: a\n    name: café ".encode() + b"\xe9\n")
        assert str(load_paths([path]).errors[0]).startswith(f"{path}:3:16: not UTF-8: byte 0xe9")

    @pytest.mark.parametrize(("extra", "message"), [
        ("    labels: !!python/object:os.system {}\n", "could not determine a constructor"),
        ("    labels: !custom {}\n", "could not determine a constructor for the tag '!custom'"),
        ("    labels: {n: " + "9" * 5000 + "}\n", "cannot read this value: Exceeds the limit"),
        ("    labels: {day: 2026-02-30}\n", "cannot read this value: day is out of range"),
        ("    ? [complex]\n    : key\n", "found unhashable key"),
    ])
    def test_values_python_cannot_build_are_errors(self, extra: str, message: str) -> None:
        assert message in only_error(VALID + extra)

    def test_keys_of_mixed_types_in_a_rule(self) -> None:
        result = loaded(VALID + "    true: 1\n    2026-01-01: x\n")
        assert not result.errors
        assert [r.id for r in result.rules] == ["fine"]


class TestDuplicateKeys:
    def test_a_second_condition_is_an_error_not_last_wins(self) -> None:
        text = (VALID + "  - id: twice\n    condition: never { a }\n    enabled: false\n"
                "    condition: never { b }\n    enabled: true\n")
        result = loaded(text)
        assert [r.id for r in result.rules] == ["fine"]  # the other rule still loads
        assert [str(e).splitlines()[0] for e in result.errors] == [
            "r.yaml:7:5: duplicate key 'condition', first at line 5",
            "r.yaml:8:5: duplicate key 'enabled', first at line 6",
        ]

    def test_anywhere_in_the_file(self) -> None:
        text = VALID + "    labels: {team: a, team: b}\nrules: []\n"
        messages = [str(e).splitlines()[0] for e in loaded(text).errors]
        assert messages == ["r.yaml:4:23: duplicate key 'team', first at line 4",
                            "r.yaml:5:1: duplicate key 'rules', first at line 1"]

    def test_merge_keys_keep_their_old_reading_an_ignored_key(self) -> None:
        text = ("base: &base {severity: low, enabled: false}\nrules:\n"
                "  - <<: *base\n    <<: {every: 5m}\n    id: a\n    severity: high\n"
                "    condition: never { x }\n")
        result = loaded(text)
        assert not result.errors
        rule = result.rules[0]
        assert (rule.severity, rule.enabled, rule.every) == ("high", True, None)
        assert any("'<<'" in str(w) for w in result.warnings)


# -------------------------------------------------------------- the condition layer


class TestConditionLimits:
    @pytest.mark.parametrize("op", ["or", "and"])
    def test_hundreds_of_chained_terms_work_everywhere(self, op: str, capsys: pytest.CaptureFixture[str],
                                                       tmp_path: Path) -> None:
        terms = f" {op} ".join(f"s{i}" for i in range(900))
        path = tmp_path / "long.yaml"
        path.write_text(rule_file(f"when {{ a }} always {{ {terms} }}"))
        result = load_paths([path])
        assert not result.errors
        works_everywhere(result.rules[0])
        assert main(["explain", str(path)]) == 0
        assert "s899" in capsys.readouterr().out

    def test_too_many_terms_name_the_limit(self) -> None:
        terms = " or ".join(f"s{i}" for i in range(MAX_TERMS + 1))
        message = only_error(rule_file(f"never {{ {terms} }}"))
        assert f"more than {MAX_TERMS} checks and comparisons in one condition" in message

    @pytest.mark.parametrize("condition", [
        "never { a and " + "not " * 450 + "x }",
        "never { x.where(" + "not " * 5000 + "y) }",
        "never { " + "a and (b or (" * 300 + "c" + "))" * 300 + " }",
    ])
    def test_deep_nesting_is_refused_with_its_place(self, condition: str) -> None:
        message = only_error(rule_file(condition))
        assert f"and/or/not nested more than {MAX_NESTING} levels deep" in message
        assert message.startswith("r.yaml:3:")

    def test_nesting_at_the_limit_works_everywhere(self) -> None:
        deep = "x"
        for level in range(MAX_NESTING - 1):
            deep = f"s{level} {'and' if level % 2 else 'or'} ({deep})"
        result = loaded(rule_file(f"when {{ a }} always {{ {deep} }}"))
        assert not result.errors
        works_everywhere(result.rules[0])

    def test_an_overlong_condition_is_refused_before_parsing(self) -> None:
        condition = "never { " + " or ".join(["a"] * (MAX_CONDITION_CHARS // 5)) + " }"
        started = time.monotonic()
        message = only_error(rule_file(condition))
        assert time.monotonic() - started < 2
        assert message.startswith(f"r.yaml:3:17: rule r: condition longer than {MAX_CONDITION_CHARS} chara")

    def test_parentheses_alone_add_no_depth(self) -> None:
        assert not loaded(rule_file("never { " + "(" * 3000 + "x" + ")" * 3000 + " }")).errors

    @pytest.mark.parametrize(("condition", "message"), [
        ("never { count(x) > 1e309 }", "r.yaml:3:36: rule r: number 1e309 is too large for a double"),
        ("never { x.where(a == -1e400) }", "number -1e400 is too large for a double"),
        ("never { count(x) > 9223372036854775808 }", "number 9223372036854775808 does not fit in 64 bits"),
        ("never { count(x) > " + "9" * 5000 + " }",
         "number 99999999999999999999...9999999999 (5000 characters) does not fit"),
        ("never { x.where(span:duration > 99999999999h) }", "duration 99999999999h is longer than 3650d"),
    ])
    def test_numbers_that_cannot_be_carried(self, condition: str, message: str) -> None:
        assert message in only_error(rule_file(condition))

    def test_the_largest_numbers_still_load(self) -> None:
        zeros = "0" * 5000
        result = loaded(rule_file(f"never {{ count(x) > 9223372036854775807 or x.where(a < 1.7e308) "
                                  f"or count(y) > {zeros}7 }}"))
        assert not result.errors
        works_everywhere(result.rules[0])

    def test_a_thousand_values_in_a_list(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        values = ", ".join(f'"v{i}"' for i in range(1000))
        path = tmp_path / "in.yaml"
        path.write_text(rule_file(f"when {{ a }} never {{ s.where(k in [{values}]) }}"))
        rule = load_paths([path]).rules[0]
        works_everywhere(rule)
        compiled = CompiledInvariant.build(rule.invariant)
        assert compiled.violated_by(trace_of("a", "s", k="v999"))
        assert not compiled.violated_by(trace_of("a", "s", k="v1000"))
        assert main(["explain", str(path)]) == 0
        assert '"v999"' in capsys.readouterr().out


class TestSchedules:
    def test_a_huge_every_is_refused(self) -> None:
        message = only_error(rule_file("never { x }", "    every: 999999999999s\n"))
        assert message.startswith("r.yaml:4:12: rule r: 'every': 999999999999s is longer than the limit "
                                  "of 3650d (ten years)")

    def test_ten_years_is_accepted(self) -> None:
        assert loaded(rule_file("never { x }", "    every: 3650d\n    evaluation_delay: 87600h\n")).rules

    def test_initial_lookback_is_a_config_key_bounded_too(self, tmp_path: Path) -> None:
        path = write_settings(tmp_path, tempo_url="http://127.0.0.1:1", store="sqlite:///x.db",
                              schedule__initial_lookback="1000000d")
        with pytest.raises(ConfigError) as raised:
            load_settings(path)
        assert "1000000d is longer than the limit of 3650d" in str(raised.value)

    @pytest.mark.parametrize(("seconds", "message"), [
        ("1e20", "1e+20s is longer than the limit of 3650d"),
        (1e12, "1e+12s is longer than the limit of 3650d"),
        ("nan", "not a finite number of seconds"),
    ])
    def test_config_durations_in_plain_seconds_are_bounded(self, tmp_path: Path, seconds: object,
                                                          message: str) -> None:
        path = write_settings(tmp_path, tempo_url="http://127.0.0.1:1", store="sqlite:///x.db",
                              schedule__initial_lookback=seconds)
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_settings(path)

    def test_cli_durations_share_the_bound(self) -> None:
        with pytest.raises(UsageError, match="longer than the limit"):
            duration_seconds("99999999999999d")


class TestUnicode:
    def test_json_style_surrogate_escapes_become_one_character(self) -> None:
        text = ('rules:\n  - id: r\n    name: "smile \\ud83d\\ude00"\n'
                '    condition: "never { x.where(face == \\"\\ud83d\\ude00\\") }"\n')
        rule = loaded(text).rules[0]
        assert rule.name == "smile \U0001f600"
        assert compiled_once(rule).violated_by(trace_of("x", face="\U0001f600"))
        json.dumps(rule.name, ensure_ascii=False).encode()  # encodable: it was two lone halves

    def test_a_lone_surrogate_is_refused(self) -> None:
        message = only_error('rules:\n  - id: r\n    name: "\\ud83d!"\n    condition: never { x }\n')
        assert message.startswith("r.yaml:3:11: a lone UTF-16 surrogate")

    @pytest.mark.parametrize("char", ["\u200b", "\u200f", BIDI, "\u2066", "\ufeff", "\u00ad"])
    def test_invisible_characters_in_ids_are_refused_and_shown_escaped(self, char: str) -> None:
        message = only_error(f"rules:\n  - id: pay{char}ments\n    condition: never {{ x }}\n")
        assert "invalid rule id" in message
        assert char not in message
        assert f"\\u{ord(char):04x}" in message

    def test_in_names_they_are_accepted_and_explain_escapes_them(
            self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        path = tmp_path / "r.yaml"
        path.write_text(f'rules:\n  - id: r\n    name: "admin{BIDI}txt.exe\\0"\n'
                        f'    condition: never {{ "evil{BIDI}" }}\n', encoding="utf-8")
        assert load_paths([path]).rules[0].name == f"admin{BIDI}txt.exe\x00"
        assert main(["explain", str(path)]) == 0
        out = capsys.readouterr().out
        assert BIDI not in out
        assert "\x00" not in out
        assert "name:     admin\\u202etxt.exe\\u0000" in out
        assert 'never { "evil\\u202e" }' in out

    def test_visible_keeps_ordinary_text(self) -> None:
        assert visible("café 😀 ✓\n\tline") == "café 😀 ✓\n\tline"


def compiled_once(rule: Rule) -> CompiledInvariant:
    return CompiledInvariant.build(rule.invariant)


# --------------------------------------------------------------------- the daemon


@pytest.fixture
def tempo() -> Iterator[TempoDouble]:
    with TempoDouble() as double:
        yield double


HOSTILE_FILES = {
    "nul.yaml": "rules:\n  - id: nul\n    condition: never { x\x00 }\n",
    "deep.yaml": VALID.replace("fine", "deep") + "    labels: " + "[" * 5000 + "]" * 5000 + "\n",
    "laughs.yaml": "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{c}: &{c} [{','.join([f'*{p}'] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True))
        + "rules:\n  - id: laughs\n    condition: never { x }\n    labels: {a: *i}\n",
    "chain.yaml": rule_file("never { " + "not " * 5000 + "x }", rule_id="chain"),
    "dup.yaml": "rules:\n  - id: dup\n    condition: never { x }\n    condition: never { y }\n",
    "inf.yaml": rule_file("never { count(x) > 1e309 }", rule_id="inf"),
    "every.yaml": rule_file("never { x }", "    every: 999999999999s\n", rule_id="every"),
}


def evaluations(db: Path) -> list[tuple[str, str, str | None]]:
    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT rule_id, outcome, error FROM evaluations ORDER BY id").fetchall()


class TestDaemon:
    def test_run_once_reports_every_bad_file_and_runs_the_valid_rules(
            self, tmp_path: Path, tempo: TempoDouble, capsys: pytest.CaptureFixture[str]) -> None:
        rules = tmp_path / "rules.d"
        rules.mkdir()
        for name, text in HOSTILE_FILES.items():
            (rules / name).write_text(text, encoding="utf-8")
        (rules / "mixed.yaml").write_text(VALID + "  - id: broken\n    condition: when { a }\n")
        config = write_settings(tmp_path, tempo_url=tempo.url, store=f"sqlite:///{tmp_path / 'h.db'}",
                                rules_dir=rules)
        started = time.monotonic()
        assert main(["run", "--once", "--config", str(config)]) == 2
        assert time.monotonic() - started < 30
        err = capsys.readouterr().err
        for name in HOSTILE_FILES:
            assert f"{rules / name}:" in err, name
        assert "Traceback" not in err
        assert {rule for rule, _outcome, _error in evaluations(tmp_path / "h.db")} == {"fine"}

    def test_hot_reload_keeps_the_last_good_version(self, tmp_path: Path) -> None:
        path = tmp_path / "r.yaml"
        path.write_text(VALID)
        live = LiveRules(tmp_path)
        live.reload()
        version = live.rules["fine"].version
        for text in HOSTILE_FILES.values():
            path.write_text(text.replace("id: ", "id: fine-"), encoding="utf-8")
            reload = live.reload()
            assert reload.errors
            assert reload.kept == [path]
            assert list(live.rules) == ["fine"]
            assert live.rules["fine"].version == version

    def test_a_file_never_loaded_cleanly_runs_its_valid_rules(self, tmp_path: Path) -> None:
        (tmp_path / "r.yaml").write_text(VALID + "  - id: broken\n    condition: when { a }\n")
        live = LiveRules(tmp_path)
        assert live.reload().errors
        assert list(live.rules) == ["fine"]

    def test_a_loader_bug_costs_one_file_only(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        (tmp_path / "a.yaml").write_text(VALID)
        (tmp_path / "b.yaml").write_text(VALID.replace("fine", "other"))
        real = load_text

        def crashing(text: str, path: Path | str) -> RuleSet:
            if str(path).endswith("b.yaml"):
                raise RecursionError("maximum recursion depth exceeded")
            return real(text, path)

        monkeypatch.setattr("checker.rules.load.load_text", crashing)
        live = LiveRules(tmp_path)
        errors = live.reload().errors
        assert list(live.rules) == ["fine"]
        expected = "internal error while loading: RecursionError: maximum recursion depth exceeded"
        assert [str(e).splitlines()[0] for e in errors] == [f"{tmp_path / 'b.yaml'}: {expected}"]

    @pytest.mark.parametrize("where", ["compile", "record"])
    def test_one_rules_internal_error_never_aborts_the_others(
            self, where: str, tmp_path: Path, tempo: TempoDouble, monkeypatch: pytest.MonkeyPatch) -> None:
        rules = tmp_path / "rules.d"
        rules.mkdir()
        (rules / "r.yaml").write_text(VALID + "  - id: buggy\n    condition: when { c } always { d }\n")
        config = load_settings(write_settings(tmp_path, tempo_url=tempo.url,
                                              store=f"sqlite:///{tmp_path / 'i.db'}", rules_dir=rules))
        self._break(where, monkeypatch)

        async def once() -> list[Any]:
            daemon = await open_daemon(config)
            try:
                return await daemon.run_once()
            finally:
                await daemon.close()

        summaries = {s.rule_id: s for s in asyncio.run(once())}
        # 15 minutes on the 5-minute grid: a short first window, two whole ones, and the tail
        # since the last grid point (none when now falls on it).
        assert summaries["fine"].windows in {3, 4}
        assert summaries["fine"].failed is None
        assert summaries["buggy"].failed == "internal error: RuntimeError: boom"
        outcomes = {(rule, outcome) for rule, outcome, _error in evaluations(tmp_path / "i.db")}
        assert ("fine", "ok") in outcomes
        if where == "compile":  # the failed window is on record, its checkpoint unmoved
            assert ("buggy", "failed") in outcomes

    @staticmethod
    def _break(where: str, monkeypatch: pytest.MonkeyPatch) -> None:
        from checker.daemon import judge as evaluator  # noqa: PLC0415
        from checker.store import Store  # noqa: PLC0415

        if where == "compile":
            real_compile = evaluator.compile_rule

            def compile_or_boom(inv: Any) -> Any:
                if "d" in print_invariant(inv):
                    raise RuntimeError("boom")
                return real_compile(inv)

            monkeypatch.setattr(evaluator, "compile_rule", compile_or_boom)
        else:
            real_record = Store.record_rule

            def record_or_boom(self: Store, rule: Rule) -> Any:
                if rule.id == "buggy":
                    raise RuntimeError("boom")
                return real_record(self, rule)

            monkeypatch.setattr(Store, "record_rule", record_or_boom)


# ------------------------------------------------------------------ property layer

WORDS = ["when", "always", "never", "and", "or", "not", "in", "matches", "contains", "true", "false",
         "{", "}", "(", ")", "[", "]", ",", ".where(", "trace.has(", "count(", "trace.count(", "==", "!=",
         ">", ">=", "<", "<=", "a", "b.c", "x", "span:duration", "span:status", "resource:service",
         '"q"', '"\\""', "1", "-2.5", "1e309", "10_000", "500ms", "2s", "ok", "error", "//", "#",
         "\n", "\u202e", "\u200b", "\x00", "\ud83d", "é", "😀", "\\", '"', "9" * 30]
ODD = st.sampled_from(["\x00", "\ud800", "\udfff", "\u202e", "\u2066", "\ufeff", "\x85", "\u2028", "\t",
                       "\r", "😀", "\\ud83d", "\\0", "&a", "*a", "<<", "!!binary", "---", "'", '"'])


@st.composite
def token_conditions(draw: st.DrawFn) -> str:
    return " ".join(draw(st.lists(st.sampled_from(WORDS), max_size=25)))


@st.composite
def nested_conditions(draw: st.DrawFn) -> str:
    depth = draw(st.integers(0, 3 * MAX_NESTING))
    shape = draw(st.sampled_from(["not {x}", "a and ({x})", "b or ({x})", "({x})", "x.where({x})"]))
    inner = draw(st.sampled_from(["c", "d.where(k == 1)", "count(e) > 2", 'f.g != "h"']))
    text = inner
    for _ in range(depth):
        text = shape.replace("{x}", text)
    return draw(st.sampled_from(["never {{ {} }}", "when {{ a }} always {{ {} }}", "{}"])).format(text)


def condition_texts() -> st.SearchStrategy[str]:
    return st.one_of(token_conditions(), nested_conditions(), st.text(max_size=40),
                     st.lists(st.one_of(st.sampled_from(WORDS), ODD), max_size=30).map("".join))


def as_rule_file(condition: str, style: str) -> str:
    if style == "json":
        return rule_file(condition)
    if style == "block":
        indented = "\n".join("      " + line for line in condition.split("\n"))
        return f"rules:\n  - id: r\n    condition: |\n{indented}\n"
    return f"rules:\n  - id: r\n    condition: {condition}\n"


yaml_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8), ODD),
    lambda children: st.one_of(st.lists(children, max_size=3),
                               st.dictionaries(st.sampled_from(["id", "condition", "rules", "name",
                                                                "every", "labels", "examples", "trace",
                                                                "span", "children", "x"]),
                                               children, max_size=3)),
    max_leaves=12)

example_spans = st.recursive(
    st.fixed_dictionaries({"span": st.sampled_from(["a", "b", "x", "s", "😀", BIDI])}, optional={
        "attributes": st.dictionaries(st.sampled_from(["x", "k", "face", "a"]), yaml_values, max_size=3),
        "status": st.sampled_from(["ok", "error", "unset", "bad"]),
        "kind": st.sampled_from(["server", "client", "nope"]),
        "duration": st.sampled_from(["120ms", "1e3s", "3650d", "3651d", "-1s", "99999999999999999999h"]),
    }),
    lambda spans: st.fixed_dictionaries({"span": st.just("p"), "children": st.lists(spans, max_size=3)}),
    max_leaves=6)
rule_mappings = st.fixed_dictionaries(
    {"id": st.sampled_from(["r", f"r{BIDI}", "1", "a.b-c", ""]),
     "condition": st.sampled_from(["never { x }", "when { a } always { b }", "a and not b",
                                   "when { a.where(x > 1) } never { count(s) > 2 }"])},
    optional={"name": st.one_of(st.text(max_size=8), ODD), "description": yaml_values,
              "every": st.sampled_from(["1m", "0s", "3650d", "3651d", "1.5s", "1e3s", "x"]),
              "evaluation_delay": st.sampled_from(["2m", "1000000d"]),
              "cron": st.sampled_from(["*/5 * * * *", "61 * * * *", "* * *"]),
              "enabled": yaml_values, "severity": yaml_values, "labels": yaml_values, "notify": yaml_values,
              "examples": st.lists(st.fixed_dictionaries(
                  {"expect": st.sampled_from(["pass", "violation", "maybe"]),
                   "trace": st.lists(example_spans, max_size=3)}), max_size=2)})


def assert_clear_or_working(result: RuleSet) -> None:
    for error in result.errors:
        assert isinstance(error, RuleError)
        assert error.location is not None
        assert error.location.line is not None, str(error)
        str(error).encode()  # printable: no lone surrogate, whatever the input held
    for rule in result.rules:
        works_everywhere(rule)
        visible(rule.name).encode()
    list(run_examples(result.rules))


PROPERTY = settings(max_examples=150, deadline=5000, suppress_health_check=[HealthCheck.too_slow])


class TestProperties:
    """Whatever the text: a RuleError with a place, or a rule that every command can use."""

    @PROPERTY
    @given(condition_texts(), st.sampled_from(["json", "block", "plain"]))
    def test_any_condition_text(self, condition: str, style: str) -> None:
        assert_clear_or_working(loaded(as_rule_file(condition, style)))

    @PROPERTY
    @given(st.one_of(yaml_values, rule_mappings))
    def test_any_yaml_structure(self, value: Any) -> None:
        try:
            text = yaml.safe_dump({"rules": [value]}, allow_unicode=True)
        except yaml.YAMLError:
            return
        assert_clear_or_working(loaded(text))

    @PROPERTY
    @given(st.lists(st.one_of(st.sampled_from(["rules:", "\n", "  ", "- ", "id: r", "condition: ",
                                               "never { x }", "[", "]", "{", "}", ":", ",", "&a ", "*a",
                                               "<<: ", "? ", "!!str ", "|", ">"]), ODD), max_size=40))
    def test_any_yaml_text(self, parts: list[str]) -> None:
        assert_clear_or_working(loaded("".join(parts)))
