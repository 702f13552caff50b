"""`DiTiPipeline` and its parts.

The public names load on first use (PEP 562), so that `diti_hf.pipelines.checks`, which `diti_hf.hub` imports, loads
without `pipeline_diti`, which imports `diti_hf.hub`. diffusers finds `DiTiPipeline` through `import diti_hf`, which
answers `getattr(diffusers, "DiTiPipeline")` (how `DiffusionPipeline.from_pretrained` resolves `_class_name`).
"""

from __future__ import annotations

from .._lazy import lazy_exports

# public name → the submodule that defines it
_LAZY = {
    "DiTiImageProcessor": "image_processing_diti",
    "DiTiInversionOutput": "outputs",
    "DiTiPipeline": "pipeline_diti",
    "DiTiPipelineOutput": "outputs",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
