"""The report sections of the evaluation suite on frozen features: linear probes, time-step alignment and the
disentanglement metrics of every model and baseline."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from .adapters import ModelFunctions, pixel_functions, random_encoder_functions
from .alignment import AlignmentResult, timestep_alignment
from .config import EvaluationConfig
from .dataset import _SuiteData
from .disentanglement import dci_from_importance, dci_importance, factor_vae_score, importance_by_group, mig, sap
from .probes import fit_linear_probes


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
