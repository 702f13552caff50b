"""What `DiTiPipeline` checks before it loads or runs anything: the component classes and configs of a pipeline folder
(read with size limits, before diffusers builds a model or a scheduler from them), the cross-consistency of the
components, and the sampling grid.

A pipeline folder may come from anyone. Its JSON files are small, but the numbers in them decide how much memory
and time everything after costs (a scheduler allocates `num_train_timesteps` floats several times over; an image
processor resizes to its `resolution`; the sampler runs the UNet at its `sample_size`), so those numbers are bounded
and cross-checked first, and a component the sampler does not implement is refused by name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from diffusers import DDIMScheduler, UNet2DModel

from ..config_bounds import check_config_bounds
from ..models.decoder import DiTiDecoderModel
from ..models.encoder import DiTiEncoderModel
from ..safe_io import read_json, short_repr
from ..sampling import PREDICTION_TYPES, DiffusionCoefficients, check_scheduler_config
from .image_processing_diti import DiTiImageProcessor

# Component → (accepted class names, config file name).
COMPONENTS: dict[str, tuple[tuple[str, ...], str]] = {
    "unet": (("UNet2DModel",), "config.json"),
    "encoder": (("DiTiEncoderModel",), "config.json"),
    "decoder": (("DiTiDecoderModel",), "config.json"),
    "scheduler": (("DDIMScheduler",), "scheduler_config.json"),
    "image_processor": (("DiTiImageProcessor",), "preprocessor_config.json"),
}
_OPTIONAL = ("image_processor",)
_TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")


def check_component_configs(configs: Mapping[str, Mapping[str, Any] | None], where: Mapping[str, str]) -> None:
    r"""
    Raises `ValueError` naming the component and field unless the components' configs fit each other and the
    sampler: bounded sizes, one image size for the encoder, the UNet and the image processor, matching channels,
    latent widths and `T`, ε-prediction, a known time-step spacing and a buildable noise schedule.

    Args:
        configs (`dict`): `unet`, `encoder`, `decoder`, `scheduler` and optionally `image_processor` configs; a
            missing field is skipped (its default applies).
        where (`dict`): How to name each component in messages (its config file, or the component name).
    """
    for name, config in configs.items():
        if config is not None:
            check_config_bounds(config, where[name])
    unet, encoder, decoder = configs["unet"], configs["encoder"], configs["decoder"]
    scheduler, processor = configs["scheduler"], configs.get("image_processor")
    check_scheduler_config(dict(scheduler), where["scheduler"])

    def differ(a: Mapping, key_a: str, b: Mapping, key_b: str) -> bool:
        return key_a in a and key_b in b and a[key_a] != b[key_b]

    problems = []
    if differ(encoder, "sample_size", unet, "sample_size"):
        problems.append(
            f"encoder sample_size={encoder['sample_size']} but unet sample_size={unet['sample_size']} (the sampler "
            "inverts images of the encoder's size and generates at the UNet's)"
        )
    if processor is not None and differ(processor, "resolution", encoder, "sample_size"):
        problems.append(
            f"image_processor resolution={processor['resolution']} but encoder sample_size={encoder['sample_size']}"
        )
    if differ(encoder, "in_channels", unet, "in_channels"):
        problems.append(f"encoder in_channels={encoder['in_channels']} but unet in_channels={unet['in_channels']}")
    if differ(unet, "out_channels", unet, "in_channels"):
        problems.append(
            f"unet out_channels={unet['out_channels']} differs from in_channels={unet['in_channels']} (the sampler "
            "needs an ε-prediction UNet; a learned variance is not implemented)"
        )
    if differ(encoder, "latent_dim", decoder, "latent_dim"):
        problems.append(
            f"encoder latent_dim={encoder['latent_dim']} differs from decoder latent_dim={decoder['latent_dim']}"
        )
    if differ(encoder, "num_train_timesteps", scheduler, "num_train_timesteps"):
        problems.append(
            f"encoder partition has T={encoder['num_train_timesteps']} but the scheduler has "
            f"num_train_timesteps={scheduler['num_train_timesteps']}"
        )
    for name, config, allowed in (("unet", unet, ("epsilon",)), ("scheduler", scheduler, PREDICTION_TYPES)):
        prediction = config.get("prediction_type", "epsilon")
        if prediction not in allowed:
            problems.append(
                f"{name} prediction_type={short_repr(prediction)} (the DiTi sampler reads {list(allowed)})"
            )
    spacing = scheduler.get("timestep_spacing", "leading")
    if spacing not in _TIMESTEP_SPACINGS:
        problems.append(
            f"scheduler timestep_spacing={short_repr(spacing)} (expected one of {list(_TIMESTEP_SPACINGS)})"
        )
    if problems:
        raise ValueError("The pipeline's components do not fit together: " + "; ".join(problems) + ".")


def check_components(unet: Any, encoder: Any, decoder: Any, scheduler: Any, image_processor: Any = None) -> None:
    r"""
    Raises `TypeError` for a component of a class the pipeline does not implement (e.g. a `PNDMScheduler`, an
    `AutoencoderKL` as the encoder) and `ValueError` unless the components fit together
    ([`check_component_configs`]) and the scheduler's betas are finite and in (0, 1).
    """
    hints = {"scheduler": " (use DDIMScheduler.from_config(scheduler.config): the sampler is deterministic DDIM)"}
    for name, component, cls in (
        ("unet", unet, UNet2DModel),
        ("encoder", encoder, DiTiEncoderModel),
        ("decoder", decoder, DiTiDecoderModel),
        ("scheduler", scheduler, DDIMScheduler),
        ("image_processor", image_processor, DiTiImageProcessor),
    ):
        if not isinstance(component, cls) and not (name == "image_processor" and component is None):
            raise TypeError(f"`{name}` must be a {cls.__name__}, got {type(component).__name__}{hints.get(name, '')}.")
    configs = {
        "unet": unet.config,
        "encoder": encoder.config,
        "decoder": decoder.config,
        "scheduler": scheduler.config,
        "image_processor": None if image_processor is None else {"resolution": image_processor.resolution},
    }
    check_component_configs(configs, {name: name for name in configs})
    DiffusionCoefficients.from_betas(scheduler.betas)  # finite and in (0, 1), or a clear error now


def check_pipeline_folder(path: str | os.PathLike) -> None:
    r"""
    Checks a pipeline folder before anything in it is loaded: `model_index.json` lists exactly the components of a
    `DiTiPipeline`, each of its class and with its folder, and their configs (read with a size limit) pass
    [`check_component_configs`].

    Raises:
        `ValueError` naming the file, component and field.
    """
    path = os.fspath(path)
    index_file = os.path.join(path, "model_index.json")
    if not os.path.isfile(index_file):
        raise ValueError(f"{path!r} is not a pipeline folder: it has no model_index.json.")
    index = read_json(index_file, "pipeline index")
    if not isinstance(index, dict):
        raise ValueError(f"{index_file}: not a JSON object.")
    listed = {name: value for name, value in index.items() if not name.startswith("_")}
    unknown = sorted(set(listed) - set(COMPONENTS))
    if unknown:
        raise ValueError(
            f"{index_file}: unexpected component(s) {short_repr(unknown)}; a DiTiPipeline has {list(COMPONENTS)}."
        )
    absent = [name for name in COMPONENTS if name not in _OPTIONAL and name not in listed]
    if absent:
        raise ValueError(f"{index_file}: missing component(s) {absent}.")
    configs: dict[str, Any] = {"image_processor": None}
    where: dict[str, str] = {}
    missing_folders = []
    for name, value in listed.items():
        classes, config_name = COMPONENTS[name]
        if not isinstance(value, list) or len(value) != 2:
            raise ValueError(f"{index_file}: `{name}` must be [library, class], got {short_repr(value)}.")
        library, class_name = value
        if library is None and class_name is None and name in _OPTIONAL:
            continue
        expected_library = "diffusers" if name in ("unet", "scheduler") else "diti_hf"
        if class_name not in classes or not isinstance(library, str) or library.split(".")[0] != expected_library:
            raise ValueError(
                f"{index_file}: `{name}` is {short_repr(value)}; a DiTiPipeline's {name} must be a "
                f"{' or '.join(classes)} from {expected_library}."
            )
        folder = os.path.join(path, name)
        if not os.path.isdir(folder):
            missing_folders.append(name)
            continue
        config_file = os.path.join(folder, config_name)
        where[name] = config_file
        if not os.path.isfile(config_file):
            raise ValueError(f"{config_file}: missing.")
        configs[name] = read_json(config_file, f"{name} config")
        if not isinstance(configs[name], dict):
            raise ValueError(f"{config_file}: not a JSON object.")
    if missing_folders:
        raise ValueError(f"Pipeline folder {path!r} is missing the component folder(s) {missing_folders}.")
    where.setdefault("image_processor", "image_processor")
    check_component_configs(configs, where)


__all__ = [
    "COMPONENTS",
    "check_component_configs",
    "check_components",
    "check_pipeline_folder",
]
