"""A zip of PNG or JPEG images in one folder per class (the AutoTrain and torchvision
``ImageFolder`` convention): an ``image`` array of ``[N, C, H, W]`` floats in [0, 1] and a
``label`` array of class indices (the folders, sorted by name).

Each member is inflated within the archive's budget (``zips.Inflation``) and at most
``MAX_IMAGE_FILE_BYTES``; an image whose header states more pixels than Pillow's
decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) is refused before it is decoded."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from app.datasets.description import Description, ImagesInfo, Limits
from app.datasets.errors import in_array
from app.datasets.stats import ArrayStats, common_samples
from app.datasets.zips import Inflation, open_member

MAX_IMAGE_FILE_BYTES = 64 << 20
FORMATS = ("PNG", "JPEG")
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
Size = tuple[int, int]  # (width, height), as Pillow writes it


class ImageFolder(NamedTuple):
    """What the first pass found: each image member with its class index, the class names,
    the size every image will have, and the mode they are converted to (L or RGB)."""

    members: list[tuple[zipfile.ZipInfo, int]]
    classes: list[str]
    size: Size
    mode: str


def describe_images(archive: zipfile.ZipFile, limits: Limits, resize: Size | None) -> Description:
    folder = scan(archive, limits, resize)
    width, height = folder.size
    channels = 1 if folder.mode == "L" else 3
    shape = (len(folder.members), channels, height, width)
    samples = common_samples({"image": shape}, limits.max_samples)
    pixels = ArrayStats("image", shape, np.dtype("float32"))
    labels = np.empty(samples, dtype=np.int64)
    for i, (label, image) in enumerate(decode(archive, folder, Inflation(limits.max_bytes))):
        pixels.add(image / np.float32(255))
        labels[i] = label
    label_stats = ArrayStats("label", (samples,), labels.dtype)
    label_stats.add(labels)
    arrays = [pixels.info(), label_stats.info(names=folder.classes)]
    info = ImagesInfo(width=width, height=height, channels=channels, resize=list(resize) if resize else None)
    return Description(format="images", samples=samples, arrays=arrays, images=info)


def scan(archive: zipfile.ZipFile, limits: Limits, resize: Size | None) -> ImageFolder:
    """The first pass: every member is a PNG or JPEG (its header read), in a class folder."""
    found = [info for info in archive.infolist() if not info.is_dir() and not _skipped(info.filename)]
    roots = {info.filename.rsplit("/", 2)[0] if info.filename.count("/") > 1 else "" for info in found}
    if len(roots) > 1:
        msg = f"the class folders sit in more than one folder ({sorted(roots)[:2]}): zip one set of classes"
        raise in_array("", msg)
    classes = sorted({_class_of(info.filename) for info in found})
    if len(found) > limits.max_samples:
        msg = f"the zip holds {len(found)} images, more than MB_MAX_DATASET_SAMPLES ({limits.max_samples})"
        raise in_array("", msg, limit=limits.max_samples, got=len(found))
    inflation = Inflation(limits.max_bytes)
    sizes: dict[Size, str] = {}
    gray = True
    for info in found:
        with _open_image(archive, info, inflation) as image:
            sizes.setdefault(image.size, info.filename)
            gray = gray and image.mode in GRAY_MODES
    if resize is None and len(sizes) > 1:
        (a, first), (b, second) = list(sizes.items())[:2]
        msg = f"images differ in size ({first!r} is {a[0]}x{a[1]}, {second!r} {b[0]}x{b[1]})"
        msg += ": ask for ?resize=WIDTHxHEIGHT"
        raise in_array(second, msg)
    members = [(info, classes.index(_class_of(info.filename))) for info in found]
    return ImageFolder(members, classes, resize or next(iter(sizes), (0, 0)), "L" if gray else "RGB")


def decode(
    archive: zipfile.ZipFile, folder: ImageFolder, inflation: Inflation
) -> Iterator[tuple[int, np.ndarray]]:
    """The second pass: each image's label and its pixels, ``[C, H, W]`` uint8, in member order."""
    for info, label in folder.members:
        with _open_image(archive, info, inflation) as image:
            try:
                image = image.convert(folder.mode)
                if image.size != folder.size:
                    image = image.resize(folder.size, Image.Resampling.BILINEAR)
                pixels = np.asarray(image, dtype=np.uint8)
            except (OSError, ValueError, SyntaxError) as e:
                raise in_array(info.filename, f"image {info.filename!r} does not decode: {e}") from e
        yield label, pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def _skipped(name: str) -> bool:
    """Hidden files and macOS' resource forks, which zip tools add."""
    return any(part.startswith(".") or part == "__MACOSX" for part in name.split("/"))


def _class_of(name: str) -> str:
    parts = name.split("/")
    if len(parts) < 2:
        raise in_array(name, f"image {name!r} is not in a class folder: the zip needs one folder per class")
    return parts[-2]


def _open_image(archive: zipfile.ZipFile, info: zipfile.ZipInfo, inflation: Inflation) -> Image.Image:
    """The member opened as an image (its header read, nothing decoded); a 422 unless it is a PNG
    or JPEG within Pillow's decompression-bomb limit."""
    name = info.filename
    with open_member(archive, info) as stream:
        data = inflation.read(stream, MAX_IMAGE_FILE_BYTES + 1, name)
        if len(data) > MAX_IMAGE_FILE_BYTES:
            raise in_array(
                name, f"image {name!r} is over {MAX_IMAGE_FILE_BYTES} bytes", limit=MAX_IMAGE_FILE_BYTES
            )
        inflation.read(stream, 1, name)  # its end, where zipfile checks the CRC
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as e:
        raise _bomb(name, str(e)) from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise in_array(name, f"{name!r} is not a PNG or JPEG image") from e
    width, height = image.size
    if width * height > (Image.MAX_IMAGE_PIXELS or float("inf")):
        image.close()
        raise _bomb(name, f"{width}x{height} pixels")
    return image


def _bomb(name: str, what: str) -> Exception:
    limit = Image.MAX_IMAGE_PIXELS
    return in_array(
        name, f"image {name!r} is a decompression bomb ({what}): past Pillow's limit of {limit} pixels"
    )
