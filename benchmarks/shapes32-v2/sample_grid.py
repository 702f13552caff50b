"""Twelve samples of a DDPMPipeline folder with deterministic DDIM (η = 0, top row) and η = 1 (middle row), over twelve
`diti-shapes-v2` images (bottom row), as one PNG: what the sample-validity numbers of benchmarks/results/ddpm.md look
like.

    python benchmarks/shapes32-v2/sample_grid.py DDPM_DIR OUT.png
"""

import sys

import numpy as np
import PIL.Image
import torch
from diffusers import DDIMScheduler, DDPMPipeline
from object_areas import sample  # this folder's sampler (the script's folder is on sys.path)

from diti_hf.data.shapes import generate_shapes, timescale_factors
from diti_hf.visualization import image_grid


def main(path: str, out: str, num: int = 12, steps: int = 50) -> None:
    torch.set_num_threads(1)
    pipe = DDPMPipeline.from_pretrained(path)
    unet = pipe.unet.eval()
    size = unet.config.sample_size
    rows = []
    for eta in (0.0, 1.0):
        scheduler = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=True, set_alpha_to_one=True)
        scheduler.set_timesteps(steps)
        pixels = (sample(unet, scheduler, num, eta) * 255).round().astype(np.uint8)
        rows.append([PIL.Image.fromarray(np.ascontiguousarray(p)) for p in pixels])
    data = generate_shapes(num, seed=5, resolution=size, factors=timescale_factors())
    rows.append([image.convert("RGB") for image in data["image"]])
    image_grid(rows, zoom=3).save(out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
