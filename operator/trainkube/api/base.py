"""Building blocks every API model uses: the wire conventions and CEL rule helpers.

The API models are the single source of truth for the CRDs (see `trainkube.api.crd`). On the
wire fields are camelCase, in Python snake_case; unknown fields are refused rather than dropped,
so a typo in a manifest is an error, not a silently ignored setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

# Kubernetes object names (RFC 1123 labels/subdomains) and quantities.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
QUANTITY = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"


class ApiModel(BaseModel):
    """Base of all API models: camelCase aliases, no unknown fields, enums kept as enums."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The object as it appears in a manifest: camelCase, unset fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


@dataclass(frozen=True)
class Rule:
    """A CEL validation rule checked by the apiserver (`x-kubernetes-validations`).

    `field_path` (relative to the object the rule sits on, e.g. `.lora`) makes the error name
    the offending field; `message` says what was wrong and what would be valid.
    `message_expression`, a CEL expression giving a string, says it with the values at hand
    (the apiserver falls back to `message` should it fail).
    """

    rule: str
    message: str
    field_path: str | None = None
    reason: Literal["FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired"] | None = None
    message_expression: str | None = None

    def schema(self) -> dict[str, str]:
        out = {"rule": self.rule, "message": self.message}
        if self.message_expression:
            out["messageExpression"] = self.message_expression
        if self.field_path:
            out["fieldPath"] = self.field_path
        if self.reason:
            out["reason"] = self.reason
        return out


def rules(*items: Rule) -> dict[str, Any]:
    """`json_schema_extra` for a model or field that carries CEL rules."""
    return {"x-kubernetes-validations": [item.schema() for item in items]}


def immutable(field: str, *, hint: str) -> dict[str, Any]:
    """`json_schema_extra` making a field unchangeable once the object exists."""
    return rules(
        Rule(rule="self == oldSelf", message=f"{field} is immutable after creation: {hint}")
    )


def exactly_one_of(*fields: str, what: str) -> Rule:
    """A rule that exactly one of `fields` (camelCase) is set."""
    count = " + ".join(f"(has(self.{f}) ? 1 : 0)" for f in fields)
    listed = ", ".join(fields)
    return Rule(rule=f"{count} == 1", message=f"{what}: set exactly one of {listed}")


class IntOrAutoSchema:
    """JSON-schema hook: an integer or the string "auto" is `x-kubernetes-int-or-string`."""

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"x-kubernetes-int-or-string": True}


AUTO: Literal["auto"] = "auto"

# A setting the planner chooses unless the user gives a number.
IntOrAuto = Annotated[int | Literal["auto"], IntOrAutoSchema]

Quantity = Annotated[
    str,
    Field(
        pattern=QUANTITY,
        max_length=32,
        examples=["80Gi", "512Gi"],
    ),
]

# CPU: whole or fractional cores ('8', '1.5') or millicores ('500m'), never zero.
CpuQuantity = Annotated[
    str,
    Field(
        pattern=r"^(0*[1-9][0-9]*(\.[0-9]+)?|0*\.[0-9]*[1-9][0-9]*|0*[1-9][0-9]*m)$",
        max_length=32,
        examples=["8", "500m"],
    ),
]


def memory(field: str, *, at_least: str, example: str) -> dict[str, Any]:
    """`json_schema_extra` for a `Quantity` of bytes that must carry a unit and be `at_least`.

    A bare number is a valid quantity (bytes), so `gpuMemory: 80` would be 80 bytes: always a
    forgotten `Gi`, which otherwise surfaces only later, as a job that does not fit. `field` is
    the path a user knows it by (e.g. `resources.gpuMemory`); `example` a value that makes sense.
    """
    bare = "self.matches('[0-9]$')"
    return rules(
        Rule(
            # A value that is no quantity at all is refused by the pattern, with its own message.
            rule=f"!isQuantity(self) || (!{bare} && "
            f"quantity(self).compareTo(quantity('{at_least}')) >= 0)",
            message=f"{field} must carry a unit and be at least {at_least}, e.g. {example}",
            message_expression=f"'{field} must carry a unit and be at least {at_least}, e.g. "
            f"{example}: ' + self + ({bare} ? ' without a unit means ' + self + ' bytes' "
            f": ' is less than {at_least}')",
        )
    )


def int_or_auto(*, minimum: int, maximum: int | None = None, what: str) -> dict[str, Any]:
    """`json_schema_extra` that limits an `IntOrAuto` field to "auto" or a number in range."""
    upper = f" && self <= {maximum}" if maximum is not None else ""
    valid = f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
    return rules(
        Rule(
            rule=f"type(self) == string ? self == 'auto' : (self >= {minimum}{upper})",
            message=f'{what} must be "auto" or an integer {valid}',
        )
    )
