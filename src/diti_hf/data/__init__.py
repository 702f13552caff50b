"""Data for DiTi: the image decoder, 🤗 datasets loading (Hub name, imagefolder, streaming), preprocessing, the procedural shapes."""

from .images import BadImageError, decode_image, has_transparency, image_label, open_image
from .loading import (
    DataPosition,
    EpochBatchSampler,
    ImageDataset,
    StreamingImageDataset,
    TrainingImages,
    load_image_dataset,
    resolve_image_column,
    validation_batch,
)
from .shapes import SHAPES_DATASET_NAME, generate_shapes
from .transforms import (
    INTERPOLATIONS,
    SUPPORTED_IMAGE_MODES,
    TRANSFORM_PRESETS,
    CropBox,
    ImageTransform,
    check_image_mode,
    convert_channels,
    tensor_to_pil,
)

__all__ = [
    "INTERPOLATIONS",
    "SHAPES_DATASET_NAME",
    "SUPPORTED_IMAGE_MODES",
    "TRANSFORM_PRESETS",
    "BadImageError",
    "CropBox",
    "DataPosition",
    "EpochBatchSampler",
    "ImageDataset",
    "ImageTransform",
    "StreamingImageDataset",
    "TrainingImages",
    "check_image_mode",
    "convert_channels",
    "decode_image",
    "generate_shapes",
    "has_transparency",
    "image_label",
    "load_image_dataset",
    "open_image",
    "resolve_image_column",
    "tensor_to_pil",
    "validation_batch",
]
