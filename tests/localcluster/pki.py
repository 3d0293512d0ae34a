"""Certificates and keys for the local control plane.

A real apiserver only talks TLS and authenticates clients by certificate, so the local cluster
gets its own small PKI: one CA, a serving certificate for the apiserver, one client certificate
per component (its common name and organisation become the Kubernetes user and group that RBAC
sees), and the key pair that signs and verifies service-account tokens.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.localcluster.components import (
    CLUSTER_DOMAIN,
    KUBERNETES_SERVICE_IP,
    NODE_ADDRESS,
    NODE_NAME,
)

VALIDITY = datetime.timedelta(days=365)

# Where clients meet the apiserver: loopback, the real node's bridge address (the apiserver's
# own, which pods reach) and the in-cluster `kubernetes` Service (the Service range's first
# address).
SERVING_IPS = ("127.0.0.1", NODE_ADDRESS, KUBERNETES_SERVICE_IP)
SERVING_DNS = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    f"kubernetes.default.svc.{CLUSTER_DOMAIN}",
)
# The kubelet's own serving certificate: the apiserver checks it on `kubectl logs` and `exec`.
KUBELET_SERVING_IPS = (NODE_ADDRESS,)
KUBELET_SERVING_DNS = (NODE_NAME,)


@dataclass(frozen=True)
class ClientIdentity:
    """A client certificate's subject: `user` is the CN, `groups` the O fields."""

    file_stem: str
    user: str
    groups: tuple[str, ...] = ()


CLIENTS = (
    ClientIdentity("admin", "trainkube-admin", ("system:masters",)),
    ClientIdentity("controller-manager", "system:kube-controller-manager"),
    ClientIdentity("scheduler", "system:kube-scheduler"),
    # KWOK plays the kubelets of the fake nodes: it writes node and pod status and node leases.
    ClientIdentity("kwok", "trainkube-kwok", ("system:masters",)),
    # The real node: its kubelet (the Node authorizer and NodeRestriction know it by name),
    # kube-proxy (the built-in system:node-proxier binding), CoreDNS (a ClusterRole of its
    # own, nodeconfig.coredns_rbac), the volume provisioner (provisioner.RBAC) and the
    # apiserver itself when it calls the kubelet (logs, exec).
    ClientIdentity("kubelet", f"system:node:{NODE_NAME}", ("system:nodes",)),
    ClientIdentity("kube-proxy", "system:kube-proxy"),
    ClientIdentity("coredns", "system:coredns"),
    ClientIdentity("provisioner", "trainkube:provisioner"),
    ClientIdentity(
        "apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",)
    ),
)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(common_name: str, organisations: tuple[str, ...] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organisations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _issue(
    *,
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    usage: x509.ObjectIdentifier,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def ensure_pki(directory: Path) -> None:
    """Create the CA, serving, client and service-account keys in `directory` unless present."""
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / ".complete").exists():
        return

    ca_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    ca_name = _name("trainkube-local-ca")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(directory / "ca.key", ca_key)
    _write_cert(directory / "ca.crt", ca_cert)

    for stem, common_name, dns, ips in (
        ("apiserver", "kube-apiserver", SERVING_DNS, SERVING_IPS),
        ("kubelet-serving", f"system:node:{NODE_NAME}", KUBELET_SERVING_DNS, KUBELET_SERVING_IPS),
    ):
        serving_key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [x509.DNSName(name) for name in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        serving_cert = _issue(
            subject=_name(common_name),
            key=serving_key,
            ca_cert=ca_cert,
            ca_key=ca_key,
            usage=ExtendedKeyUsageOID.SERVER_AUTH,
            sans=sans,
        )
        _write_key(directory / f"{stem}.key", serving_key)
        _write_cert(directory / f"{stem}.crt", serving_cert)

    for client in CLIENTS:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(
            subject=_name(client.user, client.groups),
            key=key,
            ca_cert=ca_cert,
            ca_key=ca_key,
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        )
        _write_key(directory / f"{client.file_stem}.key", key)
        _write_cert(directory / f"{client.file_stem}.crt", cert)

    # Service-account tokens are signed with RS256 by default: an RSA pair.
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(directory / "sa.key", sa_key)
    (directory / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    (directory / ".complete").touch()
