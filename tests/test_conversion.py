"""Official PDAE/DiTi checkpoints → diti_hf: numbers against the official fixture, key layouts of other official
configurations (generated below from the layout in docs/conversion-notes.md), strictness, and the `convert` CLI."""

from __future__ import annotations

import argparse
import copy

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, UNet2DModel

from conftest import FIXTURE_DIR
from diti_hf import DiTiDecoderModel, DiTiEncoderModel, DiTiPipeline, denoise
from diti_hf.cli import main
from diti_hf.conversion import (
    ConvertedModels,
    convert_official,
    convert_official_decoder_state_dict,
    convert_official_encoder_state_dict,
    convert_official_unet_state_dict,
    encoder_config_from_official,
    encoder_preset_from_official,
    load_official_checkpoint,
    load_official_yaml,
    partition_config_from_official,
    save_converted,
    split_official_decoder_state_dict,
    unet_config_from_official,
)

DPM_CONFIG = FIXTURE_DIR / "dpm_config.yml"
DPM_CHECKPOINT = FIXTURE_DIR / "pretrained_dpm_checkpoint.pt"
DITI_CONFIG = FIXTURE_DIR / "diti_config.yml"
DITI_CHECKPOINT = FIXTURE_DIR / "diti_checkpoint.pt"
ATOL = 1e-4  # float32 rounding; the same comparison in float64 is ~1e-14 (docs/conversion-notes.md)


# ------------------------------------------------------------------------------ official-format state dict generator
def official_unet_shapes(cfg: dict, shift_latent_dim: int | None = None) -> dict[str, tuple[int, ...]]:
    """
    Key names and shapes of an official UNet state dict for the `denoise_fn_config` `cfg` (docs/conversion-notes.md);
    with `shift_latent_dim`, of the official decoder: the UNet's keys plus `label_emb` and the `shift_` mid/up path
    whose resnets also have `emb_z_layers.1`.
    """
    base, mults, n = cfg["base_channel"], cfg["channel_multiplier"], cfg["num_residual_blocks_of_a_block"]
    factors, temb = cfg["attention_resolutions"], 4 * base
    shapes: dict[str, tuple[int, ...]] = {}

    def linear(p, i, o):
        shapes.update({f"{p}.weight": (o, i), f"{p}.bias": (o,)})

    def conv(p, i, o, k):
        shapes.update({f"{p}.weight": (o, i, k, k), f"{p}.bias": (o,)})

    def norm(p, c):
        shapes.update({f"{p}.weight": (c,), f"{p}.bias": (c,)})

    def resblock(p, i, o, z):
        norm(f"{p}.in_layers.0", i)
        conv(f"{p}.in_layers.2", i, o, 3)
        linear(f"{p}.emb_layers.1", temb, 2 * o)
        if z:
            linear(f"{p}.emb_z_layers.1", temb, 2 * o)
        norm(f"{p}.out_layers.0", o)
        conv(f"{p}.out_layers.3", o, o, 3)
        if i != o:
            conv(f"{p}.skip_connection", i, o, 1)

    def attention(p, c):
        norm(f"{p}.norm", c)
        shapes.update({f"{p}.qkv.weight": (3 * c, c, 1), f"{p}.qkv.bias": (3 * c,)})
        shapes.update({f"{p}.proj_out.weight": (c, c, 1), f"{p}.proj_out.bias": (c,)})

    linear("time_embed.0", base, temb)
    linear("time_embed.2", temb, temb)
    conv("input_blocks.0.0", cfg["input_channel"], base, 3)
    skips, ch, ds, index = [base], base, 1, 1
    for level, mult in enumerate(mults):
        for _ in range(n):
            resblock(f"input_blocks.{index}.0", ch, mult * base, False)
            ch = mult * base
            if ds in factors:
                attention(f"input_blocks.{index}.1", ch)
            skips.append(ch)
            index += 1
        if level < len(mults) - 1:
            resblock(f"input_blocks.{index}.0", ch, ch, False)
            skips.append(ch)
            ds, index = ds * 2, index + 1
    bottom_ch, bottom_ds = ch, ds
    out_ch = cfg["input_channel"] * (2 if cfg.get("learn_sigma") else 1)
    for prefix, z in [("", False)] + ([("shift_", True)] if shift_latent_dim else []):
        ch, ds, skip_stack = bottom_ch, bottom_ds, list(skips)
        resblock(f"{prefix}middle_block.0", ch, ch, z)
        attention(f"{prefix}middle_block.1", ch)
        resblock(f"{prefix}middle_block.2", ch, ch, z)
        index = 0
        for level, mult in reversed(list(enumerate(mults))):
            for j in range(n + 1):
                p = f"{prefix}output_blocks.{index}"
                resblock(f"{p}.0", ch + skip_stack.pop(), mult * base, z)
                ch, last = mult * base, 1
                if ds in factors:
                    attention(f"{p}.1", ch)
                    last = 2
                if level and j == n:
                    resblock(f"{p}.{last}", ch, ch, z)
                    ds //= 2
                index += 1
        norm(f"{prefix}out.0", ch)
        conv(f"{prefix}out.2", ch, out_ch, 3)
    if shift_latent_dim:
        linear("label_emb", shift_latent_dim, temb)
    return shapes


def official_encoder_shapes(layers: list[tuple], latent_dim: int) -> dict[str, tuple[int, ...]]:
    """Keys of an official encoder `nn.Sequential` listed layer by layer (parameter-free layers take an index)."""
    shapes = {}
    for index, (kind, *args) in enumerate(layers):
        p = f"encoder.{index}"
        if kind == "conv":
            shapes.update({f"{p}.weight": (args[1], args[0], 3, 3), f"{p}.bias": (args[1],)})
        elif kind == "gn":
            shapes.update({f"{p}.weight": (args[0],), f"{p}.bias": (args[0],)})
        elif kind == "attn":
            c = args[0]
            shapes.update({f"{p}.norm.weight": (c,), f"{p}.norm.bias": (c,), f"{p}.qkv.weight": (3 * c, c, 1)})
            shapes.update({f"{p}.qkv.bias": (3 * c,), f"{p}.proj_out.weight": (c, c, 1), f"{p}.proj_out.bias": (c,)})
        elif kind == "linear":
            shapes.update({f"{p}.weight": (latent_dim, args[0]), f"{p}.bias": (latent_dim,)})
    return shapes


# The official encoders, from docs/method.md §2.
ENCODER64 = [("conv", 3, 64), ("gn", 64), ("silu",), ("conv", 64, 128), ("attn", 128), ("gn", 128), ("silu",)]
ENCODER64 += [("conv", 128, 128), ("gn", 128), ("silu",), ("conv", 128, 128), ("gn", 128), ("silu",), ("flat",)]
ENCODER64 += [("linear", 2048)]
ENCODER128 = [("conv", 3, 64), ("gn", 64), ("silu",), ("conv", 64, 128), ("gn", 128), ("silu",), ("conv", 128, 256)]
ENCODER128 += [("attn", 256), ("gn", 256), ("silu",), ("conv", 256, 256), ("gn", 256), ("silu",), ("conv", 256, 256)]
ENCODER128 += [("gn", 256), ("silu",), ("flat",), ("linear", 4096)]


def random_state_dict(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) * 0.05 for k, s in shapes.items()}


def sorted_values(state_dict: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([v.reshape(-1) for v in state_dict.values()]).sort().values


def fixture_denoise_config() -> dict:
    return load_official_yaml(DPM_CONFIG)["denoise_fn_config"]


def official_dpm_yaml(**denoise_fn_config) -> dict:
    fields = {"model": "UNet", "input_channel": 3, "base_channel": 32, "num_heads": 1, "head_channel": -1}
    fields |= {"use_new_attention_order": False, "dropout": 0.0} | denoise_fn_config
    diffusion = {"timesteps": 1000, "betas_type": "linear", "linear_beta_start": 1e-4, "linear_beta_end": 0.02}
    return {"denoise_fn_config": fields, "diffusion_config": diffusion}


GENERATED_CONFIGS = {
    "4-levels-2-blocks-attn-2-4-num-heads": {
        "channel_multiplier": [1, 2, 2, 2], "num_residual_blocks_of_a_block": 2, "attention_resolutions": [2, 4],
        "num_heads": 4,
    },
    "5-levels-head-channel": {
        "channel_multiplier": [1, 1, 2, 3, 4], "num_residual_blocks_of_a_block": 1, "attention_resolutions": [4, 8],
        "head_channel": 32,
    },
    "3-blocks-full-res-attention": {
        "channel_multiplier": [1, 2], "num_residual_blocks_of_a_block": 3, "attention_resolutions": [1],
    },
    "learn-sigma": {
        "channel_multiplier": [1, 2], "num_residual_blocks_of_a_block": 1, "attention_resolutions": [2],
        "num_heads": 2, "learn_sigma": True,
    },
    "new-attention-order": {
        "channel_multiplier": [1, 2, 2], "num_residual_blocks_of_a_block": 1, "attention_resolutions": [2],
        "num_heads": 2, "use_new_attention_order": True,
    },
}  # fmt: skip


# ------------------------------------------------------------------------------------------------- official fixture
@pytest.fixture(scope="module")
def converted() -> ConvertedModels:
    return convert_official(DPM_CONFIG, DPM_CHECKPOINT, DITI_CONFIG, DITI_CHECKPOINT)


def test_unet_reproduces_official_eps(converted, reference_outputs):
    r = reference_outputs
    with torch.no_grad():
        eps = converted.unet(r["x_t"], r["t"]).sample
    err = (eps - r["eps"]).abs().max().item()
    assert err <= ATOL, err
    err_split = (denoise(converted.unet, None, r["x_t"], r["t"]).eps - r["eps"]).abs().max().item()
    assert err_split <= ATOL, err_split


def test_decoder_reproduces_official_gradient(converted, reference_outputs):
    r = reference_outputs
    out = denoise(converted.unet, converted.decoder, r["x_t"], r["t"], r["z"])
    with torch.no_grad():
        err_shift = (out.shift - r["gradient"]).abs().max().item()
    assert err_shift <= ATOL, err_shift
    assert (out.eps - r["eps"]).abs().max().item() <= ATOL
    assert r["gradient"].abs().max() > 1.0  # the comparison is not between near-zero tensors


def test_encoder_reproduces_official_output(converted, reference_outputs):
    with torch.no_grad():
        z = converted.encoder(reference_outputs["encoder_input"]).z
    err = (z - reference_outputs["encoder_output"]).abs().max().item()
    assert err <= ATOL, err


def test_converted_configs(converted):
    enc = converted.encoder.config
    assert (enc.latent_dim, enc.num_chunks, enc.num_train_timesteps, enc.stages) == (512, 16, 1000, None)
    assert list(enc.block_out_channels) == [64, 128, 128, 128] and list(enc.attention_stages) == [1]
    assert sum(p.numel() for p in converted.encoder.parameters()) == 1_487_104  # docs/method.md §2
    sched = converted.scheduler
    assert isinstance(sched, DDIMScheduler)
    assert torch.equal(sched.betas, torch.linspace(1e-4, 0.02, 1000, dtype=torch.float32))
    cfg = sched.config
    assert (cfg.timestep_spacing, cfg.set_alpha_to_one, cfg.clip_sample) == ("leading", True, True)
    assert (cfg.steps_offset, cfg.prediction_type, cfg.beta_schedule) == (0, "epsilon", "linear")
    unet = converted.unet.config
    assert list(unet.block_out_channels) == [32, 64, 64] and unet.attention_head_dim == 32  # 64 channels / 2 heads
    assert list(unet.down_block_types) == ["ResnetDownsampleBlock2D", "AttnDownBlock2D", "ResnetDownsampleBlock2D"]
    assert converted.decoder.config.latent_dim == 512
    ddpm = load_official_checkpoint(DPM_CHECKPOINT)["ema_denoise_fn"]
    assert sum(v.numel() for v in ddpm.values()) == sum(p.numel() for p in converted.unet.parameters())


def test_generators_match_fixture_layout():
    """The generator below reproduces the fixture's official key layout exactly, so its other configs are faithful."""
    cfg = fixture_denoise_config()
    ddpm = load_official_checkpoint(DPM_CHECKPOINT)["ema_denoise_fn"]
    diti = load_official_checkpoint(DITI_CHECKPOINT)
    assert {k: tuple(v.shape) for k, v in ddpm.items()} == official_unet_shapes(cfg)
    assert {k: tuple(v.shape) for k, v in diti["ema_decoder"].items()} == official_unet_shapes(cfg, 512)
    assert {k: tuple(v.shape) for k, v in diti["ema_encoder"].items()} == official_encoder_shapes(ENCODER64, 512)


# ------------------------------------------------------------------------------------------ other official configs
@pytest.mark.parametrize("name", sorted(GENERATED_CONFIGS))
def test_generated_official_unet_converts_strictly(name):
    cfg = official_dpm_yaml(**GENERATED_CONFIGS[name])["denoise_fn_config"]
    source = random_state_dict(official_unet_shapes(cfg), seed=1)
    unet_config = unet_config_from_official(cfg, image_size=32)
    state_dict = convert_official_unet_state_dict(source, unet_config, cfg["use_new_attention_order"])
    unet = UNet2DModel(**unet_config)
    unet.load_state_dict(state_dict, strict=True)
    # Every official value lands exactly once (qkv is only re-arranged).
    assert torch.equal(sorted_values(source), sorted_values(state_dict))
    assert torch.equal(unet.conv_in.weight, source["input_blocks.0.0.weight"])
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = unet(x, torch.tensor([500])).sample
    assert out.shape == (1, 6 if cfg.get("learn_sigma") else 3, 32, 32)
    assert torch.isfinite(out).all() and out.abs().max() > 0


def test_generated_official_decoder_converts_through_convert_official():
    dpm = official_dpm_yaml(**GENERATED_CONFIGS["new-attention-order"])
    dpm["train_dataset_config"] = {"image_size": 64}
    cfg, latent_dim = dpm["denoise_fn_config"], 24
    ddpm = random_state_dict(official_unet_shapes(cfg), seed=2)
    decoder_shapes = official_unet_shapes(cfg, shift_latent_dim=latent_dim)
    decoder_sd = {**random_state_dict(decoder_shapes, seed=3), **ddpm}  # frozen keys = the DDPM's
    encoder_sd = random_state_dict(official_encoder_shapes(ENCODER64, latent_dim), seed=4)
    diti = {
        "encoder_config": {"model": "CELEBA64Encoder", "latent_dim": latent_dim},
        "decoder_config": {"model": "CELEBA64Decoder", "latent_dim": latent_dim},
        "ssl_config": {"k": 4, "stages": "300,1000", "dims_per_stage": [8, 16]},
        "diffusion_config": dpm["diffusion_config"],
    }
    models = convert_official(
        dpm, {"ema_denoise_fn": ddpm}, diti, {"ema_encoder": encoder_sd, "ema_decoder": decoder_sd}
    )
    assert (models.encoder.config.stages, models.encoder.config.dims_per_stage) == ([300, 1000], [8, 16])
    assert models.decoder.config.latent_dim == latent_dim
    _, trainable = split_official_decoder_state_dict(decoder_sd)
    converted = convert_official_decoder_state_dict(trainable, dict(models.unet.config), new_attention_order=True)
    assert torch.equal(sorted_values(trainable), sorted_values(converted))
    first_up = models.decoder.up_blocks[0]
    assert torch.equal(
        first_up.upsamplers[0].z_emb_proj.weight, decoder_sd["shift_output_blocks.1.1.emb_z_layers.1.weight"]
    )
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    z = torch.randn(2, latent_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = denoise(models.unet, models.decoder, x, torch.tensor([10, 900]), z)
        zero_z = denoise(models.unet, models.decoder, x, torch.tensor([10, 900]), torch.zeros_like(z))
    assert out.shift.shape == x.shape and torch.isfinite(out.shift).all()
    assert (out.shift - zero_z.shift).abs().max() > 1e-3  # z reaches the shift


def test_generated_official_128_encoder_converts():
    latent_dim = 32
    source = random_state_dict(official_encoder_shapes(ENCODER128, latent_dim), seed=5)
    diti = {"encoder_config": {"model": "FFHQ128Encoder", "latent_dim": latent_dim}, "ssl_config": {"k": 8}}
    diti["diffusion_config"] = {"timesteps": 1000}
    config = encoder_config_from_official(diti)
    assert (config["sample_size"], config["block_out_channels"], config["attention_stages"]) == (
        128,
        [64, 128, 256, 256, 256],
        [2],
    )
    encoder = DiTiEncoderModel(**config)
    state_dict = convert_official_encoder_state_dict(source, config)
    encoder.load_state_dict(state_dict, strict=True)
    assert torch.equal(sorted_values(source), sorted_values(state_dict))
    assert torch.equal(encoder.proj_out.weight, source["encoder.17.weight"])
    assert torch.equal(encoder.blocks[2].attention.group_norm.weight, source["encoder.7.norm.weight"])
    with torch.no_grad():
        z = encoder(torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))).z
    assert z.shape == (1, latent_dim) and torch.isfinite(z).all()


def official_attention(x, sd, prefix, heads, new_order):
    """The official attention block, written out: per head softmax((q·ch^-¼)ᵀ(k·ch^-¼)) v, projection, residual."""
    b, c, h, w = x.shape
    ch = c // heads
    hidden = F.group_norm(x, 32, sd[f"{prefix}.norm.weight"], sd[f"{prefix}.norm.bias"], eps=1e-5).reshape(b, c, -1)
    qkv = F.conv1d(hidden, sd[f"{prefix}.qkv.weight"], sd[f"{prefix}.qkv.bias"])
    if new_order:
        q, k, v = (t.reshape(b * heads, ch, -1) for t in qkv.chunk(3, dim=1))
    else:
        q, k, v = qkv.reshape(b * heads, 3 * ch, -1).split(ch, dim=1)
    scale = ch**-0.25
    weight = torch.einsum("bct,bcs->bts", q * scale, k * scale).softmax(dim=-1)
    attended = torch.einsum("bts,bcs->bct", weight, v).reshape(b, c, -1)
    out = F.conv1d(attended, sd[f"{prefix}.proj_out.weight"], sd[f"{prefix}.proj_out.bias"])
    return x + out.reshape(b, c, h, w)


@pytest.mark.parametrize("new_order", [False, True])
def test_attention_qkv_split_matches_official_formula(new_order):
    cfg = official_dpm_yaml(
        channel_multiplier=[1, 2], num_residual_blocks_of_a_block=1, attention_resolutions=[], num_heads=4
    )["denoise_fn_config"]
    source = random_state_dict(official_unet_shapes(cfg), seed=6)
    source = {k: v * 20 if ".qkv." in k else v for k, v in source.items()}  # peaky softmax: the split matters
    unet_config = unet_config_from_official(cfg, image_size=16)
    unet = UNet2DModel(**unet_config)
    unet.load_state_dict(convert_official_unet_state_dict(source, unet_config, new_order), strict=True)
    attention = unet.mid_block.attentions[0]
    assert attention.heads == 4
    x = torch.randn(2, 64, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = attention(x)
    expected = official_attention(x, source, "middle_block.1", heads=4, new_order=new_order)
    wrong = official_attention(x, source, "middle_block.1", heads=4, new_order=not new_order)
    assert (ours - expected).abs().max() <= 1e-5
    assert (ours - wrong).abs().max() > 1e-2  # the test tells the two orders apart


# ------------------------------------------------------------------------------------------------- refusals
def test_num_heads_with_different_widths_is_refused():
    fields = {"channel_multiplier": [1, 2], "attention_resolutions": [1], "num_residual_blocks_of_a_block": 1}
    cfg = official_dpm_yaml(**fields, num_heads=2)["denoise_fn_config"]
    with pytest.raises(ValueError, match=r"num_heads=2 .*different widths.*level 0: 32.*mid block: 64.*head_channel"):
        unet_config_from_official(cfg, image_size=32)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"channel_multiplier": [2, 2]}, r"channel_multiplier\[0\] must be 1"),
        ({"use_scale_shift_norm": False}, "use_scale_shift_norm"),
        ({"resblock_updown": False}, "resblock_updown"),
        ({"conv_resample": True}, r"unsupported field\(s\) \['conv_resample'\]"),
        ({"model": "ShiftUNet"}, "denoise_fn_config.model"),
    ],
)
def test_unsupported_official_options_are_refused(change, match):
    cfg = {**fixture_denoise_config(), **change}
    with pytest.raises(ValueError, match=match):
        unet_config_from_official(cfg, image_size=64)


def test_extra_missing_and_misshaped_keys_are_listed():
    cfg = fixture_denoise_config()
    unet_config = unet_config_from_official(cfg, image_size=64)
    ddpm = load_official_checkpoint(DPM_CHECKPOINT)["ema_denoise_fn"]
    with pytest.raises(ValueError, match=r"unexpected checkpoint keys 1 \(input_blocks.1.0.bogus.weight\)"):
        convert_official_unet_state_dict({**ddpm, "input_blocks.1.0.bogus.weight": torch.zeros(1)}, unet_config)
    missing = {k: v for k, v in ddpm.items() if k != "out.2.bias"}
    with pytest.raises(ValueError, match=r"missing 1 \(conv_out.bias\)"):
        convert_official_unet_state_dict(missing, unet_config)
    wrong = {**ddpm, "middle_block.1.proj_out.weight": torch.zeros(64, 32, 1)}
    with pytest.raises(ValueError, match=r"shape mismatches 1 \(mid_block.attentions.0.to_out.0.weight"):
        convert_official_unet_state_dict(wrong, unet_config)


def test_decoder_trained_on_another_ddpm_is_refused():
    ddpm = load_official_checkpoint(DPM_CHECKPOINT)
    other = copy.deepcopy(ddpm)
    other["ema_denoise_fn"]["out.2.bias"] += 0.5
    with pytest.raises(ValueError, match=r"differs from the DDPM checkpoint.*out\.2\.bias"):
        convert_official(DPM_CONFIG, other, DITI_CONFIG, DITI_CHECKPOINT)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "unsafe.pt"
    torch.save({"ema_denoise_fn": {}, "args": argparse.Namespace(lr=1e-4)}, path)
    with pytest.raises(ValueError, match="not a plain-tensor checkpoint.*refused for safety"):
        load_official_checkpoint(path)


def test_raw_weights_are_a_fallback_with_a_warning():
    ddpm = load_official_checkpoint(DPM_CHECKPOINT)
    with pytest.warns(UserWarning, match="no `ema_denoise_fn`.*using `denoise_fn`"):
        models = convert_official(DPM_CONFIG, {"denoise_fn": ddpm["ema_denoise_fn"]}, image_size=64)
    assert torch.equal(models.unet.conv_out.bias, ddpm["ema_denoise_fn"]["out.2.bias"])
    assert models.encoder is None and models.decoder is None
    with pytest.raises(ValueError, match="neither `ema_denoise_fn` nor `denoise_fn`"):
        convert_official(DPM_CONFIG, {"weights": {}}, image_size=64)


def test_ddpm_weights_can_come_from_the_decoder(converted):
    models = convert_official(DPM_CONFIG, None, DITI_CONFIG, DITI_CHECKPOINT)
    for a, b in zip(models.unet.state_dict().values(), converted.unet.state_dict().values()):
        assert torch.equal(a, b)


def test_partition_and_encoder_name_parsing():
    base = {"encoder_config": {"latent_dim": 512}, "diffusion_config": {"timesteps": 1000}}
    staged = partition_config_from_official(
        {**base, "ssl_config": {"k": 64, "stage": [50, 100, 300, 500, 1000], "dims": "10, 25, 327, 100, 50"}}
    )
    assert staged == {
        "latent_dim": 512,
        "num_chunks": 64,
        "num_train_timesteps": 1000,
        "stages": [50, 100, 300, 500, 1000],
        "dims_per_stage": [10, 25, 327, 100, 50],
    }
    with pytest.raises(ValueError, match="ambiguous"):
        partition_config_from_official({**base, "ssl_config": {"k": 4, "stages": [500, 1000], "stage": [1000]}})
    with pytest.raises(ValueError, match="without the other"):
        partition_config_from_official({**base, "ssl_config": {"k": 4, "stages": [500, 1000]}})
    with pytest.raises(ValueError, match="dims_per_stage"):
        partition_config_from_official({**base, "ssl_config": {"k": 4, "stages": [500, 1000], "dims": [1, 2]}})
    assert encoder_preset_from_official("CELEBA64Encoder") == "celeba64"
    assert encoder_preset_from_official("FFHQ128Encoder") == "ffhq128"
    with pytest.raises(ValueError, match="CIFAR32Encoder"):
        encoder_preset_from_official("CIFAR32Encoder")


# ------------------------------------------------------------------------------------------------------- CLI
def test_cli_convert_writes_loadable_folders(tmp_path, converted, reference_outputs, capsys):
    out_dir = tmp_path / "converted"
    argv = ["convert", "--dpm-config", str(DPM_CONFIG), "--dpm-checkpoint", str(DPM_CHECKPOINT), "--output-dir"]
    argv += [str(out_dir), "--diti-config", str(DITI_CONFIG), "--diti-checkpoint", str(DITI_CHECKPOINT)]
    assert main(argv) == 0
    assert sorted(p.name for p in out_dir.iterdir()) == ["decoder", "encoder", "model_index.json", "scheduler", "unet"]
    assert (out_dir / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    pipe = DiTiPipeline.from_pretrained(out_dir)  # a complete pipeline folder
    assert torch.equal(
        pipe.encode(reference_outputs["encoder_input"]).z, converted.encoder(reference_outputs["encoder_input"]).z
    )
    unet = UNet2DModel.from_pretrained(out_dir / "unet")
    encoder = DiTiEncoderModel.from_pretrained(out_dir / "encoder")
    decoder = DiTiDecoderModel.from_pretrained(out_dir / "decoder")
    scheduler = DDIMScheduler.from_pretrained(out_dir / "scheduler")
    r = reference_outputs
    with torch.no_grad():
        loaded = denoise(unet, decoder, r["x_t"], r["t"], r["z"])
        original = denoise(converted.unet, converted.decoder, r["x_t"], r["t"], r["z"])
        assert torch.equal(loaded.eps, original.eps) and torch.equal(loaded.shift, original.shift)
        assert torch.equal(encoder(r["encoder_input"]).z, converted.encoder(r["encoder_input"]).z)
    assert encoder.partition == converted.encoder.partition
    public = [k for k in converted.scheduler.config if not k.startswith("_")]
    assert {k: scheduler.config[k] for k in public} == {k: converted.scheduler.config[k] for k in public}
    assert torch.equal(scheduler.alphas_cumprod, converted.scheduler.alphas_cumprod)
    # An existing output is not silently mixed with a new conversion.
    capsys.readouterr()
    assert main(argv) == 2
    assert "already contains" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        ([], "choose a command"),
        (["convert"], "the following arguments are required"),
        (["convert", "--dpm-config", "nope.yml", "--dpm-checkpoint", "nope.pt", "--output-dir", "x"], "not found"),
        (["convert", "--dpm-config", str(DPM_CONFIG), "--output-dir", "x"], "--dpm-checkpoint is required"),
        (["convert", "--dpm-config", str(DPM_CONFIG), "--dpm-checkpoint", str(DPM_CHECKPOINT), "--output-dir", "x",
          "--diti-config", str(DITI_CONFIG)], "must be given together"),
        (["convert", "--dpm-config", str(DPM_CONFIG), "--dpm-checkpoint", str(DPM_CHECKPOINT), "--output-dir", "x"],
         "pass `--image-size`"),
        (["frobnicate"], "invalid choice"),
    ],
)  # fmt: skip
def test_cli_errors_are_one_line_with_exit_code_2(argv, match, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("diti-hf: error: ") and err.count("\n") == 1 and match in err, err
    assert not (tmp_path / "x").exists()


def test_save_converted_overwrite(tmp_path, converted):
    (tmp_path / "decoder").mkdir()
    (tmp_path / "decoder" / "stale.txt").write_text("old")
    ddpm_only = ConvertedModels(unet=converted.unet, scheduler=converted.scheduler)
    with pytest.raises(ValueError, match=r"already contains \['decoder'\]"):
        save_converted(ddpm_only, tmp_path)
    written = save_converted(ddpm_only, tmp_path, overwrite=True)
    assert sorted(written) == ["scheduler", "unet"] and not (tmp_path / "decoder").exists()
