"""What the operator may need to do in the API, read from its code: the rules its RBAC must grant,
as (apiGroup, resource, verb), for the chart test to compare with what the chart grants.

Three sources, all in `operator/trainkube`:
- every kubernetes-client API method the code names (called, or handed to an informer as its
  list call): `read_namespaced_persistent_volume_claim` is `get` on core
  `persistentvolumeclaims`, `list_event_for_all_namespaces` is `list` and `watch` on `events`
  (a list call is only ever an informer's, which watches what it lists), the custom-object calls
  act on the three kinds (`trainkube.io`) and `..._status` on their status;
- every object the operator server-side applies (`Clients.apply`), as the `apiVersion`/`kind`
  literals in the modules that build them (children.py, outputs.py): an apply is a PATCH that
  creates what is missing (`create`, `patch`);
- the rules of the Role the operator gives the workers: RBAC lets it create a Role only with
  permissions it holds itself.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from kubernetes import client

from trainkube.api import GROUP, KINDS
from trainkube.api.template import PodTemplate
from trainkube.controller import children, outputs

Rule = tuple[str, str, str]  # apiGroup, resource, verb

OPERATOR = Path(__file__).resolve().parents[2] / "operator" / "trainkube"
# The API classes the operator's Clients hold (clients.py, leader.py), and their API group.
API_GROUPS: dict[type, str] = {
    client.CoreV1Api: "",
    client.BatchV1Api: "batch",
    client.CoordinationV1Api: "coordination.k8s.io",
    client.CustomObjectsApi: GROUP,
}
VERBS = {
    "list": ("list", "watch"),
    "read": ("get",),
    "create": ("create",),
    "patch": ("patch",),
    "replace": ("update",),
    "delete": ("delete",),
    "delete_collection": ("deletecollection",),
}
METHOD = re.compile(
    r"^(?P<verb>list|read|create|patch|replace|delete_collection|delete)_"
    r"(?:namespaced_|cluster_)?(?P<resource>[a-z_]+?)(?P<all>_for_all_namespaces)?"
    r"(?P<status>_status)?$"
)


def _plural(snake: str) -> str:
    """`persistent_volume_claim` -> `persistentvolumeclaims` (every resource the operator
    touches has a regular plural; an irregular one fails the test that uses this)."""
    return snake.replace("_", "") + "s"


def _api_group(method: str) -> str | None:
    found = [group for api, group in API_GROUPS.items() if hasattr(api, method)]
    return found[0] if len(found) == 1 else None


def method_rules(method: str) -> set[Rule]:
    """The rules one kubernetes-client API method needs (none when it is not one)."""
    match, group = METHOD.match(method), _api_group(method)
    if match is None or group is None:
        return set()
    verbs = VERBS[match["verb"]]
    # The custom-object calls take the plural as an argument: the operator's are its kinds.
    plural = [_plural(match["resource"])]
    resources = [kind.plural for kind in KINDS] if group == GROUP else plural
    suffix = "/status" if match["status"] else ""
    return {(group, f"{resource}{suffix}", verb) for resource in resources for verb in verbs}


def _called_methods() -> set[str]:
    names: set[str] = set()
    for path in OPERATOR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute):
                names.add(node.attr)
    return names


def _applied_kinds() -> set[tuple[str, str]]:
    """(apiVersion, kind) of every manifest literal in the modules that build what is applied."""
    found: set[tuple[str, str]] = set()
    for path in (Path(children.__file__), Path(outputs.__file__)):
        found |= _manifest_literals(path)
    return found


def _manifest_literals(path: Path) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Dict):
            continue
        literal = {
            k.value: v.value
            for k, v in zip(node.keys, node.values, strict=True)
            if isinstance(k, ast.Constant) and isinstance(v, ast.Constant)
        }
        if "apiVersion" in literal and "kind" in literal:
            found.add((str(literal["apiVersion"]), str(literal["kind"])))
    return found


def _applied_rules() -> set[Rule]:
    rules: set[Rule] = set()
    for api_version, kind in _applied_kinds():
        group = api_version.rpartition("/")[0]
        rules |= {(group, f"{kind.lower()}s", verb) for verb in ("create", "patch")}
    return rules


def _worker_role_rules() -> set[Rule]:
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/v1alpha1",
        "kind": KINDS[0].kind,
        "metadata": {"name": "x", "namespace": "ns", "uid": "u"},
    }
    template = PodTemplate()
    role = next(m for m in children.worker_rbac(body, template) if m["kind"] == "Role")
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def needed() -> set[Rule]:
    """Every rule the operator's code needs."""
    rules: set[Rule] = set()
    for method in _called_methods():
        rules |= method_rules(method)
    return rules | _applied_rules() | _worker_role_rules()
