import copy

import pytest
import torch
from diffusers import DDPMScheduler

from conftest import randomize_, tiny_adm_unet
from diti_hf import DiffusionCoefficients, DiTiDecoderModel, DiTiEncoderModel, TimestepPartition, denoise
from diti_hf.training import IntervalLossNormalizer, condition_for_timesteps, diti_loss

COEFS = DiffusionCoefficients.from_scheduler_config(DDPMScheduler().config)


@pytest.fixture(scope="module")
def setup():
    unet = tiny_adm_unet()
    for p in unet.parameters():
        p.requires_grad_(False)
    decoder = randomize_(DiTiDecoderModel.from_unet(unet, latent_dim=16), seed=11)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 16, 16, generator=g) * 2 - 1
    noise = torch.randn(4, 3, 16, 16, generator=g)
    timesteps = torch.tensor([3, 260, 610, 990])
    return unet, decoder, images, noise, timesteps


def _z_grad(setup, partition, mode):
    unet, decoder, images, noise, timesteps = setup
    z = torch.randn(4, partition.latent_dim, generator=torch.Generator().manual_seed(1), requires_grad=True)
    out = diti_loss(unet, decoder, z, images, partition, COEFS, mode=mode, timesteps=timesteps, noise=noise)
    out.loss.backward()
    return out, z.grad


def test_gradient_support_per_mode(setup):
    partition = TimestepPartition(16, 4)  # chunk of t: 0, 1, 2, 3 -> dims [0,4), [4,8), [8,12), [12,16)
    timesteps = setup[4]
    own = partition.masks_for_timesteps(timesteps, "own").bool()
    active = partition.masks_for_timesteps(timesteps, "cumulative").bool()

    out_sg, grad_sg = _z_grad(setup, partition, "stop_grad")
    assert (grad_sg[~own] == 0).all()
    assert (grad_sg[own] != 0).all()

    out_base, grad_base = _z_grad(setup, partition, "base")
    assert (grad_base[~active] == 0).all()
    assert (grad_base[active] != 0).all()
    assert torch.allclose(out_sg.loss, out_base.loss)  # same value, different gradient

    out_dual, grad_dual = _z_grad(setup, partition, "dual")
    assert torch.allclose(out_dual.loss, out_base.loss + out_sg.loss)
    assert torch.allclose(grad_dual, grad_base + grad_sg, atol=1e-7)


def test_k1_is_pdae(setup):
    unet, decoder, images, noise, timesteps = setup
    z = torch.randn(4, 16, generator=torch.Generator().manual_seed(2))
    out = diti_loss(unet, decoder, z, images, TimestepPartition(16, 1), COEFS, timesteps=timesteps, noise=noise)

    # PDAE: the whole z at every t
    def per_t(table):
        return table[timesteps].view(-1, 1, 1, 1)

    x_t = per_t(COEFS.sqrt_alphas_cumprod) * images + per_t(COEFS.sqrt_one_minus_alphas_cumprod) * noise
    d = denoise(unet, decoder, x_t, timesteps, z)
    ref = per_t(COEFS.loss_weight) * (noise - (d.eps + per_t(COEFS.shift_coef) * d.shift)) ** 2
    assert torch.allclose(out.elementwise, ref, atol=1e-7)
    assert torch.allclose(out.loss, ref.mean())
    assert torch.allclose(out.per_sample, ref.flatten(1).mean(1))


def test_one_step_leaves_unet_untouched():
    unet = tiny_adm_unet()
    unet.requires_grad_(False)
    before = copy.deepcopy(unet.state_dict())
    encoder = DiTiEncoderModel(
        sample_size=16, block_out_channels=(32, 32), attention_stages=(1,), latent_dim=16, num_chunks=4
    )
    decoder = DiTiDecoderModel.from_unet(unet, latent_dim=16)
    params = [*encoder.parameters(), *decoder.parameters()]
    opt = torch.optim.Adam(params, lr=1e-3)
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    g = torch.Generator().manual_seed(0)
    dec_before = copy.deepcopy(decoder.state_dict())
    for _ in range(2):
        out = diti_loss(unet, decoder, encoder(images).z, images, encoder.partition, COEFS, generator=g)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert out.timesteps.shape == (4,) and out.loss.ndim == 0
    assert all(p.grad is None for p in unet.parameters())
    assert all(torch.equal(before[k], v) for k, v in unet.state_dict().items())
    assert any(not torch.equal(dec_before[k], v) for k, v in decoder.state_dict().items())


def test_generator_determinism(setup):
    unet, decoder, images, _, _ = setup
    z = torch.randn(4, 16)
    p = TimestepPartition(16, 4)
    a = diti_loss(unet, decoder, z, images, p, COEFS, generator=torch.Generator().manual_seed(5))
    b = diti_loss(unet, decoder, z, images, p, COEFS, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.timesteps, b.timesteps) and torch.equal(a.loss, b.loss)


def test_bad_arguments(setup):
    unet, decoder, images, noise, timesteps = setup
    p = TimestepPartition(16, 4)
    with pytest.raises(ValueError, match="mode"):
        diti_loss(unet, decoder, torch.zeros(4, 16), images, p, COEFS, mode="simclr")
    with pytest.raises(ValueError, match="z"):
        diti_loss(unet, decoder, torch.zeros(4, 12), images, p, COEFS)
    with pytest.raises(ValueError, match="T="):
        diti_loss(unet, decoder, torch.zeros(4, 16), images, TimestepPartition(16, 4, 500), COEFS)


def test_v_prediction_base_enters_the_loss_as_eps(setup):
    unet, decoder, images, noise, timesteps = setup
    coefs = DiffusionCoefficients.from_scheduler_config(DDPMScheduler(prediction_type="v_prediction").config)
    z = torch.randn(4, 16, generator=torch.Generator().manual_seed(2))
    out = diti_loss(unet, decoder, z, images, TimestepPartition(16, 1), coefs, timesteps=timesteps, noise=noise)

    def per_t(table):
        return table[timesteps].view(-1, 1, 1, 1)

    x_t = per_t(coefs.sqrt_alphas_cumprod) * images + per_t(coefs.sqrt_one_minus_alphas_cumprod) * noise
    d = denoise(unet, decoder, x_t, timesteps, z)  # no schedule: the raw output, v
    eps = per_t(coefs.sqrt_alphas_cumprod) * d.eps + per_t(coefs.sqrt_one_minus_alphas_cumprod) * x_t
    ref = per_t(coefs.loss_weight) * (noise - (eps + per_t(coefs.shift_coef) * d.shift)) ** 2
    assert torch.allclose(out.elementwise, ref, atol=1e-6)
    assert not torch.allclose(
        out.elementwise, per_t(coefs.loss_weight) * (noise - (d.eps + per_t(coefs.shift_coef) * d.shift)) ** 2
    )


def test_interval_masks_condition_on_the_own_chunk_only(setup):
    partition = TimestepPartition(16, 4, mask_mode="interval")
    timesteps = setup[4]
    own = partition.masks_for_timesteps(timesteps, "own").bool()
    for mode in ("stop_grad", "base"):
        out, grad = _z_grad(setup, partition, mode)
        assert (grad[~own] == 0).all() and (grad[own] != 0).all()
    z = torch.randn(4, 16, generator=torch.Generator().manual_seed(3))
    condition = condition_for_timesteps(z, timesteps, partition, stop_grad=False)
    assert torch.equal(condition, z * own) and not torch.equal(condition, z * partition.masks_for_timesteps(timesteps))


def test_interval_loss_normalizer_equalises_the_chunks():
    normalizer = IntervalLossNormalizer(num_chunks=3, momentum=0.9)
    per_sample = torch.tensor([1.0, 1.0, 100.0, 100.0], requires_grad=True)
    chunks = torch.tensor([0, 0, 1, 1])
    loss = normalizer(per_sample, chunks)
    # running means 1 and 100 (chunk 2 unseen); scale = their mean 50.5 / own mean: the overall size is kept
    assert normalizer.running_mean.tolist() == [1.0, 100.0, 0.0] and normalizer.seen.tolist() == [True, True, False]
    assert loss.item() == pytest.approx(50.5)
    loss.backward()
    assert per_sample.grad.tolist() == pytest.approx([50.5 / 4, 50.5 / 4, 0.505 / 4, 0.505 / 4])
    normalizer(torch.tensor([3.0, 50.0]), torch.tensor([0, 2]))
    assert normalizer.running_mean.tolist() == pytest.approx([0.9 * 1 + 0.1 * 3, 100.0, 50.0])
    with pytest.raises(ValueError, match="`momentum` must lie in"):
        IntervalLossNormalizer(3, momentum=1.0)
