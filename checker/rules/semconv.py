"""OpenTelemetry attributes renamed by the stable HTTP and database semantic conventions.

Why: instrumentations emit the old names unless told otherwise (opentelemetry-instrumentation
0.66b1 does until ``OTEL_SEMCONV_STABILITY_OPT_IN`` is set), so a rule written with one name
of a pair silently never matches traffic that carries the other. Lint names the partner.
"""

from __future__ import annotations

# old name -> stable name (HTTP 1.23, database 1.26 conventions)
RENAMED = {
    "http.status_code": "http.response.status_code",
    "http.method": "http.request.method",
    "http.url": "url.full",
    "http.target": "url.path",
    "http.scheme": "url.scheme",
    "http.user_agent": "user_agent.original",
    "http.request_content_length": "http.request.body.size",
    "http.response_content_length": "http.response.body.size",
    "net.peer.name": "server.address",
    "net.peer.port": "server.port",
    "net.sock.peer.addr": "network.peer.address",
    "db.statement": "db.query.text",
    "db.system": "db.system.name",
    "db.operation": "db.operation.name",
    "db.name": "db.namespace",
    "db.sql.table": "db.collection.name",
}
PARTNER = {**RENAMED, **{new: old for old, new in RENAMED.items()}}
