"""The evaluation sized by its images: the per-image sizes follow `--num-images`, every minimum is refused before any
work with the flag named, and a failed run leaves no folder behind."""

from __future__ import annotations

import json

import pytest

from diti_hf.data.shapes import generate_shapes
from diti_hf.evaluation import EvaluationConfig, run_benchmark, split_indices
from diti_hf.evaluation.config import DEFAULT_SIZES
from diti_hf.evaluation.probes import split_sizes

# the fast settings of a tiny run; no per-image size among them
FAST = [
    "--probe-epochs", "1", "--steps", "2", "--sample-steps", "2", "--oracle-epochs", "1",
    "--timesteps", "0", "500", "--timesteps", "500", "1000", "--regeneration-timesteps", "500",
    "--swap-protocols", "shared_random", "--no-plots", "--no-progress", "--threads", "1",
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from conftest import tiny_pipeline

    folder = tmp_path_factory.mktemp("tiny") / "diti"
    tiny_pipeline(num_chunks=4).save_pretrained(folder)
    return str(folder)


def test_the_sizes_follow_num_images_and_a_given_size_wins(tiny_dir, tmp_path, capsys):
    from diti_hf.cli import main as cli_main

    out = tmp_path / "eval"
    argv = ["evaluate", "--model", tiny_dir, "--num-images", "12", "--swap-pairs", "5", "--output-dir", str(out)]
    assert cli_main([*argv, *FAST]) == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["dataset"]["splits"] == {"train": 7, "val": 2, "test": 3}
    config = report["config"]
    # unset: the smaller of the default and the pool (3 test images, 12 in all); given: as given, even above the pool
    assert config["num_swap_pairs"] == 5 and "num_swap_pairs" not in config["auto_sizes"]
    assert config["auto_sizes"] == [name for name in DEFAULT_SIZES if name != "num_swap_pairs"]
    for name in ("num_attribute_loss_images", "num_reconstruction_images", "num_loss_profile_images"):
        assert config[name] == 3, name
    assert config["num_regeneration_images"] == config["num_validity_samples"] == 3
    assert config["granularity_pairs"] == config["disentanglement_images"] == 12
    # and the sections used those sizes
    model = report["models"]["model"]
    assert model["counterfactual"]["num_pairs"] == model["swap_protocols"]["num_pairs"] == 5
    assert sum(model["counterfactual"]["num_differing_pairs"].values()) <= 5 * len(report["dataset"]["factors"])
    assert model["regeneration"]["num_images"] == 3 and model["reconstruction"]["num_images"] == 3
    assert report["attribute_loss"]["num_images"] == report["loss_profile"]["num_images"] == 3
    assert report["ddpm_samples"]["num_samples"] == report["ddpm_samples"]["num_reference_images"] == 3
    assert model["disentanglement"]["num_images"] == 12


def test_the_defaults_hold_on_a_large_run():
    config = EvaluationConfig().sized_for({"train": 1200, "val": 400, "test": 400})
    assert {name: getattr(config, name) for name in DEFAULT_SIZES} == {
        name: default for name, (default, _) in DEFAULT_SIZES.items()
    }
    given = EvaluationConfig(num_reconstruction_images=7).sized_for({"train": 4, "val": 1, "test": 2})
    assert given.num_reconstruction_images == 7 and given.num_swap_pairs == 2 and given.disentanglement_images == 7
    with pytest.raises(ValueError, match="`num_swap_pairs` must be a positive int, got 0"):
        EvaluationConfig(num_swap_pairs=0)


@pytest.mark.parametrize("fractions", [(0.6, 0.2, 0.2), (0.8, 0.1, 0.1), (0.34, 0.33, 0.33)])
def test_the_minimum_is_where_every_run_works(fractions):
    for pairs in (False, True):
        minimum, reason = EvaluationConfig(split_fractions=fractions).minimum_images(pairs)
        assert str(fractions) in reason and ("pair" in reason) == pairs

        def fits(n, need=2 if pairs else 1):
            train, val, test = split_sizes(n, fractions)
            return train >= 1 and val >= 1 and test >= need

        assert not fits(minimum - 1) and all(fits(n) for n in range(minimum, 500)), minimum
        assert all(
            len(split_indices(n, fractions)["test"]) == split_sizes(n, fractions)[2] for n in range(minimum, 40)
        )
    assert EvaluationConfig().minimum_images() == (9, EvaluationConfig().minimum_images(True)[1])


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--num-images", "1"], "--num-images 1 is too small: at least 9 images are needed"),
        (["--num-images", "8"], "--num-images 8 is too small: at least 9 images are needed"),  # splits 5/2/1
        (["--num-images", "3", "--no-counterfactual", "--no-regeneration"], "--num-images 3 is too small: at least 4"),
    ],
)
def test_a_too_small_run_is_refused_before_any_work(extra, message, tmp_path, capsys, monkeypatch):
    from diti_hf.cli import main as cli_main
    from diti_hf.commands import _common

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before the sizes were checked")

    monkeypatch.setattr(_common, "load_pipeline", no_loading)
    out = tmp_path / "eval"
    code = cli_main(["evaluate", "--model", str(tmp_path / "no-model"), "--output-dir", str(out), *extra, *FAST])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert "num_images" not in err and "num_items" not in err  # the flag, not the Python names
    assert not out.exists()


def test_the_script_refuses_a_too_small_run_naming_its_flag(capsys):
    from test_evaluation import _load_example

    example = _load_example()
    with pytest.raises(SystemExit) as exit_info:
        example.parse_args(["--model", "a=b", "--output_dir", "x", "--num_images", "5"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--num_images 5 is too small: at least 9 images" in err
    assert "`num_images`" not in err


def test_a_small_loaded_dataset_is_refused_naming_it():
    from conftest import tiny_pipeline
    from diti_hf.evaluation import evaluate_pipeline

    ds = generate_shapes(6, seed=0, resolution=16)
    with pytest.raises(ValueError, match=r"^`dataset` holds 6 images, too few: at least 9"):
        evaluate_pipeline({"diti": tiny_pipeline(num_chunks=4)}, ds, EvaluationConfig(plots=False))


@pytest.mark.parametrize("existing", [False, True])
def test_a_failed_run_leaves_no_folder(existing, tmp_path, monkeypatch):
    from conftest import tiny_pipeline
    from diti_hf.evaluation import suite

    def broken(*args, **kwargs):
        raise RuntimeError("the reconstruction broke")

    monkeypatch.setattr(suite, "_reconstruction_section", broken)
    out = tmp_path / "eval"
    if existing:  # a folder of the user's: its contents stay as they were
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    config = EvaluationConfig(
        oracle_epochs=1, num_inference_steps=2, num_sample_steps=2, regeneration_timesteps=[500], plots=False
    )
    with pytest.raises(RuntimeError, match="reconstruction broke"):
        run_benchmark({"diti": tiny_pipeline(num_chunks=4)}, out, config=config, num_images=10)
    if existing:
        assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    else:
        assert not out.exists()


def test_the_script_names_a_model_folder_it_cannot_load(tiny_dir, tmp_path):
    import shutil

    from test_evaluation import _load_example

    broken = tmp_path / "no-unet"
    shutil.copytree(tiny_dir, broken)
    shutil.rmtree(broken / "unet")
    example = _load_example()
    args = example.parse_args(["--model", f"a={broken}", "--output_dir", str(tmp_path / "out"), "--num_images", "10"])
    with pytest.raises(example.ScriptArgumentError) as info:
        example.main(args)
    message = str(info.value)
    assert message.startswith(f"--model a='{broken}': cannot load a pipeline: ") and "['unet']" in message
    assert "\n" not in message and not (tmp_path / "out").exists()
