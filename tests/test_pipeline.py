import json
import os
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import DDIMScheduler, DiffusionPipeline

import diti_hf.pipelines.pipeline_diti as pipeline_module
from conftest import tiny_images, tiny_pipeline
from diti_hf import DiTiPipeline, denoise
from diti_hf.models.decoder import ZConditionedResnetBlock2D

STEPS = 4


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


@pytest.fixture(scope="module")
def pipe64():
    """Float64 copy: batch-vs-single comparisons then test the batching logic, free of conv rounding (oneDNN picks
    batch-size-dependent kernels; in float32 the same comparison differs by ~1e-5)."""
    return tiny_pipeline().to(torch.float64)


def test_generation_is_deterministic_and_batch_equals_singles(pipe, pipe64):
    z = torch.randn(3, 16, generator=torch.Generator().manual_seed(0))
    a = pipe(
        z=z,
        generator=[torch.Generator().manual_seed(i) for i in range(3)],
        num_inference_steps=STEPS,
        output_type="pt",
    )
    b = pipe(
        z=z,
        generator=[torch.Generator().manual_seed(i) for i in range(3)],
        num_inference_steps=STEPS,
        output_type="pt",
    )
    assert torch.equal(a.images, b.images)
    assert a.images.min() >= 0 and a.images.max() <= 1
    z = z.double()
    batch = pipe64(
        z=z,
        generator=[torch.Generator().manual_seed(i) for i in range(3)],
        num_inference_steps=STEPS,
        output_type="pt",
    )
    for i in range(3):
        single = pipe64(
            z=z[i : i + 1], generator=torch.Generator().manual_seed(i), num_inference_steps=STEPS, output_type="pt"
        )
        assert (single.images[0] - batch.images[i]).abs().max() <= 1e-10
    chunked = pipe64(
        z=z,
        generator=[torch.Generator().manual_seed(i) for i in range(3)],
        num_inference_steps=STEPS,
        output_type="pt",
        batch_size=2,
    )
    assert (chunked.images - batch.images).abs().max() <= 1e-10


def test_reconstruct_batch_equals_singles(pipe, pipe64):
    x = tiny_images(3).double()
    batch = pipe64.reconstruct(x, num_inference_steps=STEPS, output_type="pt").images
    for i in range(3):
        single = pipe64.reconstruct(x[i : i + 1], num_inference_steps=STEPS, output_type="pt").images
        assert (single[0] - batch[i]).abs().max() <= 1e-10


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_unguided_generation_equals_diffusers_ddim(pipe, prediction_type):
    """guidance=False is ε_θ alone: diffusers' DDIMScheduler with clipping and the clipped model output (for a
    v-prediction DDPM diffusers converts v itself)."""
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config, prediction_type=prediction_type)
    pipe = DiTiPipeline(pipe.unet, pipe.encoder, pipe.decoder, scheduler)
    pipe.set_progress_bar_config(disable=True)
    latents = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    ours = pipe(latents=latents, guidance=False, num_inference_steps=STEPS, output_type="pt").images * 2 - 1
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(STEPS)
    x = latents
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(pipe.unet(x, t).sample, t, x, eta=0.0, use_clipped_model_output=True).prev_sample
    assert (ours - x.clamp(-1, 1)).abs().max() <= 1e-5


def _record_conditions(monkeypatch):
    calls = []
    original = pipeline_module.denoise

    def recording(unet, decoder, sample, timestep, z=None, coefficients=None):
        calls.append((int(timestep), None if z is None else z.clone()))
        return original(unet, decoder, sample, timestep, z, coefficients)

    monkeypatch.setattr(pipeline_module, "denoise", recording)
    return calls


def test_same_masks_in_inversion_and_generation(pipe, monkeypatch):
    calls = _record_conditions(monkeypatch)
    x = tiny_images(2)
    z = pipe.encode(x).z
    inverted = pipe.invert(x, num_inference_steps=STEPS)
    pipe(z=z, latents=inverted.latents, num_inference_steps=STEPS, output_type="pt")
    assert [t for t, _ in calls] == [0, 250, 500, 750, 750, 500, 250, 0]
    table = pipe.partition.mask_table()
    for t, condition in calls:
        assert torch.allclose(condition, z * table[pipe.partition.chunk_of(t)])
    inversion = dict(calls[:4])
    generation = dict(calls[4:])
    assert all(torch.equal(inversion[t], generation[t]) for t in inversion)


def test_pdae_mode_and_guidance_off(pipe, monkeypatch):
    calls = _record_conditions(monkeypatch)
    x = tiny_images(2)
    z = pipe.encode(x).z
    pipe.invert(x, num_inference_steps=STEPS, use_masks=False)
    assert all(torch.equal(c, z) for _, c in calls)
    calls.clear()
    pipe.invert(x, num_inference_steps=STEPS, guidance=False)
    assert all(c is None for _, c in calls)  # ε_θ alone, never z = 0


def test_swap_identities(pipe64):
    pipe = pipe64
    a, b = tiny_images(2, seed=1).double(), tiny_images(2, seed=2).double()
    recon = pipe.reconstruct(a, num_inference_steps=STEPS, output_type="pt")
    empty = pipe.swap(a, b, timesteps=(300, 300), num_inference_steps=STEPS, output_type="pt")
    assert (empty.images - recon.images).abs().max() <= 1e-10
    same = pipe.swap(a, a, timesteps=[(0, 500), (500, 1000)], num_inference_steps=STEPS, output_type="pt")
    assert (same.images - recon.images.repeat_interleave(2, 0)).abs().max() <= 1e-10
    z_a, z_b = pipe.encode(a).z, pipe.encode(b).z
    full = pipe.swap(a, b, chunks=(0, 4), num_inference_steps=STEPS, output_type="pt")
    assert torch.allclose(full.z, z_b)
    coarse = pipe.swap(a, b, timesteps=(500, 1000), num_inference_steps=STEPS, output_type="pt")
    start, end = pipe.partition.dims_for_timesteps(500, 1000)
    assert (start, end) == (8, 16)
    assert torch.equal(coarse.z[:, :start], z_a[:, :start]) and torch.equal(coarse.z[:, start:], z_b[:, start:])
    assert torch.equal(coarse.latents, recon.latents)  # generated from the source's x_T
    assert (coarse.images - recon.images).abs().max() > 1e-4


def test_interpolate_endpoints(pipe64):
    pipe = pipe64
    a, b = tiny_images(2, seed=3).double(), tiny_images(2, seed=4).double()
    row = pipe.interpolate(a, b, alphas=[0.0, 0.5, 1.0], num_inference_steps=STEPS, output_type="pt")
    recon_a = pipe.reconstruct(a, num_inference_steps=STEPS, output_type="pt").images
    assert row.images.shape == (6, 3, 16, 16)
    assert (row.images[0::3] - recon_a).abs().max() <= 1e-10
    assert torch.allclose(row.z[2::3], pipe.encode(b).z)
    both = pipe.interpolate(a, b, alphas=[0.0, 1.0], slerp_latents=True, num_inference_steps=STEPS, output_type="pt")
    recon_b = pipe.reconstruct(b, num_inference_steps=STEPS, output_type="pt").images
    assert (both.images[0::2] - recon_a).abs().max() <= 1e-10
    assert (both.images[1::2] - recon_b).abs().max() <= 1e-10


def test_edit_moves_along_direction(pipe):
    x = tiny_images(1, seed=5)
    w = torch.zeros(16)
    w[3], w[10] = 2.0, -1.0
    out = pipe.edit(x, direction=w, scales=[0.0, 1.0], num_inference_steps=STEPS, output_type="pt")
    z = pipe.encode(x).z
    assert torch.allclose(out.z[0], z[0])
    expected = z[0] + 4.0 * w / w.norm()  # √d = 4, σ = 1
    assert torch.allclose(out.z[1], expected, atol=1e-6)
    top1 = pipe.edit(x, direction=w, scales=1.0, top_k=1, num_inference_steps=STEPS, output_type="pt")
    delta = top1.z[0] - z[0]
    assert torch.count_nonzero(delta) == 1 and delta[3] > 0


def test_inputs_pil_numpy_tensor_agree(pipe):
    x = tiny_images(2, seed=6)
    uint8 = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    pils = [PIL.Image.fromarray(a) for a in uint8]
    from_tensor = pipe.encode(torch.from_numpy(uint8).permute(0, 3, 1, 2).float() / 127.5 - 1).z
    assert torch.allclose(pipe.encode(pils).z, from_tensor, atol=1e-6)
    assert torch.allclose(pipe.encode(uint8).z, from_tensor, atol=1e-6)
    assert torch.allclose(pipe.encode(pils[0].convert("RGBA")).z, from_tensor[:1], atol=1e-6)
    out = pipe.reconstruct(pils, num_inference_steps=2, output_type="pil")
    assert len(out.images) == 2 and out.images[0].size == (16, 16)
    assert pipe.reconstruct(x, num_inference_steps=2, output_type="np").images.shape == (2, 16, 16, 3)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda p: p.encode(torch.zeros(1, 3, 32, 32)), ValueError, r"\(B, 3, 16, 16\)"),
        (lambda p: p.encode(torch.zeros(1, 1, 16, 16)), ValueError, r"\(B, 3, 16, 16\)"),
        (lambda p: p.encode(torch.full((1, 3, 16, 16), 200.0)), ValueError, r"\[-1, 1\]"),
        (lambda p: p.encode(torch.full((1, 3, 16, 16), float("nan"))), ValueError, "NaN"),
        (lambda p: p.encode("image.png"), TypeError, "images"),
        (lambda p: p(z=torch.zeros(1, 15), num_inference_steps=2), ValueError, r"\(1, 16\)"),
        (lambda p: p(z=torch.zeros(1, 16), num_inference_steps=2, output_type="jpg"), ValueError, "output_type"),
        (
            lambda p: p(z=torch.zeros(2, 16), generator=[torch.Generator()], num_inference_steps=2),
            ValueError,
            "generator",
        ),
        (lambda p: p(num_inference_steps=2), ValueError, "z"),
        (lambda p: p(z=torch.zeros(1, 16), num_inference_steps=0), ValueError, "num_inference_steps"),
        (
            lambda p: p.swap(tiny_images(1), tiny_images(1), timesteps=(500, 1200), num_inference_steps=2),
            ValueError,
            "timesteps",
        ),
        (
            lambda p: p.swap(tiny_images(1), tiny_images(1), timesteps=(-5, 100), num_inference_steps=2),
            ValueError,
            "timesteps",
        ),
        (
            lambda p: p.swap(tiny_images(1), tiny_images(1), timesteps=(600, 100), num_inference_steps=2),
            ValueError,
            "timesteps",
        ),
        (lambda p: p.swap(tiny_images(1), tiny_images(1), chunks=(0, 9), num_inference_steps=2), ValueError, "chunks"),
        (
            lambda p: p.swap(tiny_images(2), tiny_images(1), timesteps=(0, 100), num_inference_steps=2),
            ValueError,
            "same number",
        ),
        (
            lambda p: p.interpolate(tiny_images(1), tiny_images(1), alphas=[], num_inference_steps=2),
            ValueError,
            "alphas",
        ),
        (lambda p: p.edit(tiny_images(1), direction=torch.zeros(16), num_inference_steps=2), ValueError, "non-zero"),
        (lambda p: p.edit(tiny_images(1), direction=torch.ones(8), num_inference_steps=2), ValueError, "direction"),
    ],
)
def test_bad_inputs(pipe, call, error, match):
    with pytest.raises(error, match=match):
        call(pipe)


def _outputs(p):
    x = tiny_images(2, seed=7)
    return p.encode(x).z, p.reconstruct(x, num_inference_steps=2, output_type="pt").images


def test_save_load_round_trip(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == "DiTiPipeline"
    assert index["encoder"] == ["diti_hf.models.encoder", "DiTiEncoderModel"]
    assert (tmp_path / "decoder" / "diffusion_pytorch_model.safetensors").exists()
    z, images = _outputs(pipe)
    for loader in (DiTiPipeline.from_pretrained, DiffusionPipeline.from_pretrained):
        loaded = loader(tmp_path)
        assert isinstance(loaded, DiTiPipeline)
        loaded.set_progress_bar_config(disable=True)
        z2, images2 = _outputs(loaded)
        assert torch.equal(z, z2) and torch.equal(images, images2)


def test_folder_missing_a_component(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    for f in (tmp_path / "decoder").iterdir():
        f.unlink()
    (tmp_path / "decoder").rmdir()
    with pytest.raises(ValueError, match="decoder"):
        DiTiPipeline.from_pretrained(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="model_index.json"):
        DiTiPipeline.from_pretrained(tmp_path / "empty")


def test_offline_hub_cache_load(pipe, tmp_path):
    """A pipeline in a Hub-cache layout loads by repo id with HF_HUB_OFFLINE=1 (no network)."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--org--diti-tiny"
    snapshot = repo / "snapshots" / revision
    pipe.save_pretrained(snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    z, _ = _outputs(pipe)
    torch.save(tiny_images(2, seed=7), tmp_path / "x.pt")
    script = (
        "import torch, sys\n"
        "from diti_hf import DiTiPipeline\n"
        f"p = DiTiPipeline.from_pretrained('org/diti-tiny', cache_dir={str(tmp_path / 'hub')!r})\n"
        f"z = p.encode(torch.load({str(tmp_path / 'x.pt')!r})).z\n"
        f"torch.save(z, {str(tmp_path / 'z.pt')!r})\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert torch.equal(torch.load(tmp_path / "z.pt"), z)
    env_missing = {**env}
    bad = script.replace("org/diti-tiny", "org/not-cached")
    result = subprocess.run([sys.executable, "-c", bad], env=env_missing, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "org/not-cached" in result.stderr


def test_numpy_float_images_are_checked(pipe):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pipe.encode(np.full((16, 16, 3), 3.0, dtype=np.float32))


def test_image_processor_saved_with_pipeline(tmp_path):
    from diti_hf import DiTiImageProcessor

    pipe = tiny_pipeline()
    pipe.register_modules(image_processor=DiTiImageProcessor(resolution=16, crop_box=[2, 4, 20, 20]))
    rgb = (np.arange(30 * 40 * 3) % 251).astype(np.uint8).reshape(30, 40, 3)
    expected = (
        torch.from_numpy(
            np.asarray(PIL.Image.fromarray(rgb[2:22, 4:24]).resize((16, 16), PIL.Image.BILINEAR), dtype=np.float32)
        ).permute(2, 0, 1)[None]
        / 127.5
        - 1
    )
    assert torch.allclose(pipe.preprocess(PIL.Image.fromarray(rgb)), expected, atol=1e-6)
    pipe.save_pretrained(tmp_path)
    assert (tmp_path / "image_processor" / "preprocessor_config.json").exists()
    for loader in (DiTiPipeline.from_pretrained, DiffusionPipeline.from_pretrained):
        loaded = loader(tmp_path)
        assert isinstance(loaded.image_processor, DiTiImageProcessor)
        assert loaded.image_processor.crop_box == [2, 4, 20, 20]
        assert torch.equal(loaded.preprocess(PIL.Image.fromarray(rgb)), pipe.preprocess(PIL.Image.fromarray(rgb)))


def test_celeba64_preset_crop():
    from diti_hf import DiTiImageProcessor

    processor = DiTiImageProcessor.from_preset("celeba64")
    assert (processor.resolution, processor.crop_box) == (64, [57, 25, 128, 128])
    image = np.zeros((218, 178, 3), dtype=np.uint8)
    image[57:185, 25:153] = 255  # exactly the crop box is white
    pixels = processor(PIL.Image.fromarray(image))["pixel_values"]
    assert pixels.shape == (1, 3, 64, 64) and torch.equal(pixels, torch.ones_like(pixels))


def test_swapping_the_scheduler_refreshes_the_coefficients():
    pipe = tiny_pipeline()
    before = pipe.coefficients("cpu").sampling_coef.clone()
    pipe.scheduler = DDIMScheduler(beta_start=0.001, beta_end=0.03, clip_sample=True, timestep_spacing="leading")
    after = pipe.coefficients("cpu").sampling_coef
    assert (after - before).abs().max() > 1e-3
    assert torch.allclose(after, -(1 - pipe.scheduler.alphas_cumprod).sqrt(), atol=1e-6)


def test_compile_models_reaches_every_block_and_keeps_results():
    """`torch.compile(pipe.unet)` would never run (DiTi calls the UNet's parts); `compile_models` must reach them all."""
    pipe = tiny_pipeline()
    images = tiny_images(2)
    # every layer with weights records the calls it gets outside a compiled graph
    eager_calls = []

    def record(module: torch.nn.Module, args: tuple) -> None:
        if not torch.compiler.is_compiling():
            eager_calls.append(module)

    layers = [
        module
        for model in (pipe.unet, pipe.encoder, pipe.decoder)
        for module in model.modules()
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.GroupNorm))
    ]
    handles = [layer.register_forward_pre_hook(record) for layer in layers]
    with torch.no_grad():
        reference = pipe.reconstruct(images, num_inference_steps=3, output_type="pt").images
    # eager: the hooks see every layer that is called as a module (the decoder's modulated norms are folded into
    # functional calls and never are)
    ran = {id(module) for module in eager_calls}
    assert len(ran) == len(layers) - sum(isinstance(m, ZConditionedResnetBlock2D) for m in pipe.decoder.modules())
    eager_calls.clear()
    torch._dynamo.reset()
    # The resnets share one `forward`, recompiled for each resnet shape; past dynamo's limit the rest would silently
    # run eagerly. A limit of 1 (made an error) stands in for the real UNet's many shapes: compile_models must raise it.
    config = torch._dynamo.config
    saved = config.recompile_limit, config.fail_on_recompile_limit_hit
    config.recompile_limit, config.fail_on_recompile_limit_hit = 1, True
    try:
        pipe.compile_models(backend="eager")
        with torch.no_grad():
            compiled = pipe.reconstruct(images, num_inference_steps=3, output_type="pt").images
    finally:
        config.recompile_limit, config.fail_on_recompile_limit_hit = saved
        torch._dynamo.reset()
    for handle in handles:
        handle.remove()
    assert eager_calls == []  # compiled: none ran outside a graph
    torch.testing.assert_close(compiled, reference, atol=1e-5, rtol=0)


def test_every_edit_call_takes_the_shared_options():
    """The README's claim: reconstruct, swap, interpolate and edit share output_type, generator, batch_size,
    use_masks and guidance, with the same meaning."""
    import inspect

    from conftest import tiny_images, tiny_pipeline

    pipe = tiny_pipeline(num_chunks=4)
    shared = {"num_inference_steps", "output_type", "batch_size", "use_masks", "guidance", "generator", "return_dict"}
    for name in ("reconstruct", "swap", "interpolate", "edit"):
        assert shared <= set(inspect.signature(getattr(pipe, name)).parameters), name
    a, b = tiny_images(2, seed=0), tiny_images(2, seed=1)
    w = torch.randn(pipe.encoder.config.latent_dim, generator=torch.Generator().manual_seed(0))
    opts = {"num_inference_steps": 2, "output_type": "pt", "generator": torch.Generator().manual_seed(0)}
    calls = {
        "reconstruct": lambda **kw: pipe.reconstruct(a, **opts, **kw),
        "swap": lambda **kw: pipe.swap(a, b, timesteps=[(0, 250), (500, 1000)], **opts, **kw),
        "interpolate": lambda **kw: pipe.interpolate(a, b, alphas=[0.0, 1.0], timesteps=(0, 500), **opts, **kw),
        "edit": lambda **kw: pipe.edit(a, direction=w, scales=[-1.0, 1.0], **opts, **kw),
    }
    # guidance=False: the frozen DDPM alone, so every variant is the DDPM's own reconstruction of the source
    x_t = pipe.invert(a, num_inference_steps=2, guidance=False).latents
    ddpm = pipe(latents=x_t, guidance=False, num_inference_steps=2, output_type="pt").images
    for name, call in calls.items():
        out = call(guidance=False).images
        variants = out.view(2, -1, *out.shape[1:])
        for v in range(variants.shape[1]):
            torch.testing.assert_close(variants[:, v], ddpm, msg=name)
    # use_masks=False: PDAE's sampler (whole z at every step) in the inversion and the generation
    inverted = pipe.invert(a, num_inference_steps=2, use_masks=False)
    unmasked = pipe(z=inverted.z, latents=inverted.latents, num_inference_steps=2, output_type="pt", use_masks=False)
    torch.testing.assert_close(calls["reconstruct"](use_masks=False).images, unmasked.images)
    assert not torch.allclose(calls["reconstruct"]().images, unmasked.images)
    # batch_size only changes how the variants are batched, never the result
    for name, call in calls.items():
        torch.testing.assert_close(call(batch_size=1).images, call().images, msg=name)


def test_silent_coercions_are_announced():
    import warnings

    import PIL.Image

    from conftest import tiny_images, tiny_pipeline

    pipe = tiny_pipeline(num_chunks=4)  # chunks of 250 time-steps
    a, b = tiny_images(1, seed=0), tiny_images(1, seed=1)
    with pytest.warns(UserWarning, match=r"whole chunks 0\.\.0: the effective range is \[0, 250\)"):
        pipe.swap(a, b, timesteps=(10, 20), num_inference_steps=2, output_type="pt")
    with pytest.warns(UserWarning, match=r"effective range is \[250, 750\)"):
        pipe.interpolate(a, b, alphas=[0.5], timesteps=(300, 600), num_inference_steps=2, output_type="pt")
    with pytest.warns(UserWarning, match=r"no negative value .* pass `images \* 2 - 1`"):
        pipe.encode((a + 1) / 2)
    with pytest.warns(UserWarning, match=r"\(40, 24\).* resized and cropped to 16×16"):
        pipe.encode([PIL.Image.new("RGB", (40, 24), (200, 10, 10))])
    with warnings.catch_warnings():  # aligned ranges, [-1, 1] tensors and right-sized images say nothing
        warnings.simplefilter("error")
        pipe.swap(a, b, timesteps=[(0, 250), (500, 1000)], num_inference_steps=2, output_type="pt")
        pipe.encode([PIL.Image.new("RGB", (16, 16))])


@pytest.mark.parametrize("mask_mode", ["cumulative", "interval"])
def test_chunk_dims_change_the_decoder_only_where_the_mask_mode_says(mask_mode):
    pipe = tiny_pipeline(mask_mode=mask_mode)
    partition = pipe.partition
    x = tiny_images(2, seed=5)
    z = pipe.encode(x).z
    c = pipe.coefficients(x.device)
    edges = {t for i in range(partition.num_chunks) for lo in partition.chunk_timesteps(i) for t in (lo - 1, lo)}
    times = sorted(t for t in edges | set(range(0, 1000, 50)) if 0 <= t < 1000)
    for i in range(partition.num_chunks):
        start, end = partition.chunk_dims(i)
        lo, hi = partition.chunk_timesteps(i)
        other = z.clone()
        other[:, start:end] += 1.0
        changed = []
        for t in times:
            a, b = (
                denoise(pipe.unet, pipe.decoder, x, t, pipe.condition(v, t), coefficients=c).shift for v in (z, other)
            )
            changed.append(not torch.equal(a, b))
        expected = [lo <= t < hi if mask_mode == "interval" else t >= lo for t in times]
        assert changed == expected, (i, mask_mode)


def test_interval_pipeline_masks_inversion_and_generation_alike(monkeypatch):
    pipe = tiny_pipeline(mask_mode="interval")
    calls = _record_conditions(monkeypatch)
    x = tiny_images(2)
    z = pipe.encode(x).z
    inverted = pipe.invert(x, num_inference_steps=STEPS)
    pipe(z=z, latents=inverted.latents, num_inference_steps=STEPS, output_type="pt")
    own = pipe.partition.mask_table("own")
    assert [t for t, _ in calls] == [0, 250, 500, 750, 750, 500, 250, 0]
    for t, condition in calls:
        assert torch.equal(condition, z * own[pipe.partition.chunk_of(t)])
