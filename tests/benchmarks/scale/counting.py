"""The operator's own identity, and counting requests: a client certificate and a FlowSchema
that only the operator's user matches (API Priority and Fairness counts the requests it
dispatches per FlowSchema), and the controller-manager's own request counters."""

from __future__ import annotations

import datetime
import ssl
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import urllib3
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from prometheus_client.parser import text_string_to_metric_families

from tests.benchmarks.scale.watch import Api, now
from tests.localcluster import components
from tests.localcluster.cluster import LocalCluster

OPERATOR_USER = "trainkube-operator"
FLOW_SCHEMA = "trainkube-benchmark-operator"
BINDING = "trainkube-benchmark-operator"


def operator_identity(cluster: LocalCluster, directory: Path) -> Path:
    """A client certificate and kubeconfig for OPERATOR_USER (bound to cluster-admin), and a
    FlowSchema that matches only that user; returns the kubeconfig."""
    pki = cluster.layout.pki_dir
    ca_cert = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, OPERATOR_USER)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "operator.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "operator.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    document: Any = components.kubeconfig_document(layout=cluster.layout, identity="operator")
    document["users"][0]["user"] = {
        "client-certificate": str(directory / "operator.crt"),
        "client-key": str(directory / "operator.key"),
    }
    kubeconfig = directory / "operator.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(document))
    rule = {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"], "clusterScope": True}
    manifests = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": BINDING},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "cluster-admin",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": OPERATOR_USER}
            ],
        },
        {
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
            "kind": "FlowSchema",
            "metadata": {"name": FLOW_SCHEMA},
            "spec": {
                "matchingPrecedence": 200,
                "priorityLevelConfiguration": {"name": "workload-high"},
                "distinguisherMethod": {"type": "ByUser"},
                "rules": [
                    {
                        "subjects": [{"kind": "User", "user": {"name": OPERATOR_USER}}],
                        "resourceRules": [{**rule, "namespaces": ["*"]}],
                        "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                    }
                ],
            },
        },
    ]
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input_text=yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": manifests}),
    )
    return kubeconfig


def summed(text: str, name: str, key: Callable[[dict[str, str]], str]) -> dict[str, float]:
    """The samples called `name` in a /metrics answer, summed by `key` of their labels."""
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                label = key(sample.labels)
                sums[label] = sums.get(label, 0.0) + sample.value
    return sums


def requests_by_flow(api: Api) -> dict[str, float]:
    """Requests the apiserver has dispatched so far, by FlowSchema (every client's class:
    the controller-manager's controllers, the scheduler, nodes, the operator, kubectl ...)."""
    text = str(api.get("/metrics"))
    return summed(
        text,
        "apiserver_flowcontrol_dispatched_requests_total",
        lambda labels: labels["flow_schema"],
    )


def operator_requests(api: Api) -> int:
    """Requests the apiserver has dispatched for FLOW_SCHEMA (that is, for OPERATOR_USER)."""
    return int(requests_by_flow(api).get(FLOW_SCHEMA, 0.0))


def controller_manager_requests(layout: components.Layout) -> dict[str, float]:
    """The controller-manager's own count of its requests, by verb and answer, and the seconds
    they waited for its client-side rate limiter (`limiterWait <VERB>`)."""
    pki = layout.pki_dir
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # its own self-signed cert
    context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    http = urllib3.PoolManager(ssl_context=context)
    url = f"https://127.0.0.1:{layout.controller_manager_port}/metrics"
    with warnings.catch_warnings():  # unverified on purpose: no warning for it
        warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
        text = http.request("GET", url, timeout=10).data.decode()
    return {
        **summed(
            text,
            "rest_client_requests_total",
            lambda labels: f"{labels.get('method')} {labels.get('code')}",
        ),
        **summed(
            text,
            "rest_client_rate_limiter_duration_seconds_sum",
            lambda labels: f"limiterWait {labels.get('verb')}",
        ),
    }


QUIET_SECONDS = 5.0  # a window with at most QUIET_REQUESTS: the controller-manager is idle
QUIET_REQUESTS = 2  # (idle, it sends about one request every 3 s)


def wait_controller_manager_quiet(layout: components.Layout, cap_seconds: float) -> float:
    """Wait until the controller-manager has sent at most QUIET_REQUESTS requests in the last
    QUIET_SECONDS (at most `cap_seconds`); the seconds waited. Its Job controller posts its Events
    through the same client and rate limit as its pod creations, and falls behind with them:
    measured right after the plain run, the Events of the plain jobs (117, answered 404 once
    their namespace was gone) went out during the operator's run and took ~6 s of the Job
    controller's requests from it."""
    started = now()

    def sent() -> float:
        counted = controller_manager_requests(layout)
        return sum(v for k, v in counted.items() if not k.startswith("limiter"))

    samples = [(now(), sent())]
    while now() - started < cap_seconds:
        time.sleep(0.5)
        samples.append((now(), sent()))
        window = [count for at, count in samples if at >= samples[-1][0] - QUIET_SECONDS]
        if samples[-1][0] - samples[0][0] >= QUIET_SECONDS and window[-1] - window[0] <= (
            QUIET_REQUESTS
        ):
            break
    return round(now() - started, 1)


def requests_between(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    moved = {flow: round(after[flow] - before.get(flow, 0.0), 1) for flow in sorted(after)}
    return {flow: count for flow, count in moved.items() if count}


def calibrate(admin: Api, as_operator: Api) -> None:
    """Make known requests as the operator's user and check that exactly they are counted."""
    for _ in range(60):  # the FlowSchema takes effect once the apiserver has read it
        as_operator.get("/api/v1/namespaces/default")
        if operator_requests(admin) > 0:
            break
        time.sleep(0.5)
    before = operator_requests(admin)
    for _ in range(10):
        as_operator.get("/api/v1/namespaces/default")
    counted = operator_requests(admin) - before
    if counted != 10:
        raise RuntimeError(f"the FlowSchema counted {counted} of 10 requests by {OPERATOR_USER}")


class AsOperator(LocalCluster):
    """The local cluster as the operator's own user sees it (OperatorProcess runs the operator
    with `cluster.kubeconfig`)."""

    def __init__(self, cluster: LocalCluster, kubeconfig: Path) -> None:
        super().__init__(layout=cluster.layout, bin_dir=cluster.bin_dir)
        self._kubeconfig = kubeconfig

    @property
    def kubeconfig(self) -> Path:
        return self._kubeconfig
