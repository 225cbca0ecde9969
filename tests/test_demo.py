"""`betrace demo`: fresh traces over OTLP/HTTP, the chosen share breaking the starter rules."""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest
from tempo_double import TempoDouble

from checker.cli import main
from checker.demo.traffic import endpoint


def test_sends_fresh_traces_of_which_the_chosen_share_violates(capsys: pytest.CaptureFixture[str]) -> None:
    with TempoDouble() as tempo:
        assert 0 == main(["demo", "--otlp", tempo.url, "--rate", "1000", "--count", "60",
                          "--violations", "0.4", "--seed", "7"])
        sent = capsys.readouterr().err
        violating = int(re.search(r"sent 60 traces to .*/v1/traces, (\d+) breaking a rule", sent).group(1))
        assert 10 < violating < 40
        assert 60 == len(tempo.trace_ids)
        assert 0 == main(["demo", "--otlp", tempo.url + "/v1/traces", "--rate", "1000", "--count", "5"])
        assert 65 == len(tempo.trace_ids)  # fresh IDs every time
        time.sleep(1.1)  # search ends at the last whole second: let the traces' second pass
        code = main(["scan", "--tempo", tempo.url, "--since", "10m", "--query-end-cutoff", "0s",
                     "--format", "json"])
        found = {json.loads(line)["trace_id"] for line in capsys.readouterr().out.splitlines()}
        assert 1 == code
        assert violating <= len(found) <= violating + 5  # the 5 later traces have the 5 % default share


def test_timestamps_are_now_and_spans_keep_their_parents() -> None:
    with TempoDouble() as tempo:
        before = time.time_ns()
        assert 0 == main(["demo", "--otlp", tempo.url, "--rate", "1000", "--count", "3"])
        for trace_id in tempo.trace_ids:
            body = httpx.get(f"{tempo.url}/api/v2/traces/{trace_id}").json()
            spans = [s for r in body["trace"]["resourceSpans"] for ss in r["scopeSpans"] for s in ss["spans"]]
            starts = [int(s["startTimeUnixNano"]) for s in spans]
            assert before <= min(starts) <= time.time_ns()
            ids = {s["spanId"] for s in spans}
            assert all(s.get("parentSpanId", "") in ids | {""} for s in spans)


@pytest.mark.parametrize(("argv", "words"), [
    (["--violations", "1.5"], "must be between 0 and 1"),
    (["--rate", "0"], "must be positive"),
])
def test_bad_options_exit_2(argv: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert 2 == main(["demo", "--otlp", "http://127.0.0.1:9", "--count", "1", *argv])
    assert words in capsys.readouterr().err


def test_unreachable_receiver_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    assert 3 == main(["demo", "--otlp", "http://127.0.0.1:9", "--count", "1"])
    assert "cannot send" in capsys.readouterr().err


def test_endpoint() -> None:
    assert "http://tempo:4318/v1/traces" == endpoint("http://tempo:4318")
    assert "http://tempo:4318/v1/traces" == endpoint("http://tempo:4318/")
    assert "http://collector/otlp/v1/traces" == endpoint("http://collector/otlp/v1/traces")
