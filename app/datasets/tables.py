"""CSV and Parquet files, one column per feature, read in batches with pyarrow: every cell must
be a number, and a bad one is named by its row and column."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as csv
import pyarrow.parquet as pq

from app.datasets.description import Description, Limits
from app.datasets.errors import DatasetError, in_array, too_large
from app.datasets.stats import MAX_ARRAYS, ArrayStats, NotFinite, common_samples

BATCH_BYTES = 8 << 20
NOTE = " (the header is row 1)"
EXACT_INTEGERS = 2**53  # float64 holds every whole number below this
# pyarrow's words for a cell it cannot convert (read with use_threads=False, rows are file lines)
_BAD_CELL = re.compile(r"In CSV column #(\d+): Row #(\d+): CSV conversion error to \w+: invalid value '(.*)'")


def cell(name: str, row: int, msg: str, note: str = "", **ctx: object) -> DatasetError:
    """A 422 at one cell: ``row`` as the file counts it, ``note`` how (the CSV header is row 1)."""
    return in_array(name, f"row {row}{note}, column {name!r}: {msg}", row=row, column=name, **ctx)


class Columns:
    """The statistics of a table's columns, fed batch by batch; cells are named by row, the
    first data row being ``first_row`` (``note`` says how the file counts them)."""

    def __init__(self, schema: pa.Schema, limits: Limits, first_row: int = 1, note: str = "") -> None:
        names = schema.names
        if len(names) > MAX_ARRAYS:
            raise DatasetError(f"the table has {len(names)} columns; the limit is {MAX_ARRAYS}")
        for i, name in enumerate(names):
            if not name or names.index(name) != i:
                what = "has no name (a pandas index? save with index=False)" if not name else "repeats a name"
                raise in_array(name, f"column {i + 1} {what}: every column needs a name of its own")
        dtypes = [np.dtype(field.type.to_pandas_dtype()) for field in schema]
        self.stats = [ArrayStats(name, (0,), dtype) for name, dtype in zip(names, dtypes, strict=True)]
        self.limits, self.first_row, self.note = limits, first_row, note
        self.rows = self.bytes = 0

    def add(self, batch: pa.RecordBatch) -> None:
        for stats, column in zip(self.stats, batch.columns, strict=True):
            if column.null_count:
                at = self.rows + int(np.argmax(column.is_null().to_numpy(zero_copy_only=False)))
                msg = "the cell is empty (or NA): every cell must be a number"
                raise cell(stats.name, self.first_row + at, msg, self.note)
            try:
                stats.add(column.to_numpy(zero_copy_only=False))
            except NotFinite as e:
                msg = "NaN or infinity: every cell must be finite"
                raise cell(stats.name, self.first_row + e.index, msg, self.note) from None
        self.rows += batch.num_rows
        self.bytes += batch.nbytes
        if self.rows > self.limits.max_samples:
            msg = f"the table has over {self.limits.max_samples} rows: more than MB_MAX_DATASET_SAMPLES"
            raise DatasetError(msg, ctx={"limit": self.limits.max_samples})
        if self.bytes > self.limits.max_bytes:
            raise too_large("the table's numbers", "MB_MAX_DATASET_BYTES", self.limits.max_bytes)

    def describe(self, format: str, whole_numbers_as_int: bool) -> Description:
        samples = common_samples({s.name: (self.rows,) for s in self.stats}, self.limits.max_samples)
        arrays = []
        for stats in self.stats:
            stats.shape = (self.rows,)
            exact = max(abs(stats.low), abs(stats.high)) < EXACT_INTEGERS
            whole = whole_numbers_as_int and stats.dtype.kind == "f" and stats.integral and exact
            arrays.append(stats.info(dtype="int64" if whole else None))
        return Description(format=format, samples=samples, arrays=arrays)  # type: ignore[arg-type]


def describe_csv(path: Path, limits: Limits) -> Description:
    """Every column as float64 (a CSV has no types), reported as int64 when all its numbers are
    whole. A first row of numbers only is data, and the columns are named f0, f1, ..."""
    names = _first_row(path)
    header = not all(_is_number(name) for name in names)
    if not header:
        names = [f"f{i}" for i in range(len(names))]
    ragged: list[csv.InvalidRow] = []

    def refuse(row: csv.InvalidRow) -> str:
        ragged.append(row)
        return "error"

    read = csv.ReadOptions(use_threads=False, block_size=1 << 20, column_names=names, skip_rows=int(header))
    convert = csv.ConvertOptions(column_types=dict.fromkeys(names, pa.float64()))
    columns = None
    try:
        reader = csv.open_csv(path, read, csv.ParseOptions(invalid_row_handler=refuse), convert)
        columns = Columns(reader.schema, limits, first_row=1 + int(header), note=NOTE if header else "")
        for batch in reader:
            columns.add(batch)
    except pa.ArrowInvalid as e:
        raise _csv_error(e, ragged, names, NOTE if header else "") from e
    return columns.describe("csv", whole_numbers_as_int=True)


def _first_row(path: Path) -> list[str]:
    """The cells of the first row (the header, unless all are numbers); bad rows are for later."""
    skip = csv.ParseOptions(invalid_row_handler=lambda row: "skip")
    try:
        reader = csv.open_csv(path, csv.ReadOptions(use_threads=False, block_size=1 << 20), skip)
    except pa.ArrowInvalid as e:
        raise DatasetError(f"not a readable CSV file: {e}") from e
    return reader.schema.names


def _csv_error(
    error: pa.ArrowInvalid, ragged: list[csv.InvalidRow], names: list[str], note: str
) -> DatasetError:
    if ragged:
        row = ragged[0]
        msg = f"row {row.number}{note} has {row.actual_columns} cells; the first has {row.expected_columns}"
        return DatasetError(msg, kind="csv_ragged", ctx={"row": row.number, "cells": row.actual_columns})
    bad = _BAD_CELL.search(str(error))
    if bad:
        column, row, value = names[int(bad.group(1))], int(bad.group(2)), bad.group(3)
        return cell(column, row, f"{value!r} is not a number", note, value=value)
    return DatasetError(f"not a readable CSV file: {error}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def describe_parquet(path: Path, limits: Limits) -> Description:
    try:
        table = pq.ParquetFile(path)
        schema = table.schema_arrow
    except (pa.ArrowException, OSError) as e:
        raise DatasetError(f"not a readable Parquet file: {e}") from e
    for field in schema:
        if not (
            pa.types.is_integer(field.type)
            or pa.types.is_floating(field.type)
            or pa.types.is_boolean(field.type)
        ):
            raise in_array(field.name, f"column {field.name!r} holds {field.type}: only numbers and booleans")
    if table.metadata.num_rows > limits.max_samples:
        msg = f"the table has {table.metadata.num_rows} rows"
        msg += f", more than MB_MAX_DATASET_SAMPLES ({limits.max_samples})"
        raise DatasetError(msg, ctx={"limit": limits.max_samples, "got": table.metadata.num_rows})
    columns = Columns(schema, limits)
    row_bytes = sum(max(1, field.type.bit_width // 8) for field in schema) or 1
    _feed(columns, table.iter_batches(batch_size=max(1, BATCH_BYTES // row_bytes)))
    return columns.describe("parquet", whole_numbers_as_int=False)


def _feed(columns: Columns, batches: Iterable[pa.RecordBatch]) -> None:
    try:
        for batch in batches:
            columns.add(batch)
    except (pa.ArrowException, OSError) as e:  # a page that does not decode
        raise DatasetError(f"not a readable Parquet file: {e}") from e
