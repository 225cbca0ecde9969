"""Signed ledger checkpoints: keys, the notary, witnesses, and verify telling a rewrite from a chain."""

from __future__ import annotations

import asyncio
import json
import stat
import time
from typing import TYPE_CHECKING

import pytest
from daemon_kit import dataset, write_settings
from receivers import Receiver
from sqlalchemy import select, text, update
from stores import STORE_KINDS
from tempo_double import TempoDouble
from test_evidence import HOUR, PERIOD, T0, filled_store, rules, settle_scenario, settling_record

from checker import signing
from checker.cli import main
from checker.config import load_settings
from checker.daemon.factory import open_daemon
from checker.evidence import attest
from checker.evidence.notary import Notary
from checker.evidence.report_signature import check_report, sign_report
from checker.evidence.vouching import vouching
from checker.store import Store, WindowRecord, ledger
from checker.store.ledger_checkpoints import Head, SignedCheckpoint, add, payload, stored
from checker.store.retention import first_hash
from checker.store.schema import evaluations

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    """(private, public) key files."""
    private = tmp_path / "signing.key"
    return private, signing.generate(private)


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with filled_store(request.param, tmp_path) as opened:
        yield opened


def notary(store: Store, private: Path, **witnesses: object) -> Notary:
    return Notary(store, signing.load_private(private), **witnesses)  # type: ignore[arg-type]


def one_more_record(store: Store) -> None:
    audit = rules()["audit"]
    start = store.checkpoint("audit") or T0
    store.commit(WindowRecord(audit, start, start + HOUR, start, 0.5, "ok", scope_size=3, candidates=0,
                              plan="S1 scope { }"))


def rewrite_whole_chain(store: Store, record: int) -> None:
    """What someone who can write the database does: alter a record and recompute every hash after it."""
    with store.engine.begin() as connection:
        connection.execute(update(evaluations).where(evaluations.c.id == record).values(scope_size=0))
        ids = list(connection.scalars(select(evaluations.c.id).where(evaluations.c.id >= record)
                                      .order_by(evaluations.c.id)))
        for row_id in ids:
            ledger._link_row(connection, row_id)  # the forger has the code too


class TestKeys:
    def test_keygen_writes_an_owner_only_pair_and_never_overwrites(
            self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        private = tmp_path / "k"
        assert 0 == main(["evidence", "keygen", "--out", str(private)])
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
        key_id = signing.key_id(signing.load_public(tmp_path / "k.pub"))
        assert key_id in capsys.readouterr().out
        assert key_id == signing.key_id(signing.load_public(private))  # the private file gives its half
        assert 2 == main(["evidence", "keygen", "--out", str(private)])
        assert "exists" in capsys.readouterr().err

    def test_a_bad_key_file_is_named(self, tmp_path: Path) -> None:
        bad = tmp_path / "bad.pem"
        bad.write_text("not a key")
        with pytest.raises(Exception, match=r"bad\.pem is not a PEM"):
            signing.load_private(bad)
        with pytest.raises(Exception, match="cannot read key file"):
            signing.load_public(tmp_path / "missing.pem")


class TestNotary:
    def test_signs_the_head_once_until_it_moves(self, store: Store, keys: tuple[Path, Path]) -> None:
        signer = notary(store, keys[0])
        first = signer.seal("manual")
        assert first is not None
        assert first.fields["records"] == ledger.verify(store.engine).records
        assert first.head == ledger.verify(store.engine).head
        assert signer.seal("periodic") is None  # nothing new
        one_more_record(store)
        second = signer.seal("periodic")
        assert second is not None
        assert second.last_record > first.last_record
        assert [first, second] == stored(store.engine)

    def test_an_empty_ledger_has_nothing_to_sign(self, tmp_path: Path, keys: tuple[Path, Path]) -> None:
        with Store.open(f"sqlite:///{tmp_path / 'empty.db'}") as empty:
            assert notary(empty, keys[0]).seal("manual") is None

    def test_witnesses_get_every_checkpoint_and_a_failing_one_loses_nothing(
            self, store: Store, keys: tuple[Path, Path], tmp_path: Path) -> None:
        witness_file = tmp_path / "witness.jsonl"
        with Receiver() as receiver:
            signer = notary(store, keys[0], witness_file=witness_file, witness_url=receiver.url + "/witness")
            sealed = asyncio.run(signer.checkpoint("manual"))
            receiver.fail_with(500)
            one_more_record(store)
            problems = asyncio.run(signer.witness(signer.seal("periodic")))  # type: ignore[arg-type]
        assert sealed is not None
        assert [sealed.to_json()] == [r.json for r in receiver.accepted()]
        assert ["witness_url (host 127.0.0.1): HTTP 500"] == problems
        assert 2 == len(stored(store.engine))  # stored whatever the witness said
        assert [sealed, *stored(store.engine)[1:]] == attest.witnessed(witness_file)


class TestAttest:
    def test_an_intact_ledger_and_its_unsigned_tail(self, store: Store, keys: tuple[Path, Path]) -> None:
        notary(store, keys[0]).seal("manual")
        one_more_record(store)
        one_more_record(store)
        found = attest.attest(store.engine, [signing.load_public(keys[1])])
        assert found.ok
        assert (1, 1) == (found.checkpoints, found.good)
        assert 2 == found.unsigned_records

    def test_a_chain_rewritten_whole_verifies_as_a_chain_but_not_against_its_checkpoint(
            self, store: Store, keys: tuple[Path, Path]) -> None:
        notary(store, keys[0]).seal("manual")
        rewrite_whole_chain(store, 5)
        assert ledger.verify(store.engine).ok  # the hash chain alone cannot tell
        found = attest.attest(store.engine, [signing.load_public(keys[1])])
        assert not found.ok
        assert "rewritten at or before record" in found.problems[0]

    def test_a_forged_checkpoint_is_caught(self, store: Store, keys: tuple[Path, Path],
                                           tmp_path: Path) -> None:
        signing.generate(tmp_path / "forger.key")
        rewrite_whole_chain(store, 5)
        notary(store, tmp_path / "forger.key").seal("manual")  # the forger signs the rewritten head
        found = attest.attest(store.engine, [signing.load_public(keys[1])])
        assert not found.ok
        assert "has no valid signature by key" in found.problems[0]
        assert 0 == found.good

    def test_a_checkpoint_deleted_from_the_store_is_caught_by_its_witness(
            self, store: Store, keys: tuple[Path, Path], tmp_path: Path) -> None:
        witness_file = tmp_path / "witness.jsonl"
        asyncio.run(notary(store, keys[0], witness_file=witness_file).checkpoint("manual"))
        with store.engine.begin() as connection:
            connection.execute(text("delete from ledger_checkpoints"))
        rewrite_whole_chain(store, 5)
        found = attest.attest(store.engine, [signing.load_public(keys[1])], attest.witnessed(witness_file))
        assert not found.ok
        assert any("not in the store" in p for p in found.problems)
        assert any("rewritten" in p for p in found.problems)

    def test_records_deleted_after_a_checkpoint(self, store: Store, keys: tuple[Path, Path]) -> None:
        sealed = notary(store, keys[0]).seal("manual")
        assert sealed is not None
        with store.engine.begin() as connection:
            gone = {"id": sealed.last_record}
            connection.execute(text("delete from violations where evaluation_id >= :id"), gone)
            connection.execute(text("delete from evaluations where id >= :id"), gone)
        found = attest.attest(store.engine, [signing.load_public(keys[1])])
        assert ["records were deleted"] == [p.rpartition(": ")[2] for p in found.problems]

    def test_a_witness_file_line_that_is_not_a_checkpoint_is_named(self, tmp_path: Path) -> None:
        path = tmp_path / "w.jsonl"
        path.write_text('{"payload": "{}", "signature": "x"}\n')
        with pytest.raises(Exception, match=r"w.jsonl:1: not a signed checkpoint payload"):
            attest.witnessed(path)


class TestCli:
    def config(self, tmp_path: Path, store: Store, **evidence: str) -> Path:
        return write_settings(tmp_path, tempo_url="http://127.0.0.1:9", store=store.url, evidence=evidence)

    def test_checkpoint_then_verify(self, store: Store, keys: tuple[Path, Path], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
        path = self.config(tmp_path, store, signing_key=str(keys[0]), witness_file=str(tmp_path / "w.jsonl"))
        assert 0 == main(["evidence", "checkpoint", "--config", str(path)])
        assert "signed the head at record" in capsys.readouterr().out
        assert 0 == main(["evidence", "verify", "--config", str(path)])
        assert "1 signed checkpoints stored, not checked" in capsys.readouterr().out
        assert 0 == main(["evidence", "verify", "--config", str(path), "--public-key", str(keys[1]),
                          "--witness", str(tmp_path / "w.jsonl")])
        out = capsys.readouterr().out
        assert "signed checkpoints: 1 of 1 hold" in out
        assert "0 records chained since" in out
        rewrite_whole_chain(store, 7)
        assert 1 == main(["evidence", "verify", "--config", str(path), "--public-key", str(keys[1])])
        assert "checkpoint BROKEN: the ledger was rewritten" in capsys.readouterr().out

    def test_checkpoint_needs_a_key_and_a_witness_needs_a_public_key(
            self, store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        path = self.config(tmp_path, store)
        assert 2 == main(["evidence", "checkpoint", "--config", str(path)])
        assert "no evidence.signing_key" in capsys.readouterr().err
        (tmp_path / "w.jsonl").write_text("")
        witness = ["--witness", str(tmp_path / "w.jsonl")]
        assert 2 == main(["evidence", "verify", "--config", str(path), *witness])

    def test_a_witness_without_a_key_is_a_config_error(self, store: Store, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
        path = self.config(tmp_path, store, witness_file=str(tmp_path / "w.jsonl"))
        assert 2 == main(["evidence", "verify", "--config", str(path)])
        assert "set signing_key too" in capsys.readouterr().err

    def test_a_failing_witness_is_exit_3(self, store: Store, keys: tuple[Path, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
        with Receiver() as receiver:
            receiver.fail_with(503)
            path = self.config(tmp_path, store, signing_key=str(keys[0]),
                               witness_url=receiver.url + "/witness")
            assert 3 == main(["evidence", "checkpoint", "--config", str(path)])
        assert "witness failed: witness_url (host 127.0.0.1): HTTP 503" in capsys.readouterr().err
        assert 1 == len(stored(store.engine))


def test_run_once_signs_the_head_it_leaves(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    moved = dataset(int(time.time()) // 300 * 300 - 1795729050 - 120)
    with TempoDouble() as tempo:
        tempo.push(moved)
        path = write_settings(tmp_path, tempo_url=tempo.url, store=f"sqlite:///{tmp_path / 'once.db'}",
                              schedule__initial_lookback="10m", evidence={"signing_key": str(keys[0])})
        assert main(["run", "--once", "--config", str(path)]) in {0, 1}
    with Store.open(f"sqlite:///{tmp_path / 'once.db'}") as opened:
        [checkpoint] = stored(opened.engine)
        assert "once" == checkpoint.fields["kind"]
        assert attest.attest(opened.engine, [signing.load_public(keys[1])]).ok


def test_a_checkpoint_round_trips_through_json() -> None:
    fields = {"last_record": 3, "head": "ab", "signed_at": T0.isoformat()}
    checkpoint = SignedCheckpoint(json.dumps(fields), "c2ln")
    assert checkpoint == SignedCheckpoint.from_json(json.loads(json.dumps(checkpoint.to_json())))


def test_the_daemon_signs_periodically_and_leaves_its_head_signed(tmp_path: Path,
                                                                  keys: tuple[Path, Path]) -> None:
    with TempoDouble() as tempo:
        config = load_settings(write_settings(
            tmp_path, tempo_url=tempo.url, store=f"sqlite:///{tmp_path / 'live.db'}",
            schedule__every="1s", schedule__initial_lookback="1m",
            evidence={"signing_key": str(keys[0]), "checkpoint_every": "1s"}))

        async def scenario() -> None:
            daemon = await open_daemon(config)
            stop = asyncio.Event()
            serving = asyncio.create_task(daemon.serve(stop))
            try:
                deadline = time.monotonic() + 20
                while len(await asyncio.to_thread(stored, daemon.store.engine)) < 2:
                    assert time.monotonic() < deadline, "no periodic checkpoints"
                    await asyncio.sleep(0.1)
            finally:
                stop.set()
                await serving
                await daemon.close()

        asyncio.run(scenario())
    with Store.open(config.store) as opened:
        checkpoints = stored(opened.engine)
        found = attest.attest(opened.engine, [signing.load_public(keys[1])])
    assert {"periodic"} <= {c.fields["kind"] for c in checkpoints}
    assert found.ok
    assert 0 == found.unsigned_records  # the shutdown signed whatever the last period left


class TestRetention:
    """Old records pruned after a signed summary; verify still proves every record kept."""

    CUTOFF = T0 + 20 * HOUR  # fill() starts one record an hour from T0

    def test_prune_then_verify(self, store: Store, keys: tuple[Path, Path]) -> None:
        before = ledger.verify(store.engine)
        signer = notary(store, keys[0])
        pruned = signer.prune(self.CUTOFF)
        assert pruned is not None
        summary = pruned.fields["summary"]
        assert 20 == summary["records"] == pruned.last_record
        assert [("audit", "2026-11-01", 20, 2)] == [(d["rule"], d["day"], d["windows"], d["violations"])
                                                   for d in summary["days"]]
        assert ["SOC2:CC6.7"] == summary["days"][0]["controls"]
        after = ledger.verify(store.engine)
        assert after.ok
        assert (before.records, before.head) == (after.records, after.head)  # the same chain, shorter
        assert 20 == after.pruned_through
        assert 21 == len(store.evaluations())
        one_more_record(store)  # the chain goes on
        signer.seal("periodic")
        found = attest.attest(store.engine, [signing.load_public(keys[1])])
        assert found.ok, found.problems
        assert 0 == found.unsigned_records
        assert signer.prune(self.CUTOFF) is None  # nothing older is left

    def test_the_newest_record_is_always_kept(self, store: Store, keys: tuple[Path, Path]) -> None:
        notary(store, keys[0]).prune(T0 + 1000 * HOUR)
        assert 1 == len(store.evaluations())
        assert ledger.verify(store.engine).ok

    def test_a_prefix_deleted_under_a_forged_retention_checkpoint_is_caught(
            self, store: Store, keys: tuple[Path, Path], tmp_path: Path) -> None:
        signing.generate(tmp_path / "forger.key")
        notary(store, tmp_path / "forger.key").prune(self.CUTOFF)
        assert ledger.verify(store.engine).ok  # the chain alone trusts the stored start
        found = attest.attest(store.engine, [signing.load_public(keys[1])])
        assert not found.ok
        assert "no valid signature" in found.problems[0]

    def test_a_prefix_deleted_without_a_retention_checkpoint_breaks_the_chain(self, store: Store) -> None:
        with store.engine.begin() as connection:
            connection.execute(text("delete from violations where evaluation_id <= 5"))
            connection.execute(text("delete from evaluations where id <= 5"))
        assert 6 == ledger.verify(store.engine).broken_at

    def test_a_final_pass_may_settle_pruned_provisional_records(self, keys: tuple[Path, Path],
                                                                tmp_path: Path) -> None:
        settled = Store.open(settle_scenario(tmp_path, f"sqlite:///{tmp_path / 'settled.db'}"))
        final = settling_record(settled)
        started = {e["id"]: e["started_at"] for e in settled.evaluations()}
        pruned = notary(settled, keys[0]).prune(started[final])  # the first run goes, the second stays
        assert pruned is not None
        assert pruned.last_record < final
        verdict = ledger.verify(settled.engine)
        assert verdict.ok, verdict.problem
        assert attest.attest(settled.engine, [signing.load_public(keys[1])]).ok
        settled.close()

    def test_prune_command(self, store: Store, keys: tuple[Path, Path], tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
        path = write_settings(tmp_path, tempo_url="http://127.0.0.1:9", store=store.url,
                              evidence={"signing_key": str(keys[0]), "retention": "1d"})
        assert 0 == main(["evidence", "prune", "--config", str(path)])  # all of 2026-11 is older
        assert "pruned 40 records through record 40" in capsys.readouterr().out
        assert 0 == main(["evidence", "verify", "--config", str(path), "--public-key", str(keys[1])])

    def test_retention_needs_a_key(self, store: Store, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
        path = write_settings(tmp_path, tempo_url="http://127.0.0.1:9", store=store.url,
                              evidence={"retention": "400d"})
        assert 2 == main(["evidence", "prune", "--config", str(path)])
        assert "set signing_key too" in capsys.readouterr().err


class TestSignedReports:
    """HTML and OSCAL reports carry their own signature; an auditor checks it with the public key alone."""

    def report(self, store: Store, keys: tuple[Path, Path], tmp_path: Path, fmt: str) -> Path:
        path = write_settings(tmp_path, tempo_url="http://127.0.0.1:9", store=store.url,
                              evidence={"signing_key": str(keys[0])})
        out = tmp_path / f"report.{fmt}"
        assert 0 == main(["evidence", "report", "--config", str(path), *PERIOD, "--format", fmt,
                          "--out", str(out)])
        return out

    @pytest.mark.parametrize("fmt", ["html", "oscal"])
    def test_signed_then_checked(self, store: Store, keys: tuple[Path, Path], tmp_path: Path, fmt: str,
                                 capsys: pytest.CaptureFixture[str]) -> None:
        out = self.report(store, keys, tmp_path, fmt)
        assert "signed with key" in capsys.readouterr().err
        check = ["evidence", "verify-report", str(out), "--public-key", str(keys[1])]
        assert 0 == main(check)
        assert "unchanged" in capsys.readouterr().out
        out.write_text(out.read_text().replace("SOC2", "S0C2", 1))
        assert 1 == main(check)
        assert "was edited after it was signed" in capsys.readouterr().out

    def test_an_oscal_document_may_be_reformatted(self, store: Store, keys: tuple[Path, Path],
                                                  tmp_path: Path) -> None:
        out = self.report(store, keys, tmp_path, "oscal")
        out.write_text(json.dumps(json.loads(out.read_text()), indent=7, sort_keys=True))
        assert check_report(out.read_text(), signing.load_public(keys[1])) is None

    def test_another_key_or_no_signature(self, store: Store, keys: tuple[Path, Path], tmp_path: Path) -> None:
        out = self.report(store, keys, tmp_path, "html")
        other = signing.load_public(signing.generate(tmp_path / "other.key"))
        assert "not by" in (check_report(out.read_text(), other) or "")
        unsigned = self.report(store, keys, tmp_path, "md").read_text()
        assert "neither a signed HTML report" in (check_report(unsigned, other) or "")

    def test_the_report_states_the_checkpoints_covering_its_period(
            self, store: Store, keys: tuple[Path, Path], tmp_path: Path) -> None:
        unsigned = json.loads(self.report(store, keys, tmp_path, "json").read_text())
        assert [] == unsigned["ledger"]["checkpoints"]
        summary = self.report(store, keys, tmp_path, "md").read_text()
        assert "No signed checkpoint covers the period" in summary
        sealed = notary(store, keys[0]).seal("manual")  # signed now, after the period: it vouches for it
        assert sealed is not None
        listed = json.loads(self.report(store, keys, tmp_path, "json").read_text())["ledger"]["checkpoints"]
        assert [(sealed.last_record, sealed.head)] == [(c["last_record"], c["head"]) for c in listed]
        page = self.report(store, keys, tmp_path, "html").read_text()
        assert f"1 signed checkpoints cover the period, the last at record {sealed.last_record}" in page


class TestReviewedAttacks:
    """What someone who can write the database, without the key, tried and must not get away with."""

    def test_a_periodic_checkpoint_relabelled_as_retention_does_not_hide_a_deleted_prefix(
            self, store: Store, keys: tuple[Path, Path], tmp_path: Path) -> None:
        witness = tmp_path / "w.jsonl"
        sealed = asyncio.run(notary(store, keys[0], witness_file=witness).checkpoint("manual"))
        assert sealed is not None
        with store.engine.begin() as connection:
            connection.execute(text("update ledger_checkpoints set kind = 'retention'"))
            gone = {"id": sealed.last_record}
            connection.execute(text("delete from violations where evaluation_id <= :id"), gone)
            connection.execute(text("delete from evaluations where id <= :id"), gone)
        found = attest.attest(store.engine, [signing.load_public(keys[1])], attest.witnessed(witness))
        assert not found.ok
        assert ledger.verify(store.engine).ok  # the payload says 'manual': no stored start at all,
        # and the empty chain is trivially intact, which is why a key must be given:
        assert found.problems == [(f"checkpoint signed {sealed.signed_at.isoformat()} at record "
                                   f"{sealed.last_record} vouches for a record the ledger no longer has: "
                                   "records were deleted")]

    def test_a_record_count_the_chain_does_not_have_is_named(self, store: Store,
                                                             keys: tuple[Path, Path]) -> None:
        head = ledger.verify(store.engine)
        key = signing.load_private(keys[0])
        text_ = payload(Head(41, head.head, 40), signed_at=T0, kind="periodic",
                        key_id=signing.key_id(key.public_key()))
        with store.engine.begin() as connection:
            add(connection, SignedCheckpoint(text_, signing.sign(key, text_.encode())))
        found = attest.attest(store.engine, [signing.load_public(keys[1])])
        assert ["signed 40 records up to it, the chain now counts 41"] == [
            p.partition(" at record 41 ")[2].partition(": ")[0] for p in found.problems]

    def test_verify_with_a_key_fails_when_no_checkpoint_holds(self, store: Store, keys: tuple[Path, Path],
                                                               tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
        path = write_settings(tmp_path, tempo_url="http://127.0.0.1:9", store=store.url)
        assert 1 == main(["evidence", "verify", "--config", str(path), "--public-key", str(keys[1])])
        assert "no checkpoint holds" in capsys.readouterr().out

    def test_a_rotated_key_still_verifies_the_old_checkpoints(self, store: Store, keys: tuple[Path, Path],
                                                             tmp_path: Path) -> None:
        notary(store, keys[0]).seal("manual")
        newer = signing.generate(tmp_path / "new.key")
        one_more_record(store)
        notary(store, tmp_path / "new.key").seal("periodic")
        found = attest.attest(store.engine, [signing.load_public(keys[1]), signing.load_public(newer)])
        assert (found.ok, found.good) == (True, 2)
        assert not attest.attest(store.engine, [signing.load_public(newer)]).ok

    def test_plain_verify_says_a_retention_start_is_unchecked(self, store: Store, keys: tuple[Path, Path],
                                                             tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
        notary(store, keys[0]).prune(TestRetention.CUTOFF)
        path = write_settings(tmp_path, tempo_url="http://127.0.0.1:9", store=store.url)
        assert 0 == main(["evidence", "verify", "--config", str(path)])
        assert "is NOT checked without --public-key" in capsys.readouterr().out
        assert 0 == main(["evidence", "verify", "--config", str(path), "--public-key", str(keys[1])])
        assert "that retention checkpoint's signature holds" in capsys.readouterr().out

    def test_retention_signs_no_head_twice_and_keeps_the_origin(self, store: Store,
                                                               keys: tuple[Path, Path]) -> None:
        signer = notary(store, keys[0])
        signer.seal("periodic")
        with store.engine.connect() as connection:
            origin = first_hash(connection)
        assert signer.prune(TestRetention.CUTOFF) is not None
        assert signer.seal("periodic") is None  # the head did not move
        assert origin == vouching(store, T0, T0 + HOUR, []).origin

    def test_an_unsettled_provisional_record_stops_the_prune(self, keys: tuple[Path, Path],
                                                             tmp_path: Path) -> None:
        settled = Store.open(settle_scenario(tmp_path, f"sqlite:///{tmp_path / 'settled.db'}"))
        waiting = [e["id"] for e in settled.evaluations() if e["verdict"] == "provisional" and e["judged"]]
        assert waiting  # trace 6's window is judged provisionally and not settled yet
        pruned = notary(settled, keys[0]).prune(T0 + 100 * 365 * 24 * HOUR)  # all started before
        assert pruned is not None
        assert pruned.last_record < min(waiting)
        assert attest.attest(settled.engine, [signing.load_public(keys[1])]).ok
        settled.close()

    def test_a_signed_report_lists_only_checkpoints_that_hold(self, store: Store, keys: tuple[Path, Path],
                                                             tmp_path: Path) -> None:
        signing.generate(tmp_path / "forger.key")
        notary(store, tmp_path / "forger.key").seal("manual")
        path = write_settings(tmp_path, tempo_url="http://127.0.0.1:9", store=store.url,
                              evidence={"signing_key": str(keys[0])})
        out = tmp_path / "r.json"
        assert 0 == main(["evidence", "report", "--config", str(path), *PERIOD, "--format", "json",
                          "--out", str(out)])
        ledger_part = json.loads(out.read_text())["ledger"]
        assert [] == ledger_part["checkpoints"]
        assert ledger_part["checkpoints_checked"]
        assert "has no valid signature" in ledger_part["checkpoint_problems"][0]


class TestReportSignatureAttacks:
    def test_html_content_smuggled_into_the_trailer_is_refused(self, keys: tuple[Path, Path]) -> None:
        signed = sign_report("<html>ok</html>\n", signing.load_private(keys[0]), oscal=False)
        smuggled = signed.replace('"signature"', '"x": "--><div>0 violations</div><!--", "signature"')
        assert "neither a signed HTML report" in (check_report(smuggled, signing.load_public(keys[1])) or "")
        unterminated = signed.replace("</html>\n<!--", "</html><!--")
        assert "does not start a line" in (check_report(unterminated, signing.load_public(keys[1])) or "")

    def test_an_oscal_document_with_a_duplicate_key_is_refused(self, store: Store, keys: tuple[Path, Path],
                                                               tmp_path: Path) -> None:
        out = TestSignedReports().report(store, keys, tmp_path, "oscal")
        doctored = out.read_text().replace('"title":', '"title": "All compliant", "title":', 1)
        assert "duplicate key 'title'" in (check_report(doctored, signing.load_public(keys[1])) or "")
