"""A DiTi pipeline from any complete checkpoint of a `train_diti.py` run, with no dataset and no training flags.

At its start a run records in `RUN_DIR/run_record/` what the pipeline needs besides the trained weights: the configs of
the encoder (with its partition and mask mode), the decoder, the sampling scheduler and the image processor, where the
frozen DDPM comes from, and the training command. [`export_checkpoint`] joins that record with a checkpoint's EMA
weights, after verifying the checkpoint's content hashes.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from ..hub import save_model_card
from ..models import DiTiDecoderModel, DiTiEncoderModel, load_frozen_ddpm
from ..pipelines.image_processing_diti import DiTiImageProcessor
from ..pipelines.pipeline_diti import DiTiPipeline
from ..safe_io import read_json
from .checkpointing import CHECKPOINT_PREFIX, CheckpointError, checkpoint_step, load_state_file, resolve_checkpoint

RUN_RECORD = "run_record"
RUN_RECORD_FORMAT = 1
EMA_STATE = "custom_state_0.safetensors"


def record_run(
    output_dir: str | os.PathLike,
    encoder,
    decoder,
    scheduler,
    image_processor,
    frozen_ddpm: dict[str, Any],
    training_command: str,
    global_batch_size: int,
    datasets: list[str] | None = None,
) -> Path:
    r"""
    Writes `output_dir/run_record/` (configs only, no weights), replacing an earlier one.

    Args:
        output_dir (`str` or `os.PathLike`): The run folder.
        encoder, decoder, scheduler: The models and the sampling scheduler of the pipeline the run exports.
        image_processor: Its [`~diti_hf.pipelines.image_processing_diti.DiTiImageProcessor`], or `None`.
        frozen_ddpm (`dict`): Arguments of [`~diti_hf.models.load_frozen_ddpm`] (`pretrained_model_name_or_path`,
            `unet_subfolder`, `revision`); a local folder is recorded as an absolute path.
        training_command (`str`): The command that trains the run (shown in the exported model card).
        global_batch_size (`int`): Images per optimizer step (for the images seen at a step).
        datasets (`list[str]`, *optional*): Hub ids of the training data, for the model card.

    Returns:
        `pathlib.Path`: The record folder.
    """
    record = Path(output_dir) / RUN_RECORD
    tmp = record.with_name(RUN_RECORD + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    encoder.save_config(tmp / "encoder")
    decoder.save_config(tmp / "decoder")
    scheduler.save_config(tmp / "scheduler")
    if image_processor is not None:
        image_processor.save_pretrained(tmp / "image_processor")
    source = dict(frozen_ddpm)
    name = source["pretrained_model_name_or_path"]
    if Path(name).is_dir():
        source["pretrained_model_name_or_path"] = str(Path(name).resolve())
    run = {
        "format": RUN_RECORD_FORMAT,
        "frozen_ddpm": source,
        "training_command": training_command,
        "global_batch_size": int(global_batch_size),
        "datasets": datasets,
    }
    (tmp / "run.json").write_text(json.dumps(run, indent=2) + "\n")
    if record.exists():
        shutil.rmtree(record)
    tmp.rename(record)
    return record


def _checkpoint_and_run(path: Path) -> tuple[Path, Path]:
    """The verified checkpoint named by `path` (a checkpoint folder, or a run folder: its newest) and its run folder."""
    if not path.is_dir():
        raise CheckpointError(f"--checkpoint: {str(path)!r} is not a folder (a run folder or one of its checkpoints).")
    if checkpoint_step(path) is not None and path.name.startswith(CHECKPOINT_PREFIX):
        return resolve_checkpoint(str(path), path.parent), path.parent
    checkpoint = resolve_checkpoint("latest", path)
    if checkpoint is None:
        raise CheckpointError(f"--checkpoint: {str(path)!r} holds no complete checkpoint.")
    return checkpoint, path


def export_checkpoint(checkpoint: str | os.PathLike, output_dir: str | os.PathLike | None = None) -> Path:
    r"""
    Writes the pipeline folder (EMA weights) of a checkpoint of a `train_diti.py` run, with its model card.

    Args:
        checkpoint (`str` or `os.PathLike`): `RUN_DIR/checkpoint-N`, or `RUN_DIR` for its newest complete checkpoint.
        output_dir (`str` or `os.PathLike`, *optional*): Where to write; defaults to `RUN_DIR/pipeline-N`.

    Returns:
        `pathlib.Path`: The pipeline folder, loadable with `DiTiPipeline.from_pretrained`.

    Raises:
        [`~diti_hf.training.checkpointing.CheckpointError`]: the checkpoint is incomplete, does not verify against
        its recorded hashes, is of the earlier pickled format, or its run has no record (a run started before
        records existed: export it by resuming the run with `--max_train_steps` equal to its step).
    """
    from diffusers import DDIMScheduler

    checkpoint, run_dir = _checkpoint_and_run(Path(checkpoint))
    record = run_dir / RUN_RECORD
    if not (record / "run.json").is_file():
        raise CheckpointError(
            f"--checkpoint: {str(run_dir)!r} has no {RUN_RECORD}/ (runs record it at their start since this version); "
            "export an earlier run by resuming it with --max_train_steps equal to the checkpoint's step."
        )
    run = read_json(record / "run.json", "run record")
    if not isinstance(run, dict) or run.get("format") != RUN_RECORD_FORMAT:
        raise CheckpointError(f"{record / 'run.json'}: not a run record of format {RUN_RECORD_FORMAT}.")
    encoder = DiTiEncoderModel.from_config(DiTiEncoderModel.load_config(record / "encoder"))
    decoder = DiTiDecoderModel.from_config(DiTiDecoderModel.load_config(record / "decoder"))
    parameters = [*encoder.parameters(), *decoder.parameters()]
    ema = load_state_file(checkpoint / EMA_STATE)
    shadow = ema.get("shadow_params") if isinstance(ema, dict) else None
    if not isinstance(shadow, list) or len(shadow) != len(parameters):
        raise CheckpointError(
            f"{checkpoint / EMA_STATE}: holds {len(shadow) if isinstance(shadow, list) else 'no'} EMA tensors, but the "
            f"recorded encoder and decoder have {len(parameters)} parameters."
        )
    with torch.no_grad():
        for i, (param, value) in enumerate(zip(parameters, shadow)):
            if not isinstance(value, torch.Tensor) or value.shape != param.shape:
                shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise CheckpointError(
                    f"{checkpoint / EMA_STATE}: EMA tensor {i} is {shape}, the recorded model expects "
                    f"{tuple(param.shape)}."
                )
            param.copy_(value)
    unet, _ = load_frozen_ddpm(**run["frozen_ddpm"])
    scheduler = DDIMScheduler.from_config(DDIMScheduler.load_config(record / "scheduler"))
    processor = record / "image_processor"
    image_processor = DiTiImageProcessor.from_pretrained(processor) if processor.is_dir() else None
    pipe = DiTiPipeline(unet, encoder.eval(), decoder.eval(), scheduler, image_processor)
    step = checkpoint_step(checkpoint)
    out = Path(output_dir) if output_dir is not None else run_dir / f"pipeline-{step}"
    pipe.save_pretrained(out)
    images = step * run["global_batch_size"]
    save_model_card(
        pipe, out, datasets=run.get("datasets"), training_command=run["training_command"],
        extra_sections={"Checkpoint": f"Exported from `{checkpoint.name}` (step {step}, {images:,} images seen)."},
    )  # fmt: skip
    return out
