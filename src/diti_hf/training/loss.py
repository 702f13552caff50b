"""The DiTi training loss (docs/method.md §6): PDAE's weighted ε-matching with a time-step-masked condition."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import UNet2DModel
from diffusers.utils.torch_utils import randn_tensor
from torch import nn

from ..models.decoder import DiTiDecoderModel
from ..models.denoiser import denoise
from ..partition import TimestepPartition
from ..sampling import DiffusionCoefficients

LOSS_MODES = ("base", "stop_grad", "dual")
# `official`: weight[t] alone (docs/method.md §4); `interval`: each chunk's samples rescaled to the same mean loss.
LOSS_WEIGHTINGS = ("official", "interval")


@dataclass
class DiTiLossOutput:
    """
    Attributes:
        loss (`torch.Tensor`): Scalar, the mean over every element (and, for `dual`, the sum of both passes).
        per_sample (`torch.Tensor`): `(B,)` mean loss of each sample, for the per-t loss histogram.
        timesteps (`torch.Tensor`): `(B,)` the time-steps used.
        elementwise (`torch.Tensor`): `(B, C, H, W)` the weighted squared error.
    """

    loss: torch.Tensor
    per_sample: torch.Tensor
    timesteps: torch.Tensor
    elementwise: torch.Tensor


def condition_for_timesteps(
    z: torch.Tensor, timesteps: torch.Tensor, partition: TimestepPartition, stop_grad: bool
) -> torch.Tensor:
    r"""
    The decoder's condition at each sample's time-step: `z ⊙ mask[idx(t)]`. With `stop_grad`, the dims of
    earlier chunks are detached (`sg(z) ⊙ receding + z ⊙ own`): same value, but the encoder learns each chunk only
    from the time-steps that own it. Under the partition's `mask_mode="interval"` the condition is `z ⊙ own[idx(t)]`
    (no earlier chunk is seen, so `stop_grad` changes nothing).
    """
    if partition.mask_mode == "interval":
        return z * partition.masks_for_timesteps(timesteps, "own").to(z.dtype)
    if not stop_grad:
        return z * partition.masks_for_timesteps(timesteps, "cumulative").to(z.dtype)
    own = partition.masks_for_timesteps(timesteps, "own").to(z.dtype)
    receding = partition.masks_for_timesteps(timesteps, "receding").to(z.dtype)
    return z.detach() * receding + z * own


def diti_loss(
    unet: UNet2DModel,
    decoder: DiTiDecoderModel,
    z: torch.Tensor,
    images: torch.Tensor,
    partition: TimestepPartition,
    coefficients: DiffusionCoefficients,
    mode: str = "stop_grad",
    timesteps: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> DiTiLossOutput:
    r"""
    DiTi's loss for one batch: `mean(weight[t] · (ε − (ε_θ(x_t, t) + shift_coef[t] · G(x_t, t, c)))²)`.

    Args:
        unet (`UNet2DModel`): The frozen DDPM (never receives gradient).
        decoder ([`DiTiDecoderModel`]): The trainable shift branch.
        z (`torch.Tensor`): Encoder output for `images`, `(B, latent_dim)`.
        images (`torch.Tensor`): Clean images `x_0` in [-1, 1], `(B, C, H, W)`.
        partition ([`TimestepPartition`]): The time-step partition (`num_chunks=1` gives PDAE).
        coefficients ([`DiffusionCoefficients`]): Tables of the frozen DDPM's schedule.
        mode (`str`, defaults to `"stop_grad"`): `"base"`, `"stop_grad"` or `"dual"` (both, losses summed).
        timesteps (`torch.Tensor`, *optional*): `(B,)` integer time-steps; drawn uniformly from `generator` if absent.
        noise (`torch.Tensor`, *optional*): ε; drawn from `generator` if absent.
        generator (`torch.Generator`, *optional*): Source of `timesteps` and `noise`.

    Returns:
        [`DiTiLossOutput`].
    """
    if mode not in LOSS_MODES:
        raise ValueError(f"`mode` must be one of {LOSS_MODES}, got {mode!r}.")
    batch = images.shape[0]
    if z.shape != (batch, partition.latent_dim):
        raise ValueError(f"`z` must have shape ({batch}, {partition.latent_dim}), got {tuple(z.shape)}.")
    if partition.num_train_timesteps != coefficients.num_train_timesteps:
        raise ValueError(
            f"`partition` has T={partition.num_train_timesteps} but the schedule has "
            f"T={coefficients.num_train_timesteps}."
        )
    device = images.device
    if timesteps is None:
        rng_device = generator.device if generator is not None else device
        timesteps = torch.randint(0, partition.num_train_timesteps, (batch,), generator=generator, device=rng_device)
    timesteps = timesteps.to(device)
    if noise is None:
        noise = randn_tensor(images.shape, generator=generator, device=device, dtype=images.dtype)
    tables = coefficients.to(device) if coefficients.alphas_cumprod.device != device else coefficients

    def per_t(table: torch.Tensor) -> torch.Tensor:
        return table[timesteps].to(images.dtype).view(batch, 1, 1, 1)

    noisy = per_t(tables.sqrt_alphas_cumprod) * images + per_t(tables.sqrt_one_minus_alphas_cumprod) * noise
    weight, shift_coef = per_t(tables.loss_weight), per_t(tables.shift_coef)

    stop_grads = {"base": (False,), "stop_grad": (True,), "dual": (False, True)}[mode]
    condition = condition_for_timesteps(z, timesteps, partition, stop_grads[0])
    out = denoise(unet, decoder, noisy, timesteps, condition, coefficients=tables)
    shifts = [out.shift]
    for stop_grad in stop_grads[1:]:  # dual: the second condition reuses the frozen features and ε_θ
        shifts.append(decoder(out.features, condition_for_timesteps(z, timesteps, partition, stop_grad)).sample)
    elementwise = sum(weight * (noise - (out.eps + shift_coef * shift)).square() for shift in shifts)
    per_sample = elementwise.flatten(1).mean(1)
    return DiTiLossOutput(loss=per_sample.mean(), per_sample=per_sample, timesteps=timesteps, elementwise=elementwise)


class IntervalLossNormalizer(nn.Module):
    r"""
    Gives every chunk's time-steps a loss of the same size: each sample's loss is divided by the running mean loss of
    its chunk and multiplied by the mean of those running means over the chunks, so the overall scale (and the
    learning rate that suits it) stays that of the official loss.

    Under the official weighting the ε error is tiny at small `t` and largest in the middle, so the late intervals'
    chunks get gradients far smaller than the middle ones'. The running means are buffers: a checkpoint resumes them.

    Args:
        num_chunks (`int`): Number of chunks `k`.
        momentum (`float`, defaults to 0.99): Weight of the old running mean at each update.
    """

    def __init__(self, num_chunks: int, momentum: float = 0.99):
        super().__init__()
        if not 0 <= momentum < 1:
            raise ValueError(f"`momentum` must lie in [0, 1), got {momentum}.")
        self.momentum = momentum
        self.register_buffer("running_mean", torch.zeros(num_chunks))
        self.register_buffer("seen", torch.zeros(num_chunks, dtype=torch.bool))

    def forward(self, per_sample: torch.Tensor, chunks: torch.Tensor) -> torch.Tensor:
        """The normalised scalar loss of a batch: `per_sample` `(B,)` losses of samples in `chunks` `(B,)`."""
        with torch.no_grad():
            values = per_sample.detach().float()
            sums = torch.zeros_like(self.running_mean).index_add_(0, chunks, values)
            counts = torch.zeros_like(self.running_mean).index_add_(0, chunks, torch.ones_like(values))
            present = counts > 0
            batch_mean = sums / counts.clamp(min=1)
            updated = torch.where(
                self.seen, self.momentum * self.running_mean + (1 - self.momentum) * batch_mean, batch_mean
            )
            self.running_mean.copy_(torch.where(present, updated, self.running_mean))
            self.seen |= present
            floor = torch.finfo(torch.float32).tiny
            scale = self.running_mean[self.seen].mean() / self.running_mean[chunks].clamp(min=floor)
        return (per_sample * scale.to(per_sample.dtype)).mean()
