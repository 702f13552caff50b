"""Bad input anywhere in the API gives a clear error; untrusted files are refused; weights load strictly.

CLI and training-script bad arguments are collected in tests/test_cli.py and tests/test_training.py; this module
covers the library API and files. `BAD_INPUTS` counts the distinct cases tried here.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import FIXTURE_DIR, tiny_adm_unet, tiny_ddpm_unet, tiny_images, tiny_pipeline
from diti_hf import DiTiDecoderModel, DiTiEncoderModel, DiTiPipeline, TimestepPartition, denoise
from diti_hf.conversion import convert_official, load_official_checkpoint


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


Z16 = torch.zeros(1, 16)
BAD_INPUTS = [
    # (id, call(pipe), error type, regex the message must match)
    ("image too large", lambda p: p.encode(torch.zeros(1, 3, 32, 32)), ValueError, r"\(B, 3, 16, 16\)"),
    ("one channel tensor", lambda p: p.encode(torch.zeros(2, 1, 16, 16)), ValueError, r"\(B, 3, 16, 16\)"),
    ("4-d channels-last tensor", lambda p: p.encode(torch.zeros(1, 16, 16, 3)), ValueError, r"got \(1, 16, 16, 3\)"),
    ("5-d tensor", lambda p: p.encode(torch.zeros(1, 1, 3, 16, 16)), ValueError, "shape"),
    ("integer tensor", lambda p: p.encode(torch.zeros(1, 3, 16, 16, dtype=torch.uint8)), TypeError, "floating"),
    ("values in [0, 255]", lambda p: p.encode(torch.full((1, 3, 16, 16), 255.0)), ValueError, r"\[-1, 1\]"),
    ("NaN pixels", lambda p: p.encode(torch.full((1, 3, 16, 16), float("nan"))), ValueError, "NaN"),
    ("inf pixels", lambda p: p.encode(torch.full((1, 3, 16, 16), float("inf"))), ValueError, "infinite"),
    ("empty tensor batch", lambda p: p.encode(torch.zeros(0, 3, 16, 16)), ValueError, "empty"),
    ("empty list", lambda p: p.encode([]), TypeError, "non-empty"),
    ("a path string", lambda p: p.encode("cat.png"), TypeError, "str"),
    ("list of ints", lambda p: p.encode([1, 2]), TypeError, "PIL image"),
    ("numpy 2-d array", lambda p: p.encode(np.zeros((16, 16))), ValueError, r"\(H, W, C\)"),
    ("numpy float out of range", lambda p: p.encode(np.full((16, 16, 3), 2.0)), ValueError, r"\[0, 1\]"),
    ("numpy int32 image", lambda p: p.encode(np.zeros((16, 16, 3), dtype=np.int32)), TypeError, "uint8"),
    ("16-bit PIL image", lambda p: p.encode(PIL.Image.new("I;16", (16, 16))), ValueError, "8-bit"),
    ("z wrong width", lambda p: p(z=torch.zeros(1, 15), num_inference_steps=2), ValueError, r"\(1, 16\)"),
    ("z 1-d", lambda p: p(z=torch.zeros(16), num_inference_steps=2), ValueError, "shape"),
    ("z integer dtype", lambda p: p(z=torch.zeros(1, 16, dtype=torch.long), num_inference_steps=2), TypeError, "floating"),
    ("z and latents disagree", lambda p: p(z=torch.zeros(2, 16), latents=torch.zeros(1, 3, 16, 16)), ValueError, r"\(1, 16\)"),
    ("latents wrong shape", lambda p: p(z=Z16, latents=torch.zeros(1, 3, 8, 8), num_inference_steps=2), ValueError, "latents"),
    ("no z with guidance", lambda p: p(num_inference_steps=2), ValueError, "guidance"),
    ("zero steps", lambda p: p(z=Z16, num_inference_steps=0), ValueError, "num_inference_steps"),
    ("too many steps", lambda p: p(z=Z16, num_inference_steps=1001), ValueError, "num_inference_steps"),
    ("float steps", lambda p: p(z=Z16, num_inference_steps=2.5), ValueError, "num_inference_steps"),
    ("unknown output_type", lambda p: p(z=Z16, num_inference_steps=2, output_type="jpg"), ValueError, "output_type"),
    ("generator list length", lambda p: p(z=torch.zeros(2, 16), generator=[torch.Generator()]), ValueError, "generator"),
    ("t-range above T", lambda p: p.swap(tiny_images(1), tiny_images(1), timesteps=(0, 1001)), ValueError, "timesteps"),
    ("t-range negative", lambda p: p.swap(tiny_images(1), tiny_images(1), timesteps=(-1, 10)), ValueError, "timesteps"),
    ("t-range reversed", lambda p: p.swap(tiny_images(1), tiny_images(1), timesteps=(900, 100)), ValueError, "lo <= hi"),
    ("t-range not ints", lambda p: p.swap(tiny_images(1), tiny_images(1), timesteps=(0.5, 10)), ValueError, "pair of ints"),
    ("t-range triple", lambda p: p.swap(tiny_images(1), tiny_images(1), timesteps=(0, 10, 20)), ValueError, "pair"),
    ("no range at all", lambda p: p.swap(tiny_images(1), tiny_images(1)), ValueError, "timesteps"),
    ("both ranges", lambda p: p.interpolate(tiny_images(1), tiny_images(1), timesteps=(0, 5), chunks=(0, 1)), ValueError, "not both"),
    ("chunk range too wide", lambda p: p.swap(tiny_images(1), tiny_images(1), chunks=(0, 5)), ValueError, "chunks"),
    ("mismatched source/target", lambda p: p.swap(tiny_images(2), tiny_images(3), chunks=(0, 1)), ValueError, "same number"),
    ("alphas empty", lambda p: p.interpolate(tiny_images(1), tiny_images(1), alphas=[]), ValueError, "alphas"),
    ("alphas NaN", lambda p: p.interpolate(tiny_images(1), tiny_images(1), alphas=[float("nan")]), ValueError, "alphas"),
    ("direction wrong length", lambda p: p.edit(tiny_images(1), direction=torch.ones(3)), ValueError, "direction"),
    ("direction zero", lambda p: p.edit(tiny_images(1), direction=torch.zeros(16)), ValueError, "non-zero"),
    ("top_k too large", lambda p: p.edit(tiny_images(1), direction=torch.ones(16), top_k=17), ValueError, "top_k"),
    ("z_std wrong shape", lambda p: p.edit(tiny_images(1), direction=torch.ones(16), z_std=torch.ones(4)), ValueError, "z_std"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "call", "error", "match"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_pipeline_bad_input(pipe, case, call, error, match):
    with pytest.raises(error, match=match):
        call(pipe)


MODEL_BAD_INPUTS = [
    ("partition k > d", lambda: TimestepPartition(8, 16), ValueError, "num_chunks"),
    ("stages not ending at T", lambda: TimestepPartition(64, 4, 1000, [500, 900], [32, 32]), ValueError, "stages"),
    ("dims do not sum to d", lambda: TimestepPartition(64, 4, 1000, [500, 1000], [32, 31]), ValueError, "dims_per_stage"),
    ("unknown encoder preset", lambda: DiTiEncoderModel.from_preset("celeba65"), ValueError, "celeba65"),
    ("partition does not fit latent", lambda: DiTiEncoderModel.from_preset("small32", latent_dim=4, num_chunks=8), ValueError, "num_chunks"),
    ("latent_std wrong length", lambda: DiTiEncoderModel.from_preset("small32", latent_dim=8, num_chunks=2, latent_std=[1.0]), ValueError, "latent_std"),
    ("decoder/UNet topology mismatch", lambda: denoise(tiny_adm_unet(), DiTiDecoderModel.from_unet(tiny_ddpm_unet(), latent_dim=4), torch.zeros(1, 3, 16, 16), 0, torch.zeros(1, 4)), ValueError, "topology"),
    ("not a UNet2DModel", lambda: DiTiDecoderModel.from_unet(torch.nn.Linear(2, 2)), TypeError, "UNet2DModel"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "call", "error", "match"), MODEL_BAD_INPUTS, ids=[c[0] for c in MODEL_BAD_INPUTS])
def test_model_bad_input(case, call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_pipeline_refuses_mismatched_components():
    pipe = tiny_pipeline()
    other_encoder = DiTiEncoderModel(sample_size=16, block_out_channels=(32, 32), latent_dim=8, num_chunks=2)
    with pytest.raises(ValueError, match="latent_dim"):
        DiTiPipeline(pipe.unet, other_encoder, pipe.decoder, pipe.scheduler)
    with pytest.raises(ValueError, match="topology"):
        DiTiPipeline(tiny_ddpm_unet(), pipe.encoder, pipe.decoder, pipe.scheduler)


class _CreatesAFile:
    """Unpickling this object would create a file: the classic code-execution payload."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned.txt"
    payload = tmp_path / "evil.pt"
    with open(payload, "wb") as f:
        pickle.dump({"ema_denoise_fn": {}, "x": _CreatesAFile(str(marker))}, f)
    assert not marker.exists()
    with pytest.raises(ValueError, match="refused for safety"):
        load_official_checkpoint(payload)
    with pytest.raises(ValueError, match="refused for safety"):
        convert_official(FIXTURE_DIR / "dpm_config.yml", payload, image_size=64)
    assert not marker.exists()


def test_yaml_is_loaded_safely(tmp_path):
    marker = tmp_path / "yaml-pwned.txt"
    config = tmp_path / "evil.yml"
    config.write_text(f"denoise_fn_config: !!python/object/apply:builtins.open [{str(marker)!r}, 'w']\n")
    with pytest.raises(ValueError, match="evil.yml"):
        convert_official(config, FIXTURE_DIR / "pretrained_dpm_checkpoint.pt", image_size=64)
    assert not marker.exists()


def test_truncated_or_corrupt_checkpoint(tmp_path):
    data = (FIXTURE_DIR / "pretrained_dpm_checkpoint.pt").read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match="truncated.pt"):
        load_official_checkpoint(truncated)
    # random bytes fail in many places of the unpickler (EOFError, IndexError, UnpicklingError, ...): each must
    # become the one clear error
    garbage = tmp_path / "garbage.pt"
    rng = random.Random(0)
    for _ in range(200):
        garbage.write_bytes(rng.randbytes(rng.choice([1, 16, 2048])))
        with pytest.raises(ValueError, match="garbage.pt"):
            load_official_checkpoint(garbage)


def _saved(tmp_path: Path) -> Path:
    folder = tmp_path / "pipe"
    tiny_pipeline().save_pretrained(folder)
    return folder


@pytest.mark.parametrize("component", ["encoder", "decoder", "unet"])
def test_missing_unexpected_and_misshaped_keys_name_file_and_key(tmp_path, component):
    folder = _saved(tmp_path)
    weights = folder / component / "diffusion_pytorch_model.safetensors"
    original = load_file(weights)
    victim = sorted(original)[0]
    cases = {
        "missing keys": {k: v for k, v in original.items() if k != victim},
        "unexpected keys": {**original, "not.a.parameter": torch.zeros(1)},
    }
    for expected, state in cases.items():
        save_file(state, weights)
        with pytest.raises(
            ValueError, match=rf"{component}.*{expected}.*{victim if 'missing' in expected else 'not.a.parameter'}"
        ):
            DiTiPipeline.from_pretrained(folder)
    save_file({**original, victim: torch.zeros(3, 1, 7)}, weights)
    with pytest.raises(ValueError, match=victim.replace(".", r"\.")):
        DiTiPipeline.from_pretrained(folder)


def test_truncated_safetensors_and_missing_shard(tmp_path):
    folder = _saved(tmp_path)
    weights = folder / "encoder" / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises((ValueError, OSError), match="encoder"):
        DiTiPipeline.from_pretrained(folder)
    weights.write_bytes(data)
    unet_weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    unet_weights.unlink()
    with pytest.raises((ValueError, OSError), match="unet"):
        DiTiPipeline.from_pretrained(folder)


def test_no_component_needs_remote_code(tmp_path):
    folder = _saved(tmp_path)
    assert not list(folder.rglob("*.py"))
    loaded = DiTiPipeline.from_pretrained(folder, trust_remote_code=False)
    assert isinstance(loaded.encoder, DiTiEncoderModel)


CLI_BAD_ARGUMENTS = [
    (["encode", "--model", "no/such/folder/", "--images", ".", "--output", "z.npy"], "contains no image files"),
    (["swap", "--model", str(FIXTURE_DIR), "--source", "a.png", "--target", "b.png", "--output-dir", "o"], "'a.png'"),
    (["reconstruct"], "required"),
    (["edit", "--model", "x", "--images", "a.png", "--direction", "w.txt", "--output-dir", "o"], "'a.png'"),
    (["demo", "--official-fixture", "/nonexistent"], "/nonexistent"),
    (["frobnicate"], "invalid choice"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "match"), CLI_BAD_ARGUMENTS, ids=[a[0] for a, _ in CLI_BAD_ARGUMENTS])
def test_cli_bad_arguments(argv, match, capsys, tmp_path, monkeypatch):
    from diti_hf.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("diti-hf") and match in err[0]


SCRIPT_BAD_ARGUMENTS = [
    (["--latent_dim", "8", "--num_chunks", "16"], "--num_chunks"),
    (["--mode", "simclr"], "--mode"),
    (["--stages", "500", "1000"], "--dims_per_stage"),
    (["--train_batch_size", "0"], "--train_batch_size"),
]


@pytest.mark.parametrize(("extra", "match"), SCRIPT_BAD_ARGUMENTS, ids=[e[0] for e, _ in SCRIPT_BAD_ARGUMENTS])
def test_training_script_bad_arguments(extra, match, capsys, tmp_path):
    from conftest import load_example
    from diti_hf.training.run import run_script

    train_diti = load_example("train_diti")

    argv = ["--pretrained_unet", str(tmp_path), "--dataset_name", "diti-shapes", "--output_dir", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as exit_info:
        run_script(train_diti.main, train_diti.parse_args, [*argv, *extra])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0]


def test_scheduler_with_other_betas_warns(tmp_path):
    import warnings

    from diffusers import DDIMScheduler

    models = convert_official(
        FIXTURE_DIR / "dpm_config.yml",
        FIXTURE_DIR / "pretrained_dpm_checkpoint.pt",
        FIXTURE_DIR / "diti_config.yml",
        FIXTURE_DIR / "diti_checkpoint.pt",
    )
    assert models.decoder.config.noise_schedule["beta_end"] == 0.02
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the training schedule: no warning
        pipe = DiTiPipeline(models.unet, models.encoder, models.decoder, models.scheduler)
    pipe.save_pretrained(tmp_path)
    assert DiTiPipeline.from_pretrained(tmp_path).decoder.config.noise_schedule == models.decoder.config.noise_schedule
    other = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    with pytest.warns(UserWarning, match="differs from the one the decoder was trained with"):
        DiTiPipeline(models.unet, models.encoder, models.decoder, other)
