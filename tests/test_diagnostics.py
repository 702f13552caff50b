"""The frozen DDPM's loss profile, the partition fitted to it, and what z controls (keep-rates, swap protocols,
sample validity, clean control), each on constructed cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diti_hf import TimestepPartition
from diti_hf.evaluation.control import regeneration_keep_rates, sample_validity
from diti_hf.evaluation.loss_profile import loss_profile
from diti_hf.evaluation.targets import clean_control
from diti_hf.partition import partition_from_profile
from diti_hf.sampling import DiffusionCoefficients

COEFFICIENTS = DiffusionCoefficients.from_betas(torch.linspace(1e-4, 0.02, 1000))


# ---------------------------------------------------------------------------------------------------- partition
def test_flat_profile_gives_the_uniform_split():
    p = TimestepPartition.from_loss_profile([0, 999], [1.0, 1.0], latent_dim=64, num_chunks=16)
    assert p.stages == [250, 500, 750, 1000] and p.dims_per_stage == [16, 16, 16, 16]
    assert p.chunk_end_dims == TimestepPartition(64, 16).chunk_end_dims


def test_stage_aligned_profile_yields_exactly_those_stages():
    # a piecewise-constant density whose four equal-mass quarters end at chunk starts 125, 250, 500, 1000
    # (k = 8, T = 1000: chunks start every 125 steps): densities 8, 8, 4, 2 on [0,125), [125,250), [250,500),
    # [500,1000) give masses 1000, 1000, 1000, 1000
    t = np.arange(1000)
    density = np.select([t < 125, t < 250, t < 500], [8.0, 8.0, 4.0], 2.0)
    p = TimestepPartition.from_loss_profile(t.tolist(), density.tolist(), latent_dim=40, num_chunks=8)
    assert p.stages == [125, 250, 500, 1000]
    assert p.dims_per_stage == [10, 10, 10, 10]  # equal mass → equal dims, so the short stages get more per chunk
    per_chunk = [p.chunk_dims(i)[1] - p.chunk_dims(i)[0] for i in range(8)]
    assert per_chunk == [10, 10, 5, 5, 2, 2, 2, 4]


def test_concentrated_profile_puts_most_dims_where_the_loss_is():
    t = list(range(0, 1000, 50))
    loss = [5.0 if 100 <= x < 300 else 0.5 for x in t]
    p = TimestepPartition.from_loss_profile(t, loss, latent_dim=64, num_chunks=16)
    dims = [p.chunk_dims(i)[1] - p.chunk_dims(i)[0] for i in range(16)]
    starts = [p.chunk_timesteps(i)[0] for i in range(16)]
    inside = [d for d, s in zip(dims, starts) if 125 <= s < 250]
    outside = [d for d, s in zip(dims, starts) if s >= 375]
    assert min(inside) > max(outside)


@settings(max_examples=60, deadline=None)
@given(
    loss=st.lists(st.floats(0.0, 10.0, allow_nan=False), min_size=2, max_size=30).filter(lambda v: sum(v) > 1e-3),
    num_chunks=st.integers(1, 32),
    extra_dims=st.integers(0, 100),
    num_stages=st.integers(1, 8),
)
def test_from_loss_profile_is_always_valid_and_deterministic(loss, num_chunks, extra_dims, num_stages):
    d = num_chunks + extra_dims
    t = np.linspace(0, 999, len(loss)).round().astype(int)
    t, idx = np.unique(t, return_index=True)
    values = [loss[i] for i in idx]
    if sum(values) <= 1e-3:
        return
    p = TimestepPartition.from_loss_profile(t.tolist(), values, d, num_chunks, num_stages)
    q = TimestepPartition.from_loss_profile(t.tolist(), values, d, num_chunks, num_stages)
    assert p == q
    assert sum(p.dims_per_stage) == d and min(p.dims_per_stage) >= 1
    assert all(b > a for a, b in zip([0, *p.stages], p.stages)) and p.stages[-1] == 1000
    assert len(p.stages) <= num_stages
    # every chunk owns at least one dim, and the partition round-trips through its config
    assert all(p.chunk_dims(i)[1] > p.chunk_dims(i)[0] for i in range(num_chunks))
    assert TimestepPartition.from_dict(p.to_dict()) == p


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"timesteps": [0, 10], "loss": [1.0]}, "equal length"),
        ({"timesteps": [10, 5], "loss": [1.0, 1.0]}, "strictly increasing"),
        ({"timesteps": [0, 1000], "loss": [1.0, 1.0]}, r"\[0, 1000\)"),
        ({"timesteps": [0, 10], "loss": [0.0, 0.0]}, "not all zero"),
        ({"timesteps": [0, 10], "loss": [1.0, float("nan")]}, "finite"),
        ({"timesteps": [0, 10], "loss": [1.0, -1.0]}, "non-negative"),
        ({"timesteps": [0, 10], "loss": [1.0, 1.0], "num_stages": 0}, "num_stages"),
        ({"timesteps": [0, 10], "loss": [1.0, 1.0], "num_chunks": 65}, "num_chunks"),
    ],
)
def test_from_loss_profile_bad_inputs(kwargs, match):
    args = {"latent_dim": 64, "num_chunks": 16, **kwargs}
    with pytest.raises(ValueError, match=match):
        TimestepPartition.from_loss_profile(**args)


# ---------------------------------------------------------------------------------------------------- loss profile
def test_loss_profile_of_a_perfect_and_of_a_blind_ddpm():
    image = torch.linspace(-0.8, 0.8, 3 * 8 * 8).view(1, 3, 8, 8)
    images = image.repeat(6, 1, 1, 1)
    a = COEFFICIENTS.alphas_cumprod.double()

    def perfect(x_t, t):  # knows x_0: returns the true noise
        at = a[t].view(-1, 1, 1, 1)
        return ((x_t.double() - at.sqrt() * image.double()) / (1 - at).sqrt()).float()

    timesteps = [0, 100, 500, 999]
    exact = loss_profile(perfect, images, COEFFICIENTS, timesteps, batch_size=4)
    assert max(exact["eps_error"]) < 1e-6 and max(exact["x0_error"]) < 1e-6
    blind = loss_profile(lambda x, t: torch.zeros_like(x), images, COEFFICIENTS, timesteps, batch_size=4)
    # ε̂ = 0: the ε error is E[ε²] of the shared seeded noise, the same at every t
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    assert blind["eps_error"] == pytest.approx([float(noise.double().square().mean())] * 4, rel=1e-6)
    weight = COEFFICIENTS.loss_weight.double()
    assert blind["weighted_eps_error"] == pytest.approx([float(weight[t]) * blind["eps_error"][0] for t in timesteps])
    # x̂_0 = clamp(x_t / √ᾱ): the error grows with t, so the loss rate is non-negative and positive somewhere
    assert blind["x0_error"][0] < blind["x0_error"][-1] and min(blind["x0_loss_rate"]) >= 0
    with pytest.raises(ValueError, match="strictly increasing"):
        loss_profile(perfect, images, COEFFICIENTS, [5, 5])
    with pytest.raises(ValueError, match="NaN"):
        loss_profile(lambda x, t: torch.full_like(x, float("nan")), images, COEFFICIENTS, [0, 10])


def test_partition_from_profile_uses_the_chosen_signal():
    profile = {
        "timesteps": [0, 999],
        "weighted_eps_error": [1.0, 1.0],
        "x0_loss_rate": [0.0, 1.0],
    }
    flat = partition_from_profile(profile, 64, 16)
    rising = partition_from_profile(profile, 64, 16, signal="x0_loss_rate")
    assert flat.stages == [250, 500, 750, 1000] and rising.stages[0] > 250
    with pytest.raises(ValueError, match="signal"):
        partition_from_profile(profile, 64, 16, signal="nope")


# ---------------------------------------------------------------------------------------------------- control
class _ReadOracle:
    """Reads factor f from the mean of channel f's pixels: class = round((mean + 1) * 2) (4 classes)."""

    def predict(self, images):
        return ((images[:, :, 0, 0] + 1) * 2).round().clamp(0, 3).long()

    def predict_proba(self, images):
        pred = self.predict(images)
        confident = images[:, :, 0, 1] > 0  # pixel (0, 1) > 0 marks a confident read
        probs = []
        for f in range(pred.shape[1]):  # confident: 0.97 on the read class; otherwise 0.5
            rest = torch.where(confident[:, f], 0.01, 0.5 / 3)
            p = rest[:, None].repeat(1, 4)
            p[torch.arange(len(pred)), pred[:, f]] = torch.where(confident[:, f], 0.97, 0.5)
            probs.append(p)
        return probs


def _render(labels: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] whose channel f reads as labels[:, f]."""
    img = (labels.float() / 2 - 1).view(-1, labels.shape[1], 1, 1).expand(-1, -1, 4, 4).clone()
    return img


def _dataset(n: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.randint(0, 4, (n, 3), generator=torch.Generator().manual_seed(seed))
    return _render(labels), labels


def test_keep_rates_of_a_generator_that_ignores_z_equal_the_noisings_own_survival():
    images, labels = _dataset()

    def ignores_z(z, x_t, t):  # the DDPM alone, whatever z says: a deterministic function of x_t
        return (x_t.clamp(-1, 1) + 1) / 2

    result = regeneration_keep_rates(
        ignores_z, lambda x: x.flatten(1), _ReadOracle(), images, labels, COEFFICIENTS.alphas_cumprod,
        ["a", "b", "c"], timesteps=[0, 400, 999], num_images=24, batch_size=8,
    )  # fmt: skip
    assert result["keep_own"] == result["keep_ddpm"]
    assert result["keep_own"]["a"][0] > 0.9  # nearly no noise at t = 0: x_t is the image
    assert result["keep_own"]["a"][-1] < 0.7  # at t = 999 the noise erased it


def test_keep_rates_of_a_perfect_z_driven_generator_are_one():
    images, labels = _dataset()

    def from_z(z, x_t, t):
        if z is None:
            return torch.zeros_like(x_t) + 0.5
        return (_render(z.long()) + 1) / 2

    result = regeneration_keep_rates(
        from_z, lambda x: ((x[:, :, 0, 0] + 1) * 2).round(), _ReadOracle(), images, labels,
        COEFFICIENTS.alphas_cumprod, ["a", "b", "c"], timesteps=[250, 999], num_images=24, batch_size=8,
    )  # fmt: skip
    for name in "abc":
        assert result["keep_own"][name] == [1.0, 1.0] and result["follow_other"][name] == [1.0, 1.0]
        assert result["keep_ddpm"][name][0] < 1.0


def test_sample_validity_counts_confident_reads_and_compares_histograms():
    _, labels = _dataset(n=100)

    def sampler(n, seed):  # every sample reads class 1 of every factor; only even-numbered ones confidently
        img = torch.full((n, 3, 4, 4), (1 / 2 - 1 + 1) / 2)
        img[:, :, 0, 1] = torch.tensor([1.0 if i % 2 == 0 else 0.0 for i in range(n)]).view(n, 1)
        return img

    result = sample_validity(sampler, _ReadOracle(), labels, [4, 4, 4], ["a", "b", "c"], num_samples=10, batch_size=4)
    # batches of 4, 4, 2: even positions within each batch are confident → 2 + 2 + 1 of 10
    assert result["valid_fraction"] == pytest.approx(0.5)
    a = result["factors"]["a"]
    assert a["sample_frequency"] == [0.0, 1.0, 0.0, 0.0]
    data = torch.bincount(labels[:, 0], minlength=4).double() / 100
    assert a["max_frequency_gap"] == pytest.approx(float((torch.tensor([0.0, 1.0, 0.0, 0.0]) - data).abs().max()))
    assert "data_valid_fraction" not in result and "data_confident_fraction" not in a


def test_sample_validity_reads_real_images_for_the_ceiling():
    _, labels = _dataset(n=100)
    real = torch.zeros(8, 3, 4, 4)
    real[:6, 0, 0, 1] = 1.0  # factor a confident on 6 of 8 images
    real[:3, 1:, 0, 1] = 1.0  # factors b and c confident on 3 of them: all three on images 0-2 only

    def sampler(n, seed):
        return torch.zeros(n, 3, 4, 4)  # never confident

    result = sample_validity(sampler, _ReadOracle(), labels, [4, 4, 4], ["a", "b", "c"], num_samples=4,
                             reference_images=real)  # fmt: skip
    assert result["valid_fraction"] == 0.0
    assert result["num_reference_images"] == 8 and result["data_valid_fraction"] == pytest.approx(3 / 8)
    assert result["factors"]["a"]["data_confident_fraction"] == pytest.approx(6 / 8)
    assert result["factors"]["b"]["data_confident_fraction"] == pytest.approx(3 / 8)


def test_clean_control_hand_computed():
    names = ["fine", "mid", "coarse"]
    ranges = [[0, 250], [250, 500], [500, 1000], [0, 500]]
    # range 0 flips fine alone (others move ≤ 0.2): clean; range 1 flips mid but coarse moves 0.3: not clean;
    # range 2 flips mid and coarse together, fine moves 0.1: clean for both; range 3 flips nothing
    flip = np.array([[0.9, 0.1, 0.05, 0.5], [0.1, 0.8, 0.75, 0.6], [0.0, 0.2, 0.9, 0.1]])
    change = np.array([[0.9, 0.1, 0.1, 0.5], [0.15, 0.8, 0.8, 0.6], [0.2, 0.3, 0.9, 0.1]])
    result = clean_control(flip, change, names, ranges)
    assert result["by_factor"] == {"fine": [[0, 250]], "mid": [[500, 1000]], "coarse": [[500, 1000]]}
    assert [e["clean"] for e in result["by_range"]] == [True, False, True, False]
    assert result["count"] == 3 and result["disjoint_groups"] is True
    # only overlapping clean ranges → no two disjoint groups
    overlapping = clean_control(flip[:, [0, 3]], change[:, [0, 3]], names, [[0, 250], [0, 500]])
    assert overlapping["count"] == 1 and overlapping["disjoint_groups"] is False


# ---------------------------------------------------------------------------------------------------- pipeline
def test_generation_from_the_top_of_the_grid_equals_generation_from_x_T():
    from conftest import tiny_images, tiny_pipeline

    pipe = tiny_pipeline(num_chunks=4)
    images = tiny_images(2)
    inverted = pipe.invert(images, num_inference_steps=4)
    full = pipe(z=inverted.z, latents=inverted.latents, num_inference_steps=4, output_type="pt").images
    top = max(pipe._grid(4))
    again = pipe(
        z=inverted.z, latents=inverted.latents, num_inference_steps=4, output_type="pt", start_timestep=top
    ).images
    torch.testing.assert_close(again, full, rtol=0, atol=0)
    with pytest.raises(ValueError, match="start_timestep"):
        pipe(z=inverted.z, latents=inverted.latents, num_inference_steps=4, start_timestep=1000)


def test_add_noise_is_the_forward_process():
    from conftest import tiny_images, tiny_pipeline

    pipe = tiny_pipeline(num_chunks=4)
    images = tiny_images(3)
    x_t = pipe.add_noise(images, 600, generator=torch.Generator().manual_seed(5))
    eps = torch.randn(images.shape, generator=torch.Generator().manual_seed(5))
    a = pipe.scheduler.alphas_cumprod[600]
    torch.testing.assert_close(x_t, a.sqrt() * images + (1 - a).sqrt() * eps)
    with pytest.raises(ValueError, match="`timestep` must be an int in"):
        pipe.add_noise(images, -1)


def test_stochastic_swap_starts_at_the_top_of_the_swapped_chunks():
    from conftest import tiny_images, tiny_pipeline

    pipe = tiny_pipeline(num_chunks=4)
    a, b = tiny_images(2, seed=0), tiny_images(2, seed=1)
    ranges = [(0, 250), (300, 400)]

    def run(seed):
        return pipe.swap(
            a, b, timesteps=ranges, num_inference_steps=4, output_type="pt", inversion="stochastic",
            generator=torch.Generator().manual_seed(seed),
        ).images  # fmt: skip

    out = run(0)
    assert out.shape == (4, 3, 16, 16)
    torch.testing.assert_close(run(0), out, rtol=0, atol=0)
    assert not torch.equal(run(1), out)
    # by hand: range (300, 400) covers chunk 1, t in [250, 500): noise to t = 499 and generate with the swapped z
    noise = torch.randn(a.shape, generator=torch.Generator().manual_seed(0))
    alpha = pipe.scheduler.alphas_cumprod[499]
    x_t = alpha.sqrt() * a + (1 - alpha).sqrt() * noise
    z = pipe.encode(a).z.clone()
    start, end = pipe.partition.chunk_dims(1)
    z[:, start:end] = pipe.encode(b).z[:, start:end]
    manual = pipe(z=z, latents=x_t, start_timestep=499, num_inference_steps=4, output_type="pt").images
    torch.testing.assert_close(out.view(2, 2, 3, 16, 16)[:, 1], manual)
    ddim = pipe.swap(a, b, timesteps=ranges, num_inference_steps=4, output_type="pt").images
    assert not torch.allclose(ddim, out)
    with pytest.raises(ValueError, match="`inversion` must be one of"):
        pipe.swap(a, b, timesteps=ranges, inversion="random")


def test_report_defaults_swap_ranges_to_the_stages_of_a_staged_partition():
    from diti_hf.evaluation import ModelFunctions
    from diti_hf.evaluation.generation_sections import _default_ranges

    staged = TimestepPartition(64, 16, stages=[125, 313, 1000], dims_per_stage=[20, 24, 20])
    assert _default_ranges(ModelFunctions(lambda x: x, partition=staged), 4) == [(0, 125), (125, 313), (313, 1000)]
    uniform = TimestepPartition(64, 16)
    assert _default_ranges(ModelFunctions(lambda x: x, partition=uniform), 4) == [
        (0, 250), (250, 500), (500, 750), (750, 1000)
    ]  # fmt: skip


def test_a_bare_ddpm_gets_the_ddpm_diagnostics_only(tmp_path):
    from diffusers import DDPMPipeline, DDPMScheduler

    from conftest import tiny_ddpm_unet
    from diti_hf.data.shapes import ShapeFactor, generate_shapes
    from diti_hf.evaluation import EvaluationConfig, evaluate_pipeline

    factors = [
        ShapeFactor("bg", "background", [(0.1, 0.1, 0.1), (0.8, 0.8, 0.8)]),
        ShapeFactor("size", "scale", [0.15, 0.35]),
    ]
    ds = generate_shapes(60, seed=3, resolution=16, factors=factors)
    ddpm = DDPMPipeline(unet=tiny_ddpm_unet(), scheduler=DDPMScheduler(num_train_timesteps=1000))
    config = EvaluationConfig(
        oracle_epochs=1, num_attribute_loss_images=8, attribute_loss_timesteps=[0, 500], num_loss_profile_images=8,
        num_validity_samples=3, num_sample_steps=2, random_baseline=False,
    )  # fmt: skip
    report = evaluate_pipeline({"ddpm": ddpm}, ds, config, output_dir=tmp_path)
    assert report["models"]["ddpm"] == {"kind": "ddpm", "num_chunks": None, "probe": None, "alignment": None}
    assert report["attribute_loss"]["ddpm_of"] == "ddpm" and report["loss_profile"]["ddpm_of"] == "ddpm"
    assert report["loss_profile"]["auto_partition"] is None  # no partitioned model to fit it for
    assert report["ddpm_samples"]["num_samples"] == 3 and report["targets"] == {}
    assert report["ddpm_samples"]["eta"] == 0.0 and report["ddpm_samples"]["num_reference_images"] == 12
    assert "pixels" in report["models"]  # the baselines still run
    assert {"probes.png", "loss_profile.png"} <= set(report["plots"]) and (tmp_path / "loss_profile.png").is_file()


def test_pipeline_swap_protocols_match_their_definitions():
    from conftest import tiny_images, tiny_pipeline
    from diti_hf.evaluation import pipeline_functions

    pipe = tiny_pipeline(num_chunks=4)
    fns = pipeline_functions(pipe, num_inference_steps=2)
    a, b = tiny_images(2, seed=0), tiny_images(2, seed=1)
    ranges = [(0, 250), (500, 1000)]
    assert set(fns.swap_protocols) == {"source_inverted", "target_inverted", "shared_random", "stochastic"}
    # target_inverted: A's z with the range's dims from B, generated from B's inverted x_T
    z_a, z_b = pipe.encode(a).z, pipe.encode(b).z
    x_b = pipe.invert(b, num_inference_steps=2).latents
    expected = []
    for lo, hi in ranges:
        z = z_a.clone()
        start, end = pipe.partition.dims_for_timesteps(lo, hi)
        z[:, start:end] = z_b[:, start:end]
        expected.append(pipe(z=z, latents=x_b, num_inference_steps=2, output_type="pt").images)
    got = fns.swap_protocols["target_inverted"](a, b, ranges)
    torch.testing.assert_close(got, torch.stack(expected, 1))
    # shared_random: the two ranges of a pair start from one x_T, so a range covering no dims would reproduce
    # the other's start; here both differ from source_inverted, which starts from A's own inversion
    shared = fns.swap_protocols["shared_random"](a, b, ranges)
    assert shared.shape == got.shape and not torch.allclose(
        shared, fns.swap_protocols["source_inverted"](a, b, ranges)
    )
    # the regeneration and sampling functions are the pipeline's own calls
    x_t = pipe.add_noise(a, 700, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(
        fns.regenerate_fn(z_a, x_t, 700),
        pipe(z=z_a, latents=x_t, start_timestep=700, num_inference_steps=2, output_type="pt").images,
    )
    assert fns.sample_fn(3, 0).shape == (3, 3, 16, 16)


def test_bare_ddpm_samples_with_eta_are_seeded_and_differ_from_deterministic_ddim():
    from diffusers import DDPMScheduler

    from conftest import tiny_ddpm_unet
    from diti_hf.evaluation import EvaluationConfig
    from diti_hf.evaluation.adapters import ddpm_functions

    unet, config = tiny_ddpm_unet(), dict(DDPMScheduler(num_train_timesteps=1000).config)
    deterministic = ddpm_functions(unet, config, sample_steps=4).sample_fn
    stochastic = ddpm_functions(unet, config, sample_steps=4, sample_eta=1.0).sample_fn
    a, b = stochastic(2, 7), stochastic(2, 7)
    assert torch.equal(a, b) and a.shape == (2, 3, 16, 16) and a.min() >= 0.0 and a.max() <= 1.0
    assert not torch.equal(a, stochastic(2, 8))
    assert (a - deterministic(2, 7)).abs().max() > 1e-3  # same start, fresh noise at every step
    assert torch.equal(deterministic(2, 7), deterministic(2, 7))
    with pytest.raises(ValueError, match="sample_eta"):
        EvaluationConfig(sample_eta=1.5)
