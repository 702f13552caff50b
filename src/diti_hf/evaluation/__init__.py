"""Evaluation of time-step-modular representations: linear probes, time-step alignment, counterfactual score,
reconstruction, the CelebA/LFW protocols, the generation-control diagnostics, the report and one benchmark run of the
front ends ([`run_benchmark`]).

The public names load on first use (PEP 562), as those of `diti_hf` do: the protocol names of `.names` are
torch-free, so that `diti-hf evaluate --help` lists them without importing torch.
"""

from __future__ import annotations

from .._lazy import lazy_exports

# public name → the submodule that defines it
_LAZY = {
    "ModelFunctions": "adapters",
    "encoder_functions": "adapters",
    "pipeline_functions": "adapters",
    "pixel_functions": "adapters",
    "random_encoder_functions": "adapters",
    "AlignmentResult": "alignment",
    "chunk_masks": "alignment",
    "decodable_chunks": "alignment",
    "timestep_alignment": "alignment",
    "attribute_loss_curve": "attribute_loss",
    "benchmark_arguments": "benchmark",
    "is_ddpm_folder": "benchmark",
    "load_model": "benchmark",
    "run_benchmark": "benchmark",
    "EvaluationConfig": "config",
    "CounterfactualResult": "counterfactual",
    "OracleClassifier": "counterfactual",
    "counterfactual_score": "counterfactual",
    "flip_rates": "counterfactual",
    "summarise_flips": "counterfactual",
    "train_oracle": "counterfactual",
    "dataset_arrays": "dataset",
    "PROTOCOLS": "names",
    "write_plots": "plots",
    "ProbeConfig": "probes",
    "ProbeResult": "probes",
    "accuracy": "probes",
    "average_precision": "probes",
    "fit_linear_probes": "probes",
    "pearson_r": "probes",
    "spearman_r": "probes",
    "split_indices": "probes",
    "attribute_protocol": "protocols",
    "celeba_protocol": "protocols",
    "lfw_protocol": "protocols",
    "load_attribute_splits": "protocols",
    "preprocess_images": "protocols",
    "compare_images": "reconstruction",
    "mse": "reconstruction",
    "psnr": "reconstruction",
    "reconstruct": "reconstruction",
    "reconstruction_metrics": "reconstruction",
    "ssim": "reconstruction",
    "evaluate_pipeline": "suite",
    "json_safe": "suite",
    "Targets": "targets",
    "check_targets": "targets",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
