"""What a new user meets first: the training scripts refuse impossible runs before step 1, export trained (EMA)
weights by default, say what they do, stop cleanly on Ctrl-C and run quietly under `accelerate launch` on CPU; the
CLI says when it widens a range or resizes an image and labels its grids; the docs' links resolve."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel
from safetensors.torch import load_file

from conftest import EXAMPLES, load_example
from conftest import run_script_main as _run
from conftest import script_fails as _fails
from diti_hf.training.checkpointing import COMPLETE_MARKER

ROOT = Path(__file__).resolve().parents[1]
train_ddpm = load_example("train_ddpm")
train_diti = load_example("train_diti")

RESOLUTION = 16


def _save_base(path: Path, out_channels: int = 3) -> Path:
    torch.manual_seed(0)
    UNet2DModel(
        sample_size=RESOLUTION,
        out_channels=out_channels,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        attention_head_dim=8,
    ).save_pretrained(path / "unet")
    DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02).save_pretrained(path / "scheduler")
    return path


@pytest.fixture(scope="module")
def base_model(tmp_path_factory) -> Path:
    return _save_base(tmp_path_factory.mktemp("base"))


def diti_argv(base: Path, output_dir: Path, *extra: str, resolution: int | None = RESOLUTION) -> list[str]:
    return [
        "--pretrained_unet", str(base),
        "--dataset_name", "diti-shapes",
        "--num_train_images", "64",
        *(("--resolution", str(resolution)) if resolution is not None else ()),
        "--encoder_block_out_channels", "16", "16",
        "--encoder_attention_stages",
        "--encoder_norm_num_groups", "8",
        "--latent_dim", "16",
        "--num_chunks", "4",
        "--train_batch_size", "8",
        "--num_threads", "1",
        "--validation_steps", "0",
        "--num_validation_images", "2",
        "--validation_inference_steps", "2",
        "--loss_profile_images", "8",
        "--logging_steps", "1",
        "--report_to", "none",
        "--output_dir", str(output_dir),
        *extra,
    ]  # fmt: skip


def _subprocess_env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": str(ROOT / "src"),
    }


# --------------------------------------------------------------------------- mismatches found before step 1
def _earlier_run(out: Path, what: str) -> None:
    out.mkdir(parents=True)
    if what == "checkpoint":
        (out / "checkpoint-4").mkdir()
        (out / "checkpoint-4" / COMPLETE_MARKER).write_text("{}")
    else:
        (out / "model_index.json").write_text("{}")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--resolution", "32"], "--resolution: trains at 32×32 but the frozen UNet"),
        (["--encoder_preset", "small32"], "--encoder_preset: small32 is the encoder for 32×32 images"),
        (["--validation_swap_timesteps", "0", "2000"], "--validation_swap_timesteps: [(0, 2000)] exceed T=1000"),
    ],
    ids=["resolution", "encoder-preset", "swap-range"],
)
def test_a_mismatch_with_the_ddpm_exits_2_before_the_first_step(base_model, tmp_path, capsys, extra, expected):
    out = tmp_path / "run"
    argv = diti_argv(base_model, out, "--max_train_steps", "3", "--checkpointing_steps", "1")
    if extra[0] == "--resolution":
        argv = diti_argv(base_model, out, "--max_train_steps", "3", "--checkpointing_steps", "1", resolution=None)
    start = time.perf_counter()
    line = _fails(train_diti, [*argv, *extra], capsys)
    seconds = time.perf_counter() - start
    assert expected in line, line
    assert seconds < 30, seconds  # the UNet is loaded (about 1 s here), nothing is trained
    assert not out.exists() or not any(out.glob("checkpoint-*"))  # not a single step was taken


def test_a_learned_variance_unet_is_refused_before_the_first_step(tmp_path, capsys):
    base = _save_base(tmp_path / "base6", out_channels=6)
    line = _fails(train_diti, diti_argv(base, tmp_path / "run", "--max_train_steps", "3"), capsys)
    assert "--pretrained_unet" in line and "out_channels=6" in line and "ε-prediction" in line


@pytest.mark.parametrize("what", ["checkpoint", "model"])
def test_an_output_dir_holding_an_earlier_run_is_refused_without_resume(base_model, tmp_path, capsys, what):
    out = tmp_path / "run"
    _earlier_run(out, what)
    start = time.perf_counter()
    with pytest.raises(SystemExit) as exit_info:
        train_diti.parse_args(diti_argv(base_model, out, "--max_train_steps", "3"))
    assert exit_info.value.code == 2 and time.perf_counter() - start < 5
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--output_dir" in err and "--resume_from_checkpoint latest" in err
    assert ("checkpoint-4" if what == "checkpoint" else "model_index.json") in err
    train_diti.parse_args(diti_argv(base_model, out, "--resume_from_checkpoint", "latest"))  # continuing is fine
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit):
        train_ddpm.parse_args(["--dataset_name", "diti-shapes", "--output_dir", str(tmp_path / "file")])
    assert "exists and is not a folder" in capsys.readouterr().err


def test_push_to_hub_without_a_login_is_refused_before_training(base_model, tmp_path, capsys, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    argv = diti_argv(base_model, tmp_path / "run", "--push_to_hub")
    with pytest.raises(SystemExit):
        train_diti.parse_args(argv)
    assert "--push_to_hub: no Hub token" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_diti.parse_args([*argv, "--hub_token", "hf_x", "--hub_model_id", "not a repo id"])
    assert "--hub_model_id: 'not a repo id' is not a Hub repo id" in capsys.readouterr().err
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(SystemExit):
        train_diti.parse_args([*argv, "--hub_token", "hf_x"])
    assert "HF_HUB_OFFLINE" in capsys.readouterr().err


# --------------------------------------------------------------------------- the default EMA exports training
def _output_norm_ratio(out: Path, steps: int) -> float:
    """‖exported conv_out‖ / ‖trained conv_out‖ of the decoder, whose output conv starts at zero."""
    exported = load_file(out / "decoder" / "diffusion_pytorch_model.safetensors")["conv_out.weight"]
    trained = load_file(out / f"checkpoint-{steps}" / "model.safetensors")["decoder.conv_out.weight"]
    assert float(trained.norm()) > 0
    return float(exported.norm() / trained.norm())


def test_the_default_ema_exports_trained_weights_and_says_so(base_model, tmp_path, caplog):
    """60 steps at the default learning rate and EMA (the quick start's shape, smaller): the exported decoder output
    conv holds at least 60 % of the trained one's norm (it starts at zero). The official constant 0.9999
    (--no-ema_warmup) exports under 1 % of it — what the quick start used to ship — and says so at start."""
    steps = "60"
    common = ("--max_train_steps", steps, "--checkpointing_steps", steps)
    with caplog.at_level("INFO", logger="train_diti"):
        _run(train_diti, diti_argv(base_model, tmp_path / "warm", *common))
    start_up = [r.getMessage() for r in caplog.records if r.getMessage().startswith("training ")]
    assert len(start_up) == 1 and "EMA warm-up 1-(1+step)^(-2/3) up to 0.9999 (decay 0.9348 at step 60)" in start_up[0]
    warm = _output_norm_ratio(tmp_path / "warm", 60)
    assert warm >= 0.6, warm

    caplog.clear()
    with caplog.at_level("INFO", logger="train_diti"):
        _run(train_diti, diti_argv(base_model, tmp_path / "constant", *common, "--no-ema_warmup"))
    constant = _output_norm_ratio(tmp_path / "constant", 60)
    assert constant < 0.01, constant
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        "EMA constant 0.9999 (the exported weights are 99% the initial ones after 60 steps)" in m for m in messages
    )
    assert any(r.levelname == "WARNING" and "--ema_decay 0.9999 without warm-up over 60 steps" in r.getMessage()
               for r in caplog.records)  # fmt: skip


def test_resuming_with_another_ema_kind_is_refused(base_model, tmp_path, capsys):
    out = tmp_path / "run"
    _run(train_diti, diti_argv(base_model, out, "--max_train_steps", "2", "--checkpointing_steps", "2",
                               "--no-ema_warmup"))  # fmt: skip
    argv = diti_argv(base_model, out, "--max_train_steps", "3", "--resume_from_checkpoint", "latest")
    line = _fails(train_diti, argv, capsys)
    assert "--ema_warmup: the checkpoint's EMA is a constant-decay EMA; resume it with --no-ema_warmup" in line
    summary = _run(train_diti, [*argv, "--no-ema_warmup"])
    assert summary["global_step"] == 3


# --------------------------------------------------------------------------- help, start-up line, DDPM defaults
@pytest.mark.parametrize("module", [train_diti, train_ddpm])
def test_help_shows_the_defaults(module):
    text = " ".join(module.build_parser().format_help().split())
    for flag, default in (
        ("--train_batch_size", "16"),
        ("--learning_rate", "0.0001"),
        ("--checkpointing_steps", "500"),
        ("--ema_decay", "0.9999"),
        ("--ema_warmup", "True"),
        ("--lr_scheduler", "constant"),
    ):
        assert re.search(rf"{flag}\b[^-]*?.*?\(default: {re.escape(default)}\)", text), (flag, default)
    assert "(default: None)" not in text and "(default: False)" not in text


def test_start_up_line_lists_the_run(base_model, tmp_path, caplog):
    out = tmp_path / "run"
    with caplog.at_level("INFO", logger="train_diti"):
        _run(train_diti, diti_argv(base_model, out, "--max_train_steps", "1", "--learning_rate", "3e-4"))
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("training ")]
    for part in (f"into {out}", "lr 0.0003 (constant, 0 warm-up steps)", "EMA warm-up",
                 "z: d=16 in k=4 chunks, uniform partition (4 dims per chunk)", "mode stop_grad"):  # fmt: skip
        assert part in line, (part, line)


def test_train_ddpm_keeps_the_last_three_checkpoints_by_default(tmp_path):
    argv = ["--dataset_name", "diti-shapes", "--output_dir", str(tmp_path / "o")]
    args = train_ddpm.parse_args(argv)
    assert args.checkpoints_total_limit == 3 and args.ema_warmup
    assert train_ddpm.parse_args([*argv, "--checkpoints_total_limit", "7"]).checkpoints_total_limit == 7
    assert train_diti.parse_args(["--pretrained_unet", "x", *argv]).checkpoints_total_limit is None


# --------------------------------------------------------------------------- accelerate on CPU, Ctrl-C
def test_accelerate_launch_with_the_cpu_config_prints_no_warning_block(base_model, tmp_path):
    out = tmp_path / "run"
    command = [
        str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file", str(EXAMPLES / "accelerate_cpu.yaml"),
        str(EXAMPLES / "train_diti.py"), *diti_argv(base_model, out, "--max_train_steps", "2"),
    ]  # fmt: skip
    result = subprocess.run(command, env=_subprocess_env(tmp_path), capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "were not passed to `accelerate launch`" not in result.stderr
    assert "had defaults used instead" not in result.stderr and "To avoid this warning" not in result.stderr
    assert json.loads((out / "training_summary.json").read_text())["num_processes"] == 1


def test_ctrl_c_stops_training_with_one_line(base_model, tmp_path):
    out = tmp_path / "run"
    argv = diti_argv(base_model, out, "--max_train_steps", "100000", "--checkpointing_steps", "2")
    # Children of a non-interactive shell can inherit SIGINT ignored; a terminal's Ctrl-C finds it at its default.
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "train_diti.py"), *argv],
        env=_subprocess_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 180
    while not list(out.glob("checkpoint-*")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    last = err.replace("\r", "\n").strip().splitlines()[-1]
    match = re.fullmatch(
        r"train_diti\.py: interrupted at step (\d+) \(last checkpoint: checkpoint-(\d+)\); "
        r"resume with --resume_from_checkpoint latest",
        last,
    )
    assert match, last
    assert int(match[2]) <= int(match[1]) and int(match[2]) % 2 == 0 and (out / f"checkpoint-{match[2]}").is_dir()


# --------------------------------------------------------------------------- diffusers' generic loader
def test_diffusion_pipeline_loads_a_diti_folder_once_diti_hf_is_imported(tmp_path):
    """diffusers resolves `_class_name` in its own namespace; `import diti_hf` puts DiTiPipeline there. The README and
    the model card say so, with the error diffusers gives without it."""
    from conftest import tiny_pipeline

    tiny_pipeline().save_pretrained(tmp_path / "pipe")
    code = (
        "import sys\nfrom diffusers import DiffusionPipeline\n"
        "try:\n    DiffusionPipeline.from_pretrained(sys.argv[1])\nexcept AttributeError as e:\n    print('without:', e)\n"
        "import diti_hf\nprint('with:', type(DiffusionPipeline.from_pretrained(sys.argv[1])).__name__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "pipe")], env=_subprocess_env(tmp_path), capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "without: module diffusers has no attribute DiTiPipeline" in result.stdout
    assert "with: DiTiPipeline" in result.stdout
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "DiffusionPipeline.from_pretrained" in readme and "`import diti_hf`" in readme
    template = (ROOT / "src" / "diti_hf" / "model_card_template.md").read_text()
    assert "import diti_hf" in template and "has no attribute DiTiPipeline" in " ".join(template.split())
    for card in (ROOT / "model_cards").glob("diti-hf--*.md"):
        assert "has no attribute DiTiPipeline" in " ".join(card.read_text().split()), card


# --------------------------------------------------------------------------- the docs' links
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
REPO_PATH = re.compile(r"`((?:docs|examples|benchmarks|src|tests|model_cards|pretrained|shared)/[^`\s|*<>]*)`")


@pytest.mark.parametrize("doc", ["README.md", "examples/README.md", "docs/cpu-training-notes.md"])
def test_every_link_and_repo_path_in_the_docs_resolves(doc):
    path = ROOT / doc
    text = path.read_text()
    targets = [t for t in LINK.findall(text) if not t.startswith(("http://", "https://", "mailto:"))]
    missing = [t for t in targets if not (path.parent / t).exists()]
    missing += [t for t in REPO_PATH.findall(text) if not (ROOT / t.rstrip("/")).exists()]
    assert missing == [], missing
    assert targets or doc != "README.md"


# --------------------------------------------------------------------------- CLI: coercions, labels, rounding
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from conftest import tiny_pipeline

    path = tmp_path_factory.mktemp("models") / "diti"
    tiny_pipeline().save_pretrained(path)
    return path


def _cli(argv, capsys) -> tuple[int, str, str]:
    from diti_hf.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_swap_says_when_it_widens_a_range_or_resizes_an_image_and_labels_its_grid(model_dir, tmp_path, capsys):
    from diti_hf.data import generate_shapes
    from diti_hf.visualization import grid_cell_box

    images = generate_shapes(3, seed=7, resolution=16)["image"]
    images[0].save(tmp_path / "a.png")
    images[1].resize((24, 20)).save(tmp_path / "b.png")
    argv = ["swap", "--model", model_dir, "--source", tmp_path / "a.png", tmp_path / "b.png", "--target",
            tmp_path / "a.png", "--timesteps", 10, 20, "--timesteps", 250, 500, "--steps", 1, "--zoom", 4,
            "--output-dir", tmp_path / "out", "--no-progress"]  # fmt: skip
    code, out, err = _cli(argv, capsys)
    assert code == 0, err
    warnings = err.strip().splitlines()
    # 4 chunks over T = 1000: [10, 20) lies in chunk 0 = [0, 250); [250, 500) is exactly chunk 1
    assert warnings[0] == (
        "diti-hf: warning: --timesteps 10 20: z is edited by whole chunks, so this range acts on t in [0, 250) "
        "(chunk 0); give --timesteps 0 250 to say so"
    )
    assert "diti-hf: warning: --source: 1 of 2 image(s) are not 16×16 (e.g. b.png, 24×20)" in warnings[1]
    assert len(warnings) == 2
    assert "swap of t in [0, 250) (chunk 0). First row: targets; first column: sources" in out
    grid = PIL.Image.open(tmp_path / "out" / "swap_t10-20.png")
    cells_bottom = grid_cell_box(2, 1, (16, 16), zoom=4)[3]
    caption = np.asarray(grid.convert("L"))[cells_bottom + 2 :]
    assert caption.shape[0] >= 10 and (caption < 128).sum() > 50  # dark text on the white strip under the cells


def test_evaluation_line_rounds_the_spearman():
    from diti_hf.cli import _evaluation_line

    entry = {
        "probe": {"mean_accuracy": 0.754999},
        "alignment": {"spearman_timestep_vs_granularity": 0.6309523809523809},
    }
    assert _evaluation_line("diti", entry) == "diti: mean probe accuracy 0.755, alignment Spearman 0.63"
    assert (
        _evaluation_line("pdae", {"probe": {"mean_accuracy": 0.5}, "alignment": None})
        == "pdae: mean probe accuracy 0.500"
    )


def test_converting_a_ddpm_alone_gives_a_ddpm_pipeline_folder(tmp_path, capsys):
    from diffusers import DDPMPipeline

    fixture = ROOT / "tests" / "fixtures" / "official-diti"
    code, out, err = _cli(["convert", "--dpm-config", fixture / "dpm_config.yml", "--dpm-checkpoint",
                           fixture / "pretrained_dpm_checkpoint.pt", "--image-size", 64, "--output-dir",
                           tmp_path / "ddpm"], capsys)  # fmt: skip
    assert code == 0, err
    assert json.loads((tmp_path / "ddpm" / "model_index.json").read_text())["_class_name"] == "DDPMPipeline"
    pipe = DDPMPipeline.from_pretrained(tmp_path / "ddpm")
    assert pipe.unet.config.sample_size == 64 and math.isclose(float(pipe.scheduler.betas[-1]), 0.02, rel_tol=1e-6)


def test_cli_model_commands_leave_a_core_free_by_default(model_dir, tmp_path, capsys, monkeypatch):
    """torch's default of one thread per core stalls when another job holds a core (benchmarks/results/speed.md)."""
    from diti_hf.data import generate_shapes

    (tmp_path / "images").mkdir()
    generate_shapes(2, seed=0, resolution=16)["image"][0].save(tmp_path / "images" / "a.png")
    argv = ["encode", "--model", model_dir, "--images", tmp_path / "images", "--no-progress"]
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    try:
        torch.set_num_threads(4)
        code, _, err = _cli([*argv, "--output", tmp_path / "a.npy"], capsys)
        assert code == 0, err
        assert torch.get_num_threads() == 3
        code, _, err = _cli([*argv, "--output", tmp_path / "b.npy", "--threads", "2"], capsys)
        assert code == 0 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)  # what conftest sets for the whole suite
