"""The evaluation suite on a labelled-factor dataset: probes, time-step alignment, counterfactuals, reconstruction,
the generation-control diagnostics, with baselines, written as a JSON report and plots."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .adapters import ModelFunctions, ddpm_functions, encoder_functions, pipeline_functions
from .alignment import AlignmentResult
from .config import DEFAULT_SIZES, EvaluationConfig
from .counterfactual import CounterfactualResult

# the steps of evaluate_pipeline: private to the suite, which alone runs them
from .dataset import _dataset_section, _suite_data, _SuiteData
from .feature_sections import _feature_sections
from .generation_sections import (
    _attribute_loss_section,
    _counterfactual_sections,
    _loss_profile_section,
    _needs_oracle,
    _oracle_section,
    _reconstruction_section,
    _record_loss_times,
    _regeneration_section,
    _sample_validity_section,
)
from .plots import write_plots
from .targets import check_targets


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
    counterfactuals = _run_generation_sections(report, alignments, functions, oracle, data, config)
    report["seconds_total"] = time.perf_counter() - start
    report = json_safe(report)
    report["targets"] = _targets_section(report)
    if output_dir is not None:
        _write_report(report, alignments, counterfactuals, Path(output_dir), config.plots)
    return report


def _run_generation_sections(
    report: dict[str, Any],
    alignments: Mapping[str, AlignmentResult],
    functions: Mapping[str, ModelFunctions],
    oracle: Any,
    data: _SuiteData,
    config: EvaluationConfig,
) -> dict[str, CounterfactualResult]:
    """
    Adds to `report` the sections that generate or noise images (those of the first DDPM and sampler, and of each
    model that can regenerate, swap or reconstruct), training the oracle first when one of them reads with it.

    Returns:
        `dict[str, CounterfactualResult]`: name → counterfactual score of the models that can swap (for the plots).
    """
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
    return counterfactuals


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
