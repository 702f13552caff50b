"""The sampler layer (`diti_hf.sampling`): the DDIM step and its inverse, the grid, the step count and its default."""

import inspect

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import DDIMScheduler

from conftest import tiny_images, tiny_pipeline
from diti_hf import DiffusionCoefficients, DiTiPipeline, denoise
from diti_hf.sampling import (
    DEFAULT_NUM_INFERENCE_STEPS,
    check_num_inference_steps,
    ddim_inverse_step,
    ddim_step,
    sampling_grid,
)


@pytest.fixture(scope="module")
def pipe() -> DiTiPipeline:
    return tiny_pipeline()


def _model_outputs(pipe: DiTiPipeline, sample: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ε_θ and the shift G of the tiny model at `(x_t, t)`, on the condition masked for t."""
    z = pipe.encode(tiny_images(sample.shape[0], seed=1)).z
    out = denoise(pipe.unet, pipe.decoder, sample, t, pipe.condition(z, t), coefficients=pipe.coefficients("cpu"))
    assert out.shift is not None and out.shift.abs().max() > 0
    return out.eps, out.shift


@pytest.mark.parametrize(("t", "s"), [(100, 60), (500, 480), (980, 20)])
def test_a_ddim_step_then_its_inverse_gives_back_x(pipe, t, s):
    c = pipe.coefficients("cpu")
    x_t = 0.2 * tiny_images(2, seed=2)  # small enough that x̂_0 is never clamped
    eps, shift = _model_outputs(pipe, x_t, t)
    x_s = ddim_step(c, x_t, t, s, eps, shift)
    assert not torch.allclose(x_s, x_t, atol=1e-3)
    # DDIM inversion reads ε̂ at the point it starts from; with the same ε̂ it undoes the step exactly
    eps_hat = eps + c.sampling_coef[t] * shift
    torch.testing.assert_close(ddim_inverse_step(c, x_s, s, t, eps_hat), x_t, atol=2e-6, rtol=0)


def test_the_shift_enters_as_minus_sqrt_one_minus_alpha_bar_times_g(pipe):
    c = pipe.coefficients("cpu")
    x_t = 0.2 * tiny_images(2, seed=3)
    eps, shift = _model_outputs(pipe, x_t, 700)
    guided = eps - (1 - c.alphas_cumprod[700]).sqrt() * shift
    torch.testing.assert_close(ddim_step(c, x_t, 700, 600, eps, shift), ddim_step(c, x_t, 700, 600, guided))


def test_the_last_steps_end_at_x0_and_at_eps(pipe):
    c = pipe.coefficients("cpu")
    x_t = 0.2 * tiny_images(2, seed=4)
    eps, _ = _model_outputs(pipe, x_t, 0)
    x0 = c.sqrt_recip_alphas_cumprod[0] * x_t - c.sqrt_recipm1_alphas_cumprod[0] * eps
    torch.testing.assert_close(ddim_step(c, x_t, 0, None, eps), x0)
    # at t = 999, x̂_0 is clamped and ε̂ recomputed from it: that ε̂ is x_T
    eps, _ = _model_outputs(pipe, x_t, 999)
    x0 = (c.sqrt_recip_alphas_cumprod[999] * x_t - c.sqrt_recipm1_alphas_cumprod[999] * eps).clamp(-1, 1)
    eps_hat = (c.sqrt_recip_alphas_cumprod[999] * x_t - x0) / c.sqrt_recipm1_alphas_cumprod[999]
    torch.testing.assert_close(ddim_inverse_step(c, x_t, 999, None, eps), eps_hat)


def test_an_unguided_step_is_diffusers_ddim_step():
    scheduler = DDIMScheduler(clip_sample=True, set_alpha_to_one=True, timestep_spacing="leading")
    c = DiffusionCoefficients.from_scheduler_config(scheduler.config)
    scheduler.set_timesteps(10)
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    timesteps = [int(t) for t in scheduler.timesteps]  # 900, 800, ..., 0
    for t, prev in zip(timesteps, [*timesteps[1:], None]):
        # x̂_0 is clamped and ε̂ recomputed from it, as diffusers' use_clipped_model_output
        expected = scheduler.step(eps, t, x, eta=0.0, use_clipped_model_output=True).prev_sample
        torch.testing.assert_close(ddim_step(c, x, t, prev, eps), expected, atol=2e-5, rtol=0)


def test_steps_refuse_the_wrong_direction(pipe):
    c, x = pipe.coefficients("cpu"), torch.zeros(1, 3, 16, 16)
    with pytest.raises(ValueError, match=r"^`prev_timestep` must be smaller than `timestep`=100, got 200\.$"):
        ddim_step(c, x, 100, 200, x)
    with pytest.raises(ValueError, match=r"^`next_timestep` must be larger than `timestep`=100, got 100\.$"):
        ddim_inverse_step(c, x, 100, 100, x)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("n", [1, 7, 50, 999, 1000])
def test_the_grid_has_n_distinct_ascending_steps_within_0_and_t(spacing, n):
    grid = sampling_grid(DDIMScheduler(timestep_spacing=spacing), n, 1000)
    assert len(grid) == n and grid == sorted(set(grid))
    assert grid[0] >= 0 and grid[-1] <= 999
    if spacing == "trailing":
        assert grid[-1] == 999
    else:
        assert grid[0] == 0
    if spacing == "linspace" and n > 1:
        assert grid[-1] == 999
    if n == 1000:
        assert grid == list(range(1000))


def test_the_leading_grid_is_the_official_one():
    assert sampling_grid(DDIMScheduler(), 50, 1000) == list(range(0, 1000, 20))
    assert sampling_grid(DDIMScheduler(steps_offset=1), 10, 1000) == list(range(1, 1000, 100))


BAD_STEPS = [0, -3, 1001, 10**9, 20.0, True, "20", None, np.float32(5)]


@pytest.mark.parametrize("value", BAD_STEPS, ids=repr)
def test_bad_step_counts_give_one_line_naming_the_argument_value_and_range(value):
    for check in (
        lambda: check_num_inference_steps(value, 1000),
        lambda: sampling_grid(DDIMScheduler(), value, 1000),
    ):
        with pytest.raises(ValueError) as info:
            check()
        message = str(info.value)
        assert "\n" not in message
        assert message.startswith("`num_inference_steps` must be an int in [1, 1000]")
        assert message.endswith(f"got {value!r}.")


def test_the_pipeline_refuses_bad_step_counts_before_any_work(pipe):
    with pytest.raises(ValueError, match=r"^`num_inference_steps` must be an int in \[1, 1000\] .*got 0\.$"):
        pipe.invert(tiny_images(1), num_inference_steps=0)
    with pytest.raises(ValueError, match=r"^`num_inference_steps` must be an int in \[1, 1000\] .*got 1001\.$"):
        pipe(z=torch.zeros(1, 16), num_inference_steps=1001)


def test_good_step_counts_pass_as_ints():
    assert check_num_inference_steps(1, 1000) == 1
    assert check_num_inference_steps(np.int64(1000), 1000) == 1000
    assert type(check_num_inference_steps(np.int64(7), 1000)) is int


def test_one_default_step_count_for_the_pipeline_and_the_command_line():
    from diti_hf.commands import _common

    for name in ("__call__", "invert", "reconstruct", "swap", "interpolate", "edit"):
        default = inspect.signature(getattr(DiTiPipeline, name)).parameters["num_inference_steps"].default
        assert default == DEFAULT_NUM_INFERENCE_STEPS, name
    # repeated there so that `--help` imports no torch (see its docstring)
    assert _common.DEFAULT_STEPS == DEFAULT_NUM_INFERENCE_STEPS == 50


def test_the_command_line_refuses_more_steps_than_the_model_has_time_steps(pipe, tmp_path, capsys):
    from diti_hf.cli import main

    pipe.save_pretrained(tmp_path / "model")
    PIL.Image.new("RGB", (16, 16)).save(tmp_path / "img.png")
    argv = ["reconstruct", "--model", tmp_path / "model", "--images", tmp_path / "img.png", "--steps", "1001"]
    code = main([str(a) for a in [*argv, "--output-dir", tmp_path / "out", "--no-progress"]])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "--steps: `num_inference_steps` must be an int in [1, 1000]" in err and err.rstrip().endswith("got 1001.")
    assert not (tmp_path / "out").exists()  # refused before any image was read or written


def test_the_app_checks_its_steps_field_with_the_models_number_of_time_steps():
    from diti_hf.app import AppInputError, check_steps

    assert check_steps("40", 100) == 40 and check_steps(40.0, 100) == 40 and check_steps(3000, 4000) == 3000
    for value in (0, 101, 2.5, "x", None):
        with pytest.raises(AppInputError, match=r"^DDIM steps: expected a whole number in \[1, 100\], got "):
            check_steps(value, 100)
