"""What `DiTiPipeline`'s methods accept and return: argument checks with one-line errors naming the argument, and the
conversion of images to a pixel batch in [−1, 1] and back to PIL, numpy or torch."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers.utils import numpy_to_pil

from ..warning_types import ImageResizeWarning
from .image_processing_diti import DiTiImageProcessor

OUTPUT_TYPES = ("pil", "np", "pt")
ImageInput = torch.Tensor | np.ndarray | PIL.Image.Image | Sequence[PIL.Image.Image] | Sequence[np.ndarray]

# The warnings below are raised for `DiTiPipeline.preprocess`, which calls these helpers: its own level plus one.
_STACKLEVEL = 4


def check_output_type(output_type: str) -> None:
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}.")


def check_finite(tensor: torch.Tensor, name: str) -> None:
    # NaN or inf would run through every step into black images without an error
    finite = torch.isfinite(tensor)
    if not bool(finite.all()):
        raise ValueError(f"`{name}` contains {int((~finite).sum())} NaN or infinite values.")


def check_same_batch(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"`{name_a}` has {a.shape[0]} images but `{name_b}` has {b.shape[0]}; pass the same number.")


def check_z(z: Any, latent_dim: int, batch: int | None = None) -> None:
    """Raises unless `z` is a finite floating-point `(batch, latent_dim)` tensor (any batch when `batch` is None)."""
    if not isinstance(z, torch.Tensor) or not z.is_floating_point():
        raise TypeError(f"`z` must be a floating-point tensor of shape (B, {latent_dim}), got {type(z).__name__}.")
    if z.ndim != 2 or z.shape[1] != latent_dim or (batch is not None and z.shape[0] != batch):
        expected = f"({batch if batch is not None else 'B'}, {latent_dim})"
        raise ValueError(f"`z` must have shape {expected}, got {tuple(z.shape)}.")
    check_finite(z, "z")


def check_timestep(timestep: Any, name: str, num_train_timesteps: int) -> int:
    """`timestep` as an `int` in `[0, num_train_timesteps)`, or a `ValueError` naming the argument `name`."""
    T = num_train_timesteps
    if isinstance(timestep, bool) or not isinstance(timestep, (int, np.integer)) or not 0 <= timestep < T:
        raise ValueError(f"`{name}` must be an int in [0, {T}), got {timestep!r}.")
    return int(timestep)


def check_latents(latents: torch.Tensor, shape: tuple[int, ...]) -> None:
    if tuple(latents.shape) != shape:
        raise ValueError(f"`latents` must have shape {shape}, got {tuple(latents.shape)}.")
    check_finite(latents, "latents")


def check_image_tensor(images: torch.Tensor) -> torch.Tensor:
    """A `(B, C, H, W)` or `(C, H, W)` tensor as a batch, refusing values outside [−1, 1] and warning about [0, 1]."""
    tensor = images[None] if images.ndim == 3 else images
    if tensor.is_floating_point() and tensor.numel():
        check_finite(tensor, "images")
        lo, hi = float(tensor.min()), float(tensor.max())
        if lo < -1.001 or hi > 1.001:
            raise ValueError(
                f"`images` tensors must be in [-1, 1], got values in [{lo:.3g}, {hi:.3g}] "
                "(for images in [0, 1] pass `images * 2 - 1`)."
            )
        if lo >= 0.0 and hi > 0.0:
            warnings.warn(
                f"`images` has no negative value (range [{lo:.3g}, {hi:.3g}]): the pipeline reads tensors as "
                "[-1, 1]; for images in [0, 1] pass `images * 2 - 1`.",
                stacklevel=_STACKLEVEL,
            )
    return tensor


def image_list(images: Any) -> list[PIL.Image.Image | np.ndarray]:
    """PIL images or numpy arrays (one, a `(B, H, W, C)` array, or any sequence of them) as a non-empty list."""
    if isinstance(images, (PIL.Image.Image, np.ndarray)):
        images = [images] if not (isinstance(images, np.ndarray) and images.ndim == 4) else list(images)
    elif isinstance(images, Sequence) and not isinstance(images, (str, bytes, list, tuple)):
        images = list(images)  # e.g. a 🤗 datasets column of PIL images
    if not isinstance(images, (list, tuple)) or not images:
        raise TypeError(
            "`images` must be a tensor, a numpy array, a PIL image or a non-empty list of them, got "
            f"{type(images).__name__}."
        )
    return list(images)


def process_images(
    images: list[PIL.Image.Image | np.ndarray], processor: DiTiImageProcessor, size: int
) -> torch.Tensor:
    """`processor`'s pixel batch of `images`, warning with an [`ImageResizeWarning`] when PIL images are resized."""
    resized = {im.size for im in images if isinstance(im, PIL.Image.Image) and im.size != (size, size)}
    if resized:
        warnings.warn(
            f"`images` of size {sorted(resized)} (width, height) are resized and cropped to {size}×{size}.",
            ImageResizeWarning,
            stacklevel=_STACKLEVEL,
        )
    return processor(images, return_tensors="pt")["pixel_values"]


def format_images(images: torch.Tensor, output_type: str) -> list[PIL.Image.Image] | np.ndarray | torch.Tensor:
    """A batch `(B, C, H, W)` in [0, 1] as `output_type`: itself, numpy `(B, H, W, C)` or PIL images."""
    if output_type == "pt":
        return images
    array = images.cpu().permute(0, 2, 3, 1).float().numpy()
    return numpy_to_pil(array) if output_type == "pil" else array


__all__ = [
    "OUTPUT_TYPES",
    "ImageInput",
    "check_finite",
    "check_image_tensor",
    "check_latents",
    "check_output_type",
    "check_same_batch",
    "check_timestep",
    "check_z",
    "format_images",
    "image_list",
    "process_images",
]
