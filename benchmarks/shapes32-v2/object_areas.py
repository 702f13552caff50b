"""Object sizes of a DDPMPipeline's samples against the data's, measured without the oracle: the pixels that differ
from the image's top row (the background: `diti-shapes-v2` lights along x only) by more than 0.2 in some channel,
the spot's corner excluded. The data's three scales give three separated area bands; the samples are binned at the
midpoints between the bands.

    python benchmarks/shapes32-v2/object_areas.py DDPM_DIR [NUM_SAMPLES]

Prints the data's area per scale class and the class fractions of DDIM-50 samples at η = 0 and η = 1 and of the
1,000-step ancestral DDPM sampler (same initial noise).
"""

import sys

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler

from diti_hf.data.shapes import generate_shapes, timescale_factors


def object_areas(pixels: np.ndarray) -> np.ndarray:
    """Object area in pixels of each `(n, h, w, 3)` image in [0, 1]."""
    diff = np.abs(pixels - pixels[:, :1]).max(-1)
    diff[:, -5:, -5:] = 0.0
    return (diff > 0.2).sum((1, 2))


def sample(unet, scheduler, num: int, eta: float | None) -> np.ndarray:
    x = torch.randn(
        num, 3, unet.config.sample_size, unet.config.sample_size, generator=torch.Generator().manual_seed(0)
    )
    noise = torch.Generator().manual_seed(1)
    extra = {} if eta is None else {"eta": eta}
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(unet(x, t).sample, t, x, generator=noise, **extra).prev_sample
    return (x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def main(path: str, num: int = 64) -> None:
    torch.set_num_threads(1)
    pipe = DDPMPipeline.from_pretrained(path)
    unet = pipe.unet.eval()
    data = generate_shapes(512, seed=5, resolution=unet.config.sample_size, factors=timescale_factors())
    areas = object_areas(np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 255 for im in data["image"]]))
    scale = np.asarray(data["scale"])
    for c, name in enumerate(data.features["scale"].names):
        print(
            f"data {name}: area median {np.median(areas[scale == c]):.0f} px, 10-90 % {np.percentile(areas[scale == c], [10, 90])}"
        )
    edges = [(np.percentile(areas[scale == c], 90) + np.percentile(areas[scale == c + 1], 10)) / 2 for c in (0, 1)]
    print("bin edges", edges, "data fractions", np.bincount(np.digitize(areas, edges), minlength=3) / len(areas))
    samplers = {
        "DDIM-50 eta 0": (DDIMScheduler, 50, 0.0),
        "DDIM-50 eta 1": (DDIMScheduler, 50, 1.0),
        "DDPM-1000 ancestral": (DDPMScheduler, 1000, None),
    }
    for name, (cls, steps, eta) in samplers.items():
        extra = {"clip_sample": True, "set_alpha_to_one": True} if cls is DDIMScheduler else {}
        scheduler = cls.from_config(pipe.scheduler.config, **extra)
        scheduler.set_timesteps(steps)
        a = object_areas(sample(unet, scheduler, num, eta))
        print(
            f"{name}: area median {np.median(a):.0f} px, small/medium/large",
            np.bincount(np.digitize(a, edges), minlength=3) / num,
        )


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:]))
