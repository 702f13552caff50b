"""Where along the time axis a DDPMPipeline changes object sizes: real `diti-shapes-v2` images are noised to x_t
(q-sampling, one fixed noise seed) and denoised back by the deterministic DDIM-50 sampler from t; the median ratio of
the result's object area to the original's (`object_areas`, a pixel count, no oracle) is printed per scale class.
A faithful model keeps the ratio near 1 at every t where the class is still legible in x_t.

    python benchmarks/shapes32-v2/denoise_sizes.py DDPM_DIR [NUM_IMAGES]
"""

import sys

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMPipeline
from object_areas import object_areas

from diti_hf.data.shapes import generate_shapes, timescale_factors

START_TIMESTEPS = (200, 400, 600, 800, 999)


def main(path: str, num: int = 96) -> None:
    torch.set_num_threads(1)
    pipe = DDPMPipeline.from_pretrained(path)
    unet = pipe.unet.eval()
    data = generate_shapes(num, seed=7, resolution=unet.config.sample_size, factors=timescale_factors())
    pixels = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 255 for im in data["image"]])
    scale = np.asarray(data["scale"])
    names = data.features["scale"].names
    original = np.maximum(object_areas(pixels), 1)
    x0 = torch.from_numpy(pixels).permute(0, 3, 1, 2) * 2 - 1
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=True, set_alpha_to_one=True)
    scheduler.set_timesteps(50)
    noise = torch.Generator().manual_seed(0)
    for start in START_TIMESTEPS:
        alpha_bar = scheduler.alphas_cumprod[start]
        x = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * torch.randn(x0.shape, generator=noise)
        with torch.no_grad():
            for t in scheduler.timesteps[scheduler.timesteps <= start]:
                x = scheduler.step(unet(x, t).sample, t, x, eta=0.0).prev_sample
        ratio = object_areas((x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()) / original
        medians = ", ".join(f"{name} {np.median(ratio[scale == c]):.2f}" for c, name in enumerate(names))
        print(f"from t = {start}: area ratio (median) {medians}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:]))
