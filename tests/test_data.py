"""diti_hf.data: preprocessing (crop box, resize, crops, flip, modes), 🤗 datasets loading (in-code datasets,
imagefolders in a temp dir, streaming, the built-in shapes), bad-image reporting and resumable batching.
No network: every dataset is built here."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from diti_hf.data import (
    SHAPES_DATASET_NAME,
    BadImageError,
    CropBox,
    DataPosition,
    EpochBatchSampler,
    ImageDataset,
    ImageTransform,
    StreamingImageDataset,
    TrainingImages,
    decode_image,
    load_image_dataset,
    resolve_image_column,
    tensor_to_pil,
    validation_batch,
)


def coded_image(width: int, height: int, mode: str = "RGB") -> Image.Image:
    """Pixel (y, x) = (y, x, (x + y) % 256): every position is recognisable after a crop."""
    y, x = np.mgrid[0:height, 0:width]
    array = np.stack([y % 256, x % 256, (x + y) % 256], -1).astype(np.uint8)
    return Image.fromarray(array).convert(mode)


def to_tensor(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image, dtype=np.float32)
    array = array[..., None] if array.ndim == 2 else array
    return torch.from_numpy(array).permute(2, 0, 1) / 127.5 - 1


# ---------------------------------------------------------------------------------------------------- transforms
def test_celeba64_crop_box_is_the_official_protocol():
    image = coded_image(178, 218)
    cropped = CropBox(57, 25, 128, 128).apply(image)
    expected = np.asarray(image)[57:185, 25:153]
    assert np.array_equal(np.asarray(cropped), expected)
    assert np.asarray(cropped)[0, 0].tolist() == [57, 25, 82]

    out = ImageTransform.from_preset("celeba64")(image)
    reference = to_tensor(image.crop((25, 57, 153, 185)).resize((64, 64), Image.Resampling.BILINEAR))
    assert out.shape == (3, 64, 64) and out.dtype == torch.float32
    assert torch.equal(out, reference)


def test_crop_box_outside_image_is_an_error():
    with pytest.raises(ValueError, match=r"does not fit in an image of height 100 and width 178"):
        ImageTransform.from_preset("celeba64")(coded_image(178, 100))
    with pytest.raises(ValueError, match="crop box `height` must be >= 1, got 0"):
        CropBox(0, 0, 0, 5)
    with pytest.raises(ValueError, match="Unknown transform preset 'celeba128'"):
        ImageTransform.from_preset("celeba128")


def test_resize_and_center_crop_of_a_wide_image():
    image = coded_image(40, 20)
    out = ImageTransform(10)(image)
    reference = to_tensor(image.resize((20, 10), Image.Resampling.BILINEAR).crop((5, 0, 15, 10)))
    assert torch.equal(out, reference)


def test_random_crop_and_flip_follow_the_generator():
    image = coded_image(40, 20)
    transform = ImageTransform(10, crop="random", random_flip=True)
    a = transform(image, np.random.default_rng(3))
    b = transform(image, np.random.default_rng(3))
    assert torch.equal(a, b)
    outputs = {transform(image, np.random.default_rng(seed)).numpy().tobytes() for seed in range(12)}
    assert len(outputs) > 4  # different offsets and flips
    # a flip is an exact mirror of the unflipped crop at the same offset
    resized = image.resize((20, 10), Image.Resampling.BILINEAR)
    crops = {to_tensor(resized.crop((x, 0, x + 10, 10))).numpy().tobytes(): x for x in range(11)}
    mirrored = {to_tensor(resized.crop((x, 0, x + 10, 10))).flip(-1).numpy().tobytes(): x for x in range(11)}
    for seed in range(12):
        key = transform(image, np.random.default_rng(seed)).numpy().tobytes()
        assert key in crops or key in mirrored
    assert transform.deterministic()(image).equal(ImageTransform(10)(image))


def test_value_range_and_channels():
    white, black = Image.new("RGB", (8, 8), (255, 255, 255)), Image.new("L", (8, 8), 0)
    assert ImageTransform(8)(white).eq(1).all() and ImageTransform(8)(black).eq(-1).all()
    gray = ImageTransform(8)(Image.new("L", (8, 8), 51))
    assert gray.shape == (3, 8, 8) and torch.allclose(gray, torch.full_like(gray, 51 / 127.5 - 1))
    assert ImageTransform(8, num_channels=1)(white).shape == (1, 8, 8)
    transparent = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    assert ImageTransform(8)(transparent).eq(1).all()  # composited on white
    back = tensor_to_pil(ImageTransform(8)(coded_image(8, 8))[None])[0]
    assert np.array_equal(np.asarray(back), np.asarray(coded_image(8, 8)))


@pytest.mark.parametrize("mode", ["I;16", "F", "I"])
def test_unsupported_modes_are_rejected(mode):
    with pytest.raises(ValueError, match=rf"has mode '{mode}'; expected an 8-bit image"):
        ImageTransform(8)(Image.new(mode, (8, 8)))
    with pytest.raises(TypeError, match="must be a PIL image, got ndarray"):
        ImageTransform(8)(np.zeros((8, 8, 3)))


def test_transform_argument_errors():
    with pytest.raises(ValueError, match="`resolution` must be a positive integer, got 0"):
        ImageTransform(0)
    with pytest.raises(ValueError, match="`crop` must be one of"):
        ImageTransform(8, crop="left")
    with pytest.raises(ValueError, match="`interpolation` must be one of"):
        ImageTransform(8, interpolation="cubic")


# ------------------------------------------------------------------------------------------------------- loading
@pytest.fixture
def image_folder(tmp_path) -> Path:
    """Six good PNGs (one grayscale) and one corrupt file, in two class folders."""
    root = tmp_path / "images"
    for i in range(6):
        folder = root / ("a" if i < 3 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.new("RGB" if i != 4 else "L", (12, 10), (40 * i, 10, 200) if i != 4 else 90)
        image.save(folder / f"img{i}.png")
    (root / "b" / "img6_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    return root


def _index_of(dataset: ImageDataset, name: str) -> int:
    paths = [dataset.dataset[i][dataset.image_column]["path"] for i in range(len(dataset))]
    return next(i for i, p in enumerate(paths) if p.endswith(name))


def test_imagefolder_reports_the_corrupt_image_with_its_index(image_folder, tmp_path):
    raw = load_image_dataset(train_data_dir=image_folder, cache_dir=str(tmp_path / "cache"))
    assert len(raw) == 7 and set(raw.column_names) == {"image", "label"}
    dataset = ImageDataset(raw, ImageTransform(8))
    bad = _index_of(dataset, "img6_corrupt.png")
    with pytest.raises(BadImageError) as error:
        dataset[bad]
    message = str(error.value)
    assert f"image {bad} (column 'image', file " in message and "img6_corrupt.png" in message
    assert "could not be decoded" in message and "--skip_bad_images" in message
    good = _index_of(dataset, "img4.png")
    assert dataset[good]["pixel_values"].shape == (3, 8, 8)  # grayscale → RGB


def test_skip_bad_images_skips_and_reports(image_folder, tmp_path, caplog):
    raw = load_image_dataset(train_data_dir=image_folder, cache_dir=str(tmp_path / "cache"))
    dataset = ImageDataset(raw, ImageTransform(8), skip_bad_images=True)
    bad = _index_of(dataset, "img6_corrupt.png")
    with caplog.at_level(logging.WARNING, logger="diti_hf.data.loading"):
        item = dataset[bad]
    assert item["index"] == (bad + 1) % len(dataset)  # replaced by the next readable image
    assert torch.equal(item["pixel_values"], dataset[(bad + 1) % len(dataset)]["pixel_values"])
    assert dataset.skipped == {bad}
    assert any(f"image {bad} (column 'image'" in r.getMessage() for r in caplog.records)
    # a whole epoch goes through
    loader = TrainingImages(dataset, batch_size=3)
    batches = [batch for _, batch in itertools.islice(loader(), 2)]
    assert [b["pixel_values"].shape for b in batches] == [(3, 3, 8, 8)] * 2


def test_in_code_dataset_columns_and_modes():
    images = [coded_image(10, 10), Image.new("F", (10, 10)), coded_image(10, 10, "L")]
    raw = datasets.Dataset.from_dict(
        {"photo": images, "label": [0, 1, 0]},
        features=datasets.Features({"photo": datasets.Image(), "label": datasets.ClassLabel(names=["x", "y"])}),
    )
    assert resolve_image_column(raw) == "photo"
    with pytest.raises(ValueError, match=r"`image_column` 'image' is not a dataset column; columns: \{'photo'"):
        resolve_image_column(raw, "image")
    with pytest.raises(ValueError, match="`image_column` 'label' holds ClassLabel values; expected an Image column"):
        ImageDataset(raw, ImageTransform(8), image_column="label")
    dataset = ImageDataset(raw, ImageTransform(8))
    assert torch.equal(dataset[0]["pixel_values"], ImageTransform(8)(coded_image(10, 10)))
    with pytest.raises(BadImageError, match=r"image 1 \(column 'photo'\) has mode 'F'"):
        dataset[1]
    two_images = datasets.Dataset.from_dict(
        {"a": images[:1], "b": images[:1]}, features=datasets.Features({"a": datasets.Image(), "b": datasets.Image()})
    )
    with pytest.raises(ValueError, match=r"cannot tell which column holds the images \(Image columns: \['a', 'b'\]\)"):
        resolve_image_column(two_images)


def test_decode_image_errors():
    with pytest.raises(BadImageError, match=r"image 5 \(column 'image'\) is missing"):
        decode_image(None, 5)
    with pytest.raises(BadImageError, match=r"image 2 \(column 'img'\) could not be decoded"):
        decode_image({"bytes": b"garbage", "path": None}, 2, "img")


def test_load_image_dataset_arguments(tmp_path):
    with pytest.raises(ValueError, match="exactly one of `dataset_name` and `train_data_dir`"):
        load_image_dataset()
    with pytest.raises(ValueError, match="exactly one of"):
        load_image_dataset("diti-shapes", train_data_dir=tmp_path)
    with pytest.raises(ValueError, match=r"`train_data_dir` '.*nowhere' is not a directory"):
        load_image_dataset(train_data_dir=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="`num_images` must be >= 1, got 0"):
        load_image_dataset("diti-shapes", num_images=0)


def test_shapes_and_saved_datasets_load_without_network(tmp_path):
    shapes = load_image_dataset(SHAPES_DATASET_NAME, num_images=12, seed=1, resolution=16)
    assert len(shapes) == 12 and shapes[0]["image"].size == (16, 16) and "shape" in shapes.column_names
    streamed = load_image_dataset(SHAPES_DATASET_NAME, num_images=12, seed=1, resolution=16, streaming=True)
    assert isinstance(streamed, datasets.IterableDataset)
    assert np.array_equal(np.asarray(next(iter(streamed))["image"]), np.asarray(shapes[0]["image"]))
    shapes.save_to_disk(str(tmp_path / "saved"))
    saved = load_image_dataset(str(tmp_path / "saved"), num_images=5)
    assert len(saved) == 5 and np.array_equal(np.asarray(saved[4]["image"]), np.asarray(shapes[4]["image"]))


def test_streaming_splits_between_processes_and_resumes(image_folder, tmp_path):
    raw = load_image_dataset(train_data_dir=image_folder, streaming=True, cache_dir=str(tmp_path / "cache"))
    transform = ImageTransform(8, random_flip=True)
    common = {"transform": transform, "skip_bad_images": True, "seed": 4, "shuffle_buffer_size": 4}

    def images(dataset):
        return [item["pixel_values"] for item in dataset]

    ranks = [StreamingImageDataset(raw, process_index=r, num_processes=2, **common) for r in range(2)]
    for rank in ranks:
        rank.set_epoch(1)
    shares = [images(r) for r in ranks]
    whole = StreamingImageDataset(raw, **common)
    whole.set_epoch(1)
    assert sum(map(len, shares)) == 6 == len(images(whole))  # the corrupt one is skipped
    assert abs(len(shares[0]) - len(shares[1])) <= 1
    # resuming at position 1 of rank 0's share replays the rest exactly (augmentation included)
    ranks[0].set_epoch(1, start=1)
    tail = images(ranks[0])
    assert len(tail) == len(shares[0]) - 1 and all(torch.equal(a, b) for a, b in zip(tail, shares[0][1:]))
    strict = StreamingImageDataset(raw, transform=transform, shuffle_buffer_size=0)
    with pytest.raises(BadImageError, match="img6_corrupt.png"):
        images(strict)


# ---------------------------------------------------------------------------------------------------- batching
def test_epoch_batch_sampler_partitions_and_skips():
    samplers = [EpochBatchSampler(50, 4, num_processes=3, process_index=r, seed=9) for r in range(3)]
    assert samplers[0].batches_per_epoch == 4  # 50 // 12
    epoch0 = [list(s) for s in samplers]
    flat = [i for batches in epoch0 for batch in batches for i in batch]
    assert len(flat) == len(set(flat)) == 48  # disjoint, one global batch's worth of tail dropped
    again = [list(s) for s in samplers]
    assert again == epoch0  # a function of (seed, epoch)
    samplers[1].set_epoch(1)
    assert list(samplers[1]) != epoch0[1]
    samplers[1].set_epoch(0, start_batch=3)
    assert list(samplers[1]) == epoch0[1][3:] and len(samplers[1]) == 1
    with pytest.raises(ValueError, match="fewer than one global batch of 12"):
        EpochBatchSampler(10, 4, num_processes=3)


def test_training_images_resume_replays_the_same_batches():
    raw = load_image_dataset(SHAPES_DATASET_NAME, num_images=20, resolution=16)
    dataset = ImageDataset(raw, ImageTransform(16, random_flip=True), seed=5)
    stream = TrainingImages(dataset, batch_size=4, num_processes=2, process_index=1, seed=5)
    assert stream.batches_per_epoch == 2
    run = list(itertools.islice(stream(), 7))
    positions = [pos for pos, _ in run]
    assert positions[:3] == [DataPosition(0, 1), DataPosition(0, 2), DataPosition(1, 1)]
    resumed = list(itertools.islice(stream(positions[2]), 4))
    for (pos_a, a), (pos_b, b) in zip(run[3:], resumed):
        assert pos_a == pos_b and torch.equal(a["index"], b["index"])
        assert torch.equal(a["pixel_values"], b["pixel_values"])
    # flips differ between epochs for the same image (augmentation keyed by epoch)
    first, second = run[0][1], run[2][1]
    assert not torch.equal(first["pixel_values"], second["pixel_values"])


def test_validation_batch_is_deterministic():
    raw = load_image_dataset(SHAPES_DATASET_NAME, num_images=6, resolution=16)
    transform = ImageTransform(16, random_flip=True)
    a, b = validation_batch(raw, transform, 4), validation_batch(raw, transform, 4)
    assert a.shape == (4, 3, 16, 16) and torch.equal(a, b)
    assert torch.equal(a[2], ImageTransform(16)(raw[2]["image"]))
