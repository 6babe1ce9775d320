"""deploy/k8s: the base and every overlay rendered by the real `kubectl kustomize`, validated
offline against the Kubernetes schemas (kubernetes-validate, strict), scanned with checkov, and
held to the service they deploy: every LATENTWATCH_* name is a field of service/settings.py with
a value it accepts, the probes ask a running server's health for services it answers, and the
metrics the autoscaler reads are in a running server's /metrics."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import kubernetes_validate
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))
from repo_builder import build_repo  # noqa: E402
from served import rows_for, stub  # noqa: E402
from server_harness import ServerThread, server_settings  # noqa: E402

from latentwatch.cli.main import build_parser  # noqa: E402
from latentwatch.protos import latentwatch_pb2 as pb  # noqa: E402
from latentwatch.repository.manifest import Manifest  # noqa: E402
from latentwatch.service.settings import Settings  # noqa: E402
from latentwatch.wire.tensors import to_tensor  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
TARGETS = ("base", "overlays/cpu", "overlays/gpu", "overlays/triton")
LOADER = "models-loader.yaml"  # a plain manifest beside the overlays, applied by hand
# The oldest release whose API has every field used (the preStop sleep action, on by default
# from 1.30) and the newest kubernetes-validate knows.
K8S_VERSIONS = ("1.30.0", "1.37.0")
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
PREFIX = "LATENTWATCH_"
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
# kubernetes-validate carries the core API's schemas only; these two come from the Prometheus
# Operator's CRDs, whose references test_the_service_monitor_scrapes_the_metrics_port checks.
CRD_SKIPS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"):
        "a Prometheus Operator CRD: kubernetes-validate has no schema for it",
    ("monitoring.coreos.com/v1", "PrometheusRule"):
        "a Prometheus Operator CRD: kubernetes-validate has no schema for it",
}
Doc = dict[str, Any]


def _kustomize_command() -> list[str]:
    """`kubectl kustomize` when kubectl embeds kustomize 5 or later; else skip, saying why."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (`make kustomize` says why)")
    out = subprocess.run([kubectl, "version", "--client", "-o", "json"], capture_output=True,
                         text=True, timeout=60)
    version = json.loads(out.stdout or "{}").get("kustomizeVersion", "")
    found = re.match(r"v(\d+)", version)
    if found is None or int(found.group(1)) < 5:
        pytest.skip(f"kubectl's kustomize is {version or 'missing'}; the manifests need v5+")
    return [kubectl, "kustomize"]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Doc]]:
    command = _kustomize_command()
    out: dict[str, list[Doc]] = {}
    for target in TARGETS:
        done = subprocess.run([*command, str(K8S / target)], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, f"kubectl kustomize {target}: {done.stderr}"
        out[target] = [d for d in yaml.safe_load_all(done.stdout) if d]
    out[LOADER] = [d for d in yaml.safe_load_all((K8S / LOADER).read_text()) if d]
    return out


def by_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in by_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
    return found[0]


def server_containers(docs: list[Doc]) -> Iterator[tuple[Doc, Doc]]:
    """(Deployment, container) for every container that runs `latentwatch serve`."""
    for deployment in by_kind(docs, "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            if container.get("command", [])[:2] == ["latentwatch", "serve"]:
                yield deployment, container


def container_env(docs: list[Doc], container: Doc) -> dict[str, str]:
    """The environment the container gets: its ConfigMaps (envFrom), then `env` over them, with
    the downward API's limits.cpu resolved as the kubelet does (rounded up to the divisor)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(one(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        field = item["valueFrom"]["resourceFieldRef"]
        assert field["containerName"] == container["name"], item
        resource, _, kind = field["resource"].partition(".")
        assert resource == "limits" and kind == "cpu", f"{item['name']}: {field['resource']}"
        limit = cpu_cores(container["resources"]["limits"]["cpu"])
        env[item["name"]] = str(math.ceil(limit / cpu_cores(field.get("divisor", "1"))))
    return env


def cpu_cores(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings as the server reads them from exactly this environment; a name that is no field
    of Settings fails here (pydantic-settings itself would ignore it)."""
    unknown = sorted(n for n in env if not n.startswith(PREFIX)
                     or n[len(PREFIX):].lower() not in Settings.model_fields)
    assert not unknown, f"not settings of service/settings.py: {unknown}"
    for name in [n for n in os.environ if n.startswith(PREFIX)]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


@pytest.mark.parametrize("target", TARGETS)
def test_each_target_renders_the_server_its_services_and_its_scaling(
    rendered: dict[str, list[Doc]], target: str
) -> None:
    kinds = {d["kind"] for d in rendered[target]}
    assert {"Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler",
            "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor", "PrometheusRule"} <= kinds
    assert len(list(server_containers(rendered[target]))) == 1
    assert all(d["metadata"].get("namespace") == "latentwatch"
               for d in rendered[target] if d["kind"] != "Namespace")


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("target", [*TARGETS, LOADER])
def test_every_object_validates_against_the_kubernetes_schemas(
    rendered: dict[str, list[Doc]], target: str, version: str
) -> None:
    skipped = []
    for doc in rendered[target]:
        reason = CRD_SKIPS.get((doc["apiVersion"], doc["kind"]))
        if reason is not None:
            skipped.append(f"{doc['kind']}/{doc['metadata']['name']}: {reason}")
            continue
        kubernetes_validate.validate(doc, version, strict=True)
    # The ServiceMonitor and the PrometheusRule, nothing else.
    assert len(skipped) == (0 if target == LOADER else 2), skipped


def test_the_strict_validation_rejects_a_misspelt_field(rendered: dict[str, list[Doc]]) -> None:
    deployment, container = next(server_containers(rendered["overlays/cpu"]))
    container["readinessProbe"]["grpc"]["serivce"] = container["readinessProbe"]["grpc"].pop(
        "service")
    with pytest.raises(kubernetes_validate.ValidationError, match="serivce"):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)


def test_checkov_finds_nothing_that_is_not_justified(
    rendered: dict[str, list[Doc]], tmp_path: Path
) -> None:
    if not (CHECKOV.parents[1] / ".installed").exists():
        pytest.skip(f"checkov is not installed in {CHECKOV.parents[1].name} (`make checkov`)")
    files = []
    for target in [*TARGETS, LOADER]:
        path = tmp_path / f"{target.replace('/', '-')}.yaml"
        path.write_text(yaml.safe_dump_all(rendered[target]))
        files += ["-f", str(path)]
    done = subprocess.run(
        [str(CHECKOV), *files, "--framework", "kubernetes", "--skip-download", "-o", "json"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    report = json.loads(done.stdout)
    failed = [(c["check_id"], c["resource"], c["check_name"])
              for c in report["results"]["failed_checks"]]
    assert not failed, failed
    assert not report["results"]["parsing_errors"]
    assert report["summary"]["passed"] > 100  # checkov did look at the objects
    for check in report["results"]["skipped_checks"]:
        comment = check["check_result"].get("suppress_comment", "")
        assert len(comment) > 20 and "No comment" not in comment, (check["check_id"], comment)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A real server on the test repository, after one Score call, so that every per-version
    series exists."""
    repo = build_repo(tmp_path_factory.mktemp("k8s_repo"))
    server = ServerThread(server_settings(repo))
    manifest = Manifest.read(repo / "tab-ae" / "1")
    stub(server).Score(pb.ScoreRequest(model_name="tab-ae", input=to_tensor(
        rows_for(manifest, 32))), timeout=20)
    yield server
    server.close()


def exposed_metric_names(server: ServerThread) -> set[str]:
    url = f"http://127.0.0.1:{server.running.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines()
            if line and not line.startswith("#")}


@pytest.mark.parametrize("target", TARGETS)
def test_every_setting_is_a_field_of_the_service_with_a_value_it_accepts(
    rendered: dict[str, list[Doc]], target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = rendered[target]
    deployment, container = next(server_containers(docs))
    env = container_env(docs, container)
    settings = settings_from(env, monkeypatch)
    pod = deployment["spec"]["template"]["spec"]
    assert settings.host == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": settings.port, "http": settings.http_port,
                     "metrics": settings.metrics_port}
    for probe in PROBES:
        check = container[probe]
        assert ("grpc" in check) != ("httpGet" in check), probe
        if "grpc" in check:
            assert check["grpc"]["port"] == settings.port, probe
        else:
            assert check["httpGet"]["port"] in (settings.http_port, "http"), probe
    # With Triton, gRPC health follows Triton's readiness: liveness must not, or a Triton restart
    # would restart every server pod.
    assert ("grpc" in container["livenessProbe"]) is (settings.backend != "triton")
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[str(settings.repo)].get("readOnly") is True
    limit = cpu_cores(container["resources"]["limits"]["cpu"])
    assert settings.intra_op_threads == math.ceil(limit) > 0
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pre_stop + settings.shutdown_grace_s
    assert settings.max_connection_age_s > 0  # clients of the headless Service re-resolve
    gpus = "nvidia.com/gpu" in container["resources"]["limits"]
    assert settings.require_gpu is gpus
    assert (settings.backend == "triton") is (target == "overlays/triton")
    # The command parses with the real CLI, and sets nothing the environment does not.
    assert build_parser().parse_args(container["command"][1:]).command == "serve"
    assert container["command"] == ["latentwatch", "serve"]


def test_a_name_that_is_no_setting_fails_the_check(
    rendered: dict[str, list[Doc]], monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = rendered["overlays/cpu"]
    env = container_env(docs, next(server_containers(docs))[1])
    with pytest.raises(AssertionError, match="LATENTWATCH_MAX_BATCH_ROW"):
        settings_from({**env, "LATENTWATCH_MAX_BATCH_ROW": "64"}, monkeypatch)
    with pytest.raises(ValueError, match="shutdown_grace_s"):
        settings_from({**env, "LATENTWATCH_SHUTDOWN_GRACE_S": "-1"}, monkeypatch)


@pytest.mark.parametrize("target", TARGETS)
def test_the_probes_ask_for_health_services_a_running_server_answers(
    rendered: dict[str, list[Doc]], target: str, served: ServerThread
) -> None:
    _, container = next(server_containers(rendered[target]))
    health = health_pb2_grpc.HealthStub(served.channel)
    for probe in PROBES:
        if "httpGet" in container[probe]:
            path = container[probe]["httpGet"]["path"]
            url = f"http://127.0.0.1:{served.running.http_port}{path}"
            assert urllib.request.urlopen(url, timeout=5).status == 200, probe
            continue
        check = container[probe]["grpc"]
        answer = health.Check(health_pb2.HealthCheckRequest(service=check.get("service", "")),
                              timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING, probe
    with pytest.raises(grpc.RpcError) as unknown:  # a misspelt service is not answered
        health.Check(health_pb2.HealthCheckRequest(service="latentwatch.v1.LatentWatch"))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


def adapter_rules() -> list[Doc]:
    values = yaml.safe_load((K8S / "prometheus-adapter" / "values.yaml").read_text())
    assert values["rules"]["default"] is False
    return list(values["rules"]["custom"])


def rule_metric(rule: Doc) -> str:
    found = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{", rule["seriesQuery"])
    assert found is not None, rule["seriesQuery"]
    return found.group(1)


def test_the_autoscaler_metrics_are_served_by_the_adapter_from_real_series(
    rendered: dict[str, list[Doc]], served: ServerThread
) -> None:
    exposed = exposed_metric_names(served)
    served_as = {}
    for rule in adapter_rules():
        series = rule_metric(rule)
        assert series in exposed, f"{series} is not in the server's /metrics"
        assert re.fullmatch(rule["name"]["matches"], series)
        assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
        served_as[rule["name"]["as"]] = series
    for target in TARGETS:
        docs = rendered[target]
        hpa = one(docs, "HorizontalPodAutoscaler", "latentwatch")
        assert one(docs, "Deployment", hpa["spec"]["scaleTargetRef"]["name"])
        pods = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
        resources = [m["resource"]["name"] for m in hpa["spec"]["metrics"]
                     if m["type"] == "Resource"]
        assert pods and resources == ["cpu"]
        assert set(pods) <= set(served_as), f"{pods}: no prometheus-adapter rule serves them"
    assert "latentwatch_queue_row" not in exposed  # the check compares exact names


def test_the_adapter_query_is_promql_that_promtool_accepts(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (`make prometheus`)")
    rules = []
    for i, rule in enumerate(adapter_rules()):
        query = (rule["metricsQuery"].replace("<<.Series>>", rule_metric(rule))
                 .replace("<<.LabelMatchers>>", 'namespace="latentwatch",pod=~"latentwatch-.*"')
                 .replace("<<.GroupBy>>", "pod"))
        rules.append({"record": f"adapter:rule_{i}", "expr": query})
    path = tmp_path / "adapter.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "adapter", "rules": rules}]}))
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("target", TARGETS)
def test_services_budgets_policies_and_the_service_monitor_point_at_the_pods(
    rendered: dict[str, list[Doc]], target: str
) -> None:
    docs = rendered[target]
    deployment, container = next(server_containers(docs))
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    headless = one(docs, "Service", "latentwatch-headless")["spec"]
    assert headless["clusterIP"] == "None" and selects(headless["selector"], labels)
    assert [p["targetPort"] for p in headless["ports"]] == ["grpc"]
    regular = one(docs, "Service", "latentwatch")
    assert selects(regular["spec"]["selector"], labels)
    assert {p["targetPort"] for p in regular["spec"]["ports"]} <= set(ports)
    pdb = one(docs, "PodDisruptionBudget", "latentwatch")["spec"]
    assert selects(pdb["selector"]["matchLabels"], labels)
    monitor = one(docs, "ServiceMonitor", "latentwatch")["spec"]
    scraped = [s for s in by_kind(docs, "Service")
               if selects(monitor["selector"]["matchLabels"], s["metadata"]["labels"])]
    assert [s["metadata"]["name"] for s in scraped] == ["latentwatch"]
    (endpoint,) = monitor["endpoints"]
    assert endpoint["path"] == "/metrics"  # the only path the metrics port answers
    (port,) = [p for p in regular["spec"]["ports"] if p["name"] == endpoint["port"]]
    assert ports[port["targetPort"]] == ports["metrics"]
    policy = one(docs, "NetworkPolicy", "latentwatch")["spec"]
    assert selects(policy["podSelector"]["matchLabels"], labels)
    allowed = {p["port"] for rule in policy["ingress"] for p in rule["ports"]}
    assert allowed == set(ports.values())


def test_gpu_pods_request_a_gpu_on_the_same_nodes(rendered: dict[str, list[Doc]]) -> None:
    placements = []
    for target in ("overlays/gpu", "overlays/triton"):
        for deployment in by_kind(rendered[target], "Deployment"):
            pod = deployment["spec"]["template"]["spec"]
            if any("nvidia.com/gpu" in c["resources"]["limits"] for c in pod["containers"]):
                placements.append((pod["nodeSelector"], pod["tolerations"]))
    assert len(placements) == 2 and placements[0] == placements[1]
    for target in ("base", "overlays/cpu"):
        assert "nvidia.com/gpu" not in json.dumps(rendered[target])


def test_triton_serves_the_repository_its_init_container_writes_where_the_server_looks(
    rendered: dict[str, list[Doc]], monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = rendered["overlays/triton"]
    _, container = next(server_containers(docs))
    settings = settings_from(container_env(docs, container), monkeypatch)
    host, _, port = settings.triton_url.rpartition(":")
    service = one(docs, "Service", host)
    (grpc_port,) = [p for p in service["spec"]["ports"] if p["port"] == int(port)]
    triton = next(d for d in by_kind(docs, "Deployment")
                  if selects(service["spec"]["selector"], d["spec"]["template"]["metadata"]
                             ["labels"]))
    pod = triton["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    assert re.fullmatch(r"nvcr\.io/nvidia/tritonserver:\d\d\.\d\d-py3", server["image"])
    flags = dict(a.removeprefix("--").split("=", 1) for a in server["args"])
    named = {p["name"]: p["containerPort"] for p in server["ports"]}
    assert named[grpc_port["targetPort"]] == int(flags["grpc-port"])
    for probe in ("startupProbe", "readinessProbe"):
        assert server[probe]["httpGet"]["path"] == "/v2/health/ready"
        assert named[server[probe]["httpGet"]["port"]] == int(flags["http-port"])
    (init,) = pod["initContainers"]
    args = build_parser().parse_args(init["command"][1:])  # the real CLI's triton-repo
    assert args.command == "triton-repo" and args.repo == settings.repo
    mounts = {m["mountPath"]: m["name"] for m in init["volumeMounts"]}
    served_from = {m["mountPath"]: m["name"] for m in server["volumeMounts"]}
    assert mounts[str(args.out)] == served_from[flags["model-repository"]]
    assert mounts[str(settings.repo)] == "models"
    egress = one(docs, "NetworkPolicy", "latentwatch-to-triton")["spec"]["egress"]
    assert [p["port"] for rule in egress for p in rule["ports"]] == [int(port)]


def test_the_loader_pod_writes_the_claim_the_servers_read(
    rendered: dict[str, list[Doc]], monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = rendered["overlays/cpu"]
    deployment, container = next(server_containers(docs))
    settings = settings_from(container_env(docs, container), monkeypatch)
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
              for v in deployment["spec"]["template"]["spec"]["volumes"]
              if "persistentVolumeClaim" in v}
    (served_from,) = [m["name"] for m in container["volumeMounts"]
                      if m["mountPath"] == str(settings.repo)]
    loader = one(rendered[LOADER], "Pod", "latentwatch-models-loader")["spec"]
    (mount,) = [m for m in loader["containers"][0]["volumeMounts"]
                if m["mountPath"] == str(settings.repo)]
    (volume,) = [v for v in loader["volumes"] if v["name"] == mount["name"]]
    assert volume["persistentVolumeClaim"]["claimName"] == claims[served_from]
    assert not mount.get("readOnly") and "readOnly" not in volume["persistentVolumeClaim"]
    assert one(docs, "PersistentVolumeClaim", claims[served_from])
