"""The ``betrace`` command line. Each subcommand is a thin wrapper over library calls.

Exit codes, for every command: 0 all good, 1 violations or failed examples found,
2 invalid rules, config or usage, 3 the trace source could not be read or reached.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import math
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ByteSize, ValidationError

from checker import __version__, signing
from checker.config import load_settings
from checker.config_types import setting_text
from checker.daemon import factory
from checker.daemon.backfill import whole_seconds
from checker.demo.traffic import Sent, demo_file, endpoint, send
from checker.engine import Scanner, run_examples
from checker.errors import (
    EXIT_FOUND,
    EXIT_INVALID,
    EXIT_OK,
    EXIT_SOURCE,
    CheckerError,
    RuleFileRefusedError,
    TraceSourceError,
    UsageError,
    visible,
)
from checker.evidence import FORMATS, Filters, attest, writer
from checker.evidence import build as build_report
from checker.evidence.report_signature import check_report, sign_report
from checker.log import configure
from checker.notify import sender_for
from checker.notify.message import sample_alert
from checker.output import (
    listing_order,
    write_json_lines,
    write_problems,
    write_stored_csv,
    write_stored_json_lines,
    write_table,
)
from checker.redact import KNOWN, mask_url
from checker.rules import RuleSet, load_paths
from checker.rules.durations import duration_text
from checker.rules.printer import invariant as print_invariant
from checker.rules.printer import violation_summary
from checker.schema import MODELS, schema_text
from checker.store import Store, StoreError, ledger
from checker.store.ledger_checkpoints import stored
from checker.tempo.errors import TempoError
from checker.tempo.run import scan_window
from checker.tempo.settings import TempoSettings
from checker.tempo.settle import DEFAULT_SETTLE, FINAL, PROVISIONAL, Settle
from checker.tempo.unseen import against_tempo
from checker.timeparse import duration_seconds, parse_time, window
from checker.traceql import compile_rule
from checker.traces import read_traces

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from pydantic_core import ErrorDetails

    from checker.engine import Violation
    from checker.rules import Rule

DEFAULT_RULES = Path("rules.d")
SIGNED_FORMATS = frozenset({"html", "oscal"})  # the reports that carry their own signature


def demo_traces() -> Path:
    """The example traces bundled with the package, scanned when no source is given."""
    return demo_file()


def _load(paths: Sequence[Path]) -> RuleSet:
    ruleset = load_paths(paths)
    write_problems(ruleset.errors, ruleset.warnings, sys.stderr)
    return ruleset


def cmd_validate(args: argparse.Namespace) -> int:
    """Check rule files; every error is printed, not just the first.

    Exit 1 when rules were read and some are invalid, 2 when a file was refused unread
    (hostile or not a rule file at all).
    """
    ruleset = load_paths(args.paths)
    write_problems(ruleset.errors, ruleset.warnings, sys.stdout)
    print(f"{len(ruleset.rules)} valid rules, {len(ruleset.errors)} errors, "
          f"{len(ruleset.warnings)} warnings")
    if args.tempo:
        _validate_against_tempo(args, ruleset.rules)
    if any(isinstance(error, RuleFileRefusedError) for error in ruleset.errors):
        return EXIT_INVALID
    return EXIT_FOUND if ruleset.errors else EXIT_OK


def _validate_against_tempo(args: argparse.Namespace, rules: list[Rule]) -> None:
    """Warn about span names, attributes and values Tempo never saw; never changes the exit code.

    A Tempo that cannot be asked is a warning too: the rules were still checked as files.
    """
    settings = tempo_settings(args, os.environ)
    start, end, _ = window(time.time(), settings.query_end_cutoff.total_seconds(), since=args.since,
                           start=None, end=None)
    period, shown = f"in the last {args.since}", mask_url(args.tempo)
    try:
        warnings = asyncio.run(against_tempo(rules, settings, start, end, period))
    except TempoError as err:
        print(f"warning: rules not checked against Tempo: {err}")
        if err.status == 404:
            print("  hint: an older Tempo has no v2 tag API (/api/v2/search/tags); "
                  "the rules were checked without it")
        return
    write_problems([], warnings, sys.stdout)
    print(f"checked {len(rules)} rules against Tempo at {shown} {period}: {len(warnings)} warnings")


def cmd_explain(args: argparse.Namespace) -> int:
    """Print how each rule is read, so that nobody has to guess."""
    ruleset = _load([args.path])
    rules = [r for r in ruleset.rules if args.rule in {None, r.id}]
    if args.rule and not rules and not ruleset.errors:
        print(f"error: no rule {args.rule!r} in {args.path}", file=sys.stderr)
        return EXIT_INVALID
    for rule in rules:
        print(visible(_explanation(rule)))
    return EXIT_INVALID if ruleset.errors else EXIT_OK


def _explanation(rule: Rule) -> str:
    lines = [f"{rule.id}  ({rule.location})", f"  name:     {rule.name}", f"  severity: {rule.severity}"]
    if rule.controls or rule.frameworks:
        lines.append(f"  controls: {', '.join(rule.controls or rule.frameworks)}")
    lines.append(f"  reading:  {print_invariant(rule.invariant)}")
    if rule.legacy:
        lines.append(f"  (legacy condition without when: {rule.condition.strip()})")
    lines += [f"  violated by {violation_summary(rule.invariant)}", "  TraceQL plan:"]
    lines += [f"    {line}" for line in compile_rule(rule.invariant).describe()]
    return "\n".join(lines) + "\n"


def cmd_test(args: argparse.Namespace) -> int:
    """Run every rule's examples; one line each."""
    ruleset = _load(args.paths)
    failed = passed = 0
    for result in run_examples(ruleset.rules):
        label = f"{result.rule.id}: {result.example.name}"
        if result.passed:
            passed += 1
            print(f"PASS {label}")
            continue
        failed += 1
        got = "a violation" if result.violation else "no violation"
        why = f" ({result.violation.reason})" if result.violation else ""
        print(f"FAIL {label}: expected {result.example.expect}, got {got}{why}"
              f"  [{result.example.location}]")
    untested = [r.id for r in ruleset.rules if not r.examples]
    if untested:
        print(f"note: no examples for {', '.join(untested)}", file=sys.stderr)
    print(f"{passed} passed, {failed} failed")
    if ruleset.errors:
        return EXIT_INVALID
    return EXIT_FOUND if failed else EXIT_OK


@dataclass
class Judged:
    """A scan's violations so far, and from when on Tempo may still add spans (never for files)."""

    violations: list[Violation] = field(default_factory=list)
    settle: Settle | None = None

    def status(self, violation: Violation) -> str:
        """``final`` for files, which do not grow; from ``--settle`` for Tempo."""
        return self.settle.status(violation) if self.settle else FINAL


def cmd_scan(args: argparse.Namespace) -> int:
    """Evaluate every rule on traces from files on disk, or from Tempo over a window."""
    if args.tempo and args.traces:
        print("error: give --traces or --tempo, not both", file=sys.stderr)
        return EXIT_INVALID
    ruleset = _load([args.rules])
    if ruleset.errors:
        return EXIT_INVALID
    judged = Judged()
    try:
        (_scan_tempo if args.tempo else _scan_files)(args, ruleset.rules, judged)
    finally:
        # Also when the source fails part-way (exit 3): what was judged is never lost.
        if args.format == "json":
            write_json_lines(sorted(judged.violations, key=listing_order), sys.stdout, judged.status)
        else:
            write_table(judged.violations, sys.stdout, judged.status if args.tempo else None)
    return EXIT_FOUND if judged.violations and not args.exit_zero else EXIT_OK


def _scan_files(args: argparse.Namespace, rules: list[Rule], judged: Judged) -> None:
    sources = args.traces or [demo_traces()]
    if not args.traces:
        print(f"no --traces given: scanning the bundled demo traces ({sources[0]})", file=sys.stderr)
    scanner = Scanner(rules)
    judged.violations.extend(scanner.scan(read_traces(sources)))  # keeps what came before an error
    stats = scanner.stats
    print(f"scanned {stats.traces} traces with {len(scanner.rules)} rules: "
          f"{stats.in_scope} in scope, {stats.violations} violations", file=sys.stderr)


# Where a Tempo setting comes from on the command line, when not --<its name>.
TEMPO_OPTIONS = {"url": "--tempo", "headers": "--header", "username": "BETRACE_TEMPO__USERNAME",
                 "password": "BETRACE_TEMPO__PASSWORD", "bearer_token": "BETRACE_TEMPO__BEARER_TOKEN"}


def tempo_settings(args: argparse.Namespace, environ: Mapping[str, str]) -> TempoSettings:
    """The daemon's ``tempo`` section, from options and the environment, checked as the file's is.

    Unchecked, ``--search-limit 0`` would search forever. Secrets come only from the
    environment, never argv.
    """
    headers = {}
    for header in args.header or []:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            raise UsageError(f"--header {header!r} is not 'Name: value'")
        headers[name.strip()] = value.strip()
    # validate --tempo has only the connection options; scan has them all.
    scan_only = {key: getattr(args, key, None) for key in (
        "search_limit", "query_end_cutoff", "trace_margin", "max_search_bytes", "max_trace_bytes")}
    values = {"url": args.tempo, "tenant": args.tenant, "timeout": args.timeout,
              "retries": args.retries, "headers": headers, **scan_only,
              "username": environ.get("BETRACE_TEMPO__USERNAME") or None,
              "password": environ.get("BETRACE_TEMPO__PASSWORD") or None,
              "bearer_token": environ.get("BETRACE_TEMPO__BEARER_TOKEN") or None,
              "ca_bundle": args.ca_bundle, "insecure": args.insecure}
    try:
        settings = TempoSettings(**{key: value for key, value in values.items() if value is not None})
    except ValidationError as err:
        raise UsageError("invalid Tempo option:" + "".join(
            f"\n  {_option_problem(e)}" for e in err.errors())) from None
    KNOWN.add(settings.secrets())  # the log's last line of defence, as for a config file
    return settings


def _option_problem(error: ErrorDetails) -> str:
    """``--search-limit 0: Input should be greater than 0``; secrets are never echoed."""
    key = str(error["loc"][0]) if error["loc"] else "tempo"
    option = TEMPO_OPTIONS.get(key, "--" + key.replace("_", "-"))
    secret = key in {"password", "bearer_token", "headers"}
    shown = "" if secret or isinstance(error["input"], dict) else f" {mask_url(str(error['input']))}"
    return f"{option}{shown}: {error['msg'].removeprefix('Value error, ')}"


def _default(name: str) -> Any:
    """The ``tempo`` section's default for ``name``: the one place it is written."""
    return TempoSettings.model_fields[name].default


def _default_text(name: str) -> str:
    """A default as the help text quotes it: ``30s``, ``64MiB``, ``1000``."""
    value = _default(name)
    return setting_text(value) if isinstance(value, timedelta | ByteSize) else str(value)


def _scan_tempo(args: argparse.Namespace, rules: list[Rule], judged: Judged) -> None:
    settings = tempo_settings(args, os.environ)
    now, cutoff = time.time(), settings.query_end_cutoff.total_seconds()
    shown_cutoff = args.query_end_cutoff or duration_text(settings.query_end_cutoff)
    start, end, clamped = window(now, cutoff, since=args.since, start=args.start, end=args.end)
    settle = judged.settle = Settle.parse(args.settle, now)
    asked = end
    if args.settled_only:
        end = settle.settled_end(start, end)
    if clamped:
        print(f"note: Tempo hides the newest {shown_cutoff} (query_end_cutoff): "
              f"evaluating up to {end}", file=sys.stderr)
    if settings.query_end_cutoff < _default("query_end_cutoff"):
        print(f"note: --query-end-cutoff {shown_cutoff} is below Tempo's default "
              f"{duration_text(_default('query_end_cutoff'))}; "
              "Tempo must be configured with it, or it silently moves recent windows",
              file=sys.stderr)
    result, stats = scan_window(rules, settings, start, end,
                                latest=math.floor(now - cutoff), progress=sys.stderr.isatty())
    full = f" ({stats.full_pages} full, searched again)" if stats.full_pages else ""
    print(f"evaluated {len(result.outcomes)} rules over {start}..{end} on {mask_url(args.tempo)}: "
          f"{stats.searches} searches{full}, {stats.fetches} traces fetched, "
          f"{len(result.violations)} violations", file=sys.stderr)
    found = result.violations
    kept = [v for v in found if not args.settled_only or settle.status(v) == FINAL]
    note = _settle_note(settle, (start, asked), found, settled_only=args.settled_only)
    if note:
        print(note, file=sys.stderr)
    judged.violations.extend(kept)
    unjudged = result.unjudged
    if unjudged:
        raise TraceSourceError(f"{len(unjudged)} candidate traces could not be judged: "
                               + ", ".join(unjudged[:5]),
                               hint="a trace may have left retention or exceed Tempo's "
                               "max_bytes_per_trace or --max-trace-bytes; scan again or raise "
                               "that limit")


def _settle_note(settle: Settle, asked: tuple[int, int], found: list[Violation], *,
                 settled_only: bool) -> str | None:
    """How much of the window, and of what it found, late spans may still change (or what was left out).

    None when all of it is settled: then there is nothing to say.
    """
    start, end = asked
    young = settle.young(start, end)
    provisional = sum(settle.status(v) == PROVISIONAL for v in found)
    if not young and not provisional:
        return None
    head = (f"the newest {duration_text(timedelta(seconds=young))} of the window "
            f"({round(100 * young / (end - start))} %) is younger than --settle {settle.text}"
            if young else f"the window is older than --settle {settle.text}")
    if settled_only:
        left_out = ["that part was not evaluated"] if young else []
        if provisional:
            left_out.append(f"{provisional} violations in traces with spans newer than that were left out")
        return f"note: {head}; --settled-only: {', and '.join(left_out)}"
    return (f"note: {head}: {provisional} of {len(found)} violations are provisional "
            "(late spans may still change them)")


def cmd_run(args: argparse.Namespace) -> int:
    """The daemon, or one pass over every due window with ``--once``."""
    code = factory.run(load_settings(args.config), once=args.once)
    return EXIT_OK if code == EXIT_FOUND and args.exit_zero else code


def cmd_violations(args: argparse.Namespace) -> int:
    """Violations recorded by the daemon, newest last."""
    settings = load_settings(args.config)
    since = datetime.now(UTC) - timedelta(seconds=duration_seconds(args.since)) if args.since else None
    with Store.open(settings.store) as store:
        recorded = store.violations(rule_id=args.rule, since=since)
    found = [f for f in recorded if args.include_retracted or f.status != "retracted"]
    if args.format == "json":
        write_stored_json_lines(found, sys.stdout)
    elif args.format == "csv":
        write_stored_csv(found, sys.stdout)
    else:
        status = {(f.violation.rule_id, f.violation.trace_id): f.status for f in found}
        write_table([f.violation for f in found], sys.stdout,
                    status=lambda v: status[v.rule_id, v.trace_id])
    states = [n["state"] for f in found for n in f.notifications]
    provisional = sum(f.status == "provisional" for f in found)
    hidden = len(recorded) - len(found)
    print(f"{len(found)} violations ({provisional} provisional"
          + (f"; {hidden} retracted not shown: --include-retracted" if hidden else "")
          + f"); notifications not delivered: {states.count('pending')} pending, "
          f"{states.count('dead')} dead-lettered (details in --format json)", file=sys.stderr)
    return EXIT_OK


def cmd_notify_test(args: argparse.Namespace) -> int:
    """Send a test message on one route and say what the receiver answered."""
    settings = load_settings(args.config)
    route = settings.notifiers.get(args.route)
    if route is None:
        raise UsageError(f"no route {args.route!r} in notifiers; the config has: "
                         + (", ".join(settings.notifiers) or "none"))
    delivery = asyncio.run(sender_for(route, settings.trace_url_template).send(sample_alert()))
    state = "delivered" if delivery.ok else "retryable failure" if delivery.retryable else "refused"
    print(f"{args.route}: {state}; the receiver answered: {delivery.detail}")
    return EXIT_OK if delivery.ok else EXIT_SOURCE


def cmd_evidence_verify(args: argparse.Namespace) -> int:
    """Recompute the ledger and check its signed checkpoints; 1 when anything was altered."""
    keys = [signing.load_public(path) for path in args.public_key]
    extra = [checkpoint for path in args.witness for checkpoint in attest.witnessed(path)]
    if args.witness and not keys:
        raise UsageError("--witness needs --public-key: a witnessed checkpoint is checked by its signature")
    with Store.open(load_settings(args.config).store) as store:
        if not keys:
            verdict, checkpoints = ledger.verify(store.engine), len(stored(store.engine))
        else:
            found = attest.attest(store.engine, keys, extra)
            verdict = found.chain
    if not verdict.ok:
        print(f"ledger BROKEN at record {verdict.broken_at}: {verdict.problem}")
        print(f"{verdict.records - 1} records before it are intact; their head hash is {verdict.head}")
    else:
        print(f"ledger intact: {verdict.records} records; head hash {verdict.head}")
    if verdict.pruned_through is not None:
        print(f"the chain starts after record {verdict.pruned_through}, pruned under evidence.retention; "
              + ("that retention checkpoint's signature holds" if verdict.start_checked else
                 "that retention checkpoint is NOT checked without --public-key: the records before it "
                 "may have been deleted by anyone who can write the database"))
    if not keys:
        if checkpoints:
            print(f"{checkpoints} signed checkpoints stored, not checked: pass --public-key to check them")
        return EXIT_OK if verdict.ok else EXIT_FOUND
    for problem in found.problems:
        print(f"checkpoint BROKEN: {problem}")
    names = ", ".join(signing.key_id(key) for key in keys)
    print(f"signed checkpoints: {found.good} of {found.checkpoints} hold (key {names})")
    if found.last_good is not None:
        print(f"the last holds up to record {found.last_good.last_record}, signed "
              f"{found.last_good.signed_at.isoformat()}; {found.unsigned_records} records chained since "
              "are vouched for by the chain alone (a rewrite of those could not be told)")
        return EXIT_OK if found.ok else EXIT_FOUND
    print(f"checkpoint BROKEN: no checkpoint holds: all {found.unsigned_records} records are vouched for "
          "by the chain alone, which whoever can write the database can rewrite")
    return EXIT_OK if found.ok and not found.unsigned_records else EXIT_FOUND


def cmd_evidence_prune(args: argparse.Namespace) -> int:
    """Prune the records older than evidence.retention now, after a signed summary of them."""
    settings = load_settings(args.config)
    retention = settings.evidence.retention
    if retention is None:
        raise UsageError("no evidence.retention in the config",
                         hint="set it, e.g. 400d, together with evidence.signing_key")
    key = factory.signing_key(settings)
    with Store.open(settings.store) as store:
        notary = factory.notary(settings, store, key)
        assert notary is not None  # noqa: S101  (retention needs signing_key: the config checked it)
        pruned = notary.prune(datetime.now(UTC) - retention)
        if pruned is None:
            print(f"nothing to prune: no record started more than {duration_text(retention)} ago "
                  "(the newest record is always kept)")
            return EXIT_OK
        problems = asyncio.run(notary.witness(pruned))
    summary = pruned.fields["summary"]
    print(f"pruned {summary['records']} records through record {pruned.last_record}; the signed "
          f"retention checkpoint keeps their counts per rule and day and the head {pruned.head}")
    return _witness_outcome(problems)


def _witness_outcome(problems: list[str]) -> int:
    """3 when a witness failed (the checkpoint is stored either way), each failure on stderr."""
    for problem in problems:
        print(f"witness failed: {problem}", file=sys.stderr)
    return EXIT_SOURCE if problems else EXIT_OK


def cmd_evidence_keygen(args: argparse.Namespace) -> int:
    """A new Ed25519 key pair for evidence.signing_key; never overwrites one."""
    public = signing.generate(args.out)
    print(f"private key: {args.out} (evidence.signing_key; keep it where the database's writers cannot "
          "read it)")
    print(f"public key:  {public} (betrace evidence verify --public-key; give it to your auditor); "
          f"key id {signing.key_id(signing.load_public(public))}")
    return EXIT_OK


def cmd_evidence_checkpoint(args: argparse.Namespace) -> int:
    """Sign the ledger head now and hand it to the witnesses; 3 when a witness failed."""
    settings = load_settings(args.config)
    key = factory.signing_key(settings)
    with Store.open(settings.store) as store:
        notary = factory.notary(settings, store, key)
        if notary is None:
            raise UsageError("no evidence.signing_key in the config",
                             hint="make one with betrace evidence keygen --out FILE, then set "
                             "evidence.signing_key (or BETRACE_EVIDENCE__SIGNING_KEY)")
        sealed = notary.seal("manual")
        if sealed is None:
            print("nothing to sign: the ledger is empty, or its head is already signed by this key")
            return EXIT_OK
        problems = asyncio.run(notary.witness(sealed))
    print(f"signed the head at record {sealed.last_record} ({sealed.head}) with key {notary.key_id}")
    return _witness_outcome(problems)


def cmd_evidence_report(args: argparse.Namespace) -> int:
    """Coverage, gaps, violations and compliance per control over a period, for an auditor."""
    settings = load_settings(args.config)
    start, end = whole_seconds(parse_time(args.start), parse_time(args.end))
    filters = Filters(start, end, framework=args.framework, control=args.control, rule=args.rule)
    write = writer(args.format)
    private = factory.signing_key(settings)
    signer = private if args.format in SIGNED_FORMATS else None
    checking = [private.public_key()] if private is not None else []
    with Store.open(settings.store) as store:
        report = build_report(store, filters, settings.trace_url_template,
                              config=str(args.config) if args.config else None, keys=checking)
    text = io.StringIO()
    write(report, text)
    written = text.getvalue()
    if signer is not None:
        written = sign_report(written, signer, oscal=args.format == "oscal")
    if args.out is None or str(args.out) == "-":
        sys.stdout.write(written)
    else:
        args.out.write_text(written, encoding="utf-8")
    rules = {r.rule_id for c in report.controls for r in c.rules}
    print(f"{len(report.controls)} controls, {len(rules)} rules; ledger "
          + ("intact" if report.ledger.ok else f"BROKEN at record {report.ledger.broken_at}")
          + (f"; signed with key {signing.key_id(signer.public_key())}" if signer is not None else "")
          + (f"; written to {args.out}" if args.out else ""), file=sys.stderr)
    return EXIT_OK


def cmd_evidence_verify_report(args: argparse.Namespace) -> int:
    """Check a report's own signature with the public key; 1 when it does not hold."""
    try:
        text = args.report.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read report {args.report}: {err}") from None
    problem = check_report(text, signing.load_public(args.public_key))
    if problem is not None:
        print(f"{args.report}: signature BROKEN: {problem}")
        return EXIT_FOUND
    print(f"{args.report}: signed by key {signing.key_id(signing.load_public(args.public_key))}, unchanged")
    return EXIT_OK


def cmd_backfill(args: argparse.Namespace) -> int:
    """One rule over a past period; rerun the same command to resume."""
    settings = load_settings(args.config)
    start, end = whole_seconds(parse_time(args.start), parse_time(args.end))
    summary = asyncio.run(factory.backfill(settings, args.rule, start, end, notify=args.notify,
                                   progress=sys.stderr.isatty()))
    print(f"backfill {args.rule} {start.isoformat()} .. {end.isoformat()}: {summary.windows} windows "
          f"evaluated, {summary.violations} new violations, {summary.remaining} windows left",
          file=sys.stderr)
    if summary.failed:
        print(f"error: stopped at a failed window: {summary.failed}\n  hint: run the same command again to "
              "resume from there", file=sys.stderr)
        return EXIT_SOURCE
    return EXIT_FOUND if summary.violations else EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """Demo traffic until Ctrl-C (or --count traces)."""

    def progress(sent: Sent) -> None:
        if sent.traces % 50 == 0:
            print(f"sent {sent.traces} traces, {sent.violating} breaking a rule", file=sys.stderr)

    try:
        sent = asyncio.run(send(args.otlp, rate=args.rate, violations=args.violations, count=args.count,
                                rules_dir=args.rules, seed=args.seed, on_sent=progress))
    except KeyboardInterrupt:
        return EXIT_OK
    print(f"sent {sent.traces} traces to {endpoint(args.otlp)}, {sent.violating} breaking a rule",
          file=sys.stderr)
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    """Editors check rule files and configs against it as they are typed; ``schemas/`` holds this output."""
    sys.stdout.write(schema_text(args.document))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """All subcommands and options, each with help text (docs/cli.md documents them)."""
    parser = argparse.ArgumentParser(
        prog="betrace", description="Prove behavioural invariants over OpenTelemetry traces.")
    parser.add_argument("--version", action="version", version=f"betrace {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = sub.add_parser("validate", help="check rule files and print every error")
    validate.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                          help="rule files or directories (searched recursively)")
    validate.add_argument("--tempo", metavar="URL", help="also warn about span names, attributes and "
                          "values the rules use that this Grafana Tempo never saw, e.g. http://localhost:3200")
    validate.add_argument("--since", default="24h", metavar="DURATION",
                          help="with --tempo: the period Tempo is asked about (default 24h)")
    _connection_options(validate)
    validate.set_defaults(func=cmd_validate)

    explain = sub.add_parser("explain", help="print the when/always/never reading of each rule")
    explain.add_argument("path", type=Path, metavar="PATH", help="a rule file or directory")
    explain.add_argument("--rule", metavar="ID", help="only this rule")
    explain.set_defaults(func=cmd_explain)

    test = sub.add_parser("test", help="run the examples written in rule files")
    test.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                      help="rule files or directories")
    test.set_defaults(func=cmd_test)

    scan = sub.add_parser("scan", help="evaluate rules over traces and report violations")
    scan.add_argument("--rules", type=Path, default=DEFAULT_RULES, metavar="DIR",
                      help="rule file or directory (default: rules.d)")
    scan.add_argument("--traces", type=Path, nargs="+", metavar="PATH",
                      help="OTLP/JSON files or directories (default: the bundled demo traces)")
    scan.add_argument("--tempo", metavar="URL", help="Grafana Tempo's HTTP address, e.g. "
                      "http://localhost:3200 (instead of --traces)")
    scan.add_argument("--since", metavar="DURATION",
                      help="with --tempo: the window ending now (less the cutoff), e.g. 15m")
    scan.add_argument("--start", metavar="T", help="with --tempo: window start, RFC 3339 or unix seconds")
    scan.add_argument("--end", metavar="T", help="with --tempo: window end, RFC 3339 or unix seconds")
    scan.add_argument("--settle", default=DEFAULT_SETTLE, metavar="DURATION",
                      help="with --tempo: a violation in a trace with spans newer than this is "
                      f"provisional, as late spans may still change it (default {DEFAULT_SETTLE})")
    scan.add_argument("--settled-only", action="store_true",
                      help="with --tempo: evaluate only the part of the window older than --settle "
                      "and leave out provisional violations")
    scan.add_argument("--search-limit", type=int, metavar="N",
                      help="fewest traces a Tempo search request asks for; dense windows ask for more "
                      f"(default {_default_text('search_limit')}); never changes results")
    scan.add_argument("--query-end-cutoff", metavar="DURATION",
                      help="newest data Tempo hides from search (its query_end_cutoff; "
                      f"default {_default_text('query_end_cutoff')})")
    scan.add_argument("--trace-margin", metavar="DURATION",
                      help="how far around the window to look for the rest of a trace "
                      f"(longest trace plus ingestion delay; default {_default_text('trace_margin')})")
    scan.add_argument("--max-search-bytes", metavar="SIZE",
                      help="largest search answer read from Tempo "
                      f"(default {_default_text('max_search_bytes')}); a larger one is an error")
    scan.add_argument("--max-trace-bytes", metavar="SIZE",
                      help=f"largest trace read from Tempo (default {_default_text('max_trace_bytes')}); "
                      "a larger trace is reported as not judged")
    _connection_options(scan)
    scan.add_argument("--format", choices=("text", "json"), default="text",
                      help="text: a table; json: one JSON object per violation per line")
    scan.add_argument("--exit-zero", action="store_true",
                      help="exit 0 even when violations are found")
    scan.set_defaults(func=cmd_scan)

    _daemon_commands(sub)
    _evidence_commands(sub)

    demo = sub.add_parser("demo", help="send realistic demo traces over OTLP/HTTP, some breaking rules")
    demo.add_argument("--otlp", required=True, metavar="URL",
                      help="OTLP/HTTP receiver, e.g. http://localhost:4318 (/v1/traces is added)")
    demo.add_argument("--rate", type=float, default=2.0, metavar="N", help="traces per second (default 2)")
    demo.add_argument("--violations", type=float, default=0.05, metavar="SHARE",
                      help="share of traces that break a starter rule, 0 to 1 (default 0.05)")
    demo.add_argument("--count", type=int, metavar="N", help="stop after N traces (default: until Ctrl-C)")
    demo.add_argument("--rules", type=Path, default=DEFAULT_RULES, metavar="DIR",
                      help="the rules that decide which demo traces break them (default: rules.d)")
    demo.add_argument("--seed", type=int, metavar="N", help="repeat the same choice of traces")
    demo.set_defaults(func=cmd_demo)

    schema = sub.add_parser("schema", help="print the JSON Schema of rule files or the config, for editors")
    schema.add_argument("document", choices=tuple(MODELS), metavar="rules|config",
                        help="rules: the rule-file format; config: the daemon's config file")
    schema.set_defaults(func=cmd_schema)
    return parser


def _connection_options(parser: argparse.ArgumentParser) -> None:
    """How to reach Tempo, the same for every command that takes ``--tempo``."""
    parser.add_argument("--tenant", metavar="T", help="Tempo tenant, sent as X-Scope-OrgID")
    parser.add_argument("--timeout", metavar="DURATION",
                        help=f"timeout of one Tempo request (default {_default_text('timeout')})")
    parser.add_argument("--retries", type=int, metavar="N",
                        help="retries of a failing Tempo request, with exponential backoff "
                        f"(default {_default_text('retries')})")
    parser.add_argument("--header", action="append", metavar="'NAME: VALUE'",
                        help="extra HTTP header for Tempo (repeatable); credentials come from "
                        "BETRACE_TEMPO__USERNAME/__PASSWORD or BETRACE_TEMPO__BEARER_TOKEN")
    parser.add_argument("--ca-bundle", metavar="FILE", help="CA certificates to verify Tempo's TLS")
    parser.add_argument("--insecure", action="store_true", help="do not verify Tempo's TLS certificate")


CONFIG_HELP = "settings file (default: betrace.yaml when present); BETRACE_* variables override it"


def _daemon_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser("run", help="the daemon: evaluate every rule on its schedule against Tempo")
    run.add_argument("--config", type=Path, metavar="FILE", help=CONFIG_HELP)
    run.add_argument("--once", action="store_true",
                     help="evaluate every due window of every rule once, then exit (for CronJobs)")
    run.add_argument("--exit-zero", action="store_true",
                     help="with --once: exit 0 when violations are found (they are recorded and notified)")
    run.set_defaults(func=cmd_run)

    found = sub.add_parser("violations", help="list the violations the daemon recorded")
    found.add_argument("--config", type=Path, metavar="FILE", help=CONFIG_HELP)
    found.add_argument("--rule", metavar="ID", help="only this rule")
    found.add_argument("--since", metavar="DURATION", help="only those found in the last DURATION, e.g. 24h")
    found.add_argument("--format", choices=("table", "json", "csv"), default="table",
                       help="table; json: one object per line, the fields of scan --format json "
                       "plus status, found_at and evaluation_id; csv: one row per violation")
    found.add_argument("--include-retracted", action="store_true",
                       help="also list violations withdrawn because late spans showed the trace compliant")
    found.set_defaults(func=cmd_violations)

    notify = sub.add_parser("notify", help="notification routes")
    notify_sub = notify.add_subparsers(dest="notify_command", required=True, metavar="ACTION")
    notify_test = notify_sub.add_parser("test", help="send a test message on a route and show the answer")
    notify_test.add_argument("route", metavar="ROUTE", help="a route name from the config's notifiers")
    notify_test.add_argument("--config", type=Path, metavar="FILE", help=CONFIG_HELP)
    notify_test.set_defaults(func=cmd_notify_test)



def _evidence_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    evidence = sub.add_parser("evidence", help="compliance evidence: verify the ledger, write reports")
    evidence_sub = evidence.add_subparsers(dest="evidence_command", required=True, metavar="ACTION")
    verify = evidence_sub.add_parser("verify", help="recompute the ledger's hash chain; print its head hash")
    verify.add_argument("--config", type=Path, metavar="FILE", help=CONFIG_HELP)
    verify.add_argument("--public-key", type=Path, metavar="FILE", action="append", default=[],
                        help="check every signed checkpoint with this Ed25519 public key (PEM); "
                        "repeatable, for keys rotated over the period")
    verify.add_argument("--witness", type=Path, metavar="FILE", action="append", default=[],
                        help="a witness file (evidence.witness_file's JSON lines) whose checkpoints must "
                        "hold too; repeatable")
    verify.set_defaults(func=cmd_evidence_verify)
    keygen = evidence_sub.add_parser("keygen", help="make an Ed25519 key pair for evidence.signing_key")
    keygen.add_argument("--out", type=Path, required=True, metavar="FILE",
                        help="the private key file; the public key goes to FILE.pub")
    keygen.set_defaults(func=cmd_evidence_keygen)
    checkpoint = evidence_sub.add_parser("checkpoint", help="sign the ledger head now (evidence.signing_key)")
    checkpoint.add_argument("--config", type=Path, metavar="FILE", help=CONFIG_HELP)
    checkpoint.set_defaults(func=cmd_evidence_checkpoint)
    verify_report = evidence_sub.add_parser("verify-report",
                                            help="check the signature an HTML or OSCAL report carries")
    verify_report.add_argument("report", type=Path, metavar="FILE", help="the report (HTML or OSCAL JSON)")
    verify_report.add_argument("--public-key", type=Path, required=True, metavar="FILE",
                               help="the Ed25519 public key (PEM) of evidence.signing_key")
    verify_report.set_defaults(func=cmd_evidence_verify_report)
    prune = evidence_sub.add_parser("prune", help="prune records older than evidence.retention, after a "
                                    "signed summary of them")
    prune.add_argument("--config", type=Path, metavar="FILE", help=CONFIG_HELP)
    prune.set_defaults(func=cmd_evidence_prune)
    report = evidence_sub.add_parser("report", help="coverage, gaps, violations and compliance per control")
    report.add_argument("--config", type=Path, metavar="FILE", help=CONFIG_HELP)
    report.add_argument("--from", dest="start", required=True, metavar="T",
                        help="period start, RFC 3339 or unix seconds")
    report.add_argument("--to", dest="end", required=True, metavar="T", help="period end (exclusive)")
    report.add_argument("--framework", metavar="NAME", help="only rules of this framework, e.g. SOC2")
    report.add_argument("--control", metavar="ID", help="only this control, e.g. CC6.7 or SOC2:CC6.7")
    report.add_argument("--rule", metavar="ID", help="only this rule")
    report.add_argument("--format", choices=FORMATS, default="html",
                        help="html (one self-contained page; the default), md, json, csv, or oscal "
                             "(OSCAL 1.1.3 assessment results; needs the oscal extra)")
    report.add_argument("--out", type=Path, metavar="FILE", help="write here (default: standard output)")
    report.set_defaults(func=cmd_evidence_report)

    back = sub.add_parser("backfill", help="evaluate one rule over a past period, window by window")
    back.add_argument("--config", type=Path, metavar="FILE", help=CONFIG_HELP)
    back.add_argument("--rule", required=True, metavar="ID", help="the rule to evaluate")
    back.add_argument("--from", dest="start", required=True, metavar="T",
                      help="period start, RFC 3339 or unix seconds (within Tempo's retention)")
    back.add_argument("--to", dest="end", required=True, metavar="T", help="period end (exclusive)")
    back.add_argument("--notify", action="store_true", help="send notifications for what it finds")
    back.set_defaults(func=cmd_backfill)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``betrace`` script."""
    configure()
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INVALID
    except (TraceSourceError, StoreError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_SOURCE
    except CheckerError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INVALID
    return code
