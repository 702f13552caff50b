"""A swap grid of each pipeline on six fixed `diti-shapes-v2` pairs through `pipe.swap` with its defaults (the source's
inverted x_T, 20 DDIM steps): rows source, [0,250), [250,500), [500,750), [750,1000), [0,500), [500,1000), target.

    python benchmarks/shapes32-v2/swap_grid.py OUT_DIR PIPELINE_DIR [PIPELINE_DIR ...]   # writes OUT_DIR/swaps_NAME.png
"""

import sys
from pathlib import Path

import torch
from PIL import Image

from diti_hf import DiTiPipeline
from diti_hf.data.shapes import render_shapes, sample_factor_codes, timescale_factors
from diti_hf.visualization import tensor_grid

RANGES = [(0, 250), (250, 500), (500, 750), (750, 1000), (0, 500), (500, 1000)]


def main(out_dir: str, paths: list[str]) -> None:
    torch.set_num_threads(1)
    factors = timescale_factors()
    pixels = render_shapes(sample_factor_codes(12, seed=11, factors=factors), factors)
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1
    source, target = images[:6], images[6:]
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for path in paths:
        pipe = DiTiPipeline.from_pretrained(path)
        pipe.set_progress_bar_config(disable=True)
        swaps = pipe.swap(source, target, timesteps=RANGES, num_inference_steps=20, output_type="pt").images
        rows = [source / 2 + 0.5] + [swaps[r :: len(RANGES)] for r in range(len(RANGES))] + [target / 2 + 0.5]
        grid = (tensor_grid(rows).permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()
        image = Image.fromarray(grid)
        out = Path(out_dir) / f"swaps_{Path(path).name}.png"
        image.resize((image.width * 3, image.height * 3), Image.NEAREST).save(out)
        print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
