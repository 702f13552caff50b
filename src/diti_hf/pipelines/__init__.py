import diffusers

from .image_processing_diti import DiTiImageProcessor
from .pipeline_diti import DiTiInversionOutput, DiTiPipeline, DiTiPipelineOutput

# `DiffusionPipeline.from_pretrained` resolves `_class_name` from model_index.json in the diffusers namespace.
if not hasattr(diffusers, "DiTiPipeline"):
    diffusers.DiTiPipeline = DiTiPipeline

__all__ = ["DiTiImageProcessor", "DiTiInversionOutput", "DiTiPipeline", "DiTiPipelineOutput"]
