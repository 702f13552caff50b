"""The DiTi browser app as a Hugging Face Space; `diti-hf app` serves the same page locally.

The model is `model/` next to this file when the Space was uploaded with it (`diti_hf.app.space.push_space_to_hub(...,
model_dir=...)`), else the `DITI_MODEL` environment variable, else the Hub model named in README.md.
"""

import os
from pathlib import Path

import torch

from diti_hf import DiTiPipeline
from diti_hf.app import SHIPPED_FINDINGS, DiTiApp, build_app, find_alignment_image, launch_app

HERE = Path(__file__).resolve().parent
HUB_MODEL = "diti-hf/diti-shapes32"

model = os.environ.get("DITI_MODEL") or (str(HERE / "model") if (HERE / "model").is_dir() else HUB_MODEL)
device = "cuda" if torch.cuda.is_available() else "cpu"
pipe = DiTiPipeline.from_pretrained(model).to(device)
pipe.set_progress_bar_config(leave=False, desc="DDIM")
app = DiTiApp(
    pipe,
    model_name=os.environ.get("DITI_MODEL") or HUB_MODEL,
    alignment_image=find_alignment_image(HERE, model),
    # the header's measurements are those of the shipped model; another DITI_MODEL is not measured here
    findings=None if os.environ.get("DITI_MODEL") else SHIPPED_FINDINGS,
)
page = build_app(app, device_label=device)

if __name__ == "__main__":
    launch_app(page)
