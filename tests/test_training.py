"""The training scripts (examples/train_diti.py, examples/train_ddpm.py) and their library pieces: checkpoints that
survive interruption, exact resumption, multi-process consistency, loss decrease, logging."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel
from safetensors.torch import load_file

from conftest import EXAMPLES, load_example, script_fails
from conftest import reset_accelerate as _reset_accelerate
from conftest import run_script_main as _run
from diti_hf.training import (
    UNET_PRESETS,
    DDPMTrainingModel,
    DiTiPreflight,
    DiTiTrainingModel,
    build_diti_model,
    diti_preflight,
    init_decoder_from_unet,
    load_frozen_ddpm_from_args,
)
from diti_hf.training.checkpointing import (
    COMPLETE_MARKER,
    TMP_PREFIX,
    checkpoint_problems,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_state_file,
    remove_incomplete_checkpoints,
    resolve_checkpoint,
    save_checkpoint,
)
from diti_hf.training.ema import make_ema
from diti_hf.training.logging_utils import ThroughputMeter, TimestepLossHistogram, image_grid, parameter_fingerprint

ROOT = Path(__file__).resolve().parents[1]
train_ddpm = load_example("train_ddpm")
train_diti = load_example("train_diti")

RESOLUTION = 16


def tiny_base_unet(seed: int = 0) -> UNet2DModel:
    """A 0.18M-parameter DDPM UNet (16×16, attention at 8×8): fast enough for hundreds of CPU steps."""
    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=RESOLUTION,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        attention_head_dim=8,
    )


@pytest.fixture(scope="module")
def base_model(tmp_path_factory) -> Path:
    """A frozen 'pretrained' DDPM folder in diffusers layout: unet/ and scheduler/."""
    path = tmp_path_factory.mktemp("base")
    tiny_base_unet().save_pretrained(path / "unet")
    DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02).save_pretrained(path / "scheduler")
    return path


def diti_argv(base: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        "--pretrained_unet", str(base),
        "--dataset_name", "diti-shapes",
        "--num_train_images", "64",
        "--resolution", str(RESOLUTION),
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
        "--logging_steps", "1",
        "--output_dir", str(output_dir),
        *extra,
    ]  # fmt: skip


def logged_scalars(output_dir: Path, tag: str, project: str = "train_diti") -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(output_dir / "logs" / project), size_guidance={"scalars": 0})
    events.Reload()
    return {e.step: e.value for e in events.Scalars(tag)}


def logged_image_tags(output_dir: Path, project: str = "train_diti") -> list[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(output_dir / "logs" / project), size_guidance={"images": 0})
    events.Reload()
    return events.Tags()["images"]


def fixed_batch(n: int = 8) -> torch.Tensor:
    from diti_hf.data import ImageTransform, generate_shapes

    dataset = generate_shapes(n, seed=123, resolution=RESOLUTION)
    transform = ImageTransform(RESOLUTION)
    return torch.stack([transform(dataset[i]["image"]) for i in range(n)])


# ------------------------------------------------------------------------------------------- end-to-end training
@pytest.mark.parametrize("mode", ["stop_grad"])
def test_training_lowers_loss_and_keeps_unet_frozen(base_model, tmp_path, capsys, mode):
    from diti_hf import DiffusionCoefficients, DiTiDecoderModel, DiTiPipeline
    from diti_hf.training import diti_loss

    out = tmp_path / "run"
    steps = 300
    summary = _run(
        train_diti,
        diti_argv(
            base_model, out,
            "--max_train_steps", str(steps),
            "--learning_rate", "1e-3",
            "--ema_decay", "0.9",
            "--mode", mode,
            "--checkpointing_steps", "1000",
            "--histogram_steps", "150",
        ),
    )  # fmt: skip

    # the logged training loss falls
    losses = logged_scalars(out, "train/loss")
    assert sorted(losses) == list(range(1, steps + 1))
    first = sum(losses[s] for s in range(1, 51)) / 50
    last = sum(losses[s] for s in range(steps - 49, steps + 1)) / 50
    assert last < 0.8 * first, (first, last)

    # the loss on a fixed batch, fixed t and ε: the trained (EMA) models beat the initial G ≡ 0
    pipe = DiTiPipeline.from_pretrained(out)
    images = fixed_batch()
    g = torch.Generator().manual_seed(7)
    timesteps = torch.randint(0, 1000, (8,), generator=g)
    noise = torch.randn(images.shape, generator=g)
    coefficients = DiffusionCoefficients.from_scheduler_config(pipe.scheduler.config)
    with torch.no_grad():
        z = pipe.encoder(images).z
        trained = diti_loss(pipe.unet, pipe.decoder, z, images, pipe.partition, coefficients, mode, timesteps, noise)
        initial_decoder = DiTiDecoderModel.from_unet(pipe.unet, latent_dim=16)
        initial = diti_loss(
            pipe.unet, initial_decoder, z, images, pipe.partition, coefficients, mode, timesteps, noise
        )
    assert trained.loss < 0.8 * initial.loss, (float(initial.loss), float(trained.loss))

    # the frozen UNet is bit-identical
    reference = UNet2DModel.from_pretrained(base_model / "unet").state_dict()
    final = pipe.unet.state_dict()
    assert reference.keys() == final.keys()
    assert all(torch.equal(reference[k], final[k]) for k in reference)

    # throughput and peak memory: printed, logged, summarised
    printed = capsys.readouterr().out
    assert f"finished at step {steps}/{steps}" in printed and "images/s" in printed and "peak memory" in printed
    assert summary["throughput_images_per_s"] > 0 and summary["peak_memory_mb"] > 0
    assert summary["images_this_launch"] == steps * 8
    assert json.loads((out / "training_summary.json").read_text())["global_step"] == steps
    assert logged_scalars(out, "final/throughput_images_per_s")[steps] == pytest.approx(
        summary["throughput_images_per_s"], rel=1e-4
    )
    # the per-t loss histogram and the validation grid are logged as images
    tags = logged_image_tags(out)
    assert "train/loss_per_timestep" in tags and "validation/original_recon_swaps_target" in tags
    assert "validation/reconstruction_mse" in summary
    # a model card describing the run sits next to the pipeline
    card = (out / "README.md").read_text()
    assert "examples/train_diti.py --pretrained_unet" in card and "--max_train_steps 300" in card


def test_partition_auto_records_the_fitted_staged_partition(base_model, tmp_path):
    from diti_hf import DiTiPipeline

    out = tmp_path / "auto"
    argv = diti_argv(base_model, out, "--partition", "auto", "--partition_stages", "3", "--loss_profile_images", "16")
    _run(train_diti, [*argv, "--max_train_steps", "2", "--checkpointing_steps", "1"])
    recorded = json.loads((out / "loss_profile.json").read_text())
    assert recorded["profile"]["num_images"] == 16 and len(recorded["profile"]["timesteps"]) == 25
    assert (out / "loss_profile.png").stat().st_size > 0
    config = json.loads((out / "encoder" / "config.json").read_text())
    assert config["stages"] == recorded["partition"]["stages"] and config["stages"][-1] == 1000
    assert config["dims_per_stage"] == recorded["partition"]["dims_per_stage"]
    assert sum(config["dims_per_stage"]) == 16
    assert 1 <= len(config["stages"]) <= 3
    pipe = DiTiPipeline.from_pretrained(out)
    assert pipe.partition.stages == config["stages"]
    assert "ddpm/loss_profile" in logged_image_tags(out)
    # a resumed launch takes the partition recorded at the start, not a new fit (here: an edited record)
    recorded["partition"]["stages"], recorded["partition"]["dims_per_stage"] = [500, 1000], [8, 8]
    (out / "loss_profile.json").write_text(json.dumps(recorded))
    _run(train_diti, [*argv, "--max_train_steps", "3", "--resume_from_checkpoint", "latest"])
    resumed = json.loads((out / "encoder" / "config.json").read_text())
    assert resumed["stages"] == [500, 1000] and resumed["dims_per_stage"] == [8, 8]


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--partition", "auto", "--stages", "500", "1000", "--dims_per_stage", "8", "8"], "--partition auto"),
        (["--partition", "auto", "--loss_profile_images", "0"], "--loss_profile_images"),
    ],
)
def test_partition_flag_errors(base_model, tmp_path, capsys, extra, expected):
    with pytest.raises(SystemExit) as exit_info:
        train_diti.parse_args(diti_argv(base_model, tmp_path / "x", *extra))
    assert exit_info.value.code == 2 and expected in capsys.readouterr().err


def test_preflight_returns_every_problem_with_the_ddpm_and_the_resolution(tmp_path):
    args = train_diti.parse_args(diti_argv(tmp_path, tmp_path / "out"))
    unet = tiny_base_unet()
    assert diti_preflight(args) == DiTiPreflight([])
    assert diti_preflight(args, unet, 1000) == DiTiPreflight([], RESOLUTION)
    args.resolution = 2 * RESOLUTION
    found = diti_preflight(args, unet, 2)  # k = 4 chunks > T = 2, and 32×32 training for a 16×16 UNet
    assert [problem.split(":")[0] for problem in found.problems] == ["--num_chunks (k)", "--resolution"]
    assert found.resolution == 2 * RESOLUTION


@pytest.mark.parametrize("streaming", [False, True], ids=["map", "streaming"])
def test_kill_and_resume_equals_straight_run(base_model, tmp_path, streaming):
    """2N steps straight == N steps, stop, --resume_from_checkpoint latest, N steps (with accumulation and flips)."""
    common = (
        *(("--streaming", "--shuffle_buffer_size", "16") if streaming else ()),
        "--max_train_steps", "6",
        "--checkpointing_steps", "3",
        "--gradient_accumulation_steps", "2",
        "--random_flip",
        "--learning_rate", "1e-3",
        "--ema_decay", "0.5",
        "--histogram_steps", "3",
    )  # fmt: skip
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _run(train_diti, diti_argv(base_model, straight, *common))
    first = _run(train_diti, diti_argv(base_model, resumed, *common, "--stop_after_steps", "3"))
    assert first["interrupted"] and first["global_step"] == 3
    assert not (resumed / "model_index.json").exists()  # no final model after an interruption
    assert [p.name for p in list_checkpoints(resumed)] == ["checkpoint-3"]
    second = _run(train_diti, diti_argv(base_model, resumed, *common, "--resume_from_checkpoint", "latest"))
    assert not second["interrupted"] and second["images_this_launch"] == 3 * 2 * 8

    for name in ("model.safetensors",):
        a, b = load_file(straight / "checkpoint-6" / name), load_file(resumed / "checkpoint-6" / name)
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-7)
    ema_a = load_state_file(straight / "checkpoint-6" / "custom_state_0.safetensors")
    ema_b = load_state_file(resumed / "checkpoint-6" / "custom_state_0.safetensors")
    assert ema_a["optimization_step"] == ema_b["optimization_step"] == 6
    for x, y in zip(ema_a["shadow_params"], ema_b["shadow_params"]):
        torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-7)
    enc_a = load_file(straight / "encoder" / "diffusion_pytorch_model.safetensors")
    enc_b = load_file(resumed / "encoder" / "diffusion_pytorch_model.safetensors")
    for key in enc_a:
        torch.testing.assert_close(enc_a[key], enc_b[key], rtol=1e-6, atol=1e-7)

    losses_a, losses_b = logged_scalars(straight, "train/loss"), logged_scalars(resumed, "train/loss")
    assert sorted(losses_a) == sorted(losses_b) == [1, 2, 3, 4, 5, 6]
    for step in losses_a:
        assert losses_a[step] == pytest.approx(losses_b[step], rel=1e-5, abs=1e-7)
    assert len(set(losses_a.values())) == 6  # the losses are real, distinct measurements


def test_two_processes_gloo_identical_weights(base_model, tmp_path):
    """`accelerate launch` with 2 CPU processes (gloo): both ranks end with the same weights; the pipeline encodes."""
    out = tmp_path / "ddp"
    config = tmp_path / "accelerate.yaml"
    # accelerate's `--cpu` launcher starts a single process unless MPI is installed; the multi-process launcher
    # (torchrun) with use_cpu binds each process to the CPU and gloo.
    config.write_text(
        "compute_environment: LOCAL_MACHINE\ndistributed_type: MULTI_GPU\nnum_machines: 1\nnum_processes: 2\n"
        "machine_rank: 0\ngpu_ids: all\nmixed_precision: 'no'\nuse_cpu: true\ndynamo_config: {}\n"
    )
    env = {
        **os.environ,
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "1",
        "ACCELERATE_USE_CPU": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT / "src"),
    }
    command = [
        str(Path(sys.executable).parent / "accelerate"), "launch",
        "--config_file", str(config),
        "--num_processes", "2",
        "--main_process_port", str(29400 + os.getpid() % 500),
        str(EXAMPLES / "train_diti.py"),
        *diti_argv(base_model, out, "--max_train_steps", "3", "--train_batch_size", "4", "--checkpointing_steps", "2"),
    ]  # fmt: skip
    try:
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired as error:  # a rank that hangs (at exit, say): show where the launch got to
        stderr = error.stderr.decode(errors="replace") if isinstance(error.stderr, bytes) else str(error.stderr)
        pytest.fail(f"the 2-process launch did not end in 300 s; its stderr ends:\n{stderr[-3000:]}")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["global_batch_size"] == 8 and summary["global_step"] == 3
    rank0, rank1 = summary["rank_weight_fingerprints"]
    assert rank0 == rank1
    # every rank saved its own generator/data state, and the checkpoint verifies
    assert (out / "checkpoint-2" / "process_state_1.safetensors").is_file()
    assert checkpoint_problems(out / "checkpoint-2") == []

    from diti_hf import DiTiPipeline

    pipe = DiTiPipeline.from_pretrained(out)
    images = fixed_batch(2)
    z = pipe.encode(images).z
    assert z.shape == (2, 16) and torch.isfinite(z).all()
    torch.testing.assert_close(z, pipe.encoder(images).z)
    # the training preprocessing travels with the pipeline: raw PIL images are encoded the same way
    from diti_hf.data import generate_shapes

    pil = [generate_shapes(8, seed=123, resolution=RESOLUTION)[i]["image"] for i in range(2)]
    assert pipe.image_processor.resolution == RESOLUTION and pipe.image_processor.crop_box is None
    torch.testing.assert_close(pipe.encode(pil).z, z)


def test_train_ddpm_output_is_a_diti_base(tmp_path):
    ddpm_out, diti_out = tmp_path / "ddpm", tmp_path / "diti"
    summary = _run(
        train_ddpm,
        [
            "--dataset_name", "diti-shapes",
            "--num_train_images", "32",
            "--resolution", str(RESOLUTION),
            "--unet_preset", "tiny",
            "--block_out_channels", "16", "32",
            "--attention_levels", "1",
            "--train_batch_size", "8",
            "--max_train_steps", "4",
            "--checkpointing_steps", "2",
            "--checkpoints_total_limit", "1",
            "--validation_steps", "0",
            "--num_validation_images", "2",
            "--validation_inference_steps", "2",
            "--logging_steps", "1",
            "--num_threads", "1",
            "--output_dir", str(ddpm_out),
        ],
    )  # fmt: skip
    assert summary["global_step"] == 4 and summary["throughput_images_per_s"] > 0
    assert [p.name for p in list_checkpoints(ddpm_out)] == ["checkpoint-4"]  # the limit pruned checkpoint-2
    from diffusers import DDPMPipeline

    ddpm = DDPMPipeline.from_pretrained(ddpm_out)
    betas = ddpm.scheduler.betas
    assert ddpm.scheduler.config.num_train_timesteps == 1000 and ddpm.scheduler.config.prediction_type == "epsilon"
    assert float(betas[0]) == pytest.approx(1e-4) and float(betas[-1]) == pytest.approx(0.02)
    assert ddpm.unet.config.block_out_channels == [16, 32]
    losses = logged_scalars(ddpm_out, "train/loss", project="train_ddpm")
    assert sorted(losses) == [1, 2, 3, 4] and all(0 < v < 10 for v in losses.values())

    _run(train_diti, diti_argv(ddpm_out, diti_out, "--max_train_steps", "2", "--init_decoder_from_unet"))
    from diti_hf import DiTiPipeline

    pipe = DiTiPipeline.from_pretrained(diti_out)
    trained_unet = ddpm.unet.state_dict()
    assert all(torch.equal(trained_unet[k], v) for k, v in pipe.unet.state_dict().items())


def test_train_ddpm_v_prediction_regresses_the_velocity():
    from diffusers import DDPMScheduler, UNet2DModel

    unet = UNet2DModel(**{**UNET_PRESETS["tiny"], "sample_size": 8, "block_out_channels": (16, 32)})
    scheduler = DDPMScheduler(prediction_type="v_prediction")
    images = torch.rand(3, 3, 8, 8) * 2 - 1
    loss, per_sample, timesteps = DDPMTrainingModel(unet)(images, scheduler, torch.Generator().manual_seed(0))
    # the same draws, in the order the model makes them
    generator = torch.Generator().manual_seed(0)
    t = torch.randint(0, 1000, (3,), generator=generator)
    noise = torch.randn(images.shape, generator=generator)
    assert torch.equal(timesteps, t)
    a = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    velocity = a.sqrt() * noise - (1 - a).sqrt() * images
    with torch.no_grad():
        predicted = unet(scheduler.add_noise(images, noise, t), t).sample
    torch.testing.assert_close(per_sample, (predicted - velocity).pow(2).flatten(1).mean(1))
    assert float(loss) == pytest.approx(float(per_sample.mean()))


# ----------------------------------------------------------------------------------------------- argument errors
@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--latent_dim", "8", "--num_chunks", "16"], "--num_chunks (k): must lie in [1, --latent_dim=8], got 16"),
        (["--stages", "500", "1000"], "--stages/--dims_per_stage: give both or neither"),
        (["--stages", "600", "1000", "--dims_per_stage", "8", "9"], "must sum to latent_dim=16"),
        (["--train_batch_size", "0"], "--train_batch_size: must be >= 1, got 0"),
        (["--ema_decay", "1.5"], "--ema_decay: must lie in [0, 1), got 1.5"),
        (["--train_data_dir", "x"], "--dataset_name/--train_data_dir: give exactly one of them"),
        (["--mode", "simclr"], "argument --mode: invalid choice: 'simclr'"),
    ],
)
def test_argument_errors_exit_2_with_one_line(tmp_path, capsys, extra, expected):
    with pytest.raises(SystemExit) as exit_info:
        train_diti.parse_args(diti_argv(tmp_path, tmp_path / "out", *extra))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("train_diti.py: error: ")
    assert expected in err


def test_data_errors_exit_2_with_one_line(base_model, tmp_path, capsys):
    from diti_hf.training.run import run_script

    _reset_accelerate()
    with pytest.raises(SystemExit) as exit_info:
        run_script(train_diti.main, train_diti.parse_args, diti_argv(base_model, tmp_path, "--image_column", "photo"))
    _reset_accelerate()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "`image_column` 'photo' is not a dataset column" in err[0] and "'image': 'Image'" in err[0]

    with pytest.raises(SystemExit) as exit_info:
        run_script(train_diti.main, train_diti.parse_args, diti_argv(tmp_path / "missing", tmp_path))
    _reset_accelerate()
    assert exit_info.value.code == 2
    assert "--pretrained_unet" in capsys.readouterr().err


@pytest.mark.parametrize("module", [train_diti, train_ddpm])
def test_every_flag_has_help(module):
    parser = module.build_parser()
    undocumented = [a.option_strings for a in parser._actions if a.option_strings and not (a.help or "").strip()]
    assert undocumented == []
    assert len(parser._actions) > 40
    assert "--resume_from_checkpoint" in parser.format_help()  # help texts format (no stray % etc.)


def test_init_decoder_from_unet_copies_up_path_and_keeps_g_zero():
    from diti_hf import DiTiDecoderModel, denoise

    unet = tiny_base_unet(seed=3)
    decoder = DiTiDecoderModel.from_unet(unet, latent_dim=16)
    init_decoder_from_unet(decoder, unet)
    unet_state, dec_state = unet.state_dict(), decoder.state_dict()
    copied = [k for k in dec_state if k.startswith(("mid_block.", "up_blocks.", "conv_norm_out."))]
    copied = [k for k in copied if ".z_emb_proj." not in k]
    assert copied and all(torch.equal(dec_state[k], unet_state[k]) for k in copied)
    assert (dec_state["conv_out.weight"] == 0).all() and (dec_state["conv_out.bias"] == 0).all()
    out = denoise(unet, decoder, torch.randn(2, 3, 16, 16), torch.tensor([5, 700]), torch.randn(2, 16))
    assert out.shift.abs().max() == 0


# ------------------------------------------------------------------------------------------------- checkpointing
class _TinyAccelerated:
    def __init__(self, tmp_path: Path):
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration

        _reset_accelerate()
        self.accelerator = Accelerator(cpu=True, project_config=ProjectConfiguration(project_dir=str(tmp_path)))
        self.model = torch.nn.Linear(3, 2)
        self.optimizer = torch.optim.Adam(self.model.parameters())
        self.model, self.optimizer = self.accelerator.prepare(self.model, self.optimizer)


def test_interrupted_save_never_replaces_previous_checkpoint(tmp_path, monkeypatch):
    run = _TinyAccelerated(tmp_path)
    acc = run.accelerator
    good = save_checkpoint(acc, tmp_path, 1, process_state={"step": 1})
    weights_before = (good / "model.safetensors").read_bytes()

    def crash(output_dir, **kwargs):  # the process dies half-way through writing checkpoint 2
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        Path(output_dir, "model.safetensors").write_bytes(b"partial")
        raise KeyboardInterrupt("killed while saving")

    with torch.no_grad():
        run.model.weight.add_(1.0)
    monkeypatch.setattr(acc, "save_state", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(acc, tmp_path, 2, process_state={"step": 2})
    monkeypatch.undo()
    assert (tmp_path / f"{TMP_PREFIX}2").is_dir() and not (tmp_path / "checkpoint-2").exists()
    assert (good / "model.safetensors").read_bytes() == weights_before
    # a folder with the right name but no completion marker (e.g. an interrupted copy) is not a checkpoint either
    (tmp_path / "checkpoint-3").mkdir()
    assert latest_checkpoint(tmp_path) == good
    assert resolve_checkpoint("latest", tmp_path) == good
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        resolve_checkpoint(str(tmp_path / "checkpoint-3"), tmp_path)

    # resuming restores checkpoint 1 and the process state
    marker, state = load_checkpoint(acc, good)
    assert marker["step"] == 1 and state == {"step": 1}
    assert (run.model.weight.detach().abs() < 1.0).all()  # the +1 of the lost step is gone
    assert [p.name for p in remove_incomplete_checkpoints(tmp_path)] == [f"{TMP_PREFIX}2"]

    # the next save replaces the stale temporary folder and completes
    path = save_checkpoint(acc, tmp_path, 2, process_state={"step": 2})
    assert (path / COMPLETE_MARKER).is_file() and latest_checkpoint(tmp_path) == path
    _reset_accelerate()


def test_checkpoint_total_limit_prunes_only_after_success(tmp_path):
    acc = _TinyAccelerated(tmp_path).accelerator
    for step in (10, 20, 30, 40):
        save_checkpoint(acc, tmp_path, step, total_limit=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-30", "checkpoint-40"]
    # re-saving an existing step keeps exactly one complete copy
    save_checkpoint(acc, tmp_path, 40, total_limit=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-30", "checkpoint-40"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert resolve_checkpoint(None, tmp_path) is None
    assert resolve_checkpoint("latest", tmp_path / "empty") is None
    _reset_accelerate()


# ------------------------------------------------------------------------------------------------ logging pieces
def test_timestep_loss_histogram():
    histogram = TimestepLossHistogram(1000, num_buckets=4)
    histogram.update(torch.tensor([0, 249, 250, 999, 998]), torch.tensor([1.0, 3.0, 4.0, 6.0, 8.0]))
    means = histogram.means()
    assert means[0] == 2.0 and means[1] == 4.0 and torch.isnan(means[2]) and means[3] == 7.0
    assert histogram.bucket_edges() == [0, 250, 500, 750, 1000]
    merged = TimestepLossHistogram(1000, num_buckets=4)
    merged.load_state(histogram.state() * 2)  # e.g. two processes with identical data
    assert merged.means()[[0, 1, 3]].tolist() == [2.0, 4.0, 7.0] and torch.isnan(merged.means()[2])
    assert merged.counts.tolist() == [4.0, 2.0, 0.0, 4.0]
    figure = histogram.figure()
    bars = figure.axes[0].patches
    assert [b.get_height() for b in bars] == [2.0, 4.0, 0.0, 7.0]
    assert [b.get_x() for b in bars] == [0, 250, 500, 750]
    with pytest.raises(ValueError, match="num_buckets"):
        TimestepLossHistogram(10, num_buckets=11)


def test_image_grid_layout():
    rows = [torch.zeros(2, 3, 4, 4), torch.ones(3, 3, 4, 4)]
    grid = image_grid(rows, padding=1, pad_value=0.5)
    assert grid.shape == (3, 2 * 5 + 1, 3 * 5 + 1)
    assert (grid[:, 1:5, 1:5] == 0).all() and (grid[:, 6:10, 11:15] == 1).all()
    assert (grid[:, 1:5, 11:15] == 0.5).all()  # first row has only two images
    assert grid[:, 0].eq(0.5).all()


def test_constant_decay_ema_matches_official_update():
    p = torch.nn.Parameter(torch.zeros(2))
    ema = make_ema([p], decay=0.9)
    for value in (1.0, 2.0):
        with torch.no_grad():
            p.fill_(value)
        ema.step([p])
    # official: e1 = 0.9·0 + 0.1·1 = 0.1; e2 = 0.9·0.1 + 0.1·2 = 0.29 (no warm-up ramp)
    torch.testing.assert_close(ema.shadow_params[0], torch.full((2,), 0.29))
    warm = make_ema([p], decay=0.9, warmup=True)
    assert warm.get_decay(2) < 0.9
    with pytest.raises(ValueError, match="ema_decay"):
        make_ema([p], decay=1.0)


def test_fingerprint_and_throughput():
    a = [torch.tensor([1.0, 2.0]), torch.tensor([[3.0]])]
    assert parameter_fingerprint(a).tolist() == [3.0, 5.0, 3.0, 9.0]
    meter = ThroughputMeter()
    meter.add(10)
    with meter.paused():
        pass
    meter.add(6)
    assert meter.images == 16 and meter.images_per_second() > 0 and meter.window_images_per_second() > 0
    assert meter.window_images_per_second() == 0.0


# --------------------------------------------------------------------------------------------- NaN/inf guard
def _nan_on_calls(monkeypatch, bad_calls: set[int]) -> None:
    """Makes the training model's loss NaN on the given forward calls (counted from 0)."""
    original = DiTiTrainingModel.forward
    calls = {"n": 0}

    def forward(self, *args, **kwargs):
        loss, per_sample, timesteps = original(self, *args, **kwargs)
        bad = calls["n"] in bad_calls
        calls["n"] += 1
        return (loss * float("nan"), per_sample, timesteps) if bad else (loss, per_sample, timesteps)

    monkeypatch.setattr(DiTiTrainingModel, "forward", forward)


def test_nonfinite_loss_batches_are_skipped_and_counted(base_model, tmp_path, monkeypatch):
    _nan_on_calls(monkeypatch, {1, 2})
    summary = _run(train_diti, diti_argv(base_model, tmp_path / "run", "--max_train_steps", "4"))
    assert summary["skipped_nonfinite_batches"] == 2
    assert summary["global_step"] == 4  # the skipped batches are not optimizer steps
    weights = load_file(tmp_path / "run" / "encoder" / "diffusion_pytorch_model.safetensors")
    assert all(torch.isfinite(v).all() for v in weights.values())  # no NaN reached the weights


def test_too_many_nonfinite_losses_abort_with_a_message(base_model, tmp_path, monkeypatch, capsys):
    from diti_hf.training.run import run_script

    _nan_on_calls(monkeypatch, set(range(2, 100)))
    argv = diti_argv(base_model, tmp_path / "run", "--max_train_steps", "50", "--max_nonfinite_steps", "3")
    _reset_accelerate()
    with pytest.raises(SystemExit) as exit_info:
        run_script(train_diti.main, train_diti.parse_args, argv)
    _reset_accelerate()
    assert exit_info.value.code == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert "3 batches in a row had a NaN/inf loss (step 2)" in err[-1]


def test_kill_9_during_a_checkpoint_save_then_resume(base_model, tmp_path):
    """A real SIGKILL while a checkpoint is being written: the previous one survives intact and resuming from
    `latest` ends with the same weights as an uninterrupted run."""
    import signal
    import time

    common = ("--max_train_steps", "8", "--checkpointing_steps", "2", "--learning_rate", "1e-3")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    _run(train_diti, diti_argv(base_model, straight, *common))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "train_diti.py"), *diti_argv(base_model, killed, *common)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    killed_at = None
    deadline = time.monotonic() + 300
    while killed_at is None and time.monotonic() < deadline and proc.poll() is None:
        writing = [int(p.name.rsplit("-", 1)[1]) for p in killed.glob(f"{TMP_PREFIX}*") if p.is_dir()]
        if any(step >= 4 for step in writing):  # an earlier complete checkpoint exists by then
            os.kill(proc.pid, signal.SIGKILL)
            killed_at = max(writing)
        else:
            time.sleep(0.001)
    proc.wait(timeout=60)
    assert killed_at is not None and proc.returncode == -signal.SIGKILL, "the run was not killed mid-save"

    survivors = list_checkpoints(killed)
    assert survivors and int(survivors[-1].name.rsplit("-", 1)[1]) == killed_at - 2
    for path in survivors:  # every complete checkpoint is readable and equals the straight run's at that step
        a, b = load_file(path / "model.safetensors"), load_file(straight / path.name / "model.safetensors")
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-7)

    resumed = _run(train_diti, diti_argv(base_model, killed, *common, "--resume_from_checkpoint", "latest"))
    assert not resumed["interrupted"] and resumed["global_step"] == 8
    for component in ("encoder", "decoder"):
        a = load_file(straight / component / "diffusion_pytorch_model.safetensors")
        b = load_file(killed / component / "diffusion_pytorch_model.safetensors")
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-7)


def test_time_budget_stops_exports_and_resumes(base_model, tmp_path):
    """--max_train_minutes stops at the first step after the budget, saves a checkpoint and a loadable pipeline, and
    the run resumes from that checkpoint (here with the interval masks and loss weighting, whose state resumes too)."""
    from diti_hf import DiTiPipeline

    out = tmp_path / "budget"
    common = ("--max_train_steps", "5", "--checkpointing_steps", "5", "--mask_mode", "interval",
              "--loss_weighting", "interval")  # fmt: skip
    first = _run(train_diti, diti_argv(base_model, out, *common, "--max_train_minutes", "1e-6"))
    assert first["stopped_at_time_budget"] and not first["interrupted"]
    assert first["global_step"] == 1 and first["images_seen"] == 8
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-1"]
    pipe = DiTiPipeline.from_pretrained(out)
    assert pipe.partition.mask_mode == "interval"
    assert json.loads((out / "encoder" / "config.json").read_text())["mask_mode"] == "interval"
    recon = pipe.reconstruct(fixed_batch(2), num_inference_steps=2, output_type="pt").images
    assert recon.shape == (2, 3, RESOLUTION, RESOLUTION) and torch.isfinite(recon).all()
    running = load_file(out / "checkpoint-1" / "model.safetensors")["normalizer.running_mean"]
    assert (running > 0).any()

    second = _run(train_diti, diti_argv(base_model, out, *common, "--resume_from_checkpoint", "latest"))
    assert not second["stopped_at_time_budget"] and second["global_step"] == 5
    assert second["images_this_launch"] == 4 * 8 and second["images_seen"] == 5 * 8
    resumed = load_file(out / "checkpoint-5" / "model.safetensors")["normalizer.running_mean"]
    assert not torch.equal(resumed, running)  # the running means went on from the checkpoint's


def test_export_of_a_checkpoint_equals_the_run_export_and_needs_no_dataset(base_model, tmp_path, monkeypatch, capsys):
    from diti_hf import DiTiPipeline
    from diti_hf.cli import main as cli

    out = tmp_path / "run"
    _run(train_diti, diti_argv(base_model, out, "--max_train_steps", "3", "--checkpointing_steps", "3"))
    exported = tmp_path / "exported"
    # no dataset can be built during the export: the run's record and the checkpoint are all it reads
    monkeypatch.setattr("diti_hf.data.load_image_dataset", lambda *a, **k: pytest.fail("export loaded a dataset"))
    assert cli(["export", "--checkpoint", str(out / "checkpoint-3"), "--output", str(exported)]) == 0
    assert "wrote" in capsys.readouterr().out
    for component in ("encoder", "decoder", "unet"):
        a = load_file(out / component / "diffusion_pytorch_model.safetensors")
        b = load_file(exported / component / "diffusion_pytorch_model.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), component
    for config in ("encoder/config.json", "decoder/config.json", "scheduler/scheduler_config.json"):
        assert json.loads((out / config).read_text()) == json.loads((exported / config).read_text()), config
    card = (exported / "README.md").read_text()
    assert "accelerate launch examples/train_diti.py --pretrained_unet" in card
    assert "step 3, 24 images seen" in card
    pipe = DiTiPipeline.from_pretrained(exported)
    assert pipe.encode(fixed_batch(2)).z.shape == (2, 16)
    # the run folder alone exports its newest checkpoint, by default into RUN_DIR/pipeline-N
    assert cli(["export", "--checkpoint", str(out)]) == 0
    assert (out / "pipeline-3" / "model_index.json").is_file()


def test_export_refuses_a_tampered_or_unrecorded_checkpoint_in_one_line(base_model, tmp_path, capsys):
    from diti_hf.cli import main as cli

    out = tmp_path / "run"
    _run(train_diti, diti_argv(base_model, out, "--max_train_steps", "2", "--checkpointing_steps", "2"))
    ema = out / "checkpoint-2" / "custom_state_0.safetensors"
    data = bytearray(ema.read_bytes())
    data[-1] ^= 0xFF
    ema.write_bytes(bytes(data))
    capsys.readouterr()
    assert cli(["export", "--checkpoint", str(out / "checkpoint-2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is damaged" in err[0] and "custom_state_0.safetensors" in err[0]
    assert not (out / "pipeline-2").exists()
    data[-1] ^= 0xFF
    ema.write_bytes(bytes(data))
    import shutil

    shutil.rmtree(out / "run_record")
    assert cli(["export", "--checkpoint", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no run_record/" in err[0]


def test_dataset_on_device_gives_the_loader_batches_and_the_same_training(base_model, tmp_path):
    from diti_hf.data import ImageTransform, generate_shapes
    from diti_hf.data.loading import DataPosition, DeviceImages, ImageDataset, TrainingImages

    dataset = ImageDataset(generate_shapes(20, seed=3, resolution=RESOLUTION), ImageTransform(RESOLUTION))
    loader, held = TrainingImages(dataset, 4, seed=1), DeviceImages(dataset, 4, seed=1)
    assert held.images.dtype == torch.uint8 and held.images.shape == (20, 3, RESOLUTION, RESOLUTION)
    for start in (None, DataPosition(1, 2)):
        for (pos_a, a), (pos_b, b) in zip(loader(start), held(start)):
            assert pos_a == pos_b and torch.equal(a["pixel_values"], b["pixel_values"])
            assert a["index"].tolist() == b["index"].tolist()
            if pos_a.epoch == 3:
                break
    with pytest.raises(ValueError, match="`dataset_on_device`: 20 images of 3×16×16 take"):
        DeviceImages(dataset, 4, max_bytes=1000)
    flipped = ImageDataset(generate_shapes(4, resolution=RESOLUTION), ImageTransform(RESOLUTION, random_flip=True))
    with pytest.raises(ValueError, match="drop the random crop and flip"):
        DeviceImages(flipped, 4)

    common = ("--max_train_steps", "3", "--checkpointing_steps", "3")
    _run(train_diti, diti_argv(base_model, tmp_path / "loader", *common))
    _run(train_diti, diti_argv(base_model, tmp_path / "device", *common, "--dataset_on_device"))
    a = load_file(tmp_path / "loader" / "checkpoint-3" / "model.safetensors")
    b = load_file(tmp_path / "device" / "checkpoint-3" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_compile_flag_compiles_every_trained_module_and_keeps_the_training(base_model, tmp_path):
    common = ("--max_train_steps", "2", "--checkpointing_steps", "2")
    _run(train_diti, diti_argv(base_model, tmp_path / "eager", *common))
    torch._dynamo.reset()
    args = train_diti.parse_args(
        diti_argv(base_model, tmp_path / "c", *common, "--compile", "--compile_backend", "eager")
    )
    unet, config = load_frozen_ddpm_from_args(args)
    from diti_hf.data import ImageTransform

    model = build_diti_model(args, unet, config, RESOLUTION, ImageTransform(RESOLUTION))
    compiled = [model.encoder, model.decoder, unet.conv_in, *unet.down_blocks, unet.conv_out]
    assert all(m._compiled_call_impl is not None for m in compiled)
    _run(train_diti, diti_argv(base_model, tmp_path / "compiled", *common, "--compile", "--compile_backend", "eager"))
    torch._dynamo.reset()
    a = load_file(tmp_path / "eager" / "checkpoint-2" / "model.safetensors")
    b = load_file(tmp_path / "compiled" / "checkpoint-2" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------------- start-up: bounds, progress, the lock
def _base_with(base: Path, folder: Path, config: str, **fields) -> Path:
    """A copy of the frozen DDPM folder `base` whose `config` (e.g. `"scheduler/scheduler_config.json"`) says
    `fields`."""
    import shutil

    shutil.copytree(base, folder)
    path = folder / config
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))
    return folder


def test_a_frozen_ddpm_beyond_the_loader_bounds_is_one_line_exit_2(base_model, tmp_path):
    """The script as a user runs it: no traceback, one line naming the flag, the file, the field and its bound."""
    base = _base_with(base_model, tmp_path / "base", "scheduler/scheduler_config.json", num_train_timesteps=10**9)
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "train_diti.py"), *diti_argv(base, out, "--report_to", "none")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    err = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(err) == 1 and "Traceback" not in result.stderr, result.stderr
    assert err[0].startswith("train_diti.py: error: --pretrained_unet: ")
    assert "scheduler_config.json: `num_train_timesteps` must be an int in [1, 100000], got 1000000000" in err[0]
    assert not (out / ".lock").exists()


@pytest.mark.parametrize(
    ("channels", "expected"),
    [
        ([10**6, 32], "config.json: `block_out_channels` entries must be ints in [1, 65536], got 1000000"),
        ([65536, 65536], "parameters (float32 × 6 copies, activations not counted) needs about"),
    ],
)
def test_a_frozen_unet_too_large_is_refused_before_any_allocation(
    base_model, tmp_path, capsys, monkeypatch, channels, expected
):
    """Out of the loader's bounds, or within them but beyond the memory its config needs: one line, exit 2, and the
    weights are never loaded (loading them is an error here)."""
    base = _base_with(base_model, tmp_path / "base", "unet/config.json", block_out_channels=channels)

    def no_loading(*args, **kwargs):
        raise AssertionError("the UNet was built")

    monkeypatch.setattr(UNet2DModel, "from_pretrained", no_loading)
    line = script_fails(train_diti, diti_argv(base, tmp_path / "out"), capsys)
    assert ": error: --pretrained_unet: " in line and expected in line


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--block_out_channels", "65536", "65536"], "parameters (float32 × 5 copies, activations not counted)"),
        (["--block_out_channels", "1000000", "32"], "`block_out_channels` entries must be ints in [1, 65536]"),
        (["--num_train_timesteps", str(10**9)], "--num_train_timesteps: must lie in [2, 100000], got 1000000000"),
    ],
)
def test_train_ddpm_refuses_a_unet_or_schedule_too_large_before_building_it(tmp_path, capsys, extra, expected):
    argv = [
        "--dataset_name", "diti-shapes", "--num_train_images", "16", "--resolution", str(RESOLUTION),
        "--unet_preset", "tiny", "--attention_levels", "1", "--num_threads", "1", "--max_train_steps", "1",
        "--output_dir", str(tmp_path / "out"), *extra,
    ]  # fmt: skip
    line = script_fails(train_ddpm, argv, capsys)
    assert ": error: " in line and expected in line


def test_start_up_reports_progress_and_every_exit_releases_the_lock(base_model, tmp_path, capsys, caplog,
                                                                     monkeypatch):  # fmt: skip
    """Dataset generation and the loss profile are announced (and timed) before the start-up line; the `.lock` of
    the output folder is gone after a finished run, an argument error after the lock was taken, and Ctrl-C."""
    import logging

    from diti_hf.training.run import TrainingLoop, run_script

    out = tmp_path / "run"
    argv = diti_argv(base_model, out, "--max_train_steps", "2", "--loss_profile_images", "4", "--report_to", "none")
    _reset_accelerate()
    try:
        with caplog.at_level(logging.INFO, logger="train_diti"):
            run_script(train_diti.main, train_diti.parse_args, argv)
    finally:
        _reset_accelerate()
    messages = [r.getMessage() for r in caplog.records if r.name == "train_diti"]
    start = next(i for i, m in enumerate(messages) if m.startswith("training 2 steps"))
    steps = (
        "generating the diti-shapes dataset (64 images, 16×16)",
        "measuring the DDPM loss profile on 4 images",
    )
    for step in steps:
        begun, done = (
            messages.index(f"{step}…"),
            next(i for i, m in enumerate(messages) if m.startswith(f"{step}: done in")),
        )
        assert begun < done < start, messages
    assert (out / "model_index.json").is_file()
    assert not (out / ".lock").exists()

    # an expected error once the lock is held (resolving the checkpoint comes after locking the folder)
    line = script_fails(train_diti, [*argv, "--resume_from_checkpoint", str(out / "checkpoint-99")], capsys)
    assert "--resume_from_checkpoint" in line
    assert not (out / ".lock").exists()

    # Ctrl-C during training
    stopped = tmp_path / "stopped"

    def interrupted(self, *args, **kwargs):
        assert (stopped / ".lock").is_file()  # held while the run trains
        raise KeyboardInterrupt

    monkeypatch.setattr(TrainingLoop, "train", interrupted)
    _reset_accelerate()
    try:
        with pytest.raises(SystemExit) as exit_info:
            run_script(train_diti.main, train_diti.parse_args, [*argv, "--output_dir", str(stopped)])
    finally:
        _reset_accelerate()
    assert exit_info.value.code == 130
    assert not (stopped / ".lock").exists()


def test_running_out_of_memory_is_one_line_exit_2_and_a_bug_keeps_its_traceback(base_model, tmp_path, capsys,
                                                                                  monkeypatch):  # fmt: skip
    from diti_hf.training.run import TrainingLoop, run_script

    def out_of_memory(self, *args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried "
                           "to allocate 68719476736 bytes. Error code 12 (Cannot allocate memory)")  # fmt: skip

    monkeypatch.setattr(TrainingLoop, "train", out_of_memory)
    out = tmp_path / "run"
    line = script_fails(train_diti, diti_argv(base_model, out, "--max_train_steps", "2"), capsys)
    assert "error: out of memory" in line and "68719476736 bytes" in line and "--train_batch_size" in line
    assert not (out / ".lock").exists()

    def bug(self, *args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(TrainingLoop, "train", bug)
    _reset_accelerate()
    try:
        with pytest.raises(RuntimeError, match="a bug"):
            run_script(train_diti.main, train_diti.parse_args, diti_argv(base_model, out, "--max_train_steps", "2"))
    finally:
        _reset_accelerate()
    assert not (out / ".lock").exists()


def test_a_released_lock_deletes_only_its_own_file(tmp_path):
    from diti_hf.safe_io import LOCK_NAME, FolderInUseError, FolderLock

    folder = tmp_path / "out"
    FolderLock(folder, "test").acquire()
    assert (folder / LOCK_NAME).read_text() == f"{os.getpid()}\n"
    FolderLock(folder, "test").release(remove=True)
    assert not (folder / LOCK_NAME).exists()

    # another process's lock: not ours to delete, and still refused
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import fcntl, os, sys, time\n"
            f"fd = os.open({str(folder / LOCK_NAME)!r}, os.O_RDWR | os.O_CREAT, 0o644)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX); os.pwrite(fd, f'{os.getpid()}\\n'.encode(), 0)\n"
            "print('locked', flush=True); time.sleep(60)\n"
        )],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        FolderLock(folder, "test").release(remove=True)
        assert (folder / LOCK_NAME).is_file()
        with pytest.raises(FolderInUseError, match=f"in use by PID {holder.pid}"):
            FolderLock(folder, "test").acquire()
    finally:
        holder.kill()
        holder.wait()
    # the holder died without deleting its file: the kernel dropped its lock, and the folder is free again
    with FolderLock(folder, "test"):
        assert (folder / LOCK_NAME).read_text() == f"{os.getpid()}\n"
