"""The CRDs are generated from the API models, structural, described, and up to date."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from trainkube.api import KINDS, Kind, crd

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
BY_KIND = {kind.kind: kind for kind in KINDS}


def _walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from _walk(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}{{}}")


def test_crds_directory_matches_what_the_generator_writes() -> None:
    stale = crd.stale_files(REPO / "crds")
    assert stale == [], "run `trainkube crds` and commit crds/"


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_every_field_has_a_description_for_kubectl_explain(kind: Kind) -> None:
    missing = [
        path for path, node in _walk(crd.openapi_schema(kind)) if not node.get("description")
    ]
    # Map values (e.g. labels{}) and list items are described by their field.
    missing = [path for path in missing if not path.endswith(("{}", "[]"))]
    assert missing == []


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_schema_is_structural(kind: Kind) -> None:
    for path, node in _walk(crd.openapi_schema(kind)):
        assert not {"$ref", "anyOf", "oneOf", "allOf", "title", "$defs"} & node.keys(), path
        assert node.get("additionalProperties") is not False, path
        # Free-form objects (a volume source) keep what is nested below them.
        if node.get("x-kubernetes-preserve-unknown-fields"):
            assert "additionalProperties" not in node, path
        typed = "type" in node
        assert typed or node.get("x-kubernetes-int-or-string"), f"{path} has no type"
        for bound in ("exclusiveMinimum", "exclusiveMaximum"):
            assert isinstance(node.get(bound, True), bool), path


def test_field_description_comes_first_then_the_referenced_models_docstring() -> None:
    spec = crd.openapi_schema(BY_KIND["LLMTrainingJob"])["properties"]["spec"]
    description = spec["properties"]["resources"]["description"]
    assert description.startswith("nodes, GPUs and the memory they declare. ")
    assert "The hardware the job runs on." in description


def test_field_rules_are_added_to_the_models_own_rules() -> None:
    spec = crd.openapi_schema(BY_KIND["LLMTrainingJob"])["properties"]["spec"]
    model_rules = [r["rule"] for r in spec["properties"]["model"]["x-kubernetes-validations"]]
    assert "self == oldSelf" in model_rules
    assert any("has(self.architecture)" in rule for rule in model_rules)
    architecture = spec["properties"]["model"]["properties"]["architecture"]
    assert any(
        "hiddenSize % self.heads" in r["rule"] for r in architecture["x-kubernetes-validations"]
    )


def test_exclusive_bounds_are_openapi_3_0_booleans() -> None:
    training = crd.openapi_schema(BY_KIND["LLMTrainingJob"])["properties"]["spec"]["properties"][
        "training"
    ]
    assert training["properties"]["learningRate"]["minimum"] == 0
    assert training["properties"]["learningRate"]["exclusiveMinimum"] is True


def test_crds_have_status_subresource_category_and_printer_columns() -> None:
    for kind in KINDS:
        manifest = crd.crd_manifest(kind)
        version = manifest["spec"]["versions"][0]
        assert version["subresources"] == {"status": {}}
        assert manifest["spec"]["names"]["categories"] == ["trainkube"]
        columns = [c["name"] for c in version["additionalPrinterColumns"]]
        assert columns[0] == "Phase"
        assert columns[-1] == "Age"
        # Printer columns never index into lists: their order is not a contract.
        assert all("[" not in c["jsonPath"] for c in version["additionalPrinterColumns"])


def test_training_kinds_show_steps_loss_and_stage() -> None:
    for name in ("LLMTrainingJob", "FineTuneJob"):
        columns = {c["name"]: c["jsonPath"] for c in BY_KIND[name].printer_columns}
        assert columns["Steps"] == ".status.progress.steps"
        assert columns["Loss"] == ".status.progress.loss"
        assert columns["Stage"] == ".status.plan.zeroStage"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_parse_into_their_models(path: Path) -> None:
    manifest = yaml.safe_load(path.read_text())
    model = BY_KIND[manifest["kind"]].model
    wire = model.model_validate(manifest).to_wire()
    # Everything the manifest says survives parsing unchanged (defaults may be added).
    assert _subset(manifest["spec"], wire["spec"]), wire["spec"]


def _subset(given: Any, parsed: Any) -> bool:
    if isinstance(given, dict):
        return isinstance(parsed, dict) and all(
            key in parsed and _subset(value, parsed[key]) for key, value in given.items()
        )
    if isinstance(given, list):
        return len(given) == len(parsed) and all(map(_subset, given, parsed))
    return bool(given == parsed)


def test_there_are_examples_of_each_kind_and_a_7b_class_job() -> None:
    kinds = [yaml.safe_load(p.read_text())["kind"] for p in EXAMPLES]
    assert set(kinds) == set(BY_KIND)
    big = [yaml.safe_load(p.read_text()) for p in EXAMPLES if "7b" in p.name]
    assert big
    assert big[0]["spec"]["resources"]["nodes"] > 1
