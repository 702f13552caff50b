"""Training-step throughput of DiTi (and of the base DDPM) on CPU or GPU, against a matmul measured in the same run.

`--config` picks the configuration (random weights, built in code):

- `adm64` (default): issue 7's 64×64 benchmark, described below;
- `shapes32`: `pretrained/diti-shapes32` — the frozen UNet is `examples/train_ddpm.py`'s `small32` preset
  (32, 64, 64 channels, one resnet per level, attention at 8×8, 1.11M parameters, dropout 0), the encoder preset
  `small32` (d = 64, k = 16), the decoder `DiTiDecoderModel.from_unet(unet, latent_dim=64, dropout=0.0)`; loss as
  `diti_hf.training.DiTiTrainingModel.forward` (`diti_loss`, stop_grad); fused AdamW as
  `diti_hf.training.run.make_optimizer` builds it (lr 5e-4, the shipped run's); batch 32 by default;
- `ddpm-shapes32`: the base DDPM's step on that UNet (`diti_hf.training.DDPMTrainingModel`, gradient
  clipping at 1.0 as that script does by default, fused AdamW lr 1e-3); batch 32 by default.

Configuration `adm64`: 64×64 images; frozen UNet = the diffusers equivalent of an official ADM UNet (base 64, multipliers
1,2,2,2, 2 res-blocks per level, attention at 16×16 and in the middle, 1 head, dropout 0.1, scale-shift norm, resnet
resampling); the official 64×64 encoder (d = 512); k = 64 uniform; stop_grad; batch 16; float32.

Reports (JSON on stdout): images/s (median of --repeats timed steps after --warmup), FLOP per image counted with
torch.utils.flop_counter, achieved GFLOP/s, a dense fp32 2048² matmul's GFLOP/s measured after each step in the same
process, the median of the per-step ratios,
and peak memory (RSS on CPU, CUDA's peak allocation on a GPU; FLOPs are counted in a child process so that the
counter does not inflate the peak). Run alone on a quiet machine: `python benchmarks/bench_train_step.py --threads 2`;
on a GPU e.g. `--device cuda --precision bf16 --compile --batch_size 256 --peak_tflops 989`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Callable
from types import ModuleType, SimpleNamespace

import torch
from diffusers import DDPMScheduler, UNet2DModel
from torch.utils.flop_counter import FlopCounterMode

import diti_hf
import diti_hf.models
import diti_hf.training
from bench_utils import add_device_arguments, autocast, configure_process, timings_with_matmul
from diti_hf.conversion import OFFICIAL_CELEBA64_DDPM, unet_config_from_official
from diti_hf.training import peak_memory_mb
from diti_hf.training.run import make_optimizer

CONFIGS = ("adm64", "shapes32", "ddpm-shapes32")
DEFAULT_BATCH_SIZE = {"adm64": 16, "shapes32": 32, "ddpm-shapes32": 32}


def batch_size_of(args: argparse.Namespace) -> int:
    """`--batch_size`, or the configuration's default."""
    return args.batch_size or DEFAULT_BATCH_SIZE[args.config]


def small32_unet() -> UNet2DModel:
    """The frozen UNet of `pretrained/diti-shapes32`: `examples/train_ddpm.py --unet_preset small32` at 32×32."""
    return UNet2DModel(**diti_hf.training.UNET_PRESETS["small32"], sample_size=32, in_channels=3, out_channels=3)


def fused_adamw(parameters: list[torch.nn.Parameter], lr: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW exactly as `diti_hf.training.run.make_optimizer` builds it from the scripts' default Adam flags."""
    flags = SimpleNamespace(
        learning_rate=lr, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, adam_weight_decay=0.0
    )
    return make_optimizer(parameters, flags, device)


def build_step(args: argparse.Namespace, package: ModuleType = diti_hf) -> Callable[[], None]:
    """
    One training step of the benchmark configuration `args.config` (models, optimizer, data built with seed 0), using
    the models, loss and `compile_denoiser` of `package` (this checkout's `diti_hf` by default; `ab_train_step.py`
    passes a baseline revision's copy).
    """
    torch.manual_seed(0)
    device = torch.device(args.device)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    batch_size = batch_size_of(args)
    compile_parts = args.compile_parts if args.compile else ()  # never in the FLOP-counting child (no --compile)
    if args.config == "ddpm-shapes32":
        return _ddpm_step(args, device, memory_format, batch_size, compile_parts)
    if args.config == "adm64":
        unet = UNet2DModel(**unet_config_from_official(OFFICIAL_CELEBA64_DDPM, image_size=64))
        encoder = package.DiTiEncoderModel.from_preset("celeba64", latent_dim=512, num_chunks=64)
        decoder = package.DiTiDecoderModel.from_unet(unet, latent_dim=512)
    else:
        unet = small32_unet()
        encoder = package.DiTiEncoderModel.from_preset("small32", latent_dim=64, num_chunks=16)
        decoder = package.DiTiDecoderModel.from_unet(unet, latent_dim=64, dropout=0.0)
    unet.requires_grad_(False).eval()
    encoder.train()
    decoder.train()
    size = unet.config.sample_size
    for model in (unet, encoder, decoder):
        model.to(device=device, memory_format=memory_format)
    if args.gradient_checkpointing:
        decoder.enable_gradient_checkpointing()
    params = [*encoder.parameters(), *decoder.parameters()]
    if "trainable" in compile_parts:
        encoder.compile()
    if "frozen" in compile_parts:  # every module `denoise` runs, the decoder as a whole if it is compiled too
        package.models.compile_denoiser(unet, decoder if "trainable" in compile_parts else None)
    elif "trainable" in compile_parts:
        decoder.compile()
    if args.config == "adm64":  # the fused (one kernel per parameter) Adam, as the training scripts used it then
        optimizer = torch.optim.Adam(params, lr=1e-4, fused=device.type in ("cpu", "cuda"))
    else:
        optimizer = fused_adamw(params, 5e-4, device)
    coefficients = package.DiffusionCoefficients.from_scheduler_config(DDPMScheduler().config).to(device)
    images = (torch.rand(batch_size, 3, size, size) * 2 - 1).to(device=device, memory_format=memory_format)
    generator = torch.Generator(device).manual_seed(0)

    def step() -> None:
        with autocast(device, args.precision):
            # diti_hf.training.DiTiTrainingModel.forward, with `package`'s loss
            z = encoder(images).z
            loss = package.training.diti_loss(
                unet, decoder, z, images, encoder.partition, coefficients, "stop_grad", generator=generator
            )
        optimizer.zero_grad(set_to_none=True)
        loss.loss.backward()
        state["loss"] = loss.loss.detach()
        state["gradients"] = [p.grad.clone() if p.grad is not None else None for p in params] if state["keep"] else []
        optimizer.step()

    state = {"parameters": params, "keep": False}
    if args.store_norm_act:
        step = _storing_norm_act(step, package)
    step.state = state  # for equivalence checks: the last loss, and the gradients when state["keep"] is set
    return step


def _storing_norm_act(step: Callable[[], None], package: ModuleType) -> Callable[[], None]:
    """`step` with the decoder's GN + modulation + SiLU outputs stored for backward instead of recomputed in it."""
    decoder_module = package.models.decoder

    def stored(norm, act, hidden, scale=None, shift=None):
        return decoder_module._modulated_norm_act(norm, act, hidden, scale, shift)

    def storing_step() -> None:
        recomputing, decoder_module.norm_act = decoder_module.norm_act, stored
        try:
            step()
        finally:
            decoder_module.norm_act = recomputing

    return storing_step


def _ddpm_step(
    args: argparse.Namespace,
    device: torch.device,
    memory_format: torch.memory_format,
    batch_size: int,
    compile_parts: tuple[str, ...],
) -> Callable[[], None]:
    """The base DDPM's training step on the small32 UNet: `DDPMTrainingModel`, clipping at 1.0, fused AdamW."""
    unet = small32_unet().train().to(device=device, memory_format=memory_format)
    if args.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    model = diti_hf.training.DDPMTrainingModel(unet)
    if compile_parts:
        unet.compile()
    optimizer = fused_adamw(list(unet.parameters()), 1e-3, device)
    noise_scheduler = DDPMScheduler()  # linear betas 1e-4..0.02, T = 1000: pretrained/ddpm-shapes32's scheduler
    images = (torch.rand(batch_size, 3, 32, 32) * 2 - 1).to(device=device, memory_format=memory_format)
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        with autocast(device, args.precision):
            loss, _, _ = model(images, noise_scheduler, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        state["loss"] = loss.detach()
        state["gradients"] = [p.grad.clone() for p in unet.parameters()] if state["keep"] else []
        optimizer.step()

    state = {"parameters": list(unet.parameters()), "keep": False}
    step.state = state
    return step


def add_configuration_arguments(parser: argparse.ArgumentParser) -> None:
    """The options `build_step` reads, shared with `ab_train_step.py`."""
    parser.add_argument("--config", default="adm64", choices=CONFIGS, help="The benchmark configuration.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--batch_size", type=int, default=None, help="Default: 16 for adm64, 32 for the shapes32 configurations."
    )
    parser.add_argument(
        "--gradient_checkpointing", action="store_true", help="Recompute the decoder's resnets in backward."
    )
    parser.add_argument("--channels_last", action="store_true", help="Models and images in channels_last layout.")
    parser.add_argument(
        "--store_norm_act",
        action="store_true",
        help="DiTi configs: store the decoder's GN/modulation/SiLU outputs for backward instead of recomputing them "
        "(`diti_hf.models.decoder.norm_act` swapped during each step; more memory).",
    )
    parser.add_argument(
        "--compile_parts",
        nargs="+",
        default=("frozen", "trainable"),
        choices=("frozen", "trainable"),
        help="With --compile: the frozen UNet (`compile_denoiser(unet)`), the trainable encoder and decoder, or both "
        "(default). ddpm-shapes32 compiles its UNet whenever --compile is given.",
    )
    add_device_arguments(parser)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_configuration_arguments(parser)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--flops_only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    configure_process(args)
    device = torch.device(args.device)
    step = build_step(args)
    batch_size = batch_size_of(args)
    if args.flops_only:
        with FlopCounterMode(display=False) as counter:
            step()
        print(counter.get_total_flops() / batch_size)
        return {}
    # counted in a child process: the counter's bookkeeping must not inflate this process's peak memory
    child = [sys.executable, __file__, "--flops_only", *(argv if argv is not None else sys.argv[1:])]
    child = [arg for arg in child if arg != "--compile"]
    flop_per_image = float(subprocess.run(child, check=True, capture_output=True, text=True).stdout.split()[-1])
    times, limits = timings_with_matmul(step, args.warmup, args.repeats, device, args.precision)
    images_per_s = batch_size / statistics.median(times)
    peak_mb, peak_kind = peak_memory_mb(device)
    limit = statistics.median(limits)
    achieved = images_per_s * flop_per_image / 1e9
    # each step against the matmul measured right after it (the machine's speed drifts), then the median
    fraction = statistics.median(batch_size / t * flop_per_image / 1e9 / g for t, g in zip(times, limits))
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {args.threads} threads",
        "config": args.config,
        "precision": args.precision,
        "batch_size": batch_size,
        "compile": list(args.compile_parts) if args.compile else False,
        "reuse_freed_memory": not args.default_malloc,
        "channels_last": args.channels_last,
        "gradient_checkpointing": args.gradient_checkpointing,
        "store_norm_act": args.store_norm_act,
        "step_seconds": [round(t, 4) for t in times],
        "images_per_s": round(images_per_s, 3),
        "gflop_per_image": round(flop_per_image / 1e9, 2),
        "achieved_gflops": round(achieved, 1),
        "matmul_gflops": [round(g, 1) for g in limits],
        "fraction_of_matmul": round(fraction, 3),
        "matmul_limit_images_per_s": round(limit * 1e9 / flop_per_image, 2),
        "peak_memory_mb": round(peak_mb, 1),
        "peak_memory_measure": peak_kind,
    }
    if args.peak_tflops:
        result["fraction_of_datasheet_peak"] = round(achieved / (args.peak_tflops * 1e3), 4)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
