"""Thin adapters from models to the callables the metrics take (so metrics stay testable without a pipeline)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..partition import TimestepPartition
from .counterfactual import SwapFn
from .reconstruction import ReconstructFn

# encode_fn(images in [-1, 1], (B, C, H, W)) -> z, (B, d)
EncodeFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class ModelFunctions:
    r"""
    What the evaluation needs from one model.

    Args:
        encode_fn (`Callable`): `(B, C, H, W)` in [-1, 1] → `(B, d)` features.
        partition ([`TimestepPartition`], *optional*): Partition of the features (enables the alignment probes).
        swap_fn (`Callable`, *optional*): See [`~diti_hf.evaluation.counterfactual.counterfactual_score`].
        reconstruct_fn (`Callable`, *optional*): `(B, C, H, W)` in [-1, 1] → reconstructions in [0, 1].
        encoder (`torch.nn.Module`, *optional*): The encoder, used to build the random-init baseline.
        sample_size (`int`, *optional*): Image side the model expects.
        eps_fn (`Callable`, *optional*): The frozen DDPM, `(x_t, t) → ε̂` (for the attribute-loss time).
        alphas_cumprod (`torch.Tensor`, *optional*): ᾱ of the DDPM's schedule.
    """

    encode_fn: EncodeFn
    partition: TimestepPartition | None = None
    swap_fn: SwapFn | None = None
    reconstruct_fn: ReconstructFn | None = None
    encoder: Any = None
    sample_size: int | None = None
    eps_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    alphas_cumprod: torch.Tensor | None = None


def pipeline_functions(pipe: Any, num_inference_steps: int = 20, batch_size: int = 256) -> ModelFunctions:
    r"""
    Adapts a [`~diti_hf.DiTiPipeline`] (DiTi or PDAE, `num_chunks == 1`) to [`ModelFunctions`].

    Args:
        pipe ([`~diti_hf.DiTiPipeline`]): The pipeline (`encode`, `swap`, `reconstruct`, `encoder.partition`).
        num_inference_steps (`int`, defaults to 20): DDIM steps of swaps and reconstructions.
        batch_size (`int`, defaults to 256): Encoding batch size.
    """
    for name in ("encode", "swap", "reconstruct", "encoder"):
        if not hasattr(pipe, name):
            raise TypeError(f"`pipe` must be a DiTiPipeline-like object with `{name}`, got {type(pipe).__name__}.")

    def encode_fn(images: torch.Tensor) -> torch.Tensor:
        return pipe.encode(images, batch_size=batch_size).z.float().cpu()

    partition = pipe.encoder.partition

    def swap_fn(source: torch.Tensor, target: torch.Tensor, ranges: list[tuple[int, int]]) -> torch.Tensor:
        # ranges that cover the same dims (all of them with PDAE's single chunk) give the same images: generate once
        dims = [partition.dims_for_timesteps(lo, hi) for lo, hi in ranges]
        unique = list(dict.fromkeys(dims))
        firsts = [ranges[dims.index(d)] for d in unique]
        out = pipe.swap(
            source, target, timesteps=firsts, num_inference_steps=num_inference_steps, output_type="pt"
        ).images
        # the pipeline returns B × R images, source-major
        out = out.float().cpu().view(source.shape[0], len(unique), *out.shape[1:])
        return out[:, [unique.index(d) for d in dims]]

    def reconstruct_fn(images: torch.Tensor) -> torch.Tensor:
        return pipe.reconstruct(images, num_inference_steps=num_inference_steps, output_type="pt").images.float().cpu()

    @torch.no_grad()
    def eps_fn(sample: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        unet = pipe.unet
        return unet(sample.to(unet.device, unet.dtype), timesteps.to(unet.device)).sample.float().cpu()

    return ModelFunctions(
        encode_fn=encode_fn,
        partition=pipe.encoder.partition,
        swap_fn=swap_fn,
        reconstruct_fn=reconstruct_fn,
        encoder=pipe.encoder,
        sample_size=int(pipe.encoder.config.sample_size),
        eps_fn=eps_fn,
        alphas_cumprod=pipe.scheduler.alphas_cumprod.float().cpu(),
    )


def encoder_functions(encoder: Any, batch_size: int = 256) -> ModelFunctions:
    """Adapts a bare [`~diti_hf.DiTiEncoderModel`] (features and partition only)."""

    @torch.no_grad()
    def encode_fn(images: torch.Tensor) -> torch.Tensor:
        device = next(encoder.parameters()).device
        return torch.cat(
            [
                encoder(images[i : i + batch_size].to(device)).z.float().cpu()
                for i in range(0, images.shape[0], batch_size)
            ]
        )

    return ModelFunctions(
        encode_fn=encode_fn,
        partition=getattr(encoder, "partition", None),
        encoder=encoder,
        sample_size=int(encoder.config.sample_size),
    )


def random_encoder_functions(encoder: Any, seed: int = 0, batch_size: int = 256) -> ModelFunctions:
    r"""
    The random-initialisation baseline: a fresh encoder with `encoder`'s config (same architecture and partition),
    initialised under `seed` without touching the global RNG.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = type(encoder).from_config(encoder.config).eval()
    return encoder_functions(fresh, batch_size)


def pixel_functions() -> ModelFunctions:
    """The raw-pixel baseline: the flattened image in [-1, 1] as the feature."""
    return ModelFunctions(encode_fn=lambda images: images.float().flatten(1))
