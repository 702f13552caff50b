"""The interim demo's pipeline: the official fixture checkpoint (random weights), converted and checked for parity."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

FIXTURE_FILES = (
    "dpm_config.yml",
    "pretrained_dpm_checkpoint.pt",
    "diti_config.yml",
    "diti_checkpoint.pt",
    "reference_outputs.safetensors",
)
# max abs error bounds of the parity check (README "Correctness"; inversion: float32 noise of the reference itself)
PARITY_TOLERANCES = {"eps": 1e-4, "shift_G": 1e-4, "encoder": 1e-4, "ddim_inversion": 2e-4, "ddim_generation": 1e-4}


def official_fixture_pipeline(fixture_dir: str | Path, log: Callable[[str], None] = print) -> tuple[Any, dict]:
    r"""
    Converts the official fixture checkpoint (random weights, 64×64) with [`~diti_hf.conversion.convert_official`]
    and measures parity against its `reference_outputs.safetensors`: max abs errors of ε_θ, the decoder shift G, the
    encoder, and 10-step masked DDIM inversion and generation.

    Returns:
        `(pipeline, parity)`: the [`~diti_hf.DiTiPipeline`] and `{quantity: {"max_abs_error", "tolerance", "ok"}}`.
    """
    from safetensors.torch import load_file

    from ..conversion import convert_official
    from ..models.denoiser import denoise
    from ..pipelines import DiTiPipeline

    fixture = Path(fixture_dir)
    missing = [name for name in FIXTURE_FILES if not (fixture / name).is_file()]
    if missing:
        raise ValueError(f"{str(fixture)!r} is not the official fixture folder: it lacks {missing}.")
    converted = convert_official(
        fixture / "dpm_config.yml",
        fixture / "pretrained_dpm_checkpoint.pt",
        fixture / "diti_config.yml",
        fixture / "diti_checkpoint.pt",
    )
    pipe = DiTiPipeline(converted.unet, converted.encoder, converted.decoder, converted.scheduler)
    ref = load_file(fixture / "reference_outputs.safetensors")
    with torch.no_grad():
        out = denoise(pipe.unet, pipe.decoder, ref["x_t"], ref["t"], ref["z"])
        z = pipe.encoder(ref["encoder_input"]).z
    pipe.set_progress_bar_config(disable=True)
    inverted = pipe.invert(ref["ddim_x0"], z=ref["ddim_z"], num_inference_steps=10).latents
    generated = pipe(z=ref["ddim_z"], latents=ref["ddim_xT"], num_inference_steps=10, output_type="pt").images * 2 - 1
    errors = {
        "eps": out.eps - ref["eps"],
        "shift_G": out.shift - ref["gradient"],
        "encoder": z - ref["encoder_output"],
        "ddim_inversion": inverted - ref["ddim_xT"],
        "ddim_generation": generated - ref["ddim_recon"],
    }
    parity = {}
    for name, diff in errors.items():
        err = float(diff.abs().max())
        parity[name] = {
            "max_abs_error": err,
            "tolerance": PARITY_TOLERANCES[name],
            "ok": err <= PARITY_TOLERANCES[name],
        }
        log(f"  parity {name:16s} max abs error {err:.2e}  (tolerance {PARITY_TOLERANCES[name]:.0e})")
    return pipe, parity
