"""The spec base classes and the closed registry every layer type is entered into.

A spec class is the single source of truth for a layer type: its ``type`` literal is the
registry key and the OpenAPI discriminator, its fields are the form a frontend renders,
and it builds its module. Subclassing ``LayerSpec`` with a literal ``type`` registers it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Annotated, Any, ClassVar, NamedTuple, Protocol, Self, TypeVar

import torch
from pydantic import AfterValidator, Field, GetJsonSchemaHandler, ValidationInfo, field_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema
from torch import nn

from layers.language.errors import Loc, ShapeError
from layers.language.flops import FlopCounter
from layers.language.spec import TypedSpec

Shape = tuple[int, ...]

# Sizes a layer may be given. Generous (a 1M vocabulary, a 1M-wide linear) because on the
# meta device size costs nothing; the API bounds input shapes separately.
MAX_SIZE = 1 << 20
Size = Annotated[int, Field(gt=0, le=MAX_SIZE)]
OptionalSize = Annotated[int | None, Field(gt=0, le=MAX_SIZE)]
Dim = Annotated[int, Field(ge=-8, le=8, description="tensor dimension; negative counts from the end")]
FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def _fits_float32(value: float) -> float:
    if abs(value) > FLOAT32_MAX:
        raise PydanticCustomError(
            "float32_overflow",
            f"expected a value a float32 holds, from -{FLOAT32_MAX:g} to {FLOAT32_MAX:g}; got {value:g} "
            "(torch would make it infinite)",
            {"largest": FLOAT32_MAX, "got": value},
        )
    return value


# A float that torch turns into a float32 (its default dtype): refused past float32's range.
Float32 = Annotated[
    float,
    AfterValidator(_fits_float32),
    Field(json_schema_extra={"minimum": -FLOAT32_MAX, "maximum": FLOAT32_MAX}),
]


class HeldInParameters:
    """Marks a float field whose value is stored in the layer's parameters (PReLU's ``init``): the
    build checks it against the parameters' dtype too (``LayerSpec.check_held``), which a floating
    input sets (a float16 one holds at most 65504)."""


ParameterValue = Annotated[Float32, HeldInParameters()]  # made in float32, then moved to that dtype
# A layer's name, for other layers to refer to (``tie_weight``): an identifier, unique in the model.
# The length bound is inside the pattern: a fuzzer generating from the schema then never draws a
# long name only to throw it away (with a separate maxLength, schemathesis ran 2.5x slower).
Name = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
TieWeight = Annotated[
    Name | None,
    Field(
        description="the `name` of an earlier Embedding, Linear or MyLinear whose weight (same shape: "
        "[out_features, in_features] = [num_embeddings, embedding_dim]) this layer shares, one tensor"
    ),
]

LAYER_SPECS: dict[str, type[LayerSpec]] = {}


class LayerSpec(TypedSpec):
    """Base of every layer spec: strict (see ``SpecModel``) and immutable."""

    category: ClassVar[str] = "other"
    # Whether the layer runs on an integer tensor (token ids). Meta kernels do not check dtypes
    # (a meta Linear takes int64), so the trace refuses integer inputs where torch would.
    integer_input: ClassVar[bool] = False
    registry: ClassVar[dict[str, Any]] = LAYER_SPECS
    # The parameter another layer's ``tie_weight`` may share (module-relative, e.g. ``weight``);
    # None: this layer cannot be tied to.
    tieable_weight: ClassVar[str | None] = None
    tensor_args: ClassVar[tuple[str, ...]] = ()
    # Of ``tensor_args``, those its module cannot run without (a decoder's ``memory``): a layer
    # with any is usable only where they are given, as a graph node (``check_tensor_args``).
    required_tensor_args: ClassVar[tuple[str, ...]] = ()

    name: Name | None = Field(None, description="a name other layers can refer to (`tie_weight`)")
    # Left out of the spec's JSON when true (the default), so that echoed specs stay as written.
    trainable: bool = Field(
        True,
        description="false freezes the layer's parameters (a container's: all inside it): counted in "
        "the total but not trained, given no gradient and no optimizer state; a weight shared by "
        "`tie_weight` is frozen as its owner is",
        exclude_if=lambda trainable: trainable,
    )

    @classmethod
    def description(cls) -> str:
        """The first line of the class docstring: the catalog's one-line description."""
        return (cls.__doc__ or cls.__name__).strip().splitlines()[0]

    def arguments(self, *exclude: str) -> dict[str, Any]:
        """The spec's fields but its own (``type``, ``name``, ``trainable``) and ``exclude``: what its
        module's constructor takes, for the specs whose fields map onto it."""
        return self.model_dump(exclude={*LayerSpec.model_fields, *exclude})

    def infer(self, shape: Shape) -> Self:
        """Fill sizes left out of the spec from the input shape, and check the given ones.

        Returns a spec with every size set; raises ``ShapeError`` (with a field ``loc``
        relative to this layer) when the input cannot fit.
        """
        return self

    def build(self) -> nn.Module:
        """Construct the module. Called on an inferred spec, under a device context."""
        raise NotImplementedError

    def check_held(self, dtype: torch.dtype) -> None:
        """Raise ``ShapeError`` at a ``ParameterValue`` field that parameters of ``dtype`` cannot hold
        (torch would make them infinite)."""
        largest = torch.finfo(dtype).max
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if any(isinstance(m, HeldInParameters) for m in field.metadata) and abs(value) > largest:
                kind = str(dtype).removeprefix("torch.")
                raise ShapeError(
                    (name,),
                    f"{name} {value:g} does not fit in this model's {kind} parameters (at most {largest:g} "
                    f"in size; the parameters follow the {kind} input)",
                    {"expected": [-largest, largest], "got": value, "dtype": kind},
                )

    def weight_tie(self) -> str | None:
        """The name of the layer whose ``tieable_weight`` this layer's weight is (``tie_weight``)."""
        return None

    def check_tensor_args(self, given: Collection[str]) -> None:
        """Raise ``ShapeError`` unless the tensor arguments ``given`` by name (the graph's wires;
        none in a sequence) are ones this layer's module can run with."""
        missing = [arg for arg in self.required_tensor_args if arg not in given]
        if missing:
            needs = ", ".join(f"`{arg}`" for arg in missing)
            raise ShapeError(
                (),
                f"{self.type} needs {needs} (a graph node's tensor argument), which a layer sequence "
                "cannot give; use it as a node of a graph, with its "
                f"{needs} wired to a graph input or an earlier node",
                {"expected": list(missing), "got": sorted(given)},
            )

    def returns(self) -> tuple[str, ...]:
        """The names of the tensors its module returns when it returns several (as torch names
        them: ``output``, ``h_n``, ``c_n``); empty when it returns one."""
        return ()

    def runs_operators(self, x: torch.Tensor) -> bool:
        """Whether ``trace`` at ``x`` runs torch operators (a shape-preserving layer's does not)."""
        return True

    def trace(
        self, module: nn.Module, x: torch.Tensor, counter: FlopCounter, **tensors: torch.Tensor
    ) -> tuple[Any, int]:
        """Run the built module on a meta tensor ``x`` (and the tensor arguments by name) under
        ``counter``: its output (a tuple for a layer returning several tensors) and its forward FLOPs."""
        if not (x.is_floating_point() or self.integer_input):
            raise ShapeError(
                (),
                f"expected a floating-point input, got {str(x.dtype).removeprefix('torch.')}; "
                "integer inputs (token ids) go into an Embedding",
                {"expected": "floating point", "got": str(x.dtype).removeprefix("torch.")},
            )
        return counter.count(module, x, **tensors)


class ShapePreservingSpec(LayerSpec):
    """A layer whose output has its input's shape and dtype and no FLOPs that torch counts
    (activations, norms, dropout): its trace skips the meta kernels, which cost milliseconds
    each (a meta BatchNorm2d runs a Python decomposition), and returns the input's shape.

    Integer inputs take the full trace, which refuses them unless the layer takes integers.
    """

    def trace(
        self, module: nn.Module, x: torch.Tensor, counter: FlopCounter, **tensors: torch.Tensor
    ) -> tuple[Any, int]:
        if self.runs_operators(x):
            return super().trace(module, x, counter, **tensors)
        return x, 0

    def runs_operators(self, x: torch.Tensor) -> bool:
        return not x.is_floating_point()


class SpatialSpec(LayerSpec):
    """A layer over ``spatial_dims`` dimensions (convolutions, pools) whose ``per_dim_fields``
    take one int or a list of exactly one int per dimension, as torch's real kernels require
    (meta kernels accept a 3-long kernel for a Conv2d). Validated here and stated in the JSON
    schema (``minItems`` = ``maxItems``), for every subclass, with its own ``spatial_dims``."""

    spatial_dims: ClassVar[int] = 2
    per_dim_fields: ClassVar[tuple[str, ...]] = ()

    @field_validator("*")
    @classmethod
    def _one_per_spatial_dim(cls, value: Any, info: ValidationInfo) -> Any:
        if (
            info.field_name in cls.per_dim_fields
            and isinstance(value, list)
            and len(value) != cls.spatial_dims
        ):
            raise ValueError(f"expected one int or a list of {cls.spatial_dims}, got a list of {len(value)}")
        return value

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        properties = handler.resolve_ref_schema(json_schema).get("properties", {})
        for name in cls.per_dim_fields:
            field = properties.get(name, {})
            for branch in [field, *field.get("anyOf", [])]:
                if branch.get("type") == "array":
                    branch["minItems"] = branch["maxItems"] = cls.spatial_dims
        return json_schema


T = TypeVar("T")


class Make(Protocol[T]):
    """How a pass makes a module of a class and arguments: the build calls the class, the code
    export writes the call. A container assembles its module through it, so that each pass
    follows the one declaration."""

    def __call__(self, cls: type[nn.Module], /, *args: Any, **kwargs: Any) -> T: ...


class Slot(NamedTuple):
    """One child sequence of a container."""

    loc: Loc  # where it is in the container's spec: ("layers",), ("branches", 2)
    path: str  # its module path under the container: "layers", "branches.2"; "" for the container's own
    specs: list[LayerSpec]


class ContainerSpec(LayerSpec):
    """A layer made of child layer sequences (``Sequential``, ``Residual``, ``Concat``).

    It declares its sequences (``sequences``), its module around them (``assemble``) and what its
    forward returns (``combine``) once; every pass over the spec (``layers.language.walk``)
    follows them.
    """

    category: ClassVar[str] = "container"
    # Every sequence is a copy of the first (same specs, same input, its own parameters), so a
    # pass may make the others from the first (``Repeat``).
    copies: ClassVar[bool] = False

    def sequences(self) -> list[Slot]:
        """The child sequences, in forward order."""
        raise NotImplementedError

    def assemble(self, make: Make[T], sequences: list[T]) -> T:
        """The container's module around its sequences (each already made by the pass)."""
        raise NotImplementedError

    def combine(self, x: torch.Tensor, outputs: list[torch.Tensor]) -> torch.Tensor:
        """What the container's forward returns, given its input and each sequence's output.

        Called on meta tensors while tracing; raises ``ShapeError`` when outputs cannot combine.
        """
        raise NotImplementedError

    def with_sequences(self, sequences: list[list[LayerSpec]]) -> Self:
        """A copy with the child sequences replaced (by their inferred versions), each put back
        where its ``Slot.loc`` says; copies sharing one field (a Repeat's) keep the first."""
        update: dict[str, Any] = {}
        for slot, specs in zip(self.sequences(), sequences, strict=True):
            field, *index = slot.loc
            if index:  # one of a list of sequences, e.g. ("branches", i)
                update.setdefault(str(field), []).append(specs)
            else:
                update.setdefault(str(field), specs)
        return self.model_copy(update=update)


def shape_str(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def infer_size(given: int | None, shape: Shape, dim: int, field: str, what: str = "size") -> int:
    """The size of ``shape[dim]``, checked against ``given`` when the spec sets it."""
    if not -len(shape) <= dim < len(shape):
        raise ShapeError(
            (field,),
            f"expected an input with a dimension {dim} to read {field} from, got shape {shape_str(shape)}",
            {"expected_rank_at_least": abs(dim) + (dim >= 0), "got": list(shape)},
        )
    actual = shape[dim]
    if given is not None and given != actual:
        raise ShapeError(
            (field,),
            f"expected input {what} {given} ({field}) at dimension {dim}, got {actual} "
            f"(input shape {shape_str(shape)})",
            {"expected": given, "got": actual, "input_shape": list(shape)},
        )
    return actual


def expect_dim(shape: Shape, dim: int, field: str = "dim") -> None:
    """Raise ``ShapeError`` unless ``dim`` indexes a dimension of the input."""
    if not -len(shape) <= dim < len(shape):
        raise ShapeError(
            (field,),
            f"{field} {dim} is out of range for an input of shape {shape_str(shape)} "
            f"(expected -{len(shape)} to {len(shape) - 1})",
            {"expected": [-len(shape), len(shape) - 1], "got": dim},
        )


def expect_rank(shape: Shape, ranks: Sequence[int], layer: str) -> None:
    """Raise ``ShapeError`` unless the input has one of the accepted ranks."""
    if len(shape) not in ranks:
        accepted = " or ".join(str(r) for r in ranks)
        raise ShapeError(
            (),
            f"{layer} expects a {accepted}-dimensional input, got shape {shape_str(shape)} "
            f"({len(shape)} dimensions)",
            {"expected_rank": list(ranks), "got": list(shape)},
        )


def expect_divisible(total: int, divisor: int, field: str, what: str) -> None:
    """Raise ``ShapeError`` at ``field`` unless its value ``divisor`` divides ``total`` (``what``)."""
    if total % divisor:
        raise ShapeError(
            (field,),
            f"expected {what} ({total}) divisible by {field} ({divisor})",
            {"expected_divisor": divisor, "got": total},
        )
