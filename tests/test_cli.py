"""The `diti-hf` subcommands on the tiny pipeline: outputs checked against the pipeline's own calls, one-line errors."""

import json
import math

import numpy as np
import PIL.Image
import pyarrow.parquet as pq
import pytest
import torch

import diti_hf.demo as demo_module
from conftest import FIXTURE_DIR, tiny_pipeline
from diti_hf.cli import main
from diti_hf.data import generate_shapes
from diti_hf.demo import INTERIM_NOTICE, OUTPUT_FILES
from diti_hf.visualization import grid_cell_box

STEPS = 2
SIZE = 16
COMMANDS = ["demo", "app", "encode", "reconstruct", "swap", "interpolate", "edit", "evaluate", "partition", "convert"]


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


@pytest.fixture(scope="module")
def model_dir(pipe, tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "diti"
    pipe.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def pdae_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "pdae"
    tiny_pipeline(seed=1, num_chunks=1).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("images")
    for i, image in enumerate(generate_shapes(4, seed=7, resolution=SIZE)["image"]):
        image.save(path / f"img{i}.png")
    return path


def _images(image_dir, names=None):
    names = names or [f"img{i}.png" for i in range(4)]
    return [PIL.Image.open(image_dir / n).convert("RGB") for n in names]


def _cell(grid: PIL.Image.Image, row: int, col: int) -> np.ndarray:
    return np.asarray(grid.crop(grid_cell_box(row, col, (SIZE, SIZE))), dtype=np.int16)


def _grid_size(rows: int, cols: int, cell: int = SIZE, pad: int = 2) -> tuple[int, int]:
    return cols * cell + (cols + 1) * pad, rows * cell + (rows + 1) * pad


def _captioned(size: tuple[int, int], cells: tuple[int, int]) -> bool:
    """Whether a grid of `size` is the cells of `_grid_size` with a caption strip under them."""
    return size[0] == cells[0] and size[1] > cells[1]


def _close(cell: np.ndarray, image: PIL.Image.Image, tol: int = 1) -> bool:
    # batch composition changes float32 conv rounding (~1e-6), which can move a pixel by one uint8 level
    return np.abs(cell - np.asarray(image, dtype=np.int16)).max() <= tol


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------------------------------------------- help
@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_every_subcommand(command, capsys):
    code, out, _ = _run([command, "--help"], capsys)
    assert code == 0 and out.startswith(f"usage: diti-hf {command}")
    if command not in ("convert", "demo"):
        model_flag = "--pretrained-unet" if command == "partition" else "--model"  # a DDPM, not a pipeline
        for flag in (model_flag, "--device", "--batch-size", "--seed"):
            assert flag in out, (command, flag)
    if command in ("reconstruct", "swap", "interpolate", "edit", "evaluate", "demo"):
        assert "--steps" in out


def test_top_level_help_lists_every_command(capsys):
    code, out, _ = _run(["--help"], capsys)
    assert code == 0 and all(f"    {c}" in out for c in COMMANDS)


# ------------------------------------------------------------------------------------------------------- encode
def test_encode_npy_equals_pipe_encode_with_sidecar(pipe, model_dir, image_dir, tmp_path, capsys):
    output = tmp_path / "z.npy"
    code, out, _ = _run(
        [
            "encode",
            "--model",
            model_dir,
            "--images",
            image_dir,
            "--output",
            output,
            "--batch-size",
            2,
            "--no-progress",
        ],
        capsys,
    )
    assert code == 0 and "encoded 4 images" in out
    z = np.load(output)
    expected = pipe.encode(_images(image_dir), batch_size=2).z.numpy()
    assert z.shape == (4, 16) and np.abs(z - expected).max() <= 1e-6
    meta = json.loads((tmp_path / "z.json").read_text())
    assert meta["latent_dim"] == 16 and meta["num_chunks"] == 4 and meta["chunk_end_dims"] == [4, 8, 12, 16]
    assert meta["chunk_timesteps"] == [[0, 250], [250, 500], [500, 750], [750, 1000]]
    assert meta["model"] == str(model_dir) and meta["ids"] == [f"img{i}.png" for i in range(4)]
    assert meta["paths"] == [str((image_dir / f"img{i}.png").resolve()) for i in range(4)]
    assert meta["source"]["kind"] == "images" and meta["skipped"] == [] and meta["num_features"] == 4


def test_encode_dataset_to_parquet_single_and_sharded(pipe, model_dir, tmp_path, capsys):
    args = ["encode", "--model", model_dir, "--dataset", "diti-shapes", "--num-images", 12, "--seed", 3]
    args += ["--batch-size", 4, "--no-progress"]
    code, _, _ = _run([*args, "--output", tmp_path / "z.parquet"], capsys)
    assert code == 0
    table = pq.read_table(tmp_path / "z.parquet")
    assert table.column_names == ["id", "z"] and table.column("id").to_pylist() == [str(i) for i in range(12)]
    z = np.array(table.column("z").to_pylist(), dtype=np.float32)
    expected = pipe.encode(list(generate_shapes(12, seed=3, resolution=SIZE)["image"]), batch_size=4).z.numpy()
    assert np.abs(z - expected).max() <= 1e-6
    meta = json.loads(table.schema.metadata[b"diti_hf"])
    assert meta["latent_dim"] == 16 and meta["chunk_end_dims"] == [4, 8, 12, 16] and meta["model"] == str(model_dir)
    assert meta["source"] == {
        "kind": "dataset",
        "name": "diti-shapes",
        "split": "train",
        "image_column": "image",
        "num_images": 12,
        "seed": 3,
    }
    # sharded (shards of 5 = one incomplete batch of 4 per shard): the same features, one row group per shard
    code, out, _ = _run(
        [*args, "--output-dir", tmp_path / "sharded", "--shard-size", 5, "--format", "parquet"], capsys
    )
    assert code == 0 and "in 3 shards" in out
    merged = pq.ParquetFile(tmp_path / "sharded" / "features.parquet")
    assert merged.num_row_groups == 3
    sharded = np.array(merged.read().column("z").to_pylist(), dtype=np.float32)
    assert np.abs(sharded - expected).max() <= 1e-5


def test_encode_bad_image_is_named_then_skipped_on_request(model_dir, image_dir, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("a.png", "c.png"):
        (folder / name).write_bytes((image_dir / "img0.png").read_bytes())
    (folder / "b.png").write_bytes(b"\x89PNG broken")
    argv = ["encode", "--model", model_dir, "--images", folder, "--output", tmp_path / "z.npy", "--no-progress"]
    code, _, err = _run(argv, capsys)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("diti-hf: error: image 1 (") and "b.png" in err and "--skip-bad-images" in err
    code, out, _ = _run([*argv, "--skip-bad-images"], capsys)
    assert code == 0 and "skipped 1 unreadable image(s)" in out and "b.png" in out
    meta = json.loads((tmp_path / "z.json").read_text())
    assert meta["ids"] == ["a.png", "c.png"] and meta["skipped"][0]["index"] == 1
    z = np.load(tmp_path / "z.npy")
    assert z.shape == (2, 16) and np.array_equal(z[0], z[1])  # identical images, identical features


# --------------------------------------------------------------------------------------------------- generation
def test_reconstruct_grid_is_inputs_over_reconstructions(pipe, model_dir, image_dir, tmp_path, capsys):
    code, out, _ = _run(
        ["reconstruct", "--model", model_dir, "--images", image_dir, "--steps", STEPS, "--zoom", 1]
        + ["--output-dir", tmp_path, "--no-progress"],
        capsys,
    )
    assert code == 0 and "reconstruction.png" in out
    grid = PIL.Image.open(tmp_path / "reconstruction.png")
    assert _captioned(grid.size, _grid_size(2, 4))
    images = _images(image_dir)
    recon = pipe.reconstruct(images, num_inference_steps=STEPS).images
    for i in range(4):
        assert np.array_equal(_cell(grid, 0, i), np.asarray(images[i], dtype=np.int16))  # 16×16: shown as is
        assert _close(_cell(grid, 1, i), recon[i], tol=0)  # the same single batch as the pipeline call


def test_swap_grids_are_every_source_with_every_target(pipe, model_dir, image_dir, tmp_path, capsys):
    argv = ["swap", "--model", model_dir, "--source", image_dir / "img0.png", image_dir / "img1.png"]
    argv += ["--target", image_dir, "--timesteps", 500, 1000, "--timesteps", 0, 250, "--chunks", 1, 2]
    code, _, _ = _run([*argv, "--steps", STEPS, "--zoom", 1, "--output-dir", tmp_path, "--no-progress"], capsys)
    assert code == 0
    names = ["swap_t500-1000.png", "swap_t0-250.png", "swap_chunks1-2.png"]
    assert sorted(p.name for p in tmp_path.glob("swap_*.png")) == sorted(names)
    grids = [PIL.Image.open(tmp_path / n) for n in names]
    assert all(_captioned(g.size, _grid_size(3, 5)) for g in grids)
    images = _images(image_dir)
    # pairs (source 0, target 2) and (source 1, target 3) through the pipeline's own swap
    out = pipe.swap(
        source=images[:2], target=images[2:], timesteps=[(500, 1000), (0, 250), (250, 500)], num_inference_steps=STEPS
    ).images  # chunk 1 is t in [250, 500)
    for r, grid in enumerate(grids):
        assert np.array_equal(_cell(grid, 0, 3), np.asarray(images[2], dtype=np.int16))  # target header
        assert np.array_equal(_cell(grid, 2, 0), np.asarray(images[1], dtype=np.int16))  # source column
        assert _close(_cell(grid, 1, 3), out[r]) and _close(_cell(grid, 2, 4), out[3 + r])
    # swapping different chunks changes the image
    assert np.abs(_cell(grids[0], 1, 3) - _cell(grids[1], 1, 3)).max() > 0


def test_interpolate_grid_rows_are_source_alphas_target(pipe, model_dir, image_dir, tmp_path, capsys):
    argv = ["interpolate", "--model", model_dir, "--source", image_dir / "img0.png", image_dir / "img1.png"]
    argv += ["--target", image_dir / "img2.png", image_dir / "img3.png", "--alphas", 0, 0.5, 1]
    argv += ["--timesteps", 250, 750, "--slerp", "--steps", STEPS, "--zoom", 1, "--output-dir", tmp_path]
    code, _, _ = _run([*argv, "--no-progress"], capsys)
    assert code == 0
    grid = PIL.Image.open(tmp_path / "interpolation.png")
    assert _captioned(grid.size, _grid_size(2, 5))
    images = _images(image_dir)
    out = pipe.interpolate(
        images[:2], images[2:], alphas=[0, 0.5, 1], timesteps=(250, 750), slerp_latents=True, num_inference_steps=STEPS
    ).images
    for pair in range(2):
        assert np.array_equal(_cell(grid, pair, 0), np.asarray(images[pair], dtype=np.int16))
        assert np.array_equal(_cell(grid, pair, 4), np.asarray(images[2 + pair], dtype=np.int16))
        for a in range(3):
            assert _close(_cell(grid, pair, 1 + a), out[pair * 3 + a], tol=0)


def test_edit_grid_scale_zero_is_the_reconstruction(pipe, model_dir, image_dir, tmp_path, capsys):
    w = torch.randn(16, generator=torch.Generator().manual_seed(0))
    np.save(tmp_path / "w.npy", w.numpy())
    argv = ["edit", "--model", model_dir, "--images", image_dir, "--direction", tmp_path / "w.npy"]
    argv += ["--scales", -1, 0, 1, "--top-k", 4, "--steps", STEPS, "--zoom", 3, "--output-dir", tmp_path]
    code, _, _ = _run([*argv, "--no-progress"], capsys)
    assert code == 0
    grid = PIL.Image.open(tmp_path / "edit.png")
    assert _captioned(grid.size, _grid_size(4, 4, cell=3 * SIZE))
    images = _images(image_dir)
    edited = pipe.edit(images, direction=w, scales=[-1, 0, 1], top_k=4, num_inference_steps=STEPS).images
    recon = pipe.reconstruct(images, num_inference_steps=STEPS).images
    for i in range(4):
        cells = [np.asarray(grid.crop(grid_cell_box(i, c, (SIZE, SIZE), zoom=3)))[::3, ::3] for c in range(4)]
        assert np.array_equal(cells[0], np.asarray(images[i]))
        assert all(_close(cells[1 + s].astype(np.int16), edited[i * 3 + s], tol=0) for s in range(3))
        assert _close(cells[2].astype(np.int16), recon[i])  # scale 0 changes nothing
    assert np.abs(_cell_of(grid, 0, 1) - _cell_of(grid, 0, 2)).max() > 0  # scale -1 moved the image


def _cell_of(grid, row, col):
    return np.asarray(grid.crop(grid_cell_box(row, col, (SIZE, SIZE), zoom=3)), dtype=np.int16)


# ------------------------------------------------------------------------------------------------------ evaluate
def test_evaluate_writes_report_and_plots(model_dir, pdae_dir, tmp_path, capsys):
    argv = ["evaluate", "--model", model_dir, "--baseline", pdae_dir, "--num-images", 60, "--probe-epochs", 2]
    argv += ["--swap-pairs", 4, "--oracle-epochs", 1, "--reconstruction-images", 4, "--steps", STEPS]
    argv += ["--timesteps", 0, 500, "--timesteps", 500, 1000, "--output-dir", tmp_path, "--no-progress"]
    code, out, _ = _run(argv, capsys)
    assert code == 0 and "model: mean probe accuracy" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["models"].keys() == {"model", "baseline", "random_init", "pixels"}
    assert report["models"]["model"]["num_chunks"] == 4 and report["models"]["baseline"]["num_chunks"] == 1
    assert report["models"]["model"]["counterfactual"]["ranges"] == [[0, 500], [500, 1000]]
    assert report["models"]["baseline"]["reconstruction"]["num_images"] == 4
    assert report["dataset"]["num_images"] == 60 and report["dataset"]["models"]["model"] == str(model_dir)
    assert report["config"]["num_inference_steps"] == STEPS and report["config"]["probe"]["epochs"] == 2
    assert report["attribute_loss"]["ddpm_of"] == "model"
    assert report["attribute_loss"]["loss_time"].keys() == {f["name"] for f in report["dataset"]["factors"]}
    for plot in ("probes.png", "alignment_model.png", "counterfactual_model.png", "counterfactual_baseline.png"):
        assert plot in report["plots"] and (tmp_path / plot).stat().st_size > 0


# ---------------------------------------------------------------------------------------------------------- demo
def test_partition_prints_the_fitted_partition_and_writes_the_profile(pipe, model_dir, tmp_path, capsys):
    from diti_hf import TimestepPartition
    from diti_hf.data import ImageTransform, load_image_dataset, validation_batch
    from diti_hf.evaluation.loss_profile import loss_profile
    from diti_hf.partition import partition_from_profile
    from diti_hf.sampling import DiffusionCoefficients

    argv = ["partition", "--pretrained_unet", str(model_dir), "--latent-dim", "16", "--num-chunks", "4",
            "--num-images", "8", "--num-stages", "3", "--output-dir", str(tmp_path / "p")]  # fmt: skip
    code, out, err = _run(argv, capsys)
    assert code == 0, err
    lines = out.splitlines()
    printed = TimestepPartition.from_dict(json.loads(lines[0]))
    # the same profile computed through the library gives the same partition
    images = validation_batch(
        load_image_dataset("diti-shapes", num_images=8, resolution=SIZE), ImageTransform(SIZE), 8
    )
    coefficients = DiffusionCoefficients.from_scheduler_config(pipe.scheduler.config)

    def eps_fn(x, t):
        with torch.no_grad():
            return pipe.unet(x, t).sample

    expected = partition_from_profile(loss_profile(eps_fn, images, coefficients), 16, 4, 3)
    assert printed == expected and printed.stages[-1] == 1000
    assert f"--stages {' '.join(map(str, printed.stages))} --dims_per_stage" in out
    saved = json.loads((tmp_path / "p" / "loss_profile.json").read_text())
    assert saved["partition"] == printed.to_dict() and (tmp_path / "p" / "loss_profile.png").is_file()
    code, _, err = _run(["partition", "--pretrained-unet", str(tmp_path / "none"), "--latent-dim", "4",
                         "--num-chunks", "2"], capsys)  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no UNet2DModel" in err


def test_demo_with_a_model_and_a_baseline(model_dir, pdae_dir, tmp_path, capsys):
    argv = ["demo", "--model", model_dir, "--baseline", pdae_dir, "--num-images", 60, "--num-examples", 2]
    argv += ["--steps", 1, "--eval-steps", 1, "--swap-pairs", 4, "--edit-scales", -1, 1, "--threads", 1]
    code, out, _ = _run([*argv, "--counterfactual", "--output-dir", tmp_path, "--no-progress"], capsys)
    assert code == 0 and "INTERIM" not in out
    assert "seconds per section: setup" in out
    assert f"the full report: diti-hf evaluate --model {model_dir} --baseline {pdae_dir}" in out
    assert all((tmp_path / name).is_file() for name in OUTPUT_FILES)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["mode"] == "trained" and report["notice"] is None and report["parity"] is None
    assert report["model"] == str(model_dir) and report["baseline"] == str(pdae_dir)
    assert report["swap_ranges"] == {"coarse": [750, 1000], "fine": [0, 250]}  # last / first third of 4 chunks
    assert {"diti", "pdae", "random_init", "pixels"} <= report["summary"].keys()
    assert report["summary"]["diti"]["num_chunks"] == 4 and report["summary"]["pdae"]["num_chunks"] == 1
    assert report["summary"]["pdae"]["counterfactual_targeted_flip_rate"] is not None
    assert report["edit"]["factor"] == "background" and report["edit"]["scales"] == [-1.0, 1.0]
    assert 0.0 <= report["edit"]["probe"]["test_accuracy"] <= 1.0
    zoom = math.ceil(96 / SIZE)
    assert _captioned(PIL.Image.open(tmp_path / "reconstruction.png").size, _grid_size(2, 2, cell=SIZE * zoom))
    assert _captioned(PIL.Image.open(tmp_path / "swap_coarse.png").size, _grid_size(3, 3, cell=SIZE * zoom))
    assert _captioned(PIL.Image.open(tmp_path / "edit.png").size, _grid_size(2, 3, cell=SIZE * zoom))
    assert _captioned(PIL.Image.open(tmp_path / "interpolation.png").size, _grid_size(2, 7, cell=SIZE * zoom))
    md = (tmp_path / "report.md").read_text()
    assert "| metric | diti | pdae |" in md.replace(" | random_init | pixels", "")
    assert "| factor | granularity | DDPM attribute-loss t | diti decodable t |" in md
    assert report["evaluation"]["attribute_loss"]["ddpm_of"] == "diti"
    assert demo_module.ORACLE_SECTIONS not in report["full_report"]["not_run"]


def test_demo_runs_the_headline_metrics_and_names_the_full_report(model_dir, tmp_path, capsys):
    """By default the demo leaves the oracle-read and the slow sections to `diti-hf evaluate`, and says so."""
    argv = ["demo", "--model", model_dir, "--num-images", 60, "--num-examples", 2, "--steps", 1]
    argv += ["--edit-scales", -1, 1, "--threads", 1, "--output-dir", tmp_path, "--no-progress"]
    code, out, _ = _run(argv, capsys)
    assert code == 0 and all((tmp_path / name).is_file() for name in OUTPUT_FILES)
    report = json.loads((tmp_path / "report.json").read_text())
    evaluation = report["evaluation"]
    assert {"attribute_loss", "loss_profile", "ddpm_samples"}.isdisjoint(evaluation)
    for entry in evaluation["models"].values():
        assert {"counterfactual", "disentanglement", "regeneration", "reconstruction"}.isdisjoint(entry)
    assert 0.0 <= report["summary"]["diti"]["probe_mean_accuracy"] <= 1.0
    assert "decodable_timestep" in evaluation["models"]["diti"]["alignment"]  # the heatmap's numbers
    assert report["summary"]["diti"]["reconstruction_psnr"] == report["reconstruction"]["diti"]["psnr"]
    full = report["full_report"]
    assert full["not_run"] == [demo_module.ORACLE_SECTIONS, *demo_module.FULL_REPORT_SECTIONS]
    assert full["command"] == f"diti-hf evaluate --model {model_dir} --output-dir outputs/evaluate"
    assert f"not run by the demo: {', '.join(full['not_run'])}; the full report: {full['command']}" in out
    md = (tmp_path / "report.md").read_text()
    assert full["command"] in md and "attribute-loss t |" not in md
    assert "| DCI" not in md and "| counterfactual" not in md
    assert "| factor | granularity | diti decodable t |" in md
    assert {"data", "reconstruction", "swaps", "interpolation", "edit", "evaluation"} <= report["seconds"].keys()


def test_demo_interim_mode_on_the_official_fixture(tmp_path, capsys):
    argv = ["demo", "--official-fixture", FIXTURE_DIR, "--num-images", 40, "--num-examples", 2, "--steps", 1]
    code, out, _ = _run([*argv, "--threads", 1, "--output-dir", tmp_path, "--no-progress"], capsys)
    assert code == 0 and out.startswith(INTERIM_NOTICE)
    assert all((tmp_path / name).is_file() for name in OUTPUT_FILES)
    report = json.loads((tmp_path / "report.json").read_text())
    expected_keys = {"mode", "notice", "model", "parity", "reconstruction", "edit", "summary", "evaluation", "files"}
    assert expected_keys <= report.keys() and report["mode"] == "interim" and report["notice"] == INTERIM_NOTICE
    assert report["parity"].keys() == {"eps", "shift_G", "encoder", "ddim_inversion", "ddim_generation"}
    assert all(entry["ok"] and entry["max_abs_error"] <= 2e-4 for entry in report["parity"].values())
    assert "max abs error" in out and report["partition"]["num_chunks"] == 16
    assert report["swap_ranges"] == {"coarse": [688, 1000], "fine": [0, 313]}  # last / first 5 of 16 chunks
    assert INTERIM_NOTICE in (tmp_path / "report.md").read_text()
    assert _captioned(PIL.Image.open(tmp_path / "reconstruction.png").size, _grid_size(2, 2, cell=2 * 64))


def test_demo_without_a_shipped_model_falls_back_to_the_interim_mode(pipe, tmp_path, monkeypatch, capsys):
    calls = {}
    monkeypatch.setattr(
        demo_module, "resolve_default", lambda path: FIXTURE_DIR if path == demo_module.DEFAULT_FIXTURE else None
    )

    def fake_fixture_pipeline(path):
        calls["fixture"] = path
        return pipe, {"eps": {"ok": True}}

    def fake_run_demo(p, config, **kwargs):
        calls["config"] = config
        return {"seconds": {"total": 0.0}}

    monkeypatch.setattr(demo_module, "official_fixture_pipeline", fake_fixture_pipeline)
    monkeypatch.setattr(demo_module, "run_demo", fake_run_demo)
    code, out, _ = _run(["demo", "--output-dir", tmp_path, "--threads", 1], capsys)
    assert code == 0 and calls["fixture"] == FIXTURE_DIR and "no trained model at pretrained/diti-shapes32" in out
    config = calls["config"]
    assert config.interim and (config.steps, config.num_images, config.num_examples) == (5, 200, 3)


# ---------------------------------------------------------------------------------------------------------- errors
def _bad_cases(model, images, tmp):
    img = str(images / "img0.png")
    return [
        (["encode", "--model", tmp / "nope", "--images", images, "--output", tmp / "z.npy"], "no such folder"),
        (["encode", "--model", images, "--images", images, "--output", tmp / "z.npy"], "cannot load a DiTi pipeline"),
        (["encode", "--model", model, "--images", images, "--output", tmp / "z.csv"], "unknown extension '.csv'"),
        (["encode", "--model", model, "--images", tmp / "none", "--output", tmp / "z.npy"], "--images"),
        (["encode", "--model", model, "--images", images, "--dataset", "x", "--output", "z.npy"], "not allowed with"),
        (["encode", "--model", model, "--images", images, "--output", tmp / "z.npy", "--resume"], "--resume needs"),
        (["encode", "--model", model, "--images", images, "--output", "z.npy", "--batch-size", "0"], "positive integer"),
        (["swap", "--model", model, "--source", img, "--target", img, "--timesteps", "500", "1500", "--output-dir", tmp],
         "0 <= LO < HI <= T=1000"),
        (["swap", "--model", model, "--source", img, "--target", img, "--timesteps", "600", "400", "--output-dir", tmp],
         "--timesteps 600 400"),
        (["swap", "--model", model, "--source", img, "--target", img, "--chunks", "2", "9", "--output-dir", tmp],
         "0 <= I < J <= 4"),
        (["swap", "--model", model, "--source", img, "--target", img, "--output-dir", tmp], "at least one --timesteps"),
        (["edit", "--model", model, "--images", img, "--direction", tmp / "w5.npy", "--output-dir", tmp],
         "expected 16 numbers"),
        (["edit", "--model", model, "--images", img, "--direction", tmp / "bomb.npy", "--output-dir", tmp],
         "claims 1000000000000 values"),
        (["edit", "--model", model, "--images", img, "--direction", tmp / "missing.npy", "--output-dir", tmp],
         "no such file"),
        (["edit", "--model", model, "--images", img, "--direction", tmp / "w16.npy", "--top-k", "99",
          "--output-dir", tmp], "at most the model's latent_dim 16"),
        (["interpolate", "--model", model, "--source", img, img, "--target", img, "--output-dir", tmp],
         "--source has 2 images but --target has 1"),
        (["interpolate", "--model", model, "--source", img, "--target", img, "--timesteps", "0", "500", "--chunks",
          "0", "1", "--output-dir", tmp], "not both"),
        (["interpolate", "--model", model, "--source", img, "--target", img, "--alphas", "0", "nan",
          "--output-dir", tmp], "finite number"),
        (["reconstruct", "--model", model, "--images", img, "--device", "gpu7", "--output-dir", tmp],
         "is not a torch device"),
        (["reconstruct", "--model", model, "--images", img, "--steps", "0", "--output-dir", tmp], "positive integer"),
        (["reconstruct", "--model", model, "--images", tmp / "w5.npy", "--output-dir", tmp], "could not be decoded"),
        (["reconstruct", "--model", model, "--images", img, "--output-dir", tmp / "w5.npy"], "is not a folder"),
        (["evaluate", "--model", model, "--timesteps", "0", "2000", "--output-dir", tmp], "--timesteps 0 2000"),
        (["demo", "--official-fixture", tmp / "nope"], "no such folder"),
        (["demo", "--official-fixture", FIXTURE_DIR, "--model", model], "drop --model"),
        (["demo", "--model", tmp / "nope"], "no such folder"),
    ]  # fmt: skip


N_BAD = 26


@pytest.mark.parametrize("case", range(N_BAD))
def test_bad_arguments_give_one_line_and_exit_code_2(case, model_dir, image_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "w5.npy", np.ones(5, np.float32))
    np.save(tmp_path / "w16.npy", np.ones(16, np.float32))
    with open(tmp_path / "bomb.npy", "wb") as f:  # a header claiming 4 TB of floats over 8 bytes of data
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (10**12,)})
        f.write(bytes(8))
    cases = _bad_cases(model_dir, image_dir, tmp_path)
    assert len(cases) == N_BAD
    argv, message = cases[case]
    code, _, err = _run(argv, capsys)
    assert code == 2, err
    assert err.startswith("diti-hf: error: ") and err.count("\n") == 1 and message in err, err
    assert "Traceback" not in err


def test_existing_extraction_needs_resume(model_dir, image_dir, tmp_path, capsys):
    argv = ["encode", "--model", model_dir, "--images", image_dir, "--output-dir", tmp_path / "f", "--no-progress"]
    assert _run(argv, capsys)[0] == 0
    code, _, err = _run(argv, capsys)
    assert code == 2 and "already holds a feature extraction" in err and "--resume" in err and err.count("\n") == 1
    code, out, _ = _run([*argv, "--resume"], capsys)
    assert code == 0 and "resumed after 1 complete shards" in out
