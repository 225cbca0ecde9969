"""Compliance evidence: the ledger, report figures (exact), gaps, HTML in Chromium, OSCAL, backfill."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
import test_settled as settled_kit
from alembic import command
from daemon_kit import (
    FIRST_TRACE,
    LAST_TRACE,
    RULES_D,
    Clock,
    dataset,
    expected_pairs,
    settings,
    write_settings,
)
from receivers import Receiver
from recordings import needs_recordings
from sqlalchemy import create_engine, text
from stores import STORE_KINDS, store_url
from tempo_double import Fault, TempoDouble
from trestle.oscal.assessment_results import AssessmentResults

from checker.cli import main
from checker.daemon.factory import open_daemon
from checker.engine import Violation
from checker.evidence.figures import Filters, build
from checker.rules.load import load_text
from checker.store import Amendment, Store, WindowRecord, ledger
from checker.store.migrate import alembic_config

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from checker.rules.rule import Rule

T0 = datetime(2026, 11, 1, tzinfo=UTC)
PERIOD = ("--from", "2026-11-01T00:00:00Z", "--to", "2026-11-03T00:00:00Z")
HOUR = timedelta(hours=1)
RULES = """
rules:
  - id: audit
    name: PII access is audited
    severity: high
    compliance_frameworks: [SOC2]
    controls: ["SOC2:CC6.7"]
    condition: when { pii.access } always { audit.log }
  - id: deploy
    name: Production deploys are approved
    compliance_frameworks: [SOC2, ISO27001]
    controls: ["SOC2:CC8.1", "ISO27001:A.12.1.2"]
    condition: when { deploy } always { approval }
"""


def rules() -> dict[str, Rule]:
    return {r.id: r for r in load_text(RULES, "rules.d/evidence.yaml").rules}


def violation(rule: Rule, n: int) -> Violation:
    return Violation(rule_id=rule.id, rule_name=rule.name, severity=rule.severity, trace_id=f"{n:032x}",
                     reason="pii.access without audit.log", frameworks=rule.frameworks,
                     controls=rule.controls, trigger_spans=(), missing=("audit.log",), forbidden=())


def fill(store: Store) -> None:
    """Two days of 'audit' with a violation hour, a skipped span, failures and a final gap."""
    audit = rules()["audit"]
    store.start_checkpoint("audit", T0)

    def window(hour: int, outcome: str = "ok", found: tuple[Violation, ...] = ()) -> None:
        start = T0 + hour * HOUR
        store.commit(WindowRecord(audit, start, start + HOUR, start, 0.5, outcome,  # type: ignore[arg-type]
                                  scope_size=10, candidates=len(found), plan="S1 scope { }",
                                  violations=found))

    for hour in range(24):
        window(hour, "violations" if hour == 3 else "ok",
               (violation(audit, 1), violation(audit, 2)) if hour == 3 else ())
    for hour in range(24, 30):
        window(hour)
    store.commit(WindowRecord(audit, T0 + 30 * HOUR, T0 + 36 * HOUR, T0 + 40 * HOUR, 0.0, "skipped",
                              error="not evaluated: the backlog exceeded max_catchup (6:00:00)"))
    for _ in range(2):
        store.commit(WindowRecord(audit, T0 + 36 * HOUR, T0 + 37 * HOUR, T0 + 40 * HOUR, 1.0, "failed",
                                  error="http://tempo:3200/api/search answered 503: unavailable"))
    for hour in range(36, 44):
        window(hour)


def never_applied(store: Store, rule_id: str) -> None:
    """Four windows of the rule evaluated with no trace in scope."""
    rule = rules()[rule_id]
    store.start_checkpoint(rule_id, T0)
    for hour in range(4):
        start = T0 + hour * HOUR
        store.commit(WindowRecord(rule, start, start + HOUR, start, 0.1, "ok", scope_size=0,
                                  plan="S1 scope { }"))


@contextmanager
def filled_store(kind: str, tmp_path: Path) -> Iterator[Store]:
    """A store of that kind holding the rules and ``fill``'s two days."""
    with store_url(kind, tmp_path) as url:
        opened = Store.open(url)
        for rule in rules().values():
            opened.record_rule(rule)
        fill(opened)
        yield opened
        opened.close()


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with filled_store(request.param, tmp_path) as opened:
        yield opened


class TestLedger:
    def test_intact_chain_and_its_head(self, store: Store) -> None:
        verdict = ledger.verify(store.engine)
        assert verdict.ok
        assert 41 == verdict.records  # 30 + skipped + 2 failed + 8
        with store.engine.connect() as connection:
            last = connection.scalar(text("select hash from evaluations order by id desc limit 1"))
        assert last == verdict.head

    @pytest.mark.parametrize(("tamper", "broken", "words"), [
        ("update evaluations set scope_size = 11 where id = 5", 5, "was altered"),
        ("update evaluations set outcome = 'ok' where id = 4", 4, "was altered"),
        (("update violations set trace_id = 'ffffffffffffffffffffffffffffffff' "
         "where trace_id = '00000000000000000000000000000001'"), 4, "was altered"),
        ("delete from evaluations where id = 10", 11, "does not follow"),
    ])
    def test_tampering_is_found_and_named(self, store: Store, tamper: str, broken: int, words: str) -> None:
        with store.engine.begin() as connection:
            connection.execute(text(tamper))
        verdict = ledger.verify(store.engine)
        assert broken == verdict.broken_at
        assert words in (verdict.problem or "")

    def test_reordering_is_found(self, store: Store) -> None:
        with store.engine.begin() as connection:
            rows = {r.id: r for r in connection.execute(text(
                "select id, window_start, window_end from evaluations where id in (7, 8)"))}
            for target, source in ((7, 8), (8, 7)):
                swap = text("update evaluations set window_start = :s, window_end = :e where id = :id")
                connection.execute(swap, {"s": rows[source].window_start, "e": rows[source].window_end,
                                          "id": target})
        assert 7 == ledger.verify(store.engine).broken_at

    def test_cli(self, store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                 monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("BETRACE_STORE", store.engine.url.render_as_string(hide_password=False))
        monkeypatch.chdir(tmp_path)
        assert 0 == main(["evidence", "verify"])
        head = ledger.verify(store.engine).head
        assert f"ledger intact: 41 records; head hash {head}" in capsys.readouterr().out
        with store.engine.begin() as connection:
            connection.execute(text("update evaluations set plan = 'S1 scope { true }' where id = 20"))
        assert 1 == main(["evidence", "verify"])
        assert "ledger BROKEN at record 20: record 20 was altered" in capsys.readouterr().out

    def test_migration_chains_records_written_before_it(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path / 'old.db'}"
        engine = create_engine(url)
        config = alembic_config()
        with engine.begin() as connection:  # a store as revision 0002 left it, with evaluations
            config.attributes["connection"] = connection
            command.upgrade(config, "0002")
            for n in range(3):
                connection.execute(text(
                    "insert into evaluations (rule_id, rule_version, window_start, window_end, started_at, "
                    "duration_seconds, outcome, scope_size, candidates, violations, new_violations, plan, "
                    "checker_version) "
                    "values ('audit', 'v1', :s, :e, :s, 0.1, 'ok', 1, 0, 0, 0, 'S1', '0.1.0')"),
                    {"s": f"2026-11-01 0{n}:00:00.000000", "e": f"2026-11-01 0{n + 1}:00:00.000000"})
        engine.dispose()
        reopened = Store.open(url)  # migrates to the newest version: the old rows are chained
        try:
            verdict = ledger.verify(reopened.engine)
            assert verdict.ok
            assert 3 == verdict.records
            assert all(e["hash"] and not e["backfill"] for e in reopened.evaluations())
        finally:
            reopened.close()


class TestReportFigures:
    def report_json(self, store: Store, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                    tmp_path: Path, *extra: str) -> dict:
        monkeypatch.setenv("BETRACE_STORE", store.engine.url.render_as_string(hide_password=False))
        monkeypatch.setenv("BETRACE_TRACE_URL_TEMPLATE", "https://grafana/t/{trace_id}")
        monkeypatch.chdir(tmp_path)
        assert 0 == main(["evidence", "report", *PERIOD, "--format", "json", *extra])
        return json.loads(capsys.readouterr().out)

    def test_a_failure_without_an_error_text_is_still_a_reason(
            self, store: Store, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
            tmp_path: Path) -> None:
        start = T0 + 44 * HOUR
        store.commit(WindowRecord(rules()["audit"], start, start + HOUR, start, 1.0, "failed", error=""))
        report = self.report_json(store, capsys, monkeypatch, tmp_path, "--control", "CC6.7")
        reasons = [g["reason"] for g in report["controls"][0]["rules"][0]["gaps"]]
        assert "evaluation failed (1 attempts): no error recorded" == reasons[-1]

    def test_exact_figures(self, store: Store, capsys: pytest.CaptureFixture[str],
                           monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        report = self.report_json(store, capsys, monkeypatch, tmp_path, "--control", "CC6.7")
        [control] = report["controls"]
        assert "SOC2:CC6.7" == control["control"]
        [rule] = control["rules"]
        assert 48 * 3600 == rule["expected_seconds"]
        assert 38 * 3600 == rule["covered_seconds"]
        assert pytest.approx(38 / 48) == rule["coverage"]
        assert (38, 1, 2, 0) == (rule["windows_evaluated"], rule["windows_skipped"], rule["failed_attempts"],
                                 rule["backfilled_windows"])
        assert 380 == rule["traces_in_scope"]
        gaps = [(g["start"], g["end"]) for g in rule["gaps"]]
        assert [("2026-11-02T06:00:00Z", "2026-11-02T12:00:00Z"),
                ("2026-11-02T20:00:00Z", "2026-11-03T00:00:00Z")] == gaps
        assert rule["gaps"][0]["reason"].startswith("skipped")
        assert rule["gaps"][1]["reason"].startswith("not evaluated")
        assert [f"{1:032x}", f"{2:032x}"] == [v["trace_id"] for v in rule["violations"]]
        assert f"https://grafana/t/{1:032x}" == rule["violations"][0]["trace_url"]
        assert [{"day": "2026-11-01", "windows": 24, "traces_in_scope": 240, "violations": 2,
                 "compliance_rate": pytest.approx(1 - 2 / 240)},
                {"day": "2026-11-02", "windows": 14, "traces_in_scope": 140, "violations": 0,
                 "compliance_rate": 1.0}] == rule["daily"]
        assert [v["version"] for v in rule["versions"]] == [rules()["audit"].version]
        assert report["ledger"]["intact"]
        assert 41 == report["ledger"]["records"]
        assert report["ledger"]["verify_command"] == "betrace evidence verify"

    def test_filters(self, store: Store, capsys: pytest.CaptureFixture[str],
                     monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        soc2 = self.report_json(store, capsys, monkeypatch, tmp_path, "--framework", "SOC2")
        assert ["SOC2:CC6.7", "SOC2:CC8.1"] == [c["control"] for c in soc2["controls"]]
        deploy = soc2["controls"][1]["rules"][0]
        assert 0 == deploy["covered_seconds"]  # never evaluated: one gap, the whole period
        assert 1 == len(deploy["gaps"])
        iso = self.report_json(store, capsys, monkeypatch, tmp_path, "--framework", "ISO27001")
        assert ["ISO27001:A.12.1.2"] == [c["control"] for c in iso["controls"]]
        assert [] == self.report_json(store, capsys, monkeypatch, tmp_path, "--rule", "nope")["controls"]

    def test_csv_holds_the_same_figures(self, store: Store, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        report = self.report_json(store, capsys, monkeypatch, tmp_path, "--control", "CC6.7")
        assert 0 == main(["evidence", "report", *PERIOD, "--format", "csv", "--control", "CC6.7"])
        rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
        rule = report["controls"][0]["rules"][0]
        total = rows[0]
        assert "" == total["day"]
        figures = (rule["coverage"], rule["windows_evaluated"], rule["traces_in_scope"],
                   len(rule["violations"]))
        assert figures == (float(total["coverage"]), int(total["windows_evaluated"]),
                           int(total["traces_in_scope"]), int(total["violations"]))
        assert report["ledger"]["head"] == total["ledger_head"]
        assert [(d["day"], d["violations"]) for d in rule["daily"]] == [
            (r["day"], int(r["violations"])) for r in rows[1:]]

    def test_markdown_and_html_files(self, store: Store, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("BETRACE_STORE", store.engine.url.render_as_string(hide_password=False))
        monkeypatch.chdir(tmp_path)
        for fmt in ("md", "html"):
            out = tmp_path / f"report.{fmt}"
            assert 0 == main(["evidence", "report", *PERIOD, "--format", fmt, "--out", str(out)])
            body = out.read_text()
            assert "79.17 %" in body
            assert "skipped: the daemon was down longer than max_catchup" in body
        html = (tmp_path / "report.html").read_text()
        assert "<svg" in html
        assert "http" not in html.replace("http://www.w3.org/2000/svg", "")  # nothing fetched


    def test_a_rule_that_never_applied_is_flagged(self, store: Store, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """Evaluated all along with nothing in scope looks like a pass: the report says it is no evidence."""
        never_applied(store, "deploy")
        report = self.report_json(store, capsys, monkeypatch, tmp_path, "--framework", "SOC2")
        flags = {r["rule_id"]: r["never_applied"] for c in report["controls"] for r in c["rules"]}
        assert {"audit": False, "deploy": True} == flags
        assert 0 == main(["evidence", "report", *PERIOD, "--format", "md", "--framework", "SOC2"])
        markdown = capsys.readouterr().out
        assert 1 == markdown.count("No evidence: the rule never applied")
        assert "1 of its rules never applied" in markdown
        assert 0 == main(["evidence", "report", *PERIOD, "--format", "csv", "--rule", "deploy"])
        rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
        assert {"True"} == {r["never_applied"] for r in rows if not r["day"]}


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (Debian's `chromium` package); .ci/run installs it")
def test_html_report_in_headless_chromium(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    store = Store.open(url)
    for rule in rules().values():
        store.record_rule(rule)
    fill(store)
    store.close()
    monkeypatch.setenv("BETRACE_STORE", url)
    monkeypatch.chdir(tmp_path)
    page = tmp_path / "report.html"
    assert 0 == main(["evidence", "report", *PERIOD, "--framework", "SOC2", "--out", str(page)])
    assert CHROMIUM is not None
    shown = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",  # noqa: S603
                            page.as_uri()], capture_output=True, text=True, timeout=60, check=True).stdout
    assert "Compliance evidence" in shown
    for words in ("SOC2:CC6.7", "SOC2:CC8.1", "79.17 %", "0.00 %", "Ledger of 41 records intact",
                  "2026-11-02T06:00:00Z", f"{1:032x}", "<circle"):
        assert words in shown, words
    shot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",  # noqa: S603
                    "--window-size=1000,1400", page.as_uri()], capture_output=True, timeout=60, check=True)
    assert shot.stat().st_size > 10_000


@needs_recordings
def test_a_daemon_outage_beyond_max_catchup_is_a_gap(tmp_path: Path) -> None:
    rules_dir = tmp_path / "rules.d"
    rules_dir.mkdir()
    (rules_dir / "sre.yaml").write_text((RULES_D / "sre.yaml").read_text())
    with TempoDouble() as tempo:
        tempo.push(dataset())
        config = settings(tmp_path, tempo_url=tempo.url, store=f"sqlite:///{tmp_path / 'g.db'}",
                          rules_dir=rules_dir, schedule__max_catchup="30m", schedule__initial_lookback="10m")
        clock = Clock.at(LAST_TRACE + 150 - 86_400)

        async def run() -> None:
            for _ in range(2):  # up a day ago; then down until now
                daemon = await open_daemon(config, clock=clock)
                await daemon.run_once()
                await daemon.close()
                clock.now = Clock.at(LAST_TRACE + 150).now

        asyncio.run(run())
    store = Store.open(config.store)
    try:
        start = Clock.at(LAST_TRACE + 150 - 86_400 - 600).now
        filters = Filters(start, Clock.at(LAST_TRACE + 150).now, rule="sre-slow-database-query")
        report = build(store, filters, None)
    finally:
        store.close()
    rule = report.controls[0].rules[0]
    [gap] = rule.gaps
    assert gap.reason.startswith("skipped")
    assert gap.end - gap.start == timedelta(days=1) - timedelta(minutes=30) + timedelta(minutes=0)
    assert rule.coverage < 1


@needs_recordings
def test_backfill_interrupted_and_resumed(tmp_path: Path) -> None:
    rules_dir = tmp_path / "rules.d"
    rules_dir.mkdir()
    (rules_dir / "sre.yaml").write_text((RULES_D / "sre.yaml").read_text())
    db = tmp_path / "b.db"
    with TempoDouble() as tempo:
        tempo.push(dataset())
        path = write_settings(tmp_path, tempo_url=tempo.url, store=f"sqlite:///{db}", rules_dir=rules_dir,
                              schedule__every="1m", notifiers={"console": {"type": "log"}},
                              default_notifiers=["console"])
        args = [sys.executable, "-m", "checker", "backfill", "--config", str(path), "--rule",
                "sre-slow-database-query", "--from", str(FIRST_TRACE - 600), "--to", str(LAST_TRACE + 60)]
        tempo.inject(Fault(route="search", kind="timeout", delay=0.3, times=10_000))
        first = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
        store = Store.open(f"sqlite:///{db}")
        try:
            deadline = time.monotonic() + 60
            while len(store.evaluations()) < 3:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
            done = len(store.evaluations())
            tempo.clear_faults()
            second = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)  # noqa: S603
            assert 1 == second.returncode, second.stderr
            evaluations = store.evaluations()
            assert len(evaluations) > done
            starts = [e["window_start"] for e in evaluations]
            assert len(starts) == len(set(starts))
            assert all(e["backfill"] for e in evaluations)
            position = datetime.fromtimestamp(FIRST_TRACE - 600, UTC)
            for evaluation in evaluations:
                assert position == evaluation["window_start"]
                position = evaluation["window_end"]
            assert datetime.fromtimestamp(LAST_TRACE + 60, UTC) == position
            expected = {p for p in expected_pairs(dataset(), tmp_path, rules_dir)
                        if p[0] == "sre-slow-database-query"}
            assert expected == {(v.violation.rule_id, v.violation.trace_id) for v in store.violations()}
            assert [] == store.outbox.undelivered()  # no --notify: nothing to send
            again = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)  # noqa: S603
            assert 0 == again.returncode
            assert "0 windows evaluated" in again.stderr
            assert ledger.verify(store.engine).ok
        finally:
            store.close()


def test_a_backfill_over_evaluated_time_is_not_counted_twice(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'd.db'}")
    try:
        for rule in rules().values():
            store.record_rule(rule)
        fill(store)
        audit = rules()["audit"]
        store.start_checkpoint("backfill:audit", T0)
        for hour in range(24):  # day one again, as a backfill
            start = T0 + hour * HOUR
            store.commit(WindowRecord(audit, start, start + HOUR, start, 0.5, "ok", scope_size=10,
                                      backfill=True, checkpoint="backfill:audit"))
        rule = build(store, Filters(T0, T0 + 2 * 24 * HOUR, rule="audit"), None).controls[0].rules[0]
        assert 380 == rule.traces_in_scope
        assert 24 == rule.backfilled_windows
        assert 240 == rule.days[0].in_scope
    finally:
        store.close()


def test_rows_from_a_checker_older_than_the_ledger_are_chained_not_forked(tmp_path: Path) -> None:
    """During a rolling upgrade an old replica writes evaluations without a hash."""
    store = Store.open(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        fill(store)
        with store.engine.begin() as connection:
            connection.execute(text(
                "insert into evaluations (rule_id, rule_version, window_start, window_end, started_at, "
                "duration_seconds, outcome, scope_size, candidates, violations, new_violations, plan, "
                "checker_version, backfill) values ('audit', 'old', '2026-11-05 00:00:00.000000', "
                "'2026-11-05 01:00:00.000000', '2026-11-05 00:00:00.000000', 0.1, 'ok', 1, 0, 0, 0, 'S1', "
                "'0.0.9', 0)"))
        audit = rules()["audit"]
        store.start_checkpoint("late", T0)
        store.commit(WindowRecord(audit, T0, T0 + HOUR, T0, 0.1, "ok", checkpoint="late"))
        verdict = ledger.verify(store.engine)
        assert verdict.ok
        assert 43 == verdict.records
    finally:
        store.close()


# ----------------------------------------------------------------- settled verdicts: amendments
# The scenario of tests/test_settled.py (retraction, late violations, a confirmation), plus a
# violation in a window not settled yet: two rules, windows of a minute, settle 5m.
SETTLED_FROM = datetime.fromtimestamp(settled_kit.T - 120, UTC)  # the first provisional window
SETTLED_TO = datetime.fromtimestamp(settled_kit.T + 360, UTC)  # the second run's clock
SETTLED_PERIOD = ("--from", SETTLED_FROM.isoformat(), "--to", SETTLED_TO.isoformat())


def trace(n: int) -> str:
    return f"{n:032x}"


def settle_scenario(tmp_path: Path, url: str) -> str:
    """Run the daemon twice over late trace parts; returns the settings' store URL."""
    span, push, t = settled_kit.span, settled_kit.push, settled_kit.T
    clock = Clock.at(t)
    at = t - 100
    with Receiver(secret=settled_kit.SECRET) as receiver, \
            TempoDouble(now=lambda: clock.now.timestamp()) as tempo:  # noqa: PLW0108
        config = settled_kit.config(tmp_path, tempo, receiver, store=url)
        push(tempo, span(1, 1, "GET /patients", at), span(1, 2, "pii.access", at + 1, parent=1))
        push(tempo, span(2, 1, "GET /patients", at))
        push(tempo, span(3, 1, "GET /patients", at), span(3, 2, "pii.access", at + 1, parent=1))
        push(tempo, span(4, 1, "GET /upstream", at),
             *(span(4, n, "http.retry", at + n, parent=1) for n in (2, 3)))
        push(tempo, span(5, 1, "GET /patients", at), span(5, 2, "pii.access", at + 1, parent=1),
             span(5, 3, "audit.log", at + 2, parent=1))  # 5: compliant from the start
        settled_kit.run_once(config, clock)
        push(tempo, span(1, 3, "audit.log", at + 2, parent=1))  # 1: retracted
        push(tempo, span(2, 2, "pii.access", at + 1, parent=1))  # 2: a late violation
        push(tempo, *(span(4, n, "http.retry", at + n, parent=1) for n in (4, 5)))  # 4: late
        # 6: in a window the second run judges provisionally, not settled at the report's end.
        push(tempo, span(6, 1, "GET /patients", t + 250), span(6, 2, "pii.access", t + 251, parent=1))
        clock.advance(minutes=6)
        settled_kit.run_once(config, clock)
    return config.store


@pytest.fixture(params=STORE_KINDS)
def settled(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with store_url(request.param, tmp_path) as url:
        opened = Store.open(settle_scenario(tmp_path, url))
        yield opened
        opened.close()


def settling_record(store: Store) -> int:
    """The final pass of rule 'audited' that amends its provisional windows."""
    [found] = [e["id"] for e in store.evaluations("audited") if e["amendments"] is not None]
    return int(found)


def recorder_of(store: Store, trace_id: str) -> int:
    [found] = [s.evaluation_id for s in store.violations() if s.violation.trace_id == trace_id]
    return found


class TestAmendments:
    def report(self, store: Store, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
               tmp_path: Path, fmt: str = "json") -> str:
        monkeypatch.setenv("BETRACE_STORE", store.engine.url.render_as_string(hide_password=False))
        monkeypatch.chdir(tmp_path)
        assert 0 == main(["evidence", "report", *SETTLED_PERIOD, "--control", "164.312(b)", "--format", fmt])
        return capsys.readouterr().out

    def test_final_verdicts_counted_once(self, settled: Store, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        report = json.loads(self.report(settled, capsys, monkeypatch, tmp_path))
        [control] = report["controls"]
        assert "HIPAA:164.312(b)" == control["control"]
        [rule] = control["rules"]
        assert (480, 480, 1.0, []) == (rule["expected_seconds"], rule["covered_seconds"], rule["coverage"],
                                       rule["gaps"])
        # 2 provisional windows settled by one final pass, 1 judged final at once, 5 not settled yet.
        assert (8, 5, 0) == (rule["windows_evaluated"], rule["windows_provisional"],
                             rule["windows_incomplete"])
        # The final pass's scope (4: trace 2 joined it late), not the provisional windows' (3) too,
        # and trace 6's window.
        assert 5 == rule["traces_in_scope"]
        assert [(trace(3), "confirmed"), (trace(2), "confirmed"), (trace(6), "provisional")] == [
            (v["trace_id"], v["status"]) for v in rule["violations"]]
        assert 1 == rule["provisional_violations"]
        amendments = rule["amendments"]
        assert [trace(2)] == [v["trace_id"] for v in amendments["late"]]
        settler = settling_record(settled)
        assert [(trace(1), "retracted", "audit.log arrived later", settler)] == [
            (v["trace_id"], v["status"], v["retraction_reason"], v["settled_by"])
            for v in amendments["retracted"]]
        assert {"late": 1, "retracted": 1, "confirmed": 1} == amendments["totals"]
        assert {"windows_evaluated": 8, "windows_provisional": 5, "violations": 3,
                "provisional_violations": 1, "late": 1, "retracted": 1, "confirmed": 1,
                "never_applied": 0} == control["totals"]
        assert 1.0 == control["coverage"]
        [day] = rule["daily"]
        assert {"day": SETTLED_FROM.date().isoformat(), "windows": 8, "traces_in_scope": 5, "violations": 3,
                "compliance_rate": pytest.approx(1 - 3 / 5)} == day
        assert control["daily"] == rule["daily"]
        assert report["ledger"]["intact"]

    def test_csv_holds_the_same_figures(self, settled: Store, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        rule = json.loads(self.report(settled, capsys, monkeypatch, tmp_path))["controls"][0]["rules"][0]
        [total, *days] = list(csv.DictReader(io.StringIO(self.report(settled, capsys, monkeypatch, tmp_path,
                                                                     "csv"))))
        assert (rule["windows_evaluated"], rule["windows_provisional"], rule["traces_in_scope"],
                len(rule["violations"]), rule["provisional_violations"], rule["amendments"]["totals"]["late"],
                rule["amendments"]["totals"]["retracted"], rule["amendments"]["totals"]["confirmed"]) == (
            int(total["windows_evaluated"]), int(total["windows_provisional"]), int(total["traces_in_scope"]),
            int(total["violations"]), int(total["provisional_violations"]), int(total["late_violations"]),
            int(total["retracted_violations"]), int(total["confirmed_by_final"]))
        assert [(d["day"], d["windows"], d["violations"]) for d in rule["daily"]] == [
            (r["day"], int(r["windows_evaluated"]), int(r["violations"])) for r in days]

    def test_markdown_and_html_list_the_amendments(self, settled: Store, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        for fmt in ("md", "html"):
            body = self.report(settled, capsys, monkeypatch, tmp_path, fmt)
            for words in (("Coverage 100.00 %: 8 windows evaluated (5 not settled yet); 3 violations "
                           "(1 provisional); amendments: 1 late violations, 1 retracted, 1 confirmed."),
                          "Late violations (amendments)", "Retracted (amendments, not violations)",
                          "retracted: audit.log arrived later", "provisional: not final yet",
                          "5 windows not settled yet"):
                assert words in body, (fmt, words)

    def test_verify_covers_the_amendments(self, settled: Store) -> None:
        assert ledger.verify(settled.engine).ok

    @pytest.mark.parametrize("tamper", ["retracted to confirmed", "another reason", "late retracted",
                                        "amendment edited"])
    def test_a_rewritten_amendment_is_named(self, settled: Store, tamper: str) -> None:
        settler = settling_record(settled)
        retracted = {"trace": trace(1)}
        reset = "update violations set status = 'confirmed', retraction_reason = null where trace_id = :trace"
        reason = "update violations set retraction_reason = 'a test trace' where trace_id = :trace"
        withdrawn = "update violations set status='retracted', retraction_reason='x' where trace_id = :trace"
        document = json.dumps({"provisional": [], "confirmed": [], "retracted": {}, "late": []})
        statements = {
            "retracted to confirmed": (reset, retracted),
            "another reason": (reason, retracted),
            "late retracted": (withdrawn, {"trace": trace(2)}),
            "amendment edited": ("update evaluations set amendments = :doc where id = :id",
                                 {"id": settler, "doc": document}),
        }
        with settled.engine.begin() as connection:
            statement, values = statements[tamper]
            connection.execute(text(statement), values)
        verdict = ledger.verify(settled.engine)
        assert settler == verdict.broken_at
        words = "was altered" if tamper == "amendment edited" else "is contradicted"
        assert f"record {settler} {words}" in (verdict.problem or "")

    def test_a_provisional_verdict_rewritten_as_final_is_named(
            self, settled: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str],
            monkeypatch: pytest.MonkeyPatch) -> None:
        with settled.engine.begin() as connection:
            connection.execute(text("update violations set status = 'confirmed' where trace_id = :trace"),
                               {"trace": trace(6)})
        recorder = recorder_of(settled, trace(6))
        monkeypatch.setenv("BETRACE_STORE", settled.engine.url.render_as_string(hide_password=False))
        monkeypatch.chdir(tmp_path)
        assert 1 == main(["evidence", "verify"])
        out = capsys.readouterr().out
        assert f"ledger BROKEN at record {recorder}: record {recorder} is contradicted" in out
        assert f"the violation of trace {trace(6)}" in out
        assert "stored as confirmed, but the ledger says provisional" in out


def test_an_amendment_of_no_provisional_record_is_named(tmp_path: Path) -> None:
    """A final pass amends earlier provisional records of its rule, each once; the chain checks it."""
    store = Store.open(f"sqlite:///{tmp_path / 'a.db'}")
    try:
        fill(store)  # records 1.. are final (judged once)
        store.start_checkpoint("settle:audit", T0)
        committed = store.commit(WindowRecord(rules()["audit"], T0, T0 + HOUR, T0, 0.1, "ok",
                                              checkpoint="settle:audit", amendment=Amendment((5,))))
        verdict = ledger.verify(store.engine)
        assert committed.evaluation_id == verdict.broken_at
        assert "amends record 5, which is not an earlier provisional record" in (verdict.problem or "")
    finally:
        store.close()


def oscal_report(store: Store, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                 tmp_path: Path, *args: str) -> dict:
    """``evidence report --format oscal``, its document checked by trestle's OSCAL 1.1.3 models."""
    monkeypatch.setenv("BETRACE_STORE", store.engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("BETRACE_TRACE_URL_TEMPLATE", "https://grafana/t/{trace_id}")
    monkeypatch.chdir(tmp_path)
    assert 0 == main(["evidence", "report", *args, "--format", "oscal"])
    document = json.loads(capsys.readouterr().out)
    AssessmentResults.parse_obj(document["assessment-results"])  # raises on anything OSCAL refuses
    return document["assessment-results"]


def props(item: dict, group: str | None = None) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for prop in item.get("props", []):
        if prop.get("group") == group:
            found.setdefault(prop["name"], []).append(prop["value"])
    return found


def assert_references_resolve(document: dict) -> None:
    """What OSCAL's schema cannot check: unique UUIDs, and every reference names one of them."""
    [result] = document["results"]
    uuids = [document["uuid"], result["uuid"], *(o["uuid"] for o in result.get("observations", [])),
             *(f["uuid"] for f in result.get("findings", [])),
             *(r["uuid"] for r in document["back-matter"]["resources"])]
    assert len(uuids) == len(set(uuids))
    assert document["import-ap"]["href"].removeprefix("#") in uuids
    for finding in result.get("findings", []):
        for related in finding["related-observations"]:
            assert related["observation-uuid"] in uuids


class TestOscal:
    def test_the_report_as_assessment_results(self, store: Store, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """Several controls, one with violations, one whose rule never applied, one never evaluated."""
        never_applied(store, "deploy")
        figures = TestReportFigures().report_json(store, capsys, monkeypatch, tmp_path)
        document = oscal_report(store, capsys, monkeypatch, tmp_path, *PERIOD)
        assert_references_resolve(document)
        assert "1.1.3" == document["metadata"]["oscal-version"]
        assert figures["ledger"]["head"] == document["metadata"]["version"]
        [result] = document["results"]
        assert ("2026-11-01T00:00:00+00:00", "2026-11-03T00:00:00+00:00") == (result["start"], result["end"])
        controls = ["ISO27001:A.12.1.2", "SOC2:CC6.7", "SOC2:CC8.1"]
        assert ["ISO27001_A.12.1.2", "SOC2_CC6.7", "SOC2_CC8.1"] == [
            c["control-id"] for c in result["reviewed-controls"]["control-selections"][0]["include-controls"]]
        observations = {o["title"]: o for o in result["observations"]}
        assert controls == list(observations)
        for control in figures["controls"]:  # the report's own figures, not computed again
            seen = props(observations[control["control"]])
            assert [str(control["coverage"])] == seen["coverage"]
            assert [str(control["totals"]["windows_evaluated"])] == seen["windows-evaluated"]
            assert [str(control["totals"]["never_applied"])] == seen["rules-never-applied"]
            for rule in control["rules"]:
                mine = props(observations[control["control"]], rule["rule_id"])
                assert [v["version"] for v in rule["versions"]] == mine["rule-version"]
                assert [str(rule["traces_in_scope"])] == mine["traces-in-scope"]
                assert [str(len(rule["gaps"]))] == mine["gaps"]
        audit = observations["SOC2:CC6.7"]
        assert audit["description"].startswith("Coverage 79.17 %: 38 windows evaluated")
        assert "skipped: the daemon was down longer than max_catchup" in audit["description"]
        assert [(f"https://grafana/t/{n:032x}", "confirmed") for n in (1, 2)] == [
            (e["href"], props(e)["status"][0]) for e in audit["relevant-evidence"]]
        assert ["true"] == props(observations["SOC2:CC8.1"], "deploy")["never-applied"]
        assert "No evidence: the rule never applied" in observations["SOC2:CC8.1"]["description"]
        assert "relevant-evidence" not in observations["SOC2:CC8.1"]
        [finding] = result["findings"]  # only the control with violations
        assert ("objective-id", "SOC2_CC6.7", "not-satisfied") == (
            finding["target"]["type"], finding["target"]["target-id"], finding["target"]["status"]["state"])
        assert [audit["uuid"]] == [r["observation-uuid"] for r in finding["related-observations"]]
        [_, head] = document["back-matter"]["resources"]
        assert {"ledger-head": [figures["ledger"]["head"]], "ledger-records": ["45"],
                "ledger-intact": ["true"], "verify-command": ["betrace evidence verify"],
                "signed-checkpoints": ["0"]} == props(head)

    def test_the_same_uuids_when_run_again(self, store: Store, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """Like every format it carries its generation time; everything else is the same, UUIDs included."""
        first = oscal_report(store, capsys, monkeypatch, tmp_path, *PERIOD)
        again = oscal_report(store, capsys, monkeypatch, tmp_path, *PERIOD)
        assert first["metadata"].pop("last-modified") != again["metadata"].pop("last-modified")
        assert first == again
        other = oscal_report(store, capsys, monkeypatch, tmp_path, *PERIOD, "--framework", "SOC2")
        assert first["uuid"] != other["uuid"]
        assert first["results"][0]["uuid"] != other["results"][0]["uuid"]

    def test_amendments(self, settled: Store, capsys: pytest.CaptureFixture[str],
                        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        document = oscal_report(settled, capsys, monkeypatch, tmp_path, *SETTLED_PERIOD,
                                "--control", "164.312(b)")
        assert_references_resolve(document)
        [observation] = document["results"][0]["observations"]
        seen = props(observation)
        assert {"violations": ["3"], "provisional-violations": ["1"], "late-violations": ["1"],
                "retracted-violations": ["1"], "confirmed-by-final": ["1"], "windows-provisional": ["5"]} == {
            k: seen[k] for k in ("violations", "provisional-violations", "late-violations",
                                 "retracted-violations", "confirmed-by-final", "windows-provisional")}
        evidence = {props(e)["trace-id"][0]: props(e) for e in observation["relevant-evidence"]}
        assert {trace(3): "confirmed", trace(2): "confirmed", trace(6): "provisional",
                trace(1): "retracted"} == {t: p["status"][0] for t, p in evidence.items()}
        assert ["true"] == evidence[trace(2)]["late"]
        assert "late" not in evidence[trace(3)]
        assert "amendments: 1 late violations, 1 retracted, 1 confirmed" in observation["description"]
        [finding] = document["results"][0]["findings"]
        assert "HIPAA_164.312_b_" == finding["target"]["target-id"]

    def test_out_file_and_the_errors_of_every_format(self, store: Store, capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        monkeypatch.setenv("BETRACE_STORE", store.engine.url.render_as_string(hide_password=False))
        monkeypatch.chdir(tmp_path)
        out = tmp_path / "ar.json"
        assert 0 == main(["evidence", "report", *PERIOD, "--format", "oscal", "--out", str(out)])
        assert f"written to {out}" in capsys.readouterr().err
        AssessmentResults.parse_obj(json.loads(out.read_text())["assessment-results"])
        empty = ("--from", "2026-11-01T00:00:00Z", "--to", "2026-11-01T00:00:00Z")
        missing = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}"
        for args, url, code in ((empty, None, 2), (PERIOD, missing, 3)):
            if url:
                monkeypatch.setenv("BETRACE_STORE", url)
            said = []
            for fmt in ("json", "oscal"):
                assert code == main(["evidence", "report", *args, "--format", fmt])
                said.append(capsys.readouterr())
            assert said[0] == said[1]
            assert said[0].err.startswith("error: ")

    def test_without_trestle_the_error_names_the_extra(self, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(sys.modules, "trestle.oscal", None)  # what an install without the extra sees
        monkeypatch.delitem(sys.modules, "checker.evidence.oscal", raising=False)
        monkeypatch.setenv("BETRACE_STORE", f"sqlite:///{tmp_path / 'b.db'}")
        monkeypatch.chdir(tmp_path)
        out = tmp_path / "ar.json"
        assert 2 == main(["evidence", "report", *PERIOD, "--format", "oscal", "--out", str(out)])
        assert "pip install 'betrace-checker[oscal]'" in capsys.readouterr().err
        assert not out.exists()
