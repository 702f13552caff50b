"""The time-step partition of DiTi (docs/method.md §5): which chunk of `z` is tied to which diffusion time-steps."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

MASK_KINDS = ("cumulative", "own", "receding")
# What the decoder sees at time t: every chunk up to t's (the official DiTi) or t's chunk alone.
MASK_MODES = ("cumulative", "interval")


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _proportional(weights: Sequence[float], total: int, minimum: Sequence[int]) -> list[int]:
    """
    Integers summing to `total`, proportional to `weights` but never below `minimum`: entries whose share falls
    short are pinned at their minimum and the rest is re-shared among the others; largest-remainder rounding.
    """
    if sum(minimum) > total:
        raise ValueError(f"cannot give {sum(minimum)} minimum dims out of {total}.")
    pinned: set[int] = set()
    while True:
        free = [i for i in range(len(weights)) if i not in pinned]
        budget = total - sum(minimum[i] for i in pinned)
        weight_sum = sum(weights[i] for i in free)
        shares = {i: budget * weights[i] / weight_sum if weight_sum > 0 else budget / len(free) for i in free}
        short = {i for i in free if shares[i] < minimum[i]}
        if not short:
            break
        pinned |= short
    exact = [float(minimum[i]) if i in pinned else shares[i] for i in range(len(weights))]
    out = [int(x) for x in exact]
    # hand out what flooring left, largest fractional part first (index breaks ties: deterministic)
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - out[i]), i))
    for i in order[: total - sum(out)]:
        out[i] += 1
    return out


@dataclass(frozen=True)
class TimestepRange:
    r"""
    What a requested range selects of `z` (see [`TimestepPartition.resolve_range`]).

    Args:
        requested (`tuple[int, int]`, *optional*): The time-step range `(lo, hi)` as asked for; `None` for a chunk
            range.
        chunks (`tuple[int, int]`): Half-open range `[i, j)` of the chunks it selects (`i == j`: none).
        dims (`tuple[int, int]`): Half-open range `[start, end)` of the dims of `z` those chunks own (`(0, 0)`: none).
        timesteps (`tuple[int, int]`): Half-open time-steps `[lo, hi)` of those chunks, what an edit of the range
            acts on (the requested range itself when it selects nothing).
    """

    requested: tuple[int, int] | None
    chunks: tuple[int, int]
    dims: tuple[int, int]
    timesteps: tuple[int, int]

    @property
    def empty(self) -> bool:
        """Whether the range selects no chunk (an edit of it changes nothing)."""
        return self.chunks[0] == self.chunks[1]

    @property
    def widened(self) -> bool:
        """Whether a requested time-step range acts on more time-steps than asked for (whole chunks)."""
        return self.requested is not None and not self.empty and self.timesteps != self.requested


class TimestepPartition:
    r"""
    Splits a latent of `latent_dim` dims into `num_chunks` ordered chunks, chunk `i` tied to the time-steps
    `t` with `floor(t * num_chunks / num_train_timesteps) == i`.

    With `mask_mode="cumulative"` (the official DiTi) the decoder sees at time `t` the cumulative mask of chunk
    `idx(t)`: every dim of chunks `0..idx(t)`. Early chunks (small t) therefore carry fine attributes, late chunks
    coarse ones. With `mask_mode="interval"` it sees chunk `idx(t)` alone, so each chunk acts only inside its own
    time-step interval: the late chunks must carry what is formed at large `t`, and early chunks cannot steer it.

    Args:
        latent_dim (`int`): Width `d` of the representation `z`.
        num_chunks (`int`): Number of chunks `k` (k = 1 is PDAE: one chunk covering every dim and time-step).
        num_train_timesteps (`int`, defaults to 1000): Number of diffusion time-steps `T`.
        stages (`Sequence[int]`, *optional*): Strictly increasing stage end-times, the last equal to `T`. With
            `dims_per_stage`, gives the staged partition; without both, dims are split uniformly.
        dims_per_stage (`Sequence[int]`, *optional*): Dims owned by each stage; they sum to `latent_dim`.
        mask_mode (`str`, defaults to `"cumulative"`): `"cumulative"` or `"interval"` (see above).

    Examples:
    ```py
    >>> from diti_hf import TimestepPartition
    >>> p = TimestepPartition(latent_dim=512, num_chunks=64)
    >>> p.chunk_of(417), p.chunk_dims(26), p.chunk_timesteps(26)
    (26, (208, 216), (407, 422))
    ```
    """

    def __init__(
        self,
        latent_dim: int,
        num_chunks: int,
        num_train_timesteps: int = 1000,
        stages: Sequence[int] | None = None,
        dims_per_stage: Sequence[int] | None = None,
        mask_mode: str = "cumulative",
    ):
        self.latent_dim = int(latent_dim)
        self.num_chunks = int(num_chunks)
        self.num_train_timesteps = int(num_train_timesteps)
        self.stages = None if stages is None else [int(s) for s in stages]
        self.dims_per_stage = None if dims_per_stage is None else [int(s) for s in dims_per_stage]
        self.mask_mode = mask_mode
        self._validate()
        self.chunk_end_dims = self._compute_chunk_end_dims()
        self._tables: dict[tuple[str, torch.device], torch.Tensor] = {}

    # ------------------------------------------------------------------ construction
    def _validate(self) -> None:
        d, k, T = self.latent_dim, self.num_chunks, self.num_train_timesteps
        if self.mask_mode not in MASK_MODES:
            raise ValueError(f"`mask_mode` must be one of {MASK_MODES}, got {self.mask_mode!r}.")
        if T < 1:
            raise ValueError(f"`num_train_timesteps` must be >= 1, got {T}.")
        if d < 1:
            raise ValueError(f"`latent_dim` must be >= 1, got {d}.")
        if not 1 <= k <= d:
            raise ValueError(f"`num_chunks` must be in [1, latent_dim={d}], got {k}.")
        if k > T:
            raise ValueError(f"`num_chunks` must be <= num_train_timesteps={T}, got {k}.")
        if (self.stages is None) != (self.dims_per_stage is None):
            raise ValueError(
                f"`stages` and `dims_per_stage` must be given together, got stages={self.stages} and "
                f"dims_per_stage={self.dims_per_stage}."
            )
        if self.stages is None:
            return
        stages, dims = self.stages, self.dims_per_stage
        if len(stages) == 0 or len(stages) != len(dims):
            raise ValueError(
                f"`stages` ({stages}) and `dims_per_stage` ({dims}) must be non-empty and of the same length."
            )
        if any(b <= a for a, b in zip([0, *stages], stages)):
            raise ValueError(f"`stages` must be strictly increasing positive end-times, got {stages}.")
        if stages[-1] != T:
            raise ValueError(f"`stages` must end at num_train_timesteps={T}, got {stages}.")
        if any(n < 1 for n in dims):
            raise ValueError(f"`dims_per_stage` entries must be >= 1, got {dims}.")
        if sum(dims) != d:
            raise ValueError(f"`dims_per_stage` must sum to latent_dim={d}, got {dims} (sum {sum(dims)}).")
        counts = self._chunks_per_stage()
        for s, (n_chunks, n_dims) in enumerate(zip(counts, dims)):
            if n_chunks == 0:
                raise ValueError(
                    f"`stages`: stage {s} (t < {stages[s]}) contains the start of no chunk with "
                    f"num_chunks={k}; every stage must own at least one chunk."
                )
            if n_dims < n_chunks:
                raise ValueError(
                    f"`dims_per_stage`: stage {s} has {n_dims} dims for {n_chunks} chunks; each chunk needs >= 1 dim."
                )

    def _chunk_start(self, i: int) -> int:
        return _ceil_div(i * self.num_train_timesteps, self.num_chunks)

    def _stage_of_time(self, t: int) -> int:
        return next(s for s, end in enumerate(self.stages) if t < end)

    def _chunks_per_stage(self) -> list[int]:
        counts = [0] * len(self.stages)
        for i in range(self.num_chunks):
            counts[self._stage_of_time(self._chunk_start(i))] += 1
        return counts

    def _compute_chunk_end_dims(self) -> list[int]:
        d, k = self.latent_dim, self.num_chunks
        if self.stages is None:
            return [d * (i + 1) // k for i in range(k)]
        ends, stage_start = [], 0
        for n_chunks, n_dims in zip(self._chunks_per_stage(), self.dims_per_stage):
            width = n_dims // n_chunks
            ends += [stage_start + width * (j + 1) for j in range(n_chunks - 1)]
            stage_start += n_dims
            ends.append(stage_start)  # the stage's last chunk absorbs the remainder
        return ends

    @classmethod
    def from_loss_profile(
        cls,
        timesteps: Sequence[int],
        loss: Sequence[float],
        latent_dim: int,
        num_chunks: int,
        num_stages: int = 4,
        num_train_timesteps: int = 1000,
    ) -> TimestepPartition:
        r"""
        A staged partition fitted to where the frozen DDPM's error lies.

        `loss` is a non-negative density over time-steps (e.g. [`~diti_hf.evaluation.loss_profile`]'s `"density"`:
        how much of `x_0` the DDPM newly loses at each `t`), sampled at `timesteps` and interpolated linearly in
        between. The rule:

        1. The mass of chunk `i` is the density summed over the time-steps it owns (chunk edges stay uniform in `t`).
        2. Stage `s` of `num_stages` holds the chunks whose cumulative mass (at their midpoint) lies in
           `[s / num_stages, (s + 1) / num_stages)`: every stage carries about the same share of the error, so
           stages are short in time where the error is concentrated.
        3. Each stage's dims are proportional to its mass (largest-remainder rounding, at least one dim per chunk).
           Chunks where the DDPM loses much therefore get more dims than chunks where it loses little; a flat
           profile gives the uniform split.

        Stages that receive no chunk are merged, so fewer than `num_stages` may result; the result is always a
        valid partition.

        Args:
            timesteps (`Sequence[int]`): Increasing time-steps in `[0, num_train_timesteps)` at which `loss` is given.
            loss (`Sequence[float]`): Non-negative, finite density at each of `timesteps` (not all zero).
            latent_dim (`int`): Width `d` of `z`.
            num_chunks (`int`): Number of chunks `k`.
            num_stages (`int`, defaults to 4): Number of stages aimed at (at most `num_chunks`).
            num_train_timesteps (`int`, defaults to 1000): `T`.

        Returns:
            [`TimestepPartition`] with `stages` and `dims_per_stage`.
        """
        T, d, k = int(num_train_timesteps), int(latent_dim), int(num_chunks)
        cls(d, k, T)  # validates d, k and T
        ts = [int(t) for t in timesteps]
        values = [float(v) for v in loss]
        if len(ts) < 1 or len(ts) != len(values):
            raise ValueError(
                f"`timesteps` and `loss` must be non-empty and of equal length, got {len(ts)} and {len(values)}."
            )
        if any(b <= a for a, b in zip(ts, ts[1:])) or ts[0] < 0 or ts[-1] >= T:
            raise ValueError(f"`timesteps` must be strictly increasing in [0, {T}), got {ts}.")
        if not all(math.isfinite(v) and v >= 0 for v in values) or sum(values) <= 0:
            raise ValueError(f"`loss` must be finite, non-negative and not all zero, got {values}.")
        if not isinstance(num_stages, int) or num_stages < 1:
            raise ValueError(f"`num_stages` must be a positive int, got {num_stages!r}.")
        density = torch.from_numpy(np.interp(np.arange(T), ts, values)).double()
        starts = [_ceil_div(i * T, k) for i in range(k + 1)]
        mass = torch.stack([density[starts[i] : starts[i + 1]].sum() for i in range(k)])
        total = float(mass.sum())
        if total <= 0:
            raise ValueError("`loss` gives no mass to any chunk.")
        cumulative = (mass.cumsum(0) - mass / 2) / total  # at each chunk's midpoint
        stage_of_chunk = [min(num_stages - 1, int(float(c) * num_stages)) for c in cumulative]
        groups: list[list[int]] = []
        for i, s in enumerate(stage_of_chunk):
            if groups and stage_of_chunk[groups[-1][0]] == s:
                groups[-1].append(i)
            else:
                groups.append([i])
        stages = [starts[g[-1] + 1] for g in groups]
        masses = [float(mass[g].sum()) for g in groups]
        minimum = [len(g) for g in groups]
        dims = _proportional(masses, d, minimum)
        return cls(d, k, T, stages=stages, dims_per_stage=dims)

    # ------------------------------------------------------------------ config
    def to_dict(self) -> dict[str, Any]:
        return {
            "latent_dim": self.latent_dim,
            "num_chunks": self.num_chunks,
            "num_train_timesteps": self.num_train_timesteps,
            "stages": self.stages,
            "dims_per_stage": self.dims_per_stage,
            "mask_mode": self.mask_mode,
        }

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> TimestepPartition:
        return cls(
            **{key: config.get(key) for key in ("latent_dim", "num_chunks", "stages", "dims_per_stage")},
            num_train_timesteps=config.get("num_train_timesteps", 1000),
            mask_mode=config.get("mask_mode") or "cumulative",
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TimestepPartition) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(str(self.to_dict()))

    def __repr__(self) -> str:
        defaults = {"mask_mode": "cumulative"}
        args = ", ".join(f"{k}={v}" for k, v in self.to_dict().items() if v is not None and defaults.get(k) != v)
        return f"TimestepPartition({args})"

    # ------------------------------------------------------------------ time-steps <-> chunks <-> dims
    def chunk_of(self, timestep: int | torch.Tensor) -> int | torch.Tensor:
        """Chunk index `floor(t * k / T)` of time-step(s) `timestep` (int or integer tensor)."""
        if isinstance(timestep, torch.Tensor):
            if timestep.is_floating_point():
                raise TypeError(f"`timestep` must be an integer tensor, got dtype {timestep.dtype}.")
            if timestep.numel() and (timestep.min() < 0 or timestep.max() >= self.num_train_timesteps):
                raise ValueError(f"`timestep` values must lie in [0, {self.num_train_timesteps}).")
            return torch.div(timestep * self.num_chunks, self.num_train_timesteps, rounding_mode="floor")
        self._check_timestep(int(timestep), "timestep")
        return int(timestep) * self.num_chunks // self.num_train_timesteps

    def _check_timestep(self, t: int, name: str, allow_end: bool = False) -> None:
        hi = self.num_train_timesteps + (1 if allow_end else 0)
        if not 0 <= t < hi:
            raise ValueError(f"`{name}` must lie in [0, {hi}), got {t}.")

    def _check_chunk(self, i: int) -> None:
        if not 0 <= i < self.num_chunks:
            raise ValueError(f"chunk index must lie in [0, {self.num_chunks}), got {i}.")

    def chunk_dims(self, i: int) -> tuple[int, int]:
        """Half-open dim range `[start, end)` owned by chunk `i`."""
        self._check_chunk(i)
        return (self.chunk_end_dims[i - 1] if i > 0 else 0, self.chunk_end_dims[i])

    def chunk_timesteps(self, i: int) -> tuple[int, int]:
        """Half-open time-step range `[t_lo, t_hi)` of chunk `i`."""
        self._check_chunk(i)
        return self._chunk_start(i), self._chunk_start(i + 1)

    def chunks_for_timesteps(self, t_lo: int, t_hi: int) -> tuple[int, int]:
        """Half-open chunk range `[i, j)` of the chunks whose time-steps meet `[t_lo, t_hi)`."""
        self._check_timestep(t_lo, "timesteps[0]")
        self._check_timestep(t_hi, "timesteps[1]", allow_end=True)
        if t_hi < t_lo:
            raise ValueError(f"`timesteps` must satisfy lo <= hi, got ({t_lo}, {t_hi}).")
        if t_hi == t_lo:
            return (0, 0)
        return self.chunk_of(t_lo), self.chunk_of(t_hi - 1) + 1

    def dims_for_chunks(self, i: int, j: int) -> tuple[int, int]:
        """Half-open dim range `[start, end)` covered by chunks `[i, j)`."""
        if not 0 <= i <= j <= self.num_chunks:
            raise ValueError(f"`chunks` must satisfy 0 <= i <= j <= {self.num_chunks}, got ({i}, {j}).")
        if i == j:
            return (0, 0)
        return self.chunk_dims(i)[0], self.chunk_dims(j - 1)[1]

    def dims_for_timesteps(self, t_lo: int, t_hi: int) -> tuple[int, int]:
        """Half-open dim range `[start, end)` of the chunks whose time-steps meet `[t_lo, t_hi)`."""
        return self.dims_for_chunks(*self.chunks_for_timesteps(t_lo, t_hi))

    def dim_mask(self, start: int, end: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Boolean mask of shape `(latent_dim,)` selecting dims `[start, end)`."""
        mask = torch.zeros(self.latent_dim, dtype=torch.bool, device=device)
        mask[start:end] = True
        return mask

    # ------------------------------------------------------------------ ranges
    def resolve_range(
        self, timesteps: Sequence[int] | None = None, chunks: Sequence[int] | None = None
    ) -> TimestepRange:
        r"""
        The chunks, dims and effective time-steps a range selects: how every edit, the command line, the app and the
        evaluation turn a range into dims of `z`.

        A time-step range selects every chunk whose time-steps meet it, so it acts on whole chunks: the result's
        `timesteps` may be wider than the range asked for ([`TimestepRange.widened`]).

        Args:
            timesteps (`(lo, hi)`, *optional*): Half-open time-step range, `0 <= lo <= hi <= num_train_timesteps`.
            chunks (`(i, j)`, *optional*): Half-open chunk range, `0 <= i <= j <= num_chunks`, instead.

        Returns:
            [`TimestepRange`]: An empty range (`lo == hi` or `i == j`) selects nothing.

        Raises:
            `ValueError`: Neither or both of `timesteps` and `chunks`, not a pair of ints, or out of bounds.
        """
        if timesteps is not None and chunks is not None:
            raise ValueError("Pass either `timesteps` or `chunks`, not both.")
        if chunks is not None:
            i, j = self._pair(chunks, "chunks")
            dims = self.dims_for_chunks(i, j)
            return TimestepRange(None, (i, j), dims, (self._chunk_start(i), self._chunk_start(j)))
        if timesteps is None:
            raise ValueError("Pass `timesteps=(lo, hi)` or `chunks=(i, j)`.")
        lo, hi = self._pair(timesteps, "timesteps")
        i, j = self.chunks_for_timesteps(lo, hi)
        effective = (lo, hi) if i == j else (self._chunk_start(i), self._chunk_start(j))
        return TimestepRange((lo, hi), (i, j), self.dims_for_chunks(i, j), effective)

    @staticmethod
    def _pair(value: Any, name: str) -> tuple[int, int]:
        if (
            not isinstance(value, (tuple, list))
            or len(value) != 2
            or not all(isinstance(v, (int, np.integer)) for v in value)
        ):
            raise ValueError(f"`{name}` must be a pair of ints (lo, hi), got {value!r}.")
        return int(value[0]), int(value[1])

    def stage_ranges(self) -> list[tuple[int, int]]:
        """Half-open time-step range `[lo, hi)` of each stage of a staged partition (none for a uniform one)."""
        return [] if self.stages is None else list(zip([0, *self.stages[:-1]], self.stages))

    def end_ranges(self) -> dict[str, tuple[int, int]]:
        r"""
        The time-steps of the last and of the first third of the chunks (at least one chunk each), as
        `{"late": (lo, hi), "early": (lo, hi)}`; with one chunk both are `[0, T)`.

        DiTi's hypothesis is that late time-steps carry coarse attributes and early ones fine attributes; whether a
        model does is measured by its evaluation, not implied by these ranges.
        """
        k, T = self.num_chunks, self.num_train_timesteps
        third = max(1, k // 3)
        return {"late": (self._chunk_start(k - third), T), "early": (0, self._chunk_start(third))}

    def preset_ranges(self) -> dict[str, tuple[int, int]]:
        r"""
        Named half-open time-step ranges to pick from, in this order: `"late chunks"` and `"early chunks"`
        ([`~TimestepPartition.end_ranges`], with more than one chunk), `"everything"`, `"stage s"` for each stage of a
        staged partition, and `"chunk i"` for each chunk.
        """
        presets: dict[str, tuple[int, int]] = {}
        if self.num_chunks > 1:
            presets.update({f"{name} chunks": bounds for name, bounds in self.end_ranges().items()})
        presets["everything"] = (0, self.num_train_timesteps)
        presets.update({f"stage {s}": bounds for s, bounds in enumerate(self.stage_ranges())})
        presets.update({f"chunk {i}": self.chunk_timesteps(i) for i in range(self.num_chunks)})
        return presets

    # ------------------------------------------------------------------ mask tables
    def mask_table(self, kind: str = "cumulative", device: torch.device | str | None = None) -> torch.Tensor:
        """
        `(num_chunks, latent_dim)` float mask table, cached per device. Row `i` is, for `kind`:
        `"cumulative"` dims `[0, end(i))`; `"own"` dims `[end(i-1), end(i))`; `"receding"` dims `[0, end(i-1))`.
        """
        if kind not in MASK_KINDS:
            raise ValueError(f"`kind` must be one of {MASK_KINDS}, got {kind!r}.")
        device = torch.device(device if device is not None else "cpu")
        key = (kind, device)
        if key not in self._tables:
            ends = torch.tensor(self.chunk_end_dims)
            starts = torch.cat([ends.new_zeros(1), ends[:-1]])
            dims = torch.arange(self.latent_dim)[None, :]
            lo = {"cumulative": torch.zeros_like(ends), "own": starts, "receding": torch.zeros_like(ends)}[kind]
            hi = {"cumulative": ends, "own": ends, "receding": starts}[kind]
            self._tables[key] = ((dims >= lo[:, None]) & (dims < hi[:, None])).float().to(device)
        return self._tables[key]

    def masks_for_timesteps(self, timesteps: torch.Tensor, kind: str = "cumulative") -> torch.Tensor:
        """`(B, latent_dim)` float masks of the chunks owning each of the `(B,)` integer `timesteps`."""
        return self.mask_table(kind, timesteps.device)[self.chunk_of(timesteps)]

    # ------------------------------------------------------------------ what the decoder sees
    @property
    def condition_kind(self) -> str:
        """The mask kind the decoder sees under `mask_mode`: `"cumulative"`, or `"own"` for `"interval"`."""
        return "own" if self.mask_mode == "interval" else "cumulative"

    def condition_table(self, device: torch.device | str | None = None) -> torch.Tensor:
        """`(num_chunks, latent_dim)` float table: row `i` selects the dims the decoder sees in chunk `i`'s interval."""
        return self.mask_table(self.condition_kind, device)

    def active_chunks(self, timestep: int) -> tuple[int, int]:
        """Half-open chunk range `[i, j)` the decoder sees at `timestep` under `mask_mode`."""
        i = self.chunk_of(timestep)
        return (i, i + 1) if self.mask_mode == "interval" else (0, i + 1)


# The curves of a loss profile (`diti_hf.evaluation.loss_profile.loss_profile`) a partition can be fitted to.
PROFILE_SIGNALS = ("weighted_eps_error", "x0_loss_rate")


def partition_from_profile(
    profile: Mapping[str, Any],
    latent_dim: int,
    num_chunks: int,
    num_stages: int = 4,
    signal: str = "weighted_eps_error",
    num_train_timesteps: int = 1000,
) -> TimestepPartition:
    r"""
    [`TimestepPartition.from_loss_profile`] on one curve of a loss profile
    ([`~diti_hf.evaluation.loss_profile.loss_profile`]).

    Args:
        profile (`dict`): A `loss_profile` result.
        latent_dim, num_chunks, num_stages, num_train_timesteps: See `from_loss_profile`.
        signal (`str`, defaults to `"weighted_eps_error"`): The curve that sets where dims go, one of
            `PROFILE_SIGNALS`: the weighted ε error (the training signal each chunk's time-steps give it, the
            paper's reading of "where the loss peaks") or `x0_loss_rate` (where the DDPM newly loses information).
    """
    if signal not in PROFILE_SIGNALS:
        raise ValueError(f"`signal` must be one of {PROFILE_SIGNALS}, got {signal!r}.")
    return TimestepPartition.from_loss_profile(
        profile["timesteps"], profile[signal], latent_dim, num_chunks, num_stages, num_train_timesteps
    )
