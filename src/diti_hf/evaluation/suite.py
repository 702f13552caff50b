"""The evaluation suite on a labelled-factor dataset: probes, time-step alignment, counterfactuals, reconstruction,
the generation-control diagnostics, with baselines, written as a JSON report and plots."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .adapters import (
    ModelFunctions,
    ddpm_functions,
    encoder_functions,
    pipeline_functions,
    pixel_functions,
    random_encoder_functions,
)
from .alignment import AlignmentResult, timestep_alignment
from .attribute_loss import attribute_loss_curve
from .control import SWAP_PROTOCOLS, regeneration_keep_rates, sample_validity, swap_protocol_scores
from .counterfactual import CounterfactualResult, counterfactual_score, train_oracle
from .loss_profile import loss_profile, partition_from_profile
from .plots import write_plots
from .probes import ProbeConfig, fit_linear_probes, spearman_r, split_indices, split_sizes
from .reconstruction import compare_images, reconstruct
from .targets import check_targets

logger = logging.getLogger(__name__)

# Below this held-out accuracy the oracle's reads of a factor are too noisy to score generated images by.
RELIABLE_ORACLE_ACCURACY = 0.95

# The per-image sizes of [`EvaluationConfig`] that follow the dataset when left unset: size → (default, pool). An
# unset size is `min(default, images in its pool)`, the pool being the test split its section draws from (`"test"`)
# or the whole dataset (`"all"`), so that a run on a few images is a few images' work. A size given explicitly wins.
DEFAULT_SIZES: dict[str, tuple[int, str]] = {
    "num_swap_pairs": (64, "test"),
    "num_attribute_loss_images": (128, "test"),
    "num_reconstruction_images": (32, "test"),
    "num_loss_profile_images": (128, "test"),
    "num_regeneration_images": (48, "test"),
    "num_validity_samples": (64, "test"),  # compared with the oracle's reads of the test images
    "granularity_pairs": (256, "all"),
    "disentanglement_images": (1000, "all"),
}


@dataclass
class EvaluationConfig:
    r"""
    Sizes and switches of [`evaluate_pipeline`] (defaults: a few thousand 32×32 images in about a minute on 2 CPU
    cores, plus the counterfactual generation).

    The per-image sizes (`num_swap_pairs`, `num_attribute_loss_images`, `num_reconstruction_images`,
    `num_loss_profile_images`, `num_regeneration_images`, `num_validity_samples`, `granularity_pairs`,
    `disentanglement_images`) default to `None`: the smaller of their default and the images of the pool they draw
    from, the test split or the whole dataset (see `DEFAULT_SIZES` and [`~EvaluationConfig.sized_for`]). The report's
    `config` holds the sizes used and names those set this way (`auto_sizes`).

    Args:
        seed (`int`, defaults to 0): Seed of the splits, probes, oracle, random encoder and pairs.
        split_fractions (`tuple[float, float, float]`, defaults to `(0.6, 0.2, 0.2)`): Train/val/test fractions.
        probe ([`ProbeConfig`]): Linear-probe training (epoch chosen on val, test reported).
        alignment_threshold (`float`, defaults to 0.9): Fraction of the full-`z` gain that counts as decodable.
        alignment_min_gain (`float`, defaults to 0.05): Minimum full-`z` gain over chance for a factor to count.
        max_alignment_groups (`int`, *optional*, defaults to 64): Chunk groups probed (`None`: every chunk).
        random_baseline (`bool`, defaults to `True`): Add a randomly initialised encoder (config of the first model
            with an encoder).
        pixel_baseline (`bool`, defaults to `True`): Add raw pixels.
        counterfactual (`bool`, defaults to `True`): Run the counterfactual score for models with a `swap_fn`.
        swap_ranges (`list[tuple[int, int]]`, *optional*): Time-step ranges to swap; default `num_swap_ranges`
            equal ranges of `[0, T)`.
        num_swap_ranges (`int`, defaults to 4): See `swap_ranges`.
        num_swap_pairs (`int`, *optional*, defaults to 64, at most the test images): Pairs per model.
        swap_batch_size (`int`, defaults to 16): Pairs per swap call.
        oracle_epochs (`int`, defaults to 12): Oracle training epochs (on the train split).
        attribute_loss (`bool`, defaults to `True`): Measure each factor's attribute-loss time with the frozen DDPM of
            the first model that has one (needs the oracle).
        num_attribute_loss_images (`int`, *optional*, defaults to 128, at most the test images): Test images noised
            at each probed time-step.
        attribute_loss_timesteps (`list[int]`, defaults to 0, 100, …, 900): Time-steps probed.
        reconstruction (`bool`, defaults to `True`): Reconstruction metrics for models with a `reconstruct_fn`.
        num_reconstruction_images (`int`, *optional*, defaults to 32, at most the test images): Test images
            reconstructed.
        num_inference_steps (`int`, defaults to 20): DDIM steps of swaps and reconstructions (pipelines).
        loss_profile (`bool`, defaults to `True`): The frozen DDPM's loss profile (see
            [`~diti_hf.evaluation.loss_profile`]) and the partition fitted to it.
        num_loss_profile_images (`int`, *optional*, defaults to 128, at most the test images): Test images of the
            loss profile.
        regeneration (`bool`, defaults to `True`): Regeneration keep-rates of models that can generate (see
            [`~diti_hf.evaluation.regeneration_keep_rates`]).
        regeneration_timesteps (`list[int]`, defaults to 250, 500, 750, 999): Noise levels regenerated from.
        num_regeneration_images (`int`, *optional*, defaults to 48, at most the test images): Images regenerated at
            each level.
        swap_protocols (`list[str]`, defaults to every protocol): Swap protocols compared (see
            `evaluation.control.SWAP_PROTOCOLS`) on the same pairs as the counterfactual score; `[]` skips them.
        sample_validity (`bool`, defaults to `True`): Read unconditional samples of the frozen DDPM with the oracle.
        num_validity_samples (`int`, *optional*, defaults to 64, at most the test images): Samples drawn.
        validity_confidence (`float`, defaults to 0.9): Oracle probability that counts as a confident read.
        num_sample_steps (`int`, defaults to 50): DDIM steps of those samples.
        sample_eta (`float`, defaults to 0.0): DDIM η of a bare DDPM's samples (0: deterministic, the sampler DiTi
            generates with; 1: as stochastic as ancestral sampling). A DiTi pipeline samples with its own
            deterministic DDIM.
        granularity_pairs (`int`, *optional*, defaults to 256, at most the images): Base images per factor for the
            granularity measure.
        encode_batch_size (`int`, defaults to 256): Encoding batch size.
        disentanglement (`bool`, defaults to `True`): DCI, MIG, SAP and the FactorVAE score of every model and
            baseline (see [`~diti_hf.evaluation.disentanglement`]), and for partitioned models the DCI importance of
            each time-step group.
        disentanglement_images (`int`, *optional*, defaults to 1000, at most the images): Images (a seeded draw from
            all splits) of those metrics.
        disentanglement_estimator (`str`, defaults to `"gbt"`): DCI's classifier, `"gbt"` or `"random_forest"`.
        disentanglement_max_dim (`int`, defaults to 512): Features wider than this (raw pixels) are first projected
            on their top `disentanglement_pca_dim` principal components (fitted on the metrics' draw).
        disentanglement_pca_dim (`int`, defaults to 64): Principal components kept for those features.
        plots (`bool`, defaults to `True`): Write PNG plots next to the JSON report.
    """

    seed: int = 0
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    alignment_threshold: float = 0.9
    alignment_min_gain: float = 0.05
    max_alignment_groups: int | None = 64
    random_baseline: bool = True
    pixel_baseline: bool = True
    counterfactual: bool = True
    swap_ranges: list[tuple[int, int]] | None = None
    num_swap_ranges: int = 4
    num_swap_pairs: int | None = None
    swap_batch_size: int = 16
    oracle_epochs: int = 12
    attribute_loss: bool = True
    num_attribute_loss_images: int | None = None
    attribute_loss_timesteps: list[int] = field(default_factory=lambda: list(range(0, 1000, 100)))
    reconstruction: bool = True
    num_reconstruction_images: int | None = None
    num_inference_steps: int = 20
    loss_profile: bool = True
    num_loss_profile_images: int | None = None
    regeneration: bool = True
    regeneration_timesteps: list[int] = field(default_factory=lambda: [250, 500, 750, 999])
    num_regeneration_images: int | None = None
    swap_protocols: list[str] = field(default_factory=lambda: list(SWAP_PROTOCOLS))
    sample_validity: bool = True
    num_validity_samples: int | None = None
    validity_confidence: float = 0.9
    num_sample_steps: int = 50
    sample_eta: float = 0.0
    granularity_pairs: int | None = None
    encode_batch_size: int = 256
    disentanglement: bool = True
    disentanglement_images: int | None = None
    disentanglement_estimator: str = "gbt"
    disentanglement_max_dim: int = 512
    disentanglement_pca_dim: int = 64
    plots: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.probe, Mapping):
            self.probe = ProbeConfig(**self.probe)
        unknown = [p for p in self.swap_protocols if p not in SWAP_PROTOCOLS]
        if unknown:
            raise ValueError(f"`swap_protocols` must be drawn from {SWAP_PROTOCOLS}, got {self.swap_protocols}.")
        sizes = ("num_swap_ranges", "swap_batch_size", "oracle_epochs", "num_inference_steps", "num_sample_steps")
        for name in (*sizes, "disentanglement_max_dim", "disentanglement_pca_dim", *DEFAULT_SIZES):
            value = getattr(self, name)
            if name in DEFAULT_SIZES and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
        if self.disentanglement_estimator not in ("gbt", "random_forest"):
            raise ValueError(
                f"`disentanglement_estimator` must be 'gbt' or 'random_forest', got {self.disentanglement_estimator!r}."
            )
        if not 0.0 <= float(self.sample_eta) <= 1.0:
            raise ValueError(f"`sample_eta` must lie in [0, 1], got {self.sample_eta!r}.")
        if self.swap_ranges is not None:
            self.swap_ranges = [(int(lo), int(hi)) for lo, hi in self.swap_ranges]
            if not self.swap_ranges or any(not 0 <= lo < hi for lo, hi in self.swap_ranges):
                raise ValueError(
                    f"`swap_ranges` must be non-empty (lo, hi) ranges with lo < hi, got {self.swap_ranges}."
                )

    def to_dict(self) -> dict:
        return asdict(self)

    def sized_for(self, splits: Mapping[str, int]) -> EvaluationConfig:
        r"""
        This config with every unset per-image size set by the rule of `DEFAULT_SIZES`: the smaller of its default
        and the images of its pool.

        Args:
            splits (`dict[str, int]`): Images in the `"train"`, `"val"` and `"test"` splits.

        Returns:
            [`EvaluationConfig`]: A copy whose sizes are all set.
        """
        pools = {"test": int(splits["test"]), "all": sum(int(n) for n in splits.values())}
        unset = {name: min(default, pools[pool]) for name, (default, pool) in DEFAULT_SIZES.items()}
        return dataclasses.replace(self, **{n: v for n, v in unset.items() if getattr(self, n) is None})

    def minimum_images(self, pairs: bool | None = None) -> tuple[int, str]:
        r"""
        The fewest images from which on every run with this config works, and what for: one image in each split, and
        two test images when a section pairs them (the counterfactual score and its swap protocols, the regeneration
        keep-rates). The splits round, so a few sizes below it may work too (7 of the default fractions' 9).

        Args:
            pairs (`bool`, *optional*): Whether a section that pairs test images runs (default: whether one is
                switched on).

        Returns:
            `(minimum, reason)`: the number of images and the end of a sentence saying what needs them.
        """
        pairs = (self.counterfactual or self.regeneration) if pairs is None else pairs
        test = 2 if pairs else 1
        reason = f"the train/val/test splits {tuple(self.split_fractions)}"
        if pairs:
            reason += " and 2 test images to pair (counterfactual swaps, regeneration)"
        # each split is within 1 of its fraction of the images, so every size from `bound` on fits; the splits'
        # rounding makes fitting not monotone below it (8 images split 5/2/1), hence the downward search
        train, val, test_fraction = (float(f) for f in self.split_fractions)
        bound = math.ceil(max((test + 1) / test_fraction, 1.5 / train, 1.5 / val))

        def fits(num_images: int) -> bool:
            n_train, n_val, n_test = split_sizes(num_images, self.split_fractions)
            return n_train >= 1 and n_val >= 1 and n_test >= test

        minimum = bound
        while minimum > 1 and fits(minimum - 1):
            minimum -= 1
        return minimum, reason

    def check_num_images(self, num_images: int, pairs: bool | None = None) -> None:
        r"""
        Raises a `ValueError` naming `num_images` when it is below [`~EvaluationConfig.minimum_images`].

        Args:
            num_images (`int`): The images of the run.
            pairs (`bool`, *optional*): See [`~EvaluationConfig.minimum_images`].
        """
        minimum, reason = self.minimum_images(pairs)
        if num_images < minimum:
            raise ValueError(
                f"`num_images` {num_images} is too small: at least {minimum} images are needed for {reason}."
            )


# ---------------------------------------------------------------------------------------------------- data helpers
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
    from .disentanglement import discretize

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


def json_safe(value: Any) -> Any:
    """JSON-safe copy of a report: tensors and arrays → lists, NaN/inf → None."""
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


# ---------------------------------------------------------------------------------------------------- the suite
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


def evaluate_pipeline(
    models: Mapping[str, Any] | Any,
    dataset: Any,
    config: EvaluationConfig | None = None,
    factors: Sequence[str] | None = None,
    granularity: Mapping[str, float] | None = None,
    output_dir: str | Path | None = None,
    oracle: Any = None,
    dataset_info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    r"""
    Runs the evaluation suite on a dataset with known factors (`ClassLabel` columns) and writes a report.

    For every model (and the random-encoder and raw-pixel baselines): a linear probe per factor on the frozen
    features (test accuracy and AP, epoch chosen on val); for partitioned models with `num_chunks > 1`, the
    time-step alignment (prefix / single-chunk probes, decodable chunk, Spearman with granularity); for models that
    can generate, the counterfactual flip-rate matrix (oracle trained on the train split, pairs from the test split)
    and reconstruction MSE/PSNR/SSIM; with a frozen DDPM, each factor's attribute-loss time (and its Spearman
    correlation with the decodable time-steps). Nothing depends on the particular factors of the dataset.

    Args:
        models (`dict[str, Any]` or a single model): Name → [`~diti_hf.DiTiPipeline`] (DiTi or PDAE),
            [`~diti_hf.DiTiEncoderModel`], a diffusers `DDPMPipeline` (the frozen DDPM alone: its loss profile,
            attribute-loss times and sample validity) or [`ModelFunctions`].
        dataset (`datasets.Dataset`): Images (`"image"`) and factor `ClassLabel` columns, e.g. from
            [`~diti_hf.data.shapes.generate_shapes`].
        config ([`EvaluationConfig`], *optional*): Sizes and switches.
        factors (`list[str]`, *optional*): Factor columns (default: every `ClassLabel` column).
        granularity (`dict[str, float]`, *optional*): Factor granularities; measured from the factor specs stored in
            datasets made by `generate_shapes` when not given.
        output_dir (`str`, *optional*): Writes `report.json` and the plots there.
        oracle (*optional*): A trained factor classifier with `predict(images in [-1, 1]) -> (N, F)` classes (e.g.
            from [`~diti_hf.evaluation.train_oracle`], to reuse across runs); trained on the train split if not given.
        dataset_info (`dict`, *optional*): Recorded under `report["dataset"]` (e.g. the name and seed it was made with).

    Returns:
        `dict`: the report (also written as `report.json`).

    Examples:
    ```py
    >>> from diti_hf import DiTiPipeline
    >>> from diti_hf.data.shapes import generate_shapes
    >>> from diti_hf.evaluation import evaluate_pipeline
    >>> report = evaluate_pipeline(
    ...     {"diti": DiTiPipeline.from_pretrained("out/diti"), "pdae": DiTiPipeline.from_pretrained("out/pdae")},
    ...     generate_shapes(3000, seed=1), output_dir="out/eval",
    ... )
    >>> report["models"]["diti"]["alignment"]["spearman_timestep_vs_granularity"]
    ```
    """
    config = config or EvaluationConfig()
    functions = _model_functions(models, config)
    start = time.perf_counter()
    auto_sizes = [name for name in DEFAULT_SIZES if getattr(config, name) is None]
    data, config = _suite_data(dataset, factors, granularity, functions, config)
    report: dict[str, Any] = {
        "config": {**config.to_dict(), "auto_sizes": auto_sizes},
        "dataset": _dataset_section(data, dataset_info),
        "models": {},
    }
    report["models"], alignments = _feature_sections(functions, data, config)

    ddpm = next(((n, fn) for n, fn in functions.items() if fn.eps_fn is not None), None)
    sampler = next(((n, fn) for n, fn in functions.items() if fn.sample_fn is not None), None)
    oracle_test = None
    if _needs_oracle(functions, config):
        oracle, report["oracle"], oracle_test = _oracle_section(oracle, data, config)
    if config.attribute_loss and ddpm is not None:
        report["attribute_loss"] = _attribute_loss_section(ddpm, oracle, data, config)
        _record_loss_times(report, alignments, data.factor_names)
    if config.loss_profile and ddpm is not None:
        report["loss_profile"] = _loss_profile_section(ddpm, functions, data.test_images, config)
    if config.sample_validity and sampler is not None:
        report["ddpm_samples"] = _sample_validity_section(sampler, oracle, data, config)
    entries = report["models"]
    if config.regeneration:
        for name, fn in functions.items():
            if fn.regenerate_fn is not None and fn.alphas_cumprod is not None and fn.encode_fn is not None:
                entries[name]["regeneration"] = _regeneration_section(fn, oracle, data, config)
    counterfactuals: dict[str, CounterfactualResult] = {}
    if config.counterfactual:
        for name, fn in functions.items():
            if fn.swap_fn is not None:
                counterfactuals[name], fields = _counterfactual_sections(fn, oracle, oracle_test, data, config)
                entries[name].update(fields)
    if config.reconstruction:
        for name, fn in functions.items():
            if fn.reconstruct_fn is not None:
                entries[name]["reconstruction"] = _reconstruction_section(fn, oracle, data, config)

    report["seconds_total"] = time.perf_counter() - start
    report = json_safe(report)
    report["targets"] = _targets_section(report)
    if output_dir is not None:
        _write_report(report, alignments, counterfactuals, Path(output_dir), config.plots)
    return report


# ---------------------------------------------------------------------------------------------------- inputs
def _model_functions(models: Mapping[str, Any] | Any, config: EvaluationConfig) -> dict[str, ModelFunctions]:
    """Name → [`ModelFunctions`] of the models evaluated (a single model is named `"model"`)."""
    if not isinstance(models, Mapping):
        models = {"model": models}
    if not models:
        raise ValueError("`models` is empty.")
    functions = {name: _as_functions(m, config) for name, m in models.items()}
    reserved = {"random_init", "pixels"} & set(functions)
    if reserved:
        raise ValueError(f"model names {sorted(reserved)} are reserved for the baselines.")
    return functions


def _as_functions(model: Any, config: EvaluationConfig) -> ModelFunctions:
    """Adapts one model to [`ModelFunctions`] by what it has (pipeline, bare DDPM, encoder)."""
    if isinstance(model, ModelFunctions):
        return model
    if hasattr(model, "swap") and hasattr(model, "encode"):
        return pipeline_functions(model, config.num_inference_steps, config.encode_batch_size, config.num_sample_steps)
    if hasattr(model, "unet") and hasattr(model, "scheduler") and not hasattr(model, "encoder"):
        return ddpm_functions(model.unet, dict(model.scheduler.config), config.num_sample_steps, config.sample_eta)
    if isinstance(model, torch.nn.Module) and hasattr(model, "config"):
        return encoder_functions(model, config.encode_batch_size)
    raise TypeError(
        "each model must be a DiTiPipeline, a DiTiEncoderModel, a DDPM pipeline (unet + scheduler) or a "
        f"ModelFunctions, got {type(model).__name__}."
    )


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
    from ..data.shapes import factor_granularity, factors_from_json

    try:
        specs = factors_from_json(dataset.info.description or "")
    except ValueError:
        return None
    measured = factor_granularity(specs, resolution=resolution, num_pairs=pairs, seed=seed)
    return measured if all(n in measured for n in factors) else None


def _dataset_section(data: _SuiteData, dataset_info: Mapping[str, Any] | None) -> dict[str, Any]:
    """`report["dataset"]`: sizes, split sizes and each factor's classes and granularity."""
    from ..data.shapes import attribute_loss_time

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


# ---------------------------------------------------------------------------------------------------- sections
def _feature_sections(
    functions: Mapping[str, ModelFunctions], data: _SuiteData, config: EvaluationConfig
) -> tuple[dict[str, dict[str, Any]], dict[str, AlignmentResult]]:
    """
    The report entry of every model and baseline, with its linear probes and (partitioned models) time-step alignment.

    Returns:
        `(entries, alignments)`: name → report entry, and name → [`AlignmentResult`] of the partitioned models.
    """
    baselines: dict[str, ModelFunctions] = {}
    if config.random_baseline:
        encoder = next((fn.encoder for fn in functions.values() if fn.encoder is not None), None)
        if encoder is not None:
            baselines["random_init"] = random_encoder_functions(encoder, config.seed, config.encode_batch_size)
    if config.pixel_baseline:
        baselines["pixels"] = pixel_functions()

    entries: dict[str, dict[str, Any]] = {}
    alignments: dict[str, AlignmentResult] = {}
    for name, fn in {**functions, **baselines}.items():
        if fn.encode_fn is None:  # a bare DDPM: diagnostics only
            entries[name] = {"kind": "ddpm", "num_chunks": None, "probe": None, "alignment": None}
            continue
        entries[name], alignment = _probe_section(fn, "baseline" if name in baselines else "model", data, config)
        if alignment is not None:
            alignments[name] = alignment
    return entries, alignments


def _encode(fn: ModelFunctions, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """`(N, d)` features of `images` in batches, checked for shape."""
    with torch.no_grad():
        out = [
            torch.as_tensor(fn.encode_fn(images[i : i + batch_size])).float().cpu()
            for i in range(0, len(images), batch_size)
        ]
    z = torch.cat(out)
    if z.ndim != 2 or z.shape[0] != images.shape[0]:
        raise ValueError(
            f"`encode_fn` must return (B, d) features, got {tuple(z.shape)} for {images.shape[0]} images."
        )
    return z


def _probe_section(
    fn: ModelFunctions, kind: str, data: _SuiteData, config: EvaluationConfig
) -> tuple[dict[str, Any], AlignmentResult | None]:
    """One model's report entry: linear probes on its frozen features and, with `num_chunks > 1`, the alignment."""
    t0 = time.perf_counter()
    z = _encode(fn, data.images, config.encode_batch_size)
    feats = {s: z[idx] for s, idx in data.splits.items()}
    probe = fit_linear_probes(feats, data.y, "multiclass", data.num_classes, config=config.probe)
    acc, ap = probe.metrics["accuracy"][0], probe.metrics["average_precision"][0]
    names = data.factor_names
    entry: dict[str, Any] = {
        "kind": kind,
        "feature_dim": int(z.shape[1]),
        "num_chunks": None if fn.partition is None else fn.partition.num_chunks,
        "probe": {
            "accuracy": dict(zip(names, acc.tolist())),
            "average_precision": dict(zip(names, ap.tolist())),
            "chance": dict(zip(names, probe.chance.tolist())),
            "best_epoch": dict(zip(names, probe.best_epoch[0].tolist())),
            "mean_accuracy": float(acc.mean()),
            "mean_average_precision": float(ap.nanmean()),
        },
        "alignment": None,
    }
    alignment = None
    if fn.partition is not None and fn.partition.num_chunks > 1:
        alignment = timestep_alignment(
            feats,
            data.y,
            fn.partition,
            names,
            data.num_classes,
            data.granularity,
            config.alignment_threshold,
            config.alignment_min_gain,
            config.max_alignment_groups,
            config.probe,
        )
        entry["alignment"] = alignment.to_dict()
    entry["seconds_probes"] = time.perf_counter() - t0
    if config.disentanglement:
        entry["disentanglement"] = _disentanglement_section(z, fn.partition, data, config)
    return entry, alignment


def timestep_groups(partition: Any) -> list[tuple[int, int]]:
    """The time-step ranges of a partition's stages, or its four quarters when it has none."""
    T = partition.num_train_timesteps
    ends = partition.stages if partition.stages is not None else [T * (q + 1) // 4 for q in range(4)]
    return list(zip([0, *ends[:-1]], ends))


def _principal_components(features: np.ndarray, num_components: int) -> np.ndarray:
    """The projection of `features` (N, D) on their top `num_components` principal components."""
    centred = features - features.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:num_components].T


def _disentanglement_section(
    z: torch.Tensor, partition: Any, data: _SuiteData, config: EvaluationConfig
) -> dict[str, Any]:
    """DCI, MIG, SAP and FactorVAE on a seeded draw of images; for partitioned models, the importance per t-range."""
    from .disentanglement import dci_from_importance, dci_importance, factor_vae_score, importance_by_group, mig, sap

    t0 = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    idx = rng.permutation(len(z))[: config.disentanglement_images]
    features, labels = z[idx].double().numpy(), data.labels[idx].numpy()
    reduced = {}
    if features.shape[1] > config.disentanglement_max_dim:
        # Tree importances over thousands of raw pixels cost minutes per factor; the field's pixel baselines reduce
        # them to their principal components first.
        features = _principal_components(features, config.disentanglement_pca_dim)
        reduced = {"input_dims": int(z.shape[1]), "pca_components": features.shape[1]}
    importance, accuracy = dci_importance(
        features, labels, seed=config.seed, estimator=config.disentanglement_estimator
    )
    scores = dci_from_importance(importance)
    out: dict[str, Any] = {
        "num_images": len(idx),
        "dci_disentanglement": scores["disentanglement"],
        "dci_completeness": scores["completeness"],
        "dci_informativeness": float(np.mean(accuracy)),
        "mig": mig(features, labels),
        "sap": sap(features, labels, seed=config.seed),
        "factor_vae": factor_vae_score(features, labels, seed=config.seed),
        "estimator": config.disentanglement_estimator,
        **reduced,
    }
    if partition is not None and partition.num_chunks > 1:
        groups = timestep_groups(partition)
        dims = [partition.dims_for_timesteps(lo, hi) for lo, hi in groups]
        out["by_timestep_group"] = {
            "groups": [list(g) for g in groups],
            "dims": [list(d) for d in dims],
            "factors": data.factor_names,
            "importance_share": importance_by_group(importance, dims).tolist(),
        }
    out["seconds"] = time.perf_counter() - t0
    return out


def _needs_oracle(functions: Mapping[str, ModelFunctions], config: EvaluationConfig) -> bool:
    """Whether a section that reads generated or noised images with the oracle will run."""
    fns = list(functions.values())
    return bool(
        (config.counterfactual and any(fn.swap_fn is not None for fn in fns))
        or (config.attribute_loss and any(fn.eps_fn is not None for fn in fns))
        or (config.regeneration and any(fn.regenerate_fn is not None for fn in fns))
        or (config.sample_validity and any(fn.sample_fn is not None for fn in fns))
    )


def _oracle_section(
    oracle: Any, data: _SuiteData, config: EvaluationConfig
) -> tuple[Any, dict[str, Any], list[float]]:
    """
    The factor oracle (trained on the train split unless given) and its accuracies.

    Returns:
        `(oracle, section, test_accuracy)`: the oracle, `report["oracle"]` and its per-factor test accuracy.
    """
    t0 = time.perf_counter()
    oracle_val = None
    if oracle is None:
        oracle, oracle_val = train_oracle(
            data.images[data.splits["train"]],
            data.y["train"],
            data.num_classes,
            data.images[data.splits["val"]],
            data.y["val"],
            epochs=config.oracle_epochs,
            seed=config.seed,
        )
    oracle_test = (oracle.predict(data.test_images) == data.y["test"]).float().mean(0).tolist()
    weak = {name: acc for name, acc in zip(data.factor_names, oracle_test) if acc < RELIABLE_ORACLE_ACCURACY}
    if weak:  # every flip rate, loss time and validity reads these factors through the oracle
        logger.warning(
            "the oracle reads %s on held-out real images below %.2f accuracy, so what the report says of them is "
            "noisy: evaluate on more images (the oracle trains on the train split)",
            ", ".join(f"{name} ({acc:.2f})" for name, acc in weak.items()), RELIABLE_ORACLE_ACCURACY,
        )  # fmt: skip
    section = {
        "val_accuracy": None if oracle_val is None else dict(zip(data.factor_names, oracle_val)),
        "test_accuracy": dict(zip(data.factor_names, oracle_test)),
        "weak_factors": sorted(weak),
        "seconds": time.perf_counter() - t0,
    }
    return oracle, section, oracle_test


def _attribute_loss_section(
    ddpm: tuple[str, ModelFunctions], oracle: Any, data: _SuiteData, config: EvaluationConfig
) -> dict[str, Any]:
    """`report["attribute_loss"]`: the oracle's accuracy on noised test images, and each factor's loss time."""
    t0 = time.perf_counter()
    ddpm_name, fn = ddpm
    idx = data.splits["test"][: config.num_attribute_loss_images]
    curve = attribute_loss_curve(
        fn.eps_fn, oracle, data.images[idx], data.labels[idx], fn.alphas_cumprod, config.attribute_loss_timesteps,
        seed=config.seed,
    )  # fmt: skip
    names = data.factor_names
    return {
        "ddpm_of": ddpm_name,
        "num_images": len(idx),
        "timesteps": curve["timesteps"],
        "level": curve["level"],
        "accuracy": dict(zip(names, curve["accuracy"].tolist())),
        "clean_accuracy": dict(zip(names, curve["clean_accuracy"].tolist())),
        "loss_time": dict(zip(names, curve["loss_time"])),
        "seconds": time.perf_counter() - t0,
    }


def _record_loss_times(
    report: dict[str, Any], alignments: Mapping[str, AlignmentResult], factor_names: Sequence[str]
) -> None:
    """Adds the attribute-loss time to each factor of `report["dataset"]`, and its Spearman correlation with the
    decodable time-steps to each alignment."""
    loss_time = report["attribute_loss"]["loss_time"]
    for factor in report["dataset"]["factors"]:
        factor["ddpm_attribute_loss_time"] = loss_time[factor["name"]]
    for name, alignment in alignments.items():
        pairs = [
            (t, loss_time[f])
            for f, t in zip(factor_names, alignment.decodable_timestep)
            if t is not None and loss_time[f] is not None
        ]
        rho = spearman_r(*zip(*pairs)) if len(pairs) >= 3 else float("nan")
        report["models"][name]["alignment"]["spearman_timestep_vs_loss_time"] = rho


def _loss_profile_section(
    ddpm: tuple[str, ModelFunctions],
    functions: Mapping[str, ModelFunctions],
    images: torch.Tensor,
    config: EvaluationConfig,
) -> dict[str, Any]:
    """The frozen DDPM's loss profile, and the staged partition it suggests at the first DiTi model's d and k."""
    from ..schedule import DiffusionCoefficients

    t0 = time.perf_counter()
    name, fn = ddpm
    coefficients = DiffusionCoefficients.from_alphas_cumprod(fn.alphas_cumprod)
    profile = loss_profile(
        fn.eps_fn, images[: config.num_loss_profile_images], coefficients, batch_size=config.swap_batch_size * 4,
        seed=config.seed,
    )  # fmt: skip
    partitioned = next((f.partition for f in functions.values() if f.partition and f.partition.num_chunks > 1), None)
    section: dict[str, Any] = {"ddpm_of": name, **profile, "partition": None, "auto_partition": None}
    if partitioned is not None:
        section["partition"] = partitioned.to_dict()
        auto = partition_from_profile(
            profile,
            partitioned.latent_dim,
            partitioned.num_chunks,
            num_train_timesteps=coefficients.num_train_timesteps,
        )
        section["auto_partition"] = auto.to_dict()
    section["seconds"] = time.perf_counter() - t0
    return section


def _sample_validity_section(
    sampler: tuple[str, ModelFunctions], oracle: Any, data: _SuiteData, config: EvaluationConfig
) -> dict[str, Any]:
    """`report["ddpm_samples"]`: how many unconditional samples of the frozen DDPM the oracle reads confidently."""
    t0 = time.perf_counter()
    name, fn = sampler
    return {
        "ddpm_of": name,
        "num_inference_steps": config.num_sample_steps,
        "eta": float(config.sample_eta) if fn.encode_fn is None else 0.0,  # a pipeline's own sampler is deterministic
        **sample_validity(
            fn.sample_fn,
            oracle,
            data.labels,
            data.num_classes,
            data.factor_names,
            config.num_validity_samples,
            config.validity_confidence,
            config.swap_batch_size,
            config.seed,
            data.test_images,
        ),  # fmt: skip
        "seconds": time.perf_counter() - t0,
    }


def _regeneration_section(
    fn: ModelFunctions, oracle: Any, data: _SuiteData, config: EvaluationConfig
) -> dict[str, Any]:
    """One model's regeneration keep-rates: which factors survive regenerating test images from each noise level."""
    t0 = time.perf_counter()
    return {
        **regeneration_keep_rates(
            fn.regenerate_fn,
            fn.encode_fn,
            oracle,
            data.test_images,
            data.y["test"],
            fn.alphas_cumprod,
            data.factor_names,
            config.regeneration_timesteps,
            config.num_regeneration_images,
            config.swap_batch_size,
            config.seed,
        ),  # fmt: skip
        "seconds": time.perf_counter() - t0,
    }


def _counterfactual_sections(
    fn: ModelFunctions, oracle: Any, oracle_test: list[float] | None, data: _SuiteData, config: EvaluationConfig
) -> tuple[CounterfactualResult, dict[str, Any]]:
    """
    One generating model's counterfactual score and, on the same pairs and ranges, its other swap protocols.

    Returns:
        `(result, fields)`: the score, and the report entry's `counterfactual`, `seconds_counterfactual` and (when
        another protocol is compared) `swap_protocols`.
    """
    t0 = time.perf_counter()
    ranges = config.swap_ranges or _default_ranges(fn, config.num_swap_ranges)
    # every protocol is scored on the same test pool, ranges and pairs, so their rates compare directly
    pool = (data.test_images, data.y["test"], ranges, data.factor_names, config.num_swap_pairs, config.swap_batch_size)
    result = counterfactual_score(fn.swap_fn, oracle, *pool, config.seed, oracle_accuracy=oracle_test)
    fields: dict[str, Any] = {
        "counterfactual": {**result.to_dict(), "num_pairs": config.num_swap_pairs},
        "seconds_counterfactual": time.perf_counter() - t0,
    }
    others = [p for p in config.swap_protocols if p != "source_inverted" and p in (fn.swap_protocols or {})]
    if others:
        t0 = time.perf_counter()
        scores = swap_protocol_scores(
            {p: fn.swap_protocols[p] for p in others}, oracle, *pool, config.seed, oracle_test
        )
        fields["swap_protocols"] = {
            "default": "source_inverted",  # what the pipeline's `swap` does with its default arguments
            "num_pairs": config.num_swap_pairs,
            "scores": {"source_inverted": fields["counterfactual"], **scores},
            "seconds": time.perf_counter() - t0,
        }
    return result, fields


def _default_ranges(fn: ModelFunctions, n: int) -> list[tuple[int, int]]:
    """The swapped ranges when none are configured: a staged partition's stages, else `n` equal ranges of `[0, T)`."""
    if fn.partition is not None and fn.partition.stages is not None and len(fn.partition.stages) > 1:
        ends = fn.partition.stages
        return list(zip([0, *ends[:-1]], ends))
    T = fn.partition.num_train_timesteps if fn.partition is not None else 1000
    bounds = [round(T * i / n) for i in range(n + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(n) if bounds[i] < bounds[i + 1]]


def _reconstruction_section(
    fn: ModelFunctions, oracle: Any, data: _SuiteData, config: EvaluationConfig
) -> dict[str, Any]:
    """One model's reconstruction metrics on the first test images and, with an oracle, the factors they keep."""
    test_idx = data.splits["test"][: config.num_reconstruction_images]
    target = (data.images[test_idx] / 2 + 0.5).clamp(0, 1)
    t0 = time.perf_counter()
    recon = reconstruct(fn.reconstruct_fn, data.images[test_idx], config.swap_batch_size)
    metrics: dict[str, Any] = {
        "num_images": len(test_idx),
        "num_inference_steps": config.num_inference_steps,
        **compare_images(target, recon),
    }
    if oracle is not None:
        # does a reconstruction keep every factor? (bounds what a swap can show)
        kept = oracle.predict(recon * 2 - 1) == data.y["test"][: len(test_idx)]
        metrics["oracle_accuracy"] = dict(zip(data.factor_names, kept.float().mean(0).tolist()))
    metrics["seconds"] = time.perf_counter() - t0
    return metrics


def _targets_section(report: Mapping[str, Any]) -> dict[str, Any]:
    """[`check_targets`] of every partitioned model, against the first single-chunk (PDAE) model when there is one."""
    entries = report["models"]
    pdae = next((n for n, e in entries.items() if e.get("kind") == "model" and e.get("num_chunks") == 1), None)
    return {
        name: check_targets(report, name, baseline=pdae)
        for name, entry in entries.items()
        if entry.get("kind") == "model" and (entry.get("num_chunks") or 1) > 1
    }


def _write_report(
    report: dict[str, Any],
    alignments: Mapping[str, AlignmentResult],
    counterfactuals: Mapping[str, CounterfactualResult],
    out: Path,
    plots: bool,
) -> None:
    """Writes `report.json` into `out` and, with `plots`, the plots (whose names then join the report)."""
    out.mkdir(parents=True, exist_ok=True)
    # on disk before the plots are drawn, so that a failing plot still leaves the report
    (out / "report.json").write_text(json.dumps(report, indent=2))
    if plots:
        report["plots"] = write_plots(report, alignments, counterfactuals, out)
        (out / "report.json").write_text(json.dumps(report, indent=2))
