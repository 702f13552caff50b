"""`diti-hf partition`: a staged partition fitted to a frozen DDPM's loss profile (`diti_hf.evaluation.loss_profile`)."""

from __future__ import annotations

import argparse

from . import _common as common


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = common.add_command_parser(
        subparsers,
        "partition",
        description=(
            "Measure where a frozen DDPM's error lies along the time axis on a dataset (the DiTi-weighted ε error and "
            "the posterior-mean error per t) and fit a staged TimestepPartition to it: stages of equal error mass, "
            "dims per stage proportional to its mass. Prints the partition and the train_diti.py flags that give it; "
            "--output-dir also writes loss_profile.json and loss_profile.png (the profile with the chunk edges)."
        ),
    )
    parser.add_argument(
        "--model", "--pretrained-unet", "--pretrained_unet", dest="pretrained_unet", required=True,
        metavar="ID_OR_DIR",
        help="the frozen DDPM: a Hub id or a folder with a UNet2DModel (e.g. pretrained/ddpm-shapes32), or a DiTi "
        "pipeline folder (its frozen unet/)",
    )  # fmt: skip
    parser.add_argument(
        "--dataset", "--dataset-name", "--dataset_name", dest="dataset", default="diti-shapes",
        help="diti-shapes (default), diti-shapes-v2, a saved dataset folder or a Hub id",
    )  # fmt: skip
    parser.add_argument("--split", default="train", help="dataset split (default: train)")
    parser.add_argument(
        "--latent-dim", "--latent_dim", dest="latent_dim", type=common.positive_int, required=True, metavar="D",
        help="width d of z",
    )  # fmt: skip
    parser.add_argument(
        "--num-chunks", "--num_chunks", dest="num_chunks", type=common.positive_int, required=True, metavar="K",
        help="number of chunks k",
    )  # fmt: skip
    parser.add_argument(
        "--num-stages", type=common.positive_int, default=4, metavar="N", help="stages aimed at (default 4)"
    )
    parser.add_argument(
        "--signal", default="weighted_eps_error",
        help="the curve that sets where dims go: weighted_eps_error (default) or x0_loss_rate",
    )  # fmt: skip
    parser.add_argument(
        "--num-images", type=common.positive_int, default=256, metavar="N", help="images profiled (default 256)"
    )
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument(
        "--batch-size", type=common.positive_int, default=64, metavar="N", help="batch size (default 64)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise and of diti-shapes data")
    parser.add_argument("--output-dir", default=None, metavar="DIR", help="write loss_profile.json/png here")
    common.add_overwrite_argument(parser)
    common.add_runtime_arguments(parser, progress=False)
    parser.set_defaults(handler=run)


def _print_partition(partition) -> None:
    """The partition as JSON, its stages, and the train_diti.py flags that give it."""
    import json

    print(json.dumps(partition.to_dict()))
    start = 0
    for end, dims in zip(partition.stages, partition.dims_per_stage):
        chunks = partition.chunks_for_timesteps(start, end)
        print(f"stage t in [{start}, {end}): chunks {chunks[0]}..{chunks[1] - 1}, {dims} dims")
        start = end
    stages = " ".join(map(str, partition.stages))
    dims = " ".join(map(str, partition.dims_per_stage))
    print(f"train_diti.py flags: --stages {stages} --dims_per_stage {dims}")


def run(args: argparse.Namespace) -> int:
    from ..data import ImageTransform, load_image_dataset, validation_batch
    from ..evaluation.loss_profile import loss_profile, write_loss_profile
    from ..models import eps_function, load_frozen_ddpm
    from ..partition import PROFILE_SIGNALS, partition_from_profile
    from ..sampling import DiffusionCoefficients

    if args.signal not in PROFILE_SIGNALS:  # a choice checked here: the list would import torch for --help
        raise common.UsageError(f"--signal {args.signal!r}: choose one of {', '.join(PROFILE_SIGNALS)}")
    device = common.check_device(args.device)
    if args.output_dir is not None:
        out = common.output_dir(args.output_dir)
        outputs = [out / f"loss_profile{suffix}" for suffix in (".json", ".png")]  # write_loss_profile's names
        common.check_new_files(outputs, "--output-dir", args.overwrite)
    unet, scheduler_config = load_frozen_ddpm(args.pretrained_unet)
    unet.to(device)
    coefficients = DiffusionCoefficients.from_scheduler_config(scheduler_config)
    T = coefficients.num_train_timesteps
    resolution = int(unet.config.sample_size)
    dataset = load_image_dataset(
        dataset_name=args.dataset, split=args.split, num_images=args.num_images, seed=args.seed, resolution=resolution
    )
    images = validation_batch(
        dataset, ImageTransform(resolution, num_channels=unet.config.in_channels), args.num_images
    )

    profile = loss_profile(
        eps_function(unet, coefficients), images, coefficients, batch_size=args.batch_size, seed=args.seed
    )
    partition = partition_from_profile(profile, args.latent_dim, args.num_chunks, args.num_stages, args.signal, T)
    _print_partition(partition)
    if args.output_dir is not None:
        files = write_loss_profile(profile, out, partition)
        print(f"wrote {', '.join(str(out / f) for f in files)}")
    return 0
