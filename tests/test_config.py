"""The daemon's settings: defaults, the YAML file, BETRACE_* overrides, secrets and every error at once."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from docs_text import section
from pydantic import BaseModel, SecretStr, ValidationError

from checker.cli import main
from checker.config import HttpSettings, Settings, load_settings
from checker.errors import ConfigError, UsageError

BAD_CONFIG = """\
store: mysql://db/betrace
bogus: 1
tempo:
  url: ftp://tempo:3200
  search_limit: -1
  nope: 2
schedule:
  every: 5 minutes
http:
  listen: localhost
"""
# One line per problem in BAD_CONFIG, each with key path, value, reason and environment variable.
BAD_CONFIG_PROBLEMS = [
    "store = 'mysql://db/betrace': must be sqlite:///PATH or postgresql://USER@HOST/DB (env BETRACE_STORE)",
    "bogus = <hidden>: Extra inputs are not permitted (env BETRACE_BOGUS)",
    "tempo.url = 'ftp://tempo:3200': must start with http:// or https:// (env BETRACE_TEMPO__URL)",
    "tempo.search_limit = -1: Input should be greater than 0 (env BETRACE_TEMPO__SEARCH_LIMIT)",
    "tempo.nope = <hidden>: Extra inputs are not permitted (env BETRACE_TEMPO__NOPE)",
    ("schedule.every = '5 minutes': not a duration: write a duration such as 30s, 1m, 2h or 1h30m "
     "(env BETRACE_SCHEDULE__EVERY)"),
    ("http.listen = 'localhost': must be HOST:PORT, e.g. 127.0.0.1:9464 or 0.0.0.0:9464 "
     "(env BETRACE_HTTP__LISTEN)"),
]


@pytest.fixture(autouse=True)
def clean_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No betrace.yaml and no BETRACE_* variable from the machine running the tests."""
    monkeypatch.chdir(tmp_path)
    for key in list(os.environ):
        if key.startswith("BETRACE_"):
            monkeypatch.delenv(key)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def config_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    return caught.value


def problem_about(err: ConfigError, key: str) -> str:
    lines = [p for p in err.problems if p.startswith((f"{key} ", f"{key}:"))]
    assert len(lines) == 1, err.problems
    return lines[0]


class TestDefaults:
    def test_no_file_and_no_environment(self) -> None:
        settings = load_settings(None)
        assert settings.rules_dir == Path("rules.d")
        assert settings.store == "sqlite:///betrace.db"
        assert settings.tempo.url == "http://localhost:3200"
        assert settings.tempo.search_limit == 1000
        assert settings.tempo.timeout == timedelta(seconds=30)
        assert settings.tempo.password is None
        assert settings.tempo.bearer_token is None
        assert settings.schedule.every == timedelta(minutes=1)
        assert settings.schedule.evaluation_delay == timedelta(minutes=2)
        assert settings.schedule.initial_lookback == timedelta(hours=1)
        assert settings.schedule.max_catchup == timedelta(hours=24)
        assert settings.http.listen == "127.0.0.1:9464"
        assert settings.notifiers == {}

    def test_empty_file_gives_the_defaults(self, tmp_path: Path) -> None:
        assert load_settings(write(tmp_path / "empty.yaml", "")) == load_settings(None)


class TestFile:
    def test_betrace_yaml_in_the_working_directory_is_read(self, tmp_path: Path) -> None:
        write(tmp_path / "betrace.yaml", "store: sqlite:///other.db\ntempo:\n  url: https://tempo.example\n")
        settings = load_settings(None)
        assert settings.store == "sqlite:///other.db"
        assert settings.tempo.url == "https://tempo.example"

    def test_explicit_path_wins_over_betrace_yaml(self, tmp_path: Path) -> None:
        write(tmp_path / "betrace.yaml", "store: sqlite:///default.db\n")
        explicit = write(tmp_path / "explicit.yaml", "store: sqlite:///explicit.db\n")
        assert load_settings(explicit).store == "sqlite:///explicit.db"

    def test_missing_explicit_file_is_an_error_naming_it(self, tmp_path: Path) -> None:
        missing = tmp_path / "nowhere" / "betrace.yaml"
        with pytest.raises(UsageError) as caught:
            load_settings(missing)
        assert str(missing) in str(caught.value)
        assert "cannot read config" in str(caught.value)

    def test_yaml_syntax_error_gives_line_and_column(self, tmp_path: Path) -> None:
        path = write(tmp_path / "c.yaml", "rules_dir: a\nstore: b: c\n")
        with pytest.raises(UsageError) as caught:
            load_settings(path)
        err = caught.value
        assert not isinstance(err, ConfigError)
        assert err.location is not None
        assert (err.location.line, err.location.column) == (2, 9)
        assert str(err).startswith(f"{path}:2:9: config is not valid YAML: mapping values are not allowed")

    def test_top_level_list_is_rejected(self, tmp_path: Path) -> None:
        path = write(tmp_path / "c.yaml", "- store: sqlite:///x.db\n- rules_dir: r\n")
        with pytest.raises(UsageError, match="config must be a mapping") as caught:
            load_settings(path)
        assert str(caught.value).startswith(f"{path}:1:1: ")


class TestDurations:
    @pytest.mark.parametrize(("written", "expected"), [
        ("90s", timedelta(seconds=90)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("250ms", timedelta(milliseconds=250)),
        ("2d", timedelta(days=2)),
        ("45", timedelta(seconds=45)),
        ("2.5", timedelta(seconds=2.5)),
    ])
    def test_file_values(self, tmp_path: Path, written: str, expected: timedelta) -> None:
        path = write(tmp_path / "c.yaml", f"tempo:\n  timeout: {written}\n")
        assert load_settings(path).tempo.timeout == expected

    def test_environment_value(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("BETRACE_SCHEDULE__MAX_CATCHUP", "1h30m")
        assert load_settings(None).schedule.max_catchup == timedelta(minutes=90)

    @pytest.mark.parametrize("written", ["5 minutes", "1x", "m1", "-5s"])
    def test_not_a_duration(self, tmp_path: Path, written: str) -> None:
        err = config_error(write(tmp_path / "c.yaml", f"schedule:\n  initial_lookback: {written}\n"))
        line = problem_about(err, "schedule.initial_lookback")
        assert "not a duration" in line
        assert "BETRACE_SCHEDULE__INITIAL_LOOKBACK" in line

    def test_period_below_one_second(self, tmp_path: Path) -> None:
        err = config_error(write(tmp_path / "c.yaml", "schedule:\n  every: 500ms\n"))
        assert "must be at least 1s" in problem_about(err, "schedule.every")

    def test_settle_before_the_evaluation_delay(self, tmp_path: Path) -> None:
        err = config_error(write(tmp_path / "c.yaml", "schedule:\n  settle: 1m\n  evaluation_delay: 2m\n"))
        assert "settle (1m) must be at least evaluation_delay (2m)" in problem_about(err, "schedule")
        assert load_settings(write(tmp_path / "d.yaml", "schedule:\n  settle: 2m\n  evaluation_delay: 2m\n"))


class TestEnvironment:
    def test_environment_overrides_the_file(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        path = write(tmp_path / "c.yaml", "tempo:\n  url: http://from-file:3200\n")
        monkeypatch.setenv("BETRACE_TEMPO__URL", "http://from-env:3200")
        assert load_settings(path).tempo.url == "http://from-env:3200"

    def test_nested_override_keeps_the_rest_of_the_block(self, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
        path = write(tmp_path / "c.yaml",
                     "tempo:\n  url: http://from-file:3200\n  tenant: acme\n  search_limit: 50\n")
        monkeypatch.setenv("BETRACE_TEMPO__URL", "http://from-env:3200")
        tempo = load_settings(path).tempo
        assert tempo.url == "http://from-env:3200"
        assert tempo.tenant == "acme"
        assert tempo.search_limit == 50

    def test_top_level_and_other_blocks(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        path = write(tmp_path / "c.yaml", "store: sqlite:///file.db\nhttp:\n  listen: 0.0.0.0:80\n")
        monkeypatch.setenv("BETRACE_STORE", "postgresql://u@db/betrace")
        monkeypatch.setenv("BETRACE_SCHEDULE__EVERY", "30s")
        settings = load_settings(path)
        assert settings.store == "postgresql://u@db/betrace"
        assert settings.schedule.every == timedelta(seconds=30)
        assert settings.http.listen == "0.0.0.0:80"

    def test_invalid_environment_value_names_the_variable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("BETRACE_TEMPO__SEARCH_LIMIT", "-1")
        with pytest.raises(ConfigError) as caught:
            load_settings(None)
        assert caught.value.problems == [
            "tempo.search_limit = '-1': Input should be greater than 0 (env BETRACE_TEMPO__SEARCH_LIMIT)"]

    @pytest.mark.parametrize(("name", "value"), [
        ("BETRACE_TEMPO__HEADERS", "X-Org: acme"),
        ("BETRACE_NOTIFIERS", "slack"),
    ])
    def test_malformed_mapping_variable_is_a_config_error(self, monkeypatch: pytest.MonkeyPatch,
                                                          name: str, value: str) -> None:
        monkeypatch.setenv(name, value)
        with pytest.raises(ConfigError, match=name):
            load_settings(None)


class TestSecrets:
    PASSWORD = "hunter2-pass"
    TOKEN = "tok-9f8e7d"

    def test_secrets_are_hidden_and_unwrapped_only_for_the_client(self,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("BETRACE_TEMPO__USERNAME", "svc")
        monkeypatch.setenv("BETRACE_TEMPO__PASSWORD", self.PASSWORD)
        monkeypatch.setenv("BETRACE_TEMPO__BEARER_TOKEN", self.TOKEN)
        settings = load_settings(None)
        assert isinstance(settings.tempo.password, SecretStr)
        assert isinstance(settings.tempo.bearer_token, SecretStr)
        for text in (repr(settings), str(settings), repr(settings.tempo), str(settings.tempo)):
            assert self.PASSWORD not in text
            assert self.TOKEN not in text
        tempo = settings.tempo
        assert tempo.password is not None
        assert tempo.bearer_token is not None
        assert (tempo.username, tempo.password.get_secret_value(), tempo.bearer_token.get_secret_value()) == (
            "svc", self.PASSWORD, self.TOKEN)

    def test_invalid_secret_values_are_not_echoed(self, tmp_path: Path) -> None:
        path = write(tmp_path / "c.yaml",
                     "tempo:\n  password: {hunter2: s3cr3t}\n  bearer_token: 987654321\n")
        err = config_error(path)
        password = problem_about(err, "tempo.password")
        assert "hunter2" not in password
        assert "s3cr3t" not in password
        assert "BETRACE_TEMPO__PASSWORD" in password
        assert problem_about(err, "tempo.bearer_token").startswith("tempo.bearer_token = <hidden>: ")
        assert "987654321" not in str(err)
        assert "s3cr3t" not in str(err)

    def test_secret_given_as_a_list_is_hidden(self, tmp_path: Path) -> None:
        err = config_error(write(tmp_path / "c.yaml", "tempo:\n  password: [s3cr3t]\n"))
        assert problem_about(err, "tempo.password").startswith("tempo.password = <hidden>: ")
        assert "s3cr3t" not in str(err)

    def test_other_fields_are_echoed_but_never_containers_or_passwords_in_urls(self, tmp_path: Path) -> None:
        err = config_error(write(tmp_path / "c.yaml", "tempo:\n  username: 42\n  url: ftp://bob:pw1@t\n"
                                 "store: 'mysql://bob:hunter2@db/x'\n"))
        assert problem_about(err, "tempo.username").startswith("tempo.username = 42: ")
        assert problem_about(err, "tempo.url").startswith("tempo.url = 'ftp://bob:***@t': ")
        assert problem_about(err, "store").startswith("store = 'mysql://bob:***@db/x': ")
        err = config_error(write(tmp_path / "d.yaml", "tempo: [{password: s3cr3t}]\ntempo_api_key: k3y\n"))
        assert "s3cr3t" not in str(err)
        assert "k3y" not in str(err)


class TestInvalidConfig:
    def test_every_problem_is_listed_at_once(self, tmp_path: Path) -> None:
        path = write(tmp_path / "bad.yaml", BAD_CONFIG)
        err = config_error(path)
        assert sorted(err.problems) == sorted(BAD_CONFIG_PROBLEMS)
        message = str(err)
        assert message.startswith(f"{path}: 7 invalid settings (config file or BETRACE_* environment):")
        for problem in BAD_CONFIG_PROBLEMS:
            assert f"\n  {problem}" in message
        assert "hint: " in message

    def test_one_problem_is_singular(self, tmp_path: Path) -> None:
        err = config_error(write(tmp_path / "c.yaml", "log_level: loud\n"))
        assert "1 invalid setting (" in str(err)
        assert len(err.problems) == 1
        assert err.problems[0].startswith("log_level = 'loud': ")

    def test_environment_only_error_has_no_file_location(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("BETRACE_HTTP__LISTEN", "nowhere")
        with pytest.raises(ConfigError) as caught:
            load_settings(None)
        assert caught.value.location is None
        assert "http.listen = 'nowhere'" in str(caught.value)

    @pytest.mark.parametrize(("text", "key"), [
        ("tempo:\n  url: tempo:3200\n", "tempo.url"),
        ("tempo:\n  url: HTTP//tempo\n", "tempo.url"),
        ("store: betrace.db\n", "store"),
        ("store: mongodb://db\n", "store"),
        ("http:\n  listen: ':9464'\n", "http.listen"),
        ("http:\n  listen: 'host:65536'\n", "http.listen"),
        ("http:\n  listen: 'host:port'\n", "http.listen"),
        ("tempo:\n  retries: -1\n", "tempo.retries"),
        ("schedule:\n  shutdown_grace: soon\n", "schedule.shutdown_grace"),
        ("schedule:\n  extra_key: 1\n", "schedule.extra_key"),
        ("http:\n  extra_key: 1\n", "http.extra_key"),
        ("tempo: http://tempo:3200\n", "tempo"),
    ])
    def test_single_problem(self, tmp_path: Path, text: str, key: str) -> None:
        err = config_error(write(tmp_path / "c.yaml", text))
        assert len(err.problems) == 1, err.problems
        env = "BETRACE_" + key.replace(".", "__").upper()
        assert problem_about(err, key).endswith(f"(env {env})")

    def test_valid_variants_are_accepted(self, tmp_path: Path) -> None:
        path = write(tmp_path / "c.yaml", "store: postgresql+psycopg://u@db/betrace\n"
                     "tempo:\n  url: https://tempo.example/\n  headers: {X-Org: acme}\n"
                     "http:\n  listen: '[::]:0'\n")
        settings = load_settings(path)
        assert settings.store == "postgresql+psycopg://u@db/betrace"
        assert settings.tempo.headers == {"X-Org": "acme"}
        assert settings.http.port == 0

    def test_settings_are_frozen(self) -> None:
        settings = load_settings(None)
        with pytest.raises(ValidationError):
            settings.store = "sqlite:///other.db"
        assert settings.store == "sqlite:///betrace.db"


class TestCommandLine:
    @pytest.mark.parametrize("command", ["run", "violations"])
    def test_invalid_config_exits_2_listing_every_problem(self, tmp_path: Path, command: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
        bad = write(tmp_path / "bad.yaml", BAD_CONFIG)
        capsys.readouterr()
        code = main([command, "--config", str(bad)])
        out, err = capsys.readouterr()
        assert code == 2
        assert out == ""
        assert err.startswith(f"error: {bad}: 7 invalid settings")
        for problem in BAD_CONFIG_PROBLEMS:
            assert problem in err

    @pytest.mark.parametrize("command", ["run", "violations"])
    def test_missing_config_exits_2(self, tmp_path: Path, command: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
        missing = tmp_path / "missing.yaml"
        capsys.readouterr()
        code = main([command, "--config", str(missing)])
        assert code == 2
        assert str(missing) in capsys.readouterr().err


class TestHttpSettings:
    @pytest.mark.parametrize(("listen", "host", "port"), [
        ("127.0.0.1:9464", "127.0.0.1", 9464),
        ("0.0.0.0:0", "0.0.0.0", 0),  # noqa: S104
        ("localhost:8080", "localhost", 8080),
        ("[::1]:9464", "::1", 9464),
        ("[::]:65535", "::", 65535),
    ])
    def test_host_and_port(self, listen: str, host: str, port: int) -> None:
        http = HttpSettings(listen=listen)
        assert (http.host, http.port) == (host, port)

    def test_defaults(self) -> None:
        http = HttpSettings()
        assert (http.host, http.port) == ("127.0.0.1", 9464)

    @pytest.mark.parametrize("listen", ["localhost", ":9464", "host:", "host:65536", "host:http", "[::1]"])
    def test_invalid(self, listen: str) -> None:
        with pytest.raises(ValidationError, match="must be HOST:PORT"):
            HttpSettings(listen=listen)


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys.extend(_keys(annotation, f"{prefix}{name}."))
        else:
            keys.append(prefix + name)
    return keys


def test_every_setting_is_in_the_configuration_reference() -> None:
    reference = section("Configuration") + section("Notifications")
    keys = _keys(Settings)
    assert "tempo.url" in keys
    assert "schedule.max_catchup" in keys
    for key in keys:
        assert f"`{key}`" in reference, key
        assert "BETRACE_" + key.replace(".", "__").upper() in reference, key
