"""A DDPMPipeline against the ideal denoiser of the data, without the oracle.

The ideal ε-predictor of an empirical distribution {x_i} is exact: E[x_0 | x_t] = Σ_i w_i x_i with
w ∝ exp(−‖x_t − √ᾱ_t x_i‖² / (2(1 − ᾱ_t))). With many reference images it is the best possible denoiser wherever
the posterior is broad (high t), and sampling with it checks the sampler itself: its samples must have the data's
object sizes. The script prints

1. the ε-MSE of the model and of the ideal denoiser on held-out images at each t (the model's excess loss), and
2. the object-size classes (`object_areas`, pixel bands) and the median object brightness of deterministic DDIM-50
   samples from one noise, denoised by the model, by the ideal denoiser, or by one above t = SWITCH and the other
   below — which side of the time axis the samples' bias comes from.

    python benchmarks/shapes32-v2/ideal_denoiser.py DDPM_DIR [NUM_REFERENCE] [NUM_SAMPLES] [SWITCH]
"""

import sys

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMPipeline
from object_areas import object_areas

from diti_hf.data.shapes import generate_shapes, timescale_factors

LOSS_TIMESTEPS = (100, 200, 300, 400, 500, 600, 700, 800, 900, 999)


def images(num: int, seed: int, size: int) -> tuple[torch.Tensor, np.ndarray]:
    """`(num, 3, size, size)` images in [-1, 1] and their scale classes."""
    data = generate_shapes(num, seed=seed, resolution=size, factors=timescale_factors())
    pixels = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 255 for im in data["image"]])
    return torch.from_numpy(pixels).permute(0, 3, 1, 2) * 2 - 1, np.asarray(data["scale"])


class IdealDenoiser:
    """ε of the posterior mean over `reference` (N, C, H, W) under the schedule `alphas_cumprod`."""

    def __init__(self, reference: torch.Tensor, alphas_cumprod: torch.Tensor):
        self.flat = reference.flatten(1).double()
        self.sq_norms = self.flat.pow(2).sum(1)
        self.alphas_cumprod = alphas_cumprod.double()

    def __call__(self, x: torch.Tensor, t: int) -> torch.Tensor:
        a = self.alphas_cumprod[int(t)]
        flat = x.flatten(1).double()
        # ‖x − √a x_i‖² without the per-row constant ‖x‖², which the softmax ignores
        logits = (2 * a.sqrt() * flat @ self.flat.T - a * self.sq_norms) / (2 * (1 - a))
        x0 = torch.softmax(logits, 1) @ self.flat
        return ((flat - a.sqrt() * x0) / (1 - a).sqrt()).float().view_as(x)


def eps_mse(denoiser, x_t: torch.Tensor, noise: torch.Tensor, t: int, batch: int = 64) -> float:
    """Mean squared ε error of `denoiser(x, t)` over `x_t`, in batches."""
    errors = [
        (denoiser(x_t[i : i + batch], t) - noise[i : i + batch]).pow(2).mean() for i in range(0, len(x_t), batch)
    ]
    return float(torch.stack(errors).mean())


def brightness(pixels: np.ndarray) -> np.ndarray:
    """Median object brightness (mean over channels of the pixels `object_areas` counts) of each image."""
    mask = np.abs(pixels - pixels[:, :1]).max(-1) > 0.2
    mask[:, -5:, -5:] = False
    return np.array([p[m].mean() if m.any() else np.nan for p, m in zip(pixels, mask)])


def main(path: str, num_reference: int = 20000, num_samples: int = 64, switch: int = 600) -> None:
    torch.set_num_threads(1)
    pipe = DDPMPipeline.from_pretrained(path)
    unet = pipe.unet.eval()
    size = unet.config.sample_size
    # the samplers step with ε from either denoiser: a v-prediction UNet's output is turned into ε below
    scheduler = DDIMScheduler.from_config(
        pipe.scheduler.config, clip_sample=True, set_alpha_to_one=True, prediction_type="epsilon"
    )
    predicts_v = pipe.scheduler.config.get("prediction_type", "epsilon") == "v_prediction"
    scheduler.set_timesteps(50)
    ideal = IdealDenoiser(images(num_reference, 11, size)[0], scheduler.alphas_cumprod)

    def model(x: torch.Tensor, t: int) -> torch.Tensor:
        with torch.no_grad():
            out = unet(x, int(t)).sample
        if not predicts_v:
            return out
        a = scheduler.alphas_cumprod[int(t)]
        return a.sqrt() * out + (1 - a).sqrt() * x  # ε = √ᾱ v + √(1−ᾱ) x_t

    held_out, scale = images(512, 12, size)
    noise = torch.randn(held_out.shape, generator=torch.Generator().manual_seed(0))
    print(f"ε-MSE on {len(held_out)} held-out images (ideal over {num_reference} reference images):")
    for t in LOSS_TIMESTEPS:
        a = scheduler.alphas_cumprod[t]
        x_t = a.sqrt() * held_out + (1 - a).sqrt() * noise
        errors = {name: eps_mse(fn, x_t, noise, t) for name, fn in (("model", model), ("ideal", ideal))}
        print(f"  t = {t}: model {errors['model']:.5f}, ideal {errors['ideal']:.5f}", flush=True)

    data_pixels = (held_out / 2 + 0.5).permute(0, 2, 3, 1).numpy()
    areas = object_areas(data_pixels)
    edges = [(np.percentile(areas[scale == c], 90) + np.percentile(areas[scale == c + 1], 10)) / 2 for c in (0, 1)]
    print(
        f"data: small/medium/large {np.bincount(np.digitize(areas, edges), minlength=3) / len(areas)}, "
        f"object brightness median {np.nanmedian(brightness(data_pixels)):.2f}"
    )
    start = torch.randn(num_samples, 3, size, size, generator=torch.Generator().manual_seed(1))
    samplers = {
        "model": (model, model),
        "ideal": (ideal, ideal),
        f"ideal for t >= {switch}, model below": (ideal, model),
        f"model for t >= {switch}, ideal below": (model, ideal),
    }
    for name, (high, low) in samplers.items():
        x = start.clone()
        for t in scheduler.timesteps:
            eps = high(x, t) if t >= switch else low(x, t)
            x = scheduler.step(eps, t, x, eta=0.0).prev_sample
        pixels = (x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
        fractions = np.bincount(np.digitize(object_areas(pixels), edges), minlength=3) / num_samples
        print(
            f"DDIM-50 η 0, {name}: small/medium/large {fractions}, "
            f"object brightness median {np.nanmedian(brightness(pixels)):.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:]))
