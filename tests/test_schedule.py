import pytest
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


def test_v_prediction_reads_back_as_the_exact_eps():
    config = DDPMScheduler(prediction_type="v_prediction").config
    c = DiffusionCoefficients.from_scheduler_config(config)
    assert c.prediction_type == "v_prediction" and c.to("cpu").prediction_type == "v_prediction"
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 3, 4, 4, generator=g), torch.randn(3, 3, 4, 4, generator=g)
    t = torch.tensor([0, 500, 999])
    a = c.alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    v = DDPMScheduler.from_config(config).get_velocity(x0, eps, t)
    torch.testing.assert_close(c.eps(v, x_t, t), eps, atol=1e-5, rtol=0)
    torch.testing.assert_close(c.eps(v[1:2], x_t[1:2], 500), eps[1:2], atol=1e-5, rtol=0)  # a scalar time-step
    # an ε-prediction schedule passes the output through untouched
    assert DiffusionCoefficients.from_scheduler_config(DDPMScheduler().config).eps(v, x_t, t) is v


def test_unknown_prediction_type_is_refused():
    with pytest.raises(ValueError, match=r"`prediction_type` must be one of .*got 'sample'"):
        DiffusionCoefficients.from_scheduler_config(DDPMScheduler(prediction_type="sample").config)
