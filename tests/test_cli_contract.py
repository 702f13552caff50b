"""One contract for every `diti-hf` command: the common flags, images as files or folders (symbolic links to folders
followed inside the folder, reported outside it), one resize warning, one output rule, messages naming the flags, and
a start-up that imports neither torch nor diffusers until a command runs."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from conftest import tiny_pipeline
from diti_hf.cli import build_parser, main
from diti_hf.commands import COMMANDS
from diti_hf.data import generate_shapes

SIZE = 16
# the commands that run a model on images take its flags; `convert` and `export` only read and write files
MODEL_COMMANDS = ["demo", "app", "encode", "reconstruct", "swap", "interpolate", "edit", "evaluate", "partition"]
COMMON_FLAGS = ["--model", "--device", "--batch-size", "--seed", "--threads"]


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


@pytest.fixture(scope="module")
def model_dir(pipe, tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "diti"
    pipe.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("images")
    for i, image in enumerate(generate_shapes(2, seed=7, resolution=SIZE)["image"]):
        image.save(path / f"img{i}.png")
    return path


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _encode(model_dir, *argv):
    return ["encode", "--model", model_dir, "--no-progress", *argv]


# ------------------------------------------------------------------------------------------------------ start-up
def _loaded_after(argv: list[str]) -> dict:
    code = (
        "import json, sys\nfrom diti_hf.cli import main\ncode = main(sys.argv[1:])\n"
        "print(json.dumps({'code': code, 'torch': 'torch' in sys.modules, 'diffusers': 'diffusers' in sys.modules}))"
    )
    result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "argv", [["--help"], ["--version"], ["encode", "--bogus"]] + [[name, "--help"] for name in COMMANDS]
)
def test_help_version_and_usage_errors_import_neither_torch_nor_diffusers(argv):
    loaded = _loaded_after(argv)
    assert loaded["code"] == (2 if "--bogus" in argv else 0)
    assert not loaded["torch"] and not loaded["diffusers"], loaded


def test_import_diti_hf_is_light_and_still_registers_with_diffusers_and_transformers(tmp_path):
    """`import diti_hf` before diffusers and transformers: nothing heavy is imported, and their generic loaders find
    the DiTi classes once they are (the other order is tested in test_usability.py)."""
    tiny_pipeline().save_pretrained(tmp_path / "pipe")
    code = (
        "import sys\nimport diti_hf\nprint('light:', 'torch' not in sys.modules)\n"
        "from diffusers import DiffusionPipeline\n"
        "print('loaded:', type(DiffusionPipeline.from_pretrained(sys.argv[1])).__name__)\n"
        "from transformers import AutoModel\n"
        "print('auto:', type(AutoModel.from_pretrained(sys.argv[1], subfolder='encoder')).__name__)\n"
        "from diti_hf import DiTiEncoderModel, TimestepPartition\nprint('names:', DiTiEncoderModel.__name__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "pipe")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == [
        "light:", "True", "loaded:", "DiTiPipeline", "auto:", "DiTiEncoderTransformersModel", "names:", "DiTiEncoderModel"
    ]  # fmt: skip


def test_the_help_lines_and_help_constants_match_the_library():
    """What `--help` shows without importing the library is the library's: each command's own parser, the
    defaults and choices named in the help texts."""
    from diti_hf import visualization
    from diti_hf.commands import _common
    from diti_hf.partition import PROFILE_SIGNALS

    parser = build_parser()
    listed = {a.dest: a.help for a in parser._subparsers._group_actions[0]._choices_actions}
    assert listed == COMMANDS
    assert _common.DEFAULT_MIN_CELL == visualization.DEFAULT_MIN_CELL
    partition_help = parser._subparsers._group_actions[0].choices["partition"].format_help()
    assert all(signal in partition_help for signal in PROFILE_SIGNALS)


# ------------------------------------------------------------------------------------------------------ the flags
def _flags(command: str) -> set[str]:
    sub = build_parser([command])._subparsers._group_actions[0].choices[command]
    return {flag for action in sub._actions for flag in action.option_strings}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_takes_the_common_flags_the_readme_lists(command):
    flags = _flags(command)
    expected = COMMON_FLAGS if command in MODEL_COMMANDS else ["--threads"]
    assert set(expected) <= flags, (command, set(expected) - flags)
    readme = " ".join(Path("README.md").read_text(encoding="utf-8").split())
    assert "Every command takes `--threads`" in readme and "all but `convert` and `export`" in readme


def test_partition_takes_model_and_threads(model_dir, tmp_path, capsys):
    argv = ["partition", "--model", model_dir, "--threads", 1, "--latent-dim", 16, "--num-chunks", 4,
            "--num-images", 4, "--num-stages", 2, "--batch-size", 4]  # fmt: skip
    code, out, err = _run(argv, capsys)
    assert code == 0, err
    assert json.loads(out.splitlines()[0])["latent_dim"] == 16
    code, _, err = _run([*argv, "--signal", "nope"], capsys)
    assert code == 2 and err.count("\n") == 1 and "--signal 'nope': choose one of weighted_eps_error" in err


# ------------------------------------------------------------------------------------------------------ images
def test_encode_takes_image_files_as_well_as_folders(pipe, model_dir, image_dir, tmp_path, capsys):
    out = tmp_path / "z.npy"
    code, _, err = _run(_encode(model_dir, "--images", image_dir / "img1.png", "--output", out), capsys)
    assert code == 0, err
    expected = pipe.encode([PIL.Image.open(image_dir / "img1.png").convert("RGB")]).z.numpy()
    assert np.abs(np.load(out) - expected).max() <= 1e-6
    assert json.loads((tmp_path / "z.json").read_text())["ids"] == [(image_dir / "img1.png").as_posix()]


@pytest.mark.parametrize("command", ["encode", "reconstruct"])
def test_the_same_resize_warning_from_every_command(command, model_dir, image_dir, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    PIL.Image.open(image_dir / "img0.png").save(folder / "a.png")
    PIL.Image.open(image_dir / "img1.png").resize((24, 20)).save(folder / "b.png")
    output = ["--output", tmp_path / "z.npy"] if command == "encode" else ["--output-dir", tmp_path / "out"]
    argv = [command, "--model", model_dir, "--images", folder, *output, "--steps", 1, "--no-progress"]
    code, _, err = _run([a for a in argv if command == "reconstruct" or a not in ("--steps", 1)], capsys)
    assert code == 0, err
    warning = "diti-hf: warning: --images: 1 of 2 image(s) are not 16×16 (e.g. b.png, 24×20); the model sees them "
    assert [line for line in err.splitlines() if line.startswith("diti-hf: warning")] == [
        warning + "resized (shorter side to 16) and centre-cropped"
    ]


def test_symlinked_folders_are_followed_inside_and_named_outside(model_dir, image_dir, tmp_path, capsys):
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    (root / "inner").mkdir(parents=True)
    elsewhere.mkdir()
    PIL.Image.open(image_dir / "img0.png").save(root / "inner" / "a.png")
    PIL.Image.open(image_dir / "img1.png").save(elsewhere / "b.png")
    (root / "again").symlink_to(root / "inner", target_is_directory=True)  # inside: read once, as inner/
    (root / "loop").symlink_to(root, target_is_directory=True)
    (root / "photos").symlink_to(elsewhere, target_is_directory=True)
    code, _, err = _run(_encode(model_dir, "--images", root, "--output", tmp_path / "z.npy"), capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "z.json").read_text())["ids"] == ["inner/a.png"]
    assert f"--images '{root}': skipped 1 link to folders outside it: photos → {elsewhere}" in err

    only_link = tmp_path / "only-link"
    only_link.mkdir()
    (only_link / "photos").symlink_to(elsewhere, target_is_directory=True)
    code, _, err = _run(_encode(model_dir, "--images", only_link, "--output", tmp_path / "y.npy"), capsys)
    assert code == 2 and err.count("\n") == 1
    assert "the folder contains no image files (skipped, as links to folders outside it: photos → " in err


# ------------------------------------------------------------------------------------------------------ outputs
def test_an_existing_output_is_replaced_only_with_overwrite(model_dir, image_dir, tmp_path, capsys):
    out = tmp_path / "z.parquet"
    argv = _encode(model_dir, "--images", image_dir, "--output", out)
    assert _run(argv, capsys)[0] == 0
    before = out.read_bytes()
    code, _, err = _run(argv, capsys)
    assert code == 2 and err.count("\n") == 1 and f"--output: {out} exists already; pass --overwrite" in err
    assert out.read_bytes() == before
    assert _run([*argv, "--overwrite"], capsys)[0] == 0

    grid = ["reconstruct", "--model", model_dir, "--images", image_dir / "img0.png", "--steps", 1, "--no-progress",
            "--output-dir", tmp_path / "grid"]  # fmt: skip
    assert _run(grid, capsys)[0] == 0
    code, _, err = _run(grid, capsys)
    assert code == 2 and err.count("\n") == 1 and "reconstruction.png exists already; pass --overwrite" in err
    assert _run([*grid, "--overwrite"], capsys)[0] == 0


# ------------------------------------------------------------------------------------------------------ messages
def test_bad_image_messages_name_the_flag_in_the_cli_and_the_keyword_in_python(pipe, model_dir, image_dir, tmp_path,
                                                                              capsys):  # fmt: skip
    from diti_hf.data.images import BadImageError
    from diti_hf.features import encode_images

    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.png").write_bytes((image_dir / "img0.png").read_bytes())
    (folder / "b.png").write_bytes(b"\x89PNG broken")
    code, _, err = _run(_encode(model_dir, "--images", folder, "--output", tmp_path / "z.npy"), capsys)
    assert code == 2 and err.count("\n") == 1
    assert "pass --skip-bad-images to skip" in err and "skip_bad_images" not in err
    with pytest.raises(BadImageError) as raised:
        encode_images(pipe, [str(folder / "a.png"), str(folder / "b.png")], progress=False)
    assert "pass skip_bad_images=True to skip" in str(raised.value) and "--skip" not in str(raised.value)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--output-dir", "feats", "--overwrite"], "--overwrite applies to --output"),
        (["--output", "z.npy", "--images", "missing.png"], "--images 'missing.png': no such file or folder"),
    ],
)
def test_new_usage_errors_are_one_line_with_exit_code_2(argv, message, model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    images = [] if "--images" in argv else ["--images", str(tmp_path)]
    code, _, err = _run(["encode", "--model", model_dir, *images, *argv], capsys)
    assert code == 2 and err.startswith("diti-hf: error: ") and err.count("\n") == 1 and message in err, err
