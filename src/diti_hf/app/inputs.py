"""The app's inputs: the page's field labels, and the checks of every value typed or uploaded in the page.

Each check answers bad input with an [`AppInputError`] that names the field by its label on the page, says what was
wrong and what was expected; the page shows it in its status line. Nothing here needs gradio.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch

from ..data.images import BadImageError, has_transparency, open_image
from ..partition import TimestepPartition
from ..safe_io import read_vector, short_repr
from ..sampling import check_num_inference_steps

# Header-checked before decoding, far below PIL's decompression-bomb limit (89M pixels): the model sees 32×32 or
# 64×64, and a 16-megapixel image is already 200 MB of RGB.
MAX_IMAGE_PIXELS = 4096 * 4096
MAX_UPLOAD_BYTES = 32 * 1024 * 1024
MAX_SCALES = 9
# An edit step of scale s moves z by s·σ per dim on average: |s| = 100 is already far outside the data, and larger
# values overflow float32 z to inf.
MAX_ABS_SCALE = 100.0
MAX_STRIP = 9
# The seeds of numpy's and torch's generators that every platform accepts.
MAX_SEED = 2**32 - 1
# The steps field's bound when no model is at hand (with one, its T bounds the DDIM grid).
MAX_STEPS = 1000

# The labels of the page's fields: the page shows them and every message about a field's value names it by them.
FIELDS = {
    "seed": "Seed",
    "steps": "DDIM steps",
    "lo": "from t (lo, inclusive)",
    "hi": "to t (hi, exclusive)",
    "strip": "Images in the strip",
    "alpha": "α (0 = A, 1 = B's range)",
    "scales": "Scales s",
    "top_k": "Top-k dims (empty = all)",
    "factor": "Attribute",
    "class": "Class",
    "direction": "Direction w",
}


class AppInputError(ValueError):
    """Input from the page that the app cannot use; its message is shown in the page."""


# ---------------------------------------------------------------------------------------------------- uploads
def read_image(path: str | os.PathLike, label: str = "the image") -> tuple[PIL.Image.Image, str | None]:
    r"""
    Reads an uploaded image file with the package's image decoder ([`~diti_hf.data.open_image`]).

    The header is read first, so that an oversized or animated file is refused before its pixels are decoded.

    Args:
        path (`str` or `os.PathLike`): The uploaded file.
        label (`str`, defaults to `"the image"`): How messages name it (e.g. `"image A"`).

    Returns:
        `(image, note)`: the decoded PIL image (its own mode; the pipeline's preprocessing converts it) and a note
        for the page when the preprocessing changes what the user sees (transparency), else `None`.

    Raises:
        [`AppInputError`]: Not an image PIL can read, animated, larger than [`MAX_IMAGE_PIXELS`], truncated, or of a
            mode without a defined white level (16-bit, float).
    """
    path = Path(path)
    what = f"{label} ({path.name!r})"
    if not path.is_file():
        raise AppInputError(f"{what}: no such file; upload the image again.")
    if path.stat().st_size > MAX_UPLOAD_BYTES:
        raise AppInputError(
            f"{what} is {path.stat().st_size / 2**20:.1f} MB; expected at most {MAX_UPLOAD_BYTES // 2**20} MB."
        )
    try:
        image = open_image(path, what, max_pixels=MAX_IMAGE_PIXELS, still=True)
    except BadImageError as error:
        raise AppInputError(str(error)) from None
    note = None
    if has_transparency(image):
        note = f"{what} has transparency (mode {image.mode}): transparent pixels are composited on white."
    return image, note


def read_direction(path: str | os.PathLike, latent_dim: int) -> torch.Tensor:
    r"""
    Reads an edit direction `w` from a `.npy` file: `latent_dim` finite numbers, not all zero (a `(1, d)` or `(d, 1)`
    array is accepted as a vector). The header is checked first ([`~diti_hf.safe_io.read_vector`]), so that a file
    claiming more values than `latent_dim` is refused before anything is allocated.

    Raises:
        [`AppInputError`]: What is wrong with the file and what was expected, in one line.
    """
    path = Path(path)
    what = f"the direction file {path.name!r}"
    expected = f"expected a .npy file of {latent_dim} numbers, one per dim of z (np.save('w.npy', w))"
    if not path.is_file():
        raise AppInputError(f"{what}: no such file (uploads are deleted after a while); upload it again.")
    try:
        array = read_vector(path, what, latent_dim)
    except (OSError, ValueError) as error:
        raise AppInputError(f"{str(error).rstrip('.')}; {expected}.") from None
    if not np.isfinite(array).all():
        raise AppInputError(f"{what}: contains NaN or infinite values; {expected}.")
    if not np.abs(array).sum() > 0:
        raise AppInputError(f"{what}: is all zeros; a direction must be non-zero.")
    return torch.from_numpy(array.astype(np.float32))


# ---------------------------------------------------------------------------------------------------- fields
def _whole_number(value: Any) -> int | None:
    """`value` as an `int` if it is a whole number (an int, or a float or string of one), else `None`."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return int(number) if number.is_integer() else None


def check_whole(value: Any, field: str, lo: int, hi: int) -> int:
    r"""
    Validates a whole number typed in the page's field `field` (a key of [`FIELDS`]): `lo <= value <= hi`.

    Raises:
        [`AppInputError`]: Naming the field by its label, the range and the value.
    """
    number = _whole_number(value)
    if number is None or not lo <= number <= hi:
        raise AppInputError(f"{FIELDS[field]}: expected a whole number in [{lo}, {hi}], got {short_repr(value)}.")
    return number


def check_seed(value: Any) -> int:
    """The seed field: a whole number in [0, [`MAX_SEED`]]; empty means 0."""
    return 0 if value is None else check_whole(value, "seed", 0, MAX_SEED)


def check_steps(value: Any, num_train_timesteps: int = MAX_STEPS) -> int:
    r"""
    The DDIM steps field: a whole number that [`~diti_hf.sampling.check_num_inference_steps`] accepts for a model of
    `num_train_timesteps` time-steps, i.e. in `[1, num_train_timesteps]`.

    Raises:
        [`AppInputError`]: Naming the field by its label, the range and the value.
    """
    try:
        return check_num_inference_steps(_whole_number(value), num_train_timesteps)
    except ValueError:
        raise AppInputError(
            f"{FIELDS['steps']}: expected a whole number in [1, {num_train_timesteps}], got {short_repr(value)}."
        ) from None


def check_top_k(value: Any, latent_dim: int) -> int | None:
    """The top-k field: empty (`None`: every dim of the direction) or a whole number in `[1, latent_dim]`."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    number = _whole_number(value)
    if number is None or not 1 <= number <= latent_dim:
        raise AppInputError(
            f"{FIELDS['top_k']}: expected empty (all dims) or a whole number in [1, {latent_dim}], "
            f"got {short_repr(value)}."
        )
    return number


def check_range(partition: TimestepPartition, lo: Any, hi: Any) -> tuple[int, int]:
    r"""
    Validates a half-open time-step range `[lo, hi)` typed in the page: integers with `0 <= lo < hi <= T`.

    Raises:
        [`AppInputError`]: Naming the range and the model's `T`.
    """
    T = partition.num_train_timesteps
    rule = f"a time-step range [lo, hi) must satisfy 0 <= lo < hi <= T = {T} (half-open, inside [0, {T}))"
    values = [_whole_number(lo), _whole_number(hi)]
    if None in values:
        raise AppInputError(
            f"the range needs two whole numbers, got lo = {short_repr(lo)}, hi = {short_repr(hi)}; {rule}."
        )
    lo, hi = values
    try:
        empty = partition.resolve_range(timesteps=(lo, hi)).empty
    except ValueError:  # outside [0, T] or reversed
        empty = True
    if empty:
        raise AppInputError(
            f"the range [{short_repr(lo)}, {short_repr(hi)}) is outside the model's time-steps: {rule}."
        )
    return lo, hi


def check_scales(scales: Sequence[float], text: Any = None) -> list[float]:
    r"""
    Validates edit step sizes: 1 to [`MAX_SCALES`] numbers, each in [-[`MAX_ABS_SCALE`], [`MAX_ABS_SCALE`]].

    Args:
        scales (`Sequence[float]`): The step sizes.
        text (*optional*): What was typed in the scales field, quoted in the message (default: `scales`).

    Raises:
        [`AppInputError`]: Naming the scales field by its label.
    """
    limit = f"{MAX_ABS_SCALE:g}"
    if not 1 <= len(scales) <= MAX_SCALES or not all(-MAX_ABS_SCALE <= float(s) <= MAX_ABS_SCALE for s in scales):
        raise AppInputError(
            f"{FIELDS['scales']}: expected 1 to {MAX_SCALES} numbers in [-{limit}, {limit}], e.g. -1, -0.5, 0, 0.5, 1; "
            f"got {short_repr(scales if text is None else text)}."
        )
    return [float(s) for s in scales]


def parse_scales(text: str) -> list[float]:
    """Edit step sizes typed as comma- or space-separated numbers, e.g. `"-1, 0, 1"`, checked by [`check_scales`]."""
    parts = [p for p in str(text or "").replace(",", " ").split() if p]
    try:
        scales = [float(p.replace("−", "-")) for p in parts]
    except ValueError:
        scales = []  # refused below, quoting the text
    return check_scales(scales, text)


def interpolation_alphas(num: int, alpha: float) -> list[float]:
    """The α of the strip (`num` evenly from 0 to 1) followed by the single `alpha`, generated in one call."""
    num = check_whole(num, "strip", 2, MAX_STRIP)
    try:
        alpha = float(alpha)
    except (TypeError, ValueError):
        alpha = math.nan
    if not 0.0 <= alpha <= 1.0:
        raise AppInputError(f"{FIELDS['alpha']}: expected a number in [0, 1], got {alpha}.")
    return [i / (num - 1) for i in range(num)] + [alpha]
