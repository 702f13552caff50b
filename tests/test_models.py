import pytest
import torch
from diffusers import UNet2DModel

from conftest import randomize_, tiny_adm_unet, tiny_ddpm_unet
from diti_hf import DiTiDecoderModel, DiTiEncoderModel, denoise, unet_down, unet_up
from diti_hf.models._cpu_kernels import dropout, use_reference_ops


def _inputs(unet, batch=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    size = unet.config.sample_size
    return torch.randn(batch, 3, size, size, generator=g), torch.tensor([0, 417, 999][:batch])


def test_split_equals_unet_forward(tiny_unet):
    x, t = _inputs(tiny_unet)
    with torch.no_grad():
        ref = tiny_unet(x, t).sample
        split = unet_up(tiny_unet, unet_down(tiny_unet, x, t))
        eps = denoise(tiny_unet, None, x, t).eps
    assert (split - ref).abs().max() <= 1e-5
    assert (eps - ref).abs().max() <= 1e-5
    assert torch.equal(denoise(tiny_unet, None, x, 417).eps, unet_up(tiny_unet, unet_down(tiny_unet, x, 417)))


def test_unsupported_unet_is_refused():
    unet = UNet2DModel(
        sample_size=16,
        block_out_channels=(32, 64),
        down_block_types=("SkipDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "SkipUpBlock2D"),
        norm_num_groups=16,
        layers_per_block=1,
    )
    with pytest.raises(ValueError, match="SkipDownBlock2D"):
        DiTiDecoderModel.from_unet(unet, latent_dim=8)


def test_decoder_is_zero_at_init_and_uses_z(tiny_unet):
    decoder = DiTiDecoderModel.from_unet(tiny_unet, latent_dim=32)
    x, t = _inputs(tiny_unet)
    z = torch.randn(3, 32)
    out = denoise(tiny_unet, decoder, x, t, z)
    assert out.shift.shape == x.shape
    assert out.shift.abs().max() == 0
    randomize_(decoder, seed=3)
    g1 = denoise(tiny_unet, decoder, x, t, z).shift
    g2 = denoise(tiny_unet, decoder, x, t, 5 * z + 3).shift
    assert g1.abs().mean() > 0 and (g1 - g2).abs().mean() > 1e-3
    # each resnet of the trainable path is z-conditioned, the frozen UNet is untouched
    n_resnets = sum(1 for m in decoder.modules() if type(m).__name__ == "ZConditionedResnetBlock2D")
    n_unet_up = sum(1 for n, m in tiny_unet.named_modules() if type(m).__name__ == "ResnetBlock2D" and "down" not in n)
    assert n_resnets == n_unet_up > 0


def test_decoder_topology_check():
    decoder = DiTiDecoderModel.from_unet(tiny_ddpm_unet(), latent_dim=16)
    other = tiny_adm_unet()
    x, t = _inputs(other)
    with pytest.raises(ValueError, match="block_out_channels"):
        denoise(other, decoder, x, t, torch.zeros(3, 16))
    with pytest.raises(ValueError, match="z"):
        denoise(tiny_ddpm_unet(), decoder, *_inputs(tiny_ddpm_unet()), torch.zeros(3, 15))


def _trainable_decoder_setup():
    """A tiny ADM UNet, a randomised decoder on it, and inputs `(x, t, z)` for a backward pass."""
    unet = tiny_adm_unet()
    decoder = randomize_(DiTiDecoderModel.from_unet(unet, latent_dim=16), seed=5)
    x, t = _inputs(unet)
    return unet, decoder, x, t, torch.randn(3, 16)


def _decoder_grads(unet, decoder, x, t, z):
    decoder.zero_grad()
    denoise(unet, decoder, x, t, z).shift.square().mean().backward()
    return [p.grad.clone() for p in decoder.parameters()]


def test_decoder_gradient_checkpointing_same_grads():
    unet, decoder, x, t, z = _trainable_decoder_setup()
    plain = _decoder_grads(unet, decoder, x, t, z)
    decoder.enable_gradient_checkpointing()
    checkpointed = _decoder_grads(unet, decoder, x, t, z)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, checkpointed))


def _saved_bytes_and_grads(unet, decoder, x, t, z):
    """Bytes autograd stores for the decoder's backward (unique storages) and the gradients it then gives."""
    storages = {}

    def pack(tensor):
        storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    decoder.zero_grad()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        shift = denoise(unet, decoder, x, t, z).shift
    shift.square().mean().backward()
    return sum(storages.values()), [p.grad.clone() for p in decoder.parameters()]


def test_decoder_norm_act_recompute_stores_less_and_keeps_grads(tiny_unet, monkeypatch):
    """`norm_act` stores only its input and recomputes GN/modulation/SiLU in backward: same gradients, less memory."""
    import diti_hf.models.decoder as decoder_module

    decoder = randomize_(DiTiDecoderModel.from_unet(tiny_unet, latent_dim=16), seed=5)
    x, t = _inputs(tiny_unet)
    z = torch.randn(3, 16)
    recomputed_bytes, recomputed = _saved_bytes_and_grads(tiny_unet, decoder, x, t, z)
    stored = decoder_module._modulated_norm_act
    monkeypatch.setattr(decoder_module, "norm_act", lambda norm, act, h, s=None, b=None: stored(norm, act, h, s, b))
    stored_bytes, plain = _saved_bytes_and_grads(tiny_unet, decoder, x, t, z)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, recomputed))
    assert recomputed_bytes < 0.85 * stored_bytes  # 0.79–0.80 on these tiny UNets, 0.67 on the benchmark one


@pytest.mark.parametrize("make_unet", [tiny_ddpm_unet, tiny_adm_unet])
def test_decoder_save_load_round_trip(tmp_path, make_unet):
    unet = make_unet()
    decoder = randomize_(DiTiDecoderModel.from_unet(unet, latent_dim=24), seed=7).eval()
    decoder.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    loaded = DiTiDecoderModel.from_pretrained(tmp_path).eval()
    x, t = _inputs(unet)
    z = torch.randn(3, 24)
    with torch.no_grad():
        assert torch.equal(denoise(unet, decoder, x, t, z).shift, denoise(unet, loaded, x, t, z).shift)


def test_encoder_presets_and_round_trip(tmp_path):
    enc = DiTiEncoderModel.from_preset("celeba64", latent_dim=512, num_chunks=64)
    assert sum(p.numel() for p in enc.parameters()) == 1_487_104
    big = DiTiEncoderModel.from_preset("ffhq128", latent_dim=512)
    assert big.proj_out.in_features == 4096
    small = randomize_(
        DiTiEncoderModel.from_preset(
            "small32", latent_dim=40, num_chunks=4, stages=[100, 1000], dims_per_stage=[10, 30]
        ),
        seed=2,
    ).eval()
    x = torch.randn(2, 3, 32, 32)
    out = small(x)
    assert out.z.shape == (2, 40)
    assert out.partition.chunk_end_dims == small.partition.chunk_end_dims
    assert torch.equal(out.for_timesteps(250, 1000), out.z[:, 10:])  # chunks 1..3
    assert torch.equal(out.for_timesteps(100, 1000), out.z)  # chunk 0 spans t in [0, 250)
    assert torch.equal(out.chunk(0), out.z[:, :10])
    assert torch.equal(out.masked(50), torch.cat([out.z[:, :10], torch.zeros(2, 30)], 1))
    small.save_pretrained(tmp_path)
    loaded = DiTiEncoderModel.from_pretrained(tmp_path).eval()
    assert loaded.partition == small.partition
    assert torch.equal(loaded(x).z, out.z)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sample_size": 30}, "sample_size"),
        ({"attention_stages": (5,)}, "attention_stages"),
        ({"latent_dim": 8, "num_chunks": 16}, "num_chunks"),
        ({"block_out_channels": (32, 48, 64)}, "block_out_channels"),
    ],
)
def test_encoder_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DiTiEncoderModel.from_preset("small32", **kwargs)


def test_encoder_bad_input():
    enc = DiTiEncoderModel.from_preset("small32", latent_dim=16, num_chunks=4)
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\)"):
        enc(torch.zeros(1, 3, 64, 64))
    with pytest.raises(TypeError, match="floating"):
        enc(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="empty"):
        enc(torch.zeros(0, 3, 32, 32))
    with pytest.raises(ValueError, match="preset"):
        DiTiEncoderModel.from_preset("nope")


def test_compiled_decoder_trains_with_the_same_gradients():
    """`compile_denoiser` on the training path: dynamo traces the decoder, its `norm_act` recompute included."""
    from diti_hf.models import compile_denoiser

    unet, decoder, x, t, z = _trainable_decoder_setup()
    eager = _decoder_grads(unet, decoder, x, t, z)
    torch._dynamo.reset()
    compile_denoiser(unet, decoder, backend="aot_eager")  # dynamo + AOT autograd, without code generation
    compiled = _decoder_grads(unet, decoder, x, t, z)
    assert decoder._compiled_call_impl is not None
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(eager, compiled))
    torch._dynamo.reset()


def test_dropout_keeps_one_minus_p_and_rescales():
    torch.manual_seed(0)
    hidden = torch.randn(64, 32, 32, 32, requires_grad=True)
    out = dropout(hidden, 0.1, training=True)
    kept = out != 0
    keep_probability = round(0.9 * 2**16) / 2**16  # 0.899994
    # 2M draws: the standard error is 2e-4; each of the four 16-bit lanes of a 64-bit draw is uniform on its own
    assert abs(kept.float().mean().item() - keep_probability) < 1e-3
    lanes = kept.flatten().float().view(-1, 4).mean(0)
    assert (lanes - keep_probability).abs().max() < 2e-3
    torch.testing.assert_close(out[kept], hidden[kept] / keep_probability)  # E[out] = hidden
    out.backward(torch.ones_like(out))
    torch.testing.assert_close(hidden.grad, kept.float() / keep_probability)
    assert dropout(hidden, 0.1, training=False) is hidden and dropout(hidden, 0.0, training=True) is hidden
    assert dropout(hidden, 1.0, training=True).abs().max() == 0
    assert dropout(hidden.detach().bfloat16(), 0.5, training=True).dtype == torch.bfloat16
    sparse = dropout(hidden.detach(), 0.99, training=True)  # keep 655 of 2^16 levels
    assert abs((sparse != 0).float().mean().item() - 655 / 2**16) < 1e-3


def test_upsample_is_nearest_upsampling_with_its_gradient():
    from diffusers.models.upsampling import Upsample2D

    from diti_hf.models._cpu_kernels import upsample

    hidden = torch.randn(3, 8, 5, 7, requires_grad=True)
    plain = Upsample2D(8, use_conv=False)
    fast = upsample(plain, hidden)
    reference = torch.nn.functional.interpolate(hidden, scale_factor=2.0, mode="nearest")
    assert torch.equal(fast, reference)
    grad = torch.randn_like(fast)
    assert torch.equal(*(torch.autograd.grad(out, hidden, grad)[0] for out in (fast, reference)))
    # channels_last input and upsamplers with a conv go through the module itself
    with_conv = Upsample2D(8, use_conv=True)
    assert torch.equal(upsample(with_conv, hidden), with_conv(hidden))
    channels_last = hidden.detach().contiguous(memory_format=torch.channels_last)
    assert upsample(plain, channels_last).is_contiguous(memory_format=torch.channels_last)


def test_decoder_gives_the_same_shift_with_and_without_autograd(tiny_unet):
    """Without autograd the up path switches its upsamplers to channels_last on CPU; the values must not move."""
    decoder = randomize_(DiTiDecoderModel.from_unet(tiny_unet, latent_dim=32), seed=4).eval()
    x, t = _inputs(tiny_unet)
    z = torch.randn(3, 32)
    with torch.no_grad():
        fast = denoise(tiny_unet, decoder, x, t, z)
    with torch.enable_grad():
        reference = denoise(tiny_unet, decoder, x, t, z)
    torch.testing.assert_close(fast.shift, reference.shift.detach(), atol=1e-5, rtol=1e-5)


def test_reference_ops_switch_runs_the_plain_pytorch_ops():
    from diffusers.models.upsampling import Upsample2D

    from diti_hf.models._cpu_kernels import upsample

    hidden = torch.randn(2, 4, 8, 8)
    upsampler = Upsample2D(4, use_conv=False)
    try:
        use_reference_ops(True)
        torch.manual_seed(3)
        ours = dropout(hidden, 0.25, True)
        torch.manual_seed(3)
        torch.testing.assert_close(ours, torch.nn.functional.dropout(hidden, 0.25, True), rtol=0, atol=0)
        torch.testing.assert_close(upsample(upsampler, hidden), upsampler(hidden), rtol=0, atol=0)
    finally:
        use_reference_ops(False)
    torch.manual_seed(3)
    fast = dropout(hidden, 0.25, True)
    torch.manual_seed(3)
    assert not torch.equal(fast, torch.nn.functional.dropout(hidden, 0.25, True))  # the 16-bit-lane kernel again


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_load_frozen_ddpm_reads_eps_and_v_bases(tmp_path, prediction_type):
    from diffusers import DDPMScheduler

    from diti_hf.models import eps_function, load_frozen_ddpm
    from diti_hf.sampling import DiffusionCoefficients

    unet = tiny_adm_unet()
    unet.save_pretrained(tmp_path / "unet")
    DDPMScheduler(prediction_type=prediction_type).save_pretrained(tmp_path / "scheduler")
    if prediction_type == "sample":
        with pytest.raises(ValueError, match=r"ε- or v-prediction DDPM .*got prediction_type='sample'"):
            load_frozen_ddpm(tmp_path)
        return
    loaded, config = load_frozen_ddpm(tmp_path)
    assert config["prediction_type"] == prediction_type and not any(p.requires_grad for p in loaded.parameters())
    coefficients = DiffusionCoefficients.from_scheduler_config(config)
    x_t, t = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([10, 900])
    with torch.no_grad():
        out = unet(x_t, t).sample
    a = coefficients.alphas_cumprod[t].view(-1, 1, 1, 1)
    expected = out if prediction_type == "epsilon" else a.sqrt() * out + (1 - a).sqrt() * x_t
    torch.testing.assert_close(eps_function(loaded, coefficients)(x_t, t), expected)
