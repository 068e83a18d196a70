"""Value ranges of an array read chunk by chunk (a dataset is never held whole in memory), and
the check that the arrays of a dataset agree on their samples."""

from __future__ import annotations

import numpy as np

from app.datasets.description import ArrayInfo, ClassCount
from app.datasets.errors import in_array

MAX_CLASSES = 1000  # distinct values past which a 1-D array is not taken for labels
MAX_ARRAYS = 4096  # arrays (or columns) of one dataset


class NotFinite(Exception):
    """A NaN or an infinity at ``index``, the position in the array's flat order."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


class ArrayStats:
    """Minimum, maximum, mean and, for a 1-D array of non-negative whole numbers, the count of
    each value, of an array whose chunks arrive in order."""

    def __init__(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.name, self.shape, self.dtype = name, shape, dtype
        self.seen = 0
        self.low, self.high, self.total = np.inf, -np.inf, 0.0
        self.integral = True  # whole numbers only, so far
        self._counts: dict[int, int] | None = {} if len(shape) == 1 else None

    def add(self, chunk: np.ndarray) -> None:
        """Take the next values (any shape: they are read in flat order); ``NotFinite`` at a NaN."""
        if chunk.size == 0:
            return
        low, high = float(chunk.min()), float(chunk.max())
        if chunk.dtype.kind == "f":
            if not (np.isfinite(low) and np.isfinite(high)):  # min and max carry any NaN
                raise NotFinite(self.seen + int(np.argmin(np.isfinite(chunk).ravel())))
            self.integral = self.integral and bool(np.all(chunk == np.round(chunk)))
        self.low, self.high = min(self.low, low), max(self.high, high)
        self.total += float(chunk.sum(dtype=np.float64))
        self.seen += chunk.size
        if self._counts is not None:
            self._count(chunk)

    def _count(self, chunk: np.ndarray) -> None:
        if not self.integral or self.low < 0:
            self._counts = None
            return
        values, counts = np.unique(chunk, return_counts=True)
        for value, count in zip(values.tolist(), counts.tolist(), strict=True):
            self._counts[int(value)] = self._counts.get(int(value), 0) + count  # type: ignore[index]
        if len(self._counts) > MAX_CLASSES:  # type: ignore[arg-type]
            self._counts = None

    def info(self, dtype: str | None = None, names: list[str] | None = None) -> ArrayInfo:
        """The array's description (``dtype`` instead of its own; ``names`` of its classes)."""
        classes = None
        if self._counts is not None:
            classes = [
                ClassCount(value=v, count=c, name=names[v] if names else None)
                for v, c in sorted(self._counts.items())
            ]
        return ArrayInfo(
            name=self.name,
            shape=list(self.shape),
            dtype=dtype or self.dtype.name,
            min=self.low,
            max=self.high,
            mean=self.total / self.seen,
            classes=classes,
        )


def common_samples(shapes: dict[str, tuple[int, ...]], max_samples: int) -> int:
    """The number of samples every array has (their first dimension); a 422 naming the array
    that has none, disagrees, is empty, or past ``MB_MAX_DATASET_SAMPLES``."""
    if not shapes:
        raise in_array("", "the file holds no arrays")
    if len(shapes) > MAX_ARRAYS:
        raise in_array("", f"the file holds {len(shapes)} arrays; the limit is {MAX_ARRAYS}")
    first = next(iter(shapes))
    for name, shape in shapes.items():
        if not shape:
            raise in_array(
                name, f"array {name!r} is a scalar: every array needs samples as its first dimension"
            )
        if shape[0] != shapes[first][0]:
            msg = "arrays disagree on the number of samples"
            msg += f": {first!r} has {shapes[first][0]}, {name!r} {shape[0]}"
            raise in_array(name, msg, samples={first: shapes[first][0], name: shape[0]})
    samples = shapes[first][0]
    if samples == 0:
        raise in_array(first, "the dataset holds no samples")
    for name, shape in shapes.items():
        if 0 in shape:
            raise in_array(name, f"array {name!r} of shape {list(shape)} holds no values")
    if samples > max_samples:
        msg = f"the dataset has {samples} samples, more than MB_MAX_DATASET_SAMPLES ({max_samples})"
        raise in_array(first, msg, limit=max_samples, got=samples)
    return samples


def numeric_dtype(name: str, dtype: np.dtype) -> None:
    """A 422 unless ``dtype`` holds plain numbers (booleans, integers, floats)."""
    if dtype.hasobject:
        msg = f"array {name!r} holds Python objects (pickled)"
        msg += ": refused, as numpy.load(allow_pickle=False) refuses it"
        raise in_array(name, msg, dtype=str(dtype))
    if dtype.kind not in "biuf" or dtype.fields is not None or dtype.subdtype is not None:
        raise in_array(
            name, f"array {name!r} has dtype {dtype}: only booleans, integers and floats", dtype=str(dtype)
        )
