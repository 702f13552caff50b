"""Image preprocessing for DiTi: one place for crop boxes, resizing, cropping, flipping and scaling to [-1, 1].

Training (`examples/train_*.py`), evaluation and the pipeline's image processor all go through
[`ImageTransform`], so that an image is prepared the same way everywhere. Random augmentation (random crop,
flip) draws from an explicit `numpy.random.Generator`, so that a data position can be replayed exactly when a
run resumes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

# Modes PIL converts to RGB / L without guessing a value range. 16/32-bit integer and float images ("I", "I;16",
# "F", ...) have no fixed white level, so silently converting them would change the data: they are rejected.
SUPPORTED_IMAGE_MODES = ("RGB", "RGBA", "RGBX", "L", "LA", "La", "P", "PA", "1", "CMYK", "YCbCr", "LAB", "HSV")

INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}

CROP_MODES = ("center", "random")


@dataclass(frozen=True)
class CropBox:
    r"""
    A fixed crop `image[top : top + height, left : left + width]`, applied before resizing.

    Args:
        top (`int`): First row.
        left (`int`): First column.
        height (`int`): Rows kept.
        width (`int`): Columns kept.
    """

    top: int
    left: int
    height: int
    width: int

    def __post_init__(self) -> None:
        for name in ("top", "left"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"crop box `{name}` must be >= 0, got {getattr(self, name)}.")
        for name in ("height", "width"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"crop box `{name}` must be >= 1, got {getattr(self, name)}.")

    def apply(self, image: Image.Image) -> Image.Image:
        """Crops `image`; raises `ValueError` if the box does not lie inside it."""
        w, h = image.size
        if self.top + self.height > h or self.left + self.width > w:
            raise ValueError(
                f"crop box (top={self.top}, left={self.left}, height={self.height}, width={self.width}) does not fit "
                f"in an image of height {h} and width {w}."
            )
        return image.crop((self.left, self.top, self.left + self.width, self.top + self.height))


# Named preprocessing recipes. "celeba64": the official CelebA-64 protocol — crop top=57, left=25, 128×128 of the
# aligned 178×218 CelebA image, then resize to 64×64 (docs/method.md §9).
TRANSFORM_PRESETS: dict[str, dict[str, Any]] = {
    "celeba64": {"resolution": 64, "crop_box": CropBox(top=57, left=25, height=128, width=128)},
}


def check_image_mode(image: Any, what: str = "image") -> Image.Image:
    """Returns `image` if it is a PIL image of a supported mode; raises `TypeError`/`ValueError` naming `what`."""
    if not isinstance(image, Image.Image):
        raise TypeError(f"{what} must be a PIL image, got {type(image).__name__}.")
    if image.mode not in SUPPORTED_IMAGE_MODES:
        raise ValueError(
            f"{what} has mode {image.mode!r}; expected an 8-bit image, one of {SUPPORTED_IMAGE_MODES} "
            "(convert 16-bit/float images to 8-bit yourself: their white level is not defined)."
        )
    return image


def has_transparency(image: Image.Image) -> bool:
    """Whether [`convert_channels`] composites `image` on white (it has an alpha channel or a transparent colour)."""
    return image.mode in ("RGBA", "LA", "La", "PA") or (image.mode == "P" and "transparency" in image.info)


def convert_channels(image: Image.Image, num_channels: int) -> Image.Image:
    """Converts a supported-mode image to RGB (`num_channels=3`) or L (1), compositing transparency on white."""
    if num_channels not in (1, 3):
        raise ValueError(f"`num_channels` must be 1 or 3, got {num_channels}.")
    if has_transparency(image):
        # Transparent pixels have arbitrary colour underneath; white is the usual rendering of "nothing".
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB" if num_channels == 3 else "L")


@dataclass
class ImageTransform:
    r"""
    PIL image → float tensor `(C, resolution, resolution)` in [-1, 1].

    Steps: check the mode → convert to RGB (or L) → fixed `crop_box` (if any) → resize the shorter side to
    `resolution` → centre or random square crop → optional random horizontal flip → scale to [-1, 1].

    Args:
        resolution (`int`): Output height and width.
        crop (`str`, defaults to `"center"`): `"center"` or `"random"` (the square crop after resizing).
        crop_box ([`CropBox`], *optional*): A fixed crop applied first (e.g. the CelebA-64 box).
        random_flip (`bool`, defaults to `False`): Flip horizontally with probability 1/2.
        num_channels (`int`, defaults to 3): 3 (RGB) or 1 (grayscale).
        interpolation (`str`, defaults to `"bilinear"`): One of `INTERPOLATIONS` (PIL filters; antialiased when
            shrinking).

    Examples:
    ```py
    >>> from PIL import Image
    >>> from diti_hf.data import ImageTransform
    >>> transform = ImageTransform.from_preset("celeba64")
    >>> transform(Image.new("RGB", (178, 218))).shape
    torch.Size([3, 64, 64])
    ```
    """

    resolution: int
    crop: str = "center"
    crop_box: CropBox | None = None
    random_flip: bool = False
    num_channels: int = 3
    interpolation: str = "bilinear"
    _filter: Image.Resampling = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.resolution, int) or self.resolution < 1:
            raise ValueError(f"`resolution` must be a positive integer, got {self.resolution!r}.")
        if self.crop not in CROP_MODES:
            raise ValueError(f"`crop` must be one of {CROP_MODES}, got {self.crop!r}.")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"`interpolation` must be one of {sorted(INTERPOLATIONS)}, got {self.interpolation!r}.")
        if self.num_channels not in (1, 3):
            raise ValueError(f"`num_channels` must be 1 or 3, got {self.num_channels}.")
        if isinstance(self.crop_box, (tuple, list)):
            self.crop_box = CropBox(*self.crop_box)
        self._filter = INTERPOLATIONS[self.interpolation]

    @classmethod
    def from_preset(cls, name: str, **kwargs: Any) -> ImageTransform:
        """The transform of a named recipe (`TRANSFORM_PRESETS`, e.g. `"celeba64"`); `kwargs` override fields."""
        if name not in TRANSFORM_PRESETS:
            raise ValueError(f"Unknown transform preset {name!r}; expected one of {sorted(TRANSFORM_PRESETS)}.")
        return cls(**{**TRANSFORM_PRESETS[name], **kwargs})

    @property
    def is_random(self) -> bool:
        """Whether the output depends on the random generator."""
        return self.random_flip or self.crop == "random"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (for configs and logs)."""
        out = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        out["crop_box"] = None if self.crop_box is None else asdict(self.crop_box)
        return out

    def deterministic(self) -> ImageTransform:
        """The same transform without random augmentation (centre crop, no flip), e.g. for validation images."""
        return ImageTransform(self.resolution, "center", self.crop_box, False, self.num_channels, self.interpolation)

    def resize_and_crop(self, image: Image.Image, rng: np.random.Generator | None = None) -> Image.Image:
        """The geometric part of the transform on a PIL image (mode already converted)."""
        if self.crop_box is not None:
            image = self.crop_box.apply(image)
        w, h = image.size
        if min(w, h) < 1:
            raise ValueError(f"the image has no pixels (width {w}, height {h}).")
        scale = self.resolution / min(w, h)
        # Round the longer side, but never below the crop size.
        new_w, new_h = max(self.resolution, round(w * scale)), max(self.resolution, round(h * scale))
        if (new_w, new_h) != (w, h):
            image = image.resize((new_w, new_h), self._filter)
        if self.crop == "random":
            rng = rng if rng is not None else np.random.default_rng()
            left = int(rng.integers(0, new_w - self.resolution + 1))
            top = int(rng.integers(0, new_h - self.resolution + 1))
        else:
            left, top = (new_w - self.resolution) // 2, (new_h - self.resolution) // 2
        if (new_w, new_h) != (self.resolution, self.resolution):
            image = image.crop((left, top, left + self.resolution, top + self.resolution))
        return image

    def __call__(self, image: Image.Image, rng: np.random.Generator | None = None) -> torch.Tensor:
        r"""
        Args:
            image (`PIL.Image.Image`): The input image.
            rng (`numpy.random.Generator`, *optional*): Source of the random crop offset and flip; a fresh,
                unseeded generator if absent (not reproducible).

        Returns:
            `torch.Tensor`: `(num_channels, resolution, resolution)` float32 in [-1, 1].
        """
        image = convert_channels(check_image_mode(image), self.num_channels)
        if self.is_random and rng is None:
            rng = np.random.default_rng()
        image = self.resize_and_crop(image, rng)
        array = np.asarray(image, dtype=np.float32)
        if self.random_flip and rng.random() < 0.5:
            array = array[:, ::-1]
        array = array.reshape(self.resolution, self.resolution, -1).transpose(2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(array)) / 127.5 - 1.0


def tensor_to_pil(images: torch.Tensor) -> list[Image.Image]:
    """`(B, C, H, W)` tensors in [-1, 1] → PIL images (RGB or L), rounding to 8 bits."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"`images` must have shape (B, 1 or 3, H, W), got {tuple(images.shape)}.")
    arrays = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    arrays = arrays.permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in arrays]
