"""What `z` really controls when a model generates: regeneration keep-rates, swap protocols and the frozen DDPM's
sample validity, each read by the ground-truth oracle.

A swap can fail for two different reasons: the representation does not hold the attribute in the swapped chunks,
or the generator does not use `z` for it (the starting point `x_T` already fixes it). These diagnostics tell the two
apart. Nothing here depends on the particular factors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from .counterfactual import counterfactual_score, sample_pairs
from .names import SWAP_PROTOCOLS as SWAP_PROTOCOLS  # defined torch-free (for the CLI's --help); importable here too

# regenerate_fn(z or None, x_t, t) -> images in [0, 1]: generation from x_t at time-step t (None: the DDPM alone)
RegenerateFn = Callable[[torch.Tensor | None, torch.Tensor, int], torch.Tensor]
# sample_fn(num_images, seed) -> unconditional samples of the frozen DDPM in [0, 1]
SampleFn = Callable[[int, int], torch.Tensor]


def noise_to(images: torch.Tensor, timestep: int, alphas_cumprod: torch.Tensor, seed: int) -> torch.Tensor:
    """The forward process `x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε` with seeded ε."""
    a = torch.as_tensor(alphas_cumprod, dtype=torch.float64)[int(timestep)]
    eps = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    return (a.sqrt() * images.double() + (1 - a).sqrt() * eps.double()).float()


def _differing_rate(pred: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per factor, among rows where `mask` holds, the fraction with `pred == labels` (NaN when none)."""
    hits = ((pred == labels) & mask).double().sum(0)
    return hits / mask.double().sum(0)


@torch.no_grad()
def regeneration_keep_rates(
    regenerate_fn: RegenerateFn,
    encode_fn: Callable[[torch.Tensor], torch.Tensor],
    oracle: Any,
    images: torch.Tensor,
    labels: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    factor_names: Sequence[str],
    timesteps: Sequence[int] = (250, 500, 750, 999),
    num_images: int = 48,
    batch_size: int = 16,
    seed: int = 0,
) -> dict[str, Any]:
    r"""
    Noise each image `A` to `t` (forward process), then regenerate from `x_t` three ways and read the factors:
    with `A`'s own `z` (`keep_own`: the factor is `A`'s), with the DDPM alone (`keep_ddpm`: what `x_t` keeps by
    itself — the noising's own survival), and with the `z` of another image `B` (`follow_other`: among pairs
    differing in the factor, it is `B`'s — the factor follows `z`, not `x_t`).

    A generator that ignores `z` has `keep_own == keep_ddpm` and `follow_other ≈ 0`; one driven by `z` alone has
    `keep_own == follow_other == 1` at every `t`.

    Args:
        regenerate_fn (`Callable`): `(z or None, x_t, t) → images in [0, 1]`.
        encode_fn (`Callable`): `images in [-1, 1] → z`.
        oracle: Factor classifier with `predict(images in [-1, 1]) -> (N, F)`.
        images (`torch.Tensor`): `(N, C, H, W)` pool in [-1, 1] (held out from oracle training).
        labels (`torch.Tensor`): `(N, F)` factors.
        alphas_cumprod (`torch.Tensor`): `(T,)` ᾱ of the DDPM's schedule.
        factor_names (`list[str]`): Names of the `F` factors.
        timesteps (`Sequence[int]`, defaults to 250, 500, 750, 999): Noise levels.
        num_images (`int`, defaults to 48): Images `A` (each paired with a random `B`).
        batch_size (`int`, defaults to 16): Images per generation call.
        seed (`int`, defaults to 0): Seed of the pairs and of the noise.

    Returns:
        `dict` with `timesteps`, `factors` and `keep_own`, `keep_ddpm`, `follow_other`, each
        `{factor: [rate per t]}`.
    """
    labels = torch.as_tensor(labels).long()
    timesteps = [int(t) for t in timesteps]
    T = len(alphas_cumprod)
    if not timesteps or any(not 0 <= t < T for t in timesteps):
        raise ValueError(f"`timesteps` must be a non-empty list in [0, {T}), got {timesteps}.")
    idx_a, idx_b = sample_pairs(images.shape[0], num_images, seed)
    z_a = torch.cat([encode_fn(images[idx_a[i : i + batch_size]]) for i in range(0, num_images, batch_size)])
    z_b = torch.cat([encode_fn(images[idx_b[i : i + batch_size]]) for i in range(0, num_images, batch_size)])
    la, lb = labels[idx_a], labels[idx_b]
    differ = la != lb
    rates: dict[str, list[torch.Tensor]] = {"keep_own": [], "keep_ddpm": [], "follow_other": []}
    for j, t in enumerate(timesteps):
        x_t = noise_to(images[idx_a], t, alphas_cumprod, seed + 1 + j)
        reads = {}
        for key, z in (("keep_own", z_a), ("keep_ddpm", None), ("follow_other", z_b)):
            out = [
                regenerate_fn(None if z is None else z[i : i + batch_size], x_t[i : i + batch_size], t)
                for i in range(0, num_images, batch_size)
            ]
            reads[key] = oracle.predict(torch.cat([torch.as_tensor(o).float().cpu() for o in out]) * 2 - 1)
        rates["keep_own"].append((reads["keep_own"] == la).double().mean(0))
        rates["keep_ddpm"].append((reads["keep_ddpm"] == la).double().mean(0))
        rates["follow_other"].append(_differing_rate(reads["follow_other"], lb, differ))
    return {
        "timesteps": timesteps,
        "factors": list(factor_names),
        "num_images": num_images,
        **{
            key: {name: torch.stack(v, 1)[f].tolist() for f, name in enumerate(factor_names)}
            for key, v in rates.items()
        },
    }


def swap_protocol_scores(
    swap_fns: dict[str, Callable],
    oracle: Any,
    images: torch.Tensor,
    labels: torch.Tensor,
    ranges: Sequence[tuple[int, int]],
    factor_names: Sequence[str],
    num_pairs: int = 64,
    batch_size: int = 16,
    seed: int = 0,
    oracle_accuracy: list[float] | None = None,
) -> dict[str, dict]:
    r"""
    The counterfactual score of the same pairs and ranges under each swap protocol (see `SWAP_PROTOCOLS`).

    Args:
        swap_fns (`dict[str, Callable]`): Protocol name → `swap_fn(source, target, ranges)` (see
            [`~diti_hf.evaluation.counterfactual_score`]).
        Other arguments: as [`~diti_hf.evaluation.counterfactual_score`].

    Returns:
        `dict`: protocol → the counterfactual result's dict (flip/stay matrices, targeted flip rate, leakage).
    """
    return {
        name: counterfactual_score(
            fn,
            oracle,
            images,
            labels,
            ranges,
            factor_names,
            num_pairs,
            batch_size,
            seed,
            oracle_accuracy=oracle_accuracy,
        ).to_dict()  # fmt: skip
        for name, fn in swap_fns.items()
    }


@torch.no_grad()
def sample_validity(
    sample_fn: SampleFn,
    oracle: Any,
    labels: torch.Tensor,
    num_classes: Sequence[int],
    factor_names: Sequence[str],
    num_samples: int = 64,
    confidence: float = 0.9,
    batch_size: int = 32,
    seed: int = 0,
    reference_images: torch.Tensor | None = None,
) -> dict[str, Any]:
    r"""
    Unconditional samples of the frozen DDPM read by the oracle: the share whose every factor is read with
    probability ≥ `confidence` (`valid_fraction`), each factor's confident share, and each factor's class histogram
    next to the data's (`max_frequency_gap`: the largest absolute difference of class frequencies).

    With `reference_images` (held-out real images), the same reads of them (`data_valid_fraction`, each factor's
    `data_confident_fraction`): the ceiling the oracle allows. A sample score far above the ceiling's complement
    cannot be reached by any generator, and a low ceiling means the oracle needs more training images.

    Args:
        sample_fn (`Callable`): `(num_images, seed) → images in [0, 1]`.
        oracle: Factor classifier with `predict_proba(images in [-1, 1]) -> list of (N, C_f)` probabilities.
        labels (`torch.Tensor`): `(N, F)` factors of the data (for the reference histogram).
        num_classes (`list[int]`): Classes per factor.
        factor_names (`list[str]`): Names of the factors.
        num_samples (`int`, defaults to 64): Samples drawn.
        confidence (`float`, defaults to 0.9): Probability that counts as a confident read.
        batch_size (`int`, defaults to 32): Samples per `sample_fn` call.
        seed (`int`, defaults to 0): Seed of the first batch (batch `i` uses `seed + i`).
        reference_images (`torch.Tensor`, *optional*): `(N, C, H, W)` real images in [-1, 1], read the same way.
    """
    if not 0.0 < confidence <= 1.0:
        raise ValueError(f"`confidence` must lie in (0, 1], got {confidence}.")
    if num_samples < 1:
        raise ValueError(f"`num_samples` must be >= 1, got {num_samples}.")
    samples = torch.cat(
        [
            torch.as_tensor(sample_fn(min(batch_size, num_samples - i), seed + k)).float().cpu()
            for k, i in enumerate(range(0, num_samples, batch_size))
        ]
    )
    probs = oracle.predict_proba(samples * 2 - 1)
    confident = _confident_reads(probs, confidence)
    reference = (
        None if reference_images is None else _confident_reads(oracle.predict_proba(reference_images), confidence)
    )
    labels = torch.as_tensor(labels).long()
    per_factor = {}
    for f, (name, n) in enumerate(zip(factor_names, num_classes)):
        sampled = torch.bincount(probs[f].argmax(1), minlength=n).double() / len(samples)
        data = torch.bincount(labels[:, f], minlength=n).double() / len(labels)
        per_factor[name] = {
            "confident_fraction": float(confident[:, f].double().mean()),
            "sample_frequency": sampled.tolist(),
            "data_frequency": data.tolist(),
            "max_frequency_gap": float((sampled - data).abs().max()),
        }
        if reference is not None:
            per_factor[name]["data_confident_fraction"] = float(reference[:, f].double().mean())
    result = {
        "num_samples": int(len(samples)),
        "confidence": confidence,
        "valid_fraction": float(confident.all(1).double().mean()),
        "factors": per_factor,
    }
    if reference is not None:
        result["num_reference_images"] = int(len(reference))
        result["data_valid_fraction"] = float(reference.all(1).double().mean())
    return result


def _confident_reads(probs: Sequence[torch.Tensor], confidence: float) -> torch.Tensor:
    """`(N, F)`: whether each factor of each image is read with probability ≥ `confidence`."""
    return torch.stack([p.max(1).values for p in probs], 1) >= confidence
