"""The Helm chart (charts/trainkube), rendered offline by helm built from the pinned module in
tests/localcluster/go/helm (tests/charts/build-helm.sh; cached, so fast after the first run)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.charts import api_calls
from tests.charts import helm as helm_build

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "trainkube"
RELEASE, NAMESPACE = "tk", "trainkube-system"
KINDS = ("LLMTrainingJob", "FineTuneJob", "EvalJob")
PLURALS = ("llmtrainingjobs", "finetunejobs", "evaljobs")

# What the operator's code needs (tests/charts/api_calls.py reads it from operator/trainkube):
# the leader election's Lease rules live in their own Role in the release namespace, the rest
# in the ClusterRole (or each watched namespace's Role).
NEEDED = api_calls.needed()
LEASES = {rule for rule in NEEDED if rule[1] == "leases"}
OPERATOR_RULES = NEEDED - LEASES


@pytest.fixture(scope="session")
def helm() -> str:
    return helm_build.binary()


def _run(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, check=False, timeout=60)


def render(helm: str, *flags: str) -> list[dict[str, Any]]:
    """The objects `helm template` renders (templates only, as `helm install` sends them)."""
    done = _run(helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *flags)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def render_error(helm: str, *flags: str) -> str:
    done = _run(helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *flags)
    assert done.returncode != 0, f"rendered although it should not: {flags}"
    return done.stderr


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def flat_rules(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def containers(pod: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from pod.get("initContainers") or []
    yield from pod["containers"]


def test_helm_lint_strict_passes(helm: str) -> None:
    done = _run(helm, "lint", "--strict", str(CHART))
    assert done.returncode == 0, done.stdout + done.stderr


def test_default_pod_passes_the_restricted_pod_security_standard(helm: str) -> None:
    pod = one(render(helm), "Deployment")["spec"]["template"]["spec"]
    pod_sc = pod.get("securityContext") or {}
    # baseline: no host namespaces, no host ports, no hostPath, not privileged.
    assert not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
    for volume in pod.get("volumes") or []:
        sources = set(volume) - {"name"}
        assert sources <= {
            "configMap",
            "csi",
            "downwardAPI",
            "emptyDir",
            "ephemeral",
            "persistentVolumeClaim",
            "projected",
            "secret",
        }, volume
    for c in containers(pod):
        sc = c.get("securityContext") or {}
        assert not sc.get("privileged"), c["name"]
        assert not any(p.get("hostPort") for p in c.get("ports") or []), c["name"]
        # restricted: no escalation, drop ALL, non-root, a seccomp profile.
        assert sc.get("allowPrivilegeEscalation") is False, c["name"]
        assert "ALL" in sc["capabilities"]["drop"], c["name"]
        assert set(sc["capabilities"].get("add") or []) <= {"NET_BIND_SERVICE"}, c["name"]
        assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, c["name"]
        assert sc.get("runAsUser", pod_sc.get("runAsUser")) not in (0, None), c["name"]
        profile = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        assert profile in ("RuntimeDefault", "Localhost"), c["name"]


def test_default_container_runs_as_uid_1000_on_a_read_only_root_with_a_tmp_emptydir(
    helm: str,
) -> None:
    pod = one(render(helm), "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["securityContext"]["runAsUser"] == 1000
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert "emptyDir" in volume


def test_deployment_runs_two_replicas_that_elect_on_a_lease_in_their_own_namespace(
    helm: str,
) -> None:
    objects = render(helm)
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "ghcr.io/trainkube/operator:0.1.0"
    assert container["args"] == [
        "operator",
        "--liveness=http://0.0.0.0:8080/healthz",
        "--metrics-port=9090",
        "--api-qps=0",
        "--api-burst=200",
    ]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "healthz": 8080,
        "metrics": 9090,
    }
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    labels = deployment["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["selector"]["matchLabels"] == labels
    assert one(objects, "Service")["spec"]["selector"] == labels


def test_a_single_replica_has_no_pod_disruption_budget(helm: str) -> None:
    assert of_kind(render(helm, "--set", "replicas=1"), "PodDisruptionBudget") == []


def test_the_rules_read_from_the_code_name_each_call_by_group_resource_and_verb() -> None:
    assert api_calls.method_rules("read_namespaced_persistent_volume_claim") == {
        ("", "persistentvolumeclaims", "get")
    }
    assert api_calls.method_rules("list_event_for_all_namespaces") == {
        ("", "events", "list"),
        ("", "events", "watch"),
    }
    assert api_calls.method_rules("delete_collection_namespaced_pod") == {
        ("", "pods", "deletecollection")
    }
    assert ("trainkube.io", "evaljobs/status", "update") in api_calls.method_rules(
        "replace_namespaced_custom_object_status"
    )
    assert api_calls.method_rules("apply") == set()
    # The operator reads no Secret, and its code says so.
    assert not {rule for rule in NEEDED if rule[1] == "secrets"}


def test_cluster_role_rules_are_exactly_what_the_operator_calls(helm: str) -> None:
    objects = render(helm)
    role = one(objects, "ClusterRole")
    assert flat_rules(role["rules"]) == OPERATOR_RULES
    assert not any("resourceNames" in rule for rule in role["rules"])
    binding = one(objects, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    account = one(objects, "ServiceAccount")["metadata"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["name"], "namespace": NAMESPACE}
    ]


def test_leader_election_may_touch_only_its_lease_in_the_release_namespace(helm: str) -> None:
    objects = render(helm)
    (role,) = of_kind(objects, "Role")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert flat_rules(role["rules"]) == LEASES
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["trainkube-operator"],
            "verbs": ["get", "update"],
        },
    ]
    (binding,) = of_kind(objects, "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["metadata"]["namespace"] == NAMESPACE


def test_namespaced_scope_renders_roles_in_each_watched_namespace_and_nothing_cluster_wide(
    helm: str,
) -> None:
    objects = render(
        helm, "--set", "rbac.scope=namespaced", "--set", "watchNamespaces={ml,research}"
    )
    assert of_kind(objects, "ClusterRole") == []
    assert of_kind(objects, "ClusterRoleBinding") == []
    roles = {r["metadata"]["namespace"]: r for r in of_kind(objects, "Role")}
    assert set(roles) == {"ml", "research", NAMESPACE}
    for namespace in ("ml", "research"):
        assert flat_rules(roles[namespace]["rules"]) == OPERATOR_RULES
    bindings = {
        (b["metadata"]["namespace"], b["roleRef"]["kind"]) for b in of_kind(objects, "RoleBinding")
    }
    assert bindings == {("ml", "Role"), ("research", "Role"), (NAMESPACE, "Role")}
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["args"][-2:] == ["--namespace=ml", "--namespace=research"]


def test_namespaced_scope_without_watched_namespaces_fails_naming_the_value(helm: str) -> None:
    assert "watchNamespaces" in render_error(helm, "--set", "rbac.scope=namespaced")


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (("--set-json", 'replicas="two"'), "/replicas"),
        (("--set", "replicsa=3"), "replicsa"),
        (("--set", "image.pullPolicy=Sometimes"), "/image/pullPolicy"),
        (("--set", "rbac.scope=everywhere"), "/rbac/scope"),
        (("--set", "metrics.serviceMonitor.enable=true"), "enable"),
        (("--set", "watchNamespaces={Not_A_Namespace}"), "/watchNamespaces/0"),
    ],
    ids=["wrong-type", "unknown-key", "bad-enum", "bad-scope", "nested-typo", "bad-namespace"],
)
def test_a_bad_value_fails_with_a_message_naming_the_field(
    helm: str, flags: tuple[str, ...], named: str
) -> None:
    error = render_error(helm, *flags)
    assert "schema" in error, error
    assert named in error, error


def test_chart_crds_are_exact_copies_of_the_generated_crds() -> None:
    generated = {p.name: p.read_bytes() for p in (REPO / "crds").glob("*.yaml")}
    copied = {p.name: p.read_bytes() for p in (CHART / "crds").iterdir()}
    assert len(generated) == 3
    assert copied == generated, "run tests/charts/sync-crds.sh and commit charts/trainkube/crds/"


def test_crds_are_in_crds_not_templates_so_helm_keeps_them_on_uninstall(helm: str) -> None:
    # Templates are what `helm uninstall` deletes; crds/ is installed first and never deleted.
    assert of_kind(render(helm), "CustomResourceDefinition") == []
    crds = of_kind(render(helm, "--include-crds"), "CustomResourceDefinition")
    assert {c["metadata"]["name"] for c in crds} == {f"{p}.trainkube.io" for p in PLURALS}


def test_service_monitor_is_rendered_only_when_enabled(helm: str) -> None:
    assert of_kind(render(helm), "ServiceMonitor") == []
    monitor = one(render(helm, "--set", "metrics.serviceMonitor.enabled=true"), "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


def test_metrics_off_serves_none_and_renders_no_service(helm: str) -> None:
    objects = render(helm, "--set", "metrics.enabled=false")
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert "--metrics-port=0" in container["args"]
    assert of_kind(objects, "Service") == []


def test_argocd_health_config_map_is_rendered_only_when_enabled_with_the_generated_checks(
    helm: str,
) -> None:
    assert of_kind(render(helm), "ConfigMap") == []
    config_map = one(render(helm, "--set", "argocd.healthChecks.enabled=true"), "ConfigMap")
    generated = yaml.safe_load((CHART / "argocd" / "argocd-cm-patch.yaml").read_text())["data"]
    assert set(config_map["data"]) == {
        f"resource.customizations.health.trainkube.io_{kind}" for kind in KINDS
    }
    assert config_map["data"] == generated
