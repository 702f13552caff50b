"""Property-based checks of the algebra that must always hold (hypothesis), on a float64 tiny pipeline so that
equalities are exact up to 1e-10 rather than up to float32 kernel noise."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import tiny_images, tiny_pipeline
from diti_hf import DiTiPipeline

STEPS = 2
SETTINGS = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(num_chunks=4).to(torch.float64)


def _images(seed: int, n: int = 1) -> torch.Tensor:
    return tiny_images(n, seed=seed).double()


t_ranges = st.tuples(st.integers(0, 1000), st.integers(0, 1000)).map(sorted).map(tuple)


@SETTINGS
@given(seed=st.integers(0, 10_000), t_range=t_ranges)
def test_swap_with_itself_is_reconstruction(pipe, seed, t_range):
    a = _images(seed)
    swapped = pipe.swap(a, a, timesteps=t_range, num_inference_steps=STEPS, output_type="pt").images
    recon = pipe.reconstruct(a, num_inference_steps=STEPS, output_type="pt").images
    assert (swapped - recon).abs().max() <= 1e-10


@SETTINGS
@given(seed_a=st.integers(0, 10_000), seed_b=st.integers(0, 10_000), t_range=t_ranges)
def test_swap_takes_exactly_the_range_dims(pipe, seed_a, seed_b, t_range):
    a, b = _images(seed_a), _images(seed_b)
    out = pipe.swap(a, b, timesteps=t_range, num_inference_steps=STEPS, output_type="pt")
    z_a, z_b = pipe.encode(a).z, pipe.encode(b).z
    start, end = pipe.partition.dims_for_timesteps(*t_range)
    inside = torch.zeros(16, dtype=torch.bool)
    inside[start:end] = True
    assert torch.equal(out.z[:, inside], z_b[:, inside]) and torch.equal(out.z[:, ~inside], z_a[:, ~inside])
    every = pipe.swap(a, b, timesteps=(0, 1000), num_inference_steps=STEPS, output_type="pt")
    assert torch.equal(every.z, z_b)  # swapping every chunk gives B's z


@SETTINGS
@given(seed_a=st.integers(0, 10_000), seed_b=st.integers(0, 10_000), chunk=st.integers(0, 3))
def test_interpolation_endpoints(pipe, seed_a, seed_b, chunk):
    a, b = _images(seed_a), _images(seed_b)
    out = pipe.interpolate(
        a, b, alphas=[0.0, 1.0], chunks=(chunk, chunk + 1), num_inference_steps=STEPS, output_type="pt"
    )
    recon_a = pipe.reconstruct(a, num_inference_steps=STEPS, output_type="pt").images
    assert (out.images[0] - recon_a[0]).abs().max() <= 1e-10
    swapped = pipe.swap(a, b, chunks=(chunk, chunk + 1), num_inference_steps=STEPS, output_type="pt").images
    assert (out.images[1] - swapped[0]).abs().max() <= 1e-10  # α = 1 on a range is the swap of that range


@SETTINGS
@given(seeds=st.lists(st.integers(0, 10_000), min_size=2, max_size=3))
def test_batch_equals_per_sample(pipe, seeds):
    images = torch.cat([_images(s) for s in seeds])
    batch = pipe.reconstruct(images, num_inference_steps=STEPS, output_type="pt").images
    for i, seed in enumerate(seeds):
        single = pipe.reconstruct(_images(seed), num_inference_steps=STEPS, output_type="pt").images
        assert (single[0] - batch[i]).abs().max() <= 1e-10


def test_save_load_is_identity(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    loaded = DiTiPipeline.from_pretrained(tmp_path, torch_dtype=torch.float64)
    loaded.set_progress_bar_config(disable=True)
    for name in ("unet", "encoder", "decoder"):
        original, reloaded = getattr(pipe, name).state_dict(), getattr(loaded, name).state_dict()
        assert original.keys() == reloaded.keys()
        assert all(torch.equal(original[k], reloaded[k]) for k in original)
    x = _images(1, n=2)
    before = pipe.reconstruct(x, num_inference_steps=STEPS, output_type="pt").images
    after = loaded.reconstruct(x, num_inference_steps=STEPS, output_type="pt").images
    # Bit-identical weights; outputs equal up to kernel choice (loaded tensors are not 64-byte aligned).
    assert (before - after).abs().max() <= 1e-10
