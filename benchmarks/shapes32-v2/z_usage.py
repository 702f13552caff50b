"""How much a trained DiTi/PDAE uses its representation: the model's training loss (`diti_loss`, mode `base`) on
held-out `diti-shapes-v2` images with the encoder's `z`, against the same loss with `z = 0` (same images, noise and
time-steps; the decoder's part that does not depend on `z` is kept), as the relative reduction per quarter of the
time axis. 0 means the decoder ignores `z` there; the reduction grows as the encoder learns what the frozen DDPM
cannot infer from `x_t` alone.

    python benchmarks/shapes32-v2/z_usage.py PIPELINE_DIR [PIPELINE_DIR ...]
"""

import sys

import torch

from diti_hf import DiTiPipeline
from diti_hf.data.shapes import render_shapes, sample_factor_codes, timescale_factors
from diti_hf.sampling import DiffusionCoefficients
from diti_hf.training.loss import diti_loss

NUM_IMAGES = 256
QUARTERS = ((0, 250), (250, 500), (500, 750), (750, 1000))


def z_usage(path: str) -> tuple[float, float, list[float]]:
    """Returns the loss with `z`, the loss with `z = 0`, and the relative reduction in each quarter."""
    pipe = DiTiPipeline.from_pretrained(path)
    factors = timescale_factors()
    pixels = render_shapes(sample_factor_codes(NUM_IMAGES, seed=7, factors=factors), factors)
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1
    coefficients = DiffusionCoefficients.from_scheduler_config(pipe.scheduler.config)
    generator = torch.Generator().manual_seed(0)
    timesteps = torch.randint(0, coefficients.num_train_timesteps, (NUM_IMAGES,), generator=generator)
    noise = torch.randn(images.shape, generator=generator)
    with torch.no_grad():
        z = pipe.encoder(images).z
        with_z, without_z = (
            diti_loss(
                pipe.unet, pipe.decoder, c, images, pipe.partition, coefficients, "base", timesteps, noise
            ).per_sample
            for c in (z, torch.zeros_like(z))
        )
    reduction = []
    for start, end in QUARTERS:
        inside = (timesteps >= start) & (timesteps < end)
        reduction.append(1.0 - (with_z[inside].sum() / without_z[inside].sum()).item())
    return with_z.mean().item(), without_z.mean().item(), reduction


def main(paths: list[str]) -> None:
    torch.set_num_threads(1)
    print("| model | loss with z | loss with z = 0 | reduction t in [0,250) / [250,500) / [500,750) / [750,1000) |")
    print("|---|---|---|---|")
    for path in paths:
        with_z, without_z, reduction = z_usage(path)
        print(f"| {path} | {with_z:.3e} | {without_z:.3e} | {' / '.join(f'{r:.3f}' for r in reduction)} |")


if __name__ == "__main__":
    main(sys.argv[1:])
