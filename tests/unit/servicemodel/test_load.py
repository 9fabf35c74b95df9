"""Loading Kubernetes objects as kubectl prints them, and the errors for bad input."""

import json
import textwrap

import pytest
from lightkube.resources.core_v1 import Node, Service
from lightkube.resources.discovery_v1 import EndpointSlice

from servicemodel import statedir
from servicemodel.cluster import ClusterState
from servicemodel.load import ModelError, load_objects, load_text

KUBECTL_LIST = textwrap.dedent("""\
    apiVersion: v1
    items:
    - apiVersion: v1
      kind: Service
      metadata:
        creationTimestamp: "2024-05-01T10:00:00Z"
        managedFields:
        - apiVersion: v1
          fieldsType: FieldsV1
          fieldsV1: {f:spec: {f:ports: {}}}
          manager: kubectl-create
          operation: Update
        name: web
        namespace: default
        resourceVersion: "1234"
        uid: 0b6e-11
      spec:
        clusterIP: 10.96.0.10
        clusterIPs: [10.96.0.10]
        internalTrafficPolicy: Cluster
        ipFamilies: [IPv4]
        ipFamilyPolicy: SingleStack
        ports:
        - name: http
          port: 80
          protocol: TCP
          targetPort: 8080
        selector: {app: web}
        sessionAffinity: None
        type: ClusterIP
      status:
        loadBalancer: {}
    - apiVersion: discovery.k8s.io/v1
      kind: EndpointSlice
      metadata:
        name: web-abcde
        namespace: default
        labels: {kubernetes.io/service-name: web}
      addressType: IPv4
      endpoints:
      - addresses: [10.244.1.5]
        conditions: {ready: true, serving: true, terminating: false}
        nodeName: node-1
      ports:
      - {name: http, port: 8080, protocol: TCP}
    - apiVersion: v1
      kind: Pod
      metadata: {name: web-1, namespace: default}
    kind: List
    metadata:
      resourceVersion: ""
    """)


def test_kubectl_list_output_loads_with_status_and_managed_fields_and_skips_other_kinds():
    skipped: list[str] = []
    objs = load_text(KUBECTL_LIST, "list.yaml", skipped=skipped)
    assert [type(o) for o in objs] == [Service, EndpointSlice]
    assert objs[0].spec.ports[0].targetPort == 8080
    assert skipped == ["Pod default/web-1 (v1)"]


def test_multi_document_yaml_and_json_load_the_same_objects():
    docs = "---\n".join(
        [
            "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\n",
            "",  # an empty document is allowed
            "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: d}\nspec: {clusterIP: 10.0.0.1, ports: [{port: 80}]}\n",
        ]
    )
    from_yaml = load_text(docs)
    as_json = json.dumps({"apiVersion": "v1", "kind": "List", "items": [o.to_dict() for o in from_yaml]})
    from_json = load_text(as_json)
    assert [type(o) for o in from_yaml] == [Node, Service] == [type(o) for o in from_json]
    assert from_json[1].spec.clusterIP == "10.0.0.1"


def test_bad_yaml_names_file_document_and_line():
    text = "apiVersion: v1\nkind: Node\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: [b\n"
    with pytest.raises(ModelError) as e:
        load_text(text, "nodes.yaml")
    msg = str(e.value)
    assert msg.startswith("nodes.yaml:")
    assert "(document 2)" in msg and "invalid YAML" in msg
    assert isinstance(e.value, ValueError)


def test_bad_json_names_file_and_line():
    with pytest.raises(ModelError, match=r"^x\.json:2: invalid JSON"):
        load_text('{"apiVersion": "v1",\n "kind": }', "x.json")


def test_wrong_field_type_names_object_field_and_line():
    text = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: ns}\nspec:\n  ports:\n  - port: http\n"
    with pytest.raises(ModelError) as e:
        load_text(text, "svc.yaml")
    err = e.value
    assert (err.source, err.line, err.obj, err.field) == ("svc.yaml", 6, "Service ns/web", "spec.ports[0].port")
    assert "svc.yaml:6 (document 1): Service ns/web: field spec.ports[0].port: Expected `int`, got `str`" in str(err)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("kind: Service\nmetadata: {name: a, namespace: b}\n", "apiVersion"),
        ("apiVersion: v1\nkind: Service\nmetadata: {namespace: b}\n", "metadata.name"),
        ("apiVersion: v1\nkind: Service\nmetadata: {name: a}\n", "metadata.namespace"),
    ],
)
def test_missing_identity_fields_are_reported_with_a_hint(text, field):
    with pytest.raises(ModelError) as e:
        load_text(text, "f.yaml")
    assert e.value.field == field
    assert e.value.hint


def test_a_scalar_document_is_not_an_object():
    with pytest.raises(ModelError, match="expected a Kubernetes object"):
        load_text("just a string\n", "s.yaml")


def test_missing_file_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="cannot read file"):
        load_objects(tmp_path / "nope.yaml")


def test_cluster_state_from_state_dir_carries_the_generation(tmp_path):
    objs = [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "d"},
         "spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "s-1", "namespace": "d", "labels": {"kubernetes.io/service-name": "s"}},
         "addressType": "IPv4", "endpoints": [{"addresses": ["10.1.0.1"]}], "ports": [{"port": 80}]},
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}},
    ]
    statedir.write_state(tmp_path, objs, generation=42)
    st = ClusterState.from_state_dir(tmp_path)
    assert st.generation == 42
    assert list(st.services) == [("d", "s")]
    assert list(st.nodes) == ["n1"]
    assert [s.metadata.name for s in st.slices_for("d", "s")] == ["s-1"]


def test_cluster_state_from_missing_state_dir_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="state.yaml: cannot read state file"):
        ClusterState.from_state_dir(tmp_path)


# libyaml (yaml.CSafeLoader) reads the input when PyYAML has it; the pure loader is the
# reference for errors. Results must not depend on which one read the text.

_BAD_YAML = [
    "apiVersion: v1\nkind: Node\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: [b\n",
    "apiVersion: v1\nkind: Node\nmetadata:\n  name: a\n   bad: indent\n",
    "apiVersion: v1\nkind: Node\nmetadata: {name: a}\n\tkind: tab\n",
    "apiVersion: v1\nkind: Node\n? [a, b]\n: unhashable-in-python\n",
]


def _with_and_without_libyaml(monkeypatch, f):
    from servicemodel import load

    out = []
    for fast in (load._FAST_LOADER, None):
        monkeypatch.setattr(load, "_FAST_LOADER", fast)
        try:
            out.append(("ok", f()))
        except ModelError as e:
            out.append(("error", str(e), e.line, e.document))
    return out


@pytest.mark.parametrize("text", _BAD_YAML)
def test_yaml_errors_do_not_depend_on_libyaml(monkeypatch, text):
    fast, pure = _with_and_without_libyaml(monkeypatch, lambda: load_text(text, "x.yaml"))
    assert fast[0] == "error"
    assert fast == pure


def test_objects_and_field_lines_do_not_depend_on_libyaml(monkeypatch):
    def dump():
        return [o.to_dict() for o in load_text(KUBECTL_LIST, "list.yaml")]

    fast, pure = _with_and_without_libyaml(monkeypatch, dump)
    assert fast == pure and fast[0] == "ok"
    bad = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: ns}\nspec:\n  ports:\n  - port: http\n"
    fast, pure = _with_and_without_libyaml(monkeypatch, lambda: load_text(bad, "svc.yaml"))
    assert fast == pure and fast[2] == 6


def test_loading_leaves_the_garbage_collector_as_it_was():
    import gc

    assert gc.isenabled()
    load_text(KUBECTL_LIST, "list.yaml")
    with pytest.raises(ModelError):
        load_text(_BAD_YAML[0], "x.yaml")
    assert gc.isenabled()
    gc.disable()
    try:
        load_text(KUBECTL_LIST, "list.yaml")
        assert not gc.isenabled()
    finally:
        gc.enable()
