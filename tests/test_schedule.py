import torch
from diffusers import DDIMScheduler, DDPMScheduler

from diti_hf import DiffusionCoefficients


def test_tables_match_official(reference_outputs):
    c = DiffusionCoefficients.from_scheduler_config(DDIMScheduler(beta_schedule="linear").config)
    assert (c.shift_coef - reference_outputs["shift_coef"]).abs().max() <= 1e-5
    assert (c.loss_weight - reference_outputs["loss_weight"]).abs().max() <= 1e-6
    assert c.shift_coef[0] == 0


def test_tables_follow_definitions():
    c = DiffusionCoefficients.from_scheduler_config(DDPMScheduler().config)
    ab = DDPMScheduler().alphas_cumprod
    assert torch.allclose(c.alphas_cumprod, ab, atol=1e-6)
    assert torch.allclose(c.sampling_coef, -(1 - ab).sqrt(), atol=1e-6)
    # shift_coef and the sampling coefficient differ much only at small t (elsewhere by the factor √α_t ≈ 0.99)
    ratio = c.shift_coef[1:] / c.sampling_coef[1:]
    assert ((ratio[199:] - 1).abs() < 0.0105).all()
    assert ((ratio[:10] - 1).abs() > 0.13).all()
    assert 400 <= int(c.loss_weight.argmax()) <= 550  # peaks near t ≈ 475
