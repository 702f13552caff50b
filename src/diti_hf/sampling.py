"""DiTi's sampler layer: the coefficient tables of the loss and the sampler (docs/method.md §4), the DDIM step count and
sampling grid, and one deterministic (η = 0) DDIM step and its inverse (§7).

Everything here is maths on tensors: the steps take the frozen UNet's ε and the decoder's shift `G` already computed
(by [`~diti_hf.models.denoise`] on the masked condition), so that `DiTiPipeline`'s loop is: mask `z`, denoise, step.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import torch

from .safe_io import short_repr

NOISE_SCHEDULE_KEYS = ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "trained_betas")
# Far above any DDPM in use (1000-4000), far below what the per-t tables could not hold: a config is read from files
# we may not trust, and diffusers allocates several float tables of this length before anything else is checked.
MAX_TRAIN_TIMESTEPS = 100_000
# What a frozen DDPM may predict; DiTi's loss and sampler read ε, and v converts to it exactly (`DiffusionCoefficients.eps`).
PREDICTION_TYPES = ("epsilon", "v_prediction")


def check_scheduler_config(config: dict[str, Any], where: str = "scheduler config") -> None:
    r"""
    Raises `ValueError` naming the field unless `config` describes a noise schedule that can be built: an integer
    `num_train_timesteps` in [1, `MAX_TRAIN_TIMESTEPS`], finite `beta_start`/`beta_end`, and `trained_betas` (if
    given) of that length, each finite and in (0, 1). Called before a scheduler is constructed from it.
    """
    T = config.get("num_train_timesteps", 1000)
    if isinstance(T, bool) or not isinstance(T, int) or not 1 <= T <= MAX_TRAIN_TIMESTEPS:
        raise ValueError(
            f"{where}: `num_train_timesteps` must be an int in [1, {MAX_TRAIN_TIMESTEPS}], got {short_repr(T)}."
        )
    for key in ("beta_start", "beta_end"):
        value = config.get(key, 1e-4)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{where}: `{key}` must be a finite number, got {short_repr(value)}.")
    betas = config.get("trained_betas")
    if betas is not None:
        if hasattr(betas, "tolist"):  # a numpy array or tensor given in code
            betas = betas.tolist()
        if not isinstance(betas, (list, tuple)) or len(betas) != T:
            raise ValueError(
                f"{where}: `trained_betas` must be a list of num_train_timesteps={T} numbers, got {short_repr(betas)}."
            )
        bad = [
            i for i, b in enumerate(betas)
            if isinstance(b, bool) or not isinstance(b, (int, float)) or not (math.isfinite(b) and 0 < b < 1)
        ]  # fmt: skip
        if bad:
            raise ValueError(
                f"{where}: `trained_betas` must be finite numbers in (0, 1); entry {bad[0]} is {short_repr(betas[bad[0]])}."
            )


def noise_schedule_of(config: dict[str, Any]) -> dict[str, Any]:
    """The entries of a diffusers scheduler config that define its betas (what a DiTi decoder was trained with)."""
    schedule = {key: config.get(key) for key in NOISE_SCHEDULE_KEYS}
    if schedule["trained_betas"] is not None:
        schedule["trained_betas"] = [float(b) for b in schedule["trained_betas"]]
    return schedule


@dataclass(frozen=True)
class DiffusionCoefficients:
    r"""
    Per-time-step tables, each of shape `(T,)`, float32.

    Attributes:
        alphas_cumprod: `ᾱ_t`.
        shift_coef: `−√α_t (1 − ᾱ_{t−1}) / √(1 − ᾱ_t)` (0 at t = 0), the factor of the decoder shift `G` in the
            training loss.
        loss_weight: `SNR_t^0.1 / (1 + SNR_t)` with `SNR_t = ᾱ_t / (1 − ᾱ_t)`.
        sampling_coef: `−√(1 − ᾱ_t)`, the factor of `G` when sampling.
        sqrt_alphas_cumprod, sqrt_one_minus_alphas_cumprod: `√ᾱ_t`, `√(1 − ᾱ_t)` (forward process).
        prediction_type: What the frozen UNet outputs, `"epsilon"` or `"v_prediction"` (v = √ᾱ ε − √(1 − ᾱ) x_0);
            [`~DiffusionCoefficients.eps`] turns either into ε.
        sqrt_recip_alphas_cumprod, sqrt_recipm1_alphas_cumprod: `√(1/ᾱ_t)`, `√(1/ᾱ_t − 1)`, so that
            `x̂_0 = √(1/ᾱ) x_t − √(1/ᾱ − 1) ε` and `ε = (√(1/ᾱ) x_t − x̂_0) / √(1/ᾱ − 1)`. Taking these products of
            float64-derived tables, rather than dividing by float32 square roots, stays closest to the official
            float32 sampler (measured on the fixture's 10-step inversion: 1.3e-4 vs 2.1e-4 max abs error).
    """

    alphas_cumprod: torch.Tensor
    shift_coef: torch.Tensor
    loss_weight: torch.Tensor
    sampling_coef: torch.Tensor
    sqrt_alphas_cumprod: torch.Tensor
    sqrt_one_minus_alphas_cumprod: torch.Tensor
    sqrt_recip_alphas_cumprod: torch.Tensor
    sqrt_recipm1_alphas_cumprod: torch.Tensor
    prediction_type: str = "epsilon"

    @property
    def num_train_timesteps(self) -> int:
        return self.alphas_cumprod.shape[0]

    @classmethod
    def from_betas(cls, betas: torch.Tensor, prediction_type: str = "epsilon") -> DiffusionCoefficients:
        """
        Builds the tables from a `(T,)` tensor of betas (computed in float64, stored in float32); each beta must be
        finite and in (0, 1), else every table entry after it would be NaN or infinite.
        """
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"`prediction_type` must be one of {PREDICTION_TYPES}, got {short_repr(prediction_type)}."
            )
        betas = torch.as_tensor(betas).to(torch.float64)
        if betas.ndim != 1 or not 1 <= betas.shape[0] <= MAX_TRAIN_TIMESTEPS:
            raise ValueError(
                f"`betas` must be a (T,) tensor with 1 <= T <= {MAX_TRAIN_TIMESTEPS}, got {tuple(betas.shape)}."
            )
        bad = ~(torch.isfinite(betas) & (betas > 0) & (betas < 1))
        if bad.any():
            t = int(bad.nonzero()[0])
            raise ValueError(f"`betas` must be finite and in (0, 1); beta at t={t} is {float(betas[t])}.")
        alphas = 1.0 - betas
        alphas_cumprod = torch.cumprod(alphas, dim=0)
        alphas_cumprod_prev = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
        shift_coef = -alphas.sqrt() * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod).sqrt()
        snr = alphas_cumprod / (1.0 - alphas_cumprod)
        loss_weight = snr.pow(0.1) / (1.0 + snr)
        sampling_coef = -(1.0 - alphas_cumprod).sqrt()
        tables = (
            alphas_cumprod,
            shift_coef,
            loss_weight,
            sampling_coef,
            alphas_cumprod.sqrt(),
            (1.0 - alphas_cumprod).sqrt(),
            (1.0 / alphas_cumprod).sqrt(),
            (1.0 / alphas_cumprod - 1.0).sqrt(),
        )
        return cls(*(x.to(torch.float32) for x in tables), prediction_type=prediction_type)

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod: torch.Tensor) -> DiffusionCoefficients:
        """Builds the tables from `(T,)` `ᾱ_t` (the betas are `1 − ᾱ_t / ᾱ_{t−1}`)."""
        alphas_cumprod = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        previous = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
        return cls.from_betas(1.0 - alphas_cumprod / previous)

    @classmethod
    def from_scheduler_config(cls, config: dict[str, Any]) -> DiffusionCoefficients:
        """Builds the tables from any diffusers scheduler config (its betas through `DDPMScheduler`, and its
        `prediction_type`)."""
        from diffusers import DDPMScheduler  # only here: the rest of the sampler needs torch alone

        check_scheduler_config(dict(config))
        prediction_type = config.get("prediction_type", "epsilon")
        return cls.from_betas(DDPMScheduler.from_config(dict(config)).betas, prediction_type)

    def to(self, device: torch.device | str) -> DiffusionCoefficients:
        tables = (getattr(self, f).to(device) for f in self.__dataclass_fields__ if f != "prediction_type")
        return DiffusionCoefficients(*tables, prediction_type=self.prediction_type)

    def eps(self, model_output: torch.Tensor, sample: torch.Tensor, timestep: torch.Tensor | int) -> torch.Tensor:
        r"""
        ε of the frozen UNet's output at `x_t = sample`: the output itself for an ε-prediction DDPM, and
        `√ᾱ_t v + √(1 − ᾱ_t) x_t` for a v-prediction one (exact: v = √ᾱ ε − √(1 − ᾱ) x_0 and x_t = √ᾱ x_0 + √(1 − ᾱ) ε).

        Args:
            model_output (`torch.Tensor`): The UNet's output, `(B, C, H, W)`.
            sample (`torch.Tensor`): `x_t`, the same shape.
            timestep (`torch.Tensor` or `int`): Integer time-steps, scalar or `(B,)`.
        """
        if self.prediction_type == "epsilon":
            return model_output
        index = torch.as_tensor(timestep, device=self.sqrt_alphas_cumprod.device).long().reshape(-1)
        shape = (-1,) + (1,) * (model_output.ndim - 1)
        sqrt_alpha = self.sqrt_alphas_cumprod[index].view(shape).to(model_output.device, model_output.dtype)
        sqrt_one_minus = (
            self.sqrt_one_minus_alphas_cumprod[index].view(shape).to(model_output.device, model_output.dtype)
        )
        return sqrt_alpha * model_output + sqrt_one_minus * sample


# ------------------------------------------------------------------------------------------------ the DDIM sampler
# The pipeline API's step count, also the default `--steps` of `diti-hf reconstruct`, `swap`, `interpolate` and `edit`
# (the app's page starts lower, at `diti_hf.app.DEFAULT_STEPS`).
DEFAULT_NUM_INFERENCE_STEPS = 50


def check_num_inference_steps(num_inference_steps: Any, num_train_timesteps: int) -> int:
    r"""
    Returns the DDIM step count as an `int`, or raises a one-line `ValueError` naming `num_inference_steps`, the
    value and the range: a grid of distinct time-steps in `[0, T)` has between 1 and `T` of them.

    Args:
        num_inference_steps (`Any`): The value to check (an `int`; a numpy integer is accepted, a `bool` is not).
        num_train_timesteps (`int`): `T`, the frozen DDPM's number of training time-steps.
    """
    valid = isinstance(num_inference_steps, numbers.Integral) and not isinstance(num_inference_steps, bool)
    if not valid or not 1 <= num_inference_steps <= num_train_timesteps:
        raise ValueError(
            f"`num_inference_steps` must be an int in [1, {num_train_timesteps}] (at most one step per training "
            f"time-step), got {short_repr(num_inference_steps)}."
        )
    return int(num_inference_steps)


def sampling_grid(scheduler: Any, num_inference_steps: int, num_train_timesteps: int) -> list[int]:
    r"""
    The `num_inference_steps` distinct time-steps of the sampling grid, ascending, spread over `[0, T)`.

    `"leading"` (the official grid) and `"trailing"` spacings are computed here as `⌊i·T/n⌋` (`+ steps_offset`)
    and `T − 1 − ⌊i·T/n⌋`: equal to diffusers' grids when `n` divides `T`, and of the asked length and range when
    it does not. diffusers' `"leading"` steps by `T // n` and stops short of `T` (at `n = 600` its largest step is
    599, so the chunks of later time-steps never act), and its `"trailing"` grid has `n + 1` entries for some `n`.
    `"linspace"` is diffusers' own.

    Args:
        scheduler (`DDIMScheduler`): Its config gives `timestep_spacing` and `steps_offset`.
        num_inference_steps (`int`): `n`, checked by [`check_num_inference_steps`].
        num_train_timesteps (`int`): `T`.

    Raises:
        `ValueError` for a bad `num_inference_steps`, or if the scheduler's spacing or offset puts a time-step
        outside `[0, T)`.
    """
    T, n = num_train_timesteps, check_num_inference_steps(num_inference_steps, num_train_timesteps)
    config = scheduler.config
    spacing = config.get("timestep_spacing", "leading")
    if spacing == "leading":
        grid = [i * T // n + int(config.get("steps_offset", 0)) for i in range(n)]
    elif spacing == "trailing":
        grid = sorted(T - 1 - i * T // n for i in range(n))
    else:
        scheduler.set_timesteps(n)
        grid = sorted(int(t) for t in scheduler.timesteps)
    if len(grid) != n or len(set(grid)) != n or grid[0] < 0 or grid[-1] >= T:
        raise ValueError(
            f"the scheduler's grid for num_inference_steps={n} (timestep_spacing={spacing!r}, steps_offset="
            f"{config.get('steps_offset', 0)}) is not {n} distinct time-steps in [0, {T})."
        )
    return grid


def ddim_step(
    coefficients: DiffusionCoefficients,
    sample: torch.Tensor,
    timestep: int,
    prev_timestep: int | None,
    eps: torch.Tensor,
    shift: torch.Tensor | None = None,
    final_alpha_cumprod: float = 1.0,
) -> torch.Tensor:
    r"""
    One deterministic (η = 0) masked DDIM step of generation, `x_t → x_{t'}` with `t' < t`.

    The noise estimate is `ε̂ = ε_θ(x_t, t) − √(1 − ᾱ_t) · G(x_t, t, z_t)`; `x̂_0 = √(1/ᾱ_t) x_t − √(1/ᾱ_t − 1) ε̂`
    is clamped to [−1, 1] and `ε̂` recomputed from it; then `x_{t'} = √ᾱ_{t'} x̂_0 + √(1 − ᾱ_{t'}) ε̂`.

    Args:
        coefficients ([`DiffusionCoefficients`]): The frozen DDPM's tables, on `sample`'s device.
        sample (`torch.Tensor`): `x_t`, `(B, C, H, W)`.
        timestep (`int`): `t`.
        prev_timestep (`int`, *optional*): `t'`, the next smaller time-step of the grid; `None` for the last step,
            which goes to `ᾱ = final_alpha_cumprod` (and, at 1, returns `x̂_0`).
        eps (`torch.Tensor`): `ε_θ(x_t, t)`, e.g. [`~diti_hf.models.DenoiseOutput`]'s `eps`.
        shift (`torch.Tensor`, *optional*): `G(x_t, t, z_t)` on the condition masked for `t`; `None`: ε_θ alone.
        final_alpha_cumprod (`float`, defaults to 1.0): `ᾱ` after the last step (`DDIMScheduler.final_alpha_cumprod`).

    Returns:
        `torch.Tensor`: `x_{t'}`.
    """
    if prev_timestep is not None and not prev_timestep < timestep:
        raise ValueError(f"`prev_timestep` must be smaller than `timestep`={timestep}, got {prev_timestep}.")
    return _ddim_update(coefficients, sample, timestep, prev_timestep, final_alpha_cumprod, eps, shift)


def ddim_inverse_step(
    coefficients: DiffusionCoefficients,
    sample: torch.Tensor,
    timestep: int,
    next_timestep: int | None,
    eps: torch.Tensor,
    shift: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""
    One step of deterministic DDIM inversion, `x_t → x_{t'}` with `t' > t`: the update of [`ddim_step`] run towards
    larger time-steps, with `ε̂` read at `x_t` (DDIM inversion's approximation). With the same `eps` and `shift`, it
    undoes [`ddim_step`] up to float error whenever `x̂_0` needs no clamping.

    Args:
        coefficients ([`DiffusionCoefficients`]): The frozen DDPM's tables, on `sample`'s device.
        sample (`torch.Tensor`): `x_t`, `(B, C, H, W)`.
        timestep (`int`): `t`.
        next_timestep (`int`, *optional*): `t'`, the next larger time-step of the grid; `None` for the last step,
            which goes to `ᾱ = 0` and so returns `ε̂` as `x_T`.
        eps (`torch.Tensor`): `ε_θ(x_t, t)`.
        shift (`torch.Tensor`, *optional*): `G(x_t, t, z_t)` on the condition masked for `t`; `None`: ε_θ alone.

    Returns:
        `torch.Tensor`: `x_{t'}`.
    """
    if next_timestep is not None and not next_timestep > timestep:
        raise ValueError(f"`next_timestep` must be larger than `timestep`={timestep}, got {next_timestep}.")
    return _ddim_update(coefficients, sample, timestep, next_timestep, 0.0, eps, shift)


def _ddim_update(
    c: DiffusionCoefficients,
    sample: torch.Tensor,
    timestep: int,
    to_timestep: int | None,
    end_alpha_cumprod: float,
    eps: torch.Tensor,
    shift: torch.Tensor | None,
) -> torch.Tensor:
    """The DDIM update both directions share: from `x_t` to `to_timestep`, or to `ᾱ = end_alpha_cumprod` if `None`."""
    if to_timestep is None:
        # float32 square roots of the float32 ᾱ, as the scheduler's own final_alpha_cumprod
        sqrt_alpha_to = c.sqrt_alphas_cumprod.new_tensor(end_alpha_cumprod).sqrt()
        sqrt_one_minus_alpha_to = c.sqrt_alphas_cumprod.new_tensor(1 - end_alpha_cumprod).sqrt()
    else:
        sqrt_alpha_to = c.sqrt_alphas_cumprod[to_timestep]
        sqrt_one_minus_alpha_to = c.sqrt_one_minus_alphas_cumprod[to_timestep]
    if shift is not None:
        eps = eps + c.sampling_coef[timestep] * shift
    sqrt_recip, sqrt_recipm1 = c.sqrt_recip_alphas_cumprod[timestep], c.sqrt_recipm1_alphas_cumprod[timestep]
    x0 = (sqrt_recip * sample - sqrt_recipm1 * eps).clamp(-1, 1)
    eps = (sqrt_recip * sample - x0) / sqrt_recipm1
    return x0 * sqrt_alpha_to + sqrt_one_minus_alpha_to * eps


__all__ = [
    "DEFAULT_NUM_INFERENCE_STEPS",
    "MAX_TRAIN_TIMESTEPS",
    "NOISE_SCHEDULE_KEYS",
    "PREDICTION_TYPES",
    "DiffusionCoefficients",
    "check_num_inference_steps",
    "check_scheduler_config",
    "ddim_inverse_step",
    "ddim_step",
    "noise_schedule_of",
    "sampling_grid",
]
