"""Two easy mistakes are refused at apply by CEL rules in the generated schema: a memory size
without a unit (or too small to be meant), and a sequence longer than the model's context. The
rules run in the apiserver (tests/cluster/test_api.py applies them and checks the messages a user
gets); these tests check that the generator puts them where they belong, with messages that name
the fields."""

from __future__ import annotations

import re
from typing import Any

import pytest

from trainkube.api import KINDS, crd
from trainkube.api.base import Rule
from trainkube.api.data import Data
from trainkube.api.evaljob import Perplexity

SCHEMAS = {kind.kind: crd.openapi_schema(kind)["properties"]["spec"] for kind in KINDS}
TRAINING_KINDS = ("LLMTrainingJob", "FineTuneJob")


def _at(schema: dict[str, Any], dotted: str) -> dict[str, Any]:
    for name in dotted.split("."):
        schema = schema["properties"][name]
    return schema


def _rules(node: dict[str, Any]) -> list[dict[str, str]]:
    return list(node.get("x-kubernetes-validations", []))


MEMORY_FIELDS = [
    *[(kind, "resources.gpuMemory", "80Gi for an 80 GB GPU") for kind in SCHEMAS],
    *[(kind, "resources.cpuMemoryPerNode", "64Gi") for kind in SCHEMAS],
    *[(kind, "resources.nvme.sizePerNode", "3Ti") for kind in SCHEMAS],
    *[(kind, "checkpoints.createVolume.size", "500Gi") for kind in TRAINING_KINDS],
]


@pytest.mark.parametrize(
    ("kind", "field", "example"), MEMORY_FIELDS, ids=[f"{k}-{f}" for k, f, _ in MEMORY_FIELDS]
)
def test_memory_sizes_must_carry_a_unit_and_be_at_least_1gi(
    kind: str, field: str, example: str
) -> None:
    (rule,) = _rules(_at(SCHEMAS[kind], field))
    assert rule["rule"] == (
        "!isQuantity(self) || (!self.matches('[0-9]$') && "
        "quantity(self).compareTo(quantity('1Gi')) >= 0)"
    )
    expected = f"{field} must carry a unit and be at least 1Gi, e.g. {example}"
    assert rule["message"] == expected
    # The message with the value says why the given value is wrong.
    assert rule["messageExpression"].startswith(f"'{expected}: ' + self + ")
    assert "' without a unit means ' + self + ' bytes'" in rule["messageExpression"]
    assert "' is less than 1Gi'" in rule["messageExpression"]


@pytest.mark.parametrize(
    ("value", "bare"),
    [("80", True), ("0.5", True), ("85899345920", True), ("80Gi", False), ("80G", False)],
)
def test_a_quantity_is_bare_exactly_when_it_ends_in_a_digit(value: str, bare: bool) -> None:
    # CEL's matches() finds the pattern anywhere in the string, as re.search does.
    assert bool(re.search("[0-9]$", value)) is bare


def test_the_gpu_memory_description_tells_kubectl_explain_about_the_unit() -> None:
    description = _at(SCHEMAS["LLMTrainingJob"], "resources.gpuMemory")["description"]
    assert "with a unit" in description
    assert "a bare number would be bytes" in description


SEQUENCE_RULES = [
    ("LLMTrainingJob", "data.sequenceLength", "model.architecture.contextLength"),
    ("LLMTrainingJob", "data.sequenceLength", "model.shape.contextLength"),
    ("FineTuneJob", "data.sequenceLength", "baseModel.shape.contextLength"),
]


def _spec_rule_mentioning(kind: str, context: str) -> dict[str, str]:
    (rule,) = [r for r in _rules(SCHEMAS[kind]) if f"self.{context}" in r["rule"]]
    return rule


@pytest.mark.parametrize(
    ("kind", "sequence", "context"), SEQUENCE_RULES, ids=[f"{k}-{c}" for k, _, c in SEQUENCE_RULES]
)
def test_a_sequence_longer_than_the_models_context_is_refused(
    kind: str, sequence: str, context: str
) -> None:
    rule = _spec_rule_mentioning(kind, context)
    assert rule["rule"].endswith(f"|| self.{sequence} <= self.{context}")
    assert rule["fieldPath"] == f".{sequence}"
    default = Data.model_fields["sequence_length"].default
    assert rule["message"].startswith(
        f"{sequence} ({default} when unset) must be at most {context}, the longest sequence the "
        f"model is built for: shorten {sequence}, or "
    )


def test_the_sequence_rule_is_checked_only_when_the_spec_gives_the_context() -> None:
    rule = _spec_rule_mentioning("FineTuneJob", "baseModel.shape.contextLength")
    # A fromJob or hub model without shape: the context is not known at apply time.
    assert rule["rule"].startswith("!(has(self.baseModel.shape) && has(self.data.sequenceLength))")


@pytest.mark.parametrize("model", ["model", "baseline"])
def test_perplexity_sequences_must_fit_the_evaluated_models(model: str) -> None:
    rule = _spec_rule_mentioning("EvalJob", f"{model}.shape.contextLength")
    assert rule["rule"].startswith(f"!(has(self.{model}) && has(self.{model}.shape)) || ")
    assert rule["fieldPath"] == ".evaluations"
    default = Perplexity.model_fields["sequence_length"].default
    assert rule["message"] == (
        f"every evaluations[].perplexity.sequenceLength ({default} when unset) must be at most "
        f"{model}.shape.contextLength, the longest sequence the {model} is built for: shorten "
        "the longer ones"
    )


def test_spec_wide_rules_have_no_message_expression() -> None:
    # One that prints an integer has no size bound the apiserver can estimate: it refuses the CRD.
    for kind, spec in SCHEMAS.items():
        assert all("messageExpression" not in rule for rule in _rules(spec)), kind


def test_a_rule_with_a_message_expression_keeps_its_static_message() -> None:
    schema = Rule(rule="self > 0", message="m", message_expression="'m ' + string(self)").schema()
    assert schema == {
        "rule": "self > 0",
        "message": "m",
        "messageExpression": "'m ' + string(self)",
    }
    assert "messageExpression" not in Rule(rule="self > 0", message="m").schema()
