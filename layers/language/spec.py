"""The bases of every user-written spec: strict about what JSON they take, and registered."""

from __future__ import annotations

import difflib
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, GetCoreSchemaHandler
from pydantic_core import CoreSchema, PydanticCustomError, PydanticKnownError, core_schema


def accepts(annotation: Any, kind: type) -> bool:
    """Whether a field's annotation takes ``kind`` (``bool``, ``float``), alone or in a union or list."""
    return annotation is kind or any(accepts(arg, kind) for arg in typing.get_args(annotation))


def _has_bool(value: Any) -> bool:
    return isinstance(value, bool) or (isinstance(value, list) and any(isinstance(v, bool) for v in value))


@dataclass(frozen=True)
class _NoBoolFor:
    """A field's before-validator: a JSON boolean never passes for its numbers (lax mode reads
    ``true`` as 1), nor in a list of them."""

    name: str

    def __call__(self, value: Any) -> Any:
        if _has_bool(value):
            raise ValueError(f"{self.name}: expected a number, got a boolean ({value!r})")
        return value


def _not_a_string(value: Any) -> Any:
    if isinstance(value, str | bytes):
        raise PydanticKnownError("int_type")
    return value


def _ours(node: dict) -> Any:
    """The before-validator this module wrapped ``node`` in, if any."""
    return node["function"].get("function") if node.get("type") == "function-before" else None


def _wrap(node: dict, function: Callable[[Any], Any]) -> None:
    inner = dict(node)
    node.clear()
    node.update(core_schema.no_info_before_validator_function(function, inner))


def _strict_scalars(node: Any, owner: type[BaseModel]) -> None:
    """Make the fields of ``owner``'s core schema take only JSON booleans and numbers, in place.
    Other models met on the way are left alone: the specs among them did their own. The hook
    runs again each time another model refers to this one, so what is wrapped is not again."""
    if isinstance(node, dict):
        if (node.get("type") == "model" and node.get("cls") is not owner) or _ours(node) is _not_a_string:
            return
        for key, value in node.items():
            if key != "cls":
                _strict_scalars(value, owner)
        if node.get("type") in ("bool", "float"):
            node["strict"] = True  # a strict float still takes a JSON integer
        elif node.get("type") == "int":  # a strict int would refuse 3.0, which the schema allows
            _wrap(node, _not_a_string)
        elif node.get("type") == "model-fields":
            for name, field in node["fields"].items():
                annotation = owner.model_fields[name].annotation
                # Literal fields are left alone: pydantic refuses validators on a discriminator.
                takes_bool = accepts(annotation, bool) or typing.get_origin(annotation) is Literal
                value = field["schema"]
                value = value["schema"] if value["type"] == "default" else value  # defaults stay outside
                if not takes_bool and not isinstance(_ours(value), _NoBoolFor):
                    _wrap(value, _NoBoolFor(name))
    elif isinstance(node, list):
        for value in node:
            _strict_scalars(value, owner)


class SpecModel(BaseModel):
    """Unknown fields are errors, NaN and infinities are refused (they parse from JSON but are
    never a valid size or rate, and cannot be written back), a JSON boolean never passes for a
    number, only a JSON boolean fills a boolean field and only a JSON number a number field:
    pydantic's lax mode reads ``true`` as 1, ``0``, ``1.0`` or ``"yes"`` as booleans and ``"3"`` as
    a number, which the schema does not allow. A whole float still fills an int field (``3.0``), so
    the config's ``strict`` is not an option.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[BaseModel], handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        schema = handler(source)
        _strict_scalars(schema, cls)
        return schema


class TypedSpec(SpecModel):
    """A spec entered in its family's closed registry under its ``type`` literal.

    A family base (``LayerSpec``, ``LossSpec``, ``OptimizerSpec``) sets ``registry``; each
    subclass with a literal ``type`` default registers itself, and a name taken twice is an
    error naming both classes. The OpenAPI union is made from the registry by ``union_of``.
    """

    model_config = ConfigDict(frozen=True)

    registry: ClassVar[dict[str, Any]]
    type: str

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        name = cls.model_fields["type"].default
        if not isinstance(name, str):
            return  # an abstract intermediate class
        if name in cls.registry:
            other = cls.registry[name]
            raise TypeError(
                f"type {name!r} registered twice: "
                f"{other.__module__}.{other.__qualname__} and {cls.__module__}.{cls.__qualname__}"
            )
        cls.registry[name] = cls


def closest_name(name: str, names: list[str]) -> str | None:
    """The registered name ``name`` most likely meant ("Relu" -> "ReLU"), or None if none is close."""
    by_lower = {n.lower(): n for n in names}
    found = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[found[0]] if found else None


def _known_type(registry: dict[str, Any]) -> Callable[[Any], Any]:
    """A check run before the union: an unknown ``type`` gets pydantic's ``union_tag_invalid``
    error, with the closest registered name suggested."""

    def check(data: Any) -> Any:
        tag = data.get("type") if isinstance(data, dict) else None
        if isinstance(tag, str) and tag not in registry:
            names = list(registry)
            close = closest_name(tag, names)
            hint = f"; did you mean '{close}'?" if close else "."
            raise PydanticCustomError(
                "union_tag_invalid",
                "unknown type '{tag}'" + hint + " Expected one of: {expected_tags}",
                {
                    "discriminator": "'type'",
                    "tag": tag,
                    "expected_tags": ", ".join(f"'{n}'" for n in names),
                    "suggestion": close,
                },
            )
        return data

    return check


def union_of(registry: dict[str, Any]) -> Any:
    """The discriminated union (on ``type``) of every spec class in ``registry``; an unknown type's
    error suggests the closest registered name."""
    return Annotated[
        Union[tuple(registry.values())],  # noqa: UP007
        Field(discriminator="type"),
        BeforeValidator(_known_type(registry)),
    ]
