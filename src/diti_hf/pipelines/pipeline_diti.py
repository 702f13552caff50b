"""`DiTiPipeline`: representations and attribute edits from a frozen DDPM + a DiTi encoder/decoder (docs/method.md
§7–8). This module holds the components, loading, preprocessing and the DDIM sampler; the edits are in `editing.py`."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers import DDIMScheduler, DiffusionPipeline, UNet2DModel
from diffusers.utils.torch_utils import randn_tensor

from ..hub import push_pipeline_to_hub
from ..models.decoder import DiTiDecoderModel
from ..models.denoiser import compile_denoiser, denoise
from ..models.encoder import DiTiEncoderModel, DiTiEncoderOutput
from ..models.strict_loading import check_finite_weights, check_saved_weights
from ..partition import TimestepPartition, TimestepRange
from ..sampling import (
    DEFAULT_NUM_INFERENCE_STEPS,
    DiffusionCoefficients,
    ddim_inverse_step,
    ddim_step,
    noise_schedule_of,
    sampling_grid,
)
from ..warning_types import ChunkWideningWarning
from .checks import check_components, check_pipeline_folder
from .editing import DiTiEditMixin
from .image_processing_diti import DiTiImageProcessor
from .inputs import (
    ImageInput,
    check_image_tensor,
    check_latents,
    check_output_type,
    check_timestep,
    check_z,
    format_images,
    image_list,
    process_images,
)
from .outputs import DiTiInversionOutput, DiTiPipelineOutput

EXAMPLE_DOC_STRING = """
    Examples:
    ```py
    >>> from diti_hf import DiTiPipeline
    >>> pipe = DiTiPipeline.from_pretrained("path/or/hub-id")
    >>> z = pipe.encode(images).z                                    # (B, d) time-step-modular features
    >>> recon = pipe.reconstruct(images).images                     # invert → generate
    >>> out = pipe.swap(source=img_a, target=img_b, timesteps=(500, 1000))  # B's chunks of t in [500, 1000)
    >>> row = pipe.interpolate(img_a, img_b, alphas=[0, 0.5, 1], timesteps=(250, 500))
    ```
"""


class DiTiPipeline(DiTiEditMixin, DiffusionPipeline):
    r"""
    Pipeline for DiTi: encode images into time-step-modular representations, invert them to `x_T` with deterministic
    masked DDIM, regenerate them, and edit them by swapping or interpolating the chunks of one time-step range or by
    moving along a classifier direction.

    At a sampling step at time `t` the decoder sees `z ⊙ mask[idx(t)]`: the chunks of time-steps ≤ t's chunk, or with
    an encoder trained under `mask_mode="interval"` t's chunk alone (see [`TimestepPartition`]), and the noise
    estimate is `ε̂ = ε_θ(x_t, t) − √(1 − ᾱ_t) · G(x_t, t, z_t)`; `x̂_0` is clamped to [−1, 1] and `ε̂` recomputed from
    it. Inversion and generation use the same masks.

    This model inherits from [`DiffusionPipeline`]; see the superclass for the generic methods (downloading, saving,
    moving devices), and its edits (`reconstruct`, `swap`, `interpolate`, `edit`) from [`DiTiEditMixin`]. Importing
    `diti_hf` registers this class with diffusers, so `DiffusionPipeline.from_pretrained` also loads a saved DiTi
    pipeline.

    Args:
        unet ([`UNet2DModel`]): The frozen DDPM ε-prediction UNet.
        encoder ([`DiTiEncoderModel`]): Image → z; its config holds the time-step partition.
        decoder ([`DiTiDecoderModel`]): The z-conditioned shift branch fitted to `unet`.
        scheduler ([`DDIMScheduler`]): The frozen DDPM's noise schedule; its `set_timesteps` gives the sampling grid
            (`timestep_spacing="leading"`, `set_alpha_to_one=True` reproduce the official sampler).
        image_processor ([`DiTiImageProcessor`], *optional*): Preprocessing of PIL/numpy images (crop box, resize).
    """

    model_cpu_offload_seq = "encoder->unet->decoder"
    _optional_components = ["image_processor"]

    def __init__(
        self,
        unet: UNet2DModel,
        encoder: DiTiEncoderModel,
        decoder: DiTiDecoderModel,
        scheduler: DDIMScheduler,
        image_processor: DiTiImageProcessor | None = None,
    ):
        super().__init__()
        # classes, sizes, channels, latent widths, T, prediction type, betas: refuse what the sampler cannot run
        check_components(unet, encoder, decoder, scheduler, image_processor)
        decoder.check_unet(unet)
        trained_with = decoder.config.get("noise_schedule")
        if trained_with is not None and trained_with != noise_schedule_of(scheduler.config):
            warnings.warn(
                f"The scheduler's noise schedule {noise_schedule_of(scheduler.config)} differs from the one the "
                f"decoder was trained with {trained_with}; DiTi's coefficients and masks assume the training betas.",
                stacklevel=2,
            )
        unet.requires_grad_(False)
        self.register_modules(
            unet=unet, encoder=encoder, decoder=decoder, scheduler=scheduler, image_processor=image_processor
        )
        self._coefficients: dict[torch.device, tuple[Any, DiffusionCoefficients]] = {}

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> DiTiPipeline:
        r"""
        Loads a pipeline from a local folder or a Hub repo id.

        A repo id is first downloaded with `huggingface_hub.snapshot_download` (honouring `revision`, `cache_dir`,
        `token`, `local_files_only` and `HF_HUB_OFFLINE`), then loaded from the local snapshot: diffusers' own
        downloader does not resolve components whose library is not diffusers/transformers.
        """
        path = os.fspath(pretrained_model_name_or_path)
        if not os.path.isdir(path):
            from huggingface_hub import snapshot_download

            path = snapshot_download(
                path,
                revision=kwargs.pop("revision", None),
                cache_dir=kwargs.get("cache_dir"),
                token=kwargs.pop("token", None),
                local_files_only=kwargs.get("local_files_only", False),
            )
        check_pipeline_folder(path)  # classes and bounded, consistent configs before anything is built
        pipe = super().from_pretrained(path, **kwargs)
        # Our own models load strictly by themselves; the frozen UNet is a diffusers class, checked here.
        check_saved_weights(pipe.unet, os.path.join(path, "unet"))
        check_finite_weights(pipe.unet, f"the UNet at {os.path.join(path, 'unet')}")
        return pipe

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:
        r"""
        Saves the pipeline (safetensors) with a generated model card (`README.md`) and uploads it to the Hub repo
        `repo_id`. Keyword arguments are those of [`diti_hf.hub.push_pipeline_to_hub`] (`token`, `private`,
        `revision`, `commit_message`, `create_pr`, `card_kwargs` for [`diti_hf.hub.create_model_card`],
        `endpoint`). Returns the commit URL.
        """
        return push_pipeline_to_hub(self, repo_id, **kwargs)

    # ------------------------------------------------------------------ helpers
    @property
    def partition(self) -> TimestepPartition:
        """The time-step partition of `z` (from the encoder's config)."""
        return self.encoder.partition

    def coefficients(self, device: torch.device | None = None) -> DiffusionCoefficients:
        """The schedule's coefficient tables on `device`, computed once per device."""
        device = torch.device(device or self._execution_device)
        cached = self._coefficients.get(device)
        if cached is None or cached[0] is not self.scheduler:  # a scheduler swapped in later gets its own tables
            tables = DiffusionCoefficients.from_scheduler_config(self.scheduler.config).to(device)
            self._coefficients[device] = cached = (self.scheduler, tables)
        return cached[1]

    def preprocess(self, images: ImageInput) -> torch.Tensor:
        r"""
        Converts `images` to a float batch `(B, C, H, W)` in [−1, 1] on the execution device.

        Accepts a tensor `(B, C, H, W)` or `(C, H, W)` already in [−1, 1]; numpy arrays `(H, W, C)`/`(B, H, W, C)`
        (uint8 in [0, 255] or float in [0, 1]); PIL images or lists of them. PIL/numpy images go through the
        `image_processor` when the pipeline has one (crop box, resize), else they are converted to RGB, resized
        (shorter side) and centre-cropped to the encoder's size.
        """
        if isinstance(images, torch.Tensor):
            tensor = check_image_tensor(images)
        else:
            processor = self.image_processor or self._default_image_processor()
            tensor = process_images(image_list(images), processor, int(self.encoder.config.sample_size))
        self.encoder.check_images(tensor)
        return tensor.to(device=self._execution_device, dtype=self.encoder.dtype)

    def _default_image_processor(self) -> DiTiImageProcessor:
        """Resize the shorter side to the encoder's size and centre-crop, when the pipeline has no processor."""
        size = self.encoder.config.sample_size
        if getattr(self, "_fallback_processor", None) is None or self._fallback_processor.resolution != size:
            self._fallback_processor = DiTiImageProcessor(resolution=size)
        return self._fallback_processor

    def postprocess(self, images: torch.Tensor, output_type: str) -> list[PIL.Image.Image] | np.ndarray | torch.Tensor:
        """Maps a batch in [−1, 1] to `output_type` ("pil", "np" or "pt"), in [0, 1]."""
        return format_images((images / 2 + 0.5).clamp(0, 1), output_type)

    def _check_z(self, z: torch.Tensor, batch: int | None = None) -> torch.Tensor:
        """`z` checked against the encoder's width (and `batch`), on the decoder's device and dtype."""
        check_z(z, self.encoder.config.latent_dim, batch)
        return z.to(device=self._execution_device, dtype=self.decoder.dtype)

    def _resolve_range(self, timesteps: Sequence[int] | None, chunks: Sequence[int] | None) -> TimestepRange:
        """
        [`TimestepPartition.resolve_range`], warning with a [`ChunkWideningWarning`] when whole chunks widen a
        time-step range. Called from the public method itself, so that the warning points at the caller's line.
        """
        resolved = self.partition.resolve_range(timesteps, chunks)
        if resolved.widened:
            (lo, hi), (i, j), (start, end) = resolved.requested, resolved.chunks, resolved.timesteps
            warnings.warn(
                f"`timesteps` ({lo}, {hi}) acts on whole chunks {i}..{j - 1}: the effective range is [{start}, {end}).",
                ChunkWideningWarning,
                stacklevel=4,
            )
        return resolved

    # ------------------------------------------------------------------ the sampler
    def condition(self, z: torch.Tensor, timestep: int, use_masks: bool = True) -> torch.Tensor:
        r"""
        What the decoder sees of `z` at `timestep`: `z ⊙ mask[idx(t)]`, the mask of the encoder's `mask_mode` (the
        chunks up to t's, or t's chunk alone), or all of `z` with `use_masks=False` (PDAE).
        """
        if not use_masks:
            return z
        return z * self.partition.condition_table(z.device).to(z.dtype)[self.partition.chunk_of(timestep)]

    def _grid(self, num_inference_steps: int) -> list[int]:
        """The sampling grid, ascending ([`~diti_hf.sampling.sampling_grid`], which checks the step count)."""
        return sampling_grid(self.scheduler, num_inference_steps, self.partition.num_train_timesteps)

    def _ddim(
        self,
        sample: torch.Tensor,
        z: torch.Tensor | None,
        num_inference_steps: int,
        invert: bool,
        use_masks: bool,
        progress: bool = True,
        start_timestep: int | None = None,
    ) -> torch.Tensor:
        r"""
        The one deterministic DDIM loop (η = 0) behind inversion, generation and every edit: at each time-step, mask
        `z` ([`~DiTiPipeline.condition`]), run [`~diti_hf.models.denoise`], then [`~diti_hf.sampling.ddim_step`] (or
        [`~diti_hf.sampling.ddim_inverse_step`]).

        Generation walks the grid from the largest time-step down and its last step goes to ᾱ = 1 (returns x̂_0);
        inversion walks it upward from 0 and its last step goes to ᾱ = 0 (returns ε̂ as x_T). Generation from
        `start_timestep` treats `sample` as `x_t` at that time-step and walks the grid's smaller time-steps from it.
        """
        grid = self._grid(num_inference_steps)
        order = grid if invert else grid[::-1]
        if start_timestep is not None:
            order = [start_timestep, *(t for t in order if t < start_timestep)]
        c = self.coefficients(sample.device)
        final_alpha_cumprod = float(self.scheduler.final_alpha_cumprod)
        for i, t in enumerate(self.progress_bar(order) if progress else order):
            condition = None if z is None else self.condition(z, t, use_masks)
            out = denoise(self.unet, self.decoder, sample, t, condition, coefficients=c)
            to = order[i + 1] if i + 1 < len(order) else None
            if invert:
                sample = ddim_inverse_step(c, sample, t, to, out.eps, out.shift)
            else:
                sample = ddim_step(c, sample, t, to, out.eps, out.shift, final_alpha_cumprod)
        return sample

    # ------------------------------------------------------------------ public API
    def compile_models(self, **compile_kwargs: Any) -> None:
        r"""
        `torch.compile`s the encoder, the UNet's blocks and the decoder in place (see
        [`~diti_hf.models.compile_denoiser`]; `torch.compile(pipe.unet)` would not reach the blocks DiTi runs). Worth it
        for many edits in one process (1.15× on a CPU swap grid: `benchmarks/results/speed.md`, "Editing with the new
        decoder"); the first call of each batch shape pays the compilation (minutes on a small CPU).

        Args:
            compile_kwargs: Passed to `torch.compile` (e.g. `mode="max-autotune"`).
        """
        self.encoder.compile(**compile_kwargs)
        compile_denoiser(self.unet, self.decoder, **compile_kwargs)

    @torch.no_grad()
    def encode(self, images: ImageInput, batch_size: int | None = None) -> DiTiEncoderOutput:
        r"""
        Encodes images into `z`.

        Args:
            images: Tensor `(B, C, H, W)` in [−1, 1], numpy or PIL images (see [`~DiTiPipeline.preprocess`]).
            batch_size (`int`, *optional*): Encode in batches of this size (all at once by default).

        Returns:
            [`DiTiEncoderOutput`] with `z` `(B, latent_dim)` and helpers such as `for_timesteps(lo, hi)`.
        """
        pixels = self.preprocess(images)
        step = batch_size or pixels.shape[0]
        z = torch.cat([self.encoder(pixels[i : i + step]).z for i in range(0, pixels.shape[0], step)])
        return DiTiEncoderOutput(z=z, partition=self.partition)

    @torch.no_grad()
    def invert(
        self,
        images: ImageInput,
        z: torch.Tensor | None = None,
        num_inference_steps: int = DEFAULT_NUM_INFERENCE_STEPS,
        use_masks: bool = True,
        guidance: bool = True,
        return_dict: bool = True,
    ) -> DiTiInversionOutput | tuple:
        r"""
        Deterministic masked DDIM inversion `x_0 → x_T` (docs/method.md §7).

        Args:
            images: The images to invert.
            z (`torch.Tensor`, *optional*): Their condition; encoded from `images` when not given.
            num_inference_steps (`int`, defaults to 50): DDIM steps.
            use_masks (`bool`, defaults to `True`): DiTi masking; `False` feeds the whole `z` at every step (PDAE).
            guidance (`bool`, defaults to `True`): `False` uses ε_θ alone (no decoder).
            return_dict (`bool`, defaults to `True`): Return a [`DiTiInversionOutput`] instead of a tuple.
        """
        pixels = self.preprocess(images)
        if guidance:
            z = self.encoder(pixels).z if z is None else self._check_z(z, pixels.shape[0])
        else:
            z = None
        latents = self._ddim(pixels, z, num_inference_steps, invert=True, use_masks=use_masks)
        return DiTiInversionOutput(latents=latents, z=z) if return_dict else (latents, z)

    @torch.no_grad()
    def __call__(
        self,
        z: torch.Tensor | None = None,
        latents: torch.Tensor | None = None,
        num_inference_steps: int = DEFAULT_NUM_INFERENCE_STEPS,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        use_masks: bool = True,
        guidance: bool = True,
        batch_size: int | None = None,
        start_timestep: int | None = None,
        return_dict: bool = True,
    ) -> DiTiPipelineOutput | tuple:
        r"""
        Generates images from `z`, starting at `latents` (x_T) or at Gaussian noise.

        Args:
            z (`torch.Tensor`, *optional*): Conditions `(B, latent_dim)`; required unless `guidance=False`.
            latents (`torch.Tensor`, *optional*): `x_T` `(B, C, H, W)`, e.g. from [`~DiTiPipeline.invert`].
            num_inference_steps (`int`, defaults to 50): DDIM steps.
            generator (`torch.Generator` or list of them, *optional*): Noise source when `latents` is not given; a
                list gives one generator per sample.
            output_type (`str`, defaults to `"pil"`): `"pil"`, `"np"` or `"pt"`.
            use_masks (`bool`, defaults to `True`): DiTi masking; `False` gives PDAE's sampler.
            guidance (`bool`, defaults to `True`): `False` samples with ε_θ alone.
            batch_size (`int`, *optional*): Generate in batches of this size (all at once by default).
            start_timestep (`int`, *optional*): `latents` is `x_t` at this time-step (e.g. from
                [`~DiTiPipeline.add_noise`]) and generation starts there, then walks the DDIM grid's smaller
                time-steps; default: `latents` is `x_T` and generation walks the whole grid.
            return_dict (`bool`, defaults to `True`): Return a [`DiTiPipelineOutput`] instead of a tuple.
        """
        check_output_type(output_type)
        if start_timestep is not None:
            start_timestep = check_timestep(start_timestep, "start_timestep", self.partition.num_train_timesteps)
        device, unet_cfg = self._execution_device, self.unet.config
        if guidance and z is None:
            raise ValueError("`z` is required unless `guidance=False` (sampling with ε_θ alone).")
        batch = latents.shape[0] if latents is not None else z.shape[0] if z is not None else None
        if batch is None:
            batch = len(generator) if isinstance(generator, list) else 1
        z = self._check_z(z, batch) if guidance else None
        shape = (batch, unet_cfg.in_channels, unet_cfg.sample_size, unet_cfg.sample_size)
        if isinstance(generator, list) and len(generator) != batch:
            raise ValueError(f"`generator` is a list of {len(generator)} generators but the batch size is {batch}.")
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=self.unet.dtype)
        else:
            check_latents(latents, shape)
        latents = latents.to(device=device, dtype=self.unet.dtype)
        step = batch_size or batch
        images = torch.cat(
            [
                self._ddim(
                    latents[i : i + step],
                    None if z is None else z[i : i + step],
                    num_inference_steps,
                    invert=False,
                    use_masks=use_masks,
                    start_timestep=start_timestep,
                )
                for i in range(0, batch, step)
            ]
        )
        images = self.postprocess(images, output_type)
        return DiTiPipelineOutput(images=images, latents=latents, z=z) if return_dict else (images,)

    @torch.no_grad()
    def add_noise(
        self, images: ImageInput, timestep: int, generator: torch.Generator | list[torch.Generator] | None = None
    ) -> torch.Tensor:
        r"""
        The stochastic forward process: `x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε` with fresh Gaussian `ε`.

        Args:
            images: The images `x_0`.
            timestep (`int`): `t` in `[0, T)`.
            generator (`torch.Generator` or list of them, *optional*): Source of `ε` (one per image for a list).

        Returns:
            `torch.Tensor`: `x_t`, to generate from with `pipe(z=..., latents=x_t, start_timestep=t)`.
        """
        t = check_timestep(timestep, "timestep", self.partition.num_train_timesteps)
        return self._diffuse(self.preprocess(images), [t], generator)[0]

    def _diffuse(
        self, pixels: torch.Tensor, timesteps: Sequence[int], generator: torch.Generator | list[torch.Generator] | None
    ) -> list[torch.Tensor]:
        """`x_t` of `pixels` at each of `timesteps`, all from one draw of `ε` (the forward process of `add_noise`)."""
        noise = randn_tensor(pixels.shape, generator=generator, device=pixels.device, dtype=pixels.dtype)
        c = self.coefficients(pixels.device)
        return [
            c.sqrt_alphas_cumprod[t].to(pixels.dtype) * pixels
            + c.sqrt_one_minus_alphas_cumprod[t].to(pixels.dtype) * noise
            for t in timesteps
        ]
