"""One image decoder: the same file gives the same tensor through the CLI's reader (reconstruct/swap/edit), feature
extraction (`encode`) and a training dataset, whatever its mode; unsupported modes are refused everywhere."""

import datasets
import numpy as np
import PIL.Image
import pytest
import torch

from conftest import tiny_pipeline
from diti_hf.commands._common import UsageError, read_images
from diti_hf.data import BadImageError, ImageDataset
from diti_hf.features import encode_images


def _rgba(size: int = 16) -> PIL.Image.Image:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (size, size, 4), dtype=np.uint8)
    pixels[: size // 2, :, 3] = 0  # the top half fully transparent: its colour channels must not show
    pixels[size // 2 :, : size // 2, 3] = 128  # a half-transparent quarter
    pixels[size // 2 :, size // 2 :, 3] = 255
    return PIL.Image.fromarray(pixels, "RGBA")


def _files(tmp_path) -> dict[str, str]:
    rgba = _rgba()
    palette = rgba.convert("RGB").quantize(16)
    palette.info["transparency"] = 0  # colour index 0 transparent
    images = {
        "rgba.png": rgba,
        "la.png": rgba.convert("LA"),
        "p.png": palette,
        "cmyk.tiff": rgba.convert("RGB").convert("CMYK"),
        "grey.png": rgba.convert("L"),
    }
    paths = {}
    for name, image in images.items():
        path = tmp_path / name
        image.save(path, transparency=0) if name == "p.png" else image.save(path)
        paths[name] = str(path)
    return paths


def _through_cli(pipe, path: str) -> torch.Tensor:
    return pipe.preprocess(read_images([path], "--images"))


def _through_dataset(pipe, path: str) -> torch.Tensor:
    raw = datasets.Dataset.from_dict({"image": [path]}).cast_column("image", datasets.Image())
    return ImageDataset(raw, pipe.image_processor.transform)[0]["pixel_values"][None]


@pytest.fixture(scope="module")
def pipe():
    from diti_hf.pipelines.image_processing_diti import DiTiImageProcessor

    pipeline = tiny_pipeline()
    pipeline.register_modules(image_processor=DiTiImageProcessor(resolution=16))
    return pipeline


def test_every_mode_gives_the_same_tensor_through_cli_encode_and_dataset(pipe, tmp_path):
    paths = _files(tmp_path)
    for name, path in paths.items():
        from_cli, from_dataset = _through_cli(pipe, path), _through_dataset(pipe, path)
        assert from_cli.shape == (1, 3, 16, 16) and torch.isfinite(from_cli).all(), name
        assert torch.equal(from_cli, from_dataset), name
        features, _, kept_paths, skipped = encode_images(pipe, [path], progress=False)
        assert skipped == [] and kept_paths == [path], name
        with torch.no_grad():
            expected = pipe.encode(from_dataset).z.numpy()
        np.testing.assert_array_equal(features, expected, err_msg=name)
    # transparency is composited on white in every path (the CLI used to show black there)
    top = _through_cli(pipe, paths["rgba.png"])[0, :, :8]
    assert torch.equal(top, torch.ones_like(top))
    half = _through_dataset(pipe, paths["la.png"])[0, 0, 8:, :8]
    assert half.min() > -0.01  # 50 % alpha over white: at least half-way to white (−1 black … +1 white)


def test_sixteen_bit_images_are_refused_the_same_way_everywhere(pipe, tmp_path):
    path = tmp_path / "deep.png"
    PIL.Image.fromarray(np.full((16, 16), 40000, dtype=np.uint16)).save(path)
    expected = "has mode 'I;16'; expected an 8-bit image"
    with pytest.raises(UsageError, match=expected):
        read_images([path], "--images")
    with pytest.raises(BadImageError, match=expected):
        _through_dataset(pipe, str(path))
    with pytest.raises(BadImageError, match=rf"image 0 .*deep\.png.*{expected}"):
        encode_images(pipe, [str(path)], progress=False)
    _, _, _, skipped = encode_images(pipe, [str(path)], progress=False, skip_bad_images=True)
    assert len(skipped) == 1 and expected in skipped[0]["error"]
