"""The paper's real-data probe protocols (docs/method.md §9): CelebA 40 attributes (AP) and LFW 73 attributes (r, MSE)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..data.schemas import CELEBA_SCHEMA, LFW_SCHEMA, AttributeSchema
from .adapters import EncodeFn
from .probes import ProbeConfig, fit_linear_probes, split_indices


def preprocess_images(images: list[Any], crop: tuple[int, int, int, int] | None, resolution: int) -> torch.Tensor:
    r"""
    PIL (or array) images → `(N, 3, resolution, resolution)` float tensor in [-1, 1]: RGB, crop box
    `(top, left, height, width)`, bicubic resize.
    """
    out = []
    for i, image in enumerate(images):
        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        if not isinstance(image, Image.Image):
            raise TypeError(f"image {i} must be a PIL image or a numpy array, got {type(image).__name__}.")
        image = image.convert("RGB")
        if crop is not None:
            top, left, h, w = crop
            if top + h > image.height or left + w > image.width:
                raise ValueError(f"crop box {crop} (top, left, h, w) exceeds image {i} of size {image.size} (w, h).")
            image = image.crop((left, top, left + w, top + h))
        if image.size != (resolution, resolution):
            image = image.resize((resolution, resolution), Image.BICUBIC)
        out.append(torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1))
    if not out:
        raise ValueError("`images` is empty.")
    return torch.stack(out) / 127.5 - 1.0


def load_attribute_splits(
    dataset: Any,
    schema: AttributeSchema,
    seed: int = 0,
    max_samples: int | None = None,
    **load_kwargs: Any,
) -> dict[str, Any]:
    r"""
    The train/val/test splits of an attribute benchmark.

    Args:
        dataset (`str`, `datasets.DatasetDict` or `datasets.Dataset`): A Hub/local dataset name (loaded with
            `datasets.load_dataset(dataset, **load_kwargs)`), a `DatasetDict`, or a single `Dataset` (treated as the
            train split).
        schema ([`AttributeSchema`]): Columns, splits and preprocessing.
        seed (`int`, defaults to 0): Seed of the splits carved out of train when the dataset lacks them.
        max_samples (`int`, *optional*): Keep at most this many rows per split (the first ones).

    Returns:
        `dict[str, datasets.Dataset]` with keys `"train"`, `"val"`, `"test"`.
    """
    import datasets

    if isinstance(dataset, str):
        dataset = datasets.load_dataset(dataset, **load_kwargs)
    if isinstance(dataset, datasets.Dataset):
        dataset = datasets.DatasetDict({schema.splits["train"]: dataset})
    if not isinstance(dataset, (datasets.DatasetDict, Mapping)):
        raise TypeError(f"`dataset` must be a name, a DatasetDict or a Dataset, got {type(dataset).__name__}.")
    train_name = schema.splits["train"]
    if train_name not in dataset:
        raise ValueError(f"{schema.name}: the dataset has no split {train_name!r} (splits: {list(dataset)}).")
    roles = {r: dataset[schema.splits[r]] for r in ("train", "val", "test") if schema.splits.get(r) in dataset}
    missing = [r for r in ("val", "test") if r not in roles]
    if missing:
        # carve the missing roles out of train, so that nothing is ever selected on the test split
        fractions = schema.split_fractions
        idx = split_indices(len(roles["train"]), fractions, seed)
        train = roles["train"]
        roles["train"] = train.select(idx["train"].tolist())
        for r in missing:
            roles[r] = train.select(idx[r].tolist())
    for split in roles.values():
        schema.check_columns(split.column_names)
    if max_samples is not None:
        roles = {r: d.select(range(min(len(d), int(max_samples)))) for r, d in roles.items()}
    return roles


def _encode_split(encode_fn: EncodeFn, split: Any, schema: AttributeSchema, batch_size: int) -> tuple:
    features, labels = [], []
    for start in range(0, len(split), batch_size):
        rows = split[start : start + batch_size]
        images = preprocess_images(rows[schema.image_column], schema.crop, schema.resolution)
        with torch.no_grad():
            features.append(torch.as_tensor(encode_fn(images)).float().cpu())
        n = len(rows[schema.image_column])
        labels += [schema.read_labels({k: v[i] for k, v in rows.items()}) for i in range(n)]
    return torch.cat(features), torch.tensor(labels, dtype=torch.float32)


def attribute_protocol(
    encode_fn: EncodeFn,
    dataset: Any,
    schema: AttributeSchema,
    config: ProbeConfig | None = None,
    batch_size: int = 128,
    seed: int = 0,
    max_samples: int | None = None,
    **load_kwargs: Any,
) -> dict[str, Any]:
    r"""
    Linear probe of every attribute of `schema` on frozen features: binary attributes with BCE (report per-attribute
    test AP and accuracy, mean AP), continuous ones with MSE (per-attribute Pearson r and MSE, their means). One epoch
    is chosen for the whole probe on the validation split (`selection="joint"`), the test split is only reported.

    Args:
        encode_fn (`Callable`): `(B, 3, H, W)` images in [-1, 1] → `(B, d)` features.
        dataset: See [`load_attribute_splits`].
        schema ([`AttributeSchema`]): e.g. `CELEBA_SCHEMA` or `LFW_SCHEMA`.
        config ([`ProbeConfig`], *optional*): Default: docs/method.md §9 (Adam 1e-3, 15 epochs, batch 128, joint).
        batch_size (`int`, defaults to 128): Encoding batch size.
        seed (`int`, defaults to 0): Seed of carved-out splits.
        max_samples (`int`, *optional*): Rows per split (for quick runs).

    Returns:
        `dict` report.
    """
    config = config or ProbeConfig(selection="joint")
    splits = load_attribute_splits(dataset, schema, seed, max_samples, **load_kwargs)
    features, targets = {}, {}
    for role, split in splits.items():
        features[role], targets[role] = _encode_split(encode_fn, split, schema, batch_size)
    task = "binary" if schema.label_kind == "binary" else "regression"
    result = fit_linear_probes(features, targets, task, config=config)
    report: dict[str, Any] = {
        "benchmark": schema.name,
        "num_attributes": len(schema.attributes),
        "splits": {r: len(s) for r, s in splits.items()},
        "feature_dim": int(features["train"].shape[1]),
        "probe": config.to_dict(),
        "best_epoch": result.best_epoch[0].tolist(),
    }
    metrics = {k: v[0] for k, v in result.metrics.items()}
    for name, values in metrics.items():
        report[name] = dict(zip(schema.attributes, values.tolist()))
        report[f"mean_{name}"] = float(values.nanmean())
    return report


def celeba_protocol(encode_fn: EncodeFn, dataset: Any, **kwargs: Any) -> dict[str, Any]:
    """[`attribute_protocol`] with [`CELEBA_SCHEMA`] (40 binary attributes, mean AP); `schema=` overrides it."""
    return attribute_protocol(encode_fn, dataset, kwargs.pop("schema", CELEBA_SCHEMA), **kwargs)


def lfw_protocol(encode_fn: EncodeFn, dataset: Any, **kwargs: Any) -> dict[str, Any]:
    """[`attribute_protocol`] with [`LFW_SCHEMA`] (73 continuous attributes, mean Pearson r and MSE)."""
    return attribute_protocol(encode_fn, dataset, kwargs.pop("schema", LFW_SCHEMA), **kwargs)
