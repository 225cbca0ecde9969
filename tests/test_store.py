"""The store, on SQLite and on PostgreSQL: schema, checkpoints, idempotent violations, locks."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from stores import STORE_KINDS, store_url

from checker.engine.violation import Forbidden, SpanRef, Violation
from checker.rules.load import load_text
from checker.store import CheckpointMoved, Store, StoreError, WindowRecord
from checker.store.locks import lock_key
from checker.store.schema import metadata

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from checker.rules.rule import Rule

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
RULE_YAML = """
rules:
  - id: audit
    name: PII access is audited
    severity: high
    compliance_frameworks: [SOC2]
    controls: [CC6.7]
    condition: when { pii.access } always { audit.log }
"""


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with store_url(request.param, tmp_path) as url:
        opened = Store.open(url)
        yield opened
        opened.close()


def rule(yaml_text: str = RULE_YAML) -> Rule:
    return load_text(yaml_text, "rules.d/audit.yaml").rules[0]


def violation(trace_id: str, rule_id: str = "audit") -> Violation:
    return Violation(rule_id=rule_id, rule_name="PII access is audited", severity="high",
                     trace_id=trace_id, reason="pii.access without audit.log", frameworks=("SOC2",),
                     controls=("CC6.7",), trigger_spans=(SpanRef("pii.access", "00f067aa0ba902b7"),),
                     missing=("audit.log",), forbidden=(Forbidden("x", (SpanRef("x", "1"),)),),
                     root_service="portal", root_name="GET /patients",
                     start_time_unix_nano=1_795_729_000 * 10**9,
                     labels={"team": "privacy"})


def window(index: int, outcome: str = "ok", violations: tuple[Violation, ...] = ()) -> WindowRecord:
    start = T0 + index * MINUTE
    return WindowRecord(rule(), start, start + MINUTE, start, 0.25, outcome,  # type: ignore[arg-type]
                        scope_size=10, candidates=len(violations), plan="S1 scope {...}",
                        violations=violations)


class TestSchema:
    def test_migrations_build_exactly_the_declared_schema(self, store: Store) -> None:
        with store.engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), metadata)
        assert [] == diff
        assert {"rules", "evaluations", "violations", "checkpoints", "outbox", "alembic_version"} <= set(
            inspect(store.engine).get_table_names())

    def test_reopening_runs_no_migration_twice_and_keeps_data(self, store: Store) -> None:
        store.start_checkpoint("audit", T0)
        again = Store.open(store.engine.url.render_as_string(hide_password=False))
        try:
            assert T0 == again.checkpoint("audit")
            with again.engine.connect() as connection:
                assert ["0007"] == list(connection.scalars(text("select version_num from alembic_version")))
        finally:
            again.close()

    def test_sqlite_uses_wal(self, tmp_path: Path) -> None:
        store = Store.open(f"sqlite:///{tmp_path / 'x.db'}")
        try:
            with store.engine.connect() as connection:
                assert "wal" == connection.scalar(text("pragma journal_mode"))
        finally:
            store.close()

    def test_unreachable_store_is_a_clear_error_without_password(self) -> None:
        with pytest.raises(StoreError) as caught:
            Store.open("postgresql://admin:s3cret@127.0.0.1:1/nowhere")
        message = str(caught.value)
        assert "cannot open store postgresql+psycopg://admin:***@127.0.0.1:1/nowhere" in message
        assert "s3cret" not in message

    def test_unwritable_sqlite_path_is_a_clear_error(self, tmp_path: Path) -> None:
        with pytest.raises(StoreError, match=r"cannot open store sqlite:///.*missing/dir/x\.db"):
            Store.open(f"sqlite:///{tmp_path / 'missing' / 'dir' / 'x.db'}")


class TestRules:
    def test_each_version_recorded_once(self, store: Store) -> None:
        first = rule()
        assert store.record_rule(first)
        assert not store.record_rule(first)
        changed = rule(RULE_YAML.replace("audit.log }", "audit.log or audit.event }"))
        assert changed.version != first.version
        assert store.record_rule(changed)
        with store.engine.connect() as connection:
            rows = connection.execute(text("select rule_id, version, source, controls from rules")).all()
        assert {(r.rule_id, r.version) for r in rows} == {("audit", first.version),
                                                          ("audit", changed.version)}
        assert all(r.source.startswith("rules.d/audit.yaml:") for r in rows)


class TestCheckpoints:
    def test_first_sight_sets_the_start_once(self, store: Store) -> None:
        assert store.checkpoint("audit") is None
        assert T0 == store.start_checkpoint("audit", T0)
        assert T0 == store.start_checkpoint("audit", T0 + MINUTE)  # already there: unchanged

    def test_commit_advances_from_start_to_end(self, store: Store) -> None:
        store.start_checkpoint("audit", T0)
        store.commit(window(0))
        store.commit(window(1))
        assert T0 + 2 * MINUTE == store.checkpoint("audit")
        assert [T0, T0 + MINUTE] == [e["window_start"] for e in store.evaluations("audit")]

    def test_a_window_committed_twice_is_refused_and_writes_nothing(self, store: Store) -> None:
        store.start_checkpoint("audit", T0)
        store.commit(window(0, "violations", (violation("a" * 32),)))
        with pytest.raises(CheckpointMoved, match="already committed"):
            store.commit(window(0, "violations", (violation("b" * 32),)))
        assert 1 == len(store.evaluations())
        assert ["a" * 32] == [v.violation.trace_id for v in store.violations()]

    def test_a_window_out_of_order_is_refused(self, store: Store) -> None:
        store.start_checkpoint("audit", T0)
        with pytest.raises(CheckpointMoved):
            store.commit(window(1))
        assert T0 == store.checkpoint("audit")

    def test_failed_evaluations_are_recorded_but_do_not_advance(self, store: Store) -> None:
        store.start_checkpoint("audit", T0)
        failed = WindowRecord(rule(), T0, T0 + MINUTE, T0, 1.0, "failed", error="Tempo answered 503")
        store.commit(failed)
        store.commit(failed)
        assert T0 == store.checkpoint("audit")
        assert ["failed", "failed"] == [e["outcome"] for e in store.evaluations()]
        assert "Tempo answered 503" == store.evaluations()[0]["error"]

    def test_skipped_span_advances_and_is_recorded(self, store: Store) -> None:
        store.start_checkpoint("audit", T0)
        store.commit(WindowRecord(rule(), T0, T0 + timedelta(days=2), T0, 0.0, "skipped", error="backlog"))
        assert T0 + timedelta(days=2) == store.checkpoint("audit")
        assert "skipped" == store.evaluations()[0]["outcome"]

    def test_concurrent_commits_of_one_window_land_once(self, store: Store) -> None:
        store.start_checkpoint("audit", T0)
        outcomes: list[str] = []
        barrier = threading.Barrier(4)

        def commit() -> None:
            barrier.wait()
            try:
                store.commit(window(0, "violations", (violation("c" * 32),)))
                outcomes.append("committed")
            except CheckpointMoved:
                outcomes.append("refused")

        threads = [threading.Thread(target=commit) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert ["committed", "refused", "refused", "refused"] == sorted(outcomes)
        assert 1 == len(store.evaluations())
        assert 1 == len(store.violations())


class TestViolations:
    def test_refinding_a_trace_never_duplicates_it(self, store: Store) -> None:
        store.start_checkpoint("audit", T0)
        first = store.commit(window(0, "violations", (violation("a" * 32), violation("b" * 32))))
        second = store.commit(window(1, "violations", (violation("b" * 32), violation("c" * 32))))
        assert ["a" * 32, "b" * 32] == [v.trace_id for v in first.new_violations]
        assert ["c" * 32] == [v.trace_id for v in second.new_violations]
        assert 3 == len(store.violations())
        evaluations = store.evaluations()
        assert [2, 2] == [e["violations"] for e in evaluations]
        assert [2, 1] == [e["new_violations"] for e in evaluations]
        stored = {v.violation.trace_id: v.evaluation_id for v in store.violations()}
        assert stored["b" * 32] == first.evaluation_id

    def test_round_trip_keeps_every_field(self, store: Store) -> None:
        store.start_checkpoint("audit", T0)
        original = violation("d" * 32)
        store.commit(window(0, "violations", (original,)))
        [stored] = store.violations()
        assert original == stored.violation
        assert stored.found_at.tzinfo is not None

    def test_filters_by_rule_and_time(self, store: Store) -> None:
        other = rule(RULE_YAML.replace("id: audit", "id: other"))
        store.start_checkpoint("audit", T0)
        store.start_checkpoint("other", T0)
        store.commit(window(0, "violations", (violation("a" * 32),)))
        store.commit(WindowRecord(other, T0, T0 + MINUTE, T0, 0.1, "violations",
                                  violations=(violation("a" * 32, "other"),)))
        assert 2 == len(store.violations())
        assert ["other"] == [v.violation.rule_id for v in store.violations(rule_id="other")]
        assert [] == store.violations(since=datetime.now(UTC) + timedelta(hours=1))
        assert 2 == len(store.violations(since=datetime.now(UTC) - timedelta(hours=1)))


class TestLocks:
    @pytest.mark.external_service
    def test_postgres_lock_is_exclusive_until_released(self, tmp_path: Path) -> None:
        with store_url("postgres", tmp_path) as url:
            one, two = Store.open(url), Store.open(url)
            try:
                held = one.try_lock("audit")
                assert held is not None
                assert two.try_lock("audit") is None
                other = two.try_lock("another-rule")
                assert other is not None
                other.release()
                held.release()
                again = two.try_lock("audit")
                assert again is not None
                again.release()
            finally:
                one.close()
                two.close()

    @pytest.mark.parametrize("kind", STORE_KINDS)
    def test_many_locks_take_the_free_ones_on_one_connection(self, kind: str, tmp_path: Path) -> None:
        with store_url(kind, tmp_path) as url:
            one, two = Store.open(url), Store.open(url)
            try:
                first = one.try_lock_many(["a", "b"])
                assert {"a", "b"} == first.held
                second = two.try_lock_many(["a", "b", "c"])
                assert {"c"} == second.held  # the others are left to their holder
                if kind == "postgres":  # one session per group of locks, not one per rule
                    with two.engine.connect() as connection:
                        schema = connection.scalar(text("select current_schema()"))
                        keys = [lock_key(f"{schema}/{name}") & 0xFFFFFFFFFFFFFFFF for name in "abc"]
                        sessions = {pid for key in keys for pid in connection.scalars(text(
                            "select pid from pg_locks where locktype = 'advisory' and objsubid = 1 "
                            "and classid::bigint = :high and objid::bigint = :low"),
                            {"high": key >> 32, "low": key & 0xFFFFFFFF})}
                    assert 2 == len(sessions)
                first.release()
                second.release()
                third = two.try_lock_many(["a", "b", "c"])
                assert {"a", "b", "c"} == third.held
                third.release()
            finally:
                one.close()
                two.close()

    @pytest.mark.external_service
    def test_stores_in_two_schemas_of_one_database_never_share_a_lock(self, tmp_path: Path) -> None:
        with store_url("postgres", tmp_path) as first, store_url("postgres", tmp_path) as second:
            one, two = Store.open(first), Store.open(second)
            try:
                held = one.try_lock("audit")
                other = two.try_lock("audit")
                assert held is not None
                assert other is not None
                other.release()
                held.release()
            finally:
                one.close()
                two.close()

    @pytest.mark.external_service
    def test_a_dead_holder_loses_its_lock(self, tmp_path: Path) -> None:
        with store_url("postgres", tmp_path) as url:
            one, two = Store.open(url), Store.open(url)
            try:
                assert one.try_lock("audit") is not None
                with two.engine.connect() as connection:  # the holder's process dies: its session ends
                    schema = connection.scalar(text("select current_schema()"))
                    key = lock_key(f"{schema}/audit") & 0xFFFFFFFFFFFFFFFF
                    killed = connection.scalars(text(
                        "select pg_terminate_backend(pid) from pg_locks where locktype = 'advisory' "
                        "and classid::bigint = :high and objid::bigint = :low and objsubid = 1"),
                        {"high": key >> 32, "low": key & 0xFFFFFFFF}).all()
                assert [True] == killed
                lock = two.try_lock("audit")
                assert lock is not None
                lock.release()
            finally:
                two.close()
