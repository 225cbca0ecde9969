"""deploy/ and the Dockerfile, checked for consistency (no Docker engine or cluster here).

Every image pinned, every referenced file present, ports and paths agreeing with the
settings, probes hitting real endpoints, environment names that are real settings, alert
expressions naming real metrics and labels, manifests equal to the files they embed, and every
command line one `betrace` accepts.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from docs_text import everything
from manifests import DASHBOARD, GENERATED, RULES
from promql import exported, unknown

from checker.cli import build_parser
from checker.config import Settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose"
K8S = DEPLOY / "kubernetes"
ENDPOINTS = {"/healthz", "/readyz", "/metrics"}


def env_names(model: type[Any] = Settings, prefix: str = "BETRACE_") -> set[str]:
    names = set()
    for name, field in model.model_fields.items():
        names.add(prefix + name.upper())
        annotation = field.annotation
        if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
            names |= env_names(annotation, prefix + name.upper() + "__")
    return names


def parses(argv: list[str]) -> None:
    """The arguments `betrace` would get: they must parse (argparse exits 2 otherwise)."""
    build_parser().parse_args(argv)


def pinned(image: str) -> bool:
    name, _, tag = image.rpartition(":")
    return bool(name) and tag not in {"", "latest"} and "/" not in tag


def settings_from(text: str) -> Settings:
    return Settings.model_validate(yaml.safe_load(text))


def k8s_documents() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path in sorted(K8S.glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def containers() -> list[tuple[Path, dict[str, Any], dict[str, Any]]]:
    found = []
    for path, doc in k8s_documents():
        spec = doc.get("spec", {})
        pod = spec.get("template", {}).get("spec") or spec.get("jobTemplate", {}).get("spec", {}).get(
            "template", {}).get("spec")
        if pod:
            found.extend((path, pod, container) for container in pod["containers"])
    return found


class TestDockerfile:
    text = (ROOT / "Dockerfile").read_text()

    def test_pinned_slim_base_multi_stage_non_root(self) -> None:
        base = re.search(r"ARG PYTHON_IMAGE=(\S+)", self.text)
        assert base is not None
        assert pinned(base.group(1))
        assert "slim" in base.group(1)
        assert self.text.count("FROM ") == 2
        assert re.search(r"^USER 10001", self.text, re.MULTILINE)

    def test_copied_files_exist_and_the_default_command_parses(self) -> None:
        for source in re.findall(r"^COPY (?!--from)(.+) \S+$", self.text, re.MULTILINE):
            for path in source.split():
                assert (ROOT / path).exists(), path
        command = re.search(r"^CMD (\[.*\])$", self.text, re.MULTILINE)
        assert command is not None
        parses(yaml.safe_load(command.group(1)))
        settings = settings_from((DEPLOY / "docker" / "betrace.yaml").read_text())
        assert settings.store.startswith("sqlite:////var/lib/betrace/")
        assert str(settings.rules_dir) == "/etc/betrace/rules.d"
        assert f"EXPOSE {settings.http.port}" in self.text
        assert f"127.0.0.1:{settings.http.port}/healthz" in self.text


class TestCompose:
    compose = yaml.safe_load((COMPOSE / "docker-compose.yaml").read_text())
    services = compose["services"]
    betrace = settings_from((COMPOSE / "betrace.yaml").read_text())
    tempo = yaml.safe_load((COMPOSE / "tempo.yaml").read_text())

    def test_images_pinned_ports_on_loopback_files_exist(self) -> None:
        for name, service in self.services.items():
            assert "build" in service or pinned(service["image"]), name
            for port in service.get("ports", []):
                assert port.startswith("127.0.0.1:"), (name, port)
            for volume in service.get("volumes", []):
                source = volume.split(":")[0]
                if source.startswith("."):
                    assert (COMPOSE / source).resolve().exists(), (name, source)

    def test_the_checker_and_the_demo_agree_with_tempo(self) -> None:
        parses(self.services["betrace"]["command"])
        parses(self.services["demo-traffic"]["command"])
        tempo_url = self.betrace.tempo.url
        assert tempo_url == f"http://tempo:{self.tempo['server']['http_listen_port']}"
        cutoff = self.tempo["query_frontend"]["query_end_cutoff"]
        assert self.betrace.tempo.query_end_cutoff.total_seconds() == int(cutoff.rstrip("s"))
        otlp = self.tempo["distributor"]["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
        demo = self.services["demo-traffic"]["command"]
        assert demo[demo.index("--otlp") + 1] == f"http://tempo:{otlp.rsplit(':', 1)[1]}"
        port = self.betrace.http.port
        assert f"127.0.0.1:{port}:{port}" in self.services["betrace"]["ports"]

    def test_notifications_reach_the_sink_and_links_open_grafana(self) -> None:
        sink = self.betrace.notifiers["sink"]
        url = sink.url.get_secret_value()  # type: ignore[union-attr]
        host, port = re.match(r"http://([^:/]+):(\d+)/", url).groups()  # type: ignore[union-attr]
        assert host in self.services
        assert self.services[host]["environment"]["HTTP_PORT"] == port
        assert set(self.betrace.default_notifiers) <= set(self.betrace.notifiers)
        assert (self.betrace.trace_url_template or "").startswith("http://localhost:3000/")
        grafana = yaml.safe_load((COMPOSE / "grafana" / "datasources.yaml").read_text())
        assert grafana["datasources"][0]["url"] == self.betrace.tempo.url
        assert "%22uid%22:%22tempo%22" in (self.betrace.trace_url_template or "")
        assert grafana["datasources"][0]["uid"] == "tempo"

    def mounted(self, service: str, target: str) -> Path:
        """The file on this side of a bind mount of ``service`` at ``target``."""
        sources = [v.split(":")[0] for v in self.services[service]["volumes"] if v.split(":")[1] == target]
        assert len(sources) == 1, (service, target)
        return (COMPOSE / sources[0]).resolve()

    def test_prometheus_scrapes_the_checker_and_loads_the_alert_rules(self) -> None:
        prometheus = self.services["prometheus"]
        flags = dict(a.split("=", 1) for a in prometheus["command"] if "=" in a)
        config = yaml.safe_load(self.mounted("prometheus", flags["--config.file"]).read_text())
        [job] = config["scrape_configs"]
        assert job["job_name"] == "betrace"  # as the alerts' BetraceDown expects
        assert job.get("metrics_path", "/metrics") in ENDPOINTS
        assert job["static_configs"][0]["targets"] == [f"betrace:{self.betrace.http.port}"]
        assert self.betrace.http.host == "0.0.0.0"  # noqa: S104  (reachable from the Prometheus container)
        assert [self.mounted("prometheus", path) for path in config["rule_files"]] == [RULES]
        assert "--enable-feature=exemplar-storage" in prometheus["command"]

    def test_grafana_has_prometheus_with_trace_links_and_the_dashboard(self) -> None:
        provisioning = "/etc/grafana/provisioning"
        datasources = self.mounted("grafana", f"{provisioning}/datasources/datasources.yaml")
        sources = {s["type"]: s for s in yaml.safe_load(datasources.read_text())["datasources"]}
        port = self.services["prometheus"]["ports"][0].rsplit(":", 1)[1]
        assert sources["prometheus"]["url"] == f"http://prometheus:{port}"
        [link] = sources["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
        assert link == {"name": "trace_id", "datasourceUid": sources["tempo"]["uid"]}
        providers = self.mounted("grafana", f"{provisioning}/dashboards/dashboards.yaml")
        [provider] = yaml.safe_load(providers.read_text())["providers"]
        assert self.mounted("grafana", f"{provider['options']['path']}/{DASHBOARD.name}") == DASHBOARD

    def test_mounts_match_the_settings(self) -> None:
        mounts = {v.split(":")[1] for v in self.services["betrace"]["volumes"]}
        assert str(self.betrace.rules_dir) in mounts
        assert "/var/lib/betrace" in mounts
        assert self.betrace.store == "sqlite:////var/lib/betrace/betrace.db"
        assert self.services["betrace"]["read_only"] is True


class TestKubernetes:
    def test_every_container_is_pinned_hardened_probed_and_parses(self) -> None:
        found = containers()
        assert len(found) == 3  # the Deployment, the two-replica Deployment, the CronJob
        for path, pod, container in found:
            assert pinned(container["image"]), path
            parses(container["args"])
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert "requests" in container["resources"]
            ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
            for probe in ("livenessProbe", "readinessProbe"):
                if probe in container:
                    assert container[probe]["httpGet"]["path"] in ENDPOINTS
                    assert container[probe]["httpGet"]["port"] in ports
            volumes = {v["name"] for v in pod["volumes"]}
            assert {m["name"] for m in container["volumeMounts"]} <= volumes

    def test_config_env_and_secrets_are_real_settings(self) -> None:
        docs = k8s_documents()
        config = next(d for _, d in docs
                      if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "betrace-config")
        settings = settings_from(config["data"]["betrace.yaml"])
        names = env_names()
        secrets = {d["metadata"]["name"]: d for _, d in docs if d["kind"] == "Secret"}
        for secret in secrets.values():
            assert set(secret["stringData"]) <= names, secret["metadata"]["name"]
        for path, _pod, container in containers():
            for source in container.get("envFrom", []):
                assert source["secretRef"]["name"] in secrets, path
            mounted = {m["mountPath"] for m in container["volumeMounts"]}
            assert str(settings.rules_dir) in mounted
            if container.get("ports"):
                assert container["ports"][0]["containerPort"] == settings.http.port
        assert settings.http.host == "0.0.0.0"  # noqa: S104  (a pod must listen beyond loopback)

    def test_volumes_refer_to_objects_that_exist_or_are_documented(self) -> None:
        docs = k8s_documents()
        defined = {(d["kind"], d["metadata"]["name"]) for _, d in docs}
        readme = everything()
        for path, pod, _container in containers():
            for volume in pod["volumes"]:
                if "configMap" in volume:
                    name = volume["configMap"]["name"]
                    assert ("ConfigMap", name) in defined or f"configmap {name}" in readme, (path, name)
                if "persistentVolumeClaim" in volume:
                    assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in defined

    def test_the_prometheus_rule_embeds_the_rules_file(self) -> None:
        rule = next(d for _, d in k8s_documents() if d["kind"] == "PrometheusRule")
        assert rule["spec"] == yaml.safe_load(RULES.read_text())
        monitor = next(d for _, d in k8s_documents() if d["kind"] == "ServiceMonitor")
        service = next(d for _, d in k8s_documents() if d["kind"] == "Service")
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}


class TestAlerts:
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]

    def test_alerts_name_real_metrics_and_labels(self) -> None:
        series = exported()
        for rule in self.rules:
            assert [] == unknown(rule["expr"], series), rule["alert"]
        assert any("betrace_" in rule["expr"] for rule in self.rules)
        # The check itself sees a misspelt metric, a suffix prometheus-client does not add, a wrong label.
        assert ["metric betrace_violation_total", "label rule", "label rulez"] == unknown(
            'sum by (rulez) (rate(betrace_violation_total{rule="a"}[5m]))', series)
        assert ["metric betrace_rules_loaded_total"] == unknown("betrace_rules_loaded_total", series)
        assert ["label route"] == unknown('betrace_evaluations_total{route="x"}', series)

    def test_every_alert_says_what_is_wrong_and_what_to_do(self) -> None:
        readme = everything()
        for rule in self.rules:
            assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
            assert {"summary", "description"} <= rule["annotations"].keys(), rule["alert"]
            assert f"`{rule['alert']}`" in readme, rule["alert"]


@pytest.mark.parametrize("path", sorted(p.relative_to(ROOT) for p in GENERATED))
def test_generated_manifests_match_their_sources(path: Path, update_golden: bool) -> None:
    expected = GENERATED[ROOT / path]()
    if update_golden:
        (ROOT / path).write_text(expected)
    assert (ROOT / path).read_text() == expected, "rewrite it: pytest tests/test_deploy.py --update-golden"


def test_systemd_unit_runs_the_daemon_as_a_service_user() -> None:
    unit = (DEPLOY / "systemd" / "betrace.service").read_text()
    command = re.search(r"^ExecStart=(\S+) (.+)$", unit, re.MULTILINE)
    assert command is not None
    parses(shlex.split(command.group(2)))
    assert re.search(r"^User=betrace$", unit, re.MULTILINE)
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit
    for line in re.findall(r"^Environment=(BETRACE_\w+)=", unit, re.MULTILINE):
        assert line in env_names()


@pytest.mark.parametrize("path", sorted(p.relative_to(ROOT) for p in DEPLOY.rglob("*.yaml")))
def test_every_yaml_file_parses(path: Path) -> None:
    assert list(yaml.safe_load_all((ROOT / path).read_text()))
