import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diti_hf import TimestepPartition


@pytest.mark.parametrize("case", ["uniform_k64_d512", "stages_k64_d512", "uniform_k16_d512"])
def test_matches_official_partitions(case, reference_partitions):
    meta, tensors = reference_partitions
    c = meta[case]
    p = TimestepPartition(c["latent_dim"], c["k"], 1000, c["stages"], c["dims_per_stage"])
    assert p.chunk_end_dims == c["chunk_end_dims"]
    t = torch.arange(1000)
    assert torch.equal(p.chunk_of(t), tensors[f"{case}.t_to_idx"])
    assert torch.equal(p.mask_table("cumulative"), tensors[f"{case}.masks"])
    assert torch.equal(p.mask_table("own"), tensors[f"{case}.k_masks"])
    assert torch.equal(p.mask_table("receding"), tensors[f"{case}.receding_masks"])


def test_staged_widths_from_method():
    p = TimestepPartition(512, 64, 1000, [50, 100, 300, 500, 1000], [10, 25, 327, 100, 50])
    widths = [b - a for a, b in zip([0, *p.chunk_end_dims], p.chunk_end_dims)]
    assert widths[:7] == [2, 2, 2, 4, 8, 8, 9]
    assert widths[7:20] == [25] * 12 + [27]
    assert widths[20:32] == [8] * 11 + [12]
    assert widths[32:] == [1] * 31 + [19]


def test_ranges():
    p = TimestepPartition(512, 64)
    assert p.chunk_timesteps(0) == (0, 16)
    assert p.chunk_timesteps(1) == (16, 32)
    assert p.chunk_timesteps(63) == (985, 1000)
    assert p.chunk_of(15) == 0 and p.chunk_of(16) == 1 and p.chunk_of(999) == 63
    assert p.chunks_for_timesteps(500, 1000) == (32, 64)
    assert p.dims_for_timesteps(500, 1000) == (256, 512)
    assert p.dims_for_timesteps(0, 16) == (0, 8)
    assert p.dims_for_timesteps(300, 300) == (0, 0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"latent_dim": 512, "num_chunks": 0}, "num_chunks"),
        ({"latent_dim": 8, "num_chunks": 16}, "num_chunks"),
        ({"latent_dim": 2048, "num_chunks": 1001}, "num_chunks"),
        ({"latent_dim": 512, "num_chunks": 64, "stages": [50, 1000]}, "dims_per_stage"),
        ({"latent_dim": 512, "num_chunks": 64, "stages": [100, 50, 1000], "dims_per_stage": [1, 1, 510]}, "stages"),
        ({"latent_dim": 512, "num_chunks": 64, "stages": [50, 900], "dims_per_stage": [12, 500]}, "stages"),
        ({"latent_dim": 512, "num_chunks": 64, "stages": [50, 1000], "dims_per_stage": [12, 499]}, "dims_per_stage"),
        ({"latent_dim": 512, "num_chunks": 64, "stages": [10, 12, 1000], "dims_per_stage": [6, 6, 500]}, "stages"),
        ({"latent_dim": 512, "num_chunks": 64, "stages": [50, 1000], "dims_per_stage": [2, 510]}, "dims_per_stage"),
    ],
)
def test_bad_configs_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        TimestepPartition(**kwargs)


def test_bad_timesteps():
    p = TimestepPartition(64, 4)
    with pytest.raises(ValueError, match="timestep"):
        p.chunk_of(1000)
    with pytest.raises(ValueError, match="timesteps"):
        p.dims_for_timesteps(600, 200)
    with pytest.raises(ValueError, match="timesteps"):
        p.dims_for_timesteps(-1, 200)
    with pytest.raises(TypeError, match="integer"):
        p.chunk_of(torch.tensor([1.0]))


def test_dict_round_trip():
    p = TimestepPartition(512, 64, 1000, [50, 100, 300, 500, 1000], [10, 25, 327, 100, 50])
    assert TimestepPartition.from_dict(p.to_dict()) == p
    assert p.chunk_end_dims == TimestepPartition.from_dict(p.to_dict()).chunk_end_dims


@st.composite
def partitions(draw):
    T = draw(st.integers(1, 1200))
    d = draw(st.integers(1, 600))
    k = draw(st.integers(1, min(d, T)))
    if draw(st.booleans()) or k < 2:
        return TimestepPartition(d, k, T)
    n_stages = draw(st.integers(1, min(4, k)))
    # stage ends at chunk starts so that every stage owns a chunk
    cuts = sorted(draw(st.sets(st.integers(1, k - 1), min_size=n_stages - 1, max_size=n_stages - 1)))
    starts = [-(-c * T // k) for c in cuts]
    stages = [*starts, T]
    if any(b <= a for a, b in zip([0, *stages], stages)):
        return TimestepPartition(d, k, T)
    probe = TimestepPartition(max(d, k), k, T)  # chunk counts per stage
    counts = [
        sum(1 for i in range(k) if lo <= probe.chunk_timesteps(i)[0] < hi) for lo, hi in zip([0, *stages], stages)
    ]
    if any(c == 0 for c in counts) or sum(counts) > d:
        return TimestepPartition(d, k, T)
    extra = d - sum(counts)
    split = sorted(draw(st.lists(st.integers(0, extra), min_size=len(counts) - 1, max_size=len(counts) - 1)))
    parts = [b - a for a, b in zip([0, *split], [*split, extra])]
    return TimestepPartition(d, k, T, stages, [c + e for c, e in zip(counts, parts)])


@settings(max_examples=60, deadline=None)
@given(partitions())
def test_partition_invariants(p):
    cum, own, rec = (p.mask_table(kind) for kind in ("cumulative", "own", "receding"))
    assert torch.equal(cum, own + rec)  # mask = own + receding
    assert torch.equal(own.sum(0), torch.ones(p.latent_dim))  # chunks tile the latent
    assert (own.sum(1) >= 1).all()  # every chunk owns a dim
    assert p.chunk_end_dims[-1] == p.latent_dim
    t = torch.arange(p.num_train_timesteps)
    idx = p.chunk_of(t)
    assert torch.equal(torch.bincount(idx, minlength=p.num_chunks).bool(), torch.ones(p.num_chunks, dtype=torch.bool))
    assert (idx[1:] >= idx[:-1]).all()
    spans = [p.chunk_timesteps(i) for i in range(p.num_chunks)]  # t-ranges tile [0, T)
    assert spans[0][0] == 0 and spans[-1][1] == p.num_train_timesteps
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    for i, (lo, hi) in enumerate(spans):
        assert int(idx[lo]) == i and int(idx[hi - 1]) == i


def test_interval_mode_sees_only_the_own_chunk():
    cumulative, interval = TimestepPartition(16, 4), TimestepPartition(16, 4, mask_mode="interval")
    assert torch.equal(cumulative.condition_table(), cumulative.mask_table("cumulative"))
    assert torch.equal(interval.condition_table(), interval.mask_table("own"))
    assert interval.condition_table().sum(1).tolist() == [4.0, 4.0, 4.0, 4.0]
    assert [interval.active_chunks(t) for t in (0, 249, 250, 999)] == [(0, 1), (0, 1), (1, 2), (3, 4)]
    assert [cumulative.active_chunks(t) for t in (0, 249, 250, 999)] == [(0, 1), (0, 1), (0, 2), (0, 4)]
    # the chunk layout itself does not depend on the mode
    assert interval.chunk_end_dims == cumulative.chunk_end_dims
    assert interval != cumulative and "mask_mode=interval" in repr(interval) and "mask_mode" not in repr(cumulative)


def test_mask_mode_round_trips_and_defaults_to_cumulative():
    p = TimestepPartition(64, 16, 1000, [250, 500, 1000], [8, 24, 32], mask_mode="interval")
    assert TimestepPartition.from_dict(p.to_dict()) == p
    older = {k: v for k, v in p.to_dict().items() if k != "mask_mode"}  # a config written before the mode existed
    assert TimestepPartition.from_dict(older).mask_mode == "cumulative"
    with pytest.raises(ValueError, match=r"`mask_mode` must be one of \('cumulative', 'interval'\), got 'own'"):
        TimestepPartition(16, 4, mask_mode="own")


def test_resolve_range_says_which_chunks_dims_and_time_steps_a_range_selects():
    from diti_hf.partition import TimestepRange

    p = TimestepPartition(16, 4, 1000, [500, 1000], [4, 12])  # chunks of 250 t; dims [0, 2, 4, 10, 16)
    exact = p.resolve_range(timesteps=(500, 1000))
    assert exact == TimestepRange(requested=(500, 1000), chunks=(2, 4), dims=(4, 16), timesteps=(500, 1000))
    assert not exact.widened and not exact.empty
    # a range inside chunk 0, and one across chunks 1-3: widened to the whole chunks they meet
    assert p.resolve_range(timesteps=(10, 20)) == TimestepRange((10, 20), (0, 1), (0, 2), (0, 250))
    wide = p.resolve_range(timesteps=(400, 800))
    assert (wide.chunks, wide.dims, wide.timesteps, wide.widened) == ((1, 4), (2, 16), (250, 1000), True)
    # a chunk range: its own time-steps, never "widened"
    chunks = p.resolve_range(chunks=(1, 3))
    assert chunks == TimestepRange(None, (1, 3), (2, 10), (250, 750)) and not chunks.widened
    # empty ranges select nothing and act on nothing
    assert p.resolve_range(timesteps=(300, 300)) == TimestepRange((300, 300), (0, 0), (0, 0), (300, 300))
    assert p.resolve_range(chunks=(2, 2)).empty and p.resolve_range(chunks=(2, 2)).dims == (0, 0)
    assert p.resolve_range(timesteps=(300, 300)).empty and not p.resolve_range(timesteps=(300, 300)).widened
    # numpy ints are ints; the dims agree with the older helpers
    import numpy as np

    assert p.resolve_range(timesteps=(np.int64(0), np.int64(1000))).dims == (0, 16)
    for lo, hi in [(0, 1), (249, 251), (999, 1000), (0, 1000)]:
        assert p.resolve_range(timesteps=(lo, hi)).dims == p.dims_for_timesteps(lo, hi)
        assert p.resolve_range(timesteps=(lo, hi)).chunks == p.chunks_for_timesteps(lo, hi)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, r"Pass `timesteps=\(lo, hi\)` or `chunks=\(i, j\)`"),
        ({"timesteps": (0, 10), "chunks": (0, 1)}, "not both"),
        ({"timesteps": (0.5, 10)}, r"`timesteps` must be a pair of ints"),
        ({"timesteps": (0, 10, 20)}, r"`timesteps` must be a pair of ints"),
        ({"chunks": [1]}, r"`chunks` must be a pair of ints"),
        ({"timesteps": (-1, 10)}, r"`timesteps\[0\]` must lie in \[0, 1000\)"),
        ({"timesteps": (0, 1001)}, r"`timesteps\[1\]` must lie in \[0, 1001\)"),
        ({"timesteps": (600, 100)}, "lo <= hi"),
        ({"chunks": (0, 5)}, r"`chunks` must satisfy 0 <= i <= j <= 4"),
        ({"chunks": (3, 1)}, r"`chunks` must satisfy"),
    ],
)
def test_resolve_range_refuses_what_is_not_a_range_of_the_partition(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TimestepPartition(16, 4).resolve_range(**kwargs)


def test_preset_ranges_are_named_by_position_not_by_attribute():
    staged = TimestepPartition(latent_dim=16, num_chunks=4, stages=[500, 1000], dims_per_stage=[4, 12])
    assert staged.end_ranges() == {"late": (750, 1000), "early": (0, 250)}  # a third of 4 chunks: one each
    assert staged.stage_ranges() == [(0, 500), (500, 1000)]
    assert staged.preset_ranges() == {
        "late chunks": (750, 1000),
        "early chunks": (0, 250),
        "everything": (0, 1000),
        "stage 0": (0, 500),
        "stage 1": (500, 1000),
        "chunk 0": (0, 250),
        "chunk 1": (250, 500),
        "chunk 2": (500, 750),
        "chunk 3": (750, 1000),
    }
    # 16 chunks: five each; every preset is whole chunks, so none is widened
    sixteen = TimestepPartition(64, 16)
    assert sixteen.end_ranges() == {"late": (688, 1000), "early": (0, 313)} and sixteen.stage_ranges() == []
    assert not any(sixteen.resolve_range(timesteps=r).widened for r in sixteen.preset_ranges().values())
    # one chunk (PDAE): no late or early chunks to pick, but the ends are still defined (all of [0, T))
    single = TimestepPartition(8, 1)
    assert single.preset_ranges() == {"everything": (0, 1000), "chunk 0": (0, 1000)}
    assert single.end_ranges() == {"late": (0, 1000), "early": (0, 1000)}
