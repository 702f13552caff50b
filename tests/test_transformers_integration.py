"""The card's `pipeline_tag: image-feature-extraction` holds: after `import diti_hf`, transformers' `AutoModel` and
`pipeline("image-feature-extraction")` load a saved pipeline's encoder folder and return `z`."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers.utils import logging as diffusers_logging
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel, pipeline

from conftest import tiny_images, tiny_pipeline
from diti_hf import DiTiEncoderModel, DiTiImageProcessor, DiTiPipeline
from diti_hf.hub import create_model_card
from diti_hf.models.transformers_encoder import DiTiEncoderConfig, DiTiEncoderTransformersModel

WEIGHTS = "diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[DiTiPipeline, Path]:
    """A tiny pipeline with an image processor, and the folder it was saved to."""
    pipe = tiny_pipeline()
    pipe.register_modules(image_processor=DiTiImageProcessor(resolution=16))
    folder = tmp_path_factory.mktemp("pipeline")
    pipe.save_pretrained(folder)
    return pipe, folder


def pil_image(seed: int = 0, size: tuple[int, int] = (16, 16)) -> PIL.Image.Image:
    rgb = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return PIL.Image.fromarray(rgb)


def encoder_copy(saved_folder: Path, target: Path, edit_config=None, edit_weights=None) -> Path:
    """A copy of the saved encoder folder, its config and weights optionally edited."""
    shutil.copytree(saved_folder / "encoder", target)
    if edit_config is not None:
        config = json.loads((target / "config.json").read_text())
        edit_config(config)
        (target / "config.json").write_text(json.dumps(config))
    if edit_weights is not None:
        weights = load_file(target / WEIGHTS)
        edit_weights(weights)
        save_file(weights, target / WEIGHTS)
    return target


def test_saved_encoder_config_carries_the_model_type_and_diffusers_still_loads_it_quietly(saved, caplog):
    pipe, folder = saved
    assert json.loads((folder / "encoder" / "config.json").read_text())["model_type"] == "diti_encoder"
    diffusers_logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING):
            encoder = DiTiEncoderModel.from_pretrained(folder, subfolder="encoder")
    finally:
        diffusers_logging.disable_propagation()
    # the key is for transformers: diffusers neither warns about it nor keeps it in the encoder's config
    assert not [r for r in caplog.records if "not expected" in r.getMessage()], caplog.text
    assert "model_type" not in encoder.config
    x = tiny_images(2)
    assert torch.equal(encoder(x).z, pipe.encoder(x).z)


def test_folders_saved_before_the_model_type_still_load_with_diffusers(saved, tmp_path):
    pipe, folder = saved
    old = tmp_path / "old"
    shutil.copytree(folder, old)
    config_file = old / "encoder" / "config.json"
    config = json.loads(config_file.read_text())
    del config["model_type"]
    config_file.write_text(json.dumps(config))
    x = tiny_images(2)
    assert torch.equal(DiTiEncoderModel.from_pretrained(old, subfolder="encoder")(x).z, pipe.encoder(x).z)
    assert torch.equal(DiTiPipeline.from_pretrained(old).encode(x).z, pipe.encode(x).z)


def test_auto_model_loads_the_encoder_folder_and_returns_z(saved):
    pipe, folder = saved
    config = AutoConfig.from_pretrained(folder, subfolder="encoder")
    assert isinstance(config, DiTiEncoderConfig) and config.latent_dim == 16 and config.num_chunks == 4
    model = AutoModel.from_pretrained(folder, subfolder="encoder")
    assert isinstance(model, DiTiEncoderTransformersModel) and not model.training
    # one implementation and one set of weights: the wrapper holds a DiTiEncoderModel and nothing else
    assert isinstance(model.encoder, DiTiEncoderModel)
    assert {name for name, _ in model.named_parameters()} == {
        f"encoder.{name}" for name, _ in pipe.encoder.named_parameters()
    }
    x = tiny_images(3)
    with torch.no_grad():
        out = model(pixel_values=x)
        expected = pipe.encoder(x).z
    assert out.z.shape == (3, 16) and torch.equal(out.z, expected)
    assert torch.equal(out[0], expected) and torch.equal(model(pixel_values=x, return_dict=False)[0], expected)
    assert model.partition.dims_for_timesteps(500, 1000) == pipe.partition.dims_for_timesteps(500, 1000)


def test_image_feature_extraction_pipeline_returns_z_for_a_pil_image(saved):
    pipe, folder = saved
    image = pil_image(seed=3, size=(24, 20))  # resized and cropped by the processor, as `pipe.encode` does
    with torch.no_grad(), pytest.warns(UserWarning, match="resized and cropped"):
        expected = pipe.encode(image).z
    processor = DiTiImageProcessor.from_pretrained(folder, subfolder="image_processor")
    model = AutoModel.from_pretrained(folder, subfolder="encoder")
    extractor = pipeline("image-feature-extraction", model=model, image_processor=processor)
    z = extractor(image, return_tensors=True)
    assert z.shape == (1, 16) and torch.allclose(z, expected, atol=1e-6)
    assert torch.allclose(extractor(image, return_tensors=True, pool=True), expected, atol=1e-6)
    assert np.allclose(extractor(image), expected.numpy(), atol=1e-6)  # nested lists by default
    # the pipeline loads the encoder folder by path as well
    by_path = pipeline("image-feature-extraction", model=str(folder / "encoder"), image_processor=processor)
    assert torch.allclose(by_path(image, return_tensors=True), expected, atol=1e-6)


def test_wrapping_an_in_memory_encoder_and_saving_one_diffusers_folder(saved, tmp_path):
    pipe, _ = saved
    model = DiTiEncoderTransformersModel.from_encoder(pipe.encoder)
    assert model.encoder is pipe.encoder
    model.save_pretrained(tmp_path / "encoder")
    assert sorted(p.name for p in (tmp_path / "encoder").iterdir()) == ["config.json", WEIGHTS]
    x = tiny_images(2)
    assert torch.equal(DiTiEncoderModel.from_pretrained(tmp_path / "encoder")(x).z, pipe.encoder(x).z)
    assert torch.equal(AutoModel.from_pretrained(tmp_path / "encoder")(pixel_values=x).z, pipe.encoder(x).z)
    with pytest.raises(ValueError, match="safetensors only"):
        model.save_pretrained(tmp_path / "pickled", safe_serialization=False)


@pytest.mark.parametrize(
    "edit_config, edit_weights, error, match",
    [
        (None, lambda w: w.pop("proj_out.bias"), ValueError, r"missing keys: proj_out\.bias"),
        (
            None,
            lambda w: w["proj_out.weight"].view(-1)[0].fill_(float("nan")),
            ValueError,
            r"'proj_out\.weight' has 1 NaN",
        ),
        (
            lambda c: c.update(block_out_channels=[10**7, 32]),
            None,
            ValueError,
            r"`block_out_channels` entries must be ints",
        ),
    ],
    ids=["missing weight", "NaN weight", "absurd width"],
)
def test_auto_model_loads_strictly(saved, tmp_path, edit_config, edit_weights, error, match):
    _, folder = saved
    bad = encoder_copy(folder, tmp_path / "encoder", edit_config, edit_weights)
    with pytest.raises(error, match=match):
        AutoModel.from_pretrained(bad)


def test_auto_model_reads_safetensors_only(saved, tmp_path):
    pipe, folder = saved
    pickled = encoder_copy(folder, tmp_path / "encoder")
    (pickled / WEIGHTS).unlink()
    torch.save(pipe.encoder.state_dict(), pickled / "diffusion_pytorch_model.bin")
    with pytest.raises(OSError, match=r"diffusion_pytorch_model\.safetensors"):
        AutoModel.from_pretrained(pickled)
    with pytest.raises(ValueError, match="safetensors weights only"):
        AutoModel.from_pretrained(folder, subfolder="encoder", use_safetensors=False)
    with pytest.raises(TypeError, match="does not support.*device_map"):
        AutoModel.from_pretrained(folder, subfolder="encoder", device_map="auto")


def test_auto_model_honours_dtype_and_refuses_a_foreign_config(saved):
    _, folder = saved
    model = AutoModel.from_pretrained(folder, subfolder="encoder", dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16 and model(pixel_values=tiny_images(1)).z.dtype == torch.bfloat16
    other = DiTiEncoderConfig(
        **{**AutoConfig.from_pretrained(folder, subfolder="encoder").encoder_kwargs(), "latent_dim": 32}
    )
    with pytest.raises(ValueError, match=r"differs in \['latent_dim'\]"):
        AutoModel.from_pretrained(folder, subfolder="encoder", config=other)


def test_the_cards_pipeline_tag_runs_on_the_saved_folder(saved):
    pipe, folder = saved
    card = create_model_card(pipe, repo_id="me/diti-tiny")
    assert 'AutoModel.from_pretrained("me/diti-tiny", subfolder="encoder")' in card.content
    model = AutoModel.from_pretrained(folder, subfolder="encoder")
    extractor = pipeline(card.data.pipeline_tag, model=model, image_processor=pipe.image_processor)
    image = pil_image(seed=5)
    assert torch.allclose(extractor(image, return_tensors=True), pipe.encode(image).z, atol=1e-6)


README = Path(__file__).parent.parent / "README.md"


def test_readme_transformers_snippet_returns_the_encoders_z(tmp_path):
    tiny_pipeline().save_pretrained(tmp_path / "pipe")
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    setup = next(b for b in blocks if "DiTiPipeline.from_pretrained" in b)
    encoder = next(b for b in blocks if "DiTiEncoderModel.from_pretrained" in b)
    route = next(b for b in blocks if "AutoModel.from_pretrained" in b)
    code = "\n".join((setup, encoder, route)).replace('"org/diti-celeba64"', repr(str(tmp_path / "pipe")))
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert torch.equal(namespace["same"], namespace["features"])
    image = namespace["pipe"].postprocess(namespace["images"][:1], "pil")[0]
    assert torch.allclose(namespace["z_of_image"], namespace["pipe"].encode(image).z, atol=1e-6)


def test_readme_names_the_pickled_files_a_checkpoint_holds():
    """accelerate writes its optimizer, scheduler and random states as pickles; the README must not deny it."""
    text = " ".join(README.read_text().split())
    assert "hold no pickles" not in text
    resuming = text[text.index("`latest` is the newest complete checkpoint") :][:600]
    for name in ("`optimizer.bin`", "`scheduler.bin`", "`random_states_<i>.pkl`", "`torch.load(weights_only=True)`"):
        assert name in resuming, name


@pytest.mark.parametrize("name", ["diti-shapes32", "pdae-shapes32"])
def test_shipped_encoders_load_through_auto_model(name):
    folder = Path(__file__).resolve().parents[1] / "pretrained" / name
    model = AutoModel.from_pretrained(folder, subfolder="encoder")
    encoder = DiTiEncoderModel.from_pretrained(folder, subfolder="encoder")
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    z = model(pixel_values=x).z
    assert z.shape == (2, encoder.config.latent_dim)
    assert torch.equal(z, encoder(x).z)
