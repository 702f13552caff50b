"""Loading image datasets with 🤗 `datasets` for training: a Hub name, a local imagefolder, a saved dataset, or the
built-in procedural shapes; map-style or streaming; with resumable, per-process batching.

Corrupt or unreadable images are never dropped silently: they raise [`BadImageError`] naming the index (and file),
or, when the user opts in with `skip_bad_images=True`, are skipped with a logged warning naming them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from .images import BadImageError, decode_image
from .shapes import SHAPES_DATASETS, generate_shapes
from .transforms import ImageTransform

logger = logging.getLogger(__name__)

DEFAULT_NUM_SHAPES = 10_000


# Long for its signature and docstring; the body is one dispatch over the four kinds of source.
def load_image_dataset(
    dataset_name: str | None = None,
    dataset_config: str | None = None,
    split: str = "train",
    train_data_dir: str | os.PathLike | None = None,
    streaming: bool = False,
    cache_dir: str | None = None,
    num_images: int | None = None,
    seed: int = 0,
    resolution: int = 32,
    revision: str | None = None,
    token: str | bool | None = None,
):
    r"""
    Loads the raw (undecoded, untransformed) training images.

    Args:
        dataset_name (`str`, *optional*): A Hub dataset id, a folder written by `Dataset.save_to_disk`, or a
            built-in procedural dataset generated in memory (no download): `"diti-shapes"` (7 factors) or
            `"diti-shapes-v2"` (9 factors lost over a wider range of time-steps; see `data.shapes.SHAPES_DATASETS`).
        dataset_config (`str`, *optional*): The Hub dataset's configuration name.
        split (`str`, defaults to `"train"`): Split to load (slicing such as `"train[:1000]"` works when not
            streaming).
        train_data_dir (`str`, *optional*): A local folder of images, read with the `imagefolder` builder
            (sub-folders become a `label` column).
        streaming (`bool`, defaults to `False`): Stream the data instead of downloading it first (returns a
            `datasets.IterableDataset`).
        cache_dir (`str`, *optional*): 🤗 datasets cache folder.
        num_images (`int`, *optional*): Keep only the first `num_images` examples; for `"diti-shapes"`, the number
            of images generated (default 10,000).
        seed (`int`, defaults to 0): Seed of `"diti-shapes"`.
        resolution (`int`, defaults to 32): Image side of `"diti-shapes"`.
        revision (`str`, *optional*): Hub revision of the dataset.
        token (`str` or `bool`, *optional*): Hub token for private datasets.

    Returns:
        `datasets.Dataset` or `datasets.IterableDataset`.
    """
    import datasets

    if (dataset_name is None) == (train_data_dir is None):
        raise ValueError(
            f"pass exactly one of `dataset_name` and `train_data_dir`, got dataset_name={dataset_name!r} and "
            f"train_data_dir={train_data_dir!r}."
        )
    if num_images is not None and num_images < 1:
        raise ValueError(f"`num_images` must be >= 1, got {num_images}.")
    if dataset_name in SHAPES_DATASETS:
        factors = SHAPES_DATASETS[dataset_name]()
        dataset = generate_shapes(num_images or DEFAULT_NUM_SHAPES, seed=seed, resolution=resolution, factors=factors)
        return dataset.to_iterable_dataset() if streaming else dataset
    if train_data_dir is not None:
        if not Path(train_data_dir).is_dir():
            raise ValueError(f"`train_data_dir` {str(train_data_dir)!r} is not a directory.")
        dataset = datasets.load_dataset(
            "imagefolder", data_dir=str(train_data_dir), split=split, cache_dir=cache_dir, streaming=streaming
        )
    elif Path(dataset_name).is_dir() and any(
        (Path(dataset_name) / f).exists() for f in ("state.json", "dataset_dict.json")
    ):
        dataset = datasets.load_from_disk(dataset_name)
        if isinstance(dataset, datasets.DatasetDict):
            if split not in dataset:
                raise ValueError(f"`split` {split!r} is not in {dataset_name!r}; available: {sorted(dataset)}.")
            dataset = dataset[split]
        if streaming:
            dataset = dataset.to_iterable_dataset()
    else:
        dataset = datasets.load_dataset(
            dataset_name,
            dataset_config,
            split=split,
            cache_dir=cache_dir,
            streaming=streaming,
            revision=revision,
            token=token,
        )
    if num_images is not None:
        dataset = dataset.take(num_images) if streaming else dataset.select(range(min(num_images, len(dataset))))
    return dataset


def resolve_image_column(dataset, image_column: str | None = None) -> str:
    r"""
    The name of the image column: `image_column` if given (checked), else `"image"`, else the only `Image` column.

    Raises:
        `ValueError` naming the column, the available columns and their types.
    """
    import datasets

    features = dataset.features
    if features is None:  # a stream whose schema is unknown until read
        return image_column or "image"
    columns = {name: type(feature).__name__ for name, feature in features.items()}
    if image_column is not None:
        if image_column not in features:
            raise ValueError(f"`image_column` {image_column!r} is not a dataset column; columns: {columns}.")
        if not isinstance(features[image_column], datasets.Image):
            raise ValueError(
                f"`image_column` {image_column!r} holds {columns[image_column]} values; expected an Image column. "
                f"Columns: {columns}."
            )
        return image_column
    image_columns = [name for name, feature in features.items() if isinstance(feature, datasets.Image)]
    if "image" in image_columns:
        return "image"
    if len(image_columns) == 1:
        return image_columns[0]
    raise ValueError(
        f"cannot tell which column holds the images (Image columns: {image_columns}); pass `image_column`. "
        f"Columns: {columns}."
    )


def _undecoded(dataset, column: str):
    import datasets

    dataset = dataset.select_columns([column])
    if dataset.features is not None and isinstance(dataset.features[column], datasets.Image):
        dataset = dataset.cast_column(column, datasets.Image(decode=False))
    return dataset


def _augmentation_rng(seed: int, *key: int) -> np.random.Generator:
    # One generator per (seed, epoch, example): augmentation does not depend on how many images were decoded
    # before, so a resumed run replays exactly the same crops and flips.
    return np.random.default_rng([seed, *key])


class ImageDataset(torch.utils.data.Dataset):
    r"""
    A map-style 🤗 dataset as a torch dataset of `{"pixel_values": (C, H, W) in [-1, 1], "index": int}`.

    Args:
        dataset (`datasets.Dataset`): The raw dataset.
        transform ([`ImageTransform`]): The preprocessing.
        image_column (`str`, *optional*): The image column (see [`resolve_image_column`]).
        seed (`int`, defaults to 0): Seed of the random augmentation (with the epoch and the index).
        skip_bad_images (`bool`, defaults to `False`): Replace an unreadable image by the next readable one
            (logging a warning that names it) instead of raising [`BadImageError`].
        max_consecutive_bad (`int`, defaults to 100): Give up when this many images in a row are bad.
    """

    def __init__(
        self,
        dataset,
        transform: ImageTransform,
        image_column: str | None = None,
        seed: int = 0,
        skip_bad_images: bool = False,
        max_consecutive_bad: int = 100,
    ):
        self.image_column = resolve_image_column(dataset, image_column)
        self.dataset = _undecoded(dataset, self.image_column)
        if len(self.dataset) == 0:
            raise ValueError("the dataset is empty.")
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0
        self.skip_bad_images = skip_bad_images
        self.max_consecutive_bad = max_consecutive_bad
        self.skipped: set[int] = set()

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        """Sets the epoch that keys the random augmentation (call before creating the epoch's iterator)."""
        self.epoch = int(epoch)

    def load_image(self, index: int):
        """The decoded PIL image at `index` ([`BadImageError`] if it is bad)."""
        return decode_image(self.dataset[int(index)][self.image_column], index, self.image_column)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        for attempt in range(self.max_consecutive_bad):
            current = (index + attempt) % len(self)
            try:
                image = self.load_image(current)
            except BadImageError as error:
                if not self.skip_bad_images:
                    raise BadImageError(
                        f"{error} Fix or remove it, or pass `skip_bad_images` (--skip_bad_images) to skip "
                        "unreadable images (each one is reported)."
                    ) from error
                if current not in self.skipped:
                    self.skipped.add(current)
                    logger.warning("skipping bad image: %s", error)
                continue
            rng = _augmentation_rng(self.seed, self.epoch, current) if self.transform.is_random else None
            return {"pixel_values": self.transform(image, rng), "index": current}
        raise BadImageError(
            f"images {index}..{index + self.max_consecutive_bad - 1} are all bad; is `image_column` "
            f"({self.image_column!r}) right?"
        )


class StreamingImageDataset(torch.utils.data.IterableDataset):
    r"""
    A streamed 🤗 `IterableDataset` as a torch iterable of `{"pixel_values", "index"}` for one process.

    Each epoch: shuffle with a buffer (seeded by `seed` and the epoch), keep this process's share
    (`datasets.distributed.split_dataset_by_node`), read past the first `start` examples of that share when
    resuming, then decode and transform. `"index"` is the position in this process's share of the epoch.

    Exact resumption needs `num_workers=0` in the data loader (with workers, the stream is split among them).

    Args:
        dataset (`datasets.IterableDataset`): The raw stream.
        transform ([`ImageTransform`]): The preprocessing.
        image_column (`str`, *optional*): The image column.
        seed (`int`, defaults to 0): Seed of the shuffle buffer and of the augmentation.
        skip_bad_images (`bool`, defaults to `False`): Skip unreadable images (logging each) instead of raising.
        shuffle_buffer_size (`int`, defaults to 1000): Size of the shuffle buffer; 0 keeps the stream's order.
        process_index, num_processes (`int`): This process and the number of processes.
    """

    def __init__(
        self,
        dataset,
        transform: ImageTransform,
        image_column: str | None = None,
        seed: int = 0,
        skip_bad_images: bool = False,
        shuffle_buffer_size: int = 1000,
        process_index: int = 0,
        num_processes: int = 1,
    ):
        super().__init__()
        self.image_column = resolve_image_column(dataset, image_column)
        self.dataset = _undecoded(dataset, self.image_column)
        self.transform = transform
        self.seed = int(seed)
        self.skip_bad_images = skip_bad_images
        self.shuffle_buffer_size = shuffle_buffer_size
        self.process_index, self.num_processes = process_index, num_processes
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Sets the epoch and the number of this process's examples to skip at its start."""
        self.epoch, self.start = int(epoch), int(start)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        from datasets.distributed import split_dataset_by_node

        stream = self.dataset
        if self.shuffle_buffer_size > 0:
            stream = stream.shuffle(seed=self.seed, buffer_size=self.shuffle_buffer_size)
        stream.set_epoch(self.epoch)
        if self.num_processes > 1:
            stream = split_dataset_by_node(stream, rank=self.process_index, world_size=self.num_processes)
        worker = torch.utils.data.get_worker_info()
        worker_id = worker.id if worker is not None else 0
        for position, example in enumerate(stream):
            if position < self.start:  # resuming: read past what was consumed (undecoded, so cheap)
                continue
            if self.image_column not in example:
                raise ValueError(
                    f"`image_column` {self.image_column!r} is not a column of the stream; columns: {sorted(example)}."
                )
            try:
                image = decode_image(example[self.image_column], f"#{position} of the stream", self.image_column)
            except BadImageError as error:
                if not self.skip_bad_images:
                    raise BadImageError(f"{error} Pass `skip_bad_images` (--skip_bad_images) to skip it.") from error
                logger.warning("skipping bad image: %s", error)
                continue
            key = (self.epoch, self.process_index, worker_id, position)
            rng = _augmentation_rng(self.seed, *key) if self.transform.is_random else None
            yield {"pixel_values": self.transform(image, rng), "index": position}


class EpochBatchSampler(Sampler[list[int]]):
    r"""
    Batches of indices for one process, a deterministic function of `(seed, epoch)`: every process draws the same
    permutation of the whole dataset, drops the tail that does not fill a global batch, and takes every
    `num_processes`-th index from its rank on. `start_batch` skips the first batches of the epoch without reading
    them (resumption).

    Args:
        num_samples (`int`): Dataset size.
        batch_size (`int`): Per-process batch size.
        num_processes (`int`, defaults to 1), process_index (`int`, defaults to 0): The data-parallel layout.
        seed (`int`, defaults to 0): Seed of the shuffle.
        shuffle (`bool`, defaults to `True`): Shuffle every epoch.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        num_processes: int = 1,
        process_index: int = 0,
        seed: int = 0,
        shuffle: bool = True,
    ):
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
        if not 0 <= process_index < num_processes:
            raise ValueError(f"`process_index` must lie in [0, {num_processes}), got {process_index}.")
        global_batch = batch_size * num_processes
        if num_samples < global_batch:
            raise ValueError(
                f"the dataset has {num_samples} images, fewer than one global batch of {global_batch} "
                f"({batch_size} per process × {num_processes} processes)."
            )
        self.num_samples, self.batch_size = num_samples, batch_size
        self.num_processes, self.process_index = num_processes, process_index
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.start_batch = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        return self.num_samples // (self.batch_size * self.num_processes)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        if not 0 <= start_batch <= self.batches_per_epoch:
            raise ValueError(f"`start_batch` must lie in [0, {self.batches_per_epoch}], got {start_batch}.")
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start_batch

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            order = torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.num_samples)
        used = self.batches_per_epoch * self.batch_size * self.num_processes
        mine = order[:used][self.process_index :: self.num_processes].view(self.batches_per_epoch, self.batch_size)
        for batch in mine[self.start_batch :]:
            yield batch.tolist()


@dataclass
class DataPosition:
    """
    Where a process is in its data: the epoch, the number of its batches consumed in it, and for a stream the
    number of raw examples of its share read (more than batches × batch size when bad images were skipped).
    """

    epoch: int = 0
    batch: int = 0
    example: int = 0


class TrainingImages:
    r"""
    The training batches of one process, epoch after epoch, resumable at any [`DataPosition`].

    Args:
        dataset ([`ImageDataset`] or [`StreamingImageDataset`]): The images.
        batch_size (`int`): Per-process batch size.
        num_processes (`int`, defaults to 1), process_index (`int`, defaults to 0): The data-parallel layout.
        seed (`int`, defaults to 0): Seed of the shuffle.
        num_workers (`int`, defaults to 0): Data-loader worker processes.
        pin_memory (`bool`, defaults to `False`): Pin batches (for CUDA).
    """

    def __init__(
        self,
        dataset: ImageDataset | StreamingImageDataset,
        batch_size: int,
        num_processes: int = 1,
        process_index: int = 0,
        seed: int = 0,
        num_workers: int = 0,
        pin_memory: bool = False,
    ):
        self.dataset, self.batch_size = dataset, batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.sampler = None
        if isinstance(dataset, ImageDataset):
            self.sampler = EpochBatchSampler(len(dataset), batch_size, num_processes, process_index, seed)

    @property
    def batches_per_epoch(self) -> int | None:
        """Batches per epoch and process (`None` for a stream, whose length is unknown)."""
        return None if self.sampler is None else self.sampler.batches_per_epoch

    def epoch_loader(self, epoch: int, start: DataPosition | None = None) -> DataLoader:
        """The data loader of `epoch`, starting after the batches (examples of a stream) consumed at `start`."""
        start = start or DataPosition(epoch)
        kwargs = {"num_workers": self.num_workers, "pin_memory": self.pin_memory}
        if self.sampler is not None:
            self.dataset.set_epoch(epoch)
            self.sampler.set_epoch(epoch, start.batch)
            return DataLoader(self.dataset, batch_sampler=self.sampler, **kwargs)
        self.dataset.set_epoch(epoch, start.example)
        return DataLoader(self.dataset, batch_size=self.batch_size, drop_last=True, **kwargs)

    def __call__(self, position: DataPosition | None = None) -> Iterator[tuple[DataPosition, dict[str, Any]]]:
        """
        Yields `(position after this batch, batch)` forever, starting at `position`.
        """
        start = position or DataPosition()
        if self.batches_per_epoch is not None and start.batch >= self.batches_per_epoch:
            start = DataPosition(start.epoch + 1)
        while True:
            epoch, count = start.epoch, start.batch
            for batch in self.epoch_loader(epoch, start):
                count += 1
                # a stream's "index" is the raw position in this process's share: resume right after it
                example = int(batch["index"].max()) + 1 if self.sampler is None else 0
                yield DataPosition(epoch, count, example), batch
            if count == 0:
                raise ValueError(f"epoch {epoch} yielded no batch of {self.batch_size} images; is the dataset empty?")
            start = DataPosition(epoch + 1)


class DeviceImages(TrainingImages):
    r"""
    The training batches of a map-style dataset held whole on `device` as uint8 and batched there: no data-loader
    workers and no host-to-device copy per step. The batches (order, values and resume positions) are exactly those
    of [`TrainingImages`] with the same arguments; the transform must be deterministic (no random crop or flip).

    Args:
        dataset ([`ImageDataset`]): The images (decoded and transformed once, here).
        batch_size, num_processes, process_index, seed: As in [`TrainingImages`].
        device (`torch.device` or `str`, defaults to `"cpu"`): Where the images are held.
        max_bytes (`int`, defaults to 8 GiB): Refuse a dataset larger than this (checked before allocating).
    """

    def __init__(
        self,
        dataset: ImageDataset,
        batch_size: int,
        num_processes: int = 1,
        process_index: int = 0,
        seed: int = 0,
        device: torch.device | str = "cpu",
        max_bytes: int = 8 << 30,
    ):
        if not isinstance(dataset, ImageDataset):
            raise ValueError("`dataset_on_device` needs a map-style dataset (not a stream).")
        if dataset.transform.is_random:
            raise ValueError("`dataset_on_device` holds each image once: drop the random crop and flip.")
        super().__init__(dataset, batch_size, num_processes, process_index, seed)
        t = dataset.transform
        size = len(dataset) * t.num_channels * t.resolution**2
        if size > max_bytes:
            raise ValueError(
                f"`dataset_on_device`: {len(dataset)} images of {t.num_channels}×{t.resolution}×{t.resolution} take "
                f"{size / 2**30:.1f} GiB, more than the {max_bytes / 2**30:.1f} GiB allowed; load it through workers."
            )
        images = torch.empty(len(dataset), t.num_channels, t.resolution, t.resolution, dtype=torch.uint8)
        for i in range(len(dataset)):
            # the transform's x / 127.5 - 1 inverted exactly: batches below recompute the same floats
            images[i] = ((dataset[i]["pixel_values"] + 1.0) * 127.5).round().to(torch.uint8)
        self.images = images.to(device)

    def epoch_loader(self, epoch: int, start: DataPosition | None = None) -> Iterator[dict[str, Any]]:
        """The batches of `epoch` after the ones consumed at `start`, indexed on the device."""
        start = start or DataPosition(epoch)
        self.sampler.set_epoch(epoch, start.batch)
        for indices in self.sampler:
            index = torch.as_tensor(indices, device=self.images.device)
            yield {"pixel_values": self.images[index].float() / 127.5 - 1.0, "index": index}


def validation_batch(dataset, transform: ImageTransform, num_images: int, image_column: str | None = None):
    r"""
    The first `num_images` readable images of `dataset` (map-style or stream), without random augmentation, as a
    `(num_images, C, H, W)` tensor in [-1, 1]. Bad images are skipped with a warning.
    """
    column = resolve_image_column(dataset, image_column)
    raw = _undecoded(dataset, column)
    transform = transform.deterministic()
    images = []
    for index, example in enumerate(raw):
        try:
            images.append(transform(decode_image(example[column], index, column)))
        except BadImageError as error:
            logger.warning("validation: skipping bad image: %s", error)
        if len(images) == num_images:
            break
    if not images:
        raise ValueError("no readable image for the validation batch.")
    return torch.stack(images)


__all__: Sequence[str] = (
    "DataPosition",
    "EpochBatchSampler",
    "ImageDataset",
    "StreamingImageDataset",
    "TrainingImages",
    "load_image_dataset",
    "resolve_image_column",
    "validation_batch",
)
