"""The labelled-factor dataset of the evaluation suite: its images and integer factor labels ([`dataset_arrays`]), and
the seeded split with the factor granularities that every section of the suite reads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..data.shapes import attribute_loss_time, factor_granularity, factors_from_json
from .adapters import ModelFunctions
from .config import EvaluationConfig
from .disentanglement import discretize
from .probes import split_indices

MAX_FACTOR_VALUES = 20  # a numeric factor with more distinct values is binned into this many equal-width bins


def factor_labels(values: Sequence[Any]) -> tuple[np.ndarray, int, str]:
    r"""
    Integer labels of one numeric factor column: its distinct values ranked when there are at most
    `MAX_FACTOR_VALUES` of them (Shapes3D's hues, scales and orientations; dSprites' positions), else
    `MAX_FACTOR_VALUES` equal-width bins over its range.

    Returns:
        `(labels, num_classes, encoding)`: `(N,)` int64, the number of classes, and a line saying how they were made.
    """
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or not np.isfinite(array).all():
        raise ValueError("a numeric factor column must hold one finite number per image.")
    distinct = np.unique(array)
    if len(distinct) <= MAX_FACTOR_VALUES:
        return np.searchsorted(distinct, array).astype(np.int64), len(distinct), f"{len(distinct)} distinct values"
    labels = discretize(array[:, None], MAX_FACTOR_VALUES)[:, 0]
    encoding = f"{MAX_FACTOR_VALUES} equal-width bins over [{array.min():.4g}, {array.max():.4g}]"
    return labels, MAX_FACTOR_VALUES, encoding


def factor_columns(dataset: Any, image_column: str = "image") -> list[str]:
    """The factor columns found by default: every `ClassLabel` column, else every numeric column."""
    import datasets

    features = dataset.features
    class_columns = [n for n, f in features.items() if isinstance(f, datasets.ClassLabel)]
    if class_columns:
        return class_columns
    numeric = ("int", "uint", "float", "bool")
    return [
        n for n, f in features.items()
        if n != image_column and isinstance(f, datasets.Value) and f.dtype.startswith(numeric)
    ]  # fmt: skip


def dataset_arrays(
    dataset: Any, factors: Sequence[str] | None = None, image_column: str = "image", return_encodings: bool = False
) -> tuple:
    r"""
    Images and factor labels of a 🤗 dataset whose factors are `ClassLabel` or numeric columns.

    Args:
        dataset (`datasets.Dataset`): The dataset.
        factors (`list[str]`, *optional*): Factor columns; default every `ClassLabel` column, else every numeric one.
            A numeric column becomes integer labels by [`factor_labels`].
        image_column (`str`, defaults to `"image"`): The image column.
        return_encodings (`bool`, defaults to `False`): Also return, per factor, how its labels were made.

    Returns:
        `(images, labels, factor_names, num_classes)`: `(N, 3, H, W)` float in [-1, 1], `(N, F)` int64; with
        `return_encodings`, a fifth item: factor → encoding.
    """
    import datasets

    if not isinstance(dataset, datasets.Dataset):
        raise TypeError(f"`dataset` must be a datasets.Dataset, got {type(dataset).__name__}.")
    if image_column not in dataset.column_names:
        raise ValueError(f"`image_column`={image_column!r} is not a column of the dataset ({dataset.column_names}).")
    found = factor_columns(dataset, image_column)
    factors = found if factors is None else list(factors)
    usable = [
        n
        for n, f in dataset.features.items()
        if n != image_column and isinstance(f, (datasets.ClassLabel, datasets.Value))
    ]
    bad = [n for n in factors if n not in usable]
    if not factors or bad:
        raise ValueError(f"`factors` must be ClassLabel or numeric columns of the dataset ({usable}), got {factors}.")
    arrays = [np.asarray(im.convert("RGB"), dtype=np.uint8) for im in dataset[image_column]]
    if len({a.shape for a in arrays}) != 1:
        raise ValueError("every image of the dataset must have the same size.")
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    columns, num_classes, encodings = [], [], {}
    for name in factors:
        feature = dataset.features[name]
        if isinstance(feature, datasets.ClassLabel):
            columns.append(np.asarray(dataset[name], dtype=np.int64))
            num_classes.append(feature.num_classes)
            encodings[name] = "ClassLabel"
        else:
            labels, count, encodings[name] = factor_labels(dataset[name])
            columns.append(labels)
            num_classes.append(count)
    labels = torch.from_numpy(np.stack(columns, 1))
    if return_encodings:
        return images, labels, factors, num_classes, encodings
    return images, labels, factors, num_classes


@dataclass
class _SuiteData:
    """The dataset as tensors with its seeded split: what every section of the suite reads."""

    images: torch.Tensor
    labels: torch.Tensor
    factor_names: list[str]
    num_classes: list[int]
    granularity: Mapping[str, float] | None
    splits: dict[str, torch.Tensor]
    y: dict[str, torch.Tensor]
    encodings: dict[str, str] = field(default_factory=dict)

    @property
    def resolution(self) -> int:
        return self.images.shape[-1]

    @property
    def test_images(self) -> torch.Tensor:
        return self.images[self.splits["test"]]


def _suite_data(
    dataset: Any,
    factors: Sequence[str] | None,
    granularity: Mapping[str, float] | None,
    functions: Mapping[str, ModelFunctions],
    config: EvaluationConfig,
) -> tuple[_SuiteData, EvaluationConfig]:
    """
    The dataset's images and labels (checked against the models' image size and the config's minimum), the factor
    granularities and the train/val/test split; and the config sized for that split
    ([`~EvaluationConfig.sized_for`]).
    """
    images, labels, factor_names, num_classes, encodings = dataset_arrays(dataset, factors, return_encodings=True)
    pairs = (config.counterfactual and any(fn.swap_fn is not None for fn in functions.values())) or (
        config.regeneration and any(fn.regenerate_fn is not None for fn in functions.values())
    )
    minimum, reason = config.minimum_images(pairs)
    if len(images) < minimum:
        raise ValueError(f"`dataset` holds {len(images)} images, too few: at least {minimum} are needed for {reason}.")
    resolution = images.shape[-1]
    for name, fn in functions.items():
        if fn.sample_size is not None and fn.sample_size != resolution:
            raise ValueError(
                f"model {name!r} expects {fn.sample_size}×{fn.sample_size} images, the dataset has {resolution}."
            )
    splits = split_indices(len(images), config.split_fractions, config.seed)
    config = config.sized_for({s: len(idx) for s, idx in splits.items()})
    if granularity is None:
        granularity = _granularity_from_dataset(
            dataset, factor_names, resolution, config.granularity_pairs, config.seed
        )
    elif any(n not in granularity for n in factor_names):
        raise ValueError(f"`granularity` must give every factor {factor_names}, got {sorted(granularity)}.")
    y = {s: labels[idx] for s, idx in splits.items()}
    return _SuiteData(images, labels, factor_names, num_classes, granularity, splits, y, encodings), config


def _granularity_from_dataset(dataset: Any, factors: list[str], resolution: int, pairs: int, seed: int) -> dict | None:
    # datasets made by generate_shapes carry their factor specs; other datasets need `granularity=` explicitly
    try:
        specs = factors_from_json(dataset.info.description or "")
    except ValueError:
        return None
    measured = factor_granularity(specs, resolution=resolution, num_pairs=pairs, seed=seed)
    return measured if all(n in measured for n in factors) else None


def _dataset_section(data: _SuiteData, dataset_info: Mapping[str, Any] | None) -> dict[str, Any]:
    """`report["dataset"]`: sizes, split sizes and each factor's classes and granularity."""
    granularity = data.granularity
    return {
        **dict(dataset_info or {}),
        "num_images": len(data.images),
        "resolution": data.resolution,
        "splits": {s: len(idx) for s, idx in data.splits.items()},
        "factors": [
            {
                "name": n,
                "num_classes": c,
                "labels": data.encodings.get(n, "ClassLabel"),
                "granularity": None if granularity is None else float(granularity[n]),
                # DDPM-free proxy (Bayes error of telling the two noisy images apart); see attribute_loss_time
                "analytic_attribute_loss_time": None
                if granularity is None
                else attribute_loss_time(float(granularity[n])),
            }
            for n, c in zip(data.factor_names, data.num_classes)
        ],
    }
