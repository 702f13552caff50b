"""Every swap goes through `DiTiPipeline.swap`: the command line's grids, the demo's, the app's and the evaluation's
are its images, and the library's warnings are filtered by their category."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import PIL.Image
import pytest
import torch

from conftest import tiny_images, tiny_pipeline
from diti_hf.cli import main
from diti_hf.partition import TimestepPartition
from diti_hf.pipelines import DiTiPipeline
from diti_hf.visualization import grid_cell_box, swap_grid_rows
from diti_hf.warning_types import ChunkWideningWarning, ImageResizeWarning

STEPS = 2
SIZE = 16


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("swap-paths") / "model"
    tiny_pipeline(num_chunks=4).save_pretrained(path)
    return path


def _pngs(folder, count: int, seed: int) -> list:
    folder.mkdir()
    images = []
    for i in range(count):
        pixels = np.random.default_rng(seed + i).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        PIL.Image.fromarray(pixels).save(folder / f"img{i}.png")
        images.append(PIL.Image.open(folder / f"img{i}.png").convert("RGB"))
    return images


def test_cli_swap_grids_are_pipe_swap_images(model_dir, tmp_path, capsys):
    """`diti-hf swap`'s cells are exactly `pipe.swap(..., all_pairs=True)`'s images (same batch size)."""
    sources, targets = _pngs(tmp_path / "s", 3, seed=0), _pngs(tmp_path / "t", 2, seed=10)
    argv = ["swap", "--model", model_dir, "--source", tmp_path / "s", "--target", tmp_path / "t",
            "--timesteps", 10, 20, "--timesteps", 500, 1000, "--chunks", 1, 3, "--steps", STEPS,
            "--batch-size", 2, "--threads", 1, "--zoom", 1, "--no-progress", "--output-dir", tmp_path / "out"]  # fmt: skip
    assert main([str(a) for a in argv]) == 0, capsys.readouterr().err
    pipe = DiTiPipeline.from_pretrained(model_dir)
    pipe.set_progress_bar_config(disable=True)
    with pytest.warns(ChunkWideningWarning, match=r"\(10, 20\) acts on whole chunks 0\.\.0"):
        swapped = pipe.swap(
            sources, targets, timesteps=[(10, 20), (500, 1000)], chunks=(1, 3), num_inference_steps=STEPS,
            batch_size=2, all_pairs=True,
        ).images  # fmt: skip
    assert len(swapped) == 3 * 2 * 3  # pairs × ranges
    for r, name in enumerate(["swap_t10-20.png", "swap_t500-1000.png", "swap_chunks1-3.png"]):
        grid = np.asarray(PIL.Image.open(tmp_path / "out" / name).convert("RGB"))
        rows = swap_grid_rows(sources, targets, swapped, range_index=r, num_ranges=3)
        for i, row in enumerate(rows):
            for j, cell in enumerate(row):
                if cell is not None:
                    left, top, right, bottom = grid_cell_box(i, j, (SIZE, SIZE))
                    assert np.array_equal(grid[top:bottom, left:right], np.asarray(cell)), (name, i, j)


def test_all_pairs_is_every_source_with_every_target_pair_major():
    pipe = tiny_pipeline(num_chunks=4)
    sources, targets = tiny_images(2, seed=0), tiny_images(3, seed=1)
    ranges = [(0, 250), (500, 1000)]
    grid = pipe.swap(
        sources, targets, timesteps=ranges, num_inference_steps=STEPS, output_type="pt", all_pairs=True, batch_size=2
    )
    assert grid.images.shape == (2 * 3 * 2, 3, SIZE, SIZE)
    for s in range(2):
        pairs = pipe.swap(
            sources[s : s + 1].expand(3, -1, -1, -1), targets, timesteps=ranges, num_inference_steps=STEPS,
            output_type="pt",
        )  # fmt: skip
        # image (s * T + t) * R + r: source s with target t's chunks of range r
        torch.testing.assert_close(grid.images[s * 6 : (s + 1) * 6], pairs.images)
        torch.testing.assert_close(grid.z[s * 6 : (s + 1) * 6], pairs.z)
    with pytest.raises(ValueError, match="same number"):
        pipe.swap(sources, targets, timesteps=ranges, num_inference_steps=STEPS)


def test_swap_from_given_latents_or_noised_sources():
    pipe = tiny_pipeline(num_chunks=4)
    a, b = tiny_images(2, seed=0), tiny_images(2, seed=1)
    x_t = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    out = pipe.swap(a, b, timesteps=[(0, 250), (500, 1000)], latents=x_t, num_inference_steps=STEPS, output_type="pt")
    z_a, z_b = pipe.encode(a).z, pipe.encode(b).z
    for r, (start, end) in enumerate([(0, 4), (8, 16)]):
        z = z_a.clone()
        z[:, start:end] = z_b[:, start:end]
        expected = pipe(z=z, latents=x_t, num_inference_steps=STEPS, output_type="pt").images
        torch.testing.assert_close(out.images.view(2, 2, 3, SIZE, SIZE)[:, r], expected)
    with pytest.raises(ValueError, match="`latents` replaces the inversion"):
        pipe.swap(a, b, timesteps=(0, 250), latents=x_t, inversion="stochastic")
    with pytest.raises(ValueError, match=r"`latents` must be a tensor of one x_T per source \(2\), got \(1, 3"):
        pipe.swap(a, b, timesteps=(0, 250), latents=x_t[:1])
    # all pairs, noised to the top of each range's chunks: one noise per source, shared by its pairs and ranges
    grid = pipe.swap(
        a[:1], b, timesteps=[(0, 250), (500, 1000)], inversion="stochastic", all_pairs=True, num_inference_steps=STEPS,
        output_type="pt", generator=torch.Generator().manual_seed(3),
    ).images  # fmt: skip
    pairs = pipe.swap(
        a[:1].expand(2, -1, -1, -1), b, timesteps=[(0, 250), (500, 1000)], inversion="stochastic",
        num_inference_steps=STEPS, output_type="pt", generator=[torch.Generator().manual_seed(3) for _ in range(2)],
    ).images  # fmt: skip
    torch.testing.assert_close(grid, pairs)


def test_library_warnings_have_categories_to_filter_by():
    pipe = tiny_pipeline(num_chunks=4)
    a, b = tiny_images(1, seed=0), tiny_images(1, seed=1)
    with pytest.warns(ChunkWideningWarning, match=r"effective range is \[250, 750\)"):
        pipe.interpolate(a, b, alphas=[0.5], timesteps=(300, 600), num_inference_steps=STEPS, output_type="pt")
    with pytest.warns(ImageResizeWarning, match="resized and cropped"):
        pipe.encode([PIL.Image.new("RGB", (40, 24))])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", ChunkWideningWarning)
        warnings.simplefilter("ignore", ImageResizeWarning)
        pipe.swap(a, b, timesteps=(10, 20), num_inference_steps=STEPS, output_type="pt")
        pipe.encode([PIL.Image.new("RGB", (40, 24))])
    assert issubclass(ChunkWideningWarning, UserWarning) and issubclass(ImageResizeWarning, UserWarning)


def test_every_front_end_takes_its_ranges_from_the_partition():
    from diti_hf import app
    from diti_hf.commands import _common
    from diti_hf.demo.config import SWAP_GRIDS

    partition = TimestepPartition(64, 16)
    assert list(app.preset_ranges(partition).values()) == list(partition.preset_ranges().values())
    ends = partition.end_ranges()
    assert {name: ends[end] for name, end in SWAP_GRIDS.items()} == {"coarse": (688, 1000), "fine": (0, 313)}

    pipe = SimpleNamespace(partition=partition)
    assert _common.range_text(pipe, "timesteps", (10, 20)) == "t in [0, 63) (chunk 0)"
    assert _common.range_text(pipe, "chunks", (2, 5)) == "t in [125, 313) (chunks 2..4)"
    with pytest.warns(
        UserWarning, match=r"--timesteps 10 20: z is edited by whole chunks, so this range acts on t in"
    ):
        assert _common.check_ranges(pipe, [[10, 20]], [[2, 5]]) == [("timesteps", (10, 20)), ("chunks", (2, 5))]
    for bad in ([[20, 20]], [[0, 1001]]):
        with pytest.raises(_common.UsageError, match="0 <= LO < HI <= T=1000"):
            _common.check_ranges(pipe, bad, None)
    with pytest.raises(app.AppInputError, match="outside the model's time-steps"):
        app.check_range(partition, 300, 300)
    assert app.check_range(partition, 0, 1000) == (0, 1000)
