"""diti_hf: DiTi (ICLR 2024) time-step-modular representations from a frozen diffusion model, Hugging Face native."""

from .cpu_memory import reuse_freed_memory
from .models import (
    DenoiseOutput,
    DiTiDecoderModel,
    DiTiDecoderOutput,
    DiTiEncoderModel,
    DiTiEncoderOutput,
    UNetFeatures,
    denoise,
    unet_down,
    unet_up,
)
from .partition import TimestepPartition
from .pipelines import DiTiImageProcessor, DiTiInversionOutput, DiTiPipeline, DiTiPipelineOutput
from .schedule import DiffusionCoefficients

__version__ = "0.1.0"

__all__ = [
    "DenoiseOutput",
    "DiTiDecoderModel",
    "DiTiDecoderOutput",
    "DiTiEncoderModel",
    "DiTiEncoderOutput",
    "DiffusionCoefficients",
    "DiTiImageProcessor",
    "DiTiInversionOutput",
    "DiTiPipeline",
    "DiTiPipelineOutput",
    "TimestepPartition",
    "UNetFeatures",
    "denoise",
    "reuse_freed_memory",
    "unet_down",
    "unet_up",
]
