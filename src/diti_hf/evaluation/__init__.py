"""Evaluation of time-step-modular representations: linear probes, time-step alignment, counterfactual score,
reconstruction, the CelebA/LFW protocols, the generation-control diagnostics, the report and one benchmark run of the
front ends ([`run_benchmark`])."""

from .adapters import (
    ModelFunctions,
    encoder_functions,
    pipeline_functions,
    pixel_functions,
    random_encoder_functions,
)
from .alignment import AlignmentResult, chunk_masks, decodable_chunks, timestep_alignment
from .attribute_loss import attribute_loss_curve
from .benchmark import PROTOCOLS, benchmark_arguments, is_ddpm_folder, load_model, run_benchmark
from .config import EvaluationConfig
from .counterfactual import (
    CounterfactualResult,
    OracleClassifier,
    counterfactual_score,
    flip_rates,
    summarise_flips,
    train_oracle,
)
from .dataset import dataset_arrays
from .plots import write_plots
from .probes import (
    ProbeConfig,
    ProbeResult,
    accuracy,
    average_precision,
    fit_linear_probes,
    pearson_r,
    spearman_r,
    split_indices,
)
from .protocols import attribute_protocol, celeba_protocol, lfw_protocol, load_attribute_splits, preprocess_images
from .reconstruction import compare_images, mse, psnr, reconstruct, reconstruction_metrics, ssim
from .suite import evaluate_pipeline, json_safe
from .targets import Targets, check_targets

__all__ = [
    "AlignmentResult",
    "CounterfactualResult",
    "EvaluationConfig",
    "ModelFunctions",
    "OracleClassifier",
    "PROTOCOLS",
    "ProbeConfig",
    "ProbeResult",
    "accuracy",
    "attribute_loss_curve",
    "Targets",
    "attribute_protocol",
    "average_precision",
    "benchmark_arguments",
    "celeba_protocol",
    "check_targets",
    "chunk_masks",
    "compare_images",
    "counterfactual_score",
    "dataset_arrays",
    "decodable_chunks",
    "encoder_functions",
    "evaluate_pipeline",
    "fit_linear_probes",
    "is_ddpm_folder",
    "json_safe",
    "flip_rates",
    "lfw_protocol",
    "load_attribute_splits",
    "load_model",
    "mse",
    "pearson_r",
    "pipeline_functions",
    "pixel_functions",
    "preprocess_images",
    "psnr",
    "random_encoder_functions",
    "reconstruct",
    "reconstruction_metrics",
    "run_benchmark",
    "spearman_r",
    "split_indices",
    "ssim",
    "summarise_flips",
    "timestep_alignment",
    "train_oracle",
    "write_plots",
]
