"""`DiTiPipeline` and its parts.

The public names load on first use (PEP 562), so that `diti_hf.pipelines.checks`, which `diti_hf.hub` imports, loads
without `pipeline_diti`, which imports `diti_hf.hub`. diffusers finds `DiTiPipeline` through `import diti_hf`, which
answers `getattr(diffusers, "DiTiPipeline")` (how `DiffusionPipeline.from_pretrained` resolves `_class_name`).
"""

from __future__ import annotations

import importlib
from typing import Any

# public name → the submodule that defines it
_LAZY = {
    "DiTiImageProcessor": "image_processing_diti",
    "DiTiInversionOutput": "outputs",
    "DiTiPipeline": "pipeline_diti",
    "DiTiPipelineOutput": "outputs",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
