"""Inference throughput of DiTiPipeline on the 64×64 benchmark configuration: encode, invert + generate, and the
editing workflows, against a matmul measured in the same process.

Configuration: 64×64; frozen UNet = the diffusers equivalent of the official ADM UNet (base 64, multipliers 1,2,2,2,
2 res-blocks, attention at 16×16 and in the middle); the official 64×64 encoder (d = 512); k = 64 uniform; float32;
random weights (speed does not depend on them).

Workflows (each timed in its own process, `--repeats` runs after `--warmup`, median reported):

- `encode`: `pipe.encode` on a batch of `--batch_size` images → images/s.
- `invert_generate`: masked DDIM inversion + generation, `--steps` + `--steps`, batch `--batch_size`, one output per
  input → images/s. This is the official implementation's editing unit (0.20 images/s at 20 + 20 steps, batch 8, on a
  machine whose fp32 matmul ran at 328 GFLOP/s).
- `interpolate`: `pipe.interpolate` with 5 alphas on `--sources` pairs (one inversion per pair, 5 variants batched).
- `swap`: `pipe.swap` with 4 time-step ranges on `--sources` pairs (one inversion per source, 4 variants batched).

For the workflows the report gives output images/s and the same figure rescaled to the official machine's matmul
speed (`× 328 / matmul GFLOP/s`, each call against a matmul measured right after it, then the median), to compare
with the official 0.20 images/s.

Run alone on a quiet machine: `python benchmarks/bench_inference.py --threads 2` (all workflows, one process each);
on a GPU e.g. `--device cuda --precision bf16 --compile --batch_size 256 --sources 64`. The rescaled comparison with
the official figure is given on CPU only (it was a CPU measurement).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Callable

import torch
from diffusers import DDIMScheduler, UNet2DModel

from bench_utils import add_device_arguments, autocast, configure_process, timings_with_matmul
from diti_hf import DiTiDecoderModel, DiTiEncoderModel, DiTiPipeline
from diti_hf.conversion import OFFICIAL_CELEBA64_DDPM, unet_config_from_official

WORKFLOWS = ("encode", "invert_generate", "interpolate", "swap")
OFFICIAL_MATMUL_GFLOPS = 328.0
OFFICIAL_EDIT_IMAGES_PER_S = 0.20


def build_pipeline(device: torch.device) -> DiTiPipeline:
    torch.manual_seed(0)
    unet = UNet2DModel(**unet_config_from_official(OFFICIAL_CELEBA64_DDPM, image_size=64)).eval()
    encoder = DiTiEncoderModel.from_preset("celeba64", latent_dim=512, num_chunks=64).eval()
    decoder = DiTiDecoderModel.from_unet(unet, latent_dim=512).eval()
    # G ≡ 0 at init; give the decoder weights so its output is not trivially zero (speed is the same either way).
    with torch.no_grad():
        for parameter in decoder.parameters():
            if parameter.abs().sum() == 0:
                parameter.normal_(0, 0.01)
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False)
    pipe = DiTiPipeline(unet=unet, encoder=encoder, decoder=decoder, scheduler=scheduler).to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def workflow_call(pipe: DiTiPipeline, workflow: str, args: argparse.Namespace) -> tuple[Callable[[], object], int]:
    """The call to time and the number of output images it produces."""
    generator = torch.Generator().manual_seed(0)
    images = (torch.rand(args.batch_size, 3, 64, 64, generator=generator) * 2 - 1).to(args.device)
    sources, targets = images[: args.sources], images.flip(0)[: args.sources]
    steps = args.steps
    if workflow == "encode":
        return (lambda: pipe.encode(images)), args.batch_size
    if workflow == "invert_generate":
        return (lambda: pipe.reconstruct(images, num_inference_steps=steps, output_type="pt")), args.batch_size
    if workflow == "interpolate":
        alphas = (0.0, 0.25, 0.5, 0.75, 1.0)
        call = lambda: pipe.interpolate(  # noqa: E731
            sources, targets, alphas=alphas, timesteps=(0, 250), num_inference_steps=steps, output_type="pt"
        )
        return call, args.sources * len(alphas)
    if workflow == "swap":
        ranges = [(0, 250), (250, 500), (500, 750), (750, 1000)]
        call = lambda: pipe.swap(sources, targets, timesteps=ranges, num_inference_steps=steps, output_type="pt")  # noqa: E731
        return call, args.sources * len(ranges)
    raise ValueError(f"`--workflow` must be one of {WORKFLOWS}, got {workflow!r}.")


def measure(args: argparse.Namespace) -> dict:
    configure_process(args)
    device = torch.device(args.device)
    pipe = build_pipeline(device)
    if args.compile:
        pipe.compile_models()
    call, num_outputs = workflow_call(pipe, args.workflow, args)

    def timed() -> None:
        with autocast(device, args.precision):
            call()

    with torch.inference_mode():
        times, limits = timings_with_matmul(timed, args.warmup, args.repeats, device, args.precision)
    images_per_s = num_outputs / statistics.median(times)
    result = {
        "workflow": args.workflow,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {args.threads} threads",
        "precision": args.precision,
        "compile": args.compile,
        "reuse_freed_memory": not args.default_malloc,
        "steps": args.steps,
        "batch_size": args.batch_size if args.workflow in ("encode", "invert_generate") else args.sources,
        "outputs_per_call": num_outputs,
        "seconds": [round(t, 4) for t in times],
        "images_per_s": round(images_per_s, 4),
        "matmul_gflops": [round(g, 1) for g in limits],
    }
    if args.workflow != "encode" and device.type == "cpu":
        # each call against the matmul measured right after it (the machine's speed drifts), then the median
        rescaled = statistics.median(num_outputs / t * OFFICIAL_MATMUL_GFLOPS / g for t, g in zip(times, limits))
        result["images_per_s_at_official_matmul"] = round(rescaled, 4)
        result["vs_official_0.20"] = round(rescaled / OFFICIAL_EDIT_IMAGES_PER_S, 2)
    return result


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflow", default="all", help=f"One of {WORKFLOWS} or `all` (one process each).")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps of inversion and of generation each.")
    parser.add_argument("--batch_size", type=int, default=8, help="Images per call for encode / invert_generate.")
    parser.add_argument("--sources", type=int, default=2, help="Source images per interpolate / swap call.")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    add_device_arguments(parser)
    args = parser.parse_args(argv)
    if args.workflow != "all":
        result = measure(args)
        print(json.dumps(result))
        return [result]
    results = []
    for workflow in WORKFLOWS:  # one process per measurement: no allocator or thread-pool state carried over
        forwarded = [
            f"--{k}={v}" for k, v in vars(args).items() if k not in ("workflow", "compile") and v is not None
        ] + ["--compile"] * args.compile
        out = subprocess.run(
            [sys.executable, __file__, "--workflow", workflow, *forwarded], check=True, capture_output=True, text=True
        )
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    return results


if __name__ == "__main__":
    main()
