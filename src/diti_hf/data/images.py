"""The one image decoder of the package: files, stored 🤗 `datasets` values and PIL images become checked PIL images.

The CLI, feature extraction, the training datasets and the browser app all read images here, so one file gives the
same pixels everywhere: the mode is checked once ([`check_image_mode`]: 8-bit modes only; 16-bit and float images
have no defined white level and are refused), and the pipeline's preprocessing then converts every accepted mode
the same way (transparency composited on white, CMYK/P/LA converted by PIL; see [`convert_channels`]).
"""

from __future__ import annotations

import io
import math
import os
from typing import Any

from PIL import Image

from .transforms import check_image_mode, has_transparency


class BadImageError(ValueError):
    """An image could not be decoded or has an unsupported mode. The message names it (index, column, file)."""


def _source(value: Any) -> Any:
    """What `PIL.Image.open` accepts for `value`, or `None` when only 🤗 `datasets` can open it (remote paths)."""
    if isinstance(value, (str, os.PathLike)):
        return value
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return io.BytesIO(value["bytes"])
        path = value.get("path")
        if path and os.path.exists(path):
            return path
    return None


def _open(source: Any, what: str) -> Image.Image:
    """Reads the header only (`Image.open` is lazy), naming `what` when it is not an image at all."""
    try:
        return Image.open(source)
    except Image.DecompressionBombError as error:
        raise BadImageError(f"{what} is far too large to decode ({error}).") from None
    except (Image.UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise BadImageError(
            f"{what} could not be decoded: not an image file that PIL can read ({type(error).__name__}); expected a "
            "PNG, JPEG, WebP, BMP or TIFF image."
        ) from None


def _check_header(image: Image.Image, what: str, max_pixels: int | None, still: bool) -> None:
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        side = math.isqrt(max_pixels)
        raise BadImageError(
            f"{what} is {width}×{height} pixels ({width * height / 1e6:.1f} megapixels); expected at most "
            f"{max_pixels / 1e6:.1f} megapixels (e.g. {side}×{side}). Shrink it first: the model sees small images."
        )
    frames = int(getattr(image, "n_frames", 1))
    if still and frames > 1:
        raise BadImageError(f"{what} is animated ({frames} frames); expected a still image (save one frame).")


def open_image(value: Any, what: str = "image", max_pixels: int | None = None, still: bool = False) -> Image.Image:
    r"""
    Decodes one image and checks its mode.

    The header is read before the pixels, so an oversized (`max_pixels`) or animated (`still`) file is refused
    without decoding it; PIL's own decompression-bomb limit applies in every case.

    Args:
        value: A path, a stored 🤗 `datasets` image (`{"bytes", "path"}` dict) or a PIL image.
        what (`str`, defaults to `"image"`): How messages name the image (e.g. `"image 3 (file 'a.png')"`).
        max_pixels (`int`, *optional*): Refuse images with more pixels (width × height).
        still (`bool`, defaults to `False`): Refuse animated images (otherwise their first frame is used).

    Returns:
        The decoded PIL image in its own mode (the pipeline's preprocessing converts it).

    Raises:
        [`BadImageError`] naming `what`: missing (`None`), unreadable, truncated, too large, animated (with
        `still`), or of an unsupported mode.
    """
    if value is None:
        raise BadImageError(f"{what} is missing (None).")
    if isinstance(value, Image.Image):
        image = value
    elif (source := _source(value)) is not None:
        image = _open(source, what)
    else:
        import datasets

        try:
            image = datasets.Image().decode_example(value)  # remote paths and other stored forms
        except Exception as error:  # fetching or identifying failed; reported with its type
            raise BadImageError(f"{what} could not be decoded ({type(error).__name__}: {error}).") from error
    _check_header(image, what, max_pixels, still)
    try:
        image.load()
        if getattr(image, "n_frames", 1) > 1 and image is not value:  # PIL keeps an animation's file open
            with image:
                image = image.copy()
    except Exception as error:  # PIL raises many types on corrupt data; each is reported, never swallowed
        raise BadImageError(f"{what} could not be decoded ({type(error).__name__}: {error}).") from error
    try:
        return check_image_mode(image, what)
    except (TypeError, ValueError) as error:
        raise BadImageError(str(error)) from error


def image_label(index: int | str, column: str | None = None, path: str | os.PathLike | None = None) -> str:
    """`"image 3 (column 'image', file 'a.png')"`: how messages name one image of a collection."""
    details = ([f"column {column!r}"] if column else []) + ([f"file {os.fspath(path)!r}"] if path else [])
    return f"image {index}" + (f" ({', '.join(details)})" if details else "")


def decode_image(value: Any, index: int | str, column: str | None = "image") -> Image.Image:
    r"""
    Decodes image `index` of a collection (a dataset column, a list of files) with [`open_image`].

    Raises:
        [`BadImageError`] naming `index`, `column` and the file, when the image is missing, unreadable, truncated or
        of an unsupported mode.
    """
    path = value.get("path") if isinstance(value, dict) else value if isinstance(value, (str, os.PathLike)) else None
    return open_image(value, image_label(index, column, path))


__all__ = ["BadImageError", "decode_image", "has_transparency", "image_label", "open_image"]
