"""Benchmark OTLP/JSON decoding and rule evaluation on a realistic, generated workload.

Why it exists: the checker evaluates every enabled rule against every trace it pulls
from Tempo, so the cost per trace of ``Scanner.check`` bounds how much traffic one
process can prove invariants over. The design target is under 200 µs per trace for
100 rules, evaluation only, on one core. This script measures that figure (and, for
context, the cost and peak memory of decoding OTLP/JSON into traces) on data shaped
like production traffic, so a regression or an improvement shows up as a number.

Everything is generated deterministically from ``--seed``:

* rules: YAML rule-file text in a mix of shapes (when/always/never, ``.where()``
  predicates with ``and``/``or``/``not``/``in``/``matches``/``contains``, counts, legacy
  bare conditions), loaded through ``checker.rules.load.load_text`` so they pass the
  real parser, lint and normalisation;
* traces: business flows (checkout, login, patient records, search, ...) over ~65
  span names and ~20 typed attributes, padded with infrastructure spans, written as
  OTLP/JSON Lines (a few traces per line, like the Collector's file exporter).

Rules cluster on the low-traffic, compliance-heavy flows (patient records, refunds,
admin), so a few traces are candidates for many rules while most are candidates for
few, and optional flow steps are sometimes skipped, so a realistic minority of traces
violate something.

Run on demand (not part of the test suite)::

    /work/main/.venv/bin/python bench/bench_evaluate.py [--rules 100] [--traces 10000]
        [--spans 20] [--seed 1] [--repeat 3] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import platform
import pstats
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import checker
from checker.engine import Scanner
from checker.rules.load import load_text
from checker.traces import otlp
from checker.traces.model import Trace

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from checker.rules.rule import Rule
    from checker.traces.model import AttrValue

TARGET_US_PER_TRACE = 200.0
COMMON = 0.97  # steps at least this likely are what `always` asks for
NS_PER_MS = 1_000_000
MIB = 1024 * 1024

# --------------------------------------------------------------------------- attributes


@dataclass(frozen=True)
class AttrSpec:
    """How one attribute's values are drawn, and predicates on it for rule writing.

    ``likely`` predicates hold for almost every value (used in ``always``), ``rare`` ones
    almost never (used in ``never``), ``mixed`` ones for a fair share (used in ``when``).
    """

    draw: Callable[[random.Random], AttrValue]
    likely: tuple[str, ...]
    rare: tuple[str, ...]
    mixed: tuple[str, ...]


def pick(*weighted: tuple[Any, float]) -> Callable[[random.Random], Any]:
    """A drawer choosing among values with the given weights."""
    values = [v for v, _ in weighted]
    weights = [w for _, w in weighted]
    return lambda rng: rng.choices(values, weights)[0]


def flags(rng: random.Random) -> tuple[str, ...]:
    names = ("new-checkout", "beta-search", "dark-mode", "fast-refunds", "v2-auth", "beta-recs")
    return tuple(rng.sample(names, rng.randint(1, 3)))


STATEMENTS = (
    ("SELECT id, total FROM orders WHERE id = $1", 30.0),
    ("SELECT * FROM patients WHERE id = $1", 10.0),
    ("SELECT sku, qty FROM inventory WHERE sku = ANY($1)", 20.0),
    ("INSERT INTO audit_events (actor, action) VALUES ($1, $2)", 15.0),
    ("UPDATE carts SET items = $1 WHERE id = $2", 15.0),
    ("DELETE FROM sessions WHERE expires_at < now()", 5.0),
    ("DROP TABLE tmp_import", 0.02),
)
STRING_RE = '"[a-z_-]+"'

ATTRS: dict[str, AttrSpec] = {
    "http.method": AttrSpec(
        pick(("GET", 55), ("POST", 30), ("PUT", 8), ("DELETE", 4), ("PATCH", 3)),
        ('http.method in ["GET", "POST", "PUT", "DELETE", "PATCH"]',),
        ('http.method == "TRACE"',),
        ('http.method == "POST"', 'http.method != "GET"', 'http.method in ["PUT", "PATCH"]'),
    ),
    "http.route": AttrSpec(
        pick(("/api/v1/orders/{id}", 30), ("/api/v2/search", 40), ("/internal/health", 0.1),
             ("/api/v1/patients/{id}", 10), ("/api/v1/login", 18)),
        ('http.route matches "/.*"',),
        ('http.route contains "/internal/"',),
        ('http.route matches "/api/v1/.*"', 'http.route contains "patients"'),
    ),
    "http.status_code": AttrSpec(
        pick((200, 80), (201, 5), (204, 3), (400, 3), (401, 2), (403, 1.5), (404, 3),
             (429, 0.2), (500, 0.4), (503, 0.1)),
        ("http.status_code < 500", "http.status_code != 503"),
        ("http.status_code >= 500", "http.status_code == 429"),
        ("http.status_code >= 400", "http.status_code in [401, 403]", "http.status_code == 200"),
    ),
    "user.id": AttrSpec(
        lambda rng: f"u-{rng.randrange(100_000):05d}",
        ('user.id matches "u-[0-9]+"',),
        ('user.id == "u-00000"', 'user.id contains "admin"'),
        ('user.id matches "u-0.*"', 'user.id != "u-00001"'),
    ),
    "user.role": AttrSpec(
        pick(("customer", 80), ("support", 8), ("admin", 4), ("service", 6), ("guest", 0.2)),
        ('user.role != "guest"', 'user.role in ["customer", "support", "admin", "service"]'),
        ('user.role == "guest"', 'user.role not in ["customer", "support", "admin", "service", "guest"]'),
        ('user.role == "admin"', 'user.role in ["admin", "support"]', 'user.role != "customer"'),
    ),
    "tenant.id": AttrSpec(
        lambda rng: f"t-{rng.randrange(200):03d}",
        ('tenant.id matches "t-[0-9]{3}"',),
        ('tenant.id == "t-999"',),
        ('tenant.id in ["t-001", "t-002", "t-003", "t-004"]', 'tenant.id matches "t-0[0-4].*"'),
    ),
    "amount": AttrSpec(
        lambda rng: round(rng.lognormvariate(4.0, 1.5), 2),
        ("amount > 0", "amount < 100000"),
        ("amount > 25000", "amount <= 0"),
        ("amount > 1000", "amount >= 250.0", "amount < 20"),
    ),
    "currency": AttrSpec(
        pick(("USD", 50), ("EUR", 25), ("GBP", 10), ("JPY", 5), ("CHF", 3), ("CAD", 7)),
        ('currency in ["USD", "EUR", "GBP", "JPY", "CHF", "CAD"]', 'currency matches "[A-Z]{3}"'),
        ('currency not in ["USD", "EUR", "GBP", "JPY", "CHF", "CAD"]', 'currency == "XXX"'),
        ('currency == "EUR"', 'currency != "USD"', 'currency in ["GBP", "CHF"]'),
    ),
    "payment.method": AttrSpec(
        pick(("card", 70), ("paypal", 15), ("bank_transfer", 10), ("gift_card", 5)),
        (f"payment.method matches {STRING_RE}",),
        ('payment.method == "crypto"',),
        ('payment.method == "card"', 'payment.method in ["paypal", "gift_card"]'),
    ),
    "approved": AttrSpec(
        lambda rng: rng.random() < 0.995,
        ("approved", "approved == true"),
        ("approved == false",),
        ("approved",),
    ),
    "data.contains_pii": AttrSpec(
        lambda rng: rng.random() < 0.6,
        ("not data.contains_pii or encrypted",),
        ("data.contains_pii and not encrypted",),
        ("data.contains_pii", "data.contains_pii == true", "not data.contains_pii"),
    ),
    "encrypted": AttrSpec(
        lambda rng: rng.random() < 0.995,
        ("encrypted", "encrypted == true"),
        ("encrypted == false",),
        ("encrypted",),
    ),
    "db.system": AttrSpec(
        pick(("postgresql", 60), ("mysql", 15), ("redis", 20), ("mongodb", 5)),
        ('db.system != "sqlite"',),
        ('db.system == "sqlite"',),
        ('db.system == "postgresql"', 'db.system in ["mysql", "mongodb"]'),
    ),
    "db.statement": AttrSpec(
        pick(*STATEMENTS),
        ('db.statement matches "(SELECT|INSERT|UPDATE|DELETE) .*"',),
        ('db.statement contains "DROP TABLE"', 'db.statement matches "TRUNCATE .*"'),
        ('db.statement matches "SELECT .*"', 'db.statement contains "patients"'),
    ),
    "retry.count": AttrSpec(
        pick((0, 80), (1, 12), (2, 5), (3, 2), (4, 0.08), (5, 0.02)),
        ("retry.count <= 3",),
        ("retry.count > 3", "retry.count >= 5"),
        ("retry.count > 0", "retry.count in [1, 2]"),
    ),
    "log_type": AttrSpec(
        pick(("hipaa_audit", 30), ("gdpr_audit", 30), ("access_audit", 40), ("debug", 0.1)),
        ('log_type matches "[a-z]+_audit"', 'log_type != "debug"'),
        ('log_type == "debug"',),
        ('log_type == "hipaa_audit"', 'log_type in ["gdpr_audit", "hipaa_audit"]'),
    ),
    "mfa.verified": AttrSpec(
        lambda rng: rng.random() < 0.995,
        ("mfa.verified",),
        ("mfa.verified == false",),
        ("mfa.verified",),
    ),
    "cart.items": AttrSpec(
        lambda rng: min(40, 1 + int(rng.expovariate(0.25))),
        ("cart.items >= 1",),
        ("cart.items > 100",),
        ("cart.items > 10", "cart.items in [1, 2]"),
    ),
    "messaging.destination": AttrSpec(
        pick(("orders", 40), ("payments", 20), ("emails", 20), ("audit-events", 10), ("shipments", 10)),
        ('messaging.destination matches "[a-z-]+"',),
        ('messaging.destination contains "dlq"',),
        ('messaging.destination == "payments"', 'messaging.destination in ["orders", "shipments"]'),
    ),
    "feature.flags": AttrSpec(
        flags,
        ('feature.flags != "kill-switch"',),
        ('feature.flags == "kill-switch"',),
        ('feature.flags contains "beta"', 'feature.flags == "new-checkout"'),
    ),
    "queue.lag_ms": AttrSpec(
        lambda rng: round(rng.expovariate(1 / 40), 3),
        ("queue.lag_ms < 60000.0",),
        ("queue.lag_ms > 30000.0",),
        ("queue.lag_ms > 100.0", "queue.lag_ms <= 5.5"),
    ),
    "peer.service": AttrSpec(
        pick(("payment-gateway", 30), ("fraud-api", 20), ("email-provider", 15), ("carrier-api", 15),
             ("kms", 20)),
        (f"peer.service matches {STRING_RE}",),
        ('peer.service contains "legacy"',),
        ('peer.service == "fraud-api"', 'peer.service in ["kms", "payment-gateway"]'),
    ),
}

# Resource attributes, reached through the unscoped span-then-resource lookup.
RESOURCE_PREDICATES = AttrSpec(
    lambda _rng: "",
    ('deployment.environment.name == "production"', 'telemetry.sdk.language in ["python", "java", "go"]'),
    ('deployment.environment.name == "dev"', 'cloud.region matches "ap-.*"'),
    ('cloud.region matches "eu-.*"', 'deployment.environment.name != "production"'),
)
INTRINSIC_PREDICATES = AttrSpec(
    lambda _rng: "",
    ("span:status != error", "span:duration < 30s", "span:kind != unspecified"),
    ("span:status == error", "span:duration > 2s", 'span:statusMessage contains "timeout"'),
    ("span:duration > 50ms", "span:kind == client", "span:status == error"),
)

# ------------------------------------------------------------------------- vocabulary

KIND_CODES = {"internal": 1, "server": 2, "client": 3, "producer": 4, "consumer": 5}


@dataclass(frozen=True)
class Step:
    """A span name in a flow: how often it occurs, how many times, and its attributes."""

    name: str
    attrs: tuple[str, ...]
    p: float = 1.0
    times: tuple[int, int] = (1, 1)
    kind: str = "internal"


@dataclass(frozen=True)
class Flow:
    """A business flow: one service's root span and the steps under it."""

    name: str
    service: str
    traffic: float  # share of traces whose main flow this is
    rule_share: float  # share of the rules written about it
    team: str
    framework: str
    steps: tuple[Step, ...]

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.steps]


HTTP = ("http.method", "http.route", "http.status_code")
FLOWS: tuple[Flow, ...] = (
    Flow("checkout", "checkout-api", 18, 14, "payments", "PCI-DSS", (
        Step("POST /checkout", (*HTTP, "user.id", "tenant.id", "feature.flags"), kind="server"),
        Step("cart.load", ("user.id", "cart.items", "tenant.id")),
        Step("inventory.reserve", ("cart.items", "retry.count"), 0.99),
        Step("fraud.score", ("amount", "user.id", "peer.service"), 0.9, kind="client"),
        Step("payment.authorize", ("amount", "currency", "payment.method", "approved", "encrypted",
                                   "peer.service"), 0.985, kind="client"),
        Step("payment.capture", ("amount", "currency", "approved"), 0.98),
        Step("order.create", ("amount", "currency", "user.id", "cart.items"), 0.99),
        Step("email.send_confirmation", ("user.id", "messaging.destination"), 0.9, kind="producer"),
        Step("audit.log", ("log_type", "user.id"), 0.6),
    )),
    Flow("login", "identity-service", 22, 12, "identity", "SOC2", (
        Step("POST /login", (*HTTP, "user.id"), kind="server"),
        Step("auth.password_check", ("user.id", "retry.count"), 1.0, (1, 2)),
        Step("auth.mfa_challenge", ("user.id", "mfa.verified"), 0.7),
        Step("auth.token_issue", ("user.id", "user.role", "tenant.id"), 0.99),
        Step("session.create", ("user.id", "tenant.id", "encrypted"), 0.99),
        Step("audit.log", ("log_type", "user.id"), 0.95),
    )),
    Flow("patient", "patient-api", 5, 17, "privacy", "HIPAA", (
        Step("GET /patients/{id}", (*HTTP, "user.id", "tenant.id"), kind="server"),
        Step("authz.check", ("user.id", "user.role", "approved"), 0.995),
        Step("patient.read", ("user.id", "tenant.id", "data.contains_pii")),
        Step("pii.access", ("data.contains_pii", "encrypted", "user.id"), 0.9),
        Step("consent.check", ("user.id", "approved"), 0.85),
        Step("record.decrypt", ("encrypted", "peer.service"), 0.9),
        Step("kms.decrypt", ("peer.service", "retry.count"), 0.9, kind="client"),
        Step("audit.log", ("log_type", "user.id"), 0.99),
        Step("phi.export", ("user.id", "encrypted", "data.contains_pii"), 0.05),
    )),
    Flow("search", "search-api", 30, 5, "discovery", "SOC2", (
        Step("GET /search", (*HTTP, "tenant.id"), kind="server"),
        Step("search.query", ("user.id", "tenant.id", "feature.flags")),
        Step("search.rank", ("feature.flags",), 0.95, (1, 4)),
        Step("search.suggest", ("user.id",), 0.5),
        Step("catalog.lookup", ("tenant.id",), 0.9, (1, 5)),
        Step("recommendation.fetch", ("user.id", "feature.flags", "peer.service"), 0.6, kind="client"),
    )),
    Flow("refund", "refund-service", 3, 11, "payments", "SOX", (
        Step("POST /refunds", (*HTTP, "user.id"), kind="server"),
        Step("refund.request", ("amount", "currency", "user.id", "user.role")),
        Step("refund.approve", ("approved", "user.role", "amount"), 0.95),
        Step("fraud.score", ("amount", "user.id", "peer.service"), 0.8, kind="client"),
        Step("ledger.write", ("amount", "currency", "retry.count"), 0.99),
        Step("payment.reverse", ("amount", "currency", "approved", "peer.service"), 0.97, kind="client"),
        Step("audit.log", ("log_type", "user.id"), 0.97),
    )),
    Flow("admin", "admin-api", 2, 10, "platform", "SOC2", (
        Step("PUT /admin/users/{id}", (*HTTP, "user.id", "user.role"), kind="server"),
        Step("admin.user_update", ("user.id", "user.role", "tenant.id"), 0.8),
        Step("admin.role_grant", ("user.role", "user.id", "approved"), 0.3),
        Step("admin.approval", ("approved", "user.id", "mfa.verified"), 0.97),
        Step("config.change", ("user.id", "feature.flags"), 0.3),
        Step("feature_flag.update", ("feature.flags", "user.id"), 0.2),
        Step("audit.log", ("log_type", "user.id"), 0.99),
    )),
    Flow("shipping", "shipping-service", 8, 8, "logistics", "ISO27001", (
        Step("POST /shipments", (*HTTP, "tenant.id"), kind="server"),
        Step("shipment.create", ("cart.items", "tenant.id")),
        Step("carrier.quote", ("peer.service", "amount", "currency"), 0.95, (1, 3), kind="client"),
        Step("shipment.label", ("peer.service", "retry.count"), 0.97),
        Step("warehouse.pick", ("cart.items",), 0.97),
        Step("tracking.update", ("messaging.destination",), 0.8, kind="producer"),
    )),
    Flow("events", "event-worker", 9, 8, "platform", "SOC2", (
        Step("orders process", ("messaging.destination", "queue.lag_ms"), kind="consumer"),
        Step("queue.consume", ("messaging.destination", "queue.lag_ms", "retry.count"), kind="consumer"),
        Step("event.process", ("messaging.destination", "tenant.id"), 0.99),
        Step("queue.publish", ("messaging.destination",), 0.7, kind="producer"),
        Step("dlq.publish", ("messaging.destination", "retry.count"), 0.02, kind="producer"),
        Step("webhook.deliver", ("peer.service", "http.status_code", "retry.count"), 0.4, kind="client"),
    )),
    Flow("reports", "report-worker", 3, 6, "data", "GDPR", (
        Step("report.generate", ("tenant.id", "user.id"), kind="server"),
        Step("export.csv", ("data.contains_pii", "user.id"), 0.8),
        Step("storage.upload", ("encrypted", "peer.service"), 0.97, kind="client"),
        Step("storage.signed_url", ("user.id",), 0.5),
    )),
)

# Infrastructure spans pad every trace; their weights are how often each is drawn.
INFRA: tuple[tuple[Step, float], ...] = (
    (Step("db.query", ("db.system", "db.statement", "retry.count"), kind="client"), 30),
    (Step("cache.get", ("db.system", "tenant.id"), kind="client"), 15),
    (Step("http.client.request", ("http.method", "http.status_code", "peer.service", "retry.count"),
          kind="client"), 12),
    (Step("log.write", ("log_type",)), 10),
    (Step("grpc.call", ("peer.service", "retry.count"), kind="client"), 8),
    (Step("cache.set", ("db.system", "tenant.id"), kind="client"), 6),
    (Step("feature_flag.evaluate", ("feature.flags", "user.id")), 6),
    (Step("rate_limit.check", ("tenant.id", "approved")), 4),
    (Step("dns.lookup", ("peer.service",), kind="client"), 3),
    (Step("tls.handshake", ("peer.service", "encrypted"), kind="client"), 3),
)
INFRA_FLOW = Flow("infra", "shared", 0, 9, "sre", "SOC2", tuple(s for s, _ in INFRA))

STEP_ATTRS: dict[str, tuple[str, ...]] = {
    s.name: s.attrs for f in (*FLOWS, INFRA_FLOW) for s in f.steps
}

# ---------------------------------------------------------------------------- rules


@dataclass
class RuleWriter:
    """Writes rule conditions about one flow, using its steps' attributes.

    Triggers are names only this flow has; ``always`` names steps the flow (nearly) always
    has; ``never`` names steps it seldom has, or names of other flows.
    """

    rng: random.Random
    flow: Flow
    shared: frozenset[str]  # names in more than one flow
    elsewhere: list[str]  # names of other business flows, not of this one

    def _pool(self, pool: str, avoid: set[str]) -> list[str]:
        steps = [s for s in self.flow.steps if s.name not in avoid]
        match pool:
            case "trigger":
                names = [s.name for s in steps if s.p >= 0.5 and s.name not in self.shared]
            case "common":
                names = [s.name for s in steps if s.p >= COMMON]
            case "rare":
                names = [s.name for s in steps if s.p <= 0.3]
                if not names or self.rng.random() < 0.5:
                    names = [n for n in self.elsewhere if n not in avoid]
            case _:
                names = [s.name for s in steps]
        return names or [s.name for s in steps]

    def name(self, pool: str = "any", avoid: Iterable[str] = ()) -> str:
        """A span name from ``pool`` (trigger, common, rare or any), quoted when needed."""
        return self.quote(self.rng.choice(self._pool(pool, {a.strip('"') for a in avoid})))

    @staticmethod
    def quote(name: str) -> str:
        return f'"{name}"' if " " in name else name

    def leaf(self, span: str, flavour: str, avoid: str = "") -> str:
        """One predicate of the given flavour (likely, rare or mixed) on span ``span``."""
        for _ in range(5):
            roll = self.rng.random()
            if roll < 0.08:
                spec = RESOURCE_PREDICATES
            elif roll < 0.2:
                spec = INTRINSIC_PREDICATES
            else:
                keys = STEP_ATTRS.get(span.strip('"'), ("user.id",))
                spec = ATTRS[self.rng.choice(keys)]
            text: str = self.rng.choice(getattr(spec, flavour))
            if text != avoid:
                break
        return text

    def two(self, span: str, flavour: str, joiner: str, second: str | None = None) -> str:
        first = self.leaf(span, flavour)
        other = self.leaf(span, second or flavour, avoid=first)
        return first if other == first else f"{first} {joiner} {other}"

    def pred(self, span: str, flavour: str) -> str:
        """A ``.where()`` body: one predicate, or two joined, or a negation."""
        roll = self.rng.random()
        if roll < 0.55:
            return self.leaf(span, flavour)
        if roll < 0.8:
            return self.two(span, flavour, "and", "likely" if flavour == "mixed" else None)
        if roll < 0.9:
            return self.two(span, flavour, "or")
        opposite = {"likely": "rare", "rare": "likely", "mixed": "mixed"}[flavour]
        return f"not ({self.leaf(span, opposite)})"

    def check(self, pool: str, flavour: str, *, where: float = 0.5, avoid: Iterable[str] = ()) -> str:
        """A span check, with a ``.where()`` with probability ``where``."""
        span = self.name(pool, avoid)
        if self.rng.random() < where:
            return f"{span}.where({self.pred(span, flavour)})"
        return span

    def repeated(self) -> tuple[str, int]:
        """A span name that occurs several times per trace, and a count above its usual."""
        options = [(s.name, s.times[1] + 2) for s in self.flow.steps if s.times[1] > 1]
        options += [("db.query", 18), ("cache.get", 10), ("http.client.request", 8)]
        if self.flow is not INFRA_FLOW:
            options += [(s.name, 1) for s in self.flow.steps[1:] if s.p >= COMMON][:2]
        name, limit = self.rng.choice(options)
        return self.quote(name), limit


def when_always(w: RuleWriter) -> str:
    a = w.name("trigger")
    return f"when {{ {a} }}\nalways {{ {w.name('common', avoid=[a])} }}"


def when_where_always_never(w: RuleWriter) -> str:
    a = w.name("trigger")
    b = w.check("common", "likely", where=0.3, avoid=[a])
    c = w.check("rare", "rare", where=0.8)
    return f"when {{ {a}.where({w.pred(a, 'mixed')}) }}\nalways {{ {b} }}\nnever {{ {c} }}"


def never_count(w: RuleWriter) -> str:
    name, limit = w.repeated()
    return f"never {{ count({name}) > {limit} }}"


def count_equal(w: RuleWriter) -> str:
    x = w.name("trigger", avoid=[w.flow.names[0]])
    y = w.quote(w.rng.choice([s.name for s in w.flow.steps[1:]
                              if s.times == (1, 1) and s.p >= COMMON and s.name != x]))
    op = w.rng.choice(["==", "==", "<="])
    return f"when {{ {x} }}\nalways {{ count({x}) {op} count({y}) }}"


def where_and_in(w: RuleWriter) -> str:
    a = w.name("trigger")
    b = w.check("common", "likely", where=0.9, avoid=[a])
    return f"when {{ {a}.where({w.two(a, 'mixed', 'and', 'mixed')}) }}\nalways {{ {b} }}"


def always_or(w: RuleWriter) -> str:
    a = w.name("trigger")
    b = w.check("common", "likely", where=1.0, avoid=[a])
    return f"when {{ {a} }}\nalways {{ {b} or {w.name('any', avoid=[a])} }}"


def or_trigger(w: RuleWriter) -> str:
    a = w.name("trigger")
    b = w.name("trigger", avoid=[a])
    c = w.check("common", "likely", where=0.4, avoid=[a, b])
    return f"when {{ {a} or {b} }}\nalways {{ {c} }}"


def and_not_trigger(w: RuleWriter) -> str:
    a = w.name("trigger")
    scope = f"{a}.where({w.pred(a, 'mixed')}) and not {w.name('rare')}"
    return f"when {{ {scope} }}\nnever {{ {w.check('rare', 'rare', where=0.7)} }}"


def bare_legacy(w: RuleWriter) -> str:
    a = w.name("trigger")
    return f"{a} and {w.name('common', avoid=[a])} and not {w.name('rare')}"


def bare_legacy_where(w: RuleWriter) -> str:
    a = w.name("trigger")
    b = w.check("common", "likely", where=1.0, avoid=[a])
    return f"{a}.where({w.pred(a, 'mixed')}) and {b} and not {w.check('rare', 'rare', where=1.0)}"


def bare_single(w: RuleWriter) -> str:
    return w.check("any", "rare", where=1.0)


def never_where(w: RuleWriter) -> str:
    return f"never {{ {w.check('any', 'rare', where=1.0)} }}"


def never_or(w: RuleWriter) -> str:
    a = w.check("any", "rare", where=1.0)
    return f"never {{ {a} or {w.check('any', 'rare', where=1.0, avoid=[a.split('.where')[0]])} }}"


def global_always(w: RuleWriter) -> str:
    # No `when` and an `always`: the scanner cannot skip it, it runs on every trace.
    return f"always {{ not {w.check('any', 'rare', where=1.0)} }}"


def count_compare(w: RuleWriter) -> str:
    a = w.name("trigger")
    b = w.name("common", avoid=[a])
    return f"when {{ {a} }}\nnever {{ count({b}) > count({a}) and {w.check('rare', 'rare', where=0.5)} }}"


def nested(w: RuleWriter) -> str:
    a = w.name("trigger")
    b = w.name("trigger", avoid=[a])
    scope = f"({a} or {b}) and {w.check('common', 'mixed', where=1.0)}"
    return f"when {{ {scope} }}\nalways {{ {w.name('common')} and not {w.check('rare', 'rare')} }}"


TEMPLATES: tuple[tuple[Callable[[RuleWriter], str], int], ...] = (
    (when_always, 3), (when_where_always_never, 2), (never_count, 1), (count_equal, 1),
    (where_and_in, 2), (always_or, 1), (or_trigger, 1), (and_not_trigger, 1), (bare_legacy, 2),
    (bare_legacy_where, 1), (bare_single, 1), (never_where, 2), (never_or, 1), (global_always, 1),
    (count_compare, 1), (nested, 1),
)
# Infrastructure spans occur independently of each other, so rules about them only forbid.
INFRA_TEMPLATES = (never_count, never_where, never_or, bare_single)
SEVERITY_CHOICES = ("critical", "high", "high", "medium", "medium", "medium", "low", "info")


def rules_yaml(count: int, rng: random.Random) -> str:
    """Rule-file text holding ``count`` rules spread over the flows by their rule share."""
    deck = [t for t, weight in TEMPLATES for _ in range(weight)]
    rng.shuffle(deck)
    flows = [*FLOWS, INFRA_FLOW]
    seen = Counter(n for f in FLOWS for n in set(f.names))
    shared = frozenset(n for n, times in seen.items() if times > 1)
    lines = ["# Generated by bench/bench_evaluate.py; not a real rule set.", "rules:"]
    for i in range(count):
        flow = rng.choices(flows, [f.rule_share for f in flows])[0]
        elsewhere = sorted(n for n in seen if n not in flow.names)
        template = deck[i % len(deck)] if flow is not INFRA_FLOW else rng.choice(INFRA_TEMPLATES)
        condition = template(RuleWriter(rng, flow, shared, elsewhere))
        rule_id = f"bench-{i + 1:03d}-{flow.name}-{template.__name__.replace('_', '-')}"
        lines += [
            f"  - id: {rule_id}",
            f'    name: "{flow.name}: {template.__name__.replace("_", " ")} #{i + 1}"',
            f"    severity: {rng.choice(SEVERITY_CHOICES)}",
            f"    compliance_frameworks: [{flow.framework}]",
            f'    controls: ["{flow.framework}:BENCH-{i + 1}"]',
            f"    labels: {{ team: {flow.team} }}",
            "    condition: |",
            *(f"      {line}" for line in condition.splitlines()),
        ]
    return "\n".join(lines) + "\n"


def make_rules(count: int, seed: int) -> tuple[list[Rule], int, str]:
    """Rules through the real loader; any load error aborts the benchmark."""
    text = rules_yaml(count, random.Random(f"rules-{seed}"))
    loaded = load_text(text, "bench")
    if loaded.errors:
        for error in loaded.errors[:5]:
            print(error, file=sys.stderr)
        raise SystemExit(f"{len(loaded.errors)} generated rules failed to load")
    if len(loaded.rules) != count:
        raise SystemExit(f"expected {count} rules, loaded {len(loaded.rules)}")
    return loaded.rules, len(loaded.warnings), text


# --------------------------------------------------------------------------- traces


@dataclass
class Resource:
    """One service instance: its OTLP resource attributes."""

    service: str
    attributes: dict[str, AttrValue]


REGIONS = (("us-east-1", "production", 50), ("eu-west-1", "production", 30),
           ("eu-central-1", "production", 18), ("us-west-2", "staging", 2))


def resources_for(service: str, rng: random.Random) -> list[Resource]:
    """One instance per region; ``TraceBuilder`` draws them by the region's weight."""
    language = rng.choice(["python", "java", "go"])
    version = f"{rng.randint(1, 4)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}"
    out = []
    for i, (region, environment, _) in enumerate(REGIONS):
        attrs: dict[str, AttrValue] = {
            "service.name": service,
            "service.version": version,
            "service.instance.id": f"{service}-{i}",
            "deployment.environment.name": environment,
            "cloud.region": region,
            "host.name": f"ip-10-0-{i}-{rng.randint(1, 254)}",
            "telemetry.sdk.language": language,
            "telemetry.sdk.name": "opentelemetry",
        }
        out.append(Resource(service, attrs))
    return out
REGION_WEIGHTS = [w for _, _, w in REGIONS]


@dataclass
class TraceBuilder:
    """Builds one trace's spans as OTLP/JSON span objects, keyed by service instance."""

    rng: random.Random
    trace_id: str
    start_ns: int
    resources: dict[str, list[Resource]]
    spans: list[tuple[Resource, dict[str, Any]]] = field(default_factory=list)
    # (span id, resource, start, end) of spans that can be parents
    parents: list[tuple[str, Resource, int, int]] = field(default_factory=list)

    def add(self, step: Step, parent: tuple[str, Resource, int, int] | None,
            resource: Resource | None = None) -> tuple[str, Resource, int, int]:
        rng = self.rng
        if parent is None:
            start, budget = self.start_ns, int(rng.lognormvariate(18.0, 1.0))  # ~65 ms median
            res = resource or rng.choices(self.resources["shared"], REGION_WEIGHTS)[0]
        else:
            _, parent_res, p_start, p_end = parent
            start = rng.randint(p_start, max(p_start, p_end - 1000))
            budget = max(1000, int((p_end - start) * rng.uniform(0.05, 0.9)))
            res = resource or parent_res
        end = start + budget
        span_id = f"{rng.getrandbits(64):016x}"
        error = rng.random() < 0.003
        status: dict[str, Any] = {"code": 2, "message": rng.choice(["timeout", "upstream reset"])} \
            if error else {}
        attrs = [otlp_kv(key, ATTRS[key].draw(rng)) for key in step.attrs]
        obj: dict[str, Any] = {
            "traceId": self.trace_id,
            "spanId": span_id,
            "parentSpanId": parent[0] if parent else "",
            "name": step.name,
            "kind": KIND_CODES[step.kind],
            "startTimeUnixNano": str(start),
            "endTimeUnixNano": str(end),
            "attributes": attrs,
            "status": status,
        }
        self.spans.append((res, obj))
        node = (span_id, res, start, end)
        self.parents.append(node)
        return node

    def flow(self, flow: Flow, parent: tuple[str, Resource, int, int] | None) -> None:
        resource = self.rng.choices(self.resources[flow.service], REGION_WEIGHTS)[0]
        root = self.add(flow.steps[0], parent, resource)
        for step in flow.steps[1:]:
            if self.rng.random() < step.p:
                for _ in range(self.rng.randint(*step.times)):
                    self.add(step, root)

    def pad(self, total: int) -> None:
        steps = [s for s, _ in INFRA]
        weights = [w for _, w in INFRA]
        while len(self.spans) < total:
            self.add(self.rng.choices(steps, weights)[0], self.rng.choice(self.parents))


def otlp_value(value: AttrValue) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}  # int64 is a string in OTLP/JSON
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, tuple):
        return {"arrayValue": {"values": [otlp_value(v) for v in value]}}
    return {"stringValue": value}


def otlp_kv(key: str, value: AttrValue) -> dict[str, Any]:
    return {"key": key, "value": otlp_value(value)}


def make_trace(rng: random.Random, index: int, mean_spans: int,
               resources: dict[str, list[Resource]]) -> list[tuple[Resource, dict[str, Any]]]:
    """One trace: a main flow, sometimes a second flow it calls, padded with infrastructure."""
    start = 1_767_225_600 * 10**9 + index * 37 * NS_PER_MS + rng.randrange(NS_PER_MS)
    builder = TraceBuilder(rng, f"{rng.getrandbits(128):032x}", start, resources)
    main = rng.choices(FLOWS, [f.traffic for f in FLOWS])[0]
    builder.flow(main, None)
    if rng.random() < 0.25:
        other = rng.choices(FLOWS, [f.traffic for f in FLOWS])[0]
        builder.flow(other, builder.parents[0])
    target = max(len(builder.spans) + 1, round(rng.gauss(mean_spans, mean_spans / 4)))
    builder.pad(min(target, mean_spans * 3))
    return builder.spans


def write_traces(path: Path, count: int, mean_spans: int, seed: int) -> tuple[int, int]:
    """OTLP/JSON Lines: each line one ExportTraceServiceRequest holding 1-4 whole traces."""
    rng = random.Random(f"traces-{seed}")
    services = sorted({f.service for f in FLOWS} | {"shared"})
    resources = {s: resources_for(s, rng) for s in services}
    spans_written = lines = 0
    with path.open("w", encoding="utf-8") as out:
        index = 0
        while index < count:
            batch = min(count - index, rng.randint(1, 4))
            by_resource: dict[int, tuple[Resource, list[dict[str, Any]]]] = {}
            for _ in range(batch):
                for res, span in make_trace(rng, index, mean_spans, resources):
                    by_resource.setdefault(id(res), (res, []))[1].append(span)
                    spans_written += 1
                index += 1
            request = {"resourceSpans": [
                {
                    "resource": {"attributes": [otlp_kv(k, v) for k, v in res.attributes.items()]},
                    "scopeSpans": [{"scope": {"name": "bench", "version": "1.0.0"}, "spans": spans}],
                }
                for res, spans in by_resource.values()
            ]}
            out.write(json.dumps(request, separators=(",", ":")) + "\n")
            lines += 1
    return spans_written, lines


# ----------------------------------------------------------------------- measurement


def best_of(repeat: int, run: Callable[[], float]) -> float:
    """Fastest of ``repeat`` runs of a function that returns its own timed seconds."""
    return min(run() for _ in range(repeat))


def decode(path: Path) -> list[Trace]:
    return list(otlp.read_traces([path]))


def timed_decode(path: Path) -> float:
    gc.collect()
    t0 = time.perf_counter()
    decode(path)
    return time.perf_counter() - t0


def timed_evaluate(rules: Sequence[Rule], traces: Sequence[Trace]) -> float:
    """One pass of ``Scanner.check`` over all traces; building the scanner is not timed."""
    scanner = Scanner(rules)
    check = scanner.check
    gc.collect()
    t0 = time.perf_counter()
    for trace in traces:
        check(trace)
    return time.perf_counter() - t0


def timed_violating(rules: Sequence[Rule], traces: Sequence[Trace], passes: int = 20) -> float:
    """``passes`` runs of ``Scanner.check`` over traces that violate a rule, per pass.

    Every such trace is explained, so this figure moves with the cost of explanations,
    which ``timed_evaluate`` hides among the (far more numerous) traces that pass.
    """
    scanner = Scanner(rules)
    check = scanner.check
    gc.collect()
    t0 = time.perf_counter()
    for _ in range(passes):
        for trace in traces:
            check(trace)
    return (time.perf_counter() - t0) / passes


def decode_memory(path: Path) -> tuple[int, int]:
    """Peak and retained bytes (tracemalloc) of decoding the whole file into traces."""
    gc.collect()
    tracemalloc.start()
    try:
        traces = decode(path)
        retained, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del traces
    return peak, retained


@dataclass
class Results:
    """Everything the report prints."""

    args: argparse.Namespace
    rules: list[Rule]
    warnings: int
    traces: list[Trace]
    spans: int
    lines: int
    size: int
    generate_s: float
    decode_s: float
    eval_s: float
    build_s: float
    peak: int
    retained: int
    candidates: list[int] = field(default_factory=list)
    in_scope: int = 0
    violations: int = 0
    violating: int = 0
    violating_s: float = 0.0
    fired: set[str] = field(default_factory=set)
    always_on: int = 0


def measure(args: argparse.Namespace, rules: list[Rule], warnings: int) -> Results:
    with tempfile.TemporaryDirectory(prefix="betrace-bench-") as tmp:
        path = Path(tmp, "traces.otlp.jsonl")
        t0 = time.perf_counter()
        spans, lines = write_traces(path, args.traces, args.spans, args.seed)
        generate_s = time.perf_counter() - t0
        size = path.stat().st_size
        decode_s = best_of(args.repeat, lambda: timed_decode(path))
        peak, retained = decode_memory(path)
        traces = decode(path)
    if len(traces) != args.traces or sum(len(t.spans) for t in traces) != spans:
        raise SystemExit(f"decoded {len(traces)} traces, expected {args.traces}")
    t0 = time.perf_counter()
    Scanner(rules)
    build_s = time.perf_counter() - t0
    eval_s = best_of(args.repeat, lambda: timed_evaluate(rules, traces))
    return Results(args, rules, warnings, traces, spans, lines, size, generate_s, decode_s, eval_s,
                   build_s, peak, retained)


def count_outcomes(results: Results) -> None:
    """An untimed pass for the figures that describe the workload rather than its speed."""
    scanner = Scanner(results.rules)
    results.always_on = len(scanner.candidates(Trace("0" * 32, [])))
    results.candidates = sorted(len(scanner.candidates(t)) for t in results.traces)
    violating = []
    for trace in results.traces:
        found = scanner.check(trace)
        results.fired.update(v.rule_id for v in found)
        if found:
            violating.append(trace)
    results.violating = len(violating)
    results.violating_s = best_of(results.args.repeat, lambda: timed_violating(results.rules, violating))
    results.in_scope = scanner.stats.in_scope
    results.violations = scanner.stats.violations


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def percentile(sorted_values: Sequence[int], q: float) -> int:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def profile_evaluation(rules: Sequence[Rule], traces: Sequence[Trace]) -> None:
    scanner = Scanner(rules)
    profiler = cProfile.Profile()
    profiler.enable()
    for trace in traces:
        scanner.check(trace)
    profiler.disable()
    print("\ncProfile of one evaluation pass (top 25 by cumulative time):")
    pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(25)


# -------------------------------------------------------------------------- report


def row(label: str, seconds: float, traces: int, spans: int) -> str:
    return (f"{label:<36}{seconds:>9.3f} s{traces / seconds:>11,.0f}"
            f"{seconds / traces * 1e6:>10.1f}{spans / seconds:>12,.0f}")


def print_header(r: Results) -> None:
    names = {s.name for f in (*FLOWS, INFRA_FLOW) for s in f.steps}
    n = len(r.traces)
    where = "grouped in memory (under" if r.size <= otlp.MEMORY_BUDGET_BYTES else "spilled to disk (over"
    print(f"BeTrace Checker {checker.__version__}: rule evaluation and OTLP/JSON decoding benchmark")
    print(f"machine   Python {platform.python_version()} ({platform.python_implementation()}) "
          f"on {platform.platform()}")
    print(f"          {cpu_model()}, {os.cpu_count()} logical CPUs; single-threaded (one core)")
    print(f"rules     {len(r.rules)} generated, loaded with load_text ({r.warnings} warnings); "
          f"{r.always_on} have no trigger name and run on every trace")
    print(f"traces    {n:,} traces, {r.spans:,} spans ({r.spans / n:.1f} per trace), "
          f"{len(names)} span names, {len(ATTRS)} span attributes; seed {r.args.seed}")
    print(f"input     OTLP/JSON Lines: {r.lines:,} lines of 1-4 traces, {r.size / MIB:.1f} MiB, "
          f"{where} the {otlp.MEMORY_BUDGET_BYTES // MIB} MiB budget); generated in {r.generate_s:.1f} s")


def print_figures(r: Results) -> None:
    n = len(r.traces)
    c = r.candidates
    print()
    print(f"{'phase (best of ' + str(r.args.repeat) + ' runs)':<36}{'wall':>11}{'traces/s':>11}"
          f"{'µs/trace':>10}{'spans/s':>12}")
    print(row("decode + group (read_traces)", r.decode_s, n, r.spans))
    print(row(f"evaluate {len(r.rules)} rules (Scanner.check)", r.eval_s, n, r.spans))
    print()
    print("evaluation")
    print(f"  {'Scanner build (' + str(len(r.rules)) + ' rules)':<34}{r.build_s * 1e3:.1f} ms "
          "(not in the figure above)")
    print(f"  candidate rules per trace         mean {statistics.fmean(c):.1f}; min {c[0]}, "
          f"p10 {percentile(c, 0.1)}, p50 {percentile(c, 0.5)}, p90 {percentile(c, 0.9)}, "
          f"p99 {percentile(c, 0.99)}, max {c[-1]}")
    print(f"  rules in scope per trace          mean {r.in_scope / n:.1f} (no `when`, or it held)")
    print(f"  violations                        {r.violations:,} in {r.violating:,} traces "
          f"({r.violating / n:.1%}); {len(r.fired)} of {len(r.rules)} rules fired")
    print(f"  violating traces (check+explain)  {r.violating_s / max(1, r.violations) * 1e6:.1f} µs "
          f"per violation ({r.violating_s * 1e3:.2f} ms for the {r.violating:,} traces)")
    print("decode memory (tracemalloc, separate untimed run)")
    print(f"  peak                              {r.peak / MIB:.1f} MiB "
          f"({r.peak / n / 1024:.1f} KiB per trace)")
    print(f"  still held by the decoded traces  {r.retained / MIB:.1f} MiB")
    print()
    us = r.eval_s / n * 1e6
    verdict = "MET" if us < TARGET_US_PER_TRACE else "MISSED"
    print(f"target    evaluation under {TARGET_US_PER_TRACE:.0f} µs per trace with {len(r.rules)} rules "
          f"on one core: {verdict} ({us:.1f} µs per trace)")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rules", type=int, default=100, help="rules to generate (default 100)")
    parser.add_argument("--traces", type=int, default=10_000, help="traces to generate (default 10000)")
    parser.add_argument("--spans", type=int, default=20, help="mean spans per trace (default 20)")
    parser.add_argument("--seed", type=int, default=1, help="seed for rules and traces (default 1)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs, best kept (default 3)")
    parser.add_argument("--profile", action="store_true",
                        help="also cProfile one evaluation pass (top 25 by cumulative time)")
    parser.add_argument("--dump-rules", type=Path, metavar="FILE",
                        help="also write the generated rule file here, to read or reuse")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    rules, warnings, rules_text = make_rules(args.rules, args.seed)
    if args.dump_rules:
        args.dump_rules.write_text(rules_text, encoding="utf-8")
    results = measure(args, rules, warnings)
    count_outcomes(results)
    print_header(results)
    print_figures(results)
    if args.profile:
        profile_evaluation(rules, results.traces)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
