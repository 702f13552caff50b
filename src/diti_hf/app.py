"""The DiTi browser app: reconstruct, swap, interpolate and edit two images with a [`DiTiPipeline`], in Gradio.

`diti-hf app --model FOLDER_OR_HUB_ID` serves it (default: the shipped `pretrained/diti-shapes32`), and
`spaces/diti-shapes32/` is the same app as a Hugging Face Space. Gradio is the optional extra `diti_hf[app]`; the
helpers that read uploads and describe the partition need only the core dependencies.

Every model call goes through the pipeline's public methods (`swap`, `interpolate`, `edit`, `reconstruct`), so the
pictures on the page are what those methods return for the same inputs. The page works without internet: analytics,
the version check and share links are off, the theme's fonts are served by the app itself, and the model is loaded
before the server starts. Bad input (a file that is not an image, an animated, 16-bit or oversized image, a direction
of the wrong length or a `.npy` whose header claims more values than z has, a time-step range outside [0, T), a
seed, step count, top-k or scale outside its range) is answered in the page's status line naming the field (its label
on the page), with what was wrong and what was expected, never with a traceback. Uploads and the images the page shows
are temporary files: they are deleted [`UPLOAD_MAX_AGE_S`] after they were written, and all of them when the server
stops.
"""

from __future__ import annotations

import functools
import html
import logging
import math
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch

from .data.images import BadImageError, has_transparency, open_image
from .partition import TimestepPartition
from .safe_io import read_vector, short_repr
from .sampling import check_num_inference_steps

logger = logging.getLogger(__name__)

# Set before gradio is imported: it reads them at import and at `Blocks()`; the page must not call home.
OFFLINE_ENVIRONMENT = {
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GRADIO_SHARE": "False",
}
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
# Gradio keeps every upload and every image it serves as a file; sweep them this often, deleting those this old.
UPLOAD_SWEEP_EVERY_S = 10 * 60
UPLOAD_MAX_AGE_S = 60 * 60
MAX_CACHED_PROBES = 16
# The page's initial DDIM steps: a UI choice for quick interactive edits on a CPU, below the pipeline API's
# `diti_hf.sampling.DEFAULT_NUM_INFERENCE_STEPS`; `diti-hf app --steps` starts from it too.
DEFAULT_STEPS = 20
DEFAULT_PROBE_DATASET = "diti-shapes"
DEFAULT_PROBE_IMAGES = 512
# The evaluation report of the shipped model, shown with it by `diti-hf app` without --model.
DEFAULT_REPORT = "benchmarks/shapes32"
# The report files `diti-hf demo` and `examples/evaluate.py` write the factors × chunks heatmap to.
ALIGNMENT_IMAGE_NAMES = ("alignment_heatmap.png", "alignment_diti.png", "evaluation/alignment_diti.png")

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

# What the page's header says about the method, and about a model whose measurements it is not given.
AIM = (
    "DiTi aims to tie ranges of time-steps to attributes, late ones to coarse attributes (shape, layout) and early "
    "ones to fine attributes (colour, texture), so that swapping a range swaps those attributes."
)
UNMEASURED = (
    "Whether a model achieves this is measured by its evaluation report (`diti-hf evaluate`), not assumed by this "
    "page."
)
# The shipped pretrained/diti-shapes32, measured in benchmarks/shapes32 (README "Results", its model card).
SHIPPED_FINDINGS = (
    "Measured on this model: not yet. Only swaps of the earliest range [0, 250) change anything, and they change "
    "several attributes at once (object colour 59 %, scale 46 %, texture 38 %); no attribute is cleanly controlled by "
    "any range."
)

# Model images are 32×32 or 64×64: shown enlarged without smoothing, so that the pixels on screen are the model's.
CSS = """
.pixelated img { image-rendering: pixelated; }
.upscaled img { width: 100%; height: 100%; object-fit: contain; }
#status { min-height: 2.5em; }
#status .error { color: #b91c1c; }
"""


class AppInputError(ValueError):
    """Input from the page that the app cannot use; its message is shown in the page."""


# ---------------------------------------------------------------------------------------------------- inputs
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


# ---------------------------------------------------------------------------------------------------- the partition
def preset_ranges(partition: TimestepPartition) -> dict[str, tuple[int, int]]:
    r"""
    The ranges offered by the range picker, labelled with their time-steps: the partition's
    [`~diti_hf.TimestepPartition.preset_ranges`] (the late and the early chunks, all time-steps, each stage of a staged
    partition, each chunk).

    Returns:
        `dict[str, tuple[int, int]]`: label → half-open time-step range.
    """
    return {f"{name}: t ∈ [{lo}, {hi})": (lo, hi) for name, (lo, hi) in partition.preset_ranges().items()}


def describe_range(partition: TimestepPartition, lo: int, hi: int) -> str:
    """One markdown line: the chunks and dims of `z` a time-step range selects, and the time-steps it acts on."""
    resolved = partition.resolve_range(timesteps=(lo, hi))
    (i, j), (start, end) = resolved.chunks, resolved.dims
    chunks = f"chunk {i}" if j - i == 1 else f"chunks {i}–{j - 1}"
    t_lo, t_hi = resolved.timesteps
    widened = f" An edit acts on whole chunks: t ∈ [{t_lo}, {t_hi})." if resolved.widened else ""
    return (
        f"t ∈ [{lo}, {hi}) meets **{chunks}** of {partition.num_chunks} → **dims [{start}, {end})** of z "
        f"({end - start} of {partition.latent_dim}).{widened} The figure: chunks over t (top) and the dims of z they "
        "own (bottom), the range in orange, stage edges thick."
    )


def partition_figure(partition: TimestepPartition, lo: int | None = None, hi: int | None = None) -> PIL.Image.Image:
    r"""
    Draws the partition: the time axis `[0, T)` cut into chunks (stage edges drawn thick) above the dims of `z` each
    chunk owns, with the chunks and dims of the range `[lo, hi)` highlighted.

    Returns:
        `PIL.Image.Image`: RGB, 720 × 150 pixels.
    """
    from PIL import ImageDraw

    width, margin, bar = 720, 40, 34
    T, d, k = partition.num_train_timesteps, partition.latent_dim, partition.num_chunks
    image = PIL.Image.new("RGB", (width, 150), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    span = width - 2 * margin
    picked = lo is not None and hi is not None and lo < hi
    selected = partition.resolve_range(timesteps=(lo, hi)).chunks if picked else (0, 0)

    def x_of(value: float, total: int) -> int:
        return margin + round(span * value / total)

    rows = (("time-step t", 22, T, partition.chunk_timesteps), ("dims of z", 92, d, partition.chunk_dims))
    for label, top, total, bounds in rows:
        draw.text((margin, top - 14), label, fill=(60, 60, 60))
        for i in range(k):
            a, b = bounds(i)
            picked = selected[0] <= i < selected[1]
            shade = (249, 115, 22) if picked else ((203, 213, 225) if i % 2 else (226, 232, 240))
            draw.rectangle((x_of(a, total), top, max(x_of(a, total), x_of(b, total) - 1), top + bar), fill=shade)
        draw.text((margin - 4, top + bar + 2), "0", fill=(60, 60, 60))
        draw.text((width - margin - 12, top + bar + 2), str(total), fill=(60, 60, 60))
    for end in (partition.stages or [])[:-1]:  # the edges between stages; the last stage ends at T
        x = x_of(end, T)
        draw.line((x, 18, x, 22 + bar + 4), fill=(15, 23, 42), width=3)
    # link each selected chunk's time span to its dims
    for i in range(*selected):
        (ta, tb), (da, db) = partition.chunk_timesteps(i), partition.chunk_dims(i)
        draw.line(
            ((x_of(ta, T) + x_of(tb, T)) // 2, 22 + bar, (x_of(da, d) + x_of(db, d)) // 2, 92), fill=(194, 65, 12)
        )
    return image


def partition_summary(partition: TimestepPartition) -> str:
    """Markdown: the partition in words and as the table of the model card ([`~diti_hf.hub.partition_table`])."""
    from .hub import partition_table

    kind = "staged" if partition.stages is not None else "uniform"
    return (
        f"z has **{partition.latent_dim} dims in {partition.num_chunks} chunks** over T = "
        f"{partition.num_train_timesteps} time-steps ({kind} partition): chunk i is used by the decoder from its "
        "time-steps down to t = 0.\n\n" + partition_table(partition)
    )


def find_alignment_image(*folders: str | os.PathLike | None) -> Path | None:
    """The first factors × chunks alignment heatmap ([`ALIGNMENT_IMAGE_NAMES`]) found in `folders` (a model folder,
    a report folder), or `None`."""
    for folder in folders:
        if folder is None or not Path(folder).is_dir():
            continue
        for name in ALIGNMENT_IMAGE_NAMES:
            if (Path(folder) / name).is_file():
                return Path(folder) / name
    return None


# ---------------------------------------------------------------------------------------------------- the model side
class DiTiApp:
    r"""
    What the page does, without the page: every action takes PIL images and returns `(image, caption)` pairs.

    Args:
        pipe ([`DiTiPipeline`]): The loaded pipeline (on its device).
        model_name (`str`, *optional*): Shown in the page's header.
        batch_size (`int`, defaults to 16): Generation batch size of the pipeline calls.
        probe_dataset (`str`, defaults to `"diti-shapes"`): A labelled dataset for on-the-fly probes (a built-in
            procedural one, or a folder written by `Dataset.save_to_disk`; see [`~diti_hf.data.load_image_dataset`]).
            Its `ClassLabel` columns are the attributes offered.
        probe_images (`int`, defaults to 512): Images of `probe_dataset` a probe is trained on.
        alignment_image (`str` or `os.PathLike`, *optional*): The alignment heatmap shown with the partition.
        findings (`str`, *optional*): What this model measured against DiTi's aim, one or two sentences for the
            page's header (e.g. [`SHIPPED_FINDINGS`]); without it the header says it is not measured here
            ([`UNMEASURED`]).
    """

    def __init__(
        self,
        pipe: Any,
        model_name: str | None = None,
        batch_size: int = 16,
        probe_dataset: str | None = DEFAULT_PROBE_DATASET,
        probe_images: int = DEFAULT_PROBE_IMAGES,
        alignment_image: str | os.PathLike | None = None,
        findings: str | None = None,
    ):
        self.pipe = pipe
        self.model_name = model_name or "DiTi pipeline"
        self.batch_size = int(batch_size)
        self.partition: TimestepPartition = pipe.partition
        self.resolution = int(pipe.encoder.config.sample_size)
        self.probe_dataset = probe_dataset
        self.probe_images = int(probe_images)
        self.alignment_image = None if alignment_image is None else Path(alignment_image)
        self.findings = findings
        self._probes: dict[tuple, dict[str, Any]] = {}
        self._lock = threading.Lock()  # one pipeline call at a time, whatever the number of sessions
        self.factors: dict[str, list[str]] = {}
        self.probe_error: str | None = None
        if probe_dataset is not None:
            try:
                self.factors = self._factor_names()
            except Exception as error:  # an unavailable dataset only disables the probe option
                self.probe_error = f"the probe dataset {probe_dataset!r} cannot be loaded: {error}"
                logger.warning(self.probe_error)

    # ------------------------------------------------------------------ helpers
    def _dataset(self, num_images: int, seed: int):
        from .data import load_image_dataset

        return load_image_dataset(
            dataset_name=self.probe_dataset, num_images=num_images, seed=seed, resolution=self.resolution
        )

    def _factor_names(self) -> dict[str, list[str]]:
        import datasets

        features = self._dataset(1, 0).features
        return {name: list(f.names) for name, f in features.items() if isinstance(f, datasets.ClassLabel)}

    def shown(self, image: PIL.Image.Image) -> PIL.Image.Image:
        """`image` as the model sees it (after the pipeline's preprocessing)."""
        return self.pipe.postprocess(self.pipe.preprocess([image]), "pil")[0]

    def _run(self, fn: Callable[[], Any]) -> Any:
        with self._lock:
            return fn()

    # ------------------------------------------------------------------ actions
    def draw_shapes(self, seed: int) -> tuple[list[PIL.Image.Image], list[str]]:
        """Two images of the built-in shapes dataset (the first two of `seed`) and their factor values."""
        from .data.shapes import generate_shapes

        data = generate_shapes(2, seed=check_seed(seed), resolution=self.resolution)
        factors = [name for name in data.column_names if name != "image"]
        labels = [", ".join(f"{f} {data.features[f].int2str(data[i][f])}" for f in factors) for i in range(len(data))]
        return list(data["image"]), labels

    def reconstruct(self, a: PIL.Image.Image, b: PIL.Image.Image, steps: int) -> list[tuple[PIL.Image.Image, str]]:
        """DDIM inversion and regeneration of A and B (`pipe.reconstruct`)."""
        steps = check_steps(steps, self.partition.num_train_timesteps)
        out = self._run(
            lambda: self.pipe.reconstruct([a, b], num_inference_steps=steps, batch_size=self.batch_size).images
        )
        return [(out[0], "A reconstructed"), (out[1], "B reconstructed")]

    def swap(
        self, a: PIL.Image.Image, b: PIL.Image.Image, lo: int, hi: int, steps: int
    ) -> list[tuple[PIL.Image.Image, str]]:
        """A with B's chunks of `[lo, hi)` and B with A's (`pipe.swap` of sources [A, B], targets [B, A])."""
        lo, hi = check_range(self.partition, lo, hi)
        steps = check_steps(steps, self.partition.num_train_timesteps)
        out = self._run(
            lambda: (
                self.pipe.swap(
                    source=[a, b],
                    target=[b, a],
                    timesteps=[(lo, hi)],
                    num_inference_steps=steps,
                    batch_size=self.batch_size,
                ).images
            )
        )
        return [(out[0], f"A with B's t ∈ [{lo}, {hi})"), (out[1], f"B with A's t ∈ [{lo}, {hi})")]

    def interpolate(
        self, a: PIL.Image.Image, b: PIL.Image.Image, lo: int, hi: int, num: int, alpha: float, steps: int
    ) -> tuple[list[tuple[PIL.Image.Image, str]], PIL.Image.Image]:
        """The strip A → B over `[lo, hi)` and the image at `alpha` (one `pipe.interpolate` call)."""
        lo, hi = check_range(self.partition, lo, hi)
        steps = check_steps(steps, self.partition.num_train_timesteps)
        alphas = interpolation_alphas(num, alpha)
        out = self._run(
            lambda: (
                self.pipe.interpolate(
                    [a],
                    [b],
                    alphas=alphas,
                    timesteps=(lo, hi),
                    num_inference_steps=steps,
                    batch_size=self.batch_size,
                ).images
            )
        )
        return [(im, f"α = {x:.2f}") for im, x in zip(out[:-1], alphas[:-1])], out[-1]

    def probe_direction(self, factor: str, class_name: str, seed: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        r"""
        A logistic probe for "`factor` is `class_name`" on `probe_images` images of the probe dataset (trained
        once per attribute and seed, with [`~diti_hf.evaluation.probes.fit_direction_probe`]).

        Returns:
            `(weight, std, summary)`: the direction, the per-dim std of `z` it is expressed in, a markdown line.
        """
        from .evaluation.probes import fit_direction_probe

        if self.probe_error is not None:
            raise AppInputError(self.probe_error)
        seed = check_seed(seed)
        if factor not in self.factors:
            raise AppInputError(
                f"{FIELDS['factor']}: {factor!r} is not a factor of {self.probe_dataset} ({list(self.factors)})."
            )
        if class_name not in self.factors[factor]:
            raise AppInputError(
                f"{FIELDS['class']}: {class_name!r} is not a class of {factor!r} ({self.factors[factor]})."
            )
        key = (factor, class_name, self.probe_images, seed)
        if key not in self._probes:
            if len(self._probes) >= MAX_CACHED_PROBES:  # one entry per attribute and seed asked for: bounded
                self._probes.pop(next(iter(self._probes)))
            data = self._dataset(self.probe_images, seed)

            def fit() -> dict[str, Any]:
                pixels = torch.cat(
                    [self.pipe.preprocess(data[i : i + 256]["image"]) for i in range(0, len(data), 256)]
                )
                z = self.pipe.encode(pixels, batch_size=max(self.batch_size, 64)).z.float().cpu()
                target = torch.tensor(list(data[factor])) == self.factors[factor].index(class_name)
                if not 0 < int(target.sum()) < len(target):
                    raise AppInputError(f"no contrast: {int(target.sum())} of {len(target)} images are {class_name}.")
                return {**fit_direction_probe(z, target, seed=seed), "num_positive": int(target.sum())}

            self._probes[key] = self._run(fit)
        probe = self._probes[key]
        accuracy = probe["test_accuracy"]
        summary = (
            f"probe “{factor} = {class_name}” on {self.probe_images} images of {self.probe_dataset} "
            f"({probe['num_positive']} positive): test accuracy "
            f"{'n/a' if accuracy is None else f'{accuracy:.2f}'}"
        )
        return probe["weight"], probe["std"], summary

    def edit(
        self,
        a: PIL.Image.Image,
        b: PIL.Image.Image,
        direction: torch.Tensor,
        scales: Sequence[float],
        steps: int,
        z_std: torch.Tensor | None = None,
        top_k: int | None = None,
    ) -> list[tuple[PIL.Image.Image, str]]:
        """A and B moved along `direction` by each scale (`pipe.edit`), image-major."""
        steps = check_steps(steps, self.partition.num_train_timesteps)
        top_k = check_top_k(top_k, self.partition.latent_dim)
        scales = check_scales(scales)
        out = self._run(
            lambda: (
                self.pipe.edit(
                    [a, b],
                    direction=direction,
                    scales=list(scales),
                    z_std=z_std,
                    top_k=top_k,
                    num_inference_steps=steps,
                    batch_size=self.batch_size,
                ).images
            )
        )
        n = len(scales)
        return [(out[r * n + c], f"{name}, s = {s:g}") for r, name in enumerate("AB") for c, s in enumerate(scales)]


# ---------------------------------------------------------------------------------------------------- the page
def _import_gradio():
    for key, value in OFFLINE_ENVIRONMENT.items():
        os.environ[key] = value
    try:
        import gradio
    except ImportError as error:
        raise ImportError(f"the browser app needs gradio: pip install 'diti_hf[app]' ({error})") from error
    return gradio


def _error(error: BaseException | str) -> str:
    # messages quote file names the user chose: escaped, never markup
    return f'<span class="error">⚠ {html.escape(str(error))}</span>'


def page_header(app: DiTiApp, device: str) -> str:
    """The page's header (markdown): the model, what to do, what DiTi aims for and what this model measured."""
    partition, res = app.partition, app.resolution
    kind = "staged" if partition.stages is not None else "uniform"
    return (
        f"# DiTi: swap what a range of diffusion time-steps encodes\n"
        f"**{app.model_name}** · z of {partition.latent_dim} dims in {partition.num_chunks} chunks ({kind}) over "
        f"T = {partition.num_train_timesteps} · {res}×{res} images · {device}. Upload two images (or draw two "
        f"shapes), pick a time-step range, then reconstruct, swap, interpolate or edit. {AIM} "
        f"{app.findings or UNMEASURED}"
    )


def build_app(
    app: DiTiApp | Any,
    steps: int = DEFAULT_STEPS,
    seed: int = 0,
    device_label: str | None = None,
    delete_cache: tuple[int, int] | None = (UPLOAD_SWEEP_EVERY_S, UPLOAD_MAX_AGE_S),
) -> Any:
    r"""
    Builds the Gradio page around a [`DiTiApp`] (or a pipeline, wrapped with the defaults).

    Args:
        app ([`DiTiApp`] or [`DiTiPipeline`]): The model side.
        steps (`int`, defaults to [`DEFAULT_STEPS`]): Initial DDIM step count.
        seed (`int`, defaults to 0): Initial seed (shapes draw, probe data and training).
        device_label (`str`, *optional*): Shown in the header (default: the pipeline's device).
        delete_cache (`tuple[int, int]`, *optional*, defaults to `(UPLOAD_SWEEP_EVERY_S, UPLOAD_MAX_AGE_S)`): Every
            `delete_cache[0]` seconds, delete the page's temporary files (uploads, served images) older than
            `delete_cache[1]` seconds; all of them are deleted when the server stops. `None` keeps them.

    Returns:
        `gradio.Blocks`: Serve it with [`launch_app`].
    """
    gr = _import_gradio()
    if not isinstance(app, DiTiApp):
        app = DiTiApp(app)
    partition = app.partition
    presets = preset_ranges(partition)
    first_label, (first_lo, first_hi) = next(iter(presets.items()))
    device = device_label or str(app.pipe.device)
    res = app.resolution

    def status_for(fn: Callable[..., Any], n_outputs: int) -> Callable[..., Any]:
        # every handler answers bad input in the status line; the outputs are cleared. `wraps` keeps `fn`'s
        # signature visible to gradio, which passes a live progress tracker where `fn` declares `gr.Progress`.
        @functools.wraps(fn)
        def handler(*args: Any) -> Any:
            try:
                return fn(*args)
            except (AppInputError, ValueError, TypeError) as error:
                return (*([None] * n_outputs), _error(error))
            except Exception as error:  # a bug: one line in the page, the traceback in the server log
                logger.exception("unexpected error in the DiTi app")
                return (*([None] * n_outputs), _error(f"unexpected {type(error).__name__}: {error}"))

        return handler

    def need_images(a: Any, b: Any) -> None:
        if a is None or b is None:
            missing = [name for name, im in (("A", a), ("B", b)) if im is None]
            which = "images A and B are" if len(missing) == 2 else f"image {missing[0]} is"
            raise AppInputError(f"{which} missing: upload two images or draw two shapes first.")

    def load(label: str):
        def fn(path: str | None):
            if path is None:
                return None, None, f"Image {label} cleared."
            image, note = read_image(path, f"image {label}")
            message = f"Image {label}: {Path(path).name}, {image.width}×{image.height} {image.mode}, shown as the "
            message += f"model sees it ({res}×{res})." + (f" {note}" if note else "")
            return image, app.shown(image), html.escape(message)

        return status_for(fn, 2)

    def draw(seed_value: Any):
        seed_value = check_seed(seed_value)
        images, labels = app.draw_shapes(seed_value)
        message = f"Drew two shapes (seed {seed_value}): A = {labels[0]}; B = {labels[1]}."
        return images[0], images[1], app.shown(images[0]), app.shown(images[1]), None, None, message

    def pick(label: str):
        lo, hi = presets[label]
        return lo, hi

    def show_range(lo: Any, hi: Any):
        try:
            lo, hi = check_range(partition, lo, hi)
        except AppInputError as error:
            return partition_figure(partition), _error(error)
        return partition_figure(partition, lo, hi), describe_range(partition, lo, hi)

    def progress_note(progress: Any, what: str, steps: Any) -> None:
        progress(0.0, desc=f"{what}: DDIM inversion and generation, {steps} steps each")

    def run_reconstruct(a, b, steps_value, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
        need_images(a, b)
        progress_note(progress, "reconstructing A and B", steps_value)
        return app.reconstruct(a, b, steps_value), "Reconstructed A and B."

    def run_swap(a, b, lo, hi, steps_value, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
        need_images(a, b)
        progress_note(progress, "swapping", steps_value)
        out = app.swap(a, b, lo, hi, steps_value)
        return out, f"Swapped the chunks of t ∈ [{int(lo)}, {int(hi)}) between A and B ({int(steps_value)} steps)."

    def run_interpolate(a, b, lo, hi, num, alpha, steps_value, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
        need_images(a, b)
        progress_note(progress, "interpolating", steps_value)
        strip, single = app.interpolate(a, b, lo, hi, num, alpha, steps_value)
        return strip, single, f"Interpolated t ∈ [{int(lo)}, {int(hi)}) from A to B ({int(steps_value)} steps)."

    def run_edit(
        a, b, source, factor, class_name, direction_file, scales_text, top_k, steps_value, seed_value,
        progress=gr.Progress(track_tqdm=True),  # noqa: B008
    ):  # fmt: skip
        need_images(a, b)
        # every field is checked before the probe trains or the file is read
        scales = parse_scales(scales_text)
        top_k = check_top_k(top_k, partition.latent_dim)
        steps_value = check_steps(steps_value, partition.num_train_timesteps)
        seed_value = check_seed(seed_value)
        if source == "probe":
            progress(0.0, desc="training the probe")
            direction, z_std, summary = app.probe_direction(factor, class_name, seed_value)
        else:
            if direction_file is None:
                raise AppInputError(
                    f"{FIELDS['direction']}: no file; upload a .npy of {partition.latent_dim} numbers, or use a probe."
                )
            direction, z_std = read_direction(direction_file, partition.latent_dim), None
            summary = f"direction from {Path(direction_file).name}"
        progress_note(progress, "editing", steps_value)
        out = app.edit(a, b, direction, scales, steps_value, z_std=z_std, top_k=top_k)
        return out, f"Edited A and B along the {summary} ({int(steps_value)} steps)."

    def classes_of(factor: str):
        names = app.factors.get(factor, [])
        return gr.update(choices=names, value=names[0] if names else None)

    image_kwargs = {
        "format": "png",
        "interactive": False,
        "elem_classes": ["pixelated", "upscaled"],
        "height": 168,
        "buttons": [],
    }
    gallery_kwargs = {
        "format": "png",
        "elem_classes": ["pixelated"],
        "object_fit": "contain",
        "fit_columns": False,  # small tiles, not two images stretched over the page
        "buttons": ["download"],
    }
    model_events = {"concurrency_id": "pipeline", "concurrency_limit": 1}

    with gr.Blocks(title=f"DiTi · {app.model_name}", analytics_enabled=False, delete_cache=delete_cache) as page:
        gr.Markdown(page_header(app, device), elem_id="header")
        state_a, state_b = gr.State(None), gr.State(None)
        with gr.Row():
            with gr.Column():
                file_a = gr.File(label="Image A (upload)", type="filepath", elem_id="file-a", height=120)
                preview_a = gr.Image(label="A as the model sees it", elem_id="preview-a", **image_kwargs)
            with gr.Column():
                file_b = gr.File(label="Image B (upload)", type="filepath", elem_id="file-b", height=120)
                preview_b = gr.Image(label="B as the model sees it", elem_id="preview-b", **image_kwargs)
            with gr.Column():
                seed_box = gr.Number(value=seed, precision=0, label=FIELDS["seed"], elem_id="seed",
                                     info="of the shapes draw and of the probe's data and training")  # fmt: skip
                draw_button = gr.Button("Draw two from the built-in shapes dataset", elem_id="draw-shapes")
                steps_box = gr.Slider(1, 100, value=steps, step=1, label=FIELDS["steps"], elem_id="steps",
                                      info="of the inversion and of the generation")  # fmt: skip
        with gr.Accordion("Time-step range and the partition of z", open=True):
            with gr.Row():
                preset = gr.Dropdown(
                    list(presets), value=first_label, label="Preset (sets lo and hi)", elem_id="preset"
                )
                lo_box = gr.Number(value=first_lo, precision=0, label=FIELDS["lo"], elem_id="range-lo")
                hi_box = gr.Number(value=first_hi, precision=0, label=FIELDS["hi"], elem_id="range-hi")
            figure = gr.Image(
                value=partition_figure(partition, first_lo, first_hi), show_label=False, elem_id="partition-figure",
                format="png", interactive=False, height=150, buttons=[],
            )  # fmt: skip
            range_text = gr.Markdown(describe_range(partition, first_lo, first_hi), elem_id="range-text")
            with gr.Accordion("Partition table", open=False):
                gr.Markdown(partition_summary(partition))
        status = gr.Markdown("Ready.", elem_id="status")
        with gr.Tabs():
            with gr.Tab("Swap", id="swap"):
                swap_button = gr.Button("Swap the range between A and B", variant="primary", elem_id="swap-button")
                swap_out = gr.Gallery(label="swapped", columns=6, height=210, elem_id="swap-out", **gallery_kwargs)
            with gr.Tab("Interpolate", id="interpolate"):
                with gr.Row():
                    num_box = gr.Slider(2, MAX_STRIP, value=5, step=1, label=FIELDS["strip"], elem_id="strip-size")
                    alpha_box = gr.Slider(0, 1, value=0.5, step=0.05, label=FIELDS["alpha"],
                                          elem_id="alpha")  # fmt: skip
                interpolate_button = gr.Button("Interpolate the range from A to B", variant="primary",
                                               elem_id="interpolate-button")  # fmt: skip
                strip_out = gr.Gallery(label="strip", columns=9, height=170, elem_id="strip-out", **gallery_kwargs)
                alpha_out = gr.Image(label="at α", elem_id="alpha-out", **image_kwargs)
            with gr.Tab("Edit", id="edit"):
                factor_names = list(app.factors)
                with gr.Row():
                    source = gr.Radio(["probe", "file"], value="probe" if factor_names else "file",
                                      label="Direction", elem_id="direction-source",
                                      info=f"a probe trained now on {app.probe_dataset}, or an uploaded .npy")  # fmt: skip
                    factor = gr.Dropdown(factor_names, value=factor_names[0] if factor_names else None,
                                         label=FIELDS["factor"], elem_id="factor")  # fmt: skip
                    first_classes = app.factors.get(factor_names[0], []) if factor_names else []
                    class_name = gr.Dropdown(first_classes, value=first_classes[0] if first_classes else None,
                                             label=FIELDS["class"], elem_id="class")  # fmt: skip
                    direction_file = gr.File(label=f"{FIELDS['direction']} (.npy, {partition.latent_dim} numbers)",
                                             type="filepath", elem_id="direction-file", height=100)  # fmt: skip
                with gr.Row():
                    scales_box = gr.Textbox("-1, -0.5, 0, 0.5, 1", label=FIELDS["scales"], elem_id="scales")
                    top_k_box = gr.Number(value=None, precision=0, label=FIELDS["top_k"], elem_id="top-k")
                if app.probe_error:
                    gr.Markdown(_error(app.probe_error))
                edit_button = gr.Button("Edit A and B", variant="primary", elem_id="edit-button")
                edit_out = gr.Gallery(label="edited", columns=5, height=400, elem_id="edit-out", **gallery_kwargs)
            with gr.Tab("Reconstruct", id="reconstruct"):
                reconstruct_button = gr.Button("Reconstruct A and B", variant="primary", elem_id="reconstruct-button")
                reconstruct_out = gr.Gallery(label="reconstructed", columns=6, height=210, elem_id="reconstruct-out",
                                             **gallery_kwargs)  # fmt: skip
        if app.alignment_image is not None:
            with gr.Accordion("Time-step alignment of this model (from its evaluation report)", open=False):
                gr.Image(PIL.Image.open(app.alignment_image).convert("RGB"), format="png", interactive=False,
                         show_label=False, elem_id="alignment")  # fmt: skip

        file_a.upload(load("A"), file_a, [state_a, preview_a, status], queue=False)
        file_b.upload(load("B"), file_b, [state_b, preview_b, status], queue=False)
        file_a.clear(lambda: (None, None, "Image A cleared."), None, [state_a, preview_a, status], queue=False)
        file_b.clear(lambda: (None, None, "Image B cleared."), None, [state_b, preview_b, status], queue=False)
        draw_button.click(
            status_for(draw, 6), seed_box, [state_a, state_b, preview_a, preview_b, file_a, file_b, status]
        )
        preset.change(pick, preset, [lo_box, hi_box], queue=False)
        for box in (lo_box, hi_box):
            box.change(show_range, [lo_box, hi_box], [figure, range_text], queue=False)
        factor.change(classes_of, factor, class_name, queue=False)
        swap_button.click(
            status_for(run_swap, 1), [state_a, state_b, lo_box, hi_box, steps_box], [swap_out, status], **model_events
        )
        interpolate_button.click(
            status_for(run_interpolate, 2),
            [state_a, state_b, lo_box, hi_box, num_box, alpha_box, steps_box],
            [strip_out, alpha_out, status],
            **model_events,
        )
        edit_button.click(
            status_for(run_edit, 1),
            [state_a, state_b, source, factor, class_name, direction_file, scales_box, top_k_box, steps_box, seed_box],
            [edit_out, status],
            **model_events,
        )
        reconstruct_button.click(
            status_for(run_reconstruct, 1), [state_a, state_b, steps_box], [reconstruct_out, status], **model_events
        )
    return page


def launch_app(
    page: Any,
    host: str | None = None,
    port: int | None = None,
    prevent_thread_lock: bool = False,
    quiet: bool = False,
) -> tuple[Any, str, str]:
    r"""
    Serves a page of [`build_app`] offline: no share link, analytics, server-side rendering (Node), MCP server or
    monitoring; local fonts; uploads up to [`MAX_UPLOAD_BYTES`].

    Args:
        page (`gradio.Blocks`): The page.
        host (`str`, *optional*): Interface to listen on (default: `GRADIO_SERVER_NAME`, else 127.0.0.1).
        port (`int`, *optional*): Port (default: `GRADIO_SERVER_PORT`, else the first free one from 7860).
        prevent_thread_lock (`bool`, defaults to `False`): Return at once and serve from a thread (tests).
        quiet (`bool`, defaults to `False`): Do not print the URL.

    Returns:
        `(app, local_url, share_url)` as `gradio.Blocks.launch`.
    """
    gr = _import_gradio()
    # the default theme's fonts are served by gradio itself; pin it so a changed default cannot load a font CDN
    theme = gr.themes.Default(
        font=[gr.themes.LocalFont("Source Sans Pro"), "ui-sans-serif", "system-ui", "sans-serif"],
        font_mono=[gr.themes.LocalFont("IBM Plex Mono"), "ui-monospace", "Consolas", "monospace"],
    )
    return page.queue(default_concurrency_limit=1).launch(
        server_name=host,
        server_port=port,
        share=False,
        inbrowser=False,
        prevent_thread_lock=prevent_thread_lock,
        quiet=quiet,
        show_error=False,
        max_file_size=MAX_UPLOAD_BYTES,
        ssr_mode=False,
        mcp_server=False,
        pwa=False,
        enable_monitoring=False,
        theme=theme,
        css=CSS,
    )


__all__ = [
    "AIM",
    "FIELDS",
    "MAX_ABS_SCALE",
    "MAX_IMAGE_PIXELS",
    "MAX_SEED",
    "SHIPPED_FINDINGS",
    "UNMEASURED",
    "UPLOAD_MAX_AGE_S",
    "UPLOAD_SWEEP_EVERY_S",
    "AppInputError",
    "DiTiApp",
    "build_app",
    "check_range",
    "check_scales",
    "check_seed",
    "check_steps",
    "check_top_k",
    "check_whole",
    "describe_range",
    "find_alignment_image",
    "interpolation_alphas",
    "launch_app",
    "page_header",
    "parse_scales",
    "partition_figure",
    "preset_ranges",
    "read_direction",
    "read_image",
]
