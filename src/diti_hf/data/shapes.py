"""A procedural shapes dataset with known, independent generative factors of graded granularity.

Every image is a single object on a plain background. Each factor is a small [`ShapeFactor`] spec (a name, a
rendering *kind*, the value of each class); the set of factors is an argument, so that variants with other
factors, class counts and seeds can be generated and nothing downstream hard-codes the factor list. Factor
values are sampled independently and uniformly per image, so no factor is a function of another.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

SHAPES_DATASET_NAME = "diti-shapes"

FACTOR_KINDS = (
    "background",
    "shape",
    "object_color",
    "scale",
    "position_x",
    "position_y",
    "texture",
    "mark",
    "spot",
    "lighting",
)
SHAPE_NAMES = ("circle", "square", "triangle", "diamond")
TEXTURE_NAMES = ("plain", "stripes", "vstripes", "checker")
MARK_NAMES = ("none", "top_left", "top_right", "bottom_left", "bottom_right")
LIGHTING_NAMES = ("none", "left", "right", "top", "bottom")

# What an image shows for a kind that no factor controls (a variant may drop any factor).
_KIND_DEFAULTS: dict[str, Any] = {
    "background": (0.35, 0.35, 0.35),
    "shape": "circle",
    "object_color": (0.8, 0.2, 0.15),
    "scale": 0.17,
    "position_x": 0.5,
    "position_y": 0.5,
    "texture": "plain",
    "mark": "none",
    "spot": "none",
    "lighting": "none",
}


@dataclass
class ShapeFactor:
    r"""
    One generative factor of the shapes dataset.

    Args:
        name (`str`): Column name of the factor in the dataset.
        kind (`str`): How the factor renders, one of `FACTOR_KINDS`:
            `"background"` / `"object_color"` (values: RGB triples in [0, 1]), `"shape"` (values in `SHAPE_NAMES`),
            `"scale"` (object radius as a fraction of the image side), `"position_x"` / `"position_y"` (object
            centre as a fraction of the image side), `"texture"` (values in `TEXTURE_NAMES`: a brightness
            modulation of the object by ±`amplitude`), `"mark"` (values in `MARK_NAMES`: a small light square in a
            corner of the image), `"spot"` (values in `MARK_NAMES`: the same small square in a corner, brightened
            by `amplitude` over what lies under it, or darkened where brighter would clip — a faint mark that noise
            erases early), `"lighting"` (values in
            `LIGHTING_NAMES`: a linear brightness ramp over the whole image, +`amplitude` on the named side and
            −`amplitude` on the opposite one — a global attribute that noise erases late).
        values (`Sequence`): The rendered value of each class.
        class_names (`Sequence[str]`, *optional*): Label names of the classes; default `str(value)`.
        amplitude (`float`, defaults to 0.2): Relative brightness modulation of `"texture"` (±20 % by default),
            brightness of `"mark"` relative to white, and the additive brightness of `"spot"` and `"lighting"`.
    """

    name: str
    kind: str
    values: Sequence[Any]
    class_names: Sequence[str] | None = None
    amplitude: float = 0.2

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or self.name == "image":
            raise ValueError(f"`name` must be a non-empty string other than 'image', got {self.name!r}.")
        if self.kind not in FACTOR_KINDS:
            raise ValueError(f"`kind` of factor {self.name!r} must be one of {FACTOR_KINDS}, got {self.kind!r}.")
        self.values = tuple(tuple(v) if isinstance(v, (list, tuple)) else v for v in self.values)
        if len(self.values) < 2:
            raise ValueError(f"factor {self.name!r} needs >= 2 `values`, got {len(self.values)}.")
        allowed = {
            "shape": SHAPE_NAMES,
            "texture": TEXTURE_NAMES,
            "mark": MARK_NAMES,
            "spot": MARK_NAMES,
            "lighting": LIGHTING_NAMES,
        }.get(self.kind)
        for v in self.values:
            if allowed is not None and v not in allowed:
                raise ValueError(f"factor {self.name!r} ({self.kind}): value {v!r} is not one of {allowed}.")
            if self.kind in ("background", "object_color") and (len(v) != 3 or not all(0.0 <= c <= 1.0 for c in v)):
                raise ValueError(f"factor {self.name!r} ({self.kind}): value {v!r} must be an RGB triple in [0, 1].")
            if self.kind in ("scale", "position_x", "position_y") and not 0.0 < float(v) < 1.0:
                raise ValueError(f"factor {self.name!r} ({self.kind}): value {v!r} must lie in (0, 1).")
        if len(set(self.values)) != len(self.values):
            raise ValueError(f"factor {self.name!r}: `values` must be distinct, got {self.values}.")
        names = tuple(str(v) for v in self.values) if self.class_names is None else tuple(self.class_names)
        if len(names) != len(self.values) or len(set(names)) != len(names):
            raise ValueError(
                f"factor {self.name!r}: `class_names` must be {len(self.values)} distinct names, got {names}."
            )
        self.class_names = names

    @property
    def num_classes(self) -> int:
        return len(self.values)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["values"] = [list(v) if isinstance(v, tuple) else v for v in self.values]
        d["class_names"] = list(self.class_names)
        return d


def default_factors() -> list[ShapeFactor]:
    """
    The default factor set: 4 background colours, 3 shapes, 4 object colours, 3 scales, 3 × 3 positions and 3
    textures (plain / stripes / checker at ±20 % brightness) — 3,888 combinations, small enough for a 1–2M-parameter
    DDPM trained on CPU (docs/cpu-training-notes.md). Backgrounds are dark and object colours light, so an object
    is visible on every background whatever the other factors.
    """
    return [
        ShapeFactor(
            "background",
            "background",
            [(0.12, 0.16, 0.42), (0.10, 0.34, 0.16), (0.42, 0.12, 0.14), (0.36, 0.28, 0.08)],
            ["navy", "green", "maroon", "brown"],
        ),
        ShapeFactor("shape", "shape", ["circle", "square", "triangle"]),
        ShapeFactor(
            "object_color",
            "object_color",
            [(0.82, 0.22, 0.16), (0.82, 0.76, 0.12), (0.16, 0.70, 0.82), (0.80, 0.80, 0.80)],
            ["red", "yellow", "cyan", "white"],
        ),
        ShapeFactor("scale", "scale", [0.12, 0.17, 0.22], ["small", "medium", "large"]),
        ShapeFactor("position_x", "position_x", [0.28, 0.5, 0.72], ["left", "center", "right"]),
        ShapeFactor("position_y", "position_y", [0.28, 0.5, 0.72], ["top", "middle", "bottom"]),
        ShapeFactor("texture", "texture", ["plain", "stripes", "checker"]),
    ]


def timescale_factors() -> list[ShapeFactor]:
    """
    The default factors plus two that widen the range of time-steps at which the factors are lost: a faint 2×2-px
    `spot` in the bottom-right corner (+0.15 brightness, lost early) and a global `lighting` ramp from the left or
    the right (±0.25 brightness, lost late) — 15,552 combinations. This is the dataset `"diti-shapes-v2"`.
    """
    return [
        *default_factors(),
        ShapeFactor("spot", "spot", ["none", "bottom_right"], ["none", "spot"], amplitude=0.15),
        ShapeFactor("lighting", "lighting", ["left", "right"], amplitude=0.25),
    ]


# The built-in procedural datasets, by the name `--dataset_name` takes.
SHAPES_DATASETS = {SHAPES_DATASET_NAME: default_factors, f"{SHAPES_DATASET_NAME}-v2": timescale_factors}


def _check_factors(factors: Sequence[ShapeFactor] | None) -> list[ShapeFactor]:
    if factors is None:
        return default_factors()
    factors = [ShapeFactor(**f) if isinstance(f, dict) else f for f in factors]
    if not factors or not all(isinstance(f, ShapeFactor) for f in factors):
        raise ValueError(f"`factors` must be a non-empty sequence of ShapeFactor (or dicts), got {factors!r}.")
    names = [f.name for f in factors]
    if len(set(names)) != len(names):
        raise ValueError(f"`factors` must have distinct names, got {names}.")
    kinds = [f.kind for f in factors]
    if len(set(kinds)) != len(kinds):
        raise ValueError(f"`factors` must have distinct kinds (one factor per kind), got {kinds}.")
    return factors


def factors_to_json(factors: Sequence[ShapeFactor]) -> str:
    """Serialises a factor list (stored in the dataset's `info.description` so a dataset knows its factors)."""
    return json.dumps({"dataset": SHAPES_DATASET_NAME, "factors": [f.to_dict() for f in factors]})


def factors_from_json(text: str) -> list[ShapeFactor]:
    """Inverse of [`factors_to_json`]; raises `ValueError` if `text` does not describe a shapes factor list."""
    try:
        payload = json.loads(text)
        return _check_factors([ShapeFactor(**f) for f in payload["factors"]])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"`text` is not a {SHAPES_DATASET_NAME} factor description: {err}") from err


def sample_factor_codes(num_images: int, seed: int = 0, factors: Sequence[ShapeFactor] | None = None) -> np.ndarray:
    """`(num_images, num_factors)` int64 class indices, each factor independent and uniform, from `seed`."""
    factors = _check_factors(factors)
    if not isinstance(num_images, (int, np.integer)) or num_images < 0:
        raise ValueError(f"`num_images` must be a non-negative int, got {num_images!r}.")
    rng = np.random.default_rng(seed)
    # drawn row by row, so that the first n images of a larger dataset are the dataset of n images
    high = np.array([f.num_classes for f in factors])
    return rng.integers(0, high, size=(int(num_images), len(factors))).astype(np.int64)


def _texture_patterns(resolution: int) -> dict[str, np.ndarray]:
    # Period resolution/8 (4 px at 32×32): fine, but one cycle spans >= 2 px at any resolution.
    half = max(1, resolution // 16)
    idx = np.arange(resolution) // half % 2 * 2 - 1.0  # ±1 bands
    return {
        "plain": np.zeros((resolution, resolution)),
        "stripes": np.repeat(idx[:, None], resolution, axis=1),
        "vstripes": np.repeat(idx[None, :], resolution, axis=0),
        "checker": idx[:, None] * idx[None, :],
    }


def _lighting_ramps(resolution: int) -> dict[str, np.ndarray]:
    # -1 on the far side, +1 on the lit side, linear in between (pixel centres)
    ramp = (np.arange(resolution) + 0.5) / resolution * 2 - 1.0
    horizontal = np.repeat(ramp[None, :], resolution, axis=0)
    vertical = np.repeat(ramp[:, None], resolution, axis=1)
    return {
        "none": np.zeros((resolution, resolution)),
        "left": -horizontal,
        "right": horizontal,
        "top": -vertical,
        "bottom": vertical,
    }


def _shape_sdf(shape: str, dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Signed distance (pixels, < 0 inside) of an object of radius `r` (roughly equal areas across shapes)."""
    if shape == "circle":
        return np.sqrt(dx**2 + dy**2) - r
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) - 0.886 * r
    if shape == "diamond":
        return (np.abs(dx) + np.abs(dy)) / math.sqrt(2) - 0.886 * r
    # triangle pointing up, centroid at the centre, circumradius 1.35 r (y grows downwards)
    big = 1.35 * r
    s3 = math.sqrt(3) / 2
    return np.maximum(dy - big / 2, np.maximum(s3 * dx, -s3 * dx) - dy / 2 - big / 2)


def render_shapes(
    codes: np.ndarray, factors: Sequence[ShapeFactor] | None = None, resolution: int = 32, batch_size: int = 1024
) -> np.ndarray:
    r"""
    Renders images from factor class indices (vectorised over the batch).

    Args:
        codes (`np.ndarray`): `(N, num_factors)` integer class indices, column `j` for `factors[j]`.
        factors (`list[ShapeFactor]`, *optional*): The factor specs; default [`default_factors`].
        resolution (`int`, defaults to 32): Image side in pixels (>= 16).
        batch_size (`int`, defaults to 1024): Images rendered at once (bounds memory at large resolutions).

    Returns:
        `np.ndarray`: `(N, resolution, resolution, 3)` uint8 RGB images.
    """
    factors = _check_factors(factors)
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] != len(factors) or not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"`codes` must be an integer array of shape (N, {len(factors)}), got {codes.shape}.")
    for j, f in enumerate(factors):
        if codes.shape[0] and (codes[:, j].min() < 0 or codes[:, j].max() >= f.num_classes):
            raise ValueError(f"`codes[:, {j}]` (factor {f.name!r}) must lie in [0, {f.num_classes}).")
    if not isinstance(resolution, (int, np.integer)) or resolution < 16:
        raise ValueError(f"`resolution` must be an int >= 16, got {resolution!r}.")
    by_kind = {f.kind: (j, f) for j, f in enumerate(factors)}

    def values(kind: str, rows: np.ndarray) -> list[Any]:
        if kind not in by_kind:
            return [_KIND_DEFAULTS[kind]] * len(rows)
        j, f = by_kind[kind]
        return [f.values[c] for c in rows[:, j]]

    patterns = _texture_patterns(resolution)
    tex_amp = by_kind["texture"][1].amplitude if "texture" in by_kind else 0.0
    mark_level = 1.0 - by_kind["mark"][1].amplitude if "mark" in by_kind else 0.0
    mark_size = max(1, resolution // 16)
    spot_amp = by_kind["spot"][1].amplitude if "spot" in by_kind else 0.0
    light_amp = by_kind["lighting"][1].amplitude if "lighting" in by_kind else 0.0
    ramps = _lighting_ramps(resolution)

    def corner(name: str) -> tuple[int, int]:
        top = 1 if name.startswith("top") else resolution - 1 - mark_size
        left = 1 if name.endswith("left") else resolution - 1 - mark_size
        return top, left

    px = np.arange(resolution, dtype=np.float32) + 0.5
    out = np.empty((len(codes), resolution, resolution, 3), dtype=np.uint8)
    for start in range(0, len(codes), batch_size):
        rows = codes[start : start + batch_size]
        n = len(rows)
        bg = np.asarray(values("background", rows), dtype=np.float32)[:, None, None, :]
        fg = np.asarray(values("object_color", rows), dtype=np.float32)[:, None, None, :]
        r = np.asarray(values("scale", rows), dtype=np.float32)[:, None, None] * resolution
        cx = np.asarray(values("position_x", rows), dtype=np.float32)[:, None, None] * resolution
        cy = np.asarray(values("position_y", rows), dtype=np.float32)[:, None, None] * resolution
        dx, dy = px[None, None, :] - cx, px[None, :, None] - cy
        shapes = np.asarray(values("shape", rows))
        sdf = np.empty((n, resolution, resolution), dtype=np.float32)
        for name in np.unique(shapes):
            sel = shapes == name
            sdf[sel] = _shape_sdf(str(name), dx[sel], dy[sel], r[sel])
        cover = np.clip(0.5 - sdf, 0.0, 1.0)[..., None]  # 1-px anti-aliased edge
        textures = values("texture", rows)
        modulation = 1.0 + tex_amp * np.stack([patterns[t] for t in textures]).astype(np.float32)
        img = bg * (1.0 - cover) + np.clip(fg * modulation[..., None], 0.0, 1.0) * cover
        lighting = values("lighting", rows)
        if any(side != "none" for side in lighting):
            img = np.clip(img + light_amp * np.stack([ramps[side] for side in lighting])[..., None], 0.0, 1.0)
        for i, (mark, spot) in enumerate(zip(values("mark", rows), values("spot", rows))):
            if mark != "none":
                top, left = corner(mark)
                img[i, top : top + mark_size, left : left + mark_size, :] = mark_level
            if spot != "none":  # a contrast of exactly spot_amp: brighter, or darker where brighter would clip
                top, left = corner(spot)
                patch = img[i, top : top + mark_size, left : left + mark_size, :]
                patch[...] = np.where(patch + spot_amp <= 1.0, patch + spot_amp, patch - spot_amp)
        out[start : start + n] = np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
    return out


def _png_bytes(image: np.ndarray) -> dict[str, Any]:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return {"bytes": buf.getvalue(), "path": None}


def generate_shapes(
    num_images: int,
    seed: int = 0,
    resolution: int = 32,
    factors: Sequence[ShapeFactor] | None = None,
):
    r"""
    Generates the procedural shapes dataset as a 🤗 `datasets.Dataset`.

    Args:
        num_images (`int`): Number of images.
        seed (`int`, defaults to 0): Seed of the factor values (the dataset is a deterministic function of
            `(num_images, seed, resolution, factors)`; a prefix of a larger dataset equals a smaller one).
        resolution (`int`, defaults to 32): Image side (32 or 64 in the benchmark; any value >= 16 works).
        factors (`list[ShapeFactor]`, *optional*): The factor specs; default [`default_factors`].

    Returns:
        `datasets.Dataset`: column `"image"` (PIL RGB) and one `ClassLabel` column per factor, in `factors` order.
        `dataset.info.description` holds the factor specs as JSON (see [`factors_from_json`]).

    Examples:
    ```py
    >>> from diti_hf.data.shapes import generate_shapes
    >>> ds = generate_shapes(100, seed=0)
    >>> ds.features["shape"].names
    ['circle', 'square', 'triangle']
    ```
    """
    import datasets

    factors = _check_factors(factors)
    codes = sample_factor_codes(num_images, seed, factors)
    images = render_shapes(codes, factors, resolution)
    features = datasets.Features(
        {"image": datasets.Image(), **{f.name: datasets.ClassLabel(names=list(f.class_names)) for f in factors}}
    )
    columns = {"image": [_png_bytes(im) for im in images]}
    columns.update({f.name: codes[:, j].tolist() for j, f in enumerate(factors)})
    info = datasets.DatasetInfo(description=factors_to_json(factors), features=features)
    return datasets.Dataset.from_dict(columns, info=info)


def factor_granularity(
    factors: Sequence[ShapeFactor] | None = None,
    resolution: int = 32,
    num_pairs: int = 512,
    seed: int = 0,
) -> dict[str, float]:
    r"""
    Granularity of every factor: the mean pixel-space L2 distance (pixel values in [0, 1]) between a random base
    image and the same image with only that factor changed to another, uniformly drawn class. Larger = coarser.

    Args:
        factors (`list[ShapeFactor]`, *optional*): The factor specs; default [`default_factors`].
        resolution (`int`, defaults to 32): Image side.
        num_pairs (`int`, defaults to 512): Random base images per factor.
        seed (`int`, defaults to 0): Seed of the base images and of the changed values.

    Returns:
        `dict[str, float]`: factor name → mean L2 distance.
    """
    factors = _check_factors(factors)
    if num_pairs < 1:
        raise ValueError(f"`num_pairs` must be >= 1, got {num_pairs}.")
    rng = np.random.default_rng(seed)
    base = sample_factor_codes(num_pairs, seed, factors)
    base_images = render_shapes(base, factors, resolution).astype(np.float32) / 255.0
    result = {}
    for j, f in enumerate(factors):
        other = base.copy()
        # a uniformly drawn *different* class: shift by 1..n-1 modulo n
        other[:, j] = (base[:, j] + rng.integers(1, f.num_classes, size=num_pairs)) % f.num_classes
        changed = render_shapes(other, factors, resolution).astype(np.float32) / 255.0
        result[f.name] = float(np.sqrt(((changed - base_images) ** 2).sum(axis=(1, 2, 3))).mean())
    return result


def attribute_loss_time(
    distance: float,
    resolution: int = 32,
    error: float = 0.4,
    betas: np.ndarray | None = None,
) -> int:
    r"""
    An analytic, DDPM-free proxy of the paper's "attribute-loss time": the first diffusion time-step `t` at which
    two images whose [0, 1]-pixel L2 distance is `distance` can no longer be told apart from their noisy versions
    `x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε` (images in [-1, 1]) better than with error rate `error` by the Bayes-optimal test,
    whose error is `Φ(-√ᾱ_t · Δ / (2 √(1-ᾱ_t)))` with `Δ = 2 · distance`.

    Args:
        distance (`float`): L2 distance between the two images with pixel values in [0, 1] (as
            [`factor_granularity`] returns).
        resolution (`int`, defaults to 32): Unused by the formula; kept so callers state the image size measured.
        error (`float`, defaults to 0.4): Error rate (< 0.5) that counts as "lost".
        betas (`np.ndarray`, *optional*): Noise schedule; default linear 1e-4 … 0.02 over 1000 steps (docs/method.md §1).

    Returns:
        `int`: The time-step (`T` if the attribute is never lost).
    """
    if not 0.0 < error < 0.5:
        raise ValueError(f"`error` must lie in (0, 0.5), got {error}.")
    if distance < 0:
        raise ValueError(f"`distance` must be >= 0, got {distance}.")
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64) if betas is None else np.asarray(betas, np.float64)
    alpha_bar = np.cumprod(1.0 - betas)
    snr_sqrt = np.sqrt(alpha_bar / (1.0 - alpha_bar))
    margin = snr_sqrt * (2.0 * distance) / 2.0
    errors = 0.5 * np.vectorize(math.erfc)(margin / math.sqrt(2.0))  # Φ(-m)
    lost = np.nonzero(errors >= error)[0]
    return int(lost[0]) if len(lost) else len(betas)
