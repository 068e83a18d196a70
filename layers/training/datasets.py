"""Training datasets: scikit-learn's digits, seeded synthetic data, and small inline data.

Each spec can ``describe()`` itself cheaply (sample shape, dtype, targets: what the API checks
before queueing) and ``load()`` its tensors (what the worker trains on). The train/validation
split is a fixed permutation from the dataset's own ``split_seed``, so it never depends on the
job's seed.

The sizes a service allows are its own (``DatasetLimits``: the app passes its settings): they are
checked by ``describe`` and ``load``, and ``bounded_datasets`` gives the union whose fields carry
them for parsing and the JSON Schema. A new kind is one class here, entered in ``DATASET_KINDS``
(overriding ``within`` when the limits bound one of its fields).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol, Self, Union

import torch
from pydantic import ConfigDict, Discriminator, Field, GetJsonSchemaHandler, Tag, create_model
from pydantic.fields import FieldInfo
from pydantic_core import CoreSchema

from layers.language.base import Shape
from layers.language.errors import SpecError
from layers.language.io import SEQUENCE_INPUT, SEQUENCE_OUTPUT
from layers.language.spec import SpecModel
from layers.training.losses import Targets

ValFraction = Annotated[float, Field(gt=0, lt=1, description="share of the samples held out for validation")]
MAX_CLASSES = 10_000  # classes of a classification dataset (synthetic num_classes too)
SplitSeed = Annotated[int, Field(ge=0, lt=2**63, description="seed of the fixed train/validation split")]


class DatasetLimits(Protocol):
    """A service's limits on the data of one job (the app's settings have these fields)."""

    max_dataset_samples: int  # samples of a synthetic or inline dataset
    max_dataset_numel: int  # numbers in a dataset's inputs, all samples together
    max_input_rank: int  # dimensions of the inputs, the batch's included


@dataclass(frozen=True)
class DatasetInfo:
    """What the API needs to know about a dataset before queueing a job on it."""

    samples: int
    sample_shape: Shape
    dtype: Literal["float32", "int64"]
    targets: Targets
    tokens: int | None = None  # integer inputs: every id is below this

    @property
    def input_bytes(self) -> int:
        per_target = 8 if self.targets.num_classes is not None else 4 * math.prod(self.targets.shape)
        return self.samples * (4 * math.prod(self.sample_shape) + per_target)


Named = dict[str, torch.Tensor]  # tensors by model input (or output) name, samples first


class _Dataset(SpecModel):
    model_config = ConfigDict(frozen=True)

    val_fraction: ValFraction = 0.2
    split_seed: SplitSeed = 0

    @classmethod
    def within(cls, limits: DatasetLimits) -> type[Self]:
        """This kind with ``limits`` on its fields (checked at parsing, shown in the JSON Schema)."""
        return cls

    def describe(self, classification: bool, limits: DatasetLimits) -> DatasetInfo:
        """Sizes and targets, without generating the data (for a classification loss or not)."""
        raise NotImplementedError

    def load(self, classification: bool, limits: DatasetLimits) -> tuple[torch.Tensor, torch.Tensor]:
        """All samples as ``(x, y)`` on the CPU: inputs batch-first, targets as the info says."""
        raise NotImplementedError

    def load_named(self, classification: bool, limits: DatasetLimits) -> tuple[Named, Named]:
        """All samples as inputs by model input name and targets by output name (a built-in kind:
        the sequence model's one input and one output)."""
        x, y = self.load(classification, limits)
        return {SEQUENCE_INPUT: x}, {SEQUENCE_OUTPUT: y}

    def train_samples(self, n: int) -> int:
        """Samples of ``n`` that ``split`` trains on (at least one is held out, and one kept)."""
        return n - min(max(1, round(n * self.val_fraction)), n - 1)

    def split(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(x_train, y_train, x_val, y_val)`` by a fixed seeded permutation."""
        n = x.shape[0]
        n_val = n - self.train_samples(n)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed))
        train, val = order[n_val:], order[:n_val]
        return x[train], y[train], x[val], y[val]

    def split_named(self, inputs: Named, targets: Named) -> tuple[Named, Named, Named, Named]:
        """``split`` of every tensor by the same permutation: train inputs, targets, then val's."""
        n = next(iter(inputs.values())).shape[0]
        n_val = n - self.train_samples(n)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed))
        train, val = order[n_val:], order[:n_val]

        def pick(named: Named, rows: torch.Tensor) -> Named:
            return {name: tensor[rows] for name, tensor in named.items()}

        return pick(inputs, train), pick(targets, train), pick(inputs, val), pick(targets, val)


class DigitsDataset(_Dataset):
    """scikit-learn's 8x8 handwritten digits: 1797 samples, 10 classes, inputs [1, 8, 8] in [0, 1]."""

    name: Literal["digits"] = "digits"

    def describe(self, classification: bool, limits: DatasetLimits) -> DatasetInfo:
        return DatasetInfo(1797, (1, 8, 8), "float32", Targets(num_classes=10, shape=()))

    def load(self, classification: bool, limits: DatasetLimits) -> tuple[torch.Tensor, torch.Tensor]:
        from sklearn.datasets import load_digits  # shipped with scikit-learn: no download

        digits = load_digits()
        x = torch.tensor(digits.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
        return x, torch.tensor(digits.target, dtype=torch.int64)


class SyntheticDataset(_Dataset):
    """Seeded random inputs of any sample shape, labelled by a fixed random linear teacher.

    Classification labels are the teacher's argmax, regression targets its outputs plus noise:
    a model able to represent a linear map can learn either. Integer inputs (token ids, for
    models starting with an Embedding) are labelled from a random per-token table instead.
    """

    name: Literal["synthetic"] = "synthetic"
    task: Literal["classification", "regression"] = "classification"
    shape: list[Annotated[int, Field(gt=0, le=1 << 20)]] | None = Field(
        None,
        min_length=1,
        max_length=5,
        description="shape of one sample, without the batch dimension (a graph's come from its inputs)",
    )
    samples: int = Field(1024, ge=2)
    num_classes: int = Field(10, ge=2, le=MAX_CLASSES, description="classes, for classification")
    targets: int = Field(1, ge=1, le=10_000, description="values per sample, for regression")
    noise: float = Field(0.0, ge=0, le=100, description="std of Gaussian noise added to regression targets")
    dtype: Literal["float32", "int64"] = Field("float32", description='"int64" for token ids')
    vocab_size: int = Field(100, ge=2, le=1 << 20, description="token ids are drawn below it (int64 inputs)")
    seed: int = Field(0, ge=0, lt=2**63, description="seed of the inputs and the teacher")

    @classmethod
    def within(cls, limits: DatasetLimits) -> type[Self]:
        return _bounded(cls, samples=Field(le=limits.max_dataset_samples))

    def describe(self, classification: bool, limits: DatasetLimits) -> DatasetInfo:
        if self.shape is None:
            raise SpecError(("dataset", "shape"), "synthetic data for a sequence model needs `shape`")
        numel = self.samples * math.prod(self.shape)
        if numel > limits.max_dataset_numel:
            raise SpecError(
                ("dataset", "samples"),
                f"{self.samples} samples of shape {self.shape} are {numel} numbers; the limit is "
                f"{limits.max_dataset_numel}",
                {"limit": limits.max_dataset_numel, "got": numel},
            )
        if self.task == "classification":
            targets = Targets(num_classes=self.num_classes, shape=())
        else:
            targets = Targets(num_classes=None, shape=(self.targets,))
        tokens = self.vocab_size if self.dtype == "int64" else None
        return DatasetInfo(self.samples, tuple(self.shape), self.dtype, targets, tokens)

    def load(self, classification: bool, limits: DatasetLimits) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.shape is not None  # describe() refused it
        g = torch.Generator().manual_seed(self.seed)
        outputs = self.num_classes if self.task == "classification" else self.targets
        features = math.prod(self.shape)
        if self.dtype == "int64":
            x = torch.randint(0, self.vocab_size, (self.samples, *self.shape), generator=g)
            table = torch.randn(self.vocab_size, outputs, generator=g)
            teacher = table[x.reshape(self.samples, -1)].mean(dim=1)  # bag of tokens
        else:
            x = torch.randn(self.samples, *self.shape, generator=g)
            weight = torch.randn(features, outputs, generator=g) / math.sqrt(features)
            teacher = x.reshape(self.samples, -1) @ weight
        if self.task == "classification":
            return x, teacher.argmax(dim=1)
        return x, teacher + self.noise * torch.randn(teacher.shape, generator=g)


class InlineDataset(_Dataset):
    """Small data sent in the request: ``x`` (one entry per sample) and ``y`` (labels or values).

    With a classification loss ``y`` holds class indices 0..C-1; with a regression loss real
    values, one number or one nested list per sample.
    """

    name: Literal["inline"] = "inline"
    x: list[Any] = Field(min_length=2, description="inputs: numbers or nested lists")
    y: list[Any] = Field(min_length=2, description="targets")
    dtype: Literal["float32", "int64"] = Field("float32", description='"int64" for token ids')

    @classmethod
    def within(cls, limits: DatasetLimits) -> type[Self]:
        most = limits.max_dataset_samples
        return _bounded(cls, x=Field(max_length=most), y=Field(max_length=most))

    def load(self, classification: bool, limits: DatasetLimits) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` and ``y`` as tensors; ``SpecError`` at the field when they are ragged or mismatched."""
        _refuse_booleans(self.x, ("dataset", "x"))
        _refuse_booleans(self.y, ("dataset", "y"))
        if self.dtype == "int64":
            # Checked as exact doubles first: torch.tensor(..., dtype=int64) truncates 1.5 to 1.
            _refuse_first(
                _tensor(self.x, torch.float64, "x"), _not_an_int64, "x", "must be an integer token id"
            )
            x = _tensor(self.x, torch.int64, "x")
        else:
            x = _tensor(self.x, torch.float32, "x")
        y = _tensor(self.y, torch.float64, "y")
        if y.shape[0] != x.shape[0]:
            raise SpecError(
                ("dataset", "y"),
                f"y has {y.shape[0]} entries but x has {x.shape[0]} samples",
                {"x": x.shape[0], "y": y.shape[0]},
            )
        if x.dim() > limits.max_input_rank:
            raise SpecError(
                ("dataset", "x"), f"x has {x.dim()} dimensions; the limit is {limits.max_input_rank}"
            )
        if x.numel() > limits.max_dataset_numel:
            raise SpecError(
                ("dataset", "x"), f"x has {x.numel()} numbers; the limit is {limits.max_dataset_numel}"
            )
        if self.dtype == "int64" and bool((x < 0).any()):
            raise SpecError(("dataset", "x"), "token ids must not be negative")
        if not classification:
            return x, y.float()
        if y.dim() != 1:
            raise SpecError(
                ("dataset", "y"),
                "a classification loss needs y to be one class index (an integer >= 0) per sample",
            )
        _refuse_first(y, _not_a_class, "y", f"must be a class index, an integer from 0 to {MAX_CLASSES - 1}")
        return x, y.long()

    def describe(self, classification: bool, limits: DatasetLimits) -> DatasetInfo:
        x, y = self.load(classification, limits)
        if classification:
            targets = Targets(num_classes=max(2, int(y.max()) + 1), shape=())
        else:
            targets = Targets(num_classes=None, shape=tuple(y.shape[1:]))
        tokens = int(x.max()) + 1 if self.dtype == "int64" else None
        return DatasetInfo(x.shape[0], tuple(x.shape[1:]), self.dtype, targets, tokens)


def _refuse_booleans(values: list, loc: tuple[str | int, ...]) -> None:
    """``SpecError`` at the first JSON boolean, however deep (torch reads ``true`` as 1.0)."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(values, loc)]
    while stack:
        value, at = stack.pop()
        if isinstance(value, bool):
            where = f"{at[1]}{''.join(f'[{i}]' for i in at[2:])}"
            raise SpecError(at, f"{where} is {str(value).lower()}; it must be a number, not a boolean")
        if isinstance(value, list):
            stack.extend((item, (*at, i)) for i, item in reversed(list(enumerate(value))))


def _not_an_int64(x: torch.Tensor) -> torch.Tensor:
    return (x != x.trunc()) | (x.abs() >= 2.0**63)


def _not_a_class(y: torch.Tensor) -> torch.Tensor:
    return (y != y.round()) | (y < 0) | (y >= MAX_CLASSES)


def _refuse_first(
    values: torch.Tensor, bad: Callable[[torch.Tensor], torch.Tensor], field: str, what: str
) -> None:
    """``SpecError`` at the first element ``bad`` flags, located down to it (``x[3][1]``)."""
    flagged = bad(values)
    if bool(flagged.any()):
        index = [int(i) for i in flagged.nonzero()[0]]
        value = values[tuple(index)].item()
        raise SpecError(
            ("dataset", field, *index), f"{field}{''.join(f'[{i}]' for i in index)} is {value:g}; it {what}"
        )


def _tensor(values: list, dtype: torch.dtype, field: str) -> torch.Tensor:
    try:
        tensor = torch.tensor(values, dtype=dtype)
    except (ValueError, TypeError, RuntimeError) as e:
        raise SpecError(("dataset", field), f"{field} must be a rectangular array of numbers: {e}") from e
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        raise SpecError(("dataset", field), f"{field} must hold finite numbers")
    return tensor


def _bounded(kind: type[_Dataset], **bounds: FieldInfo) -> Any:
    """``kind`` under its own name and docstring, each field named in ``bounds`` constrained
    further (``samples=Field(le=...)``)."""
    fields = {
        name: (Annotated[kind.model_fields[name].annotation, bound], kind.model_fields[name])
        for name, bound in bounds.items()
    }
    return create_model(
        kind.__name__, __base__=kind, __doc__=kind.__doc__, __module__=kind.__module__, **fields
    )


DATASET_KINDS: tuple[type[_Dataset], ...] = (DigitsDataset, SyntheticDataset, InlineDataset)


def _tag(kind: type[_Dataset]) -> str:
    return kind.model_fields["name"].default


def _kind_of(value: Any) -> str | None:
    """The kind's ``name``; a dict without one but with an ``id`` is an uploaded dataset's."""
    if isinstance(value, dict):
        return value.get("name", "uploaded" if "id" in value else None)
    return getattr(value, "name", None)


class _NameInSchema:
    """The JSON Schema's ``discriminator`` on ``name`` (clients such as the playground read the
    kinds from its mapping), which a callable discriminator does not write by itself."""

    def __init__(self, tags: list[str]) -> None:
        self.tags = tags

    def __get_pydantic_json_schema__(self, core: CoreSchema, handler: GetJsonSchemaHandler) -> dict:
        schema = handler(core)
        refs = [option["$ref"] for option in schema["oneOf"]]
        schema["discriminator"] = {"propertyName": "name", "mapping": dict(zip(self.tags, refs, strict=True))}
        return schema


def dataset_union(kinds: tuple[type[_Dataset], ...]) -> Any:
    """The union of ``kinds`` by their ``name``, which an uploaded dataset (``{"id": ...}``) may leave out."""
    tags = [_tag(kind) for kind in kinds]
    options = tuple(Annotated[kind, Tag(tag)] for kind, tag in zip(kinds, tags, strict=True))
    expected = ", ".join(repr(tag) for tag in tags)
    discriminator = Discriminator(
        _kind_of,
        custom_error_type="dataset_kind_invalid",
        custom_error_message=f"the dataset's name must be one of {expected} (or an uploaded dataset's id)",
        custom_error_context={"discriminator": "name", "expected_tags": expected},
    )
    return Annotated[Union[options], discriminator, _NameInSchema(tags)]  # noqa: UP007


AnyDataset = dataset_union(DATASET_KINDS)  # every kind, unbounded: what a worker is sent, already checked


def bounded_datasets(limits: DatasetLimits, extra: tuple[type[_Dataset], ...] = ()) -> Any:
    """The union of every kind (and ``extra`` kinds) with its fields bounded by ``limits``: what a
    service parses."""
    return dataset_union(tuple(kind.within(limits) for kind in (*DATASET_KINDS, *extra)))


DatasetKind = _Dataset  # the base a kind defined elsewhere (the service's uploaded datasets) extends
