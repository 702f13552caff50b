"""Shared tiny, seeded components and the official fixture."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from diffusers import UNet2DModel
from safetensors.torch import load_file

# Tiny models gain nothing from intra-op threads, and two pytest-xdist workers with two threads each on two cores
# oversubscribe them (measured: a 20-step reconstruction takes 1.6 s with one thread, 10-15 s that way).
torch.set_num_threads(1)

FIXTURE_DIR = Path(__file__).parent / "fixtures" / "official-diti"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def tiny_ddpm_unet(seed: int = 0, sample_size: int = 16) -> UNet2DModel:
    """DDPM-style (google/ddpm-*): DownBlock2D/AttnDownBlock2D, conv resampling, default time-embedding add."""
    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=sample_size,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=16,
        norm_num_groups=16,
    ).eval()


def tiny_adm_unet(seed: int = 0, sample_size: int = 16) -> UNet2DModel:
    """ADM-style (official PDAE/DiTi): resnet resampling, scale-shift norm, attention GroupNorm in the middle."""
    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=sample_size,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        down_block_types=("ResnetDownsampleBlock2D", "AttnDownBlock2D", "ResnetDownsampleBlock2D"),
        up_block_types=("ResnetUpsampleBlock2D", "AttnUpBlock2D", "ResnetUpsampleBlock2D"),
        downsample_type="resnet",
        upsample_type="resnet",
        resnet_time_scale_shift="scale_shift",
        attn_norm_num_groups=32,
        attention_head_dim=32,
        flip_sin_to_cos=True,
        freq_shift=0,
    ).eval()


def randomize_(module: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> torch.nn.Module:
    """Overwrites every parameter with random values so that zero-initialised outputs are not trivially zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return module


@pytest.fixture(params=["ddpm", "adm"])
def tiny_unet(request) -> UNet2DModel:
    return {"ddpm": tiny_ddpm_unet, "adm": tiny_adm_unet}[request.param]()


@pytest.fixture(scope="session")
def reference_outputs() -> dict[str, torch.Tensor]:
    return load_file(FIXTURE_DIR / "reference_outputs.safetensors")


@pytest.fixture(scope="session")
def reference_partitions() -> tuple[dict, dict[str, torch.Tensor]]:
    return json.loads((FIXTURE_DIR / "reference_partitions.json").read_text()), load_file(
        FIXTURE_DIR / "reference_partitions.safetensors"
    )


def tiny_pipeline(seed: int = 0, latent_dim: int = 16, num_chunks: int = 4, mask_mode: str = "cumulative"):
    """A 16×16 DiTi pipeline with random (non-zero) weights everywhere."""
    from diffusers import DDIMScheduler

    from diti_hf import DiTiDecoderModel, DiTiEncoderModel, DiTiPipeline

    unet = tiny_adm_unet(seed)
    encoder = DiTiEncoderModel(
        sample_size=16,
        block_out_channels=(32, 32),
        attention_stages=(1,),
        latent_dim=latent_dim,
        num_chunks=num_chunks,
        mask_mode=mask_mode,
    )
    randomize_(encoder, seed=seed + 1, scale=0.1)
    decoder = randomize_(DiTiDecoderModel.from_unet(unet, latent_dim=latent_dim), seed=seed + 2, scale=0.03)
    scheduler = DDIMScheduler(clip_sample=True, set_alpha_to_one=True, timestep_spacing="leading")
    pipe = DiTiPipeline(unet=unet, encoder=encoder.eval(), decoder=decoder.eval(), scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_images(n: int, seed: int = 0, size: int = 16) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def reset_accelerate() -> None:
    """Each in-process run of a training script builds a new Accelerator; accelerate keeps process-wide singletons."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def load_example(name: str) -> ModuleType:
    """`examples/<name>.py` as a module, loaded from its file (the examples folder is not a package), once."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]


def run_script_main(module, argv: list[str]) -> dict:
    """Runs a training script's `main` in this process, between two accelerate resets."""
    reset_accelerate()
    try:
        return module.main(module.parse_args(argv))
    finally:
        reset_accelerate()


def script_fails(module, argv: list[str], capsys) -> str:
    """Runs a training script's entry point, which must exit 2 with exactly one line on stderr; returns that line."""
    from diti_hf.training.run import run_script

    capsys.readouterr()
    reset_accelerate()
    try:
        with pytest.raises(SystemExit) as exit_info:
            run_script(module.main, module.parse_args, argv)
    finally:
        reset_accelerate()
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2, err
    assert len(err) == 1, err
    return err[0]
