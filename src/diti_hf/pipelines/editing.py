"""The edits of `DiTiPipeline` (`reconstruct`, `swap`, `interpolate`, `edit`), mixed into it by [`DiTiEditMixin`].

Each edit turns its arguments into `z` variants (and, where it needs them, starting points) with the module
functions below, which check arguments and compute only, and hands them to the one seam
`DiTiEditMixin._generate_variants`; encoding, inversion and generation are the pipeline's own."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ..sampling import DEFAULT_NUM_INFERENCE_STEPS
from .inputs import ImageInput, check_finite, check_output_type, check_same_batch, format_images
from .outputs import DiTiInversionOutput, DiTiPipelineOutput

# Where `DiTiPipeline.swap` starts generating from (see its docstring).
SWAP_INVERSIONS = ("ddim", "stochastic")

Dims = tuple[int, int]


def as_ranges(value: Any) -> list[Any]:
    """`value` as a list of ranges: none, one `(lo, hi)`, or a list of them (each checked when it is resolved)."""
    if value is None:
        return []
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], (tuple, list)):
        return list(value)
    return [value]


def check_swap_arguments(inversion: str, latents: torch.Tensor | None, timesteps: Any, chunks: Any) -> None:
    if inversion not in SWAP_INVERSIONS:
        raise ValueError(f"`inversion` must be one of {SWAP_INVERSIONS}, got {inversion!r}.")
    if latents is not None and inversion != "ddim":
        raise ValueError(f"`latents` replaces the inversion: pass it with `inversion='ddim'`, not {inversion!r}.")
    if timesteps is None and chunks is None:
        raise ValueError("Pass `timesteps=(lo, hi)` (or a list of ranges) or `chunks=(i, j)`.")


def check_latents_per_source(latents: Any, num_sources: int) -> None:
    if latents is not None and (not isinstance(latents, torch.Tensor) or latents.shape[:1] != (num_sources,)):
        got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
        raise ValueError(f"`latents` must be a tensor of one x_T per source ({num_sources}), got {got}.")


def per_pair(x: torch.Tensor, num_targets: int | None) -> torch.Tensor:
    """A source's tensor once for each of its pairs: `num_targets` times in a row for all pairs, else itself."""
    return x if num_targets is None else x.repeat_interleave(num_targets, 0)


def swap_variants(
    z_source: torch.Tensor, z_target: torch.Tensor, dims: Sequence[Dims], num_targets: int | None
) -> list[torch.Tensor]:
    r"""
    One `z` per range of `dims`: the source's with the range's dims taken from the target.

    Args:
        z_source, z_target (`torch.Tensor`): `(S, d)` and `(T, d)`.
        dims (`list[tuple[int, int]]`): Half-open dim ranges, one per variant.
        num_targets (`int`, *optional*): `T` to pair every source with every target (pair `p = s * T + t`); `None`
            pairs source `b` with target `b`.
    """
    if num_targets is not None:
        num_sources = z_source.shape[0]
        z_source, z_target = z_source.repeat_interleave(num_targets, 0), z_target.repeat(num_sources, 1)
    else:
        check_same_batch(z_source, z_target, "source", "target")
    variants = []
    for start, end in dims:
        z = z_source.clone()
        z[:, start:end] = z_target[:, start:end]
        variants.append(z)
    return variants


def check_alphas(alphas: Sequence[float]) -> list[float]:
    alphas = [float(a) for a in alphas]
    if not alphas or not all(math.isfinite(a) for a in alphas):
        raise ValueError(f"`alphas` must be a non-empty list of finite numbers, got {alphas}.")
    return alphas


def interpolation_variants(
    z_a: torch.Tensor, z_b: torch.Tensor, dims: Dims, alphas: Sequence[float]
) -> list[torch.Tensor]:
    """One `z` per α: A's, with the dims `dims` at `lerp(z_A, z_B, α)`."""
    check_same_batch(z_a, z_b, "image_a", "image_b")
    start, end = dims
    variants = []
    for alpha in alphas:
        z = z_a.clone()
        z[:, start:end] = torch.lerp(z_a[:, start:end], z_b[:, start:end], alpha)
        variants.append(z)
    return variants


def slerp(a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    """Spherical interpolation per sample (the official figures' x_T interpolation)."""
    a_flat, b_flat = a.flatten(1), b.flatten(1)
    cos = (a_flat * b_flat).sum(1) / (a_flat.norm(dim=1) * b_flat.norm(dim=1))
    theta = torch.acos(cos.clamp(-1.0, 1.0))[:, None]
    sin = torch.sin(theta)
    safe = sin.abs() > 1e-6
    wa = torch.where(safe, torch.sin((1 - alpha) * theta) / sin.clamp_min(1e-12), torch.full_like(theta, 1 - alpha))
    wb = torch.where(safe, torch.sin(alpha * theta) / sin.clamp_min(1e-12), torch.full_like(theta, alpha))
    return (wa * a_flat + wb * b_flat).view_as(a)


def edit_step(direction: Any, latent_dim: int, top_k: int | None, z_std: Any, device: torch.device) -> torch.Tensor:
    r"""
    The unit edit `√d·σ ⊙ w/‖w‖` of [`~DiTiPipeline.edit`], float32 on `device`.

    Args:
        direction (`torch.Tensor`): `w`, `(latent_dim,)`.
        latent_dim (`int`): `d`.
        top_k (`int`, *optional*): Keep only the `top_k` largest-|w| dims of `w`.
        z_std (`torch.Tensor` or list, *optional*): `σ`, `(latent_dim,)`; ones when `None`.
        device (`torch.device`): Where the step is computed.
    """
    d = latent_dim
    if not isinstance(direction, torch.Tensor) or direction.shape != (d,):
        raise ValueError(
            f"`direction` must be a tensor of shape ({d},), got {getattr(direction, 'shape', direction)}."
        )
    w = direction.to(device=device, dtype=torch.float32)
    if top_k is not None:
        if not 1 <= top_k <= d:
            raise ValueError(f"`top_k` must be in [1, {d}] (at most the model's latent_dim {d}), got {top_k}.")
        keep = torch.zeros_like(w, dtype=torch.bool)
        keep[w.abs().topk(top_k).indices] = True
        w = torch.where(keep, w, torch.zeros_like(w))
    if not torch.isfinite(w).all() or w.norm() == 0:
        raise ValueError("`direction` must be finite and non-zero.")
    std = torch.ones(d) if z_std is None else torch.as_tensor(z_std, dtype=torch.float32)
    if std.shape != (d,):
        raise ValueError(f"`z_std` must have shape ({d},), got {tuple(std.shape)}.")
    check_finite(std, "z_std")
    return math.sqrt(d) * std.to(w.device) * w / w.norm()


def check_scales(scales: float | Sequence[float]) -> list[float]:
    scales = [float(scales)] if isinstance(scales, (int, float)) else [float(s) for s in scales]
    if not all(math.isfinite(s) for s in scales):
        raise ValueError(f"`scales` must be finite numbers, got {scales}.")
    return scales


class DiTiEditMixin:
    r"""
    The edits of [`DiTiPipeline`]: `reconstruct`, `swap`, `interpolate` and `edit`, and the seam they share,
    `_generate_variants`. Each turns its arguments into `z` variants with the functions above and generates them
    with the pipeline's own `invert`, `encode`, `__call__`, `_resolve_range` and `_diffuse`, so it is only usable
    mixed into [`DiTiPipeline`].
    """

    def _generate_variants(
        self,
        variants: Sequence[torch.Tensor],
        latents: torch.Tensor | Sequence[torch.Tensor],
        num_inference_steps: int,
        output_type: str,
        batch_size: int | None,
        use_masks: bool,
        guidance: bool,
        return_dict: bool,
        start_timesteps: Sequence[int] | None = None,
        separately: bool = False,
    ) -> DiTiPipelineOutput | tuple:
        r"""
        The one seam behind every edit: `V` condition variants `(B, d)` of `B` sources, each generated from the
        source's starting point (`latents`: one `(B, C, H, W)` tensor shared by the variants, or one per variant),
        optionally from an intermediate time-step per variant. Returns `B × V` images, source-major.

        The variants are generated in one call, or one call per variant where their start time-steps differ or with
        `separately` (which keeps the batch of a large edit, such as an all-pairs swap, to `B` rows).
        """
        count = len(variants)
        starts = [latents] * count if isinstance(latents, torch.Tensor) else list(latents)
        tops = [None] * count if start_timesteps is None else list(start_timesteps)
        z = torch.stack(list(variants), 1).flatten(0, 1)
        common = {
            "num_inference_steps": num_inference_steps,
            "use_masks": use_masks,
            "guidance": guidance,
            "batch_size": batch_size,
        }
        if not separately and len(set(tops)) == 1:
            return self(
                z=z,
                latents=torch.stack(starts, 1).flatten(0, 1),
                output_type=output_type,
                start_timestep=tops[0],
                return_dict=return_dict,
                **common,
            )
        images = [
            self(z=v, latents=x, start_timestep=t, output_type="pt", **common).images
            for v, x, t in zip(variants, starts, tops)
        ]
        out = format_images(torch.stack(images, 1).flatten(0, 1), output_type)
        return DiTiPipelineOutput(images=out, latents=None, z=z) if return_dict else (out,)

    @torch.no_grad()
    def reconstruct(
        self,
        images: ImageInput,
        num_inference_steps: int = DEFAULT_NUM_INFERENCE_STEPS,
        output_type: str = "pil",
        batch_size: int | None = None,
        use_masks: bool = True,
        guidance: bool = True,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> DiTiPipelineOutput | tuple:
        r"""
        Autoencoding: `z = E(x_0)`, `x_T = invert(x_0, z)`, `x̂_0 = generate(x_T, z)`.

        Like every edit call, it takes `num_inference_steps` (DDIM steps of the inversion and of the generation),
        `output_type` (`"pil"`, `"np"` or `"pt"`), `batch_size` (generation batch), `use_masks` (`False`: PDAE's
        sampler, the whole `z` at every step), `guidance` (`False`: the frozen DDPM alone, for comparison),
        `generator` (noise of stochastic starts; DDIM inversion itself is deterministic) and `return_dict`.
        """
        check_output_type(output_type)
        inverted = self.invert(images, num_inference_steps=num_inference_steps, use_masks=use_masks, guidance=guidance)
        z = inverted.z if guidance else self.encode(images).z
        return self._generate_variants(
            [z], inverted.latents, num_inference_steps, output_type, batch_size, use_masks, guidance, return_dict
        )

    @torch.no_grad()
    def swap(
        self,
        source: ImageInput,
        target: ImageInput,
        timesteps: tuple[int, int] | Sequence[tuple[int, int]] | None = None,
        chunks: tuple[int, int] | Sequence[tuple[int, int]] | None = None,
        num_inference_steps: int = DEFAULT_NUM_INFERENCE_STEPS,
        output_type: str = "pil",
        batch_size: int | None = None,
        inversion: str = "ddim",
        latents: torch.Tensor | None = None,
        all_pairs: bool = False,
        use_masks: bool = True,
        guidance: bool = True,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> DiTiPipelineOutput | tuple:
        r"""
        Counterfactual generation: the source's `z` with the chunks of one time-step range (or chunk range) taken
        from the target. DiTi aims for late time-steps to hold coarse attributes and early ones fine attributes.

        Args:
            source, target: Images, the same number of each (any numbers with `all_pairs`).
            timesteps (`(lo, hi)` or a list of them): Half-open time-step ranges in [0, T]; every chunk whose
                time-steps meet the range is swapped (see [`TimestepPartition.resolve_range`]; a widened range warns
                with a [`~diti_hf.warning_types.ChunkWideningWarning`]). An empty range `(t, t)` gives the
                reconstruction.
            chunks (`(i, j)` or a list of them): Half-open chunk ranges; with `timesteps` too, they come after its
                ranges.
            inversion (`str`, defaults to `"ddim"`): Where generation starts. `"ddim"`: the source's deterministic
                masked-DDIM inversion `x_T` (the official protocol; the source's `x_T` also carries its attributes).
                `"stochastic"`: the source noised by the forward process to the top time-step of the swapped
                chunks, generated from there — attributes coarser than the range come from the source image,
                those of the range from the swapped chunks (with the source's own chunks below it).
            latents (`torch.Tensor`, *optional*): `x_T` to generate each source from instead of its inversion,
                `(num_sources, C, H, W)` (e.g. the target's inversion, or shared noise); only with `inversion="ddim"`.
            all_pairs (`bool`, defaults to `False`): Swap every source with every target instead of source `b` with
                target `b`. Sources are then inverted and both sides encoded `batch_size` images at a time, and each
                range is generated in its own call, so that a grid of many images stays within `batch_size`.
            generator (`torch.Generator` or list of them, *optional*): Noise of `inversion="stochastic"` (one per
                source for a list); unused by `"ddim"`.
            num_inference_steps, output_type, batch_size, use_masks, guidance, return_dict: As in
                [`~DiTiPipeline.reconstruct`].

        Returns:
            [`DiTiPipelineOutput`] with `P × R` images for `P` pairs and `R` ranges, pair-major: image `p * R + r` is
            pair `p` with range `r`. The pairs are the sources (`p = b`), or with `all_pairs` every source and target
            (`p = s * num_targets + t`). Each source is inverted (or noised) once for all its ranges and targets.
        """
        check_output_type(output_type)
        check_swap_arguments(inversion, latents, timesteps, chunks)
        ranges = []  # a loop, not a comprehension: the widening warning points at the caller's line
        for bounds in as_ranges(timesteps):
            ranges.append(self._resolve_range(bounds, None))
        for bounds in as_ranges(chunks):
            ranges.append(self._resolve_range(None, bounds))
        step = batch_size if all_pairs else None
        z_target = self.encode(target, batch_size=step).z
        if inversion == "ddim" and latents is None:
            inverted = self._invert_in_batches(source, step, num_inference_steps, use_masks, guidance)
            latents = inverted.latents
            z_source = inverted.z if guidance else self.encode(source, batch_size=step).z
        else:
            z_source = self.encode(source, batch_size=step).z
        check_latents_per_source(latents, z_source.shape[0])
        num_targets = z_target.shape[0] if all_pairs else None
        variants = swap_variants(z_source, z_target, [r.dims for r in ranges], num_targets)
        options = (num_inference_steps, output_type, batch_size, use_masks, guidance, return_dict)
        if latents is not None:
            return self._generate_variants(variants, per_pair(latents, num_targets), *options, separately=all_pairs)
        # one noise per source, shared by its ranges; each range starts at the top time-step of its chunks
        tops = [0 if r.empty else r.timesteps[1] - 1 for r in ranges]
        starts = [per_pair(x, num_targets) for x in self._diffuse(self.preprocess(source), tops, generator)]
        return self._generate_variants(variants, starts, *options, start_timesteps=tops, separately=all_pairs)

    def _invert_in_batches(
        self, images: ImageInput, batch_size: int | None, num_inference_steps: int, use_masks: bool, guidance: bool
    ) -> DiTiInversionOutput:
        """[`~DiTiPipeline.invert`] `batch_size` images at a time (all at once when `None`)."""
        options = {"num_inference_steps": num_inference_steps, "use_masks": use_masks, "guidance": guidance}
        if batch_size is None:
            return self.invert(images, **options)
        pixels = self.preprocess(images)
        parts = [self.invert(pixels[i : i + batch_size], **options) for i in range(0, pixels.shape[0], batch_size)]
        z = torch.cat([part.z for part in parts]) if guidance else None
        return DiTiInversionOutput(latents=torch.cat([part.latents for part in parts]), z=z)

    @torch.no_grad()
    def interpolate(
        self,
        image_a: ImageInput,
        image_b: ImageInput,
        alphas: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
        timesteps: tuple[int, int] | None = None,
        chunks: tuple[int, int] | None = None,
        slerp_latents: bool = False,
        num_inference_steps: int = DEFAULT_NUM_INFERENCE_STEPS,
        output_type: str = "pil",
        batch_size: int | None = None,
        use_masks: bool = True,
        guidance: bool = True,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> DiTiPipelineOutput | tuple:
        r"""
        Single-attribute interpolation: the dims of one time-step (or chunk) range go `lerp(z_A, z_B, α)`, the rest
        stay A's; generated from A's `x_T` (or, with `slerp_latents`, from `slerp(x_T^A, x_T^B, α)`).

        Args:
            image_a, image_b: Images, the same number of each.
            alphas (`Sequence[float]`): Interpolation weights; α = 0 is A's reconstruction.
            timesteps / chunks (`(lo, hi)`, *optional*): The range to interpolate; all dims when both are None.
            slerp_latents (`bool`, defaults to `False`): Also interpolate `x_T` spherically (official figures).
            num_inference_steps, output_type, batch_size, use_masks, guidance, generator, return_dict: As in
                [`~DiTiPipeline.reconstruct`].

        Returns:
            [`DiTiPipelineOutput`] with `B × len(alphas)` images, pair-major.
        """
        check_output_type(output_type)
        alphas = check_alphas(alphas)
        if timesteps is None and chunks is None:
            dims = (0, self.encoder.config.latent_dim)
        else:
            dims = self._resolve_range(timesteps, chunks).dims
        invert = {"num_inference_steps": num_inference_steps, "use_masks": use_masks, "guidance": guidance}
        inverted_a = self.invert(image_a, **invert)
        z_a = inverted_a.z if guidance else self.encode(image_a).z
        if slerp_latents:
            inverted_b = self.invert(image_b, **invert)
        z_b = inverted_b.z if slerp_latents and guidance else self.encode(image_b).z
        variants = interpolation_variants(z_a, z_b, dims, alphas)
        if slerp_latents:
            latents = [slerp(inverted_a.latents, inverted_b.latents, alpha) for alpha in alphas]
        else:
            latents = [inverted_a.latents] * len(alphas)
        return self._generate_variants(
            variants, latents, num_inference_steps, output_type, batch_size, use_masks, guidance, return_dict
        )

    @torch.no_grad()
    def edit(
        self,
        images: ImageInput,
        direction: torch.Tensor,
        scales: float | Sequence[float] = 1.0,
        z_std: torch.Tensor | None = None,
        top_k: int | None = None,
        num_inference_steps: int = DEFAULT_NUM_INFERENCE_STEPS,
        output_type: str = "pil",
        batch_size: int | None = None,
        use_masks: bool = True,
        guidance: bool = True,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> DiTiPipelineOutput | tuple:
        r"""
        Manipulation along a linear classifier direction `w` (docs/method.md §8): in z-normalised space,
        `z' = σ·((z − μ)/σ + s·√d·w/‖w‖) + μ = z + s·√d·σ ⊙ w/‖w‖`, generated from the image's own `x_T`.

        Args:
            images: The images to edit.
            direction (`torch.Tensor`): `w`, `(latent_dim,)`, e.g. a linear probe's weight row for one attribute.
            scales (`float` or list): Step sizes `s`; one output per image and scale.
            z_std (`torch.Tensor`, *optional*): Per-dim dataset std `σ` of `z`; defaults to the encoder config's
                `latent_std` if recorded there, else ones.
            top_k (`int`, *optional*): Keep only the `top_k` largest-|w| dims of the direction (a simple stand-in for
                the paper's learned sparse mask).
            num_inference_steps, output_type, batch_size, use_masks, guidance, generator, return_dict: As in
                [`~DiTiPipeline.reconstruct`].

        Returns:
            [`DiTiPipelineOutput`] with `B × len(scales)` images, image-major.
        """
        check_output_type(output_type)
        std = z_std if z_std is not None else self.encoder.config.latent_std
        step = edit_step(direction, self.encoder.config.latent_dim, top_k, std, self._execution_device)
        scales = check_scales(scales)
        inverted = self.invert(images, num_inference_steps=num_inference_steps, use_masks=use_masks, guidance=guidance)
        z = inverted.z if guidance else self.encode(images).z
        variants = [z + s * step.to(z.dtype) for s in scales]
        return self._generate_variants(
            variants, inverted.latents, num_inference_steps, output_type, batch_size, use_masks, guidance, return_dict
        )


__all__ = [
    "SWAP_INVERSIONS",
    "DiTiEditMixin",
    "as_ranges",
    "check_alphas",
    "check_latents_per_source",
    "check_scales",
    "check_swap_arguments",
    "edit_step",
    "interpolation_variants",
    "per_pair",
    "slerp",
    "swap_variants",
]
