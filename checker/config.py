"""The daemon's settings: a YAML file plus ``BETRACE_*`` environment variables.

The environment wins over the file (``BETRACE_TEMPO__URL`` overrides ``tempo.url``), so one
image can carry a config file while secrets and per-deployment values come from the
environment. Every problem is reported at once, by key path, with the value and the reason.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from checker.config_types import Duration, Section
from checker.errors import ConfigError, SourceLocation, UsageError
from checker.notify.settings import ROUTE_TYPES, AnyRoute, DeliverySettings
from checker.redact import KNOWN, header_secrets, mask_url, url_secrets
from checker.rules.durations import duration_text
from checker.selftrace import traces_url
from checker.tempo.settings import TempoSettings

DEFAULT_CONFIG = Path("betrace.yaml")
ENV_PREFIX = "BETRACE_"


class ScheduleSettings(Section):
    """Defaults for every rule; a rule's own ``every``/``cron``/``evaluation_delay`` win."""

    every: Duration = timedelta(minutes=1)
    evaluation_delay: Duration = timedelta(minutes=2)
    initial_lookback: Duration = timedelta(hours=1)
    max_catchup: Duration = timedelta(hours=24)
    jitter: Duration = timedelta(seconds=5)
    evaluation_timeout: Duration = timedelta(minutes=5)
    shutdown_grace: Duration = timedelta(seconds=30)
    parallel_rules: int = Field(8, ge=1)  # groups of rules (shards) evaluated at the same time
    # A window is judged again, finally, when it is this old: late spans have arrived by then.
    settle: Duration = timedelta(minutes=10)
    # A trace with a span that ended less than this before it was judged may still grow.
    trace_idle: Duration = timedelta(seconds=30)
    # A rule with no trace in scope for this long is logged as possibly never matching.
    vacuous_after: Duration = timedelta(hours=24)

    @field_validator("every", "max_catchup", "evaluation_timeout")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=1):
            raise ValueError("must be at least 1s")
        return value

    @model_validator(mode="after")
    def _settle_after_delay(self) -> ScheduleSettings:
        if self.settle < self.evaluation_delay:
            raise ValueError(f"settle ({duration_text(self.settle)}) must be at least evaluation_delay "
                             f"({duration_text(self.evaluation_delay)}): the final verdict comes after "
                             "the provisional one")
        return self


class HttpSettings(Section):
    """The health and metrics endpoint."""

    listen: str = "127.0.0.1:9464"
    tempo_stale_after: Duration = timedelta(minutes=5)

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:9464 or 0.0.0.0:9464")
        return value

    @property
    def host(self) -> str:
        """The address to bind, without IPv6 brackets."""
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        """The port to bind; 0 picks a free one."""
        return int(self.listen.rpartition(":")[2])


class EvidenceSettings(Section):
    """Signed ledger checkpoints and their witnesses (docs/evidence.md)."""

    signing_key: Path | None = None  # an Ed25519 private key (PEM): betrace evidence keygen
    checkpoint_every: Duration = timedelta(hours=1)
    witness_file: Path | None = None  # each checkpoint appended as a JSON line
    witness_url: SecretStr | None = None  # each checkpoint POSTed as JSON
    retention: Duration | None = None  # records started longer ago are pruned, summarised first

    @field_validator("checkpoint_every")
    @classmethod
    def _at_least_a_second(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=1):
            raise ValueError("must be at least 1s")
        return value

    @field_validator("witness_url")
    @classmethod
    def _http_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            url = urlsplit(value.get_secret_value())
            if url.scheme not in {"http", "https"} or not url.hostname:
                raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("retention")
    @classmethod
    def _at_least_a_day(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value < timedelta(days=1):
            raise ValueError("must be at least 1d: evidence is kept for audits, not hours")
        return value

    @model_validator(mode="after")
    def _needs_a_key(self) -> EvidenceSettings:
        if self.signing_key is None and (self.witness_file is not None or self.witness_url is not None):
            raise ValueError("witness_file and witness_url hold signed checkpoints: set signing_key too")
        if self.signing_key is None and self.retention is not None:
            raise ValueError("retention prunes only after a signed checkpoint summarises the records: "
                             "set signing_key too")
        return self

    def secrets(self) -> list[str]:
        """The witness URL, whole: a webhook URL is a credential."""
        url = self.witness_url.get_secret_value() if self.witness_url is not None else None
        return [url, *url_secrets(url)] if url else []


class TracingSettings(Section):
    """The checker's own traces, exported over OTLP/HTTP (docs/daemon.md)."""

    otlp_endpoint: SecretStr | None = None  # e.g. http://tempo:4318 (/v1/traces is added)
    headers: dict[str, str] = Field(default_factory=dict)
    service_name: str = "betrace-checker"

    @field_validator("otlp_endpoint")
    @classmethod
    def _traces_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        url = traces_url(value.get_secret_value())
        if url is None:
            raise ValueError("must be an http:// or https:// URL, e.g. http://tempo:4318")
        return SecretStr(url)

    def secrets(self) -> list[str]:
        """The endpoint (it may carry a token) and auth headers."""
        url = self.otlp_endpoint.get_secret_value() if self.otlp_endpoint is not None else None
        return [*url_secrets(url), *header_secrets(self.headers)]


class Settings(BaseSettings):
    """Everything ``betrace run`` needs; see the configuration reference in docs/daemon.md."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True,
    )

    rules_dir: Path = Path("rules.d")
    store: str = "sqlite:///betrace.db"
    tempo: TempoSettings = TempoSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    http: HttpSettings = HttpSettings()
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    notifiers: dict[str, AnyRoute] = Field(default_factory=dict)
    default_notifiers: list[str] = Field(default_factory=list)
    trace_url_template: str | None = None
    delivery: DeliverySettings = DeliverySettings()
    evidence: EvidenceSettings = EvidenceSettings()
    tracing: TracingSettings = TracingSettings()

    @field_validator("store")
    @classmethod
    def _store_url(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "postgresql://", "postgresql+psycopg://", "postgres://")):
            raise ValueError("must be sqlite:///PATH or postgresql://USER@HOST/DB")
        try:
            url = make_url(value)
            url.port  # noqa: B018  (reading the port checks it is a number)
        except (ArgumentError, ValueError):
            raise ValueError("is not a database URL: sqlite:///PATH or postgresql://USER@HOST:5432/DB"
                             ) from None
        if "@" in (url.host or ""):
            raise ValueError("has an '@' in its password: percent-encode it (@ is %40)")
        return value

    @field_validator("trace_url_template")
    @classmethod
    def _has_trace_id(cls, value: str | None) -> str | None:
        if value is not None and "{trace_id}" not in value:
            raise ValueError("must contain {trace_id}, e.g. https://grafana.example.com/explore?...{trace_id}")
        # Messages and reports turn it into a link: a javascript: or data: URL would run when clicked.
        if value is not None and (urlsplit(value).scheme not in {"http", "https"} or value != value.strip()):
            raise ValueError("must be an http:// or https:// URL")
        return value

    def secrets(self) -> list[str]:
        """Every secret of the config: the log and the store never show them (checker.redact.KNOWN)."""
        return [*url_secrets(self.store), *self.tempo.secrets(), *url_secrets(self.trace_url_template),
                *(secret for route in self.notifiers.values() for secret in route.secrets()),
                *self.evidence.secrets(), *self.tracing.secrets()]

    @field_validator("default_notifiers")
    @classmethod
    def _known_routes(cls, value: list[str], info: ValidationInfo) -> list[str]:
        unknown = [name for name in value if name not in info.data.get("notifiers", {})]
        if unknown:
            raise ValueError(f"names routes that are not in notifiers: {', '.join(unknown)}")
        return value

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The environment overrides the file, which is passed in as init values."""
        del settings_cls, dotenv_settings, file_secret_settings
        return (env_settings, init_settings)


def load_settings(path: Path | None) -> Settings:
    """Settings from ``path`` (or ``betrace.yaml`` when present) and ``BETRACE_*`` variables.

    Relative paths in the file are read from the directory the daemon runs in, as on the
    command line.
    """
    explicit = path is not None
    path = path or DEFAULT_CONFIG
    values: dict[str, Any] = {}
    if explicit or path.exists():
        values = _read_file(path)
    try:
        settings = Settings(**values)
    except SettingsError as err:  # an environment value that is not the JSON a mapping needs
        raise ConfigError("invalid setting in the BETRACE_* environment:", [_env_problem(err)]) from None
    except ValidationError as err:
        count = err.error_count()
        raise ConfigError(f"{count} invalid setting{'s' if count > 1 else ''} (config file or BETRACE_* "
                          "environment):",
                          [_problem(e) for e in err.errors()],
                          location=SourceLocation(path) if values else None) from None
    KNOWN.add(settings.secrets())
    return settings


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read config: {err}", location=SourceLocation(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        raise UsageError(f"config is not valid YAML: {err.problem}", location=SourceLocation(
            path, mark.line + 1 if mark else None, mark.column + 1 if mark else None)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError("config must be a mapping of keys (rules_dir, store, tempo, ...)",
                         location=SourceLocation(path, 1, 1))
    return data


def _env_problem(err: SettingsError) -> str:
    """Name the variables behind pydantic-settings' "error parsing value for field" message."""
    field = re.search(r'field "(\w+)"', str(err))
    prefix = ENV_PREFIX + (field.group(1).upper() if field else "")
    names = sorted(name for name in os.environ if name.upper().startswith(prefix))
    return (f"{', '.join(names) or prefix + '*'}: a value for a block or mapping must be JSON, "
            'e.g. BETRACE_TEMPO__HEADERS=\'{"X-Org": "acme"}\'')


def _problem(error: Any) -> str:
    """``tempo.search_limit = -1: Input should be greater than 0 (env BETRACE_TEMPO__SEARCH_LIMIT)``."""
    loc = [str(part) for part in error["loc"]]
    key = ".".join(loc) or "(top level)"
    env = ENV_PREFIX + "__".join(_env_path(loc)).upper()
    value = error.get("input")
    hidden = error["type"] == "missing" or isinstance(value, dict)
    shown = "" if hidden else f" = {_shown(loc, value, error['type'])}"
    why = str(error["msg"]).removeprefix("Value error, ")
    return f"{key}{shown}: {why} (env {env})"


def _env_path(loc: list[str]) -> list[str]:
    """The variable's path: an error's location has a route's ``type`` in it, the variable does not.

    ``notifiers.s1.slack.token`` is set by ``BETRACE_NOTIFIERS__S1__TOKEN``.
    """
    if len(loc) > 2 and loc[0] == "notifiers" and loc[2] in ROUTE_TYPES:
        return [*loc[:2], *loc[3:]]
    return loc


SECRET_KEYS = frozenset({"password", "bearer_token", "secret", "token", "webhook_url", "headers"})


def _shown(loc: list[str], value: Any, kind: str) -> str:
    """Secrets are never echoed, even as the invalid value.

    Nor are unknown keys' values (a mistyped secret key) or a URL's password.
    """
    if kind == "extra_forbidden" or SECRET_KEYS & set(loc) or ("notifiers" in loc and loc[-1] == "url"):
        return "<hidden>"
    if isinstance(value, str):
        return repr(mask_url(value))
    return "<hidden>" if isinstance(value, (dict, list)) else repr(value)
