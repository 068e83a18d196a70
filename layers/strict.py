"""The base of every user-written spec model: strict about what JSON it takes."""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


def _accepts_bool(annotation: Any) -> bool:
    return annotation is bool or any(_accepts_bool(arg) for arg in typing.get_args(annotation))


def _has_bool(value: Any) -> bool:
    return isinstance(value, bool) or (isinstance(value, list) and any(isinstance(v, bool) for v in value))


class SpecModel(BaseModel):
    """Unknown fields are errors, NaN and infinities are refused (they parse from JSON but are
    never a valid size or rate, and cannot be written back), and a JSON boolean never passes
    for a number: pydantic's lax mode reads ``true`` as 1, which the schema does not allow.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, data: Any) -> Any:
        # A model validator, not a field one: pydantic forbids before-validators on the
        # discriminator field ``type``, and subclasses add their fields later.
        if isinstance(data, dict):
            for name, value in data.items():
                field = cls.model_fields.get(name)
                if field is not None and _has_bool(value) and not _accepts_bool(field.annotation):
                    raise ValueError(f"{name}: expected a number, got a boolean ({value!r})")
        return data
