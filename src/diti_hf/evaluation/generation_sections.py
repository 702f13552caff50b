"""The report sections of the evaluation suite that generate or noise images and read them with the factor oracle:
the oracle itself, attribute-loss times, the DDPM's loss profile and sample validity, regeneration keep-rates,
counterfactual swaps (with the other swap protocols) and reconstruction."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..partition import partition_from_profile
from ..sampling import DiffusionCoefficients
from .adapters import ModelFunctions
from .alignment import AlignmentResult
from .attribute_loss import attribute_loss_curve
from .config import EvaluationConfig
from .control import regeneration_keep_rates, sample_validity, swap_protocol_scores
from .counterfactual import CounterfactualResult, counterfactual_score, train_oracle
from .dataset import _SuiteData
from .loss_profile import loss_profile
from .probes import spearman_r
from .reconstruction import compare_images, reconstruct

logger = logging.getLogger(__name__)


# Below this held-out accuracy the oracle's reads of a factor are too noisy to score generated images by.
RELIABLE_ORACLE_ACCURACY = 0.95


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
