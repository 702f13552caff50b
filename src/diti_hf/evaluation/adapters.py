"""Thin adapters from models to the callables the metrics take (so metrics stay testable without a pipeline)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..models import eps_function
from ..partition import TimestepPartition
from ..sampling import DiffusionCoefficients
from ..warning_types import ChunkWideningWarning
from .control import RegenerateFn, SampleFn
from .counterfactual import SwapFn
from .reconstruction import ReconstructFn

# encode_fn(images in [-1, 1], (B, C, H, W)) -> z, (B, d)
EncodeFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class ModelFunctions:
    r"""
    What the evaluation needs from one model.

    Args:
        encode_fn (`Callable`): `(B, C, H, W)` in [-1, 1] → `(B, d)` features; `None` for a bare DDPM (no probes).
        partition ([`TimestepPartition`], *optional*): Partition of the features (enables the alignment probes).
        swap_fn (`Callable`, *optional*): See [`~diti_hf.evaluation.counterfactual.counterfactual_score`].
        reconstruct_fn (`Callable`, *optional*): `(B, C, H, W)` in [-1, 1] → reconstructions in [0, 1].
        encoder (`torch.nn.Module`, *optional*): The encoder, used to build the random-init baseline.
        sample_size (`int`, *optional*): Image side the model expects.
        eps_fn (`Callable`, *optional*): The frozen DDPM, `(x_t, t) → ε̂` (for the attribute-loss time).
        alphas_cumprod (`torch.Tensor`, *optional*): ᾱ of the DDPM's schedule.
        regenerate_fn (`Callable`, *optional*): `(z or None, x_t, t) → images in [0, 1]`, generation from `x_t` at
            time-step `t` (`None`: the DDPM alone); for the regeneration keep-rates.
        sample_fn (`Callable`, *optional*): `(num_images, seed) → unconditional DDPM samples in [0, 1]`.
        swap_protocols (`dict[str, Callable]`, *optional*): Protocol name → swap function (see
            `evaluation.control.SWAP_PROTOCOLS`); `swap_fn` is the protocol the model's own `swap` uses by default.
    """

    encode_fn: EncodeFn | None
    partition: TimestepPartition | None = None
    swap_fn: SwapFn | None = None
    reconstruct_fn: ReconstructFn | None = None
    encoder: Any = None
    sample_size: int | None = None
    eps_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    alphas_cumprod: torch.Tensor | None = None
    regenerate_fn: RegenerateFn | None = None
    sample_fn: SampleFn | None = None
    swap_protocols: dict[str, SwapFn] | None = None


def _deduplicated(partition: TimestepPartition, generate: Callable) -> SwapFn:
    """`generate(source, target, ranges)` as a swap function that generates once per distinct set of dims."""

    # ranges that cover the same dims (all of them with PDAE's single chunk) give the same images
    def swap_fn(source: torch.Tensor, target: torch.Tensor, ranges: list[tuple[int, int]]) -> torch.Tensor:
        dims = [partition.resolve_range(timesteps=bounds).dims for bounds in ranges]
        unique = list(dict.fromkeys(dims))
        out = generate(source, target, [ranges[dims.index(d)] for d in unique])
        # B × R images, source-major
        out = out.float().cpu().view(source.shape[0], len(unique), *out.shape[1:])
        return out[:, [unique.index(d) for d in dims]]

    return swap_fn


def _pipeline_swap_protocols(pipe: Any, num_inference_steps: int) -> dict[str, SwapFn]:
    r"""
    The swap functions of a [`~diti_hf.DiTiPipeline`], one per protocol of `evaluation.control.SWAP_PROTOCOLS`:
    `pipe.swap` from the source's DDIM inversion, the target's, one random start shared by both, or stochastic
    inversion.

    Args:
        pipe ([`~diti_hf.DiTiPipeline`]): The pipeline.
        num_inference_steps (`int`): DDIM steps of the swaps and inversions.
    """
    partition = pipe.encoder.partition
    calls = [0]  # seeds the noise of successive batches differently, reproducibly

    def next_generator(device: torch.device | str = "cpu") -> torch.Generator:
        calls[0] += 1
        return torch.Generator(device).manual_seed(calls[0])

    def pipeline_swap(inversion: str = "ddim", latents_of: Callable | None = None) -> SwapFn:
        # `pipe.swap` from where `inversion` says, or from `latents_of(source, target)` (another starting point)
        def generate(source, target, ranges):
            generator = next_generator(pipe.device) if latents_of is None else None
            latents = None if latents_of is None else latents_of(source, target)
            with warnings.catch_warnings():  # the report records its ranges; widening to chunks is expected here
                warnings.simplefilter("ignore", ChunkWideningWarning)
                return pipe.swap(
                    source, target, timesteps=ranges, num_inference_steps=num_inference_steps, output_type="pt",
                    inversion=inversion, latents=latents, generator=generator,
                ).images  # fmt: skip

        return _deduplicated(partition, generate)

    def shared_noise(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(pipe.preprocess(source).shape, generator=next_generator())
        return noise.to(pipe.device, pipe.unet.dtype)

    return {
        "source_inverted": pipeline_swap("ddim"),
        "target_inverted": pipeline_swap(
            latents_of=lambda s, t: pipe.invert(t, num_inference_steps=num_inference_steps).latents
        ),
        "shared_random": pipeline_swap(latents_of=shared_noise),
        "stochastic": pipeline_swap("stochastic"),
    }


def pipeline_functions(
    pipe: Any, num_inference_steps: int = 20, batch_size: int = 256, sample_steps: int = 50
) -> ModelFunctions:
    r"""
    Adapts a [`~diti_hf.DiTiPipeline`] (DiTi or PDAE, `num_chunks == 1`) to [`ModelFunctions`].

    Args:
        pipe ([`~diti_hf.DiTiPipeline`]): The pipeline (`encode`, `swap`, `reconstruct`, `encoder.partition`).
        num_inference_steps (`int`, defaults to 20): DDIM steps of swaps, regenerations and reconstructions.
        batch_size (`int`, defaults to 256): Encoding batch size.
        sample_steps (`int`, defaults to 50): DDIM steps of the frozen DDPM's unconditional samples.
    """
    for name in ("encode", "swap", "reconstruct", "encoder"):
        if not hasattr(pipe, name):
            raise TypeError(f"`pipe` must be a DiTiPipeline-like object with `{name}`, got {type(pipe).__name__}.")

    def encode_fn(images: torch.Tensor) -> torch.Tensor:
        return pipe.encode(images, batch_size=batch_size).z.float().cpu()

    swap_protocols = _pipeline_swap_protocols(pipe, num_inference_steps)

    def regenerate_fn(z: torch.Tensor | None, x_t: torch.Tensor, t: int) -> torch.Tensor:
        x_t = x_t.to(pipe.device, pipe.unet.dtype)
        return pipe(
            z=z, latents=x_t, start_timestep=int(t), guidance=z is not None,
            num_inference_steps=num_inference_steps, output_type="pt",
        ).images.float().cpu()  # fmt: skip

    def sample_fn(num_images: int, seed: int) -> torch.Tensor:
        generator = [torch.Generator(pipe.device).manual_seed(seed * 100_003 + i) for i in range(num_images)]
        return (
            pipe(guidance=False, generator=generator, num_inference_steps=sample_steps, output_type="pt")
            .images.float()
            .cpu()
        )

    def reconstruct_fn(images: torch.Tensor) -> torch.Tensor:
        return pipe.reconstruct(images, num_inference_steps=num_inference_steps, output_type="pt").images.float().cpu()

    eps_fn = eps_function(pipe.unet, pipe.coefficients("cpu"))

    return ModelFunctions(
        encode_fn=encode_fn,
        partition=pipe.encoder.partition,
        swap_fn=swap_protocols["source_inverted"],
        reconstruct_fn=reconstruct_fn,
        encoder=pipe.encoder,
        sample_size=int(pipe.encoder.config.sample_size),
        eps_fn=eps_fn,
        alphas_cumprod=pipe.scheduler.alphas_cumprod.float().cpu(),
        regenerate_fn=regenerate_fn,
        sample_fn=sample_fn,
        swap_protocols=swap_protocols,
    )


def ddpm_functions(
    unet: Any, scheduler_config: dict[str, Any], sample_steps: int = 50, sample_eta: float = 0.0
) -> ModelFunctions:
    r"""
    Adapts a bare frozen DDPM (a diffusers `UNet2DModel` and its scheduler config) to [`ModelFunctions`]: no
    features, only what the DDPM diagnostics need — `eps_fn`, `alphas_cumprod` and `sample_fn` (DDIM with `x̂_0`
    clipped to [−1, 1] at each step; with η = 0, deterministic, as the pipeline samples with `guidance=False`).

    Args:
        unet (`UNet2DModel`): The ε-prediction DDPM.
        scheduler_config (`dict`): Its noise-schedule config (any diffusers scheduler's).
        sample_steps (`int`, defaults to 50): DDIM steps of the samples.
        sample_eta (`float`, defaults to 0.0): DDIM η of the samples (their noise is seeded like the start).
    """
    from diffusers import DDIMScheduler

    coefficients = DiffusionCoefficients.from_scheduler_config(scheduler_config)
    scheduler = DDIMScheduler.from_config(dict(scheduler_config), clip_sample=True, set_alpha_to_one=True)

    eps_fn = eps_function(unet, coefficients)

    @torch.no_grad()
    def sample_fn(num_images: int, seed: int) -> torch.Tensor:
        size, channels = unet.config.sample_size, unet.config.in_channels
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn(num_images, channels, size, size, generator=generator).to(unet.device, unet.dtype)
        scheduler.set_timesteps(sample_steps)
        for t in scheduler.timesteps:
            eps = unet(x, t.to(unet.device)).sample
            step_noise = torch.randn(x.shape, generator=generator).to(x.device, x.dtype) if sample_eta else None
            x = scheduler.step(eps, t, x, eta=sample_eta, variance_noise=step_noise).prev_sample
        return (x.float().cpu() / 2 + 0.5).clamp(0, 1)

    return ModelFunctions(
        encode_fn=None,
        sample_size=int(unet.config.sample_size),
        eps_fn=eps_fn,
        alphas_cumprod=coefficients.alphas_cumprod,
        sample_fn=sample_fn,
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
