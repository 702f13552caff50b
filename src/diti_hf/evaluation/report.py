"""The evaluation suite on a labelled-factor dataset: probes, time-step alignment, counterfactuals, reconstruction,
with baselines, written as a JSON report and plots."""

from __future__ import annotations

import json
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
from .loss_profile import loss_profile, loss_profile_figure, partition_from_profile
from .probes import ProbeConfig, fit_linear_probes, spearman_r, split_indices
from .reconstruction import compare_images, reconstruct


@dataclass
class EvaluationConfig:
    r"""
    Sizes and switches of [`evaluate_pipeline`] (defaults: a few thousand 32×32 images in about a minute on 2 CPU
    cores, plus the counterfactual generation).

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
        num_swap_pairs (`int`, defaults to 64): Pairs per model.
        swap_batch_size (`int`, defaults to 16): Pairs per swap call.
        oracle_epochs (`int`, defaults to 12): Oracle training epochs (on the train split).
        attribute_loss (`bool`, defaults to `True`): Measure each factor's attribute-loss time with the frozen DDPM of
            the first model that has one (needs the oracle).
        num_attribute_loss_images (`int`, defaults to 128): Test images noised at each probed time-step.
        attribute_loss_timesteps (`list[int]`, defaults to 0, 100, …, 900): Time-steps probed.
        reconstruction (`bool`, defaults to `True`): Reconstruction metrics for models with a `reconstruct_fn`.
        num_reconstruction_images (`int`, defaults to 32): Test images reconstructed.
        num_inference_steps (`int`, defaults to 20): DDIM steps of swaps and reconstructions (pipelines).
        loss_profile (`bool`, defaults to `True`): The frozen DDPM's loss profile (see
            [`~diti_hf.evaluation.loss_profile`]) and the partition fitted to it.
        num_loss_profile_images (`int`, defaults to 128): Test images of the loss profile.
        regeneration (`bool`, defaults to `True`): Regeneration keep-rates of models that can generate (see
            [`~diti_hf.evaluation.regeneration_keep_rates`]).
        regeneration_timesteps (`list[int]`, defaults to 250, 500, 750, 999): Noise levels regenerated from.
        num_regeneration_images (`int`, defaults to 48): Images regenerated at each level.
        swap_protocols (`list[str]`, defaults to every protocol): Swap protocols compared (see
            `evaluation.control.SWAP_PROTOCOLS`) on the same pairs as the counterfactual score; `[]` skips them.
        sample_validity (`bool`, defaults to `True`): Read unconditional samples of the frozen DDPM with the oracle.
        num_validity_samples (`int`, defaults to 64): Samples drawn.
        validity_confidence (`float`, defaults to 0.9): Oracle probability that counts as a confident read.
        num_sample_steps (`int`, defaults to 50): DDIM steps of those samples.
        granularity_pairs (`int`, defaults to 256): Base images per factor for the granularity measure.
        encode_batch_size (`int`, defaults to 256): Encoding batch size.
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
    num_swap_pairs: int = 64
    swap_batch_size: int = 16
    oracle_epochs: int = 12
    attribute_loss: bool = True
    num_attribute_loss_images: int = 128
    attribute_loss_timesteps: list[int] = field(default_factory=lambda: list(range(0, 1000, 100)))
    reconstruction: bool = True
    num_reconstruction_images: int = 32
    num_inference_steps: int = 20
    loss_profile: bool = True
    num_loss_profile_images: int = 128
    regeneration: bool = True
    regeneration_timesteps: list[int] = field(default_factory=lambda: [250, 500, 750, 999])
    num_regeneration_images: int = 48
    swap_protocols: list[str] = field(default_factory=lambda: list(SWAP_PROTOCOLS))
    sample_validity: bool = True
    num_validity_samples: int = 64
    validity_confidence: float = 0.9
    num_sample_steps: int = 50
    granularity_pairs: int = 256
    encode_batch_size: int = 256
    plots: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.probe, Mapping):
            self.probe = ProbeConfig(**self.probe)
        unknown = [p for p in self.swap_protocols if p not in SWAP_PROTOCOLS]
        if unknown:
            raise ValueError(f"`swap_protocols` must be drawn from {SWAP_PROTOCOLS}, got {self.swap_protocols}.")
        for name in (
            "num_swap_ranges",
            "num_swap_pairs",
            "swap_batch_size",
            "oracle_epochs",
            "num_inference_steps",
            "num_loss_profile_images",
            "num_regeneration_images",
            "num_validity_samples",
            "num_sample_steps",
        ):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be a positive int, got {getattr(self, name)!r}.")
        if self.swap_ranges is not None:
            self.swap_ranges = [(int(lo), int(hi)) for lo, hi in self.swap_ranges]
            if not self.swap_ranges or any(not 0 <= lo < hi for lo, hi in self.swap_ranges):
                raise ValueError(
                    f"`swap_ranges` must be non-empty (lo, hi) ranges with lo < hi, got {self.swap_ranges}."
                )

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------------- data helpers
def dataset_arrays(
    dataset: Any, factors: Sequence[str] | None = None, image_column: str = "image"
) -> tuple[torch.Tensor, torch.Tensor, list[str], list[int]]:
    r"""
    Images and factor labels of a 🤗 dataset whose factors are `ClassLabel` columns.

    Args:
        dataset (`datasets.Dataset`): The dataset.
        factors (`list[str]`, *optional*): Factor columns; default every `ClassLabel` column.
        image_column (`str`, defaults to `"image"`): The image column.

    Returns:
        `(images, labels, factor_names, num_classes)`: `(N, 3, H, W)` float in [-1, 1], `(N, F)` int64.
    """
    import datasets

    if not isinstance(dataset, datasets.Dataset):
        raise TypeError(f"`dataset` must be a datasets.Dataset, got {type(dataset).__name__}.")
    if image_column not in dataset.column_names:
        raise ValueError(f"`image_column`={image_column!r} is not a column of the dataset ({dataset.column_names}).")
    class_columns = [n for n, f in dataset.features.items() if isinstance(f, datasets.ClassLabel)]
    factors = class_columns if factors is None else list(factors)
    bad = [n for n in factors if n not in class_columns]
    if not factors or bad:
        raise ValueError(f"`factors` must be ClassLabel columns of the dataset ({class_columns}), got {factors}.")
    arrays = [np.asarray(im.convert("RGB"), dtype=np.uint8) for im in dataset[image_column]]
    if len({a.shape for a in arrays}) != 1:
        raise ValueError("every image of the dataset must have the same size.")
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    labels = torch.tensor(np.stack([np.asarray(dataset[n]) for n in factors], 1), dtype=torch.long)
    return images, labels, factors, [dataset.features[n].num_classes for n in factors]


def _granularity_from_dataset(dataset: Any, factors: list[str], resolution: int, pairs: int, seed: int) -> dict | None:
    # datasets made by generate_shapes carry their factor specs; other datasets need `granularity=` explicitly
    from ..data.shapes import factor_granularity, factors_from_json

    try:
        specs = factors_from_json(dataset.info.description or "")
    except ValueError:
        return None
    measured = factor_granularity(specs, resolution=resolution, num_pairs=pairs, seed=seed)
    return measured if all(n in measured for n in factors) else None


def _as_functions(model: Any, config: EvaluationConfig) -> ModelFunctions:
    if isinstance(model, ModelFunctions):
        return model
    if hasattr(model, "swap") and hasattr(model, "encode"):
        return pipeline_functions(model, config.num_inference_steps, config.encode_batch_size, config.num_sample_steps)
    if hasattr(model, "unet") and hasattr(model, "scheduler") and not hasattr(model, "encoder"):
        return ddpm_functions(model.unet, dict(model.scheduler.config), config.num_sample_steps)
    if isinstance(model, torch.nn.Module) and hasattr(model, "config"):
        return encoder_functions(model, config.encode_batch_size)
    raise TypeError(
        "each model must be a DiTiPipeline, a DiTiEncoderModel, a DDPM pipeline (unet + scheduler) or a "
        f"ModelFunctions, got {type(model).__name__}."
    )


def _encode(fn: ModelFunctions, images: torch.Tensor, batch_size: int) -> torch.Tensor:
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
    if not isinstance(models, Mapping):
        models = {"model": models}
    if not models:
        raise ValueError("`models` is empty.")
    functions = {name: _as_functions(m, config) for name, m in models.items()}
    reserved = {"random_init", "pixels"} & set(functions)
    if reserved:
        raise ValueError(f"model names {sorted(reserved)} are reserved for the baselines.")

    start = time.perf_counter()
    images, labels, factor_names, num_classes = dataset_arrays(dataset, factors)
    resolution = images.shape[-1]
    for name, fn in functions.items():
        if fn.sample_size is not None and fn.sample_size != resolution:
            raise ValueError(
                f"model {name!r} expects {fn.sample_size}×{fn.sample_size} images, the dataset has {resolution}."
            )
    if granularity is None:
        granularity = _granularity_from_dataset(
            dataset, factor_names, resolution, config.granularity_pairs, config.seed
        )
    elif any(n not in granularity for n in factor_names):
        raise ValueError(f"`granularity` must give every factor {factor_names}, got {sorted(granularity)}.")
    from ..data.shapes import attribute_loss_time

    splits = split_indices(len(images), config.split_fractions, config.seed)
    y = {s: labels[idx] for s, idx in splits.items()}
    report: dict[str, Any] = {
        "config": config.to_dict(),
        "dataset": {
            **dict(dataset_info or {}),
            "num_images": len(images),
            "resolution": resolution,
            "splits": {s: len(idx) for s, idx in splits.items()},
            "factors": [
                {
                    "name": n,
                    "num_classes": c,
                    "granularity": None if granularity is None else float(granularity[n]),
                    # DDPM-free proxy (Bayes error of telling the two noisy images apart); see attribute_loss_time
                    "analytic_attribute_loss_time": None
                    if granularity is None
                    else attribute_loss_time(float(granularity[n])),
                }
                for n, c in zip(factor_names, num_classes)
            ],
        },
        "models": {},
    }

    baselines: dict[str, ModelFunctions] = {}
    if config.random_baseline:
        encoder = next((fn.encoder for fn in functions.values() if fn.encoder is not None), None)
        if encoder is not None:
            baselines["random_init"] = random_encoder_functions(encoder, config.seed, config.encode_batch_size)
    if config.pixel_baseline:
        baselines["pixels"] = pixel_functions()

    alignments: dict[str, AlignmentResult] = {}
    for name, fn in {**functions, **baselines}.items():
        if fn.encode_fn is None:  # a bare DDPM: diagnostics only
            report["models"][name] = {"kind": "ddpm", "num_chunks": None, "probe": None, "alignment": None}
            continue
        t0 = time.perf_counter()
        z = _encode(fn, images, config.encode_batch_size)
        feats = {s: z[idx] for s, idx in splits.items()}
        probe = fit_linear_probes(feats, y, "multiclass", num_classes, config=config.probe)
        acc, ap = probe.metrics["accuracy"][0], probe.metrics["average_precision"][0]
        entry: dict[str, Any] = {
            "kind": "baseline" if name in baselines else "model",
            "feature_dim": int(z.shape[1]),
            "num_chunks": None if fn.partition is None else fn.partition.num_chunks,
            "probe": {
                "accuracy": dict(zip(factor_names, acc.tolist())),
                "average_precision": dict(zip(factor_names, ap.tolist())),
                "chance": dict(zip(factor_names, probe.chance.tolist())),
                "best_epoch": dict(zip(factor_names, probe.best_epoch[0].tolist())),
                "mean_accuracy": float(acc.mean()),
                "mean_average_precision": float(ap.nanmean()),
            },
            "alignment": None,
        }
        if fn.partition is not None and fn.partition.num_chunks > 1:
            alignment = timestep_alignment(
                feats,
                y,
                fn.partition,
                factor_names,
                num_classes,
                granularity,
                config.alignment_threshold,
                config.alignment_min_gain,
                config.max_alignment_groups,
                config.probe,
            )
            alignments[name] = alignment
            entry["alignment"] = alignment.to_dict()
        entry["seconds_probes"] = time.perf_counter() - t0
        report["models"][name] = entry

    generators = {n: fn for n, fn in functions.items() if fn.swap_fn is not None}
    ddpm = next(((n, fn) for n, fn in functions.items() if fn.eps_fn is not None), None)
    counterfactuals: dict[str, CounterfactualResult] = {}
    samplers = next(((n, fn) for n, fn in functions.items() if fn.sample_fn is not None), None)
    need_oracle = (
        (config.counterfactual and generators)
        or (config.attribute_loss and ddpm is not None)
        or (config.regeneration and any(fn.regenerate_fn is not None for fn in functions.values()))
        or (config.sample_validity and samplers is not None)
    )
    if need_oracle:
        t0 = time.perf_counter()
        oracle_val = None
        if oracle is None:
            oracle, oracle_val = train_oracle(
                images[splits["train"]],
                y["train"],
                num_classes,
                images[splits["val"]],
                y["val"],
                epochs=config.oracle_epochs,
                seed=config.seed,
            )
        oracle_test = (oracle.predict(images[splits["test"]]) == y["test"]).float().mean(0).tolist()
        report["oracle"] = {
            "val_accuracy": None if oracle_val is None else dict(zip(factor_names, oracle_val)),
            "test_accuracy": dict(zip(factor_names, oracle_test)),
            "seconds": time.perf_counter() - t0,
        }
    if config.attribute_loss and ddpm is not None:
        t0 = time.perf_counter()
        ddpm_name, fn = ddpm
        idx = splits["test"][: config.num_attribute_loss_images]
        curve = attribute_loss_curve(
            fn.eps_fn, oracle, images[idx], labels[idx], fn.alphas_cumprod, config.attribute_loss_timesteps,
            seed=config.seed,
        )  # fmt: skip
        loss_time = dict(zip(factor_names, curve["loss_time"]))
        report["attribute_loss"] = {
            "ddpm_of": ddpm_name,
            "timesteps": curve["timesteps"],
            "level": curve["level"],
            "accuracy": dict(zip(factor_names, curve["accuracy"].tolist())),
            "clean_accuracy": dict(zip(factor_names, curve["clean_accuracy"].tolist())),
            "loss_time": loss_time,
            "seconds": time.perf_counter() - t0,
        }
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
    if config.loss_profile and ddpm is not None:
        report["loss_profile"] = _loss_profile_section(ddpm, functions, images[splits["test"]], config, report)
    if config.sample_validity and samplers is not None:
        t0 = time.perf_counter()
        report["ddpm_samples"] = {
            "ddpm_of": samplers[0],
            "num_inference_steps": config.num_sample_steps,
            **sample_validity(
                samplers[1].sample_fn,
                oracle,
                labels,
                num_classes,
                factor_names,
                config.num_validity_samples,
                config.validity_confidence,
                config.swap_batch_size,
                config.seed,
            ),  # fmt: skip
            "seconds": time.perf_counter() - t0,
        }
    if config.regeneration:
        for name, fn in functions.items():
            if fn.regenerate_fn is None or fn.alphas_cumprod is None or fn.encode_fn is None:
                continue
            t0 = time.perf_counter()
            report["models"][name]["regeneration"] = {
                **regeneration_keep_rates(
                    fn.regenerate_fn,
                    fn.encode_fn,
                    oracle,
                    images[splits["test"]],
                    y["test"],
                    fn.alphas_cumprod,
                    factor_names,
                    config.regeneration_timesteps,
                    config.num_regeneration_images,
                    config.swap_batch_size,
                    config.seed,
                ),  # fmt: skip
                "seconds": time.perf_counter() - t0,
            }
    if config.counterfactual and generators:
        for name, fn in generators.items():
            t0 = time.perf_counter()
            ranges = config.swap_ranges or _default_ranges(fn, config.num_swap_ranges)
            result = counterfactual_score(
                fn.swap_fn,
                oracle,
                images[splits["test"]],
                y["test"],
                ranges,
                factor_names,
                config.num_swap_pairs,
                config.swap_batch_size,
                config.seed,
                oracle_accuracy=oracle_test,
            )
            counterfactuals[name] = result
            report["models"][name]["counterfactual"] = result.to_dict()
            report["models"][name]["seconds_counterfactual"] = time.perf_counter() - t0
            others = [p for p in config.swap_protocols if p != "source_inverted" and p in (fn.swap_protocols or {})]
            if others:
                t0 = time.perf_counter()
                scores = swap_protocol_scores(
                    {p: fn.swap_protocols[p] for p in others}, oracle, images[splits["test"]], y["test"], ranges,
                    factor_names, config.num_swap_pairs, config.swap_batch_size, config.seed, oracle_test,
                )  # fmt: skip
                report["models"][name]["swap_protocols"] = {
                    "default": "source_inverted",  # what the pipeline's `swap` does with its default arguments
                    "scores": {"source_inverted": result.to_dict(), **scores},
                    "seconds": time.perf_counter() - t0,
                }

    if config.reconstruction:
        test_idx = splits["test"][: config.num_reconstruction_images]
        target = (images[test_idx] / 2 + 0.5).clamp(0, 1)
        for name, fn in functions.items():
            if fn.reconstruct_fn is None:
                continue
            t0 = time.perf_counter()
            recon = reconstruct(fn.reconstruct_fn, images[test_idx], config.swap_batch_size)
            metrics: dict[str, Any] = {
                "num_images": len(test_idx),
                "num_inference_steps": config.num_inference_steps,
                **compare_images(target, recon),
            }
            if oracle is not None:
                # does a reconstruction keep every factor? (bounds what a swap can show)
                kept = oracle.predict(recon * 2 - 1) == y["test"][: len(test_idx)]
                metrics["oracle_accuracy"] = dict(zip(factor_names, kept.float().mean(0).tolist()))
            metrics["seconds"] = time.perf_counter() - t0
            report["models"][name]["reconstruction"] = metrics

    report["seconds_total"] = time.perf_counter() - start
    report = json_safe(report)
    # the targets of every partitioned model, against the first single-chunk (PDAE) model when there is one
    entries = report["models"]
    pdae = next((n for n, e in entries.items() if e.get("kind") == "model" and e.get("num_chunks") == 1), None)
    report["targets"] = {
        name: check_targets(report, name, baseline=pdae)
        for name, entry in entries.items()
        if entry.get("kind") == "model" and (entry.get("num_chunks") or 1) > 1
    }
    if output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(report, indent=2))
        if config.plots:
            report["plots"] = write_plots(report, alignments, counterfactuals, out)
            (out / "report.json").write_text(json.dumps(report, indent=2))
    return report


def _loss_profile_section(
    ddpm: tuple[str, ModelFunctions],
    functions: Mapping[str, ModelFunctions],
    images: torch.Tensor,
    config: EvaluationConfig,
    report: dict[str, Any],
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


def _default_ranges(fn: ModelFunctions, n: int) -> list[tuple[int, int]]:
    if fn.partition is not None and fn.partition.stages is not None and len(fn.partition.stages) > 1:
        ends = fn.partition.stages
        return list(zip([0, *ends[:-1]], ends))
    T = fn.partition.num_train_timesteps if fn.partition is not None else 1000
    bounds = [round(T * i / n) for i in range(n + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(n) if bounds[i] < bounds[i + 1]]


# ---------------------------------------------------------------------------------------------------- plots
def plot_alignment(result: AlignmentResult, path: str | Path, title: str = "") -> None:
    """Heatmaps factors × chunks of the prefix and single-chunk probe accuracies (normalised to chance = 0,
    full `z` = 1), with the decodable chunk of each factor marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chance = result.chance[:, None]
    full = result.prefix_accuracy[:, -1:]
    scale = (full - chance).clamp_min(1e-6)
    panels = [
        ("prefix z[:end(i)]", (result.prefix_accuracy - chance) / scale),
        ("single chunk i", (result.single_accuracy - chance) / scale),
    ]
    n_f, k = result.prefix_accuracy.shape
    fig, axes = plt.subplots(1, 2, figsize=(max(6, 0.1 * k + 3) * 2, 0.45 * n_f + 1.8), squeeze=False)
    for ax, (label, values) in zip(axes[0], panels):
        im = ax.imshow(values.numpy(), aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        ax.set_yticks(range(n_f), result.factor_names)
        step = max(1, k // 8)
        ax.set_xticks(range(0, k, step), [str(result.chunk_timesteps[i][0]) for i in range(0, k, step)])
        ax.set_xlabel("chunk (start time-step)")
        ax.set_title(f"{title} — {label}")
        for f, c in enumerate(result.decodable_chunk):
            if c is not None and label.startswith("prefix"):
                ax.plot(c, f, marker="o", color="red", markersize=4)
        fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_flips(result: CounterfactualResult, path: str | Path, title: str = "") -> None:
    """Heatmap factors × swapped time-step ranges of the flip rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_f, n_r = result.flip.shape
    fig, ax = plt.subplots(figsize=(1.2 * n_r + 3, 0.45 * n_f + 1.8))
    im = ax.imshow(result.flip.float().numpy(), aspect="auto", cmap="magma", vmin=0, vmax=1)
    ax.set_yticks(range(n_f), result.factor_names)
    ax.set_xticks(range(n_r), [f"[{lo},{hi})" for lo, hi in result.ranges])
    for f in range(n_f):
        for r in range(n_r):
            v = float(result.flip[f, r])
            if math.isfinite(v):
                ax.text(r, f, f"{v:.2f}", ha="center", va="center", color="white" if v < 0.6 else "black", fontsize=8)
    ax.set_xlabel("swapped time-step range")
    ax.set_title(f"{title} — flip rate (factor follows B)")
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_probes(report: Mapping[str, Any], path: str | Path) -> None:
    """Grouped bars: per-factor linear-probe test accuracy of every model and baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, entry in report["models"].items() if entry.get("probe")]  # a bare DDPM has no features
    factors = [f["name"] for f in report["dataset"]["factors"]]
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(factors) + 2), 3.5))
    for j, name in enumerate(names):
        acc = [report["models"][name]["probe"]["accuracy"][f] or 0.0 for f in factors]
        ax.bar(np.arange(len(factors)) + j * width, acc, width, label=name)
    ax.set_xticks(np.arange(len(factors)) + 0.4 - width / 2, factors, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_plots(
    report: Mapping[str, Any],
    alignments: Mapping[str, AlignmentResult],
    counterfactuals: Mapping[str, CounterfactualResult],
    output_dir: str | Path,
) -> list[str]:
    """Writes every plot of a report into `output_dir`; returns the file names."""
    out = Path(output_dir)
    files = ["probes.png"]
    plot_probes(report, out / files[0])
    section = report.get("loss_profile")
    if section:
        from ..partition import TimestepPartition

        loss_times = (report.get("attribute_loss") or {}).get("loss_time")
        for suffix, key in (("", "partition"), ("_auto", "auto_partition")):
            if section.get(key) or not suffix:
                partition = TimestepPartition.from_dict(section[key]) if section.get(key) else None
                title = "frozen DDPM loss profile" + (" — fitted partition" if suffix else "")
                files.append(f"loss_profile{suffix}.png")
                loss_profile_figure(section, partition, loss_times, title).savefig(out / files[-1])
    for name, result in alignments.items():
        files.append(f"alignment_{name}.png")
        plot_alignment(result, out / files[-1], name)
    for name, result in counterfactuals.items():
        files.append(f"counterfactual_{name}.png")
        plot_flips(result, out / files[-1], name)
    return files


@dataclass(frozen=True)
class Targets:
    r"""
    The bars a time-step-modular model is held to.

    Args:
        min_spearman (`float`, defaults to 0.8): Spearman correlation between each factor's decodable time-step and
            its granularity.
        min_flip (`float`, defaults to 0.7): A swap of some t-range must move the factor to `B`'s class this often…
        max_other_change (`float`, defaults to 0.2): …while every other factor leaves `A`'s class less often than this.
        min_clean_factors (`int`, defaults to 4): Factors that some range must control cleanly (see
            [`clean_control`]), with at least two disjoint ranges doing so.
    """

    min_spearman: float = 0.8
    min_flip: float = 0.7
    max_other_change: float = 0.2
    min_clean_factors: int = 4


def clean_control(
    flip: np.ndarray,
    change: np.ndarray,
    factor_names: Sequence[str],
    ranges: Sequence[Sequence[int]],
    targets: Targets | None = None,
) -> dict[str, Any]:
    r"""
    Which factors a swap controls cleanly. Range `r` *flips* factor `f` when `flip[f, r] ≥ min_flip`; it controls
    each factor it flips cleanly when every factor it does not flip changes in at most `max_other_change` of its
    differing pairs (`change = 1 − stay`; factors without differing pairs are ignored). A group of factors may thus
    move together, as long as nothing else moves.

    Args:
        flip, change (`np.ndarray`): `(F, R)` flip rates and change rates.
        factor_names (`list[str]`): The `F` factors.
        ranges (`list[(lo, hi)]`): The `R` swapped time-step ranges.
        targets ([`Targets`], *optional*): `min_flip` and `max_other_change`.

    Returns:
        `dict` with `by_factor` (factor → the ranges controlling it cleanly), `by_range` (one entry per range: the
        factors it flips, whether that is clean), `count` (factors controlled cleanly by some range) and
        `disjoint_groups` (whether two disjoint ranges each control a factor cleanly, e.g. a fine and a coarse group).
    """
    targets = targets or Targets()
    flip, change = np.asarray(flip, dtype=float), np.asarray(change, dtype=float)
    by_range, by_factor = [], {name: [] for name in factor_names}
    for r, (lo, hi) in enumerate(ranges):
        flipped = [f for f in range(len(factor_names)) if flip[f, r] >= targets.min_flip]  # NaN compares False
        rest = [change[g, r] for g in range(len(factor_names)) if g not in flipped and not math.isnan(change[g, r])]
        worst = max(rest, default=0.0)
        clean = bool(flipped) and bool(worst <= targets.max_other_change)
        worst = float(worst)
        by_range.append(
            {"range": [int(lo), int(hi)], "flips": [factor_names[f] for f in flipped], "worst_other_change": worst,
             "clean": clean}
        )  # fmt: skip
        if clean:
            for f in flipped:
                by_factor[factor_names[f]].append([int(lo), int(hi)])
    clean_ranges = [e["range"] for e in by_range if e["clean"]]
    disjoint = any(a[1] <= b[0] or b[1] <= a[0] for i, a in enumerate(clean_ranges) for b in clean_ranges[i + 1 :])
    return {
        "by_factor": by_factor,
        "by_range": by_range,
        "count": sum(bool(v) for v in by_factor.values()),
        "disjoint_groups": bool(disjoint),
    }


def check_targets(
    report: Mapping[str, Any], model: str, baseline: str | None = None, targets: Targets | None = None
) -> dict[str, Any]:
    r"""
    Checks one model of an [`evaluate_pipeline`] report against [`Targets`] (the numbers come from the report; nothing
    depends on the particular factors).

    Per factor `f`, the swap check passes when some range `r` has `flip[f, r] ≥ min_flip` while every other factor's
    change rate `1 − stay[g, r]` is `< max_other_change`; it reports the first such range, or else the range that
    flips `f` most.

    Args:
        report (`dict`): The report (or parsed `report.json`).
        model (`str`): The model checked (a partitioned model: DiTi).
        baseline (`str`, *optional*): The model whose probe mean accuracy `model` must match or beat (PDAE).
        targets ([`Targets`], *optional*): The bars; [`Targets`]' defaults when not given.

    Returns:
        `dict` with `alignment`, `swaps` (per factor: range, flip, worst other factor and its change rate, `met`),
        `probe` and `all_met`. A check whose inputs are missing from the report has `met: None`.
    """
    targets = targets or Targets()
    models = report.get("models", {})
    if model not in models or (baseline is not None and baseline not in models):
        raise ValueError(
            f"`model`={model!r} / `baseline`={baseline!r} must be in the report's models {sorted(models)}."
        )
    entry = models[model]
    result: dict[str, Any] = {"targets": asdict(targets)}

    spearman = (entry.get("alignment") or {}).get("spearman_timestep_vs_granularity")
    result["alignment"] = {
        "spearman": spearman,
        "met": None if spearman is None else bool(spearman >= targets.min_spearman),
    }

    counterfactual = entry.get("counterfactual")
    if counterfactual:
        flip = np.asarray(counterfactual["flip_rate"], dtype=float)  # (F, R)
        change = 1.0 - np.asarray(counterfactual["stay_rate"], dtype=float)
        names, ranges = counterfactual["factors"], counterfactual["ranges"]
        swaps = {}
        for f, name in enumerate(names):
            other_names = [n for g, n in enumerate(names) if g != f]
            others = np.nan_to_num(np.delete(change, f, axis=0), nan=0.0)  # (F-1, R)
            worst = others.max(0) if other_names else np.zeros(len(ranges))
            passing = (flip[f] >= targets.min_flip) & (worst < targets.max_other_change)  # NaN compares False
            r = int(passing.argmax()) if passing.any() else int(np.nan_to_num(flip[f], nan=-1.0).argmax())
            unknown = math.isnan(flip[f, r])  # no pair differs in this factor
            swaps[name] = {
                "range": list(ranges[r]),
                "flip": None if unknown else float(flip[f, r]),
                "worst_other_factor": other_names[int(others[:, r].argmax())] if other_names else None,
                "worst_other_change": float(worst[r]),
                "met": None if unknown else bool(passing[r]),
            }
        result["swaps"] = swaps
        result["swaps_met"] = sum(bool(s["met"]) for s in swaps.values())
        control = clean_control(flip, change, names, ranges, targets)
        control["met"] = bool(control["count"] >= targets.min_clean_factors and control["disjoint_groups"])
        result["clean_control"] = control
    else:
        result["swaps"], result["swaps_met"], result["clean_control"] = None, None, None

    if baseline is not None:
        ours = (entry.get("probe") or {}).get("mean_accuracy")
        theirs = (models[baseline].get("probe") or {}).get("mean_accuracy")
        met = None if ours is None or theirs is None else bool(ours >= theirs)
        result["probe"] = {"mean_accuracy": ours, "baseline": baseline, "baseline_mean_accuracy": theirs, "met": met}
    checks = [result["alignment"]["met"], *(s["met"] for s in (result["swaps"] or {}).values())]
    if result["clean_control"] is not None:
        checks.append(result["clean_control"]["met"])
    if baseline is not None:
        checks.append(result["probe"]["met"])
    result["all_met"] = None if any(c is None for c in checks) else all(checks)
    return result
