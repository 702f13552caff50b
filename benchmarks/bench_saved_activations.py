"""Activation memory of DiTi's training step on the 64×64 benchmark configuration: the bytes autograd stores for
backward (unique storages), split by the module that stored them.

`python benchmarks/bench_saved_activations.py` (the decoder as shipped: GroupNorm, modulation and SiLU recomputed
in backward); `--store_norm_act` stores them instead, for comparison.
"""

from __future__ import annotations

import argparse
import collections
import json

import torch
from diffusers import DDPMScheduler, UNet2DModel

import diti_hf.models.decoder as decoder_module
from diti_hf import DiffusionCoefficients, DiTiDecoderModel, DiTiEncoderModel
from diti_hf.conversion import OFFICIAL_CELEBA64_DDPM, unet_config_from_official
from diti_hf.training import diti_loss


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--store_norm_act", action="store_true", help="Store GN/modulation/SiLU outputs instead.")
    args = parser.parse_args(argv)
    if args.store_norm_act:
        stored = decoder_module._modulated_norm_act
        decoder_module.norm_act = lambda norm, act, hidden, scale=None, shift=None: stored(
            norm, act, hidden, scale, shift
        )
    torch.manual_seed(0)
    unet = UNet2DModel(**unet_config_from_official(OFFICIAL_CELEBA64_DDPM, image_size=64)).requires_grad_(False).eval()
    encoder = DiTiEncoderModel.from_preset("celeba64", latent_dim=512, num_chunks=64)
    decoder = DiTiDecoderModel.from_unet(unet, latent_dim=512)
    coefficients = DiffusionCoefficients.from_scheduler_config(DDPMScheduler().config)
    images = torch.rand(args.batch_size, 3, 64, 64) * 2 - 1

    stack, by_module, sizes = ["other"], collections.Counter(), {}
    for root, prefix in ((encoder, "encoder"), (decoder, "decoder")):
        for name, module in root.named_modules():  # attributed to the block (e.g. decoder.up_blocks.3) they run in
            block = ".".join(f"{prefix}.{name}".strip(".").split(".")[:3])
            module.register_forward_pre_hook(lambda m, a, block=block: stack.append(block))
            module.register_forward_hook(lambda m, a, o: stack.pop() and None)  # a hook returning None keeps `o`

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in sizes:
            sizes[storage.data_ptr()] = storage.nbytes()
            by_module[stack[-1]] += storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        z = encoder(images).z
        diti_loss(unet, decoder, z, images, encoder.partition, coefficients, "stop_grad")
    result = {
        "batch_size": args.batch_size,
        "norm_act": "stored" if args.store_norm_act else "recomputed",
        "saved_mb": round(sum(sizes.values()) / 2**20, 1),
        "saved_mb_by_module": {name: round(size / 2**20, 1) for name, size in by_module.most_common()},
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
