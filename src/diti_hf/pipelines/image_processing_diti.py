"""`DiTiImageProcessor`: a model's own preprocessing (crop box, resize, [−1, 1]), saved with its pipeline."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import PIL.Image
import torch
from transformers import ImageProcessingMixin  # noqa: F401  (diffusers' loader looks this base up by name here)
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

from ..data.transforms import TRANSFORM_PRESETS, CropBox, ImageTransform


class DiTiImageProcessor(BaseImageProcessor):
    r"""
    Turns PIL images (or uint8/float numpy arrays) into `pixel_values` in [−1, 1] exactly as the model was trained:
    an optional fixed crop box, resize of the shorter side to `resolution`, centre crop, RGB.

    Saved in the pipeline folder (`image_processor/preprocessor_config.json`), so `DiTiPipeline.encode` prepares raw
    images the right way. The CelebA-64 protocol (crop top=57, left=25, 128×128, resize 64) is
    `DiTiImageProcessor.from_preset("celeba64")`.

    Args:
        resolution (`int`, defaults to 64): Output height and width.
        crop_box (`list[int]`, *optional*): `[top, left, height, width]` cropped before resizing.
        interpolation (`str`, defaults to `"bilinear"`): PIL resampling filter name.
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        resolution: int = 64,
        crop_box: Sequence[int] | None = None,
        interpolation: str = "bilinear",
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.resolution = int(resolution)
        self.crop_box = None if crop_box is None else [int(v) for v in crop_box]
        self.interpolation = interpolation
        self.transform = ImageTransform(
            resolution=self.resolution,
            crop_box=None if crop_box is None else CropBox(*self.crop_box),
            interpolation=interpolation,
        )

    @classmethod
    def from_preset(cls, name: str) -> DiTiImageProcessor:
        """The processor of a named recipe of `diti_hf.data.TRANSFORM_PRESETS` (e.g. `"celeba64"`)."""
        transform = ImageTransform.from_preset(name)
        box = transform.crop_box
        return cls(
            resolution=transform.resolution,
            crop_box=None if box is None else [box.top, box.left, box.height, box.width],
            interpolation=transform.interpolation,
        )

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.pop("transform", None)  # rebuilt from the fields above
        return out

    def preprocess(self, images: Any, return_tensors: str | None = "pt", **kwargs: Any) -> BatchFeature:
        r"""
        Args:
            images: A PIL image, an `(H, W, C)` numpy array (uint8, or float in [0, 1]), or a list of them.
            return_tensors (`str`, defaults to `"pt"`): `"pt"` or `"np"`.

        Returns:
            `BatchFeature` with `pixel_values` `(B, C, resolution, resolution)` in [−1, 1].
        """
        if not isinstance(images, (list, tuple)):
            images = [images]
        if not images:
            raise ValueError("`images` is an empty list.")
        pixels = torch.stack([self.transform(to_pil(image, f"images[{i}]")) for i, image in enumerate(images)])
        return BatchFeature({"pixel_values": pixels if return_tensors == "pt" else pixels.numpy()})


def to_pil(image: Any, what: str = "image") -> PIL.Image.Image:
    """A PIL image, or an `(H, W, C)` numpy array (uint8 or float in [0, 1], C in 1/3/4) as a PIL image."""
    if isinstance(image, PIL.Image.Image):
        return image
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{what} must be a PIL image or a numpy array, got {type(image).__name__}.")
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{what} must be an (H, W, C) array with C in (1, 3, 4), got shape {image.shape}.")
    if image.dtype != np.uint8:
        if not np.issubdtype(image.dtype, np.floating):
            raise TypeError(f"{what} must be uint8 in [0, 255] or float in [0, 1], got dtype {image.dtype}.")
        if not np.isfinite(image).all() or image.min() < 0 or image.max() > 1:
            raise ValueError(f"{what}: float arrays must be finite and in [0, 1].")
        image = (image * 255).round().astype(np.uint8)
    return PIL.Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


__all__ = ["TRANSFORM_PRESETS", "DiTiImageProcessor", "to_pil"]
