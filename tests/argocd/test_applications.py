"""The Argo CD examples (examples/argocd/) against this repository, with no cluster: each
Application's source exists here, the chart renders with the Application's Helm settings as
Argo CD renders it (`helm template`, CRDs included), and each AppProject allows every object its
Application deploys. Their schema is checked on a real apiserver in
tests/cluster/test_argocd_applications.py."""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.charts import helm as helm_build

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "argocd"
# Argo CD's directory source reads these files (reposerver's manifestFile pattern).
MANIFEST_FILE = re.compile(r"\.(yaml|yml|json|jsonnet)$")
# The kinds the chart may render that are not namespaced.
CLUSTER_SCOPED = {
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("", "Namespace"),
}
JOB_KINDS = {"LLMTrainingJob", "FineTuneJob", "EvalJob"}


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _applications() -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in _documents(path):
            if doc["kind"] == "Application":
                found[doc["metadata"]["name"]] = doc
    return found


def _projects() -> dict[str, dict[str, Any]]:
    return {
        doc["metadata"]["name"]: doc
        for doc in _documents(EXAMPLES / "projects.yaml")
        if doc["kind"] == "AppProject"
    }


APPLICATIONS = _applications()
HELM_APPS = [name for name, app in APPLICATIONS.items() if "helm" in app["spec"]["source"]]
DIRECTORY_APPS = [name for name, app in APPLICATIONS.items() if name not in HELM_APPS]


@pytest.fixture(scope="session")
def helm() -> str:
    """helm built from the pinned Go module (cached; tests/charts/build-helm.sh)."""
    return helm_build.binary()


def _expand_braces(pattern: str) -> list[str]:
    """`{a,b}c` -> [`ac`, `bc`] (one level, as the examples use it), for fnmatch."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if not match:
        return [pattern]
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return [p for alt in match.group(1).split(",") for p in _expand_braces(head + alt + tail)]


def _glob(pattern: str, path: str) -> bool:
    """Argo CD's glob.Match with no separators (gobwas/glob): `*` matches any run, `/`
    included, like fnmatch's."""
    return any(fnmatch.fnmatchcase(path, p) for p in _expand_braces(pattern))


def _directory_files(app: dict[str, Any]) -> list[Path]:
    """The files a directory source gives Argo CD: manifests under spec.source.path, only at the
    top unless recurse, filtered by include and exclude (matched against the relative path)."""
    source = app["spec"]["source"]
    directory = source.get("directory") or {}
    root = REPO / source["path"]
    candidates = root.rglob("*") if directory.get("recurse") else root.iterdir()
    chosen = []
    for path in sorted(candidates):
        relative = str(path.relative_to(root))
        if not path.is_file() or not MANIFEST_FILE.search(path.name):
            continue
        if directory.get("exclude") and _glob(directory["exclude"], relative):
            continue
        if directory.get("include") and not _glob(directory["include"], relative):
            continue
        chosen.append(path)
    return chosen


def _render(helm: str, app: dict[str, Any], tmp_path: Path, **extra: Any) -> list[dict[str, Any]]:
    """`helm template` as Argo CD runs it for a Helm source in Git: release name (default: the
    Application's name), destination namespace, the CRDs unless skipCrds, valueFiles, values,
    valuesObject, then parameters (lowest precedence first); `extra` is merged into
    valuesObject."""
    source, destination = app["spec"]["source"], app["spec"]["destination"]
    settings = source["helm"]
    chart = REPO / source["path"]
    flags = ["--namespace", destination["namespace"]]
    if not settings.get("skipCrds"):
        flags.append("--include-crds")
    for name in settings.get("valueFiles", []):
        flags += ["--values", str(chart / name)]
    if "values" in settings:
        (tmp_path / "values.yaml").write_text(settings["values"])
        flags += ["--values", str(tmp_path / "values.yaml")]
    values_object = {**settings.get("valuesObject", {}), **extra}
    if values_object:
        (tmp_path / "values-object.json").write_text(json.dumps(values_object))
        flags += ["--values", str(tmp_path / "values-object.json")]
    for parameter in settings.get("parameters", []):
        flag = "--set-string" if parameter.get("forceString") else "--set"
        flags += [flag, f"{parameter['name']}={parameter['value']}"]
    release = settings.get("releaseName", app["metadata"]["name"])
    done = subprocess.run(
        [helm, "template", release, str(chart), *flags],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def _group(obj: dict[str, Any]) -> str:
    api_version: str = obj["apiVersion"]
    return api_version.rpartition("/")[0]


def _allowed(rules: list[dict[str, Any]], group: str, kind: str) -> bool:
    return any(
        _glob(rule["group"] or "", group) and _glob(rule["kind"], kind) for rule in rules or []
    )


def _project_refusals(
    project: dict[str, Any], app: dict[str, Any], objects: list[dict[str, Any]]
) -> list[str]:
    """What the project would refuse of `objects` deployed by `app` (Argo CD's whitelist
    semantics: an absent namespaceResourceWhitelist allows every namespaced kind, an absent
    clusterResourceWhitelist none)."""
    spec, destination = project["spec"], app["spec"]["destination"]
    refusals = []
    for obj in objects:
        group, kind = _group(obj), obj["kind"]
        name = f"{kind} {obj['metadata']['name']}"
        if (group, kind) in CLUSTER_SCOPED:
            if not _allowed(spec.get("clusterResourceWhitelist", []), group, kind):
                refusals.append(f"{name}: cluster-scoped kind not in clusterResourceWhitelist")
            continue
        whitelist = spec.get("namespaceResourceWhitelist")
        if whitelist is not None and not _allowed(whitelist, group, kind):
            refusals.append(f"{name}: not in namespaceResourceWhitelist")
        namespace = obj["metadata"].get("namespace") or destination["namespace"]
        if not any(
            _glob(d["namespace"], namespace) and _glob(d["server"], destination["server"])
            for d in spec["destinations"]
        ):
            refusals.append(f"{name}: namespace {namespace} is not a destination")
    return refusals


def test_the_examples_hold_an_application_for_the_chart_and_one_for_the_jobs() -> None:
    assert HELM_APPS == ["trainkube"]
    assert DIRECTORY_APPS == ["trainkube-examples"]
    assert set(_projects()) == {app["spec"]["project"] for app in APPLICATIONS.values()}


@pytest.mark.parametrize("name", sorted(APPLICATIONS))
def test_each_application_takes_its_source_from_a_folder_of_this_repository(name: str) -> None:
    app = APPLICATIONS[name]
    source = app["spec"]["source"]
    chart = yaml.safe_load((REPO / "charts" / "trainkube" / "Chart.yaml").read_text())
    assert source["repoURL"].removesuffix(".git") in chart["sources"]
    assert (REPO / source["path"]).is_dir()
    if name in HELM_APPS:
        assert (REPO / source["path"] / "Chart.yaml").is_file()  # Argo CD: a Helm source
    project = _projects()[app["spec"]["project"]]
    assert source["repoURL"] in project["spec"]["sourceRepos"]


@pytest.mark.parametrize("name", HELM_APPS)
def test_the_chart_renders_with_the_applications_helm_settings_crds_included(
    helm: str, name: str, tmp_path: Path
) -> None:
    app = APPLICATIONS[name]
    objects = _render(helm, app, tmp_path)
    crds = {o["metadata"]["name"]: o for o in objects if o["kind"] == "CustomResourceDefinition"}
    for path in sorted((REPO / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        assert crds.pop(crd["metadata"]["name"]) == crd
    assert not crds
    [deployment] = [o for o in objects if o["kind"] == "Deployment"]
    assert deployment["metadata"]["namespace"] == app["spec"]["destination"]["namespace"]
    values = app["spec"]["source"]["helm"]["valuesObject"]
    assert deployment["spec"]["replicas"] == values["replicas"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    watched = [a.removeprefix("--namespace=") for a in container["args"] if "--namespace=" in a]
    assert watched == values["watchNamespaces"]


@pytest.mark.parametrize("name", HELM_APPS)
def test_the_project_allows_every_object_the_chart_renders_optional_ones_included(
    helm: str, name: str, tmp_path: Path
) -> None:
    app = APPLICATIONS[name]
    project = _projects()[app["spec"]["project"]]
    as_configured = _render(helm, app, tmp_path)
    everything = _render(
        helm,
        app,
        tmp_path,
        metrics={"serviceMonitor": {"enabled": True}},
        argocd={"healthChecks": {"enabled": True}},
    )
    assert {o["kind"] for o in everything} - {o["kind"] for o in as_configured} == {
        "ServiceMonitor",
        "ConfigMap",
    }
    assert _project_refusals(project, app, everything) == []
    if "CreateNamespace=true" in app["spec"]["syncPolicy"]["syncOptions"]:
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "any"}}
        assert _project_refusals(project, app, [namespace]) == []


@pytest.mark.parametrize("name", DIRECTORY_APPS)
def test_the_jobs_application_deploys_the_three_tiny_jobs_and_its_project_allows_them(
    name: str,
) -> None:
    app = APPLICATIONS[name]
    files = _directory_files(app)
    assert [f.name for f in files] == [
        "01-tiny-pretrain-cpu.yaml",
        "02-lora-finetune.yaml",
        "03-ab-eval.yaml",
    ]
    objects = [doc for path in files for doc in _documents(path)]
    assert {(o["apiVersion"], o["kind"]) for o in objects} <= {
        ("trainkube.io/v1alpha1", kind) for kind in JOB_KINDS
    }
    assert all("namespace" not in o["metadata"] for o in objects)  # the destination's
    assert _project_refusals(_projects()[app["spec"]["project"]], app, objects) == []
    # And the operator's Application watches the namespace the jobs go to.
    operator = APPLICATIONS[HELM_APPS[0]]
    watched = operator["spec"]["source"]["helm"]["valuesObject"]["watchNamespaces"]
    assert app["spec"]["destination"]["namespace"] in watched


def test_the_project_check_refuses_what_a_project_does_not_allow() -> None:
    """The checks above can fail: a Deployment and a Secret in the jobs' project, and a job in
    another namespace, are refused."""
    app = APPLICATIONS[DIRECTORY_APPS[0]]
    project = _projects()[app["spec"]["project"]]
    objects: list[dict[str, Any]] = [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "r"},
        },
        {
            "apiVersion": "trainkube.io/v1alpha1",
            "kind": "EvalJob",
            "metadata": {"name": "e", "namespace": "elsewhere"},
        },
    ]
    assert _project_refusals(project, app, objects) == [
        "Deployment d: not in namespaceResourceWhitelist",
        "Secret s: not in namespaceResourceWhitelist",
        "ClusterRole r: cluster-scoped kind not in clusterResourceWhitelist",
        "EvalJob e: namespace elsewhere is not a destination",
    ]
