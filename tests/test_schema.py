"""The editor schemas: they accept every shipped file, know the loader's keys, and catch mistakes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from docs_text import everything
from jsonschema import Draft7Validator
from pydantic import ByteSize, TypeAdapter, ValidationError
from test_config import BAD_CONFIG
from test_cookbook import cookbook

from checker.cli import main
from checker.config import Settings
from checker.config_types import SIZE_PATTERN
from checker.rules import fields
from checker.rules.durations import DURATION_PATTERN, parse_ns
from checker.rules.load import load_text
from checker.schema import MODELS, json_schema, schema_text

ROOT = Path(__file__).resolve().parents[1]
RULE_FILES = sorted([*(ROOT / "rules.d").glob("*.yaml"), *(ROOT / "bench" / "rules-100").glob("*.yaml")])
CONFIG_FILES = [ROOT / "deploy" / "compose" / "betrace.yaml", ROOT / "deploy" / "docker" / "betrace.yaml"]
# Files people open from a clone: each names its schema in its first line.
MODELINES = {**dict.fromkeys((ROOT / "rules.d").glob("*.yaml"), "rules"),
             **dict.fromkeys(CONFIG_FILES, "config")}


def validator(name: str) -> Draft7Validator:
    return Draft7Validator(json_schema(MODELS[name]))


def problems(name: str, document: Any) -> list[str]:
    return sorted(f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
                  for e in validator(name).iter_errors(document))


def documented_blocks() -> list[str]:
    """Every YAML block of the README and docs/: rule files and configs."""
    return re.findall(r"```yaml\n(.*?)```", everything(), re.DOTALL)


def k8s_documents() -> list[dict[str, Any]]:
    return [doc for path in sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc]


# ------------------------------------------------------------------ the schemas themselves

@pytest.mark.parametrize("name", MODELS)
def test_is_a_valid_draft_07_schema(name: str) -> None:
    Draft7Validator.check_schema(json_schema(MODELS[name]))


@pytest.mark.parametrize("name", MODELS)
def test_committed_schema_is_the_generated_one(name: str) -> None:
    committed = (ROOT / "schemas" / f"{name}.schema.json").read_text(encoding="utf-8")
    assert schema_text(name) == committed, f"run: betrace schema {name} > schemas/{name}.schema.json"


def patterns(schema: Any) -> list[dict[str, Any]]:
    if isinstance(schema, list):
        return [found for item in schema for found in patterns(item)]
    if not isinstance(schema, dict):
        return []
    own = [schema] if isinstance(schema.get("pattern"), str) else []
    return own + [found for value in schema.values() for found in patterns(value)]


@pytest.mark.parametrize("name", MODELS)
def test_every_pattern_says_what_to_write_instead_of_itself(name: str) -> None:
    found = patterns(json_schema(MODELS[name]))
    assert found
    assert [] == [p["pattern"] for p in found if not p.get("patternErrorMessage")]


@pytest.mark.parametrize(("path", "name"), MODELINES.items(), ids=lambda p: getattr(p, "name", p))
def test_shipped_files_point_editors_at_the_schema(path: Path, name: str) -> None:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    found = re.fullmatch(r"# yaml-language-server: \$schema=(\S+)", first)
    assert found, f"{path}: no modeline"
    assert (path.parent / found.group(1)).resolve() == ROOT / "schemas" / f"{name}.schema.json"


# ------------------------------------------------------------------ rule files

@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_rule_file_validates(path: Path) -> None:
    assert [] == problems("rules", yaml.safe_load(path.read_text(encoding="utf-8")))


def test_documented_yaml_blocks_validate_as_rules_or_config() -> None:
    blocks = documented_blocks()
    assert cookbook() in blocks
    kinds = []
    for block in blocks:
        document = yaml.safe_load(block)
        kind = "rules" if "rules" in document else "config"
        kinds.append(kind)
        assert [] == problems(kind, document), block
    assert {"rules", "config"} == set(kinds)


def definitions() -> dict[str, Any]:
    return json_schema(MODELS["rules"])["definitions"]


@pytest.mark.parametrize(("definition", "keys"), [
    ("Rule", fields.KNOWN_KEYS),
    ("Example", fields.EXAMPLE_KEYS),
    ("LegacyExample", fields.LEGACY_EXAMPLE_KEYS),
    ("ExampleSpan", fields.SPAN_KEYS),
    ("ExampleEvent", fields.EVENT_KEYS),
])
def test_each_level_allows_exactly_the_keys_the_loader_reads(definition: str, keys: frozenset[str]) -> None:
    schema = definitions()[definition]
    assert set(keys) == set(schema["properties"])
    assert schema["additionalProperties"] is False  # the loader warns of any other key


def test_the_top_level_allows_only_rules() -> None:
    schema = json_schema(MODELS["rules"])
    assert set(fields.TOP_LEVEL_KEYS) == set(schema["properties"])
    assert schema["additionalProperties"] is False


RULE = {"id": "r", "condition": "never { x }"}


@pytest.mark.parametrize(("change", "where"), [
    ({"severity": "urgent"}, "rules.0.severity"),
    ({"every": "5 minutes"}, "rules.0.every"),
    ({"settle": "10"}, "rules.0.settle"),
    ({"cron": "* *"}, "rules.0.cron"),
    ({"serverity": "high"}, "rules.0"),
    ({"id": "bad id!"}, "rules.0.id"),
    ({"every": "1m", "cron": "*/5 * * * *"}, "rules.0.cron"),
    ({"labels": ["team"]}, "rules.0.labels"),
    ({"examples": [{"expect": "maybe", "trace": []}]}, "rules.0.examples.0.expect"),
    ({"examples": [{"expect": "pass", "trace": [{"name": "a"}]}]}, "rules.0.examples.0.trace.0"),
    ({"examples": [{"expect": "pass", "trace": [{"span": "a", "status": "broken"}]}]},
     "rules.0.examples.0.trace.0.status"),
    ({"examples": [{"expect": "pass", "trace": [{"span": "a", "duration": "1 sec"}]}]},
     "rules.0.examples.0.trace.0.duration"),
    ({"examples": [{"expect": "pass", "trace": [{"span": "a", "children": [{"span": "b", "knd": "x"}]}]}]},
     "rules.0.examples.0.trace.0.children.0"),
    ({"example_violation": {"trace": [], "expect": "pass"}}, "rules.0.example_violation"),
])
def test_mistakes_fail_in_the_editor_as_in_the_loader(change: dict[str, Any], where: str) -> None:
    document = {"rules": [{**RULE, **change}]}
    found = problems("rules", document)
    assert found, change
    assert all(problem.startswith(f"{where}:") for problem in found), found
    loaded = load_text(yaml.safe_dump(document), "r.yaml")
    assert loaded.errors or loaded.warnings, change


def test_a_misspelt_top_level_key_fails() -> None:
    assert problems("rules", {"rules": [RULE], "rule": []})
    assert problems("rules", {"rulez": [RULE]})


@pytest.mark.parametrize("text", ["30s", "1m", "1h30m", "500ms", "1.5s", "250µs", "3650d", "2us"])
def test_the_duration_pattern_accepts_what_the_loader_reads(text: str) -> None:
    assert parse_ns(text) is not None
    assert re.fullmatch(DURATION_PATTERN, text)


@pytest.mark.parametrize("text", ["", "1", "m", "1 m", "1min", "-1s", "1m ", "PT1M", ".5s"])
def test_the_duration_pattern_refuses_what_the_loader_refuses(text: str) -> None:
    assert parse_ns(text) is None
    assert not re.fullmatch(DURATION_PATTERN, text)


# ------------------------------------------------------------------ config

def test_shipped_configs_validate() -> None:
    for path in CONFIG_FILES:
        assert [] == problems("config", yaml.safe_load(path.read_text(encoding="utf-8"))), path


def test_the_kubernetes_config_and_its_secret_routes_validate() -> None:
    documents = k8s_documents()
    config_maps = [d["data"]["betrace.yaml"] for d in documents
                   if d["kind"] == "ConfigMap" and "betrace.yaml" in d.get("data", {})]
    assert config_maps
    for text in config_maps:
        assert [] == problems("config", yaml.safe_load(text))
    secrets = [d["stringData"] for d in documents if d["kind"] == "Secret"]
    from_env = {key.removeprefix("BETRACE_").lower(): json.loads(value) if key != "BETRACE_STORE" else value
                for data in secrets for key, value in data.items()}
    assert {"notifiers", "default_notifiers", "store"} <= set(from_env)
    assert [] == problems("config", from_env)


def test_a_bad_config_fails_at_each_mistake() -> None:
    found = problems("config", yaml.safe_load(BAD_CONFIG))
    assert any(p.startswith(": Additional properties") and "'bogus'" in p for p in found), found
    assert any(p.startswith("tempo: Additional properties") and "'nope'" in p for p in found), found
    assert any(p.startswith("tempo.search_limit:") for p in found), found
    assert any(p.startswith("schedule.every:") for p in found), found


@pytest.mark.parametrize(("document", "where"), [
    ({"notifiers": {"x": {"type": "email"}}}, "notifiers.x"),
    ({"notifiers": {"x": {"type": "webhook"}}}, "notifiers.x"),
    ({"notifiers": {"x": {"type": "log", "min_severity": "urgent"}}}, "notifiers.x"),
    ({"notifiers": {"x": {"type": "slack", "webhook_url": 42}}}, "notifiers.x"),
    ({"tempo": {"max_trace_bytes": "50 lots"}}, "tempo.max_trace_bytes"),
    ({"tempo": {"timeout": -1}}, "tempo.timeout"),
    ({"log_level": "verbose"}, "log_level"),
])
def test_config_mistakes_fail_where_they_are(document: dict[str, Any], where: str) -> None:
    found = problems("config", document)
    assert found
    assert all(p.startswith(f"{where}:") for p in found), found
    with pytest.raises(ValidationError):
        Settings.model_validate(document)


def test_routes_are_told_apart_by_type() -> None:
    assert [] == problems("config", {"notifiers": {
        "a": {"type": "slack", "token": "xoxb-1", "channel": "#soc", "timeout": "15s"},
        "b": {"type": "webhook", "url": "https://example.com", "secret": "s", "headers": {"X-A": "b"}},
        "c": {"type": "log", "verdicts": "final"}}})


def test_secrets_are_strings_and_write_only() -> None:
    tempo = json_schema(Settings)["definitions"]["TempoSettings"]["properties"]
    for key in ("password", "bearer_token"):
        assert {"type": "string", "format": "password", "writeOnly": True} in tempo[key]["anyOf"]


def test_defaults_are_written_as_the_config_takes_them() -> None:
    schema = json_schema(Settings)
    tempo = schema["definitions"]["TempoSettings"]["properties"]
    assert "30s" == tempo["timeout"]["default"]
    assert "64MiB" == tempo["max_search_bytes"]["default"]
    assert "default" not in schema["properties"]["tempo"]
    defaults = {name: {key: value["default"] for key, value in definition["properties"].items()
                       if "default" in value}
                for name, definition in schema["definitions"].items()}
    section = {"tempo": "TempoSettings", "schedule": "ScheduleSettings", "http": "HttpSettings",
               "delivery": "DeliverySettings"}
    document = {key: defaults[name] for key, name in section.items()}
    assert [] == problems("config", document)
    Settings.model_validate(document)


@pytest.mark.parametrize("text", ["64MiB", "50MB", "1024", "1.5 GiB", "10kb", "8bit", "2KiBit", "1k"])
def test_the_size_pattern_accepts_what_pydantic_reads(text: str) -> None:
    TypeAdapter(ByteSize).validate_python(text)
    assert re.fullmatch(SIZE_PATTERN, text)


@pytest.mark.parametrize("text", ["", "MiB", "64 lots", "64 MiBs", "-1"])
def test_the_size_pattern_refuses_what_pydantic_refuses(text: str) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(ByteSize).validate_python(text)
    assert not re.fullmatch(SIZE_PATTERN, text)


# ------------------------------------------------------------------ the command

@pytest.mark.parametrize("name", MODELS)
def test_schema_command_prints_the_schema(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert 0 == main(["schema", name])
    out = capsys.readouterr().out
    assert out == schema_text(name)
    assert json.loads(out)["$schema"] == "http://json-schema.org/draft-07/schema#"


@pytest.mark.parametrize("argv", [["schema"], ["schema", "rule"]])
def test_schema_without_a_known_name_is_a_usage_error(argv: list[str],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert 2 == exit_.value.code
    assert "rules|config" in capsys.readouterr().err
