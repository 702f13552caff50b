"""The package's own warning categories, for filtering by category (`warnings.simplefilter("ignore", category)`).

They live apart from the modules that raise them so that they import without torch: the `diti-hf` command line,
which must start without torch, filters those its commands say in terms of their own flags.
"""

from __future__ import annotations


class ChunkWideningWarning(UserWarning):
    """A time-step range was widened to the whole chunks it meets: `z` is edited chunk by chunk."""


class ImageResizeWarning(UserWarning):
    """Images were resized and cropped to the model's size by the pipeline's preprocessing."""


__all__ = ["ChunkWideningWarning", "ImageResizeWarning"]
