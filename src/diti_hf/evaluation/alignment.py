"""Time-step alignment: which chunks of `z` (hence which diffusion time-steps) carry which generative factor.

For every factor, linear probes read it from the prefix `z[:end(i)]` (the chunks active at the time-steps of chunk
`i`, what the decoder sees there) and from the single chunk `z[end(i-1):end(i)]`. The chunk where the prefix
accuracy first reaches most of the full-`z` accuracy is where the factor "becomes decodable"; a time-step-modular
representation puts fine factors (small pixel change) in early chunks and coarse ones in late chunks, so that
chunk's time-step correlates positively with the factor's granularity (Spearman).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from ..partition import TimestepPartition
from .probes import ProbeConfig, fit_linear_probes, spearman_r


def chunk_masks(chunk_end_dims: Sequence[int], kind: str = "prefix") -> torch.Tensor:
    r"""
    Boolean masks over `z`'s dims, one row per chunk.

    Args:
        chunk_end_dims (`Sequence[int]`): Increasing end dims `end(i)` of the chunks (`end(k-1) = d`).
        kind (`str`, defaults to `"prefix"`): `"prefix"` — dims `[0, end(i))`; `"single"` — dims
            `[end(i-1), end(i))`.

    Returns:
        `torch.Tensor`: `(k, d)` bool.
    """
    ends = [int(e) for e in chunk_end_dims]
    if not ends or ends[0] < 1 or any(b <= a for a, b in zip(ends, ends[1:])):
        raise ValueError(f"`chunk_end_dims` must be strictly increasing positive ints, got {list(chunk_end_dims)}.")
    if kind not in ("prefix", "single"):
        raise ValueError(f"`kind` must be 'prefix' or 'single', got {kind!r}.")
    dims = torch.arange(ends[-1])[None, :]
    hi = torch.tensor(ends)[:, None]
    lo = torch.zeros_like(hi) if kind == "prefix" else torch.tensor([0, *ends[:-1]])[:, None]
    return (dims >= lo) & (dims < hi)


def group_chunks(partition: TimestepPartition, max_groups: int | None) -> tuple[list[int], list[tuple[int, int]]]:
    r"""
    Chunk-group boundaries for the alignment probes: every chunk, or at most `max_groups` consecutive groups of
    (nearly) equal numbers of chunks (to bound the cost with many chunks).

    Returns:
        `(end_dims, timesteps)`: end dim and half-open time-step range of each group.
    """
    k = partition.num_chunks
    n = k if max_groups is None else max(1, min(int(max_groups), k))
    bounds = [round(k * (g + 1) / n) for g in range(n)]
    starts = [0, *bounds[:-1]]
    end_dims = [partition.chunk_end_dims[b - 1] for b in bounds]
    timesteps = [
        (partition.chunk_timesteps(a)[0], partition.chunk_timesteps(b - 1)[1]) for a, b in zip(starts, bounds)
    ]
    return end_dims, timesteps


@dataclass
class AlignmentResult:
    r"""
    Args:
        factor_names (`list[str]`): Factors, rows of the matrices.
        chunk_timesteps (`list[tuple[int, int]]`): Time-step range of each chunk (group), columns of the matrices.
        prefix_accuracy (`torch.Tensor`): `(F, k)` test accuracy of the probe on `z[:end(i)]`.
        single_accuracy (`torch.Tensor`): `(F, k)` test accuracy of the probe on chunk `i` alone.
        chance (`torch.Tensor`): `(F,)` majority-class test accuracy.
        decodable_chunk (`list[int | None]`): First chunk whose prefix reaches `threshold` of the full-`z` gain over
            chance (`None`: the factor is not decodable from `z`).
        decodable_timestep (`list[float | None]`): Mid time-step of that chunk.
        granularity (`list[float] | None`): The factors' granularities, if given.
        spearman (`float | None`): Spearman correlation of decodable time-step and granularity over the decodable
            factors (`None` with fewer than 3 of them, or when either side is constant).
    """

    factor_names: list[str]
    chunk_timesteps: list[tuple[int, int]]
    prefix_accuracy: torch.Tensor
    single_accuracy: torch.Tensor
    chance: torch.Tensor
    decodable_chunk: list[int | None]
    decodable_timestep: list[float | None]
    granularity: list[float] | None = None
    spearman: float | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "factors": self.factor_names,
            "chunk_timesteps": [list(t) for t in self.chunk_timesteps],
            "prefix_accuracy": self.prefix_accuracy.tolist(),
            "single_accuracy": self.single_accuracy.tolist(),
            "chance": self.chance.tolist(),
            "decodable_chunk": dict(zip(self.factor_names, self.decodable_chunk)),
            "decodable_timestep": dict(zip(self.factor_names, self.decodable_timestep)),
            "granularity": None if self.granularity is None else dict(zip(self.factor_names, self.granularity)),
            "spearman_timestep_vs_granularity": self.spearman,
            **self.extra,
        }


def decodable_chunks(
    prefix_accuracy: torch.Tensor, chance: torch.Tensor, threshold: float = 0.9, min_gain: float = 0.05
) -> list[int | None]:
    r"""
    For each factor (row), the first column whose accuracy gain over chance reaches `threshold` × the gain of the
    last column (the full `z`); `None` when the full-`z` gain is below `min_gain` (the factor is not decodable).
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"`threshold` must lie in (0, 1], got {threshold}.")
    if prefix_accuracy.ndim != 2 or chance.shape != prefix_accuracy.shape[:1]:
        raise ValueError(
            f"`prefix_accuracy` must be (F, k) and `chance` (F,), got {tuple(prefix_accuracy.shape)} and "
            f"{tuple(chance.shape)}."
        )
    result: list[int | None] = []
    for acc, c in zip(prefix_accuracy.double(), chance.double()):
        full_gain = float(acc[-1] - c)
        if full_gain < min_gain:
            result.append(None)
            continue
        reached = torch.nonzero(acc - c >= threshold * full_gain - 1e-12)
        result.append(int(reached[0]))
    return result


def timestep_alignment(
    features: Mapping[str, torch.Tensor],
    labels: Mapping[str, torch.Tensor],
    partition: TimestepPartition,
    factor_names: Sequence[str],
    num_classes: Sequence[int] | None = None,
    granularity: Mapping[str, float] | None = None,
    threshold: float = 0.9,
    min_gain: float = 0.05,
    max_groups: int | None = 64,
    config: ProbeConfig | None = None,
) -> AlignmentResult:
    r"""
    Prefix and single-chunk probes of every factor, the chunk where each factor becomes decodable, and the Spearman
    correlation of that chunk's time-step with the factor's granularity.

    Args:
        features (`dict[str, torch.Tensor]`): `{"train", "val", "test"}` → `(N, d)` features `z`.
        labels (`dict[str, torch.Tensor]`): the same splits → `(N, F)` class indices.
        partition ([`TimestepPartition`]): The partition of `z` (its `latent_dim` must equal `d`).
        factor_names (`list[str]`): Names of the `F` factors.
        num_classes (`list[int]`, *optional*): Classes per factor.
        granularity (`dict[str, float]`, *optional*): Granularity of each factor (e.g. from
            [`~diti_hf.data.shapes.factor_granularity`]); needed for the Spearman correlation.
        threshold (`float`, defaults to 0.9): Fraction of the full-`z` accuracy gain that counts as decodable.
        min_gain (`float`, defaults to 0.05): Minimum full-`z` accuracy gain over chance for a factor to count.
        max_groups (`int`, *optional*, defaults to 64): Probe at most this many consecutive chunk groups (`None`:
            every chunk).
        config ([`ProbeConfig`], *optional*): Probe training.

    Returns:
        [`AlignmentResult`]
    """
    if not isinstance(partition, TimestepPartition):
        raise TypeError(f"`partition` must be a TimestepPartition, got {type(partition).__name__}.")
    d = torch.as_tensor(features["train"]).shape[1]
    if partition.latent_dim != d:
        raise ValueError(f"`partition.latent_dim`={partition.latent_dim} differs from the feature width d={d}.")
    factor_names = list(factor_names)
    n_factors = torch.as_tensor(labels["train"]).shape[1]
    if len(factor_names) != n_factors:
        raise ValueError(f"`factor_names` has {len(factor_names)} names for {n_factors} label columns.")
    if granularity is not None:
        missing = [n for n in factor_names if n not in granularity]
        if missing:
            raise ValueError(f"`granularity` lacks the factors {missing}.")
    end_dims, timesteps = group_chunks(partition, max_groups)
    k = len(end_dims)
    masks = torch.cat([chunk_masks(end_dims, "prefix"), chunk_masks(end_dims, "single")])
    result = fit_linear_probes(features, labels, "multiclass", num_classes, masks, config)
    acc = result.metrics["accuracy"].T  # (F, 2k)
    prefix, single = acc[:, :k].float(), acc[:, k:].float()
    chance = result.chance.float()
    chunks = decodable_chunks(prefix, chance, threshold, min_gain)
    mid = [None if c is None else (timesteps[c][0] + timesteps[c][1] - 1) / 2 for c in chunks]
    spearman = None
    grans = None if granularity is None else [float(granularity[n]) for n in factor_names]
    if grans is not None:
        pairs = [(t, g) for t, g in zip(mid, grans) if t is not None]
        if len(pairs) >= 3:
            rho = spearman_r([p[0] for p in pairs], [p[1] for p in pairs])
            spearman = None if math.isnan(rho) else rho
    return AlignmentResult(
        factor_names=factor_names,
        chunk_timesteps=timesteps,
        prefix_accuracy=prefix,
        single_accuracy=single,
        chance=chance,
        decodable_chunk=chunks,
        decodable_timestep=mid,
        granularity=grans,
        spearman=spearman,
        extra={"threshold": threshold, "min_gain": min_gain, "chunk_end_dims": end_dims},
    )
