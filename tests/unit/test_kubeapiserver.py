"""The kube-apiserver control plane's pure parts (no root, no binaries): paths, the status
merge patch, error messages, the certificates."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harness.controlplane.kubeapiserver import (
    applied_body,
    merge_patch,
    object_path,
    refusal_message,
)
from harness.controlplane.pki import CertificateAuthority, service_account_keys


def test_object_paths() -> None:
    assert object_path("Service", "ns1", "a") == "/api/v1/namespaces/ns1/services/a"
    assert object_path("Service", "ns1", "a", "status") == "/api/v1/namespaces/ns1/services/a/status"
    assert object_path("EndpointSlice", "ns1") == "/apis/discovery.k8s.io/v1/namespaces/ns1/endpointslices"
    assert object_path("Node", "", "node1", "status") == "/api/v1/nodes/node1/status"


@pytest.mark.parametrize("old,new,patch", [
    ({}, {"addresses": [{"type": "InternalIP", "address": "a"}]},
     {"addresses": [{"type": "InternalIP", "address": "a"}]}),
    ({"loadBalancer": {"ingress": [{"ip": "x"}]}}, {}, {"loadBalancer": None}),
    ({"loadBalancer": {"ingress": [{"ip": "x"}]}}, {"loadBalancer": {"ingress": [{"ip": "y"}]}},
     {"loadBalancer": {"ingress": [{"ip": "y"}]}}),
    ({"a": 1, "b": {"c": 1, "d": 2}}, {"a": 1, "b": {"c": 1}}, {"b": {"d": None}}),
])
def test_merge_patch(old: dict, new: dict, patch: dict) -> None:
    assert merge_patch(old, new) == patch


def test_server_fields_and_status_are_not_applied() -> None:
    obj = {"apiVersion": "v1", "kind": "Service", "status": {"loadBalancer": {}},
           "metadata": {"name": "a", "namespace": "n", "resourceVersion": "5", "uid": "u",
                        "creationTimestamp": "t", "managedFields": [], "labels": {"x": "y"}},
           "spec": {"clusterIP": "10.96.1.1"}}
    assert applied_body(obj) == {
        "apiVersion": "v1", "kind": "Service", "spec": {"clusterIP": "10.96.1.1"},
        "metadata": {"name": "a", "namespace": "n", "labels": {"x": "y"}}}


def test_refusals_name_the_object_and_the_causes() -> None:
    body = {"kind": "Status", "status": "Failure", "reason": "Invalid", "code": 422,
            "message": 'Service "a" is invalid: spec.clusterIPs: Invalid value',
            "details": {"causes": [{"field": "spec.clusterIPs", "message": "Invalid value: ..."}]}}
    msg = refusal_message("Service", "ns1", "a", "apply", 422, body)
    assert msg.startswith("kube-apiserver refused to apply Service ns1/a: HTTP 422 Invalid")
    assert "  spec.clusterIPs: Invalid value: ..." in msg
    assert "Node node1" in refusal_message("Node", "", "node1", "apply", 500, "boom")


def test_certificates(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "pki")
    server = ca.issue("apiserver", "kube-apiserver", server=True, ips=["192.0.2.1", "10.96.0.1"],
                      dns=["kubernetes.default.svc"])
    admin = ca.issue("admin", "svcconf-admin", orgs=["system:masters"], client=True)
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    s = x509.load_pem_x509_certificate(server.cert.read_bytes())
    a = x509.load_pem_x509_certificate(admin.cert.read_bytes())
    for c in (s, a):
        c.verify_directly_issued_by(ca_cert)
        assert c.not_valid_after_utc - datetime.datetime.now(datetime.UTC) < datetime.timedelta(days=8)
    sans = s.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("192.0.2.1"),
                                                        ipaddress.ip_address("10.96.0.1")]
    assert ExtendedKeyUsageOID.SERVER_AUTH in s.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in a.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert a.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "svcconf-admin"
    assert a.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    assert server.key.stat().st_mode & 0o777 == 0o600
    key, pub = service_account_keys(tmp_path / "pki")
    assert b"PRIVATE KEY" in key.read_bytes() and b"PUBLIC KEY" in pub.read_bytes()
