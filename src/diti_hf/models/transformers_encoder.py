"""The DiTi encoder through 🤗 transformers: `AutoModel.from_pretrained(folder, subfolder="encoder")` and
`pipeline("image-feature-extraction", ...)`, as the model card's `pipeline_tag` promises.

[`DiTiEncoderTransformersModel`] is a thin `PreTrainedModel` around a [`DiTiEncoderModel`]: it reads the same encoder
folder (the diffusers `config.json`, whose `model_type` key points transformers here, and the safetensors weights)
through `DiTiEncoderModel.from_pretrained`, so there is one implementation, one copy of the weights and the same
strict loading. Importing `diti_hf` registers both classes with transformers' `AutoConfig` and `AutoModel`; nothing
is loaded as remote code.
"""

from __future__ import annotations

import inspect
import json
import os
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from ..config_bounds import check_config_bounds
from ..partition import TimestepPartition
from ..safe_io import short_repr
from .encoder import TRANSFORMERS_MODEL_TYPE, DiTiEncoderModel

# `from_pretrained` arguments handed on to diffusers' loader (where to find the folder), and those transformers'
# Auto classes and pipelines pass along that mean nothing here (`trust_remote_code` included: the class is
# registered by `import diti_hf`, and no code from a folder is ever run).
_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "proxies", "revision", "token")
_IGNORED_KWARGS = (
    "_from_auto",
    "_from_pipeline",
    "_commit_hash",
    "adapter_kwargs",
    "code_revision",
    "trust_remote_code",
)


def _encoder_init_keys() -> list[str]:
    return [name for name in inspect.signature(DiTiEncoderModel.__init__).parameters if name != "self"]


def _as_json(value: Any) -> Any:
    """Tuples as lists, as they come back from config.json."""
    return json.loads(json.dumps(value))


class DiTiEncoderConfig(PretrainedConfig):
    r"""
    The transformers view of a DiTi encoder's `config.json`.

    It declares no fields of its own: the keys of the [`DiTiEncoderModel`] config (`sample_size`, `latent_dim`,
    `num_chunks`, ...) are kept as attributes, so `DiTiEncoderModel`'s signature stays the only definition of the
    architecture and of its defaults.

    Examples:
    ```py
    >>> import diti_hf  # registers "diti_encoder" with transformers
    >>> from transformers import AutoConfig
    >>> config = AutoConfig.from_pretrained("path/to/pipeline", subfolder="encoder")
    >>> config.model_type, config.latent_dim
    ('diti_encoder', 512)
    ```
    """

    model_type = TRANSFORMERS_MODEL_TYPE

    @classmethod
    def from_encoder(cls, encoder: DiTiEncoderModel) -> DiTiEncoderConfig:
        """The config of an in-memory [`DiTiEncoderModel`]."""
        config = cls(**{key: encoder.config[key] for key in _encoder_init_keys() if key in encoder.config})
        config._name_or_path = str(encoder.config.get("_name_or_path", ""))
        return config

    def encoder_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of [`DiTiEncoderModel`] recorded in this config (absent ones take its defaults)."""
        return {key: getattr(self, key) for key in _encoder_init_keys() if hasattr(self, key)}


@dataclass
class DiTiEncoderTransformersOutput(ModelOutput):
    """
    Args:
        z (`torch.Tensor`): The representation, `(B, latent_dim)`; `output[0]`, which the `image-feature-extraction`
            pipeline returns.
        pooler_output (`torch.Tensor`): The same tensor as `z`, for `pipeline(..., pool=True)`: `z` is already one
            vector per image.
    """

    z: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None


class DiTiEncoderTransformersModel(PreTrainedModel):
    r"""
    A transformers `PreTrainedModel` holding a [`DiTiEncoderModel`] (`self.encoder`): images `pixel_values`
    `(B, C, sample_size, sample_size)` in [−1, 1] (as [`DiTiImageProcessor`] makes them) → `z`.

    `from_pretrained` loads the encoder folder of a DiTi pipeline with `DiTiEncoderModel.from_pretrained`: safetensors
    weights only, every key present and finite, sizes bounded; `save_pretrained` writes that same diffusers folder.

    Examples:
    ```py
    >>> import diti_hf  # registers the encoder with transformers' Auto classes
    >>> from transformers import AutoModel, pipeline
    >>> model = AutoModel.from_pretrained("path/to/pipeline", subfolder="encoder")
    >>> model(pixel_values=images).z.shape
    torch.Size([4, 512])
    >>> processor = diti_hf.DiTiImageProcessor.from_pretrained("path/to/pipeline", subfolder="image_processor")
    >>> extractor = pipeline("image-feature-extraction", model=model, image_processor=processor)
    >>> z = extractor(pil_image, return_tensors=True)  # (1, 512)
    ```
    """

    config_class = DiTiEncoderConfig
    base_model_prefix = "encoder"
    main_input_name = "pixel_values"

    def __init__(self, config: DiTiEncoderConfig, encoder: DiTiEncoderModel | None = None):
        super().__init__(config)
        self.encoder = encoder if encoder is not None else DiTiEncoderModel(**config.encoder_kwargs())
        self.post_init()

    def _init_weights(self, module: torch.nn.Module) -> None:
        # `DiTiEncoderModel` initialises itself (zero attention outputs); loaded weights must not be touched.
        pass

    @classmethod
    def from_encoder(cls, encoder: DiTiEncoderModel) -> DiTiEncoderTransformersModel:
        """Wraps an in-memory encoder (e.g. `pipe.encoder`), sharing its weights."""
        if not isinstance(encoder, DiTiEncoderModel):
            raise TypeError(f"`encoder` must be a DiTiEncoderModel, got {type(encoder).__name__}.")
        return cls(DiTiEncoderConfig.from_encoder(encoder), encoder=encoder)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *model_args: Any,
        config: DiTiEncoderConfig | None = None,
        subfolder: str = "",
        dtype: str | torch.dtype | None = None,
        torch_dtype: str | torch.dtype | None = None,
        use_safetensors: bool | None = None,
        **kwargs: Any,
    ) -> DiTiEncoderTransformersModel:
        r"""
        Loads a DiTi encoder folder (the `encoder` sub-folder of a pipeline) with [`DiTiEncoderModel`]'s strict
        loader.

        Args:
            pretrained_model_name_or_path (`str` or `os.PathLike`): A local folder or a Hub repo id.
            config ([`DiTiEncoderConfig`], *optional*): Passed by `AutoModel`; it must describe the folder's encoder.
            subfolder (`str`, *optional*): E.g. `"encoder"` for a pipeline folder.
            dtype (`str` or `torch.dtype`, *optional*): Load the weights in this dtype; `None` or `"auto"` keep the
                saved one. `torch_dtype` is the older name.
            use_safetensors (`bool`, *optional*): Only safetensors weights are read; `False` is refused.
            kwargs: `cache_dir`, `force_download`, `local_files_only`, `proxies`, `revision`, `token`.
        """
        if model_args:
            raise TypeError(f"{cls.__name__}.from_pretrained takes no positional arguments after the path.")
        if use_safetensors is False:
            raise ValueError("DiTi encoders are loaded from safetensors weights only; drop `use_safetensors=False`.")
        hub_kwargs = {key: kwargs.pop(key) for key in _HUB_KWARGS if kwargs.get(key) is not None}
        for key in (*_IGNORED_KWARGS, *_HUB_KWARGS):
            kwargs.pop(key, None)
        unsupported = sorted(key for key, value in kwargs.items() if value is not None)
        if unsupported:
            raise TypeError(f"{cls.__name__}.from_pretrained does not support {unsupported}.")
        dtype = dtype if dtype is not None else torch_dtype
        if isinstance(dtype, str) and dtype != "auto":
            if not isinstance(getattr(torch, dtype, None), torch.dtype):
                raise ValueError(f"`dtype`={short_repr(dtype)} is not a torch dtype.")
            dtype = getattr(torch, dtype)
        where = os.fspath(pretrained_model_name_or_path) + (f" (subfolder {subfolder!r})" if subfolder else "")
        # sizes from a file are bounded before anything is allocated, as for a whole pipeline
        saved = DiTiEncoderModel.load_config(pretrained_model_name_or_path, subfolder=subfolder or None, **hub_kwargs)
        check_config_bounds(saved, f"the encoder config at {where}")
        encoder = DiTiEncoderModel.from_pretrained(
            pretrained_model_name_or_path,
            subfolder=subfolder or None,
            use_safetensors=True,
            **({"torch_dtype": dtype} if isinstance(dtype, torch.dtype) else {}),
            **hub_kwargs,
        )
        loaded = DiTiEncoderConfig.from_encoder(encoder)
        if config is not None:
            differs = {
                key: value
                for key, value in config.encoder_kwargs().items()
                if _as_json(value) != _as_json(loaded.encoder_kwargs().get(key))
            }
            if differs:
                raise ValueError(
                    f"`config` does not describe the encoder at {where}: it differs in {sorted(differs)}."
                )
        loaded._name_or_path = os.fspath(pretrained_model_name_or_path)
        return cls(loaded, encoder=encoder.eval()).eval()

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:
        r"""
        Writes the encoder folder as [`DiTiEncoderModel.save_pretrained`] does (diffusers config.json with its
        `model_type`, safetensors weights), which both diffusers and transformers load.
        """
        if kwargs.pop("safe_serialization", True) is False:
            raise ValueError("DiTi encoders are saved as safetensors only; drop `safe_serialization=False`.")
        self.encoder.save_pretrained(save_directory, safe_serialization=True, **kwargs)

    @property
    def partition(self) -> TimestepPartition:
        """The time-step partition of `z` (which dims belong to which time-steps)."""
        return self.encoder.partition

    def forward(
        self, pixel_values: torch.Tensor, return_dict: bool | None = None
    ) -> DiTiEncoderTransformersOutput | tuple[torch.Tensor]:
        r"""
        Args:
            pixel_values (`torch.Tensor`): `(B, in_channels, sample_size, sample_size)` in [−1, 1].
            return_dict (`bool`, *optional*): Return a [`DiTiEncoderTransformersOutput`] (the default) or `(z,)`.

        Returns:
            [`DiTiEncoderTransformersOutput`] or `tuple`: `z` of shape `(B, latent_dim)`.
        """
        z = self.encoder(pixel_values).z
        return_dict = return_dict if return_dict is not None else getattr(self.config, "return_dict", True)
        return DiTiEncoderTransformersOutput(z=z, pooler_output=z) if return_dict else (z,)


AutoConfig.register(TRANSFORMERS_MODEL_TYPE, DiTiEncoderConfig, exist_ok=True)
AutoModel.register(DiTiEncoderConfig, DiTiEncoderTransformersModel, exist_ok=True)

__all__ = ["DiTiEncoderConfig", "DiTiEncoderTransformersModel", "DiTiEncoderTransformersOutput"]
