"""What an upload holds, as the API reports it and a job (issue 19, part 2) will check it against
a model: its arrays (a CSV's or Parquet file's columns, an image zip's images and labels), with
shapes, dtypes and value ranges, and the number of samples they share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

Format = Literal["npz", "safetensors", "csv", "parquet", "images"]


@dataclass(frozen=True)
class Limits:
    """The caps an upload is described under (from the settings)."""

    max_bytes: int  # the file, and its content once inflated (zip members, Parquet pages)
    max_samples: int


class ClassCount(BaseModel):
    value: int = Field(description="the label as it appears in the array (an image's class index)")
    count: int = Field(description="samples with this label")
    name: str | None = Field(None, description="the class folder's name, for an image dataset")


class ArrayInfo(BaseModel):
    name: str = Field(description="the name a job's `inputs` and `targets` use")
    shape: list[int] = Field(description="samples first")
    dtype: str = Field(description="numpy's name: float32, int64, uint8, bool, ...")
    min: float
    max: float
    mean: float
    classes: list[ClassCount] | None = Field(
        None,
        description="for a 1-D array of at most 1000 distinct non-negative whole numbers (which may be "
        "class labels): each value and its count; else null",
    )


class ImagesInfo(BaseModel):
    width: int = Field(description="of every image, after `resize`")
    height: int
    channels: int = Field(description="1 when every image is grayscale, else 3 (RGB)")
    resize: list[int] | None = Field(description="[width, height] the images were resized to, if asked")


class Description(BaseModel):
    format: Format = Field(description="recognised from the content (magic bytes), not the file name")
    samples: int = Field(description="the first dimension, which every array shares")
    arrays: list[ArrayInfo]
    images: ImagesInfo | None = Field(
        None, description='for a zip of images: the "image" array is [N, C, H, W] floats in [0, 1]'
    )
