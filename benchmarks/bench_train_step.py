"""Training-step throughput of DiTi on the 64×64 benchmark configuration, against a matmul measured in the same run.

Configuration: 64×64 images; frozen UNet = the diffusers equivalent of an official ADM UNet (base 64, multipliers
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
from types import ModuleType

import torch
from diffusers import DDPMScheduler, UNet2DModel
from torch.utils.flop_counter import FlopCounterMode

import diti_hf
import diti_hf.models
import diti_hf.training
from bench_utils import add_device_arguments, autocast, configure_process, timings_with_matmul
from diti_hf.conversion import OFFICIAL_CELEBA64_DDPM, unet_config_from_official
from diti_hf.training import peak_memory_mb


def build_step(args: argparse.Namespace, package: ModuleType = diti_hf) -> Callable[[], None]:
    """
    One training step of the benchmark configuration (models, optimizer, data built with seed 0), using the models,
    loss and `compile_denoiser` of `package` (this checkout's `diti_hf` by default; `ab_train_step.py` passes a
    baseline revision's copy).
    """
    torch.manual_seed(0)
    device = torch.device(args.device)
    unet = UNet2DModel(**unet_config_from_official(OFFICIAL_CELEBA64_DDPM, image_size=64)).requires_grad_(False).eval()
    encoder = package.DiTiEncoderModel.from_preset("celeba64", latent_dim=512, num_chunks=64)
    decoder = package.DiTiDecoderModel.from_unet(unet, latent_dim=512)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    for model in (unet, encoder, decoder):
        model.to(device=device, memory_format=memory_format)
    if args.gradient_checkpointing:
        decoder.enable_gradient_checkpointing()
    params = [*encoder.parameters(), *decoder.parameters()]
    if args.compile:  # never in the FLOP-counting child, which is started without --compile
        encoder.compile()
        package.models.compile_denoiser(unet, decoder)
    # the fused (one kernel per parameter) Adam, as the training scripts use it
    optimizer = torch.optim.Adam(params, lr=1e-4, fused=device.type in ("cpu", "cuda"))
    coefficients = package.DiffusionCoefficients.from_scheduler_config(DDPMScheduler().config).to(device)
    images = (torch.rand(args.batch_size, 3, 64, 64) * 2 - 1).to(device=device, memory_format=memory_format)
    generator = torch.Generator(device).manual_seed(0)

    def step() -> None:
        with autocast(device, args.precision):
            z = encoder(images).z
            loss = package.training.diti_loss(
                unet, decoder, z, images, encoder.partition, coefficients, "stop_grad", generator=generator
            )
        optimizer.zero_grad(set_to_none=True)
        loss.loss.backward()
        optimizer.step()

    return step


def add_configuration_arguments(parser: argparse.ArgumentParser) -> None:
    """The options `build_step` reads, shared with `ab_train_step.py`."""
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument(
        "--gradient_checkpointing", action="store_true", help="Recompute the decoder's resnets in backward."
    )
    parser.add_argument("--channels_last", action="store_true", help="Models and images in channels_last layout.")
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
    if args.flops_only:
        with FlopCounterMode(display=False) as counter:
            step()
        print(counter.get_total_flops() / args.batch_size)
        return {}
    # counted in a child process: the counter's bookkeeping must not inflate this process's peak memory
    child = [sys.executable, __file__, "--flops_only", *(argv if argv is not None else sys.argv[1:])]
    child = [arg for arg in child if arg != "--compile"]
    flop_per_image = float(subprocess.run(child, check=True, capture_output=True, text=True).stdout.split()[-1])
    times, limits = timings_with_matmul(step, args.warmup, args.repeats, device, args.precision)
    images_per_s = args.batch_size / statistics.median(times)
    peak_mb, peak_kind = peak_memory_mb(device)
    limit = statistics.median(limits)
    achieved = images_per_s * flop_per_image / 1e9
    # each step against the matmul measured right after it (the machine's speed drifts), then the median
    fraction = statistics.median(args.batch_size / t * flop_per_image / 1e9 / g for t, g in zip(times, limits))
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {args.threads} threads",
        "precision": args.precision,
        "batch_size": args.batch_size,
        "compile": args.compile,
        "reuse_freed_memory": not args.default_malloc,
        "channels_last": args.channels_last,
        "gradient_checkpointing": args.gradient_checkpointing,
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
