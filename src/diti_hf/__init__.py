"""diti_hf: DiTi (ICLR 2024) time-step-modular representations from a frozen diffusion model, Hugging Face native.

The public names load on first use (PEP 562), so that `import diti_hf` and the `diti-hf` command line start without
torch and diffusers (about 4 s on a small CPU). `import diti_hf` still makes the two generic loaders work, at once if
their library is imported already, else as soon as it is:

- diffusers' `DiffusionPipeline.from_pretrained` resolves `_class_name` of `model_index.json` with
  `getattr(diffusers, "DiTiPipeline")`, answered here;
- transformers' `AutoConfig`, `AutoModel` and `pipeline` find the encoder's `model_type` once `diti_hf.models` has
  registered it, which it does when one of them is first taken from transformers.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType
from typing import Any

from ._lazy import lazy_exports

__version__ = "0.1.0"

# public name → the submodule that defines it
_LAZY = {
    "DenoiseOutput": "models",
    "DiTiDecoderModel": "models",
    "DiTiDecoderOutput": "models",
    "DiTiEncoderModel": "models",
    "DiTiEncoderOutput": "models",
    "UNetFeatures": "models",
    "denoise": "models",
    "unet_down": "models",
    "unet_up": "models",
    "DiffusionCoefficients": "sampling",
    "DiTiImageProcessor": "pipelines",
    "DiTiInversionOutput": "pipelines",
    "DiTiPipeline": "pipelines",
    "DiTiPipelineOutput": "pipelines",
    "TimestepPartition": "partition",
    "reuse_freed_memory": "cpu_memory",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


def _answer_diffusers(diffusers: ModuleType) -> None:
    """Gives `diffusers` a module `__getattr__` (PEP 562) that imports `DiTiPipeline` when diffusers asks for it.

    It is consulted before diffusers' own lazy lookup, and passes every other name on to it.
    """
    previous = diffusers.__dict__.get("__getattr__")

    def answer(name: str) -> Any:
        if name == "DiTiPipeline":
            from .pipelines import DiTiPipeline

            setattr(diffusers, name, DiTiPipeline)
            return DiTiPipeline
        if previous is not None:
            return previous(name)
        raise AttributeError(name)

    diffusers.__getattr__ = answer


def _answer_transformers(transformers: ModuleType) -> None:
    """Gives `transformers` a module `__getattr__` (PEP 562) that registers the encoder with the Auto classes
    ([`~diti_hf.models.transformers_encoder`]) before the first of them is handed out."""
    auto = ("AutoConfig", "AutoModel", "pipeline")
    if any(name in transformers.__dict__ for name in auto):  # handed out already: register now
        importlib.import_module(f"{__name__}.models")
        return
    previous = transformers.__dict__.get("__getattr__")

    def answer(name: str) -> Any:
        if name in auto:
            importlib.import_module(f"{__name__}.models")  # registers on import; a no-op once imported
        if previous is not None:
            return previous(name)
        raise AttributeError(name)  # transformers' own lazy lookup answers next

    transformers.__getattr__ = answer


# library → what to give it once imported
_ANSWERS = {"diffusers": _answer_diffusers, "transformers": _answer_transformers}


class _ImportHook(importlib.abc.MetaPathFinder):
    """Waits for the first import of each library of `_ANSWERS`, lets it run, then gives it its answer."""

    def __init__(self, names: set[str]) -> None:
        self.names = names

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in self.names:
            return None
        self.names.discard(fullname)
        if not self.names:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)  # the real spec: this finder no longer answers for `fullname`
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_answer(module: ModuleType) -> None:
            exec_module(module)
            _ANSWERS[fullname](sys.modules[fullname])  # both libraries put a lazy module there in place of `module`

        spec.loader.exec_module = exec_and_answer  # this spec's own loader instance: nothing else sees the change
        return spec


if not any(isinstance(finder, _ImportHook) for finder in sys.meta_path):  # a reload answers once
    for _name in [name for name in _ANSWERS if name in sys.modules]:
        _ANSWERS[_name](sys.modules[_name])
    _waiting = {name for name in _ANSWERS if name not in sys.modules}
    if _waiting:
        sys.meta_path.insert(0, _ImportHook(_waiting))
